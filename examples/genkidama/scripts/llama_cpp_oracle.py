#!/usr/bin/env python3
"""llama.cpp (through llama-cpp-python) as the oracle for GGUF files other producers write:
the tokenizer id for id per `tokenizer.ggml.pre`, and the logits of a `bitnet` model.

    llama_cpp_oracle.py write OUT_DIR TRAIN_TEXT VOCAB_SIZE
    llama_cpp_oracle.py tokenize TEXTS_JSON OUT_JSON GGUF...
    llama_cpp_oracle.py logits GGUF TEXT N_TOKENS OUT_DIR [f16|f32]

`write` trains three vocabularies on TRAIN_TEXT with Hugging Face `tokenizers` (as the
models' own authors would) and writes, with the `gguf` package (gguf-py), one small random
`bitnet` model per vocabulary: `gpt-2.gguf` (byte-level BPE, GPT-2 split, no
`add_bos_token` key), `llama-bpe.gguf` (byte-level BPE trained with Llama 3's split,
`add_bos_token` true; `llama-bpe-nokey.gguf` the same without the key) and `llama.gguf`
(SentencePiece-style: `▁` pieces with scores, `<0xXX>` byte fallback, an alphabet limited
so rare characters fall back to bytes, no `add_bos_token` key) plus `llama-nobos.gguf`
(the same with `add_bos_token` false and `add_space_prefix` false). Each model: 2 layers, hidden 256, 4 heads / 2 KV heads, FFN
512, theta 500000, random ternary projections in TQ2_0 (TQ1_0 for the FFN down
projection), F32 norms near 1, and a Q6_K `token_embd` (random valid blocks: gguf-py has
no Q6_K quantizer) that is also the head: mainline llama.cpp's `bitnet` graph has no
untied head and refuses a file with `output.weight` ("wrong number of tensors").

`tokenize` loads each GGUF with `vocab_only=True` and writes, per file and text, llama.cpp's
ids without and with the special tokens the file asks for (`add_bos`), never parsing
special-token text (`special=False`).

`logits` runs llama.cpp on the first N_TOKENS of TEXT (BOS as the file says; K / V cache
in f16, llama.cpp's default, or f32) and writes
OUT_DIR/tokens.u32 and OUT_DIR/logits.f32 (little-endian, [N, vocab] row-major); it prints
{"loss": mean NLL in nats of tokens 1..N, "tokens": N}.
"""
import json
import sys
from pathlib import Path

import numpy as np

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, CTX = 256, 2, 4, 2, 512, 512


def train_byte_level(lines, vocab_size, llama3, specials):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if llama3:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = [None] * tok.get_vocab_size()
    for t, i in model["vocab"].items():
        tokens[i] = t
    types = [3 if t in specials else 1 for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, types, merges


def train_sentencepiece(lines, vocab_size):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    specials = ["<unk>", "<s>", "</s>"] + byte_tokens
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    # A small alphabet: the rarer Hangul and kanji are not pieces, so they fall back to
    # bytes as in real SentencePiece vocabularies.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, limit_alphabet=400, show_progress=False
    )
    tok.train_from_iterator(lines, trainer)
    vocab = tok.get_vocab()
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    types, scores = [], []
    for i, t in enumerate(tokens):
        if t == "<unk>":
            types.append(2)
        elif t in ("<s>", "</s>"):
            types.append(3)
        elif t in byte_tokens:
            types.append(6)
        else:
            types.append(1)
        # SentencePiece BPE models score a piece by when it was learned: earlier = higher.
        scores.append(0.0 if types[-1] != 1 else -float(i))
    return tokens, types, scores


