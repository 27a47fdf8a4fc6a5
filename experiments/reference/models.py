"""kd-sweep's mlp and cnn families as PyTorch modules, named as kd-sweep names a kept student's
tensors (`OUT/models/<trial id>.safetensors`, `save:` in a sweep config), and a loader for those
files: their metadata says the model spec, the standardisation of the inputs and the number
format. Depends on torch only (the safetensors format is read here).

Usage: python experiments/reference/models.py MODEL.safetensors [IMAGES LABELS]
  IMAGES, LABELS: IDX files (default: the test split of the MNIST-format dataset in the folder the
  model's sweep read, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, gzipped or not).
  Prints `accuracy A errors E of N` for the model at T = 1 on those images.
"""

import json
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kd_common import idx  # noqa: E402

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "I64": torch.int64, "U8": torch.uint8}


def read_safetensors(path):
    """(tensors by name, metadata) of a safetensors file."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    body = raw[8 + n :]
    tensors = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        dtype = DTYPES[h["dtype"]]
        t = torch.frombuffer(bytearray(body[a:b]), dtype=dtype) if b > a else torch.empty(0, dtype=dtype)
        tensors[name] = t.view(h["shape"])
    return tensors, meta


class Mlp(nn.Module):
    """`input dropout -> [linear -> ReLU -> dropout]* -> linear`; kd-sweep's `fc1`, `fc2`, ...,
    `out` are `layers.0`, `layers.1`, ..., `layers.<hidden layers>`."""

    def __init__(self, inputs, hidden, classes, dropout=0.0, input_dropout=0.0):
        super().__init__()
        dims = [inputs] + list(hidden) + [classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.dropout, self.input_dropout = dropout, input_dropout

    def forward(self, x):
        x = F.dropout(x.flatten(1), self.input_dropout, self.training)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.dropout(F.relu(x), self.dropout, self.training)
        return x


class Cnn(nn.Module):
    """`[conv kxk (same padding) -> ReLU -> maxpool 2]* -> flatten -> dropout -> [linear ->
    ReLU -> dropout]* -> linear`, named as kd-sweep names it: `conv1`, ..., `fc1`, ..., `out`."""

    def __init__(self, input, channels, kernel, fc, classes, dropout=0.0):
        super().__init__()
        c, h, w = input
        for i, out in enumerate(channels):
            setattr(self, f"conv{i + 1}", nn.Conv2d(c, out, kernel, padding=kernel // 2))
            c, h, w = out, h // 2, w // 2
        dims = [c * h * w] + list(fc) + [classes]
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            setattr(self, "out" if i == len(fc) else f"fc{i + 1}", nn.Linear(a, b))
        self.convs, self.fcs, self.dropout, self.input = len(channels), len(fc), dropout, input

    def forward(self, x):
        x = x.view(-1, *self.input)
        for i in range(self.convs):
            x = F.max_pool2d(F.relu(getattr(self, f"conv{i + 1}")(x)), 2)
        x = F.dropout(x.flatten(1), self.dropout, self.training)
        for i in range(self.fcs):
            x = F.dropout(F.relu(getattr(self, f"fc{i + 1}")(x)), self.dropout, self.training)
        return self.out(x)


def build(meta):
    """The module of a kept file's metadata (its `model` spec), in evaluation mode."""
    spec = json.loads(meta["model"])
    input, classes = json.loads(meta["input"]), int(meta["classes"])
    if spec["arch"] == "mlp":
        net = Mlp(input[0] * input[1] * input[2], spec["hidden"], classes, spec["dropout"], spec["input_dropout"])
    elif spec["arch"] == "cnn":
        net = Cnn(input, spec["channels"], spec["kernel"], spec["fc"], classes, spec["dropout"])
    elif spec["arch"] == "torchscript":
        raise SystemExit("arch torchscript: torch.jit.load the trained module kept beside it (<trial id>.pt)")
    else:
        raise SystemExit(f"arch {spec['arch']}: RepDistiller's definitions take these weights (its state_dict names)")
    return net.eval()


def load(path):
    """(module, metadata) of a kept student: its weights loaded (strict), in its number format."""
    tensors, meta = read_safetensors(path)
    net = build(meta)
    if meta["precision"] == "bf16":
        net = net.to(torch.bfloat16)
    net.load_state_dict(tensors, strict=True)
    return net, meta


def standardise(images, meta):
    """uint8 images `[n, C, H, W]` (or `[n, H, W]`) as the model takes them: `(x / 255 - mean) /
    std` per channel, the training split's statistics."""
    c, h, w = json.loads(meta["input"])
    mean, std = json.loads(meta["mean"]), json.loads(meta["std"])
    x = images.reshape(len(images), c, h, w).float() / 255.0
    if c == 1:
        return (x - mean[0]) / std[0]
    return (x - torch.tensor(mean).view(1, c, 1, 1).float()) / torch.tensor(std).view(1, c, 1, 1).float()


def logits(net, meta, x, chunk=1000):
    """Evaluation-mode logits in float32, in chunks of 1,000 images (as kd-sweep evaluates)."""
    kind = torch.bfloat16 if meta["precision"] == "bf16" else torch.float32
    with torch.no_grad():
        return torch.cat([net(x[i : i + chunk].to(kind)).float() for i in range(0, len(x), chunk)])


def test_files(meta):
    """The IDX test files of the model's dataset folder."""
    folder = json.loads(meta["data"])["dir"]
    found = []
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        names = [os.path.join(folder, stem + ext) for ext in ("", ".gz")]
        found.append(next((n for n in names if os.path.exists(n)), None))
        if found[-1] is None:
            raise SystemExit(f"{names[0]}: not found; give IMAGES and LABELS")
    return found


def main():
    if len(sys.argv) not in (2, 4):
        raise SystemExit(__doc__)
    net, meta = load(sys.argv[1])
    images, labels = sys.argv[2:] if len(sys.argv) == 4 else test_files(meta)
    x = standardise(idx(images), meta)
    y = idx(labels).long()
    errors = int((logits(net, meta, x).argmax(1) != y).sum())
    print(f"accuracy {1 - errors / len(y):.6f} errors {errors} of {len(y)}")


if __name__ == "__main__":
    main()
