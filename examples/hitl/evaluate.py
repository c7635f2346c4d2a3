#!/usr/bin/env python3
"""hitl-eval: the retrained classifier's accuracy on its test rows, overall and per
intent. Inputs: retrain/model.json, retrain/test.jsonl.
"""
import json
import os
from collections import Counter

import numpy as np


def main():
    inputs = os.path.join(os.environ["LABELFLEET_INPUT_DIR"], "retrain")
    with open(os.path.join(inputs, "model.json")) as f:
        model = json.load(f)
    with open(os.path.join(inputs, "test.jsonl")) as f:
        test = [json.loads(line) for line in f]
    labels, vocab = model["labels"], model["vocab"]
    log_prior, log_like = np.array(model["log_prior"]), np.array(model["log_like"])
    right, seen = Counter(), Counter()
    for row in test:
        score = log_prior + sum(log_like[:, vocab[w]] for w in row["text"].split() if w in vocab)
        seen[row["label"]] += 1
        right[row["label"]] += labels[int(np.argmax(score))] == row["label"]
    total = sum(seen.values())
    metrics = {
        "test_rows": total,
        "test_accuracy": sum(right.values()) / total if total else 0.0,
        "per_intent": {k: right[k] / seen[k] for k in sorted(seen)},
    }
    with open(os.path.join(os.environ["LABELFLEET_OUTPUT_DIR"], "metrics.json"), "w") as f:
        json.dump(metrics, f)


if __name__ == "__main__":
    main()