def q6_k_random(rows, cols, rng):
    """Random valid Q6_K blocks: 6-bit codes uniform, int8 sub-block scales in [-16, 16),
    d = 0.001, so values are of order 0.05-0.5 and logits of order 1-10."""
    from gguf import GGMLQuantizationType as T

    n_blocks = rows * cols // 256
    blocks = rng.integers(0, 256, size=(n_blocks, 210), dtype=np.uint8)
    blocks[:, 192:208] = (rng.integers(-16, 16, size=(n_blocks, 16))).astype(np.int8).view(np.uint8)
    blocks[:, 208:210] = np.full((n_blocks, 1), 0.001, dtype=np.float16).view(np.uint8)
    return blocks.reshape(rows, cols // 256 * 210), T.Q6_K


def write_model(path, tokenizer, seed):
    import gguf
    from gguf import GGMLQuantizationType as T
    from gguf.quants import quantize

    rng = np.random.default_rng(seed)
    vocab = len(tokenizer["tokens"])
    w = gguf.GGUFWriter(str(path), "bitnet")
    w.add_context_length(CTX)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    # What convert_hf_to_gguf.py's BitnetModel adds.
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(1.0)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_TQ2_0)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model(tokenizer["model"])
    w.add_tokenizer_pre(tokenizer["pre"])
    w.add_token_list(tokenizer["tokens"])
    w.add_token_types(tokenizer["types"])
    if "scores" in tokenizer:
        w.add_token_scores(tokenizer["scores"])
    if "merges" in tokenizer:
        w.add_token_merges(tokenizer["merges"])
    w.add_bos_token_id(tokenizer["bos"])
    w.add_eos_token_id(tokenizer["eos"])
    if "add_bos" in tokenizer:
        w.add_add_bos_token(tokenizer["add_bos"])
    if "add_space_prefix" in tokenizer:
        w.add_add_space_prefix(tokenizer["add_space_prefix"])

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    emb, ty = q6_k_random(vocab, HIDDEN, rng)
    w.add_tensor("token_embd.weight", emb, raw_dtype=ty)
    w.add_tensor("output_norm.weight", norm(HIDDEN))
    kv = HIDDEN // HEADS * KV_HEADS
    for layer in range(LAYERS):
        p = f"blk.{layer}."
        w.add_tensor(p + "attn_norm.weight", norm(HIDDEN))
        w.add_tensor(p + "attn_sub_norm.weight", norm(HIDDEN))
        w.add_tensor(p + "ffn_norm.weight", norm(HIDDEN))
        w.add_tensor(p + "ffn_sub_norm.weight", norm(FFN))
        for name, shape in [
            ("attn_q", (HIDDEN, HIDDEN)), ("attn_k", (kv, HIDDEN)), ("attn_v", (kv, HIDDEN)),
            ("attn_output", (HIDDEN, HIDDEN)), ("ffn_gate", (FFN, HIDDEN)),
            ("ffn_up", (FFN, HIDDEN)), ("ffn_down", (HIDDEN, FFN)),
        ]:
            # Absmean-ternarized weights as the converters bake them: {-s, 0, s}, one s
            # per tensor; gguf-py's quantizer stores d = s in every block.
            s = np.float32(rng.uniform(0.02, 0.2))
            codes = rng.choice([-1, 0, 1], size=shape, p=[0.3, 0.4, 0.3]).astype(np.float32)
            qt = T.TQ1_0 if name == "ffn_down" else T.TQ2_0
            w.add_tensor(p + name + ".weight", quantize(codes * s, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def cmd_write(out, train_text, vocab_size):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [l for l in Path(train_text).read_text(encoding="utf-8").splitlines() if l.strip()]
    tokens, types, merges = train_byte_level(lines, vocab_size, False, ["<|endoftext|>"])
    eot = tokens.index("<|endoftext|>")
    write_model(out / "gpt-2.gguf", dict(model="gpt2", pre="gpt-2", tokens=tokens, types=types,
                                         merges=merges, bos=eot, eos=eot), 1)
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    tokens, types, merges = train_byte_level(lines, vocab_size, True, specials)
    llama3 = dict(model="gpt2", pre="llama-bpe", tokens=tokens, types=types, merges=merges,
                  bos=tokens.index(specials[0]), eos=tokens.index(specials[1]))
    write_model(out / "llama-bpe.gguf", dict(llama3, add_bos=True), 2)
    write_model(out / "llama-bpe-nokey.gguf", llama3, 5)
    tokens, types, scores = train_sentencepiece(lines, vocab_size)
    spm = dict(model="llama", pre="default", tokens=tokens, types=types, scores=scores,
               bos=tokens.index("<s>"), eos=tokens.index("</s>"))
    write_model(out / "llama.gguf", spm, 3)
    write_model(out / "llama-nobos.gguf", dict(spm, add_bos=False, add_space_prefix=False), 4)
    return 0


def cmd_tokenize(texts_json, out_json, files):
    from llama_cpp import Llama

    texts = json.loads(Path(texts_json).read_text(encoding="utf-8"))
    result = {}
    for f in files:
        llm = Llama(model_path=f, vocab_only=True, verbose=False)
        result[Path(f).name] = [
            {
                "plain": llm.tokenize(t.encode("utf-8"), add_bos=False, special=False),
                "special": llm.tokenize(t.encode("utf-8"), add_bos=True, special=False),
            }
            for t in texts
        ]
        del llm
    Path(out_json).write_text(json.dumps(result), encoding="utf-8")
    return 0


def cmd_logits(gguf_path, text, n_tokens, out, kv):
    from llama_cpp import Llama

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kv_type = {"f32": 0, "f16": 1}[kv]  # GGML_TYPE_F32 / GGML_TYPE_F16
    llm = Llama(model_path=gguf_path, n_ctx=n_tokens, n_batch=n_tokens, n_ubatch=n_tokens,
                logits_all=True, n_threads=2, type_k=kv_type, type_v=kv_type, verbose=False)
    data = Path(text).read_text(encoding="utf-8")
    ids = llm.tokenize(data.encode("utf-8"), add_bos=True, special=False)[:n_tokens]
    if len(ids) < 2:
        print("fewer than 2 tokens: nothing to predict", file=sys.stderr)
        return 1
    llm.reset()
    llm.eval(ids)
    logits = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
    x = logits[:-1].astype(np.float64)
    m = x.max(axis=1)
    logz = m + np.log(np.exp(x - m[:, None]).sum(axis=1))
    targets = np.asarray(ids[1:])
    nll = logz - x[np.arange(len(targets)), targets]
    np.asarray(ids, dtype="<u4").tofile(out / "tokens.u32")
    logits.astype("<f4").tofile(out / "logits.f32")
    print(json.dumps({"loss": float(nll.mean()), "tokens": len(ids)}))
    return 0


def main():
    a = sys.argv[1:]
    if len(a) == 4 and a[0] == "write":
        return cmd_write(a[1], a[2], int(a[3]))
    if len(a) >= 4 and a[0] == "tokenize":
        return cmd_tokenize(a[1], a[2], a[3:])
    if len(a) in (5, 6) and a[0] == "logits":
        return cmd_logits(a[1], a[2], int(a[3]), a[4], a[5] if len(a) == 6 else "f16")
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
