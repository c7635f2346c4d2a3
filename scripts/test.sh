#!/usr/bin/env bash
# Everything CI checks: formatting, clippy with warnings as errors, and every test
# (unit, conformance suites, and end-to-end fleet tests with real worker processes).
# The dataset tests read ../shared/data beside the checkout (or $LABELFLEET_DATA).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "labelfleet is written in Rust: install the toolchain (https://rustup.rs), then run this again" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --all-features --locked
