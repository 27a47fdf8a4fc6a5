#!/usr/bin/env bash
# The CUDA checks in one run that cannot waste a short GPU loan (docs/performance.md#the-gpu-check):
#   preflight    kd doctor's CUDA line (at most 60 s); no usable CUDA stops the run at once
#   cuda-tests   crates/runner/tests/cuda.rs (the bundle's prebuilt binary, else cargo)
#   temp         experiments/temp.yaml on the GPU, teacher included (fresh cache)
#   students-*   its student phase alone (teacher cached) in float32 and in bfloat16
#   bench-step   the matmul roof and one KD step, kd against PyTorch eager, both on the GPU
#   bench-mlp    kd bench's MLP part, one repeat, its PyTorch scripts on the GPU
#   bench-conv   kd bench's convolutional rows, one repeat
# Every step has a timeout, cut to what is left of a budget (KD_GPU_CHECK_BUDGET, 420 s), and
# prints its summary line (status, seconds, accuracies or speed ratios) as it ends. Work goes to
# a folder under $TMPDIR; $OUT (default /tmp/kd-gpu-check-out) receives only summary.txt and
# logs.tgz (every step's log), both rewritten after each step so a run cut short still returns
# them.
#
# Usage, from the project root (experiments/ and bench/ are read):
#   on a lent machine:   source BUNDLE/env.sh && bash BUNDLE/gpu-check.sh
#   on a GPU machine:    just gpu-check
#   anywhere (CPU):      bash tools/gpu-check.sh --smoke   (tiny configs and bench; `just test`
#                        runs it in crates/runner/tests/gpu_check.rs)
# KD_BIN (default: kd on PATH, else target/debug/kd), CUDA_TESTS (default: the bundle's
# cuda-tests.xz beside this script, else cargo) and PYTHON (default python3, the PyTorch the
# bench's scripts use) pick what runs. KD_GPU_CHECK_HANG=STEP replaces that step by a hang (for
# rehearsing the timeouts), cut after KD_GPU_CHECK_HANG_S seconds (default: the step's own).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
smoke=0
[ "${1:-}" = --smoke ] && smoke=1
out=${OUT:-/tmp/kd-gpu-check-out}
budget=${KD_GPU_CHECK_BUDGET:-420}
work=$(mktemp -d -t kd-gpu-check.XXXXXX)
mkdir -p "$out" "$work/logs"
rm -f "$out/summary.txt" "$out/logs.tgz"
kd=${KD_BIN:-$(command -v kd || echo target/debug/kd)}
python=${PYTHON:-$(command -v python3)}
# kd sets these itself (env::CUDA_PROCESS_ENV); set here too, so the PyTorch scripts and any
# process started before kd run under them.
export KD_BIN="$kd" CI=1 KD_CACHE_DIR="$work/cache" NVIDIA_TF32_OVERRIDE=0 CUDA_DEVICE_ORDER=PCI_BUS_ID
start=$SECONDS
failed=0

say() { printf '%s\n' "$*" | tee -a "$out/summary.txt"; }
# logs.tgz whole or not at all: written beside, then renamed (a run cut mid-write keeps the last).
pack() {
    tar -C "$work" -czf "$work/logs.tgz" logs 2>/dev/null &&
        cp "$work/logs.tgz" "$out/.logs.tgz.new" && mv -f "$out/.logs.tgz.new" "$out/logs.tgz"
}

# Test accuracies of a sweep's folder, in one line: teacher, best KD cell (mean over seeds),
# baseline (mean), where the rows say they ran.
accuracies() {
    [ -f "$1/trials.csv" ] || return 0
    "$python" - "$1/trials.csv" <<'PY'
import csv, sys
from collections import defaultdict
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["status"] == "ok" and r["test_acc"]]
acc = lambda rs: 100 * sum(float(r["test_acc"]) for r in rs) / len(rs)
parts = []
t = [r for r in rows if r["kind"] == "teacher"]
if t:
    parts.append(f"teacher {acc(t):.2f}")
cells = defaultdict(list)
for r in rows:
    if r["kind"] == "kd":
        cells[r["temperature"]].append(r)
