#!/usr/bin/env python3
"""Score a text with an exported GGUF in llama.cpp (through llama-cpp-python), with the
exact semantics of `genkidama eval --json`, and check the tokenizer agrees.

    python llama_cpp_loss.py --gguf model.gguf --tokenizer tokenizer.json \
        --text val.txt --ctx 256 [--max-tokens N]

Prints one JSON line: {"loss", "bpb", "tokens", "tokenizer_match", "first_mismatch"}.
Tokens: the text without BOS (llama.cpp's tokenizer, compared id by id with the Hugging
Face tokenizer that wrote tokenizer.json), cut to N, scored in consecutive windows of
`ctx` tokens, each window predicting its own next tokens; loss = mean NLL in nats.
"""
import argparse
import json
import math
import sys

import numpy as np
from llama_cpp import Llama


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--gguf", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--ctx", type=int, required=True)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    with open(a.text, "rb") as f:
        text = f.read().decode("utf-8", errors="replace")

    llm = Llama(model_path=a.gguf, n_ctx=a.ctx, n_batch=a.ctx, n_ubatch=a.ctx,
                logits_all=True, n_threads=a.threads, verbose=False)
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    # The Hugging Face tokenizer is the reference our Rust side uses.
    from tokenizers import Tokenizer
    hf = Tokenizer.from_file(a.tokenizer).encode(text, add_special_tokens=False).ids
    match = list(hf) == list(ids)
    first = None
    if not match:
        first = next((i for i, (x, y) in enumerate(zip(hf, ids)) if x != y), min(len(hf), len(ids)))
    if a.max_tokens is not None:
        ids = ids[: a.max_tokens]

    # UTF-8 byte length of each token, for bits per byte.
    def token_bytes(t: int) -> int:
        return len(llm.detokenize([t], special=True))

    nll, count, nbytes = 0.0, 0, 0
    for start in range(0, len(ids), a.ctx):
        window = ids[start:start + a.ctx]
        if len(window) < 2:
            continue
        llm.reset()
        llm.eval(window)
        logits = np.asarray(llm.scores[: len(window) - 1], dtype=np.float64)
        m = logits.max(axis=1, keepdims=True)
        logz = (m[:, 0] + np.log(np.exp(logits - m).sum(axis=1)))
        targets = np.asarray(window[1:])
        nll += float((logz - logits[np.arange(len(targets)), targets]).sum())
        count += len(targets)
        nbytes += sum(token_bytes(int(t)) for t in targets)
    if count == 0:
        print("fewer than 2 tokens: nothing to predict", file=sys.stderr)
        return 1
    print(json.dumps({
        "loss": nll / count,
        "bpb": nll / math.log(2) / nbytes if nbytes else 0.0,
        "tokens": count,
        "tokenizer_match": match,
        "first_mismatch": first,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
