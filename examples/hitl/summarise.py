#!/usr/bin/env python3
"""hitl-metrics: one summary of the loop: rows ingested and de-duplicated, rows
annotated, whether the model was retrained, and its test accuracy. Inputs:
ingest/stats, annotate/metrics.json, retrain/metrics.json, eval/metrics.json.
"""
import json
import os


def read(*path):
    with open(os.path.join(os.environ["LABELFLEET_INPUT_DIR"], *path)) as f:
        return json.load(f)


def main():
    stats = read("ingest", "stats")
    annotate = read("annotate", "metrics.json")
    retrain = read("retrain", "metrics.json")
    evaluation = read("eval", "metrics.json")
    metrics = {
        "archives": stats["archives"],
        "rows_read": stats["rows_read"],
        "duplicates": stats["duplicates"],
        "rows_annotated": annotate["rows"],
        "retrained": not retrain["skipped"],
        "train_rows": retrain.get("train_rows", 0),
        "test_accuracy": evaluation["test_accuracy"],
    }
    with open(os.path.join(os.environ["LABELFLEET_OUTPUT_DIR"], "metrics.json"), "w") as f:
        json.dump(metrics, f)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
