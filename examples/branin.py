#!/usr/bin/env python3
"""A sweep's trial as a `command` job: the shifted Branin function at the point in
LABELFLEET_PARAMS ({"x": ..., "y": ...}), written as metrics.json {"value": f}.

Branin's three minima (0.397887) are moved off the range's middle by a shift, so a
search cannot find them by sampling the centre: x in [-5, 10], y in [0, 15].
"""
import json
import math
import os


def shifted_branin(x, y):
    x, y = x - 1.3, y + 0.7
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (y - b * x * x + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


def main():
    params = json.loads(os.environ["LABELFLEET_PARAMS"])
    value = shifted_branin(float(params["x"]), float(params["y"]))
    out = os.environ["LABELFLEET_OUTPUT_DIR"]
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"value": value}, f)


if __name__ == "__main__":
    main()
