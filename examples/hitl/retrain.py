#!/usr/bin/env python3
"""hitl-retrain: retrain the intent classifier (multinomial naive Bayes on words) on
the old annotated data plus the new annotations, as droidlet's loop does.

- Below `min_new_rows` new rows (default 100) it skips: nothing worth a new model;
  metrics say so, and no model is written.
- `split: keep_old` (droidlet's default): old rows keep their fixed split (by a hash
  of their text, whatever the seed), new rows are split by `ratios` and `seed`;
  `split: resample` shuffles old and new together.
Writes model.json, test.jsonl (the test rows) and metrics (valid accuracy).
Params: min_new_rows, split, ratios ([0.8, 0.1, 0.1]), seed. Input: annotate/annotated.jsonl.
"""
import hashlib
import json
import os

import numpy as np

# The data the previous model was trained on: a small hand-labelled set.
OLD = [
    ("build a house", "BUILD"), ("make a red cube", "BUILD"), ("copy that tower", "BUILD"),
    ("build the tall wall", "BUILD"), ("destroy the house", "DESTROY"),
    ("remove the fence", "DESTROY"), ("destroy that", "DESTROY"), ("remove the big tree", "DESTROY"),
    ("go to the lake", "MOVE"), ("move to the bridge", "MOVE"), ("go there", "MOVE"),
    ("move to the green circle", "MOVE"), ("dig a hole", "DIG"), ("dig the small hole", "DIG"),
    ("fill the hole", "FILL"), ("fill the lake", "FILL"), ("look at the tower", "LOOK"),
    ("look at me", "LOOK"), ("dance", "OTHER"), ("hello", "OTHER"),
]


def fixed_split(text, ratios):
    u = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32
    return 0 if u < ratios[0] else (1 if u < ratios[0] + ratios[1] else 2)


def fit(rows, vocab, labels):
    counts = np.ones((len(labels), len(vocab)))
    prior = np.ones(len(labels))
    for text, label in rows:
        k = labels.index(label)
        prior[k] += 1
        for w in text.split():
            if w in vocab:
                counts[k, vocab[w]] += 1
    return np.log(prior / prior.sum()), np.log(counts / counts.sum(axis=1, keepdims=True))


def predict(model, vocab, labels, text):
    log_prior, log_like = model
    score = log_prior + sum(log_like[:, vocab[w]] for w in text.split() if w in vocab)
    return labels[int(np.argmax(score))]


def main():
    params = json.loads(os.environ.get("LABELFLEET_PARAMS", "{}"))
    min_new = int(params.get("min_new_rows", 100))
    policy = params.get("split", "keep_old")
    ratios = params.get("ratios", [0.8, 0.1, 0.1])
    rng = np.random.default_rng(int(params.get("seed", 0)))
    out = os.environ["LABELFLEET_OUTPUT_DIR"]
    with open(os.path.join(os.environ["LABELFLEET_INPUT_DIR"], "annotate", "annotated.jsonl")) as f:
        new = [(r["text"], r["label"]) for r in map(json.loads, f)]
    metrics = {"new_rows": len(new), "old_rows": len(OLD), "min_new_rows": min_new}
    if len(new) < min_new:
        print(f"{len(new)} new rows, fewer than {min_new}: not retraining")
        metrics["skipped"] = True
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(metrics, f)
        return

    splits = ([], [], [])
    if policy == "keep_old":
        for row in OLD:
            splits[fixed_split(row[0], ratios)].append(row)
        pool = new
    else:
        pool = OLD + new
    order = rng.permutation(len(pool))
    cuts = np.cumsum([int(r * len(pool)) for r in ratios[:2]])
    for rank, i in enumerate(order):
        splits[0 if rank < cuts[0] else (1 if rank < cuts[1] else 2)].append(pool[i])
    train, valid, test = splits

    labels = sorted({label for _, label in OLD + new})
    vocab = {w: i for i, w in enumerate(sorted({w for text, _ in train for w in text.split()}))}
    model = fit(train, vocab, labels)
    accuracy = np.mean([predict(model, vocab, labels, t) == y for t, y in valid]) if valid else 0.0
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump({"labels": labels, "vocab": vocab, "log_prior": model[0].tolist(),
                   "log_like": model[1].tolist()}, f)
    with open(os.path.join(out, "test.jsonl"), "w") as f:
        for text, label in test:
            f.write(json.dumps({"text": text, "label": label}) + "\n")
    metrics.update({"skipped": False, "split": policy, "train_rows": len(train),
                    "valid_rows": len(valid), "test_rows": len(test),
                    "valid_accuracy": float(accuracy)})
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f)


if __name__ == "__main__":
    main()