if cells:
    temp, best = max(cells.items(), key=lambda kv: acc(kv[1]))
    parts.append(f"KD best T={float(temp):g} {acc(best):.2f} ({len(best)} seeds)")
b = [r for r in rows if r["kind"] == "baseline"]
if b:
    parts.append(f"baseline {acc(b):.2f}")
if rows:
    parts.append(f"on {rows[-1]['device']} {rows[-1]['hardware']}")
print("test %: " + ", ".join(parts))
PY
}

# Speed ratios of a bench folder, in one line.
ratios() {
    "$python" - "$1" <<'PY'
import json, os, sys
d, parts = sys.argv[1], []
if os.path.exists(f"{d}/step.json"):
    j = json.load(open(f"{d}/step.json"))
    parts.append(f"roof {j['roof_gflops']:.0f} GFLOP/s")
    for s in j["step"]:
        eager = s["pytorch_eager"] or float("nan")  # NaN is written as null
        parts.append(f"step b{s['batch']}: alone/eager {(s['kd_single'] or 0) / eager:.2f}, "
                     f"18 packed/eager {(s['kd_packed_18'] or 0) / eager:.2f}")
if os.path.exists(f"{d}/bench.json"):
    j = json.load(open(f"{d}/bench.json"))
    for w in j["workloads"]:
        m = {k: v["median_s"] or float("nan") for k, v in w["modes"].items()}
        if "kd-sweep packed" in m and "pytorch eager" in m:
            parts.append(f"{w['name']}: packed {m['kd-sweep packed']:.1f} s, "
                         f"x{m['pytorch eager'] / m['kd-sweep packed']:.2f} eager, "
                         f"x{m.get('pytorch vmap', float('nan')) / m['kd-sweep packed']:.2f} vmap")
if os.path.exists(f"{d}/conv.json"):
    j = json.load(open(f"{d}/conv.json"))
    parts.append(f"conv rows: {len(j['rows']) + len(j['teacher'])} (conv.md in the logs)")
print("; ".join(parts))
PY
}

facts() {
    case $1 in
        preflight) grep -m1 '^CUDA:' "$work/logs/preflight.log" ;;
        cuda-tests) grep -h 'test result' "$work/logs/cuda-tests.log" | tail -1 ;;
        temp | students-*) accuracies "$work/$1" ;;
        bench-*) ratios "$work/$1" 2>/dev/null ;;
    esac
}

# step NAME LIMIT_S COMMAND...: run COMMAND under a timeout (LIMIT_S, cut to the budget left),
# its output in logs/NAME.log; print its summary line as it ends; refresh logs.tgz.
step() {
    local name=$1 limit=$2 rc t0=$SECONDS r
    shift 2
    local left=$((budget - (SECONDS - start)))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -le 5 ]; then
        say "$(printf '%-13s %-24s' "$name" "NOT RUN (budget spent)")"
        failed=1
        return 1
    fi
    if [ "${KD_GPU_CHECK_HANG:-}" = "$name" ]; then
        limit=${KD_GPU_CHECK_HANG_S:-$limit}
        set -- sleep 100000
    fi
    cp "$out/summary.txt" "$work/logs/summary.txt" 2>/dev/null
    timeout -k 5 "$limit" "$@" > "$work/logs/$name.log" 2>&1
    rc=$?
    case $rc in
        0) r=ok ;;
        124) r="TIMEOUT (cut at ${limit} s)" ;;
        137) r="KILLED (timeout or memory)" ;;
        *) r="FAILED (exit $rc)" ;;
    esac
    [ "$rc" = 0 ] || failed=1
    say "$(printf '%-13s %-24s %4d s  %s' "$name" "$r" $((SECONDS - t0)) "$(facts "$name")")"
    cp "$out/summary.txt" "$work/logs/summary.txt"
    pack
    return $rc
}

