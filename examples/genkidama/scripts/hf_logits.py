"""Hugging Face transformers oracle for the HF folder loader (`bitnet_model::hf`).

Writes a small random `BitNetForCausalLM` (the 2B4T architecture: ReLU², SubLN, GQA 4:1,
tied embeddings, RoPE theta 500000, at hidden 256 / 2 layers) with `save_pretrained`, in
one of three storage modes, and the next-token logits transformers computes for a token
sequence:

- `fp`: no quantization_config: transformers runs plain nn.Linear (our FullPrecision twin);
- `online`: quantization_config bitnet / autobitlinear / online, BF16 latent weights:
  transformers ternarizes weights (absmean) and activations (per-token absmax int8) on the
  fly, as BitNet training does;
- `packed`: the 2B4T deployment format, uint8 2-bit codes + weight_scale (linear_class
  bitlinear), packed with transformers' own `pack_weights`.

Usage: hf_logits.py MODE OUT_DIR N_TOKENS. Writes OUT_DIR/model (the HF folder, with a
byte-level tokenizer.json from `tokenizers`), OUT_DIR/tokens.u32 and OUT_DIR/logits.f32
(little-endian, [N_TOKENS, vocab] row-major). Needs torch and transformers 5.x (the
project's .venv after `cargo xtask python-env --bench` style installs; not in CI).
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import BitNetConfig, BitNetForCausalLM


def byte_level_tokenizer(vocab_size, path):
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers

    text = [
        "The quick brown fox jumps over the lazy dog. Packages install files. " * 3,
        "パッケージはファイルをインストールします。日本語の文書です。",
        "패키지는 파일을 설치합니다. 한국어 문서입니다. (see the manual: 1.58 bits)",
    ] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tok.train_from_iterator(text, trainer)
    tok.save(str(path))
    return tok.get_vocab_size()


def quantized_reference(model, state, mode, proj):
    """The model as transformers' BitNet quantizer would load it, built by swapping the
    projection modules for transformers' own classes (`from_pretrained` with a
    quantization_config needs `accelerate`, which the venv does not carry): `online` runs
    AutoBitLinear's forward (WeightQuant + ActQuant), `packed` transformers' BitLinear on
    the saved uint8 codes and weight_scale."""
    from transformers.integrations import bitnet as hb

    model.load_state_dict(
        {k: v.float() for k, v in state.items() if v.is_floating_point() and "weight_scale" not in k
         and not (mode == "packed" and k.endswith(tuple(p + ".weight" for p in proj)))},
        strict=False,
    )
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name not in proj:
                continue
            full = f"{name}.{child_name}.weight"
            if mode == "online":
                new = hb.AutoBitLinear(child.in_features, child.out_features, bias=False,
                                       dtype=torch.float32, online_quant=True)
                new.weight.data.copy_(state[full].float())
            else:
                new = hb.BitLinear(child.in_features, child.out_features, bias=False,
                                   dtype=torch.float32)
                new.weight.data.copy_(state[full])
                new.weight_scale.data.copy_(state[full.replace(".weight", ".weight_scale")].float())
            setattr(module, child_name, new)
    return model.eval()


def main(mode, out, n_tokens):
    out = Path(out)
    folder = out / "model"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(20261201)
    vocab = byte_level_tokenizer(512, folder / "tokenizer.json")
    cfg = BitNetConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=n_tokens,
        rms_norm_eps=1e-5,
        hidden_act="relu2",
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        bos_token_id=0,
        eos_token_id=0,
    )
    model = BitNetForCausalLM(cfg).to(torch.float32).eval()
    with torch.no_grad():
        # Norm gains away from 1 so that a misplaced norm shows.
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    tokens = torch.randint(0, vocab, (1, n_tokens), generator=torch.Generator().manual_seed(7))
    proj = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    if mode == "fp":
        model.save_pretrained(folder, safe_serialization=True)
        ref = model
    else:
        state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
        if mode == "online":
            state = {k: v.to(torch.bfloat16) for k, v in state.items()}
            qc = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}
        else:
            from transformers.integrations.bitnet import pack_weights

            qc = {"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"}
            for k in list(state):
                if k.endswith(tuple(p + ".weight" for p in proj)):
                    w = state[k].float()
                    s = 1.0 / w.abs().mean().clamp(min=1e-5)
                    codes = (w * s).round().clamp(-1, 1)
                    state[k] = pack_weights(codes.to(torch.int8).clone())
                    state[k.replace(".weight", ".weight_scale")] = s.reshape(1).to(torch.bfloat16)
                elif state[k].is_floating_point():
                    state[k] = state[k].to(torch.bfloat16)
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        d = cfg.to_dict()
        d["architectures"] = ["BitNetForCausalLM"]
        d["quantization_config"] = qc
        (folder / "config.json").write_text(json.dumps(d, indent=2))
        ref = quantized_reference(model, state, mode, proj)
    with torch.no_grad():
        logits = ref(tokens).logits[0].float().numpy()
    tokens.numpy().astype("<u4").tofile(out / "tokens.u32")
    logits.astype("<f4").tofile(out / "logits.f32")
    print(json.dumps({"mode": mode, "vocab": vocab, "tokens": n_tokens, "dtype": str(ref.dtype)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
