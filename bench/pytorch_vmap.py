"""What a strong PyTorch user writes: the students of one shape stacked with
torch.func.stack_module_state and run with vmap(functional_call), one Adam over the stacked
parameters, per-student temperature and weights as tensors.

usage: pytorch_vmap.py FOLDER WORKLOAD      (prints {"wall_s", "test_acc": [...]})
"""
import copy
import sys

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from common import DEVICE, cosine, emit, load, mlp, now, order, setup_threads


def train_group(meta, data, trials):
    k = len(trials)
    models = []
    for t in trials:
        torch.manual_seed(t["seed"])
        models.append(mlp(meta["features"], t["hidden"], meta["classes"]))
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def call(p, b, x):
        return functional_call(base, (p, b), (x,))

    forward = vmap(call)
    shared = vmap(call, in_dims=(0, 0, None))
    first = trials[0]
    opt = torch.optim.Adam(list(params.values()), lr=first["lr"])
    temp = torch.tensor([t["temperature"] if t["kd"] else 1.0 for t in trials], device=DEVICE).view(k, 1, 1)
    soft_w = torch.tensor([t["alpha"] * t["temperature"] ** 2 if t["kd"] else 0.0 for t in trials], device=DEVICE)
    hard_w = torch.tensor([t["beta"] if t["kd"] else 1.0 for t in trials], device=DEVICE)
    n, bs, epochs = meta["train"], first["batch_size"], first["epochs"]
    steps = (n + bs - 1) // bs
    step = 0

    def accuracy(x, y):
        with torch.no_grad():
            correct = torch.zeros(k, dtype=torch.int64, device=DEVICE)
            for i in range(0, len(y), 2000):
                z = shared(params, buffers, x[i:i + 2000])
                correct += (z.argmax(-1) == y[i:i + 2000]).sum(-1)
            return (correct.double() / len(y)).tolist()

    for epoch in range(1, epochs + 1):
        perms = torch.stack([order(t["seed"], epoch, n) for t in trials])
        for b in range(steps):
            idx = perms[:, b * bs:(b + 1) * bs]
            x, y, tl = data["x"][idx], data["y"][idx], data["teacher"][idx]
            for g in opt.param_groups:
                g["lr"] = cosine(first["lr"], step, steps * epochs)
            z = forward(params, buffers, x)
            soft = -(F.softmax(tl / temp, -1) * F.log_softmax(z / temp, -1)).sum(-1).mean(-1)
            hard = -F.log_softmax(z, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(-1)
            loss = (soft_w * soft + hard_w * hard).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        if epoch % first["eval_every"] == 0 or epoch == epochs:
            accuracy(data["val_x"], data["val_y"])
            accuracy(data["test_x"], data["test_y"])
    accuracy(data["x"], data["y"])
    return accuracy(data["test_x"], data["test_y"])


def main():
    setup_threads()
    meta, data = load(sys.argv[1])
    trials = meta["workloads"][sys.argv[2]]
    start = now()
    accs = [None] * len(trials)
    groups = {}
    for i, t in enumerate(trials):
        groups.setdefault(tuple(t["hidden"]), []).append(i)
    for members in groups.values():
        for i, a in zip(members, train_group(meta, data, [trials[i] for i in members])):
            accs[i] = a
    emit({"wall_s": now() - start, "test_acc": accs})


main()
