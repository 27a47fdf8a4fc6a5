"""Run a student exported by `kd export --format onnx` in onnxruntime on what `kd eval` evaluated.

Usage: python experiments/reference/onnx_run.py MODEL.onnx DUMP.safetensors
  DUMP: written by `kd eval KEPT.safetensors --dump DUMP.safetensors`: the images (`pixels`,
  uint8, and `input`, standardised float32), their `labels` and kd's `logits`. The model is fed
  `pixels` or `input`, whichever its input is named (`kd export --pixels` or not).
  Prints `errors E of N max_abs_diff D`: onnxruntime's errors, and the largest absolute difference
  between its logits and kd's.
"""

import os
import sys

import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import read_safetensors  # noqa: E402


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    dump, _ = read_safetensors(sys.argv[2])
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    feed = dump[name].numpy()
    out = np.concatenate([session.run(None, {name: feed[i : i + 1000]})[0] for i in range(0, len(feed), 1000)])
    y = dump["labels"].numpy()
    errors = int((out.argmax(1) != y).sum())
    diff = np.abs(dump["logits"].float().numpy() - out).max()
    print(f"errors {errors} of {len(y)} max_abs_diff {diff:.3g}")


if __name__ == "__main__":
    main()
