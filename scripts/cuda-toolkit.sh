#!/usr/bin/env bash
# Makes a CUDA toolkit that compiles labelfleet's `cuda` feature on a machine without a
# GPU or a system CUDA install, and prints the exports that use it:
#
#   eval "$(scripts/cuda-toolkit.sh [DIR])"      # DIR defaults to ~/.cache/labelfleet-cuda
#   cargo build --release --features cuda
#
# - nvcc, its headers and libnvvm come from NVIDIA's CUDA 13.0 wheels on PyPI (the
#   `cuda-toolkit` meta-package), in a venv under DIR: one tree at
#   site-packages/nvidia/cu13/{bin,include,lib,nvvm}. 13.0 because the H200 machines
#   run driver 580 (CUDA 13.0), and candle's kernels are PTX, which an older driver
#   cannot load from a newer toolkit.
# - candle links cudarc with `dynamic-linking`: the linker needs libcuda, libnvrtc,
#   libcurand, libcublas and libcublasLt (and candle-kernels the runtime, libcudart,
#   which the wheels ship). No wheel ships a libcuda (the driver's), so
#   every one is a stub made here from cudarc's own bindings: each function cudarc
#   declares, returning an error status, under the real library's soname. A binary
#   linked against them runs on a GPU machine with that machine's real libraries on
#   the loader's path; here, calling into CUDA fails cleanly.
# Idempotent: a second run reuses what the first made. Progress goes to stderr; only
# the exports go to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_WHEELS_VERSION="13.0.*"
dir=${1:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/labelfleet-cuda}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
log() { echo "==> $*" >&2; }

if [ ! -x "$dir/venv/bin/python" ]; then
  log "creating a venv in $dir/venv"
  python3 -m venv "$dir/venv"
fi
root=$("$dir/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13
if [ ! -x "$root/bin/nvcc" ]; then
  log "installing cuda-toolkit[nvcc,cccl]==$CUDA_WHEELS_VERSION from PyPI (about 130 MB)"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check \
    "cuda-toolkit[nvcc,cccl]==$CUDA_WHEELS_VERSION" >&2
fi
[ -x "$root/bin/nvcc" ] || { echo "no nvcc under $root after installing the wheels" >&2; exit 1; }

# The stubs follow the bindings of the cudarc that Cargo.lock pins.
cudarc_version=$(awk '/^name = "cudarc"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
[ -n "$cudarc_version" ] || { echo "Cargo.lock names no cudarc" >&2; exit 1; }
cargo fetch --locked >&2
cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$cudarc_version" | head -n 1)
[ -d "$cudarc/src" ] || { echo "cudarc $cudarc_version's source is not in the cargo registry" >&2; exit 1; }

stubs=$root/lib/stubs
mkdir -p "$stubs"
# library  cudarc's bindings  the real library's soname (CUDA 13)
while read -r lib bindings soname; do
  [ -f "$stubs/$soname" ] && [ "$stubs/$soname" -nt "$cudarc/src/$bindings/sys/mod.rs" ] && continue
  log "stub $soname from cudarc $cudarc_version's $bindings bindings"
  source_file=$(mktemp --suffix=.c)
  # Every status these libraries return is an int, and 999 is an error in each
  # (CUDA_ERROR_UNKNOWN for the driver).
  grep -oP '^pub unsafe fn \K\w+(?=\()' "$cudarc/src/$bindings/sys/mod.rs" | sort -u \
    | sed 's/.*/int &(void) { return 999; }/' >"$source_file"
  cc -shared -fPIC -Wl,-soname,"$soname" -o "$stubs/lib$lib.so" "$source_file"
  rm -f "$source_file"
  ln -sf "lib$lib.so" "$stubs/$soname"
done <<'EOF'
cuda driver libcuda.so.1
nvrtc nvrtc libnvrtc.so.13
curand curand libcurand.so.10
cublas cublas libcublas.so.13
cublasLt cublaslt libcublasLt.so.13
EOF

# candle-kernels also links the CUDA runtime, which the wheels ship only as
# libcudart.so.13: the linker looks for libcudart.so.
ln -sf libcudart.so.13 "$root/lib/libcudart.so"

# CUDAFORGE_THREADS: candle-kernels compiles its .cu files on half the cores unless
# told otherwise (one at a time on 2 cores).
cat <<EOF
export CUDA_HOME='$root'
export PATH='$root/bin':"\$PATH"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export CUDAFORGE_THREADS=\${CUDAFORGE_THREADS:-$(nproc)}
EOF
