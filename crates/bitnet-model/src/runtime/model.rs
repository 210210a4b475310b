//! The transformer graph over any projection type: the packed ternary model and the f32
//! reference run the very same code and differ only in [`Projection`].

use super::ops::{self, Rope};
use crate::config::{Activation, ModelConfig};
use crate::error::{Error, Result};
use crate::weights::{NamedTensor, WeightMap, validate_weights};
use half::f16;
use rayon::prelude::*;
use std::sync::Arc;

mod decode;

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
    /// Several projections of the same input (q/k/v, gate/up), each into its own output.
    /// The packed runtime runs them in one parallel region (one join instead of one per
    /// projection); the default applies them one after the other.
    fn apply_many(parts: &mut [(&Self, &mut [f32])], input: &Self::Input, rows: usize) -> Result<()>
    where
        Self: Sized,
    {
        for (p, out) in parts.iter_mut() {
            p.apply(input, rows, out)?;
        }
        Ok(())
    }
    /// `Some(g)` when [`Projection::apply_rows`] computes any range of whole `g`-row groups
    /// (the last range may end at the last row) for one token on the calling thread; the
    /// decode step then splits every projection's rows between its own threads instead of
    /// one fork-join per projection. `None` runs decode as prompts run.
    fn row_granule(&self) -> Option<usize> {
        None
    }
    /// Rows `r0 .. r0 + out.len()` for the one token of `input` (from `prepare(x, 1)`),
    /// equal bit for bit to those rows of [`Projection::apply`].
    fn apply_rows(&self, input: &Self::Input, r0: usize, out: &mut [f32]) -> Result<()> {
        let _ = (input, r0, out);
        Err(Error::Inference {
            message: "this projection does not compute row ranges".into(),
        })
    }
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
    kv_precision: KvPrecision,
    decode_region: bool,
}

impl<P> std::fmt::Debug for Transformer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer")
            .field("config", &self.config)
            .field("threads", &self.pool.current_num_threads())
            .finish_non_exhaustive()
    }
}

/// How a [`KvCache`] stores keys and values.
///
/// At a few hundred positions the cache is a large part of what a decode step reads (for
/// a 700M-shaped model at 288 positions, 85 MB in f32 against 175 MB of packed weights),
/// so the packed model keeps it in f16 as llama.cpp does by default; the f32 reference
/// model keeps f32. Values are rounded to f16 (round to nearest even) when written and
/// converted back exactly when read, so f16 changes only the stored values, and every
/// code path (F16C or portable) gives the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvPrecision {
    /// Full precision (the reference model's).
    #[default]
    F32,
    /// Half precision (the packed model's).
    F16,
}

/// Per layer, keys and values `[position][kv_dim]` in one precision.
#[derive(Debug, Clone)]
enum KvStore {
    F32 {
        keys: Vec<Vec<f32>>,
        values: Vec<Vec<f32>>,
    },
    F16 {
        keys: Vec<Vec<f16>>,
        values: Vec<Vec<f16>>,
    },
}

/// Keys and values of every layer for the positions seen so far. Memory grows with the
/// positions actually fed (a file's context length only bounds them), so a huge declared
/// context costs nothing until it is used.
#[derive(Debug, Clone)]
pub struct KvCache {
    store: KvStore,
    layers: usize,
    len: usize,
    capacity: usize,
    kv_dim: usize,
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

    /// How keys and values are stored.
    pub fn precision(&self) -> KvPrecision {
        match self.store {
            KvStore::F32 { .. } => KvPrecision::F32,
            KvStore::F16 { .. } => KvPrecision::F16,
        }
    }

    /// Forgets every position (keeps the memory).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Replaces layer `layer`'s positions from `start` on with `k` and `v`.
    fn write(&mut self, layer: usize, start: usize, k: &[f32], v: &[f32]) {
        let kv = self.kv_dim;
        match &mut self.store {
            KvStore::F32 { keys, values } => {
                keys[layer].truncate(start * kv);
                keys[layer].extend_from_slice(k);
                values[layer].truncate(start * kv);
                values[layer].extend_from_slice(v);
            }
            KvStore::F16 { keys, values } => {
                keys[layer].truncate(start * kv);
                keys[layer].extend(k.iter().map(|&x| f16::from_f32(x)));
                values[layer].truncate(start * kv);
                values[layer].extend(v.iter().map(|&x| f16::from_f32(x)));
            }
        }
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
        Self::assemble(
            config,
            threads,
            |name| Ok(take(weights, name).data),
            |name| make(name, &weights[name]),
        )
    }

