#!/usr/bin/env bash
# One prepared check of the GPU path against the seed's engine (transformers), for a
# GPU machine lent for a few minutes that has PyTorch, transformers, peft and
# sentence-transformers but no Rust toolchain and no network.
#
#   scripts/device-check.sh --dry-run   # here, on the CPU: tiny shapes, the GPU's code
#                                       # path (Kernels::Generic), transformers on the CPU
#   scripts/device-check.sh --build     # here: the `cuda` bench binary into .device/
#   scripts/device-check.sh --run       # there: the real shapes on cuda:0
#
# --build compiles benches/device_check.rs with `--features cuda` (the toolkit from
# scripts/cuda-toolkit.sh), strips and compresses it into .device/ (git-ignored), a
# folder to name in the device tool's `carry`. --run unpacks it, points the loader at
# the CUDA libraries of that machine's PyTorch (cuBLAS, cuRAND, NVRTC; the driver's
# libcuda is the machine's own), checks with ldd that every library resolves, and runs
# scripts/device/check.py: random-initialised models in the shapes of SmolLM2-135M,
# Llama-3.2-1B and Llama-3.1-8B (written there by transformers) and a BERT of
# MiniLM's shape; agreement of logits and embeddings; prefill and decode tokens/s at
# batch 1, 16 and 64 against transformers' `generate`; training tokens/s (full and
# LoRA) against PyTorch + peft; peak GPU memory of each. The table goes to stdout and,
# with the JSON, to $OUT (or target/device-check/).
#
# Options: --python PY (default: python3 there, .venv-device/bin/python for the dry
# run), --work DIR (where models are written; default a temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=
python=
work=
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run | --build | --run) mode=${1#--} ;;
    --python) python=$2; shift ;;
    --work) work=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1; see --help" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$mode" ] || { echo "give --dry-run, --build or --run; see --help" >&2; exit 2; }
out=${OUT:-target/device-check}
mkdir -p "$out"
work=${work:-$(mktemp -d)}

# The bench binary's path, from cargo's own account of what it built.
bench_binary() {
  cargo bench --locked --no-run --bench device_check --message-format=json "$@" 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "device_check" and m.get("executable"):
        print(m["executable"])'
}

case $mode in
  build)
    eval "$(scripts/cuda-toolkit.sh)"
    echo "==> building the device_check bench with --features cuda (compute capability $CUDA_COMPUTE_CAP)"
    cargo bench --locked --no-run --bench device_check --features cuda
    binary=$(bench_binary --features cuda)
    mkdir -p .device
    strip -o .device/device_check "$binary"
    gzip -9 -f .device/device_check
    echo "==> .device/device_check.gz: $(du -h .device/device_check.gz | cut -f1); carry .device"
    ;;
  dry-run)
    python=${python:-.venv-device/bin/python}
    if ! "$python" -c "import torch, transformers, peft, sentence_transformers" 2>/dev/null; then
      echo "==> installing torch, transformers, peft and sentence-transformers into .venv-device (for the dry run only)"
      python3 -m venv .venv-device
      .venv-device/bin/pip install --quiet --disable-pip-version-check torch transformers peft sentence-transformers
      python=.venv-device/bin/python
    fi
    cargo bench --locked --no-run --bench device_check
    binary=$(bench_binary)
    "$python" scripts/device/check.py --dry-run --bench "$binary" --work "$work" --out "$out"
    ;;
  run)
    python=${python:-python3}
    [ -f .device/device_check.gz ] || { echo ".device/device_check.gz is missing: run --build here and carry .device" >&2; exit 1; }
    gunzip -c .device/device_check.gz >"$work/device_check"
    chmod +x "$work/device_check"
    # cuBLAS, cuRAND and NVRTC from the NVIDIA wheels PyTorch brings.
    libs=$("$python" - <<'EOF'
import glob, os, site
dirs = set()
for root in site.getsitepackages():
    for name in ("libcublas.so.*", "libcublasLt.so.*", "libcurand.so.*", "libnvrtc.so.*"):
        dirs.update(os.path.dirname(p) for p in glob.glob(os.path.join(root, "nvidia", "**", name), recursive=True))
print(":".join(sorted(dirs)))
EOF
)
    export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    if ldd "$work/device_check" | grep "not found"; then
      echo "the libraries above did not resolve (searched $LD_LIBRARY_PATH)" >&2
      exit 1
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$python" scripts/device/check.py --bench "$work/device_check" --work "$work" --out "$out"
    ;;
esac
