#!/usr/bin/env python3
"""retail-evaluate: one shard of the test set (rows `i` with i % shards == shard of the
last 20 %), as an AWS Batch array job's child would take its index. Writes the shard's
rmse and mae (of log(1 + units)) and its row count. Params: shard, shards.
Inputs: collect/data.npz, train_best/model.npz.
"""
import json
import os

import numpy as np


def main():
    params = json.loads(os.environ.get("LABELFLEET_PARAMS", "{}"))
    shard, shards = int(params["shard"]), int(params.get("shards", 4))
    inputs = os.environ["LABELFLEET_INPUT_DIR"]
    data = np.load(os.path.join(inputs, "collect", "data.npz"))
    model = np.load(os.path.join(inputs, "train_best", "model.npz"))
    X, y = data["X"], np.log1p(data["y"])
    test = np.arange(int(len(y) * 0.8), len(y))
    test = test[test % shards == shard]
    Z = (X[test] - model["mean"]) / model["std"]
    W, b = model["W"], model["b"]
    Phi = np.column_stack([np.sqrt(2.0 / W.shape[1]) * np.cos(Z @ W + b), np.ones(len(test))])
    error = Phi @ model["coef"] - y[test]
    metrics = {
        "shard": shard,
        "rows": int(len(test)),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
    }
    with open(os.path.join(os.environ["LABELFLEET_OUTPUT_DIR"], "metrics.json"), "w") as f:
        json.dump(metrics, f)


if __name__ == "__main__":
    main()
