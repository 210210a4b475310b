"""PyTorch eager twin of bitnet-model's training step, for `cargo xtask bench train`.

The same graph as `crates/bitnet-model/src/model/transformer.rs`, written plainly as a
PyTorch user would: absmean ternary weight STE and per-token absmax int8 activation STE in
every BitLinear (or plain linear layers for the full-precision twin), SubLN (attn_sub_norm,
ffn_sub_norm), NEOX RoPE, GQA through `scaled_dot_product_attention`, SiLU- or ReLU²-gated
FFN, tied or untied head; AdamW (betas, epsilon and decoupled decay as our trainer), global
gradient-norm clipping.

Usage (one case per process, so the thread count and peak RSS are this case's own):

    python train_torch.py CASE.json

CASE.json: {"model": <bitnet-model ModelConfig as JSON>, "batch_size", "seq_len", "steps",
"threads", "lr", "weight_decay", "beta1", "beta2", "grad_clip", "seed", "vocab_tokens": N,
"init": optional path of our initial weights (safetensors, our tensor names),
"check_tokens": optional path of little-endian u32 tokens [batch, seq_len + 1]}.

Prints one JSON line: parameter count, the loss of the initial weights on the check batch
(when given, so the benchmark can assert that both sides train the same architecture),
the median step time and tokens/s, the torch version and CPU capability.
"""

import json
import math
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

QUANT_EPS = 1e-5


def ternary_ste(w):
    scale = w.abs().mean().clamp_min(QUANT_EPS)
    wq = (w / scale).round().clamp(-1.0, 1.0) * scale
    return w + (wq - w).detach()


def act_quant_ste(x):
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(QUANT_EPS) / 127.0
    xq = (x / scale).round().clamp(-128.0, 127.0) * scale
    return x + (xq - x).detach()


class BitLinear(torch.nn.Module):
    def __init__(self, d_in, d_out, quantize):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.empty(d_out, d_in))
        self.quantize = quantize

    def forward(self, x):
        if self.quantize:
            return F.linear(act_quant_ste(x), ternary_ste(self.weight))
        return F.linear(x, self.weight)


