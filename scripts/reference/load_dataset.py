"""Loads a labelfleet dataset export with the Hugging Face `datasets` library, as a
user would, and prints what it found as JSON: splits, row counts, columns, and the
first row of each split. Usage: load_dataset.py DATASET_DIR"""

import json
import pathlib
import sys

from datasets import load_dataset

root = pathlib.Path(sys.argv[1])
files = {p.name.split("-00000-of-")[0]: str(p) for p in sorted((root / "data").glob("*.parquet"))}
dataset = load_dataset("parquet", data_files=files)
out = {}
for split, rows in dataset.items():
    first = rows[0] if len(rows) else None
    out[split] = {
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
