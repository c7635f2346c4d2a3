#!/usr/bin/env python3
"""hitl-annotate: a stand-in for the human annotation step. It labels each ingested
command (input ingest/rows: JSON lines with `command`) with its intent, as an
annotator would, and writes annotated.jsonl ({"text", "label", "session"}). Like
people, it is sometimes wrong: a share `noise` (params, default 0.05) of the labels,
chosen by a hash of the text, are another intent.
"""
import hashlib
import json
import os
from collections import Counter

INTENTS = {
    "build": "BUILD", "make": "BUILD", "copy": "BUILD",
    "destroy": "DESTROY", "remove": "DESTROY",
    "move": "MOVE", "go": "MOVE",
    "dig": "DIG", "fill": "FILL", "look": "LOOK",
}


def main():
    params = json.loads(os.environ.get("LABELFLEET_PARAMS", "{}"))
    noise = float(params.get("noise", 0.05))
    intents = sorted(set(INTENTS.values()))
    inputs = os.environ["LABELFLEET_INPUT_DIR"]
    out = os.environ["LABELFLEET_OUTPUT_DIR"]
    labels = Counter()
    with open(os.path.join(inputs, "ingest", "rows")) as rows, \
            open(os.path.join(out, "annotated.jsonl"), "w") as annotated:
        for line in rows:
            row = json.loads(line)
            text = row["command"].strip().lower()
            label = INTENTS.get(text.split()[0], "OTHER")
            h = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
            if h / 2**32 < noise:
                label = intents[(intents.index(label) + 1 + h % 5) % len(intents)] if label in intents else intents[0]
            labels[label] += 1
            annotated.write(json.dumps({"text": text, "label": label, "session": row["session"]}) + "\n")
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"rows": sum(labels.values()), "labels": dict(sorted(labels.items()))}, f)


if __name__ == "__main__":
    main()
