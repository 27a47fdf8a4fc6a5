"""Hinton et al. 2015's MNIST recipe (experiments/hinton2015/mnist/) in plain PyTorch, on kd-sweep's
exact data, to cross-check kd-sweep's teacher and its 800-800 students.

Same validation split (kd-sweep's SplitMix64, reimplemented below), same standardisation, same
batch order per epoch, same jitter offsets per (seed, epoch, batch) with the same black border,
same models (nn.Linear defaults; kd-sweep's `init: torch` draws the very weights nn.Linear draws
for the same seed), SGD with momentum (torch.optim.SGD, dampening 0, no Nesterov) and the cosine
schedule set per step, the max-norm constraint as `w.renorm_(2, 0, c)` on the hidden layers after
every step, and the soft loss alpha * T^2 * CE(p_T, q_T) + beta * CE(y, q_1) (sum over classes,
mean over the batch). Dropout masks come from PyTorch's generator, so runs agree in distribution,
not bit for bit.

Run:
  .venv/bin/python experiments/reference/pytorch_mnist.py teacher [--epochs 60] [--lr 0.05]
      [--max-norm C] [--jitter 2] [--seed 0] [--save teacher.pt]
  .venv/bin/python experiments/reference/pytorch_mnist.py student --teacher teacher.pt|ID.ot
      [--epochs 60] [--temperature 20] [--alpha 0.9] [--seeds 0 1 2] [--hidden 800 800] [--jitter 0]
      [--baseline] [--lr 0.05] [--transfer-fraction F] [--keep-classes C ...] [--omit-classes C ...]
      [--milestones 100 200 --gamma 0.5] (multistep instead of cosine, both parts)
Each run prints one JSON line per model: test errors, train/val/test accuracy, wall seconds.
Compare with results/hinton_mnist/trials.csv.
"""

import argparse
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from kd_common import MASK, SplitMix64, idx

DATA = os.path.join(
    os.environ.get("KD_DATA_DIR", os.path.expanduser("~/.cache/kd-sweep/data")), "mnist"
)


def load(val_size=5000, data_seed=0):
    """kd_data::Dataset::load and tensors(): the split, the standardisation, [n, 1, 28, 28]."""
    x_all = idx(f"{DATA}/train-images-idx3-ubyte")
    y_all = idx(f"{DATA}/train-labels-idx1-ubyte").long()
    x_test = idx(f"{DATA}/t10k-images-idx3-ubyte")
    y_test = idx(f"{DATA}/t10k-labels-idx1-ubyte").long()
    n = len(y_all)
    order = list(range(n))
    SplitMix64(data_seed).shuffle(order)
    val = sorted(order[:val_size])
    in_val = set(val)
    train = [i for i in range(n) if i not in in_val]
    pixels = x_all[train].double() / 255.0
    mean, std = pixels.mean().item(), pixels.std(unbiased=False).item()

    def prep(x):
        return ((x.float() / 255.0 - mean) / std).view(len(x), 1, 28, 28)

    return {
        "train": (prep(x_all[train]), y_all[train]),
        "val": (prep(x_all[val]), y_all[val]),
        "test": (prep(x_test), y_test),
    }


def transfer(data, fraction=1.0, keep=None, omit=None, data_seed=0):
    """The students' transfer set: kd_data::transfer_rows (a seeded share of the training
    split, sorted), then dataset.keep_classes / omit_classes."""
    x, y = data["train"]
    rows = list(range(len(y)))
    if fraction < 1.0:
        SplitMix64(data_seed ^ 0x7472616E73666572).shuffle(rows)
        rows = sorted(rows[: min(max(round(fraction * len(rows)), 1), len(rows))])
    rows = [r for r in rows if (not keep or int(y[r]) in keep) and (not omit or int(y[r]) not in omit)]
    return {**data, "train": (x[rows], y[rows])}


def epoch_order(seed, epoch, n):
    perm = list(range(n))
    SplitMix64(((seed * 0x100000001B3) + epoch) & MASK).shuffle(perm)
    return torch.tensor(perm)


