"""What kd-sweep's data crate does, in Python, for the PyTorch reference scripts beside this file:
its SplitMix64 stream (kd_data::SplitMix64: the validation split, transfer rows, batch order and
jitter offsets are all drawn from it) and the IDX reader."""

import gzip

import torch

MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.s = (seed ^ 0x9E3779B97F4A7C15) & MASK

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        zone = MASK - MASK % n
        while True:
            x = self.next()
            if x < zone:
                return x % n

    def shuffle(self, v):
        for i in range(len(v) - 1, 0, -1):
            j = self.below(i + 1)
            v[i], v[j] = v[j], v[i]


def idx(path):
    """An IDX file (raw, or gzipped when its name ends in .gz) as a uint8 tensor of its shape."""
    raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    ndims = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndims)]
    return torch.frombuffer(bytearray(raw[4 + 4 * ndims :]), dtype=torch.uint8).view(*dims)
