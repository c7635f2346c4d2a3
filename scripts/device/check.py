#!/usr/bin/env python3
"""The device check's driver (run by scripts/device-check.sh; see it for the how).

It writes random-initialised models in real shapes with transformers (safetensors,
plus a word-level tokenizer.json of the model's vocabulary: every request passes token
ids, so no real tokenizer is needed, and a tokenizer without an end token makes both
engines generate exactly the tokens asked for), then, for each shape:

- agreement: our logits for a padded batch and one cached decoding step against
  transformers running each row alone (the same weights, the same precision); our
  sentence embeddings against sentence-transformers;
- speed: prefill and decode tokens/s at each batch size, ours (the `device_check`
  bench) against transformers' `generate`, on the same prompt ids and lengths;
  training tokens/s, full and LoRA, ours against PyTorch (+ peft);
- peak memory of each side's process (nvidia-smi on a GPU, maxrss on a CPU).

Every measurement runs in a process of its own. One table goes to stdout and
OUT/device-check.md, everything to OUT/device-check.json.

`python3 check.py hf` (a request as JSON on stdin) is the transformers side of one
measurement, run by the driver in a child process.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

# Shapes: (name, hidden, intermediate, layers, heads, kv_heads, vocab, tied).
GPU_SHAPES = [
    ("SmolLM2-135M", 576, 1536, 30, 9, 3, 49152, True),
    ("Llama-3.2-1B", 2048, 8192, 16, 32, 8, 128256, True),
    ("Llama-3.1-8B", 4096, 14336, 32, 32, 8, 128256, False),
]
DRY_SHAPES = [
    ("tiny-a", 64, 128, 2, 4, 2, 1024, True),
    ("tiny-b", 96, 192, 3, 6, 2, 2048, False),
]
# MiniLM-L6's shape, and a tiny one for the dry run.
GPU_BERT = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
DRY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- models on disk


def word_level_tokenizer(vocab, path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(path)


def write_llama(shape, directory, device):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    name, hidden, inter, layers, heads, kv, vocab, tied = shape
    if os.path.exists(os.path.join(directory, "config.json")):
        return
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    word_level_tokenizer(vocab, os.path.join(directory, "tokenizer.json"))
    del model


def write_bert(shape, directory):
    import torch
    from transformers import BertConfig, BertModel

    if os.path.exists(os.path.join(directory, "config.json")):
        return
    torch.manual_seed(0)
    config = BertConfig(vocab_size=1024, max_position_embeddings=512, **shape)
    BertModel(config).save_pretrained(directory, safe_serialization=True)
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(1019)])}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 256}, f)


# ---------------------------------------------------------------- processes


class PeakMemory:
    """A process's peak memory, polled every 50 ms: its GPU memory as nvidia-smi
    reports it, or on a CPU its resident set's high-water mark (VmHWM, which exec
    resets, unlike the maxrss of a child forked from this large Python process; each
    side also reports its own at exit, which a short run needs)."""

    def __init__(self, pid, gpu):
        self.pid, self.gpu, self.peak_mib, self._stop = pid, gpu, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _read(self):
        if not self.gpu:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) // 1024
            return 0
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=5,
        ).stdout
        used = 0
        for line in out.splitlines():
            pid, mib = [p.strip() for p in line.split(",")]
            if int(pid) == self.pid:
                used = int(mib)
        return used

    def _poll(self):
        while not self._stop.is_set():
            try:
                self.peak_mib = max(self.peak_mib, self._read())
            except Exception:
                pass  # the process has ended, or nvidia-smi did not answer this time
            self._stop.wait(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.peak_mib


def run_child(command, request, gpu, timeout):
    """Runs one measurement; returns (its JSON result, peak MiB, seconds)."""
    started = time.time()
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    memory = PeakMemory(child.pid, gpu)
    timer = threading.Timer(timeout, child.kill)
    timer.start()
    try:
        child.stdin.write(json.dumps(request))
        child.stdin.close()
        out = child.stdout.read()
        child.wait()
    finally:
        timer.cancel()
        peak = memory.stop()
    if time.time() - started >= timeout:
        raise RuntimeError(f"{request['op']} timed out after {timeout} s")
    if child.returncode != 0:
        raise RuntimeError(f"{request['op']} failed with status {child.returncode}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    if not gpu:
        peak = result.get("peak_rss_mib") or peak
    return result, peak, time.time() - started


# ---------------------------------------------------------------- transformers side


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return None


def emit(result):
    print(json.dumps(dict(result, peak_rss_mib=peak_rss_mib())))


def hf_main():
    import torch

    request = json.loads(sys.stdin.read())
    device = torch.device(request["device"])
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    op = request["op"]
    if op == "embed":
        from sentence_transformers import SentenceTransformer, models

        modules = [
            models.Transformer(request["model"], max_seq_length=256),
            models.Pooling(request["dimension"], pooling_mode="mean"),
            models.Normalize(),
        ]
        st = SentenceTransformer(modules=modules, device=str(device))
        embeddings = st.encode(request["sentences"], batch_size=32, convert_to_numpy=True)
        embeddings.astype("float32").tofile(request["out"])
        emit({"dimension": int(embeddings.shape[1])})
        return
    from transformers import LlamaForCausalLM

    dtype = torch.float32 if op == "train" or request.get("weights") == "f32" else torch.bfloat16
    model = LlamaForCausalLM.from_pretrained(request["model"], dtype=dtype).to(device)
    if op == "logits":
        values = []
        with torch.no_grad():
            for step in (0, 1):
                for row, nxt in zip(request["rows"], request["next"]):
                    ids = row + ([nxt] if step else [])
                    logits = model(torch.tensor([ids], device=device)).logits[0, -1]
                    values.append(logits.float().cpu())
        torch.stack(values).numpy().tofile(request["out"])
        emit({"values": sum(v.numel() for v in values)})
    elif op == "generate":
        model.eval()
        results = []
        prompts = request["prompts"]
        new = request["new_tokens"]

        def once(rows):
            ids = torch.tensor(rows, device=device)
            mask = torch.ones_like(ids)
            with torch.no_grad():
                sync()
                t0 = time.perf_counter()
                model(input_ids=ids, attention_mask=mask, use_cache=True)
                sync()
                t1 = time.perf_counter()
                out = model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                    do_sample=False, eos_token_id=None, pad_token_id=0,
                )
                sync()
                t2 = time.perf_counter()
            return t1 - t0, (t2 - t1) - (t1 - t0), out.shape[1] - ids.shape[1]

        largest = min(max(request["batches"]), len(prompts))
        once(prompts[:largest])
        for batch in request["batches"]:
            rows = prompts[: min(batch, len(prompts))]
            prompt_tokens = sum(len(r) for r in rows)
            prefill = decode = 0.0
            for _ in range(max(1, request["repeats"])):
                p, d, made = once(rows)
                prefill = max(prefill, prompt_tokens / p)
                decode = max(decode, len(rows) * (made - 1) / max(d, 1e-9))
            results.append({
                "batch": len(rows), "prompt_tokens": prompt_tokens, "new_tokens": len(rows) * made,
                "prefill_tokens_per_s": prefill, "decode_tokens_per_s": decode,
            })
        emit({"runs": results})
    elif op == "train":
        if request.get("lora_rank"):
            from peft import LoraConfig, get_peft_model

            rank = request["lora_rank"]
            model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)
        rows, batch, steps = request["rows"], request["batch"], request["steps"]

        def step(s):
            chunk = [rows[(s * batch + i) % len(rows)] for i in range(batch)]
            ids = torch.tensor(chunk, device=device)
            labels = ids.clone()
            labels[:, : ids.shape[1] // 2] = -100
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step(0)
        sync()
        t0 = time.perf_counter()
        for s in range(1, steps + 1):
            step(s)
        sync()
        seconds = time.perf_counter() - t0
        tokens = steps * batch * len(rows[0])
        emit({"trainable": sum(p.numel() for p in params), "tokens_per_s": tokens / seconds})


# ---------------------------------------------------------------- the plan


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", default="plan", choices=["plan", "hf"])
    parser.add_argument("--bench", help="the device_check bench binary")
    parser.add_argument("--work", help="where models are written")
    parser.add_argument("--out", help="where results go")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    args = parser.parse_args()
    if args.role == "hf":
        return hf_main()

    import random

    gpu = not args.dry_run
    device = "cuda:0" if gpu else "cpu"
    shapes = GPU_SHAPES if gpu else DRY_SHAPES
    batches = [1, 16, 64] if gpu else [1, 4]
    prompt_len, new_tokens, repeats = (512, 128, 2) if gpu else (24, 6, 1)
    train_len, train_batch, train_steps = (512, 8, 5) if gpu else (32, 2, 2)
    weights = "bf16"
    timeout = 420 if gpu else 300
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    ours = [args.bench]
    theirs = [sys.executable, os.path.abspath(__file__), "hf"]
    results = {"machine": machine(gpu), "date": time.strftime("%Y-%m-%d"), "shapes": {}, "failures": []}

    def attempt(what, fn):
        try:
            return fn()
        except Exception as e:  # one failed measurement must not lose the others
            log(f"FAILED {what}: {e}")
            results["failures"].append(f"{what}: {e}")
            return None

    rng = random.Random(7)
    bert_dir = os.path.join(args.work, "bert")
    log("writing a BERT of MiniLM's shape" if gpu else "writing a tiny BERT")
    write_bert(GPU_BERT if gpu else DRY_BERT, bert_dir)
    sentences = [" ".join(f"w{rng.randrange(1019)}" for _ in range(rng.randrange(3, 60))) for _ in range(64)]
    results["embeddings"] = attempt("embeddings", lambda: compare_embeddings(ours, theirs, bert_dir, sentences, device, gpu, args.work, timeout))

    for shape in shapes:
        name, vocab = shape[0], shape[6]
        directory = os.path.join(args.work, name)
        log(f"{name}: writing random weights")
        started = time.time()
        write_llama(shape, directory, device)
        log(f"{name}: written in {time.time() - started:.1f} s")
        entry = results["shapes"].setdefault(name, {})
        rows = [[rng.randrange(vocab) for _ in range(n)] for n in (prompt_len // 2, prompt_len // 2 - 7)]
        nxt = [rng.randrange(vocab) for _ in rows]
        entry["agreement"] = attempt(f"{name} logits", lambda: compare_logits(ours, theirs, directory, rows, nxt, device, gpu, weights, args.work, timeout, vocab))
        prompts = [[rng.randrange(vocab) for _ in range(prompt_len)] for _ in range(max(batches))]
        request = {"op": "generate", "model": directory, "device": device, "weights": weights,
                   "generic": not gpu, "prompts": prompts, "batches": batches,
                   "new_tokens": new_tokens, "repeats": repeats}
        for side, command in (("ours", ours), ("transformers", theirs)):
            log(f"{name}: generation, {side}")
            got = attempt(f"{name} generate {side}", lambda: run_child(command, request, gpu, timeout))
            if got:
                entry[f"generate_{side}"] = dict(got[0], peak_mib=got[1], seconds=got[2])
        if shape in shapes[:2]:
            train_rows = [[rng.randrange(vocab) for _ in range(train_len)] for _ in range(train_batch * 2)]
            for mode, rank in (("full", None), ("lora", 8)):
                request = {"op": "train", "model": directory, "device": device, "lora_rank": rank,
                           "rows": train_rows, "batch": train_batch, "steps": train_steps}
                for side, command in (("ours", ours), ("pytorch", theirs)):
                    log(f"{name}: training ({mode}), {side}")
                    got = attempt(f"{name} train {mode} {side}", lambda: run_child(command, request, gpu, timeout))
                    if got:
                        entry[f"train_{mode}_{side}"] = dict(got[0], peak_mib=got[1], seconds=got[2])
        with open(os.path.join(args.out, "device-check.json"), "w") as f:
            json.dump(results, f, indent=1)

    table = render(results, batches)
    print(table)
    with open(os.path.join(args.out, "device-check.md"), "w") as f:
        f.write(table)
    with open(os.path.join(args.out, "device-check.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 1 if results["failures"] else 0


def machine(gpu):
    if not gpu:
        return f"CPU dry run ({os.cpu_count()} cores)"
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    return out


def read_f32(path):
    import numpy as np

    return np.fromfile(path, dtype=np.float32)


def compare_logits(ours, theirs, directory, rows, nxt, device, gpu, weights, work, timeout, vocab):
    import numpy as np

    a_path, b_path = os.path.join(work, "ours.logits"), os.path.join(work, "theirs.logits")
    request = {"op": "logits", "model": directory, "device": device, "weights": weights,
               "generic": not gpu, "rows": rows, "next": nxt}
    run_child(ours, dict(request, out=a_path), gpu, timeout)
    run_child(theirs, dict(request, out=b_path), gpu, timeout)
    a, b = read_f32(a_path).reshape(-1, vocab), read_f32(b_path).reshape(-1, vocab)
    scale = float(np.abs(b).max())
    worst = float(np.abs(a - b).max())
    cosine = float(min(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)) for x, y in zip(a, b)))
    same_top = int(sum(int(np.argmax(x) == np.argmax(y)) for x, y in zip(a, b)))
    # bf16 keeps 8 bits of mantissa: two implementations that round in different
    # places differ by a few per cent of the largest logit after a model's layers.
    ok = worst / scale < 0.1 and cosine > 0.99
    if not ok:
        raise RuntimeError(f"logits differ: worst {worst:.4f} of {scale:.4f}, cosine {cosine:.5f}")
    return {"worst": worst, "scale": scale, "relative": worst / scale, "cosine": cosine,
            "same_argmax": f"{same_top}/{len(a)}", "tolerance": "worst/scale < 0.1 and cosine > 0.99 (bf16)"}


def compare_embeddings(ours, theirs, directory, sentences, device, gpu, work, timeout):
    import numpy as np

    a_path, b_path = os.path.join(work, "ours.emb"), os.path.join(work, "theirs.emb")
    request = {"op": "embed", "model": directory, "device": device, "generic": not gpu, "sentences": sentences}
    got = run_child(ours, dict(request, out=a_path), gpu, timeout)[0]
    run_child(theirs, dict(request, out=b_path, dimension=got["dimension"]), gpu, timeout)
    a = read_f32(a_path).reshape(len(sentences), -1)
    b = read_f32(b_path).reshape(len(sentences), -1)
    worst = float(np.abs(a - b).max())
    if worst > 1e-3:
        raise RuntimeError(f"embeddings differ by {worst}")
    return {"worst": worst, "tolerance": 1e-3, "sentences": len(sentences), "ours_sentences_per_s": got["sentences_per_s"]}


def render(results, batches):
    lines = [f"Device check, {results['date']}, {results['machine']}", ""]
    e = results.get("embeddings")
    if e:
        lines.append(f"Embeddings vs sentence-transformers: largest difference {e['worst']:.2e} (tolerance {e['tolerance']})")
    lines += ["", "| shape | batch | prefill tok/s ours | transformers | ratio | decode tok/s ours | transformers | ratio | peak MiB ours / transformers |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in results["shapes"].items():
        ours, theirs = entry.get("generate_ours"), entry.get("generate_transformers")
        for i, batch in enumerate(batches):
            o = ours["runs"][i] if ours else None
            t = theirs["runs"][i] if theirs else None
            def cell(r, k):
                return f"{r[k]:,.0f}" if r else "—"
            def ratio(k):
                return f"**{o[k] / t[k]:.2f}×**" if o and t else "—"
            memory = f"{ours['peak_mib'] if ours else '—'} / {theirs['peak_mib'] if theirs else '—'}" if i == 0 else ""
            lines.append(f"| {name} | {batch} | {cell(o, 'prefill_tokens_per_s')} | {cell(t, 'prefill_tokens_per_s')} | {ratio('prefill_tokens_per_s')} | {cell(o, 'decode_tokens_per_s')} | {cell(t, 'decode_tokens_per_s')} | {ratio('decode_tokens_per_s')} | {memory} |")
    lines += ["", "| shape | training | tok/s ours | PyTorch | ratio | peak MiB ours / PyTorch |", "|---|---|---|---|---|---|"]
    for name, entry in results["shapes"].items():
        for mode in ("full", "lora"):
            o, t = entry.get(f"train_{mode}_ours"), entry.get(f"train_{mode}_pytorch")
            if not (o or t):
                continue
            ratio = f"**{o['tokens_per_s'] / t['tokens_per_s']:.2f}×**" if o and t else "—"
            lines.append(f"| {name} | {mode} | {o['tokens_per_s']:,.0f} | {t['tokens_per_s']:,.0f} | {ratio} | {o['peak_mib']} / {t['peak_mib']} |" if o and t else f"| {name} | {mode} | — | — | — | — |")
    lines += ["", "| shape | logits vs transformers (bf16) |", "|---|---|"]
    for name, entry in results["shapes"].items():
        a = entry.get("agreement")
        lines.append(f"| {name} | " + (f"largest difference {a['worst']:.4f} of logits up to {a['scale']:.3f} ({a['relative']:.1%}), cosine ≥ {a['cosine']:.5f}, same argmax {a['same_argmax']} |" if a else "failed |"))
    if results["failures"]:
        lines += ["", "Failures:"] + [f"- {f}" for f in results["failures"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
