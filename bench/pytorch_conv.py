"""`kd bench`'s CIFAR rows in PyTorch eager: one training step of resnet8x4 at RepDistiller's
recipe (batch 64, crop 4 + flip on the batch, SGD 0.05, momentum 0.9, weight decay 5e-4), alone
or distilled from an online resnet32x4 teacher in eval mode (0.9 * T^2 * KL + 0.1 * CE, T = 4),
the models from our transcription of RepDistiller's (crates/model-zoo/tests/reference/cifar_zoo.py).
The same work as kd-sweep's step: the augmentation is the same gather on the padded batch.

    python pytorch_cifar.py --steps 10 [--teacher] [--format nchw|channels_last] [--device cpu]

Prints {"samples_per_s": images per second, median over the timed steps}.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

from common import emit, now, setup_threads

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates",
                                "model-zoo", "tests", "reference"))
import cifar_zoo  # noqa: E402

BATCH = 64


def crop_flip(x, black, pad=4):
    """Pad by `pad` with each channel's darkest training value `black`, cut a random 32x32
    window per image and mirror half of them: kd-sweep's `crop_flip`, with torch's generator."""
    b, c, h, w = x.shape
    hp, wp = h + 2 * pad, w + 2 * pad
    padded = (F.pad(x - black, (pad, pad, pad, pad)) + black).reshape(b, c, hp * wp)
    dy = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=x.device)
    mirror = torch.randint(0, 2, (b, 1, 1), device=x.device).bool()
    i = torch.arange(h, device=x.device).view(1, h, 1)
    j = torch.arange(w, device=x.device).view(1, 1, w)
    col = torch.where(mirror, w - 1 - j, j)
    idx = ((i + dy) * wp + col + dx).reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.gather(2, idx).reshape(b, c, h, w)


class Cnn(torch.nn.Module):
    """kd-sweep's `{arch: cnn, channels: [32, 64], kernel: 3, fc: [256], dropout: 0.5}`."""

    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = torch.nn.Linear(64 * 7 * 7, 256)
        self.out = torch.nn.Linear(256, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.dropout(x.flatten(1), 0.5, self.training)
        x = F.dropout(F.relu(self.fc1(x)), 0.5, self.training)
        return self.out(x)


def median(times):
    times = sorted(times)
    m = len(times)
    return times[m // 2] if m % 2 else 0.5 * (times[m // 2 - 1] + times[m // 2])


def cnn(a, dev, fmt):
    """temp.yaml's CNN teacher: a training step (batch 128, Adam) or the evaluation pass."""
    torch.manual_seed(0)
    net = Cnn().to(dev, memory_format=fmt)
    if a.eval:
        net.eval()
        x = torch.randn(5000, 1, 28, 28, device=dev).contiguous(memory_format=fmt)
        times = []
        for k in range(1 + a.steps // 2):
            t0 = now()
            with torch.no_grad():
                out = torch.cat([net(x[i:i + 1000]) for i in range(0, 5000, 1000)])
            out[0, 0].item()
            if k >= 1:
                times.append(now() - t0)
        return 5000 / median(times)
    batch = 128
    xs = torch.randn(4 * batch, 1, 28, 28, device=dev)
    ys = torch.randint(0, 10, (4 * batch,), device=dev)
    opt = torch.optim.Adam(net.parameters(), lr=0.001)
    times = []
    for k in range(2 + a.steps):
        t0 = now()
        x = xs[(k % 4) * batch:(k % 4 + 1) * batch].contiguous(memory_format=fmt)
        loss = F.cross_entropy(net(x), ys[(k % 4) * batch:(k % 4 + 1) * batch])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
        if k >= 2:
            times.append(now() - t0)
    return batch / median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["resnet8x4", "cnn"], default="resnet8x4")
    p.add_argument("--eval", action="store_true")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--teacher", action="store_true")
    p.add_argument("--format", choices=["nchw", "channels_last"], default="nchw")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    setup_threads()
    torch.manual_seed(0)
    dev = torch.device(a.device)
    fmt = torch.channels_last if a.format == "channels_last" else torch.contiguous_format
    if a.model == "cnn":
        emit({"samples_per_s": cnn(a, dev, fmt)})
        return
    n = 4 * BATCH
    xs = torch.randn(n, 3, 32, 32, device=dev)
    ys = torch.randint(0, 100, (n,), device=dev)
    black = xs.amin(dim=(0, 2, 3), keepdim=True)
    student = cifar_zoo.MODELS["resnet8x4"]().to(dev, memory_format=fmt).train()
    teacher = cifar_zoo.MODELS["resnet32x4"]().to(dev, memory_format=fmt).eval() if a.teacher else None
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    T = 4.0

    def step(k):
        x = crop_flip(xs[(k % 4) * BATCH:(k % 4 + 1) * BATCH], black).contiguous(memory_format=fmt)
        y = ys[(k % 4) * BATCH:(k % 4 + 1) * BATCH]
        logits = student(x)
        loss = F.cross_entropy(logits, y)
        if teacher is not None:
            with torch.no_grad():
                t = teacher(x)
            kl = F.kl_div(F.log_softmax(logits / T, 1), F.softmax(t / T, 1), reduction="batchmean")
            loss = 0.1 * loss + 0.9 * T * T * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    times = []
    for k in range(2 + a.steps):
        t0 = now()
        step(k)
        if k >= 2:
            times.append(now() - t0)
    times.sort()
    m = len(times)
    med = times[m // 2] if m % 2 else 0.5 * (times[m // 2 - 1] + times[m // 2])
    emit({"samples_per_s": BATCH / med})


if __name__ == "__main__":
    main()
