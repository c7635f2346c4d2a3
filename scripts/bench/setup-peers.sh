#!/usr/bin/env bash
# Installs the benchmark peers into .venv-bench (kept out of CI: llama.cpp builds from
# source, about 6 minutes on 2 cores): onnxruntime + onnx for MiniLM, llama-cpp-python
# for SmolLM2. llama.cpp's native build dies with "Illegal instruction" on some CPUs
# (AVX-512 + AMX reported), so it is built for an explicit, portable instruction set.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m venv .venv-bench
.venv-bench/bin/pip install --quiet --disable-pip-version-check \
  numpy==2.2.6 tokenizers==0.22.1 onnx onnxruntime
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON" \
  .venv-bench/bin/pip install --quiet --disable-pip-version-check llama-cpp-python==0.3.36
