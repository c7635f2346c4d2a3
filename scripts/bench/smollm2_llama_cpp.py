"""The llama.cpp peer for the SmolLM2 decode benchmark (`cargo bench --bench models`):
llama-cpp-python over the same GGUF, 2 threads, greedy.

Usage: python smollm2_llama_cpp.py GGUF PROMPT NEW_TOKENS
Prints one JSON object: decode tokens/second (prefill time subtracted) and the tokens.
"""

import json
import sys
import time

from llama_cpp import Llama


def main():
    path, prompt, new_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
    llm = Llama(model_path=path, n_threads=2, n_ctx=1024, verbose=False)
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)

    def timed(n):
        llm.reset()
        started = time.perf_counter()
        out = []
        for token in llm.generate(tokens, temp=0.0, top_k=1, reset=True):
            out.append(token)
            if len(out) >= n:
                break
        return time.perf_counter() - started, out

    timed(4)  # warm-up
    prefill, _ = timed(1)
    total, out = timed(new_tokens)
    json.dump({"tokens_per_second": (len(out) - 1) / (total - prefill), "tokens": len(out)}, sys.stdout)


if __name__ == "__main__":
    main()
