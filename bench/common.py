"""Shared by the PyTorch baselines of `kd bench`: the exported data and grid, the recipe
kd-sweep uses (PyTorch's nn.Linear init, Adam, per-step cosine schedule, batch order per seed,
alpha * T^2 * soft CE + beta * hard CE, val and test evaluated after every epoch) and timing.

Input: a folder written by `kd bench` with `meta.json` (shapes, grid) and raw little-endian
tensors (`*.f32`, `*.i64`). Output: one JSON object on stdout. The scripts run on
$KD_BENCH_DEVICE (`cpu`, `cuda:0`: where kd runs), the data moved there once, and every timing
ends with the device synchronised.
"""
import json
import math
import os
import sys
import time

import torch


DEVICE = torch.device(os.environ.get("KD_BENCH_DEVICE", "cpu"))


def sync():
    """Wait for the device's queued kernels (CUDA runs them asynchronously)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def load(folder):
    meta = json.load(open(os.path.join(folder, "meta.json")))

    def tensor(name, dtype, shape):
        raw = open(os.path.join(folder, name), "rb").read()
        return torch.frombuffer(bytearray(raw), dtype=dtype).reshape(shape).to(DEVICE)

    n, d, c = meta["train"], meta["features"], meta["classes"]
    data = {
        "x": tensor("train_x.f32", torch.float32, (n, d)),
        "y": tensor("train_y.i64", torch.int64, (n,)),
        "teacher": tensor("teacher.f32", torch.float32, (n, c)),
        "val_x": tensor("val_x.f32", torch.float32, (meta["val"], d)),
        "val_y": tensor("val_y.i64", torch.int64, (meta["val"],)),
        "test_x": tensor("test_x.f32", torch.float32, (meta["test"], d)),
        "test_y": tensor("test_y.i64", torch.int64, (meta["test"],)),
    }
    return meta, data


def mlp(features, hidden, classes):
    layers, prev = [], features
    for h in hidden:
        layers += [torch.nn.Linear(prev, h), torch.nn.ReLU()]
        prev = h
    layers.append(torch.nn.Linear(prev, classes))
    return torch.nn.Sequential(*layers).to(DEVICE)


def cosine(lr, step, total):
    return 0.5 * lr * (1.0 + math.cos(math.pi * step / max(total, 1)))


def order(seed, epoch, n):
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    return torch.randperm(n, generator=g).to(DEVICE)


def emit(result):
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


def setup_threads():
    torch.set_num_threads(int(os.environ.get("KD_BENCH_THREADS", "2")))


def now():
    """The clock, read after the device has finished what was queued."""
    sync()
    return time.perf_counter()
