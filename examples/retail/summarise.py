#!/usr/bin/env python3
"""retail-metrics: the test metrics of the whole set, from the evaluation shards'
metrics.json (inputs eval_0 … eval_N): rmse and mae weighted by each shard's rows.
"""
import json
import os

import numpy as np


def main():
    inputs = os.environ["LABELFLEET_INPUT_DIR"]
    shards = []
    for name in sorted(os.listdir(inputs)):
        with open(os.path.join(inputs, name, "metrics.json")) as f:
            shards.append(json.load(f))
    rows = np.array([s["rows"] for s in shards], dtype=float)
    rmse = np.sqrt(np.sum(rows * np.array([s["rmse"] for s in shards]) ** 2) / rows.sum())
    mae = np.sum(rows * np.array([s["mae"] for s in shards])) / rows.sum()
    metrics = {"shards": len(shards), "rows": int(rows.sum()), "test_rmse": float(rmse), "test_mae": float(mae)}
    with open(os.path.join(os.environ["LABELFLEET_OUTPUT_DIR"], "metrics.json"), "w") as f:
        json.dump(metrics, f)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
