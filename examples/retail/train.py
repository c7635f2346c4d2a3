#!/usr/bin/env python3
"""retail-train: a demand model, ridge regression on random Fourier features of the
standardised inputs, predicting log(1 + units).

The last 20 % of the rows are the test set, which only the evaluation reads. A sweep
trial (the default) fits on a seeded 75 % of the rest and reports `valid_rmse` on the
other 25 %; with `"final": true` it fits on all of the rest and writes model.npz.
Params: alpha (ridge penalty), lengthscale, features (number of random features),
seed, final. Input: collect/data.npz.
"""
import json
import os

import numpy as np


def features(X, W, b):
    return np.sqrt(2.0 / W.shape[1]) * np.cos(X @ W + b)


def main():
    params = json.loads(os.environ.get("LABELFLEET_PARAMS", "{}"))
    alpha = float(params.get("alpha", 1.0))
    lengthscale = float(params.get("lengthscale", 1.0))
    n_features = int(params.get("features", 64))
    seed = int(params.get("seed", 0))
    final = bool(params.get("final", False))
    data = np.load(os.path.join(os.environ["LABELFLEET_INPUT_DIR"], "collect", "data.npz"))
    X, y = data["X"], np.log1p(data["y"])
    keep = int(len(y) * 0.8)
    X, y = X[:keep], y[:keep]
    mean, std = X.mean(axis=0), X.std(axis=0) + 1e-9
    Z = (X - mean) / std

    rng = np.random.default_rng(seed)
    W = rng.normal(0, 1 / lengthscale, (Z.shape[1], n_features))
    b = rng.uniform(0, 2 * np.pi, n_features)
    order = rng.permutation(len(y))
    cut = len(y) if final else int(len(y) * 0.75)
    train, valid = order[:cut], order[cut:]

    Phi = np.column_stack([features(Z[train], W, b), np.ones(len(train))])
    coef = np.linalg.solve(Phi.T @ Phi + alpha * np.eye(Phi.shape[1]), Phi.T @ y[train])
    metrics = {"train_rmse": float(np.sqrt(np.mean((Phi @ coef - y[train]) ** 2)))}
    out = os.environ["LABELFLEET_OUTPUT_DIR"]
    if final:
        np.savez(os.path.join(out, "model.npz"), W=W, b=b, coef=coef, mean=mean, std=std)
    else:
        Phi_v = np.column_stack([features(Z[valid], W, b), np.ones(len(valid))])
        metrics["valid_rmse"] = float(np.sqrt(np.mean((Phi_v @ coef - y[valid]) ** 2)))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f)


if __name__ == "__main__":
    main()
