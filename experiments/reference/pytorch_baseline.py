"""The hard-label baseline of experiments/temp.yaml in plain PyTorch, on kd-sweep's exact data.

Same validation split and transfer rows (kd-sweep's SplitMix64, reimplemented below), same
standardisation, same batch order per epoch, same model (784-800-800-10, nn.Linear defaults),
same seed before the model is built, Adam (lr 1e-3) with the cosine schedule set per step,
batch 128, 30 epochs, evaluation at the end. kd-sweep's `init: torch` draws the very weights
nn.Linear draws for the same seed, so the two runs differ only in optimizer internals (libtorch's
C++ Adam vs torch.optim.Adam) and summation order.

Run:  .venv/bin/python experiments/reference/pytorch_baseline.py [SEED ...]
Compare with the baseline rows of results/temp/trials.csv.
"""

import math
import sys
import time

import torch
import torch.nn as nn

from kd_common import MASK, SplitMix64, idx

DATA = "/usr/share/datasets/fashion-mnist"


def main(seeds):
    torch.set_num_threads(2)
    x_all = idx(f"{DATA}/train-images-idx3-ubyte.gz")
    y_all = idx(f"{DATA}/train-labels-idx1-ubyte.gz").long()
    x_test = idx(f"{DATA}/t10k-images-idx3-ubyte.gz")
    y_test = idx(f"{DATA}/t10k-labels-idx1-ubyte.gz").long()
    n = len(y_all)
    order = list(range(n))
    SplitMix64(0).shuffle(order)  # data_seed 0
    val = set(order[:5000])
    train = [i for i in range(n) if i not in val]
    pixels = x_all[train].double() / 255.0
    mean, std = pixels.mean().item(), pixels.std(unbiased=False).item()
    rows = list(range(len(train)))
    SplitMix64(0 ^ 0x7472616E73666572).shuffle(rows)  # kd_data::transfer_rows, fraction 0.1
    rows = sorted(rows[: round(0.1 * len(train))])
    pick = [train[r] for r in rows]

    def prep(x):
        return ((x.float() / 255.0 - mean) / std).view(len(x), -1)

    xs, ys = prep(x_all[pick]), y_all[pick]
    xt = prep(x_test)
    m = len(ys)
    for seed in seeds:
        t0 = time.time()
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(784, 800), nn.ReLU(), nn.Linear(800, 800), nn.ReLU(), nn.Linear(800, 10))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        epochs, bs = 30, 128
        steps = math.ceil(m / bs)
        total, step = steps * epochs, 0
        for epoch in range(1, epochs + 1):
            perm = list(range(m))
            SplitMix64(((seed * 0x100000001B3) + epoch) & MASK).shuffle(perm)
            perm = torch.tensor(perm)
            for b in range(steps):
                idx_b = perm[b * bs : (b + 1) * bs]
                for g in opt.param_groups:
                    g["lr"] = 0.5 * 1e-3 * (1 + math.cos(math.pi * step / total))
                loss = nn.functional.cross_entropy(net(xs[idx_b]), ys[idx_b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
        with torch.no_grad():
            acc = (net(xt).argmax(-1) == y_test).float().mean().item()
        print(f"seed {seed}: PyTorch baseline test accuracy {100 * acc:.2f}% ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [0, 1, 2])