if [ $smoke = 1 ]; then
    dev=cpu
    # Tiny: 2,000 training images, an MLP teacher, one epoch each, one temperature and seed,
    # one thread (the tests beside it have the other cores).
    sets=(--set dataset.train_limit=2000 --set dataset.val_size=500 --set 'seeds=[0]'
        --set 'teacher.model={arch: mlp, hidden: [64]}' --set teacher.train.epochs=1
        --set student.train.epochs=1 --set 'grid.temperature=[4]' --set threads=1)
    bench_step=(--step-batch 128 --set dataset.train_limit=2000 --set dataset.val_size=500
        --set threads=1)
else
    dev=cuda
    sets=()
    bench_step=()
fi

say "kd gpu-check$([ $smoke = 1 ] && echo ' --smoke (CPU allowed)') on $(cat /proc/sys/kernel/hostname 2>/dev/null), $(date -u '+%Y-%m-%d %H:%M UTC'), budget ${budget} s"
say "gpu: $(timeout 15 nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)"
say "carried: $(du -sh --exclude=kd --exclude=cuda-tests "$here" 2>/dev/null | cut -f1) in $(basename "$here")/, tree $(du -sh --exclude=target --exclude=.venv --exclude=.git --exclude="$(basename "$here")" . 2>/dev/null | cut -f1); kd: $kd"
[ -f "$here/data/fashion-mnist/TRAIN_IMAGES" ] &&
    say "data: the bundle's Fashion-MNIST training split is its first $(cat "$here/data/fashion-mnist/TRAIN_IMAGES") images (the device's 64 MiB limit): accuracies are below a full run's"

# Preflight: doctor's CUDA line decides (its libtorch-version verdict is informational under a
# bundle, whose libtorch is the GPU machine's).
step preflight 60 bash -c 'o=$("$0" doctor 2>&1); echo "$o"; grep -q "^CUDA: available" <<<"$o" || [ "$1" = 1 ]' "$kd" "$smoke"
if [ $? != 0 ] && [ $smoke = 0 ]; then
    say "stopped: CUDA is not usable here (preflight's line above); nothing else was run"
    exit 3
fi

tests=${CUDA_TESTS:-}
if [ -z "$tests" ] && [ -f "$here/cuda-tests.xz" ]; then
    tests="$work/cuda-tests"
    xz -dc "$here/cuda-tests.xz" > "$tests" && chmod +x "$tests"
fi
if [ -n "$tests" ]; then
    step cuda-tests 90 "$tests" --nocapture --test-threads 1
elif [ $smoke = 0 ]; then
    step cuda-tests 120 cargo test -p kd-runner --features cuda-tests --test cuda -- --nocapture --test-threads 1
else
    say "$(printf '%-13s %-24s' cuda-tests 'not run (smoke: no CUDA)')"
fi

step temp 150 "$kd" sweep experiments/temp.yaml --set "device=$dev" ${sets[@]+"${sets[@]}"} --out "$work/temp"
for p in fp32 bf16; do
    step "students-$p" 60 "$kd" sweep experiments/temp.yaml --set "device=$dev" ${sets[@]+"${sets[@]}"} \
        --set "student.train.precision=$p" --out "$work/students-$p"
done
step bench-step 90 "$kd" bench --only step --set "device=$dev" ${bench_step[@]+"${bench_step[@]}"} \
    --out "$work/bench-step" --python "$python"
if [ $smoke = 0 ]; then
    step bench-mlp 120 "$kd" bench --only mlp --repeats 1 --set "device=$dev" \
        --out "$work/bench-mlp" --python "$python"
    step bench-conv 60 "$kd" bench --only conv --repeats 1 --cifar-steps 5 --set "device=$dev" \
        --out "$work/bench-conv" --python "$python"
fi
for f in temp/report.md bench-step/step.md bench-mlp/report.md bench-conv/conv.md; do
    [ -f "$work/$f" ] && cp "$work/$f" "$work/logs/${f//\//-}"
done
say "total $((SECONDS - start)) s; $([ $failed = 0 ] && echo 'every step ok' || echo 'SOME STEP DID NOT PASS'); logs: logs.tgz (work in $work)"
cp "$out/summary.txt" "$work/logs/summary.txt"
pack
exit $failed
