#!/usr/bin/env python3
"""Prints the table of a runs/bootstrap run from `labelfleet results --json` files.

Usage: bootstrap_table.py HOME   (HOME holds bootstrap.json, pool1.json, pool2.json and
speed.json, from `labelfleet results --json --group G`)

One row per step, in order: the JGA, turn accuracy and slot F1 of each eval (the 200
validation dialogues), of each pool's labels against the pool's gold states (which the
labeller never saw), the wall time of each step and its speed.
"""
import json
import sys
from pathlib import Path

home = Path(sys.argv[1])
load = lambda name: json.loads((home / name).read_text()) if (home / name).exists() else []
entries = {e["run_id"]: e for e in load("bootstrap.json")}
pools = {1: load("pool1.json"), 2: load("pool2.json")}
speed = {e["run_id"]: e for e in load("speed.json")}


def fmt(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


def train_row(name, what):
    e = entries.get(name)
    if not e:
        return None
    m, counts = e["metrics"], e["counts"]
    speed = f"{m.get('tokens_per_second', 0):.0f} train tok/s, {counts.get('train_examples')} turns"
    # With `data.confident`, how many of the pool's labels it kept.
    if counts.get("self_labels_seen"):
        speed += f" ({counts['self_labels_kept']} of {counts['self_labels_seen']} self-labels kept)"
    # Training time over every attempt (a job stopped and resumed trains in pieces).
    return (name, what, "", "", "", fmt(m.get("best_valid_loss")), fmt(m.get("training_seconds"), 0), speed)


def eval_row(name):
    e = entries.get(name)
    if not e:
        return None
    m = e["metrics"]
    return (name, f"{e['counts'].get('turns')} validation turns", fmt(m.get("joint_goal_accuracy")),
            fmt(m.get("turn_accuracy")), fmt(m.get("slot_f1")), fmt(m.get("loss")),
            fmt(m.get("seconds"), 0),
            f"{m.get('turns_per_second', 0):.2f} turns/s, {e['counts'].get('invalid_completions', 0)} invalid")


def pool_row(n):
    jobs = pools[n]
    if not jobs:
        return None
    turns = sum(e["counts"]["turns"] for e in jobs)
    # Turn-weighted means of each job's scores (the jobs label disjoint dialogues).
    mean = lambda key: sum(e["metrics"].get(key, 0) * e["counts"]["turns"] for e in jobs) / max(turns, 1)
    seconds = max(e["metrics"].get("seconds", 0) for e in jobs)
    rate = sum(e["metrics"].get("turns_per_second", 0) for e in jobs)
    invalid = sum(e["counts"].get("invalid_completions", 0) for e in jobs)
    return (f"r{n}_label", f"{turns} pool turns ({len(jobs)} jobs)", fmt(mean("joint_goal_accuracy")),
            fmt(mean("turn_accuracy")), fmt(mean("slot_f1")), "", fmt(seconds, 0),
            f"{rate:.2f} turns/s in all, {invalid} invalid")


rows = [
    train_row("r1_train", "fine-tune on the 1% gold"),
    eval_row("r1_eval"),
    pool_row(1),
    train_row("r2_train", "from r1, on gold 1% ×2 + the surest 75% of round 1's labels"),
    train_row("r2_gold", "from r2_train's final model, on the gold alone"),
    eval_row("r2_eval"),
    pool_row(2),
    train_row("r3_train", "from r2, on gold 1% ×2 + the surest 75% of round 2's labels"),
    train_row("r3_gold", "from r3_train's final model, on the gold alone"),
    eval_row("r3_eval"),
]
header = ("step", "what", "JGA", "turn acc", "slot F1", "loss", "wall s", "speed")
print("| " + " | ".join(header) + " |")
print("|" + "---|" * len(header))
for row in rows:
    if row:
        print("| " + " | ".join(str(c) for c in row) + " |")

if speed:
    print()
    print("| prompt (runs/prompt-speed) | turns | JGA | turns/s | new tokens/s | wall s |")
    print("|---|---|---|---|---|---|")
    for name in ("in_context", "compact"):
        e = speed.get(name)
        if e:
            m = e["metrics"]
            print(f"| {name} | {e['counts']['turns']} | {fmt(m.get('joint_goal_accuracy'))} | "
                  f"{m['turns_per_second']:.3f} | {m.get('new_tokens_per_second', 0):.1f} | {fmt(m.get('seconds'), 0)} |")
    if "in_context" in speed and "compact" in speed:
        ratio = speed["compact"]["metrics"]["turns_per_second"] / speed["in_context"]["metrics"]["turns_per_second"]
        print(f"\ncompact / in_context turns/s: {ratio:.1f}x")
