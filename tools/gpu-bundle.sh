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
du -sh "$bundle"
echo "bundle ready with the CUDA checks: source $(basename "$bundle")/env.sh && bash $(basename "$bundle")/gpu-check.sh"
