#!/usr/bin/env python3
"""hitl-collect: raw interaction logs as droidlet's agents upload them: one
`logs.tar.gz` per session folder (`session_00/logs.tar.gz`, …), each holding a
pipe-delimited `interaction_loggings.csv` (time|speaker|command) and an agent log.
Players repeat themselves (the same command, other case or spacing) and one row in
each session is malformed, as real logs are. Params: sessions (8), rows_per_session
(30), seed (3).
"""
import io
import json
import os
import tarfile

import numpy as np

ACTIONS = ["build", "make", "destroy", "remove", "move to", "go to", "dig", "fill", "copy", "look at"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "small", "big", "tall", "wide"]
THINGS = ["house", "tower", "wall", "hole", "cube", "bridge", "tree", "lake", "fence", "circle"]


def add(tar, name, text):
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def main():
    params = json.loads(os.environ.get("LABELFLEET_PARAMS", "{}"))
    sessions = int(params.get("sessions", 8))
    per_session = int(params.get("rows_per_session", 30))
    rng = np.random.default_rng(int(params.get("seed", 3)))
    out = os.environ["LABELFLEET_OUTPUT_DIR"]
    for s in range(sessions):
        lines = ["time|speaker|command"]
        said = []
        for t in range(per_session):
            if said and rng.random() < 0.2:
                # A repeat, in other case and spacing.
                text = f"  {said[rng.integers(len(said))].upper()} "
            else:
                text = " ".join([
                    ACTIONS[rng.integers(len(ACTIONS))],
                    "the",
                    COLOURS[rng.integers(len(COLOURS))],
                    THINGS[rng.integers(len(THINGS))],
                ])
                said.append(text)
            lines.append(f"{t}|player{s}|{text}")
        lines.append(f"{per_session}|player{s}|too|many|fields")
        folder = os.path.join(out, f"session_{s:02d}")
        os.makedirs(folder, exist_ok=True)
        with tarfile.open(os.path.join(folder, "logs.tar.gz"), "w:gz") as tar:
            add(tar, "interaction_loggings.csv", "\n".join(lines) + "\n")
            add(tar, "agent.log", f"session {s}: {per_session} chats\n")
        print(f"LABELFLEET_PROGRESS {s + 1}/{sessions} sessions logged", flush=True)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"sessions": sessions, "rows": sessions * (per_session + 1)}, f)


if __name__ == "__main__":
    main()
