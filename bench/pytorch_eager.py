"""The loop a PyTorch user writes: one student at a time over the grid, data in memory.

usage: pytorch_eager.py FOLDER WORKLOAD      (prints {"wall_s", "test_acc": [...]})
       pytorch_eager.py FOLDER --step BATCH  (prints {"samples_per_s"} of one 800-800 KD step)
"""
import sys

import torch
import torch.nn.functional as F

from common import cosine, emit, load, mlp, now, order, setup_threads


def kd_loss(z, t, y, temp, alpha, beta):
    soft = -(F.softmax(t / temp, -1) * F.log_softmax(z / temp, -1)).sum(-1).mean()
    hard = F.cross_entropy(z, y)
    return alpha * temp * temp * soft + beta * hard


def accuracy(net, x, y):
    with torch.no_grad():
        return sum(
            (net(x[i:i + 2000]).argmax(-1) == y[i:i + 2000]).sum().item()
            for i in range(0, len(y), 2000)
        ) / len(y)


def train(meta, data, trial):
    torch.manual_seed(trial["seed"])
    net = mlp(meta["features"], trial["hidden"], meta["classes"])
    opt = torch.optim.Adam(net.parameters(), lr=trial["lr"])
    n, bs, epochs = meta["train"], trial["batch_size"], trial["epochs"]
    steps = (n + bs - 1) // bs
    step = 0
    for epoch in range(1, epochs + 1):
        perm = order(trial["seed"], epoch, n)
        for b in range(steps):
            idx = perm[b * bs:(b + 1) * bs]
            x, y = data["x"][idx], data["y"][idx]
            for g in opt.param_groups:
                g["lr"] = cosine(trial["lr"], step, steps * epochs)
            z = net(x)
            if trial["kd"]:
                loss = kd_loss(z, data["teacher"][idx], y, trial["temperature"], trial["alpha"], trial["beta"])
            else:
                loss = F.cross_entropy(z, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        if epoch % trial["eval_every"] == 0 or epoch == epochs:
            accuracy(net, data["val_x"], data["val_y"])
            accuracy(net, data["test_x"], data["test_y"])
    accuracy(net, data["x"], data["y"])
    return accuracy(net, data["test_x"], data["test_y"])


def step_bench(meta, data, batch, reps=30):
    torch.manual_seed(0)
    net = mlp(meta["features"], [800, 800], meta["classes"])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y, t = data["x"][:batch], data["y"][:batch], data["teacher"][:batch]
    times = []
    for i in range(reps + 5):
        start = now()
        loss = kd_loss(net(x), t, y, 4.0, 0.9, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 5:
            times.append(now() - start)
    times.sort()
    return batch / times[len(times) // 2]


def main():
    setup_threads()
    meta, data = load(sys.argv[1])
    if sys.argv[2] == "--step":
        emit({"samples_per_s": step_bench(meta, data, int(sys.argv[3]))})
        return
    trials = meta["workloads"][sys.argv[2]]
    start = now()
    accs = [train(meta, data, t) for t in trials]
    emit({"wall_s": now() - start, "test_acc": accs})


main()