class RmsNorm(torch.nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x / torch.sqrt(x.square().mean(dim=-1, keepdim=True) + self.eps) * self.weight


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(torch.nn.Module):
    def __init__(self, cfg, quantize):
        super().__init__()
        d, kv = cfg["hidden_size"], cfg["hidden_size"] // cfg["n_heads"] * cfg["n_kv_heads"]
        f, eps = cfg["ffn_hidden_size"], cfg["norm_eps"]
        self.n_heads, self.n_kv = cfg["n_heads"], cfg["n_kv_heads"]
        self.relu_squared = cfg["activation"] == "relu_squared"
        self.attn_norm = RmsNorm(d, eps)
        self.attn_q = BitLinear(d, d, quantize)
        self.attn_k = BitLinear(d, kv, quantize)
        self.attn_v = BitLinear(d, kv, quantize)
        self.attn_sub_norm = RmsNorm(d, eps)
        self.attn_output = BitLinear(d, d, quantize)
        self.ffn_norm = RmsNorm(d, eps)
        self.ffn_gate = BitLinear(d, f, quantize)
        self.ffn_up = BitLinear(d, f, quantize)
        self.ffn_sub_norm = RmsNorm(f, eps)
        self.ffn_down = BitLinear(f, d, quantize)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        hd = d // self.n_heads
        h = self.attn_norm(x)
        q = rope(self.attn_q(h).view(b, t, self.n_heads, hd).transpose(1, 2), cos, sin)
        k = rope(self.attn_k(h).view(b, t, self.n_kv, hd).transpose(1, 2), cos, sin)
        v = self.attn_v(h).view(b, t, self.n_kv, hd).transpose(1, 2)
        if self.n_kv != self.n_heads:
            # Query head j reads kv head j // rep, as our model and llama.cpp do.
            rep = self.n_heads // self.n_kv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        att = att.transpose(1, 2).reshape(b, t, d)
        x = x + self.attn_output(self.attn_sub_norm(att))
        h = self.ffn_norm(x)
        gate = self.ffn_gate(h)
        gate = F.relu(gate).square() if self.relu_squared else F.silu(gate)
        return x + self.ffn_down(self.ffn_sub_norm(gate * self.ffn_up(h)))


class Model(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        quantize = cfg["weights"] == "ternary"
        d = cfg["hidden_size"]
        self.token_embd = torch.nn.Parameter(torch.empty(cfg["vocab_size"], d).normal_(0, 0.02))
        self.blocks = torch.nn.ModuleList(Block(cfg, quantize) for _ in range(cfg["n_layers"]))
        self.output_norm = RmsNorm(d, cfg["norm_eps"])
        self.output = None
        if not cfg["tied_embeddings"]:
            # Our LM head is a plain linear layer in both weight kinds.
            self.output = BitLinear(d, cfg["vocab_size"], False)
        self.head_dim = d // cfg["n_heads"]
        self.theta = cfg["rope_theta"]
        depth = 1.0 / math.sqrt(2.0 * cfg["n_layers"])
        for name, p in self.named_parameters():
            if p.dim() == 2 and name != "token_embd":
                std = 1.0 / math.sqrt(p.shape[1])
                if "attn_output" in name or "ffn_down" in name:
                    std *= depth
                with torch.no_grad():
                    p.normal_(0, 0.02 if name == "output.weight" else std)

    def rope_tables(self, t):
        half = self.head_dim // 2
        i = torch.arange(half, dtype=torch.float64)
        freq = self.theta ** (-2.0 * i / self.head_dim)
        angle = torch.arange(t, dtype=torch.float64)[:, None] * freq[None, :]
        return angle.cos().float()[None, None], angle.sin().float()[None, None]

    def loss(self, x, y):
        b, t = x.shape
        h = self.token_embd[x]
        cos, sin = self.rope_tables(t)
        for blk in self.blocks:
            h = blk(h, cos, sin)
        h = self.output_norm(h)
        logits = self.output(h) if self.output is not None else h @ self.token_embd.t()
        return F.cross_entropy(logits.view(b * t, -1), y.reshape(b * t))


def our_name(torch_name):
    """Our GGUF-style tensor name for a PyTorch parameter name."""
    if torch_name == "token_embd":
        return "token_embd.weight"
    if torch_name.startswith("blocks."):
        _, i, rest = torch_name.split(".", 2)
        return f"blk.{i}.{rest}"
    return torch_name


def load_init(model, path):
    from safetensors.numpy import load_file

    ours = load_file(path)
    seen = set()
    with torch.no_grad():
        for name, p in model.named_parameters():
            key = our_name(name)
            if key not in ours:
                raise SystemExit(f"{path}: no tensor `{key}` for parameter `{name}`")
            value = torch.from_numpy(ours[key].astype(np.float32)).reshape(p.shape)
            p.copy_(value)
            seen.add(key)
    extra = sorted(set(ours) - seen)
    if extra:
        raise SystemExit(f"{path}: tensors without a parameter here: {extra[:5]}")


def main():
    case = json.load(open(sys.argv[1]))
    cfg = case["model"]
    torch.set_num_threads(int(case["threads"]))
    torch.set_num_interop_threads(1)
    torch.manual_seed(int(case["seed"]))
    model = Model(cfg)
    if case.get("init"):
        load_init(model, case["init"])
    params = sum(p.numel() for p in model.parameters())

    initial_loss = None
    if case.get("check_tokens"):
        b, t = case["batch_size"], case["seq_len"]
        ids = np.fromfile(case["check_tokens"], dtype="<u4").astype(np.int64)
        ids = torch.from_numpy(ids).view(b, t + 1)
        with torch.no_grad():
            initial_loss = float(model.loss(ids[:, :-1], ids[:, 1:]))

    opt = torch.optim.AdamW(
        model.parameters(),
        lr=case["lr"],
        betas=(case["beta1"], case["beta2"]),
        eps=1e-8,
        weight_decay=case["weight_decay"],
    )
    b, t, vocab = case["batch_size"], case["seq_len"], cfg["vocab_size"]
    gen = torch.Generator().manual_seed(int(case["seed"]))
    stream = torch.randint(0, vocab, (int(case["vocab_tokens"]),), generator=gen)

    def step():
        offs = torch.randint(0, stream.numel() - t - 1, (b,), generator=gen)
        idx = offs[:, None] + torch.arange(t + 1)[None, :]
        batch = stream[idx]
        opt.zero_grad(set_to_none=True)
        loss = model.loss(batch[:, :-1], batch[:, 1:])
        loss.backward()
        if case["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), case["grad_clip"])
        opt.step()
        return float(loss.detach())

    step()  # warm-up (allocator, kernels)
    times = []
    for _ in range(int(case["steps"])):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    print(
        json.dumps(
            {
                "params": params,
                "initial_loss": initial_loss,
                "median_step_s": median,
                "step_s": times,
                "tokens_per_s": b * t / median,
                "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "torch": torch.__version__,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
