"""`kd bench --only inference`: PyTorch's and ONNX Runtime's inference of a model kd-sweep
kept and exported, timed as kd times its own (`crates/runner/src/run/footprint.rs`): two
warm-up passes (one when a pass takes over 0.3 s), then at least 5 timed passes (3 when a pass takes over 0.3 s), more within half
a second, at most 200; the median, at batch 1 and batch 256 of random standardised images.

Usage: pytorch_infer.py MODEL.safetensors MODEL.onnx THREADS. PyTorch runs the reference
definition (`experiments/reference/models.py`) in eval mode under `torch.inference_mode`; ONNX
Runtime the exported graph on its CPU provider with THREADS intra-op threads. Output: one JSON
object on stdout.
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "experiments", "reference"))
import models  # noqa: E402


def median_ms(run):
    def one():
        t = time.perf_counter()
        run()
        return time.perf_counter() - t

    first = one()
    warm = first if first > 0.3 else one()
    wanted = 3 if warm > 0.3 else 5
    times, start = [], time.perf_counter()
    while len(times) < wanted or (time.perf_counter() - start < 0.5 and len(times) < 200):
        times.append(one())
    times.sort()
    return 1000.0 * times[len(times) // 2], len(times)


def main():
    path, onnx_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    net, meta = models.load(path)
    net.eval()
    c, h, w = json.loads(meta["input"])
    out = {"torch": torch.__version__}
    for b in (1, 256):
        x = torch.randn(b, c, h, w)
        with torch.inference_mode():
            ms, runs = median_ms(lambda: net(x))
        out[f"torch_b{b}_ms"], out[f"torch_b{b}_runs"] = ms, runs
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    out["onnxruntime"] = ort.__version__
    for b in (1, 256):
        x = torch.randn(b, c, h, w).numpy()
        ms, runs = median_ms(lambda: sess.run(None, {"input": x}))
        out[f"ort_b{b}_ms"], out[f"ort_b{b}_runs"] = ms, runs
    print(json.dumps(out))


if __name__ == "__main__":
    main()
