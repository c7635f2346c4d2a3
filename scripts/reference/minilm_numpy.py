"""An independent sentence-embedding forward for all-MiniLM-L6-v2: plain numpy over
the same safetensors, with the `tokenizers` package for token ids. The candle path's
test compares against it (to 1e-4).

Usage: python minilm_numpy.py MODEL_DIR < sentences.json > embeddings.json
(reads a JSON list of strings, writes a JSON list of unit-length vectors).
"""

import json
import math
import struct
import sys

import numpy as np
from tokenizers import Tokenizer


def read_safetensors(path):
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            continue  # position_ids (I64): not a weight
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype="<f4").reshape(info["shape"])
    return tensors


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x):
    # The exact (erf) GELU that BERT's "gelu" means.
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def embed(model_dir, sentences):
    config = json.load(open(f"{model_dir}/config.json"))
    w = read_safetensors(f"{model_dir}/model.safetensors")
    p = "" if "embeddings.word_embeddings.weight" in w else "bert."
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_padding()  # the file pads to 128; a sentence is its real tokens only
    tok.enable_truncation(256)
    eps = config["layer_norm_eps"]
    heads = config["num_attention_heads"]
    out = []
    for sentence in sentences:
        enc = tok.encode(sentence)
        ids = np.array(enc.ids)
        types = np.array(enc.type_ids)
        n = len(ids)
        x = (
            w[p + "embeddings.word_embeddings.weight"][ids]
            + w[p + "embeddings.position_embeddings.weight"][np.arange(n)]
            + w[p + "embeddings.token_type_embeddings.weight"][types]
        ).astype(np.float64)
        x = layer_norm(x, w[p + "embeddings.LayerNorm.weight"], w[p + "embeddings.LayerNorm.bias"], eps)
        for i in range(config["num_hidden_layers"]):
            q = f"{p}encoder.layer.{i}."
            lin = lambda t, name: t @ w[q + name + ".weight"].T + w[q + name + ".bias"]
            d = x.shape[1] // heads
            split = lambda t: t.reshape(n, heads, d).transpose(1, 0, 2)
            Q = split(lin(x, "attention.self.query"))
            K = split(lin(x, "attention.self.key"))
            V = split(lin(x, "attention.self.value"))
            scores = Q @ K.transpose(0, 2, 1) / math.sqrt(d)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            probs = scores / scores.sum(-1, keepdims=True)
            ctx = (probs @ V).transpose(1, 0, 2).reshape(n, -1)
            x = layer_norm(
                x + lin(ctx, "attention.output.dense"),
                w[q + "attention.output.LayerNorm.weight"],
                w[q + "attention.output.LayerNorm.bias"],
                eps,
            )
            h = gelu(lin(x, "intermediate.dense"))
            x = layer_norm(
                x + lin(h, "output.dense"),
                w[q + "output.LayerNorm.weight"],
                w[q + "output.LayerNorm.bias"],
                eps,
            )
        mean = x.mean(0)
        out.append((mean / np.linalg.norm(mean)).tolist())
    return out


if __name__ == "__main__":
    json.dump(embed(sys.argv[1], json.load(sys.stdin)), sys.stdout)