def jitter(x, n, seed, epoch, batch, fill):
    """kd-sweep's train::jitter: the same offsets for (seed, epoch, batch), the border `fill`."""
    if n == 0:
        return x
    b, c, h, w = x.shape
    hp, wp = h + 2 * n, w + 2 * n
    padded = (F.pad(x - fill, (n, n, n, n)) + fill).view(b, c, hp * wp)
    rng = SplitMix64(
        ((seed * 0x9E3779B97F4A7C15) & MASK) ^ ((epoch << 40) & MASK) ^ batch ^ 0x6A6974746572
    )
    offsets = []
    for _ in range(b):
        dy = rng.below(2 * n + 1)
        dx = rng.below(2 * n + 1)
        offsets.append(dy * wp + dx)
    base = torch.tensor([i * wp + j for i in range(h) for j in range(w)]).view(1, 1, h * w)
    index = base + torch.tensor(offsets).view(b, 1, 1)
    return padded.gather(2, index.expand(b, c, h * w)).view(b, c, h, w)


class Mlp(models.Mlp):
    """The reference MLP (`models.Mlp`, the names kd-sweep keeps students under) on 784 inputs
    and 10 classes, with the max-norm constraint of Hinton et al.'s teacher."""

    def __init__(self, hidden, dropout=0.0, input_dropout=0.0):
        super().__init__(784, hidden, 10, dropout, input_dropout)

    def max_norm_(self, c):
        with torch.no_grad():
            for layer in self.layers[:-1]:
                layer.weight.renorm_(2, 0, c)


def predict(net, x):
    net.eval()
    with torch.no_grad():
        return torch.cat([net(x[i : i + 1000]) for i in range(0, len(x), 1000)])


def scores(net, data):
    out = {}
    for split, (x, y) in data.items():
        wrong = int((predict(net, x).argmax(-1) != y).sum())
        out[f"{split}_acc"] = 1 - wrong / len(y)
        out[f"{split}_errors"] = wrong
    return out


def train(net, data, seed, epochs, lr, momentum, bs, jitter_px, max_norm, soft=None,
          milestones=None, gamma=0.1, order=epoch_order):
    """kd-sweep's train::train with SGD and the cosine schedule, or with `milestones` the
    multistep one (`lr * gamma^k` from each 0-based milestone epoch on, as `schedule:
    multistep`); `soft` = (teacher, T, alpha, beta): the teacher's logits per batch, on the
    cached unshifted images or online on the shifted ones; `order(seed, epoch, n)`: the epoch's
    permutation of the training images (kd-sweep's by default)."""
    x, y = data["train"]
    n = len(y)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    steps = math.ceil(n / bs)
    total, step = steps * epochs, 0
    fill = x.min().item()
    cached = predict(soft[0], x) if soft is not None and jitter_px == 0 else None
    for epoch in range(1, epochs + 1):
        net.train()
        perm = order(seed, epoch, n)
        for b in range(steps):
            rows = perm[b * bs : (b + 1) * bs]
            xb = jitter(x[rows], jitter_px, seed, epoch, b, fill)
            yb = y[rows]
            for g in opt.param_groups:
                if milestones is None:
                    g["lr"] = 0.5 * lr * (1 + math.cos(math.pi * step / total))
                else:
                    g["lr"] = lr * gamma ** sum(1 for m in milestones if epoch - 1 >= m)
            logits = net(xb)
            hard = F.cross_entropy(logits, yb)
            if soft is None:
                loss = hard
            else:
                teacher, t, alpha, beta = soft
                if cached is not None:
                    v = cached[rows]
                else:
                    teacher.eval()
                    with torch.no_grad():
                        v = teacher(xb)
                p = F.softmax(v / t, -1)
                ce = -(p * F.log_softmax(logits / t, -1)).sum(-1).mean()
                loss = alpha * t * t * ce + beta * hard
            opt.zero_grad()
            loss.backward()
            opt.step()
            if max_norm:
                net.max_norm_(max_norm)
            step += 1
    return net