    /// Builds the model from a source of named tensors: `dense(name)` gives the f32 data of
    /// an embedding, head or norm (its canonical shape already checked by the caller),
    /// `proj(name)` a projection.
    pub(crate) fn assemble(
        config: &ModelConfig,
        threads: Threads,
        mut dense: impl FnMut(&str) -> Result<Vec<f32>>,
        mut proj: impl FnMut(&str) -> Result<P>,
    ) -> Result<Self> {
        config.validate()?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.0)
            .build()
            .map_err(|source| Error::ThreadPool {
                threads: threads.0,
                source,
            })?;
        let mut blocks = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let name = |n: &str| format!("blk.{i}.{n}.weight");
            let mut p = |n: &str| proj(&name(n));
            let (q, k, v, o) = (p("attn_q")?, p("attn_k")?, p("attn_v")?, p("attn_output")?);
            let (gate, up, down) = (p("ffn_gate")?, p("ffn_up")?, p("ffn_down")?);
            blocks.push(Block {
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
                attn_norm: dense(&name("attn_norm"))?,
                attn_sub_norm: dense(&name("attn_sub_norm"))?,
                ffn_norm: dense(&name("ffn_norm"))?,
                ffn_sub_norm: dense(&name("ffn_sub_norm"))?,
            });
        }
        Ok(Self {
            config: config.clone(),
            token_embd: dense("token_embd.weight")?,
            output: if config.tied_embeddings {
                None
            } else {
                Some(dense("output.weight")?)
            },
            output_norm: dense("output_norm.weight")?,
            blocks,
            rope: Rope::new(config.head_dim(), config.context_length, config.rope_theta),
            pool: Arc::new(pool),
            kv_precision: KvPrecision::F32,
            decode_region: true,
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

    /// The precision of the caches [`Transformer::new_cache`] makes.
    pub fn kv_precision(&self) -> KvPrecision {
        self.kv_precision
    }

    /// Sets the precision of the caches [`Transformer::new_cache`] makes.
    pub fn with_kv_precision(mut self, precision: KvPrecision) -> Self {
        self.kv_precision = precision;
        self
    }

    /// Whether a single new token runs in one parallel region per decode step (the
    /// default, where every projection computes row ranges: module `model::decode`) or as
    /// prompts run, one fork-join per operation. Both give the same bits; `false` is for
    /// measuring the difference.
    pub fn with_decode_region(mut self, on: bool) -> Self {
        self.decode_region = on;
        self
    }

    /// An empty KV cache for up to the context length (it allocates as positions come), in
    /// the model's [`KvPrecision`].
    pub fn new_cache(&self) -> KvCache {
        self.new_cache_with(self.kv_precision)
    }

    /// An empty KV cache in the given precision (any cache of the model's shape runs).
    pub fn new_cache_with(&self, precision: KvPrecision) -> KvCache {
        let layers = self.config.n_layers;
        let store = match precision {
            KvPrecision::F32 => KvStore::F32 {
                keys: vec![Vec::new(); layers],
                values: vec![Vec::new(); layers],
            },
            KvPrecision::F16 => KvStore::F16 {
                keys: vec![Vec::new(); layers],
                values: vec![Vec::new(); layers],
            },
        };
        KvCache {
            store,
            layers,
            len: 0,
            capacity: self.config.context_length,
            kv_dim: self.config.kv_dim(),
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
        if cache.layers != c.n_layers
            || cache.kv_dim != c.kv_dim()
            || cache.capacity != c.context_length
        {
            return Err(Error::Inference {
                message: "the KV cache was made for another model".into(),
            });
        }
        self.pool.install(|| {
            if tokens.len() == 1 && self.runs_decode_region() {
                self.decode_step(cache, tokens[0])
            } else {
                self.forward_inner(cache, tokens, which)
            }
        })
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
            P::apply_many(
                &mut [(&b.q, &mut q), (&b.k, &mut k), (&b.v, &mut v)],
                &input,
                n,
            )?;
            for t in 0..n {
                self.rope.apply(&mut q[t * d..(t + 1) * d], start + t);
                self.rope.apply(&mut k[t * kv..(t + 1) * kv], start + t);
            }
            cache.write(layer, start, &k, &v);
            match &cache.store {
                KvStore::F32 { keys, values } => {
                    self.attention::<f32>(&q, &keys[layer], &values[layer], start, &mut attn);
                }
                KvStore::F16 { keys, values } => {
                    self.attention::<f16>(&q, &keys[layer], &values[layer], start, &mut attn);
                }
            }
            ops::rms_norm(&attn, &b.attn_sub_norm, c.norm_eps, &mut h);
            let input = b.o.prepare(&h, n)?;
            b.o.apply(&input, n, &mut proj)?;
            x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);

            ops::rms_norm(&x, &b.ffn_norm, c.norm_eps, &mut h);
            let input = b.gate.prepare(&h, n)?;
            P::apply_many(&mut [(&b.gate, &mut gate), (&b.up, &mut up)], &input, n)?;
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
    ///
    /// The cache is `[position][kv_dim]`: walking it head by head read 64 values every
    /// `kv_dim` floats (a new page per position, no hardware prefetch), which made decode
    /// after a 256-token prompt take about twice as long as after a one-token prompt. Each
    /// task therefore streams the cached rows in order for a group of heads of one token
    /// (all heads per task when there are enough tokens to go round, else the heads split
    /// between the threads). Per head, the scores, the softmax and the weighted sum of
    /// values are the same operations in the same order as one head at a time, so the
    /// results are unchanged bit for bit.
    fn attention<E: KvElem>(
        &self,
        q: &[f32],
        keys: &[E],
        values: &[E],
        start: usize,
        out: &mut [f32],
    ) {
        let c = &self.config;
        let (hd, heads, d) = (c.head_dim(), c.n_heads, c.hidden_size);
        let n = out.len() / d;
        let threads = rayon::current_num_threads();
        let splits = if n >= threads { 1 } else { threads.div_ceil(n) };
        let per_task = heads.div_ceil(splits.min(heads));
        let mut work: Vec<(usize, usize, &mut [f32])> = Vec::new();
        for (t, o) in out.chunks_mut(d).enumerate() {
            for (g, oh) in o.chunks_mut(per_task * hd).enumerate() {
                work.push((t, g * per_task, oh));
            }
        }
        let shape = AttnShape {
            hd,
            kv: c.kv_dim(),
            d,
            group: c.n_heads / c.n_kv_heads,
            scale: 1.0 / (hd as f32).sqrt(),
            start,
        };
        work.into_par_iter().for_each(|(t, h0, o)| {
            E::attend(&shape, q, keys, values, t, h0, o);
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

/// The shape of one attention task (see [`Transformer::attention`]).
struct AttnShape {
    hd: usize,
    kv: usize,
    d: usize,
    group: usize,
    scale: f32,
    start: usize,
}

/// One task of attention: token `t`'s heads `h0..h0 + o.len() / hd` over every cached
/// position up to its own, into `o`. Generic over how a cached row is read (`dot` of a
/// query head with a key head, `axpy` of a weighted value head into the output), so the
/// f32 and f16 caches and the F16C path run the same loop.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend_with<E>(
    s: &AttnShape,
    q: &[f32],
    keys: &[E],
    values: &[E],
    t: usize,
    h0: usize,
    o: &mut [f32],
    dot: impl Fn(&[f32], &[E]) -> f32,
    axpy: impl Fn(f32, &[E], &mut [f32]),
) {
    let (hd, kv, d) = (s.hd, s.kv, s.d);
    let nh = o.len() / hd;
    let positions = s.start + t + 1;
    let query = |h: usize| &q[t * d + (h0 + h) * hd..][..hd];
    let kv_off = |h: usize| ((h0 + h) / s.group) * hd;
    let mut scores = vec![0f32; nh * positions];
    for p in 0..positions {
        let row = &keys[p * kv..(p + 1) * kv];
        for h in 0..nh {
            scores[h * positions + p] = dot(query(h), &row[kv_off(h)..][..hd]) * s.scale;
        }
    }
    for sc in scores.chunks_exact_mut(positions) {
        ops::softmax(sc);
    }
    o.fill(0.0);
    for p in 0..positions {
        let row = &values[p * kv..(p + 1) * kv];
        for (h, oh) in o.chunks_exact_mut(hd).enumerate() {
            axpy(scores[h * positions + p], &row[kv_off(h)..][..hd], oh);
        }
    }
}

/// An element type of the KV cache.
trait KvElem: Copy + Send + Sync + Sized {
    /// The stored form of a key or value (as [`KvCache::write`] rounds it).
    fn from_f32(x: f32) -> Self;
    fn attend(
        s: &AttnShape,
        q: &[f32],
        keys: &[Self],
        values: &[Self],
        t: usize,
        h0: usize,
        o: &mut [f32],
    );
}

impl KvElem for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }

    fn attend(
        s: &AttnShape,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        t: usize,
        h0: usize,
        o: &mut [f32],
    ) {
        attend_with(s, q, keys, values, t, h0, o, ops::dot, |w, v, out| {
            out.iter_mut().zip(v).for_each(|(o, v)| *o += w * v);
        });
    }
}

impl KvElem for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }

    fn attend(
        s: &AttnShape,
        q: &[f32],
        keys: &[f16],
        values: &[f16],
        t: usize,
        h0: usize,
        o: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if ops::f16c_available() {
            // SAFETY: AVX2 and F16C were detected at run time.
            unsafe { attend_f16c(s, q, keys, values, t, h0, o) };
            return;
        }
        attend_with(s, q, keys, values, t, h0, o, ops::dot_f16, ops::axpy_f16);
    }
}

/// [`attend_with`] compiled for AVX2 + F16C, so the conversions inline into the loop.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn attend_f16c(
    s: &AttnShape,
    q: &[f32],
    keys: &[f16],
    values: &[f16],
    t: usize,
    h0: usize,
    o: &mut [f32],
) {
    attend_with(
        s,
        q,
        keys,
        values,
        t,
        h0,
        o,
        // SAFETY: this function runs only where AVX2 and F16C were detected.
        |a, b| unsafe { ops::dot_f16_f16c(a, b) },
        |w, v, out| unsafe { ops::axpy_f16_f16c(w, v, out) },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WeightKind;
    use crate::runtime::{PackOptions, PackedModel, random_weights};

    #[test]
    fn logits_are_the_same_bits_at_every_thread_count() {
        // Attention splits the heads between threads when there are fewer tokens than
        // threads (decode) and runs whole tokens otherwise (prefill); kernels split rows.
        // GQA 4/2, so a split inside a key/value group is exercised at 3 threads.
        let config = ModelConfig {
            vocab_size: 300,
            hidden_size: 256,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            ffn_hidden_size: 512,
            context_length: 32,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
            activation: Activation::Silu,
            tied_embeddings: true,
            weights: WeightKind::Ternary,
        };
        let weights = random_weights(&config, 3);
        let run = |threads: usize| {
            let options = PackOptions {
                threads: Threads(threads),
                ..PackOptions::default()
            };
            let model = PackedModel::from_weights(&config, &weights, options).unwrap();
            let mut cache = model.new_cache();
            let mut out = model
                .forward(&mut cache, &[5, 17, 250, 3, 99], Logits::All)
                .unwrap();
            for t in [7, 42, 1] {
                out.extend(model.forward(&mut cache, &[t], Logits::Last).unwrap());
            }
            out.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
        };
        let one = run(1);
        for threads in [2, 3, 4] {
            assert_eq!(run(threads), one, "{threads} threads");
        }
    }
}
