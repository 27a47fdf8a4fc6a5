#!/usr/bin/env bash
# A GPU bundle with the CUDA checks: ../shared/tools/gpu-bundle.sh BUNDLE (kd built against the
# lent machine's torch 2.11 with tch 0.24, the data, env.sh), then, in the same build folder and
# with the same tch, the test binary of crates/runner/tests/cuda.rs (feature cuda-tests), stripped
# and compressed into BUNDLE/cuda-tests.xz, and tools/gpu-check.sh beside it.
# Usage, from the project root: tools/gpu-bundle.sh BUNDLE   (BUNDLE inside the repo and listed in
# .git/info/exclude, so the device call can carry it; 15 to 35 minutes of build on 2 cores).
# On the GPU machine: source BUNDLE/env.sh && bash BUNDLE/gpu-check.sh
set -euo pipefail
bundle=$(realpath -m "${1:?usage: tools/gpu-bundle.sh BUNDLE}")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
shared="$here/../../shared/tools/gpu-bundle.sh"
[ -x "$shared" ] || { echo "gpu-bundle: $shared not found (../shared beside the checkout)" >&2; exit 2; }
work=${GPU_BUILD_DIR:-/tmp/kd-gpu-build}
# The build folder's copy of the tree keeps the files' times (tar), so a source edited before an
# earlier bundle's build finished looks older than its artifact and cargo would ship the stale
# one: the workspace's own crates are always rebuilt (their dependencies stay built).
rm -rf "$work"/target/debug/.fingerprint/kd-* "$work"/target/debug/.fingerprint/kd_*
"$shared" "$bundle"
cd "$work/src"
exe=$(PATH="$work/venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1 CARGO_TARGET_DIR="$work/target" \
    cargo test -p kd-runner --features cuda-tests --test cuda --no-run --message-format=json \
    | "$work/venv/bin/python" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])')
[ -n "$exe" ] || { echo "gpu-bundle: the cuda test binary was not built" >&2; exit 2; }
strip -o "$work/cuda-tests" "$exe"
xz -T2 -6 -c "$work/cuda-tests" > "$bundle/cuda-tests.xz"
cp "$here/gpu-check.sh" "$bundle/gpu-check.sh"
# What travels to a lent machine, the tree's tracked files and the bundle, must stay within 64
# MiB: the training split goes as its first KD_BUNDLE_TRAIN images (default 20,000; IDX headers
# rewritten, so kd reads a smaller split), which the check's summary states.
n=${KD_BUNDLE_TRAIN:-20000}
"$work/venv/bin/python" - "$bundle/data/fashion-mnist" "$n" <<'PY'
import gzip, struct, sys
d, n = sys.argv[1], int(sys.argv[2])
for name, size, head in (("train-images-idx3-ubyte.gz", 784, 16), ("train-labels-idx1-ubyte.gz", 1, 8)):
    raw = gzip.open(f"{d}/{name}").read()
    count = struct.unpack(">I", raw[4:8])[0]
    if n < count:
        raw = raw[:4] + struct.pack(">I", n) + raw[8:head] + raw[head:head + n * size]
        with gzip.open(f"{d}/{name}", "wb", compresslevel=9) as f:
            f.write(raw)
PY
echo "$n" > "$bundle/data/fashion-mnist/TRAIN_IMAGES"
cd "$here/.."
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carried=$(du -sb "$bundle" | cut -f1)
total=$(( (tree + carried) / 1048576 ))
echo "carried to the device: tree $((tree / 1048576)) MiB + bundle $((carried / 1048576)) MiB = $total MiB (limit 64)"
[ "$total" -lt 62 ] || { echo "gpu-bundle: $total MiB is over the device's limit: lower KD_BUNDLE_TRAIN" >&2; exit 2; }
echo "bundle ready with the CUDA checks: source $(basename "$bundle")/env.sh && bash $(basename "$bundle")/gpu-check.sh"
