#!/usr/bin/env python3
"""retail-collect: a synthetic retail dataset, as RetailSynth's collect step makes one.

Each row is a (store, week, product) with its shelf price, discount, promotion flag,
week of the year and store size; the target is units sold, drawn from a Poisson whose
rate falls with the paid price (elasticity about -1.8), rises with promotions and
follows the season. Params: rows (4000), seed (7). Writes data.npz (X, y, columns).
"""
import json
import os

import numpy as np


def main():
    params = json.loads(os.environ.get("LABELFLEET_PARAMS", "{}"))
    rows = int(params.get("rows", 4000))
    rng = np.random.default_rng(int(params.get("seed", 7)))
    out = os.environ["LABELFLEET_OUTPUT_DIR"]

    stores = rng.integers(0, 20, rows)
    store_size = np.linspace(0.5, 2.0, 20)[stores]
    week = rng.integers(0, 52, rows)
    price = np.exp(rng.normal(1.5, 0.4, rows))
    discount = np.where(rng.random(rows) < 0.3, rng.uniform(0.05, 0.5, rows), 0.0)
    promo = (rng.random(rows) < 0.15).astype(float)
    paid = price * (1 - discount)
    log_rate = (
        3.0
        - 1.8 * np.log(paid)
        + 0.35 * promo
        + 0.4 * np.sin(2 * np.pi * week / 52)
        + 0.6 * np.log(store_size)
        + 0.8 * discount * promo
    )
    units = rng.poisson(np.exp(log_rate))
    X = np.column_stack(
        [np.log(price), discount, promo, np.sin(2 * np.pi * week / 52),
         np.cos(2 * np.pi * week / 52), np.log(store_size)]
    )
    columns = ["log_price", "discount", "promo", "season_sin", "season_cos", "log_store_size"]
    np.savez(os.path.join(out, "data.npz"), X=X, y=units.astype(float), columns=columns)
    print(f"LABELFLEET_PROGRESS {rows} rows collected", flush=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"rows": rows, "mean_units": float(units.mean())}, f)


if __name__ == "__main__":
    main()
