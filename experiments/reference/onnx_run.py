"""Run a student exported by `kd export --format onnx` in onnxruntime on its test images.

Usage: python experiments/reference/onnx_run.py MODEL.onnx KEPT.safetensors [--logits KD.safetensors]
  KEPT: the kept file it was exported from (its metadata names the dataset folder and the
  standardisation); the model's input (`input`: standardised float32, or `pixels`: raw uint8)
  is read from the ONNX file. With --logits (written by `kd eval KEPT --logits KD.safetensors`),
  also the largest absolute difference between onnxruntime's logits and kd's.
  Prints `errors E of N max_abs_diff D` (D is `-` without --logits).
"""

import argparse
import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kd_common import idx  # noqa: E402
from models import read_safetensors, standardise, test_files  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("kept")
    ap.add_argument("--logits")
    a = ap.parse_args()
    _, meta = read_safetensors(a.kept)
    images, labels = test_files(meta)
    x, y = idx(images), idx(labels).long().numpy()
    session = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if name == "pixels":
        c, h, w = (int(v) for v in meta["input"].strip("[]").split(","))
        feed = x.reshape(len(x), c, h, w).numpy()
    else:
        feed = standardise(x, meta).numpy()
    out = np.concatenate([session.run(None, {name: feed[i : i + 1000]})[0] for i in range(0, len(feed), 1000)])
    errors = int((out.argmax(1) != y).sum())
    diff = "-"
    if a.logits:
        kd = read_safetensors(a.logits)[0]["logits"].float().numpy()
        diff = f"{np.abs(kd - out).max():.3g}"
    print(f"errors {errors} of {len(y)} max_abs_diff {diff}")


if __name__ == "__main__":
    main()
