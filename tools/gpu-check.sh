#!/usr/bin/env bash
# The CUDA checks in one run, with one summary at the end: what libtorch sees (kd doctor), the
# CUDA tests (crates/runner/tests/cuda.rs), temp.yaml's wall time on the GPU (teacher included,
# fresh cache), its student phase in float32 and bfloat16 (teacher cached), and kd bench on the GPU (the MLP student phase against PyTorch eager and vmap,
# and the convolutional rows). Run from the project root (experiments/ and bench/ are read):
#   on a GPU machine of your own:   just gpu-check
#   on a lent machine with a bundle: source BUNDLE/env.sh && bash BUNDLE/gpu-check.sh
# KD_BIN (default: kd on PATH, else target/debug/kd) and CUDA_TESTS (default: the bundle's
# cuda-tests beside this script, else cargo) pick what runs; OUT (default /tmp/kd-gpu-check)
# receives the logs and results.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${OUT:-/tmp/kd-gpu-check}
mkdir -p "$out"
kd=${KD_BIN:-$(command -v kd || echo target/debug/kd)}
export KD_BIN="$kd" CI=1
summary=()
step() { # name, command...: run it, log it, remember how it ended and how long it took
    local name=$1; shift
    local t0=$SECONDS
    if "$@" > "$out/$name.log" 2>&1; then r=ok; else r="FAILED (exit $?)"; fi
    summary+=("$(printf '%-28s %-18s %5d s   %s' "$name" "$r" $((SECONDS - t0)) "$out/$name.log")")
}
step doctor "$kd" doctor
tests=${CUDA_TESTS:-}
if [ -z "$tests" ] && [ -f "$here/cuda-tests.xz" ]; then
    tests="$out/cuda-tests"
    xz -dc "$here/cuda-tests.xz" > "$tests" && chmod +x "$tests"
fi
if [ -n "$tests" ]; then
    step cuda-tests "$tests" --nocapture --test-threads 1
else
    step cuda-tests cargo test -p kd-runner --features cuda-tests --test cuda -- --nocapture --test-threads 1
fi
rm -rf "$out/temp" "$out/cache"
step temp.yaml env KD_CACHE_DIR="$out/cache" "$kd" sweep experiments/temp.yaml --out "$out/temp"
# The student phase alone (teacher cached), in float32 and in bfloat16 (train.precision).
for p in fp32 bf16; do
    rm -rf "$out/students-$p"
    step "students-$p" env KD_CACHE_DIR="$out/cache" "$kd" sweep experiments/temp.yaml \
        --set "student.train.precision=$p" --out "$out/students-$p"
done
python=${PYTHON:-$(command -v python3)}
step bench env KD_CACHE_DIR="$out/cache" "$kd" bench --out "$out/bench" --python "$python"
echo
echo "kd gpu-check ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)):"
printf '  %s\n' "${summary[@]}"
grep -h "test result" "$out/cuda-tests.log" 2>/dev/null | sed 's/^/  cuda tests: /'
grep -h "pack sizes differ" "$out/cuda-tests.log" 2>/dev/null | sed 's/^/  /'
[ -f "$out/bench/report.md" ] && echo "  bench: $out/bench/report.md, $out/bench/conv.md"
