"""Why the MNIST ensemble of experiments/hinton2015/mnist/ensemble.yaml gains nothing over one
member: the same member recipe in plain PyTorch, independent of kd-sweep's batch order and
initialisation (torch.randperm per epoch from a seeded generator, nn.Linear's default init), on
kd-sweep's split. Trains K unregularised 800-800 nets (SGD, momentum 0.9, cosine per step,
batch 128), then prints each member's test errors, the members' pairwise disagreement, how many
members are wrong on each test image, and the errors of the ensemble (mean of probabilities) of
all K. Compare with the same numbers from kd-sweep's cached members (docs/hinton.md, section 4).

Run:
  .venv/bin/python experiments/reference/ensemble_probe.py [--members 3] [--epochs 60]
      [--lr 0.01] [--seed 100] [--threads 1] [--dataset mnist|fashion-mnist]
"""

import argparse
import itertools
import json
import math
import time

import torch
import torch.nn.functional as F

from pytorch_mnist import Mlp, load, predict


def train(seed, data, epochs, lr, bs=128):
    torch.manual_seed(seed)
    net = Mlp([800, 800])
    gen = torch.Generator().manual_seed(seed)
    x, y = data["train"]
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    steps = math.ceil(len(y) / bs)
    total, step = steps * epochs, 0
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(y), generator=gen)
        for b in range(steps):
            rows = perm[b * bs : (b + 1) * bs]
            for g in opt.param_groups:
                g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(net(x[rows]), y[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    return net


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = load()
    x, y = data["test"]
    logits = []
    for m in range(a.members):
        start = time.time()
        net = train(a.seed + m, data, a.epochs, a.lr)
        logits.append(predict(net, x))
        errors = int((logits[-1].argmax(-1) != y).sum())
        print(json.dumps({"member": a.seed + m, "test_errors": errors, "wall_s": round(time.time() - start)}), flush=True)
    stack = torch.stack(logits).double()
    pred = stack.argmax(-1)
    wrong = pred != y
    pairs = [float((pred[i] != pred[j]).float().mean()) for i, j in itertools.combinations(range(a.members), 2)]
    ensemble = int((stack.softmax(-1).mean(0).argmax(-1) != y).sum())
    print(json.dumps({
        "member_errors": wrong.sum(1).tolist(),
        "pairwise_disagreement": [round(p, 4) for p in pairs],
        "members_wrong_histogram": torch.bincount(wrong.sum(0), minlength=a.members + 1).tolist(),
        "ensemble_errors": ensemble,
    }))


if __name__ == "__main__":
    main()