def load_teacher(path, hidden_layers):
    """A state dict of `Mlp`: saved by `teacher --save`, or kd-sweep's cached teacher
    ($KD_CACHE_DIR/teachers/<id>.ot, a libtorch archive with keys `fc1|weight` ... `out|bias`),
    so both students learn from the very same teacher."""
    if not path.endswith(".ot"):
        return torch.load(path)
    kd = torch.jit.load(path).state_dict()
    names = [f"fc{i + 1}" for i in range(hidden_layers)] + ["out"]
    return {
        f"layers.{i}.{part}": kd[f"{name}|{part}"]
        for i, name in enumerate(names)
        for part in ("weight", "bias")
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("part", choices=["teacher", "student"])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-norm", type=float, default=None)
    ap.add_argument("--jitter", type=int, default=None, help="teacher: 2, student: 0")
    ap.add_argument("--seed", type=int, default=0, help="the teacher's seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the students' seeds")
    ap.add_argument("--hidden", type=int, nargs="+", default=None)
    ap.add_argument("--save", default=None, help="teacher: write its weights here")
    ap.add_argument("--teacher", default=None,
                    help="student: the teacher's weights (a --save file, or kd-sweep's cached .ot)")
    ap.add_argument("--teacher-hidden", type=int, nargs="+", default=[1200, 1200])
    ap.add_argument("--temperature", type=float, default=20.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--beta", type=float, default=None, help="default 1 - alpha")
    ap.add_argument("--baseline", action="store_true", help="student: also train hard-only")
    ap.add_argument("--transfer-fraction", type=float, default=1.0, help="student: dataset.transfer_fraction")
    ap.add_argument("--keep-classes", type=int, nargs="+", default=None, help="student: dataset.keep_classes")
    ap.add_argument("--omit-classes", type=int, nargs="+", default=None, help="student: dataset.omit_classes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--milestones", type=int, nargs="+", default=None,
                    help="schedule: multistep at these 0-based epochs (default: cosine)")
    ap.add_argument("--gamma", type=float, default=0.1, help="multistep factor")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    data = load()
    if a.part == "teacher":
        t0 = time.time()
        torch.manual_seed(a.seed)
        net = Mlp(a.hidden or [1200, 1200], dropout=0.5, input_dropout=0.2)
        jit = 2 if a.jitter is None else a.jitter
        train(net, data, a.seed, a.epochs, a.lr, a.momentum, a.batch_size, jit, a.max_norm,
              milestones=a.milestones, gamma=a.gamma)
        if a.save:
            torch.save(net.state_dict(), a.save)
        row = {"kind": "teacher", "seed": a.seed, "epochs": a.epochs, "lr": a.lr,
               "max_norm": a.max_norm, "jitter": jit, **scores(net, data),
               "wall_s": round(time.time() - t0, 1)}
        print(json.dumps(row), flush=True)
        return
    teacher = Mlp(a.teacher_hidden, dropout=0.5, input_dropout=0.2)
    teacher.load_state_dict(load_teacher(a.teacher, len(a.teacher_hidden)))
    teacher.eval()
    data = transfer(data, a.transfer_fraction, a.keep_classes, a.omit_classes)
    beta = 1 - a.alpha if a.beta is None else a.beta
    jit = a.jitter or 0
    kinds = (["baseline"] if a.baseline else []) + ["kd"]
    for seed in a.seeds:
        for kind in kinds:
            t0 = time.time()
            torch.manual_seed(seed)
            net = Mlp(a.hidden or [800, 800])
            soft = None if kind == "baseline" else (teacher, a.temperature, a.alpha, beta)
            train(net, data, seed, a.epochs, a.lr, a.momentum, a.batch_size, jit, a.max_norm, soft,
                  a.milestones, a.gamma)
            finite = all(torch.isfinite(p).all() for p in net.parameters())
            row = {"status": "ok" if finite else "diverged","kind": kind, "seed": seed, "epochs": a.epochs, "hidden": a.hidden or [800, 800],
                   "temperature": a.temperature if soft else None, "alpha": a.alpha if soft else None,
                   "jitter": jit, **scores(net, data), "wall_s": round(time.time() - t0, 1)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
