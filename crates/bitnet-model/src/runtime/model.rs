//! The transformer graph over any projection type: the packed ternary model and the f32
//! reference run the very same code and differ only in [`Projection`].

use super::ops::{self, Rope};
use crate::config::{Activation, ModelConfig};
use crate::error::{Error, Result};
use crate::weights::{NamedTensor, WeightMap, validate_weights};
use rayon::prelude::*;
use std::sync::Arc;

/// A linear map without bias, `out = W x` per row, with `W` stored `[out, in]`.
pub trait Projection: Send + Sync {
    /// Activations prepared once and shared by projections that read the same input
    /// (q/k/v, gate/up): the int8 codes and per-token scales, or fake-quantized f32.
    type Input: Send + Sync;
    /// Input width.
    fn in_features(&self) -> usize;
    /// Output width.
    fn out_features(&self) -> usize;
    /// Prepares `rows` rows of `in_features()` activations.
    fn prepare(&self, x: &[f32], rows: usize) -> Result<Self::Input>;
    /// Writes `rows × out_features()` outputs.
    fn apply(&self, input: &Self::Input, rows: usize, out: &mut [f32]) -> Result<()>;
}

/// How many CPU threads a model uses (0 = rayon's default, one per core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Threads(pub usize);

struct Block<P> {
    attn_norm: Vec<f32>,
    q: P,
    k: P,
    v: P,
    attn_sub_norm: Vec<f32>,
    o: P,
    ffn_norm: Vec<f32>,
    gate: P,
    up: P,
    ffn_sub_norm: Vec<f32>,
    down: P,
}

/// A decoder-only BitNet transformer ready for CPU inference.
pub struct Transformer<P> {
    config: ModelConfig,
    token_embd: Vec<f32>,
    output: Option<Vec<f32>>,
    output_norm: Vec<f32>,
    blocks: Vec<Block<P>>,
    rope: Rope,
    pool: Arc<rayon::ThreadPool>,
}

impl<P> std::fmt::Debug for Transformer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer")
            .field("config", &self.config)
            .field("threads", &self.pool.current_num_threads())
            .finish_non_exhaustive()
    }
}

/// Keys and values of every layer for the positions seen so far.
#[derive(Debug, Clone)]
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most positions it can hold (the model's context length).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position (keeps the memory).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Which logits [`Transformer::forward`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's (generation).
    Last,
    /// Every position's, row-major `[tokens, vocab]` (scoring, tests).
    All,
}

fn take(weights: &WeightMap, name: &str) -> NamedTensor {
    // `validate_weights` ran first, so every canonical name is present.
    weights[name].clone()
}

