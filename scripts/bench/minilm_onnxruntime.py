"""The onnxruntime peer for the MiniLM benchmark (`cargo bench --bench models`).

No PyPI package ships all-MiniLM-L6-v2 as an fp32 ONNX graph, so this builds one from
the same safetensors with the `onnx` package's helpers (BERT encoder, mean pooling, L2
normalisation), then embeds the sentences read from stdin (a JSON list) in batches,
longest first (as sentence-transformers and the candle path batch),
tokenising with the `tokenizers` package as the candle path does.

Usage: python minilm_onnxruntime.py MODEL_DIR BATCH < sentences.json
Prints one JSON object: sentences_per_second and the embeddings.
"""

import json
import math
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
from minilm_numpy import read_safetensors  # noqa: E402


def build_graph(model_dir):
    config = json.load(open(f"{model_dir}/config.json"))
    w = read_safetensors(f"{model_dir}/model.safetensors")
    p = "" if "embeddings.word_embeddings.weight" in w else "bert."
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    d = hidden // heads
    eps = config["layer_norm_eps"]
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    counter = [0]

    def node(op, inputs, **attrs):
        counter[0] += 1
        out = f"{op.lower()}_{counter[0]}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def weight(name, transpose=False):
        array = w[p + name].astype(np.float32)
        return const(name, array.T.copy() if transpose else array)

    def linear(x, name):
        return node("Add", [node("MatMul", [x, weight(name + ".weight", True)]), weight(name + ".bias")])

    def layer_norm(x, name):
        return node("LayerNormalization", [x, weight(name + ".weight"), weight(name + ".bias")], axis=-1, epsilon=eps)

    length = node("Gather", [node("Shape", ["input_ids"]), const("one", np.array(1, dtype=np.int64))])
    positions = node("Range", [const("zero", np.array(0, dtype=np.int64)), length, const("step", np.array(1, dtype=np.int64))])
    x = node("Add", [
        node("Add", [
            node("Gather", [weight("embeddings.word_embeddings.weight"), "input_ids"]),
            node("Gather", [weight("embeddings.position_embeddings.weight"), positions]),
        ]),
        node("Gather", [weight("embeddings.token_type_embeddings.weight"), "token_type_ids"]),
    ])
    x = layer_norm(x, "embeddings.LayerNorm")
    mask = node("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", [const("onef", np.array(1.0, dtype=np.float32)), mask]), const("neg", np.array(-1e9, dtype=np.float32))])
    bias = node("Unsqueeze", [bias, const("axes12", np.array([1, 2], dtype=np.int64))])
    split_shape = const("split_shape", np.array([0, 0, heads, d], dtype=np.int64))
    merge_shape = const("merge_shape", np.array([0, 0, hidden], dtype=np.int64))
    scale = const("scale", np.array(1.0 / math.sqrt(d), dtype=np.float32))
    for i in range(config["num_hidden_layers"]):
        q = f"encoder.layer.{i}."
        split = lambda t, perm: node("Transpose", [node("Reshape", [t, split_shape])], perm=perm)
        Q = split(linear(x, q + "attention.self.query"), [0, 2, 1, 3])
        K = split(linear(x, q + "attention.self.key"), [0, 2, 3, 1])
        V = split(linear(x, q + "attention.self.value"), [0, 2, 1, 3])
        scores = node("Add", [node("Mul", [node("MatMul", [Q, K]), scale]), bias])
        ctx = node("MatMul", [node("Softmax", [scores], axis=-1), V])
        ctx = node("Reshape", [node("Transpose", [ctx], perm=[0, 2, 1, 3]), merge_shape])
        x = layer_norm(node("Add", [x, linear(ctx, q + "attention.output.dense")]), q + "attention.output.LayerNorm")
        h = linear(x, q + "intermediate.dense")
        erf = node("Erf", [node("Mul", [h, const(f"rsqrt2_{i}", np.array(1 / math.sqrt(2), dtype=np.float32))])])
        h = node("Mul", [node("Mul", [h, const(f"half_{i}", np.array(0.5, dtype=np.float32))]), node("Add", [erf, const(f"onef_{i}", np.array(1.0, dtype=np.float32))])])
        x = layer_norm(node("Add", [x, linear(h, q + "output.dense")]), q + "output.LayerNorm")
    m = node("Unsqueeze", [mask, const("axis2", np.array([2], dtype=np.int64))])
    axis1 = const("axis1", np.array([1], dtype=np.int64))
    mean = node("Div", [node("ReduceSum", [node("Mul", [x, m]), axis1], keepdims=0), node("ReduceSum", [m, axis1], keepdims=0)])
    norm = node("Sqrt", [node("ReduceSum", [node("Mul", [mean, mean]), axis1], keepdims=1)])
    nodes.append(helper.make_node("Div", [mean, norm], ["embeddings"]))
    ints = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "length"])
    graph = helper.make_graph(
        nodes, "minilm", [ints("input_ids"), ints("attention_mask"), ints("token_type_ids")],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", hidden])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def main():
    model_dir, batch = sys.argv[1], int(sys.argv[2])
    sentences = json.load(sys.stdin)
    path = os.path.join(tempfile.mkdtemp(), "minilm.onnx")
    onnx.save(build_graph(model_dir), path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.enable_padding()  # to the batch's longest, as the candle path pads
    tok.enable_truncation(256)

    def run(chunk):
        encs = tok.encode_batch(chunk)
        feed = {
            "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
        }
        return session.run(["embeddings"], feed)[0]

    run(sentences[:batch])  # warm-up
    started = time.perf_counter()
    # Longest first, as sentence-transformers (and the candle path) batch.
    order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
    out = np.zeros((len(sentences), 0), dtype=np.float32)
    for i in range(0, len(order), batch):
        chunk = order[i:i + batch]
        embedded = run([sentences[j] for j in chunk])
        if out.shape[1] == 0:
            out = np.zeros((len(sentences), embedded.shape[1]), dtype=np.float32)
        out[chunk] = embedded
    seconds = time.perf_counter() - started
    json.dump({
        "sentences_per_second": len(sentences) / seconds,
        "embeddings": out.tolist(),
    }, sys.stdout)


if __name__ == "__main__":
    main()
