#!/usr/bin/env python3
"""How well labels' confidence ranks their correctness: for running logs of self_label or
eval jobs on data with gold states, the share of labels whose update is exactly the gold
turn's update (what the gold states say the turn changed), among the most confident 10 %, 25 %,
50 %, 75 % and all, ranked by each measure retrain's `data.confident` offers.

    scripts/label_confidence.py .labelfleet/artifacts/GROUP/JOB/running_log.json [...]
"""
import json
import math
import sys


def delta(before, after):
    """The update that takes state `before` to `after` (None clears a slot)."""
    update = {k: v for k, v in after.items() if before.get(k) != v}
    update.update({k: None for k in before if k not in after})
    return update


def rows_of(paths):
    turns = []
    for path in paths:
        with open(path) as f:
            turns += json.load(f)["turns"]
    by_dialogue = {}
    for t in turns:
        by_dialogue.setdefault(t["dialogue_id"], []).append(t)
    rows, skipped = [], 0
    for dialogue in by_dialogue.values():
        dialogue.sort(key=lambda t: t["turn_id"])
        gold_before = {}
        for t in dialogue:
            gold = t.get("gold_slot_values")
            confidence = t.get("confidence")
            if gold is None or confidence is None:
                skipped += 1
                continue
            # What the model said this turn changed, against what the gold states say.
            predicted = delta(t["last_slot_values"], t["slot_values"])
            rows.append({
                "right": predicted == delta(gold_before, gold),
                "empty": not predicted,
                **confidence,
            })
            gold_before = gold
    return rows, skipped


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rows, skipped = rows_of(sys.argv[1:])
    if not rows:
        sys.exit("no labels with both a gold state and a confidence in those logs")
    print(f"{len(rows)} labels ({skipped} without a gold state or a confidence left out)")
    shares = [0.1, 0.25, 0.5, 0.75, 1.0]
    for measure in ["min_logprob", "logprob"]:
        ranked = sorted(rows, key=lambda r: -r[measure])
        print(f"by {measure}:")
        for share in shares:
            top = ranked[: max(1, math.ceil(share * len(ranked)))]
            right = sum(r["right"] for r in top) / len(top)
            empty = sum(r["empty"] for r in top) / len(top)
            print(f"  most confident {share:4.0%} ({len(top):5}): update right {right:.3f}, "
                  f"empty updates {empty:.2f}, cut at {top[-1][measure]:.3f}")
    non_empty = sorted((r for r in rows if not r["empty"]), key=lambda r: -r["min_logprob"])
    if non_empty:
        print("non-empty updates only, by min_logprob:")
        for share in shares[1:]:
            top = non_empty[: max(1, math.ceil(share * len(non_empty)))]
            print(f"  most confident {share:4.0%} ({len(top):5}): update right "
                  f"{sum(r['right'] for r in top) / len(top):.3f}")


if __name__ == "__main__":
    main()