impl<P: Projection> Transformer<P> {
    /// Builds the model from canonical weights, turning each projection into `P` with
    /// `make(name, tensor)`.
    pub fn build(
        config: &ModelConfig,
        weights: &WeightMap,
        threads: Threads,
        mut make: impl FnMut(&str, &NamedTensor) -> Result<P>,
    ) -> Result<Self> {
        config.validate()?;
        validate_weights(config, weights)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.0)
            .build()
            .map_err(|e| Error::Inference {
                message: format!("cannot start {} threads: {e}", threads.0),
            })?;
        let mut blocks = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let name = |n: &str| format!("blk.{i}.{n}.weight");
            let mut proj = |n: &str| {
                let key = name(n);
                make(&key, &weights[&key])
            };
            blocks.push(Block {
                q: proj("attn_q")?,
                k: proj("attn_k")?,
                v: proj("attn_v")?,
                o: proj("attn_output")?,
                gate: proj("ffn_gate")?,
                up: proj("ffn_up")?,
                down: proj("ffn_down")?,
                attn_norm: take(weights, &name("attn_norm")).data,
                attn_sub_norm: take(weights, &name("attn_sub_norm")).data,
                ffn_norm: take(weights, &name("ffn_norm")).data,
                ffn_sub_norm: take(weights, &name("ffn_sub_norm")).data,
            });
        }
        Ok(Self {
            config: config.clone(),
            token_embd: take(weights, "token_embd.weight").data,
            output: (!config.tied_embeddings).then(|| take(weights, "output.weight").data),
            output_norm: take(weights, "output_norm.weight").data,
            blocks,
            rope: Rope::new(config.head_dim(), config.context_length, config.rope_theta),
            pool: Arc::new(pool),
        })
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Every projection, layer by layer (q, k, v, o, gate, up, down).
    pub fn projections(&self) -> impl Iterator<Item = &P> {
        self.blocks
            .iter()
            .flat_map(|b| [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down])
    }

    /// Threads the model computes with.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// An empty KV cache sized for the context length.
    pub fn new_cache(&self) -> KvCache {
        let n = self.config.context_length * self.config.kv_dim();
        KvCache {
            keys: vec![vec![0.0; n]; self.config.n_layers],
            values: vec![vec![0.0; n]; self.config.n_layers],
            len: 0,
            capacity: self.config.context_length,
        }
    }

    /// Feeds `tokens` after the cached positions and returns logits (see [`Logits`]).
    /// Fails without touching the cache on an out-of-range token id or when the tokens
    /// do not fit in the context.
    pub fn forward(&self, cache: &mut KvCache, tokens: &[u32], which: Logits) -> Result<Vec<f32>> {
        let c = &self.config;
        if tokens.is_empty() {
            return Err(Error::Inference {
                message: "forward needs at least one token".into(),
            });
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(Error::Inference {
                message: format!(
                    "token id {bad} is outside the vocabulary of {}",
                    c.vocab_size
                ),
            });
        }
        if cache.len + tokens.len() > cache.capacity {
            return Err(Error::Inference {
                message: format!(
                    "{} cached + {} new positions exceed the context length {}",
                    cache.len,
                    tokens.len(),
                    cache.capacity
                ),
            });
        }
        if cache.keys.len() != c.n_layers || cache.keys[0].len() != cache.capacity * c.kv_dim() {
            return Err(Error::Inference {
                message: "the KV cache was made for another model".into(),
            });
        }
        self.pool
            .install(|| self.forward_inner(cache, tokens, which))
    }

    fn forward_inner(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let (n, d, f, kv) = (tokens.len(), c.hidden_size, c.ffn_hidden_size, c.kv_dim());
        let mut x: Vec<f32> = tokens
            .iter()
            .flat_map(|&t| &self.token_embd[t as usize * d..(t as usize + 1) * d])
            .copied()
            .collect();
        let mut h = vec![0.0; n * d];
        let (mut q, mut k, mut v) = (vec![0.0; n * d], vec![0.0; n * kv], vec![0.0; n * kv]);
        let mut attn = vec![0.0; n * d];
        let mut proj = vec![0.0; n * d];
        let (mut gate, mut up) = (vec![0.0; n * f], vec![0.0; n * f]);
        let mut inner = vec![0.0; n * f];
        let start = cache.len;
        for (layer, b) in self.blocks.iter().enumerate() {
            ops::rms_norm(&x, &b.attn_norm, c.norm_eps, &mut h);
            let input = b.q.prepare(&h, n)?;
            b.q.apply(&input, n, &mut q)?;
            b.k.apply(&input, n, &mut k)?;
            b.v.apply(&input, n, &mut v)?;
            for t in 0..n {
                self.rope.apply(&mut q[t * d..(t + 1) * d], start + t);
                self.rope.apply(&mut k[t * kv..(t + 1) * kv], start + t);
            }
            let keys = &mut cache.keys[layer][start * kv..(start + n) * kv];
            keys.copy_from_slice(&k);
            let values = &mut cache.values[layer][start * kv..(start + n) * kv];
            values.copy_from_slice(&v);
            self.attention(
                &q,
                &cache.keys[layer],
                &cache.values[layer],
                start,
                &mut attn,
            );
            ops::rms_norm(&attn, &b.attn_sub_norm, c.norm_eps, &mut h);
            let input = b.o.prepare(&h, n)?;
            b.o.apply(&input, n, &mut proj)?;
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);

            ops::rms_norm(&x, &b.ffn_norm, c.norm_eps, &mut h);
            let input = b.gate.prepare(&h, n)?;
            b.gate.apply(&input, n, &mut gate)?;
            b.up.apply(&input, n, &mut up)?;
            let act = match c.activation {
                Activation::Silu => ops::silu,
                Activation::ReluSquared => ops::relu_squared,
            };
            gate.iter_mut().zip(&up).for_each(|(g, u)| *g = act(*g) * u);
            ops::rms_norm(&gate, &b.ffn_sub_norm, c.norm_eps, &mut inner);
            let input = b.down.prepare(&inner, n)?;
            b.down.apply(&input, n, &mut proj)?;
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
        }
        cache.len += n;
        let rows = match which {
            Logits::Last => &x[(n - 1) * d..],
            Logits::All => &x[..],
        };
        let mut normed = vec![0.0; rows.len()];
        ops::rms_norm(rows, &self.output_norm, c.norm_eps, &mut normed);
        Ok(self.head(&normed))
    }

    /// Causal grouped-query attention of the new queries over every cached position.
    fn attention(&self, q: &[f32], keys: &[f32], values: &[f32], start: usize, out: &mut [f32]) {
        let c = &self.config;
        let (hd, kv, heads) = (c.head_dim(), c.kv_dim(), c.n_heads);
        let group = c.n_heads / c.n_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
            let (t, head) = (i / heads, i % heads);
            let kv_off = (head / group) * hd;
            let query = &q[t * c.hidden_size + head * hd..][..hd];
            let positions = start + t + 1;
            let mut scores: Vec<f32> = (0..positions)
                .map(|p| ops::dot(query, &keys[p * kv + kv_off..][..hd]) * scale)
                .collect();
            ops::softmax(&mut scores);
            o.fill(0.0);
            for (p, w) in scores.iter().enumerate() {
                let val = &values[p * kv + kv_off..][..hd];
                o.iter_mut().zip(val).for_each(|(o, v)| *o += w * v);
            }
        });
    }

    /// The full-precision LM head (the tied embedding or `output.weight`).
    fn head(&self, rows: &[f32]) -> Vec<f32> {
        let (d, vocab) = (self.config.hidden_size, self.config.vocab_size);
        let w = self.output.as_deref().unwrap_or(&self.token_embd);
        let n = rows.len() / d;
        let mut logits = vec![0.0; n * vocab];
        for (row, out) in rows.chunks_exact(d).zip(logits.chunks_exact_mut(vocab)) {
            out.par_chunks_mut(256).enumerate().for_each(|(chunk, o)| {
                for (j, v) in o.iter_mut().enumerate() {
                    let id = chunk * 256 + j;
                    *v = ops::dot(row, &w[id * d..(id + 1) * d]);
                }
            });
        }
        logits
    }

    /// Mean next-token negative log-likelihood (nats) of `tokens`, scored in consecutive
    /// windows of the context length as `genkidama eval` defines it. Returns
    /// `(mean_nll, predicted_tokens)`.
    pub fn score(&self, tokens: &[u32]) -> Result<(f64, usize)> {
        let ctx = self.config.context_length;
        let vocab = self.config.vocab_size;
        let mut cache = self.new_cache();
        let (mut total, mut count) = (0.0f64, 0usize);
        for window in tokens.chunks(ctx) {
            if window.len() < 2 {
                continue;
            }
            cache.clear();
            let logits = self.forward(&mut cache, &window[..window.len() - 1], Logits::All)?;
            for (row, &target) in logits.chunks_exact(vocab).zip(&window[1..]) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let lse = row
                    .iter()
                    .map(|&v| ((v - max) as f64).exp())
                    .sum::<f64>()
                    .ln()
                    + max as f64;
                total += lse - row[target as usize] as f64;
                count += 1;
            }
        }
        Ok((
            if count == 0 {
                0.0
            } else {
                total / count as f64
            },
            count,
        ))
    }
}
