"""Loads a labelfleet dataset export with the Hugging Face `datasets` library, as a
user would — the folder itself, so that its card's metadata is read too — and prints
what it found as JSON: splits, row counts, columns, the first row of each split, and
every warning `datasets` gave while loading (there should be none).
Usage: load_dataset.py DATASET_DIR"""

import json
import logging
import pathlib
import sys
import warnings

import datasets
from datasets import load_dataset


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


root = pathlib.Path(sys.argv[1])
collected = Collect()
datasets.utils.logging.get_logger("datasets").addHandler(collected)
logging.getLogger("huggingface_hub").addHandler(collected)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    dataset = load_dataset(str(root))
out = {"warnings": collected.messages + [str(w.message) for w in caught], "splits": {}}
for split, rows in dataset.items():
    first = rows[0] if len(rows) else None
    out["splits"][split] = {
        "rows": len(rows),
        "columns": rows.column_names,
        "dialogues": len(set(rows["dialogue_id"])),
        "empty_responses": sum(1 for r in rows["system_response"] if not r),
        "first": first,
        "slot_values": [
            {k: v for k, v in r.items() if v is not None} for r in rows["slot_values"]
        ],
    }
print(json.dumps(out, default=str))
