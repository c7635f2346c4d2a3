#!/usr/bin/env python3
"""Builds the small bundled samples from ../shared/data (run once; outputs are committed).

- runs/sample-data/multiwoz21_val_sample.json: the first 10 dialogues of MultiWOZ 2.1
  validation (ConvLab-3's val.json.zip), keeping each turn's text, metadata and
  dialog_act only.
- runs/sample-data/icdst_train_gold_sample.json: every turn of the first 10 dialogues of
  IC-DST's 1% MultiWOZ training split (train_1p_v1.json), as they are: gold examples
  for in-context labelling (`--gold-examples`), from training dialogues, so that they
  never hold the validation dialogues being labelled.
- dst/tests/fixtures/same_dialogue.{multiwoz21,icdst,sgd}.json: one dialogue written in
  all three formats, following each format's own conventions (IC-DST's `hotel-pricerange`
  and `hotel-book people`; MultiWOZ 2.2's `hotel-bookpeople` with list values), so that
  the readers can be checked for agreement.
"""
import json
import sys
import zipfile
from pathlib import Path

root = Path(__file__).resolve().parent.parent
data = Path(sys.argv[1]) if len(sys.argv) > 1 else root.parent / "shared" / "data"
val = json.load(zipfile.ZipFile(data / "multiwoz21" / "val.json.zip").open("val.json"))
order = [l.strip() for l in open(data / "multiwoz21" / "valListFile") if l.strip()]

def trim(d, keep=("text", "metadata")):
    return {"log": [{k: t[k] for k in keep if k in t} for t in d["log"]]}

sample_ids = [i.removesuffix(".json") for i in order][:10]
sample = {i: trim(val[i], ("text", "metadata", "dialog_act")) for i in sample_ids}
out = root / "runs" / "sample-data" / "multiwoz21_val_sample.json"
out.write_text(json.dumps(sample, indent=1) + "\n")
print(out, out.stat().st_size, "bytes")

train = json.load(open(data / "icdst_train" / "train_1p_v1.json"))
first = list(dict.fromkeys(t["ID"] for t in train))[:10]
gold = [t for t in train if t["ID"] in first]
out = root / "runs" / "sample-data" / "icdst_train_gold_sample.json"
out.write_text(json.dumps(gold, indent=1) + "\n")
print(out, out.stat().st_size, "bytes")

# The agreement fixture: a multi-domain dialogue with booking slots.
fid = next(i for i in sample_ids if any(
    v for t in val[i]["log"][1::2] for d in t["metadata"].values()
    for k, v in d.get("book", {}).items() if k != "booked" and v))
dialogue = trim(val[fid])
fixtures = root / "dst" / "tests" / "fixtures"
(fixtures / "same_dialogue.multiwoz21.json").write_text(json.dumps({fid: dialogue}, indent=1) + "\n")

ICDST_SLOT = {"pricerange": "pricerange", "leaveAt": "leaveat", "arriveBy": "arriveby"}
def states():
    for t in dialogue["log"][1::2]:
        ic, mw22 = {}, {}
        for domain, parts in t["metadata"].items():
            for section in ("semi", "book"):
                for slot, value in parts.get(section, {}).items():
                    if slot in ("booked", "ticket") or value in ("", "not mentioned"):
                        continue
                    base = ICDST_SLOT.get(slot, slot.lower())
                    if section == "book":
                        ic[f"{domain}-book {base}"] = value
                        mw22.setdefault(domain, {})[f"{domain}-book{base}"] = [value]
                    else:
                        ic[f"{domain}-{base}"] = value
                        mw22.setdefault(domain, {})[f"{domain}-{base}"] = [value]
        yield ic, mw22

log = dialogue["log"]
icdst, sgd_turns, last = [], [], {}
for k, (ic, mw22) in enumerate(states()):
    icdst.append({
        "ID": fid + ".json", "turn_id": k, "domains": sorted({s.split("-")[0] for s in ic}),
        "dialog": {"sys": [""] + [log[2 * j + 1]["text"] for j in range(k)],
                   "usr": [log[2 * j]["text"] for j in range(k + 1)]},
        "slot_values": ic,
        "turn_slot_values": {s: v for s, v in ic.items() if last.get(s) != v},
        "last_slot_values": last,
    })
    last = ic
    sgd_turns.append({"speaker": "USER", "utterance": log[2 * k]["text"], "frames": [
        {"service": dom, "state": {"active_intent": "find_" + dom, "requested_slots": [],
                                   "slot_values": slots}} for dom, slots in sorted(mw22.items())]})
    sgd_turns.append({"speaker": "SYSTEM", "utterance": log[2 * k + 1]["text"], "frames": []})
(fixtures / "same_dialogue.icdst.json").write_text(json.dumps(icdst, indent=1) + "\n")
(fixtures / "same_dialogue.sgd.json").write_text(json.dumps(
    [{"dialogue_id": fid + ".json", "services": sorted({f["service"] for t in sgd_turns for f in t["frames"]}),
      "turns": sgd_turns}], indent=1) + "\n")
print("fixture dialogue", fid, len(log) // 2, "turns")
