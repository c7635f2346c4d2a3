#!/usr/bin/env bash
# The main job, end to end, on the embedded default: build labelfleet, enqueue the
# runs/demo folder (eval jobs over the bundled MultiWOZ sample: job_0 first, then its
# dependents), run 2 workers until the queue is empty, and print status and results.
# Extra arguments go to `labelfleet enqueue` (for example --allow-dirty or --mini).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "labelfleet is written in Rust: install the toolchain (https://rustup.rs), then run this again" >&2
  exit 1
fi

echo "==> building labelfleet (release; the first build takes a few minutes)"
cargo build --release --locked --bin labelfleet
bin=target/release/labelfleet

export LABELFLEET_HOME=.labelfleet/demo
rm -rf "$LABELFLEET_HOME"

echo "==> enqueue runs/demo"
"$bin" enqueue runs/demo "$@"

echo "==> 2 workers (each exits once the queue has been empty for 3 s)"
"$bin" worker --worker-id demo-worker-1 --idle-exit 3 --wait 1 &
"$bin" worker --worker-id demo-worker-2 --idle-exit 3 --wait 1 &
wait

echo "==> status"
"$bin" status
echo
echo "==> results"
"$bin" results --group demo
echo
echo "Per-domain scores: $LABELFLEET_HOME/artifacts/demo/<run>/metrics.json"
