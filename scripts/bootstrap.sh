#!/usr/bin/env bash
# The self-labelling loop on real data (runs/bootstrap), on the embedded default with 2
# workers, then its table. SmolLM2-135M is fine-tuned on the 1% gold MultiWOZ training
# dialogues (IC-DST's train_1p_v1.json) with the compact prompt, evaluated on 200
# MultiWOZ 2.1 validation dialogues (seeded shuffle), labels the rest of the 5% split
# (train_5p_v3.json minus the 1%) and is retrained on gold + its own labels, twice.
# runs/prompt-speed times the in-context and the compact prompts side by side.
# Nothing is run by hand between the steps: the job board releases each one.
#
#   scripts/bootstrap.sh            the full run (about 3 hours on 2 CPU cores)
#   scripts/bootstrap.sh --mini     the same jobs, a few dialogues and 4 steps each (CI)
#   scripts/bootstrap.sh --resume   carry on a stopped run where it was: nothing is
#                                   deleted or enqueued; jobs pick up from their
#                                   checkpoints and running logs
#
# Extra arguments go to `labelfleet enqueue`. Needs ../shared/data (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -d ../shared/data/icdst_train ]]; then
  echo "bootstrap reads ../shared/data/{icdst_train,multiwoz21}: put the data there first" >&2
  exit 1
fi
scripts/fetch-models.sh
cargo build --release --locked --bin labelfleet
bin=${LABELFLEET_BIN:-target/release/labelfleet}

export LABELFLEET_HOME=${LABELFLEET_HOME:-.labelfleet/bootstrap}
if [[ ${1:-} == --resume ]]; then
  shift
  if [[ ! -f $LABELFLEET_HOME/queue.sqlite ]]; then
    echo "--resume: no run in $LABELFLEET_HOME to carry on; start one without --resume" >&2
    exit 1
  fi
else
  rm -rf "$LABELFLEET_HOME"
  "$bin" enqueue runs/bootstrap "$@"
  # The two prompts side by side on the same 8 validation turns, once the first model
  # is trained: SmolLM2 in context (k = 8 examples from the 1% gold) and the fine-tuned
  # model with the compact prompt.
  "$bin" enqueue runs/prompt-speed "$@"
fi

echo "==> 2 workers (each exits once the queue is empty and nothing held can be released)"
started=$(date +%s)
"$bin" worker --worker-id bootstrap-1 --idle-exit 5 --wait 1 &
"$bin" worker --worker-id bootstrap-2 --idle-exit 5 --wait 1 &
wait
echo "==> all steps done in $(( $(date +%s) - started )) s"
"$bin" status
"$bin" results --json --group bootstrap > "$LABELFLEET_HOME/bootstrap.json"
"$bin" results --json --group bootstrap-pool1 > "$LABELFLEET_HOME/pool1.json"
"$bin" results --json --group bootstrap-pool2 > "$LABELFLEET_HOME/pool2.json"
"$bin" results --json --group prompt-speed > "$LABELFLEET_HOME/speed.json"
python3 scripts/bootstrap_table.py "$LABELFLEET_HOME"
