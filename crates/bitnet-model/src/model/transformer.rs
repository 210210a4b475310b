//! The decoder-only BitNet transformer, laid out as llama.cpp's `bitnet` graph computes it:
//! per block `attn_norm -> q,k,v -> NEOX RoPE -> causal GQA attention -> attn_sub_norm ->
//! attn_output -> residual`, then `ffn_norm -> act(gate) * up -> ffn_sub_norm -> ffn_down
//! -> residual`; a final `output_norm`; `token_embd` (tied) or `output` as the LM head.

use super::bitlinear::{BitLinear, param_with_id};
use crate::config::{Activation, ModelConfig, WeightKind};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use crate::weights::{NamedTensor, WeightMap, validate_weights};
use burn::module::{Param, ParamId};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::{relu, silu};
use burn::tensor::ops::AttentionModuleOptions;

/// Parameter ids are derived from the canonical tensor index so that a model rebuilt from
/// a [`WeightMap`] (resume, DiLoCo's `set_weights`) keeps matching its optimizer state.
const PARAM_ID_BASE: u64 = 0xB17_0000_0000;

/// Stable parameter ids and tensor ranks of `config`'s canonical tensors, in
/// [`ModelConfig::tensor_shapes`] order.
pub fn param_specs(config: &ModelConfig) -> Vec<(ParamId, usize)> {
    config
        .tensor_shapes()
        .into_iter()
        .enumerate()
        .map(|(i, (_, shape))| (ParamId::from(PARAM_ID_BASE + i as u64), shape.len()))
        .collect()
}

/// RMSNorm with a learned gain (no bias).
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Gain, `[d]`.
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl RmsNorm {
    /// Normalises the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let rms = x
            .clone()
            .square()
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        x / rms * self.weight.val().unsqueeze::<D>()
    }
}

/// One transformer block.
#[derive(Module, Debug)]
pub struct Block {
    /// Pre-attention norm.
    pub attn_norm: RmsNorm,
    /// Query projection.
    pub attn_q: BitLinear,
    /// Key projection.
    pub attn_k: BitLinear,
    /// Value projection.
    pub attn_v: BitLinear,
    /// SubLN before the output projection.
    pub attn_sub_norm: RmsNorm,
    /// Output projection.
    pub attn_output: BitLinear,
    /// Pre-FFN norm.
    pub ffn_norm: RmsNorm,
    /// FFN gate projection.
    pub ffn_gate: BitLinear,
    /// FFN up projection.
    pub ffn_up: BitLinear,
    /// SubLN before the down projection.
    pub ffn_sub_norm: RmsNorm,
    /// FFN down projection.
    pub ffn_down: BitLinear,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Squared ReLU instead of SiLU gating.
    pub relu_squared: bool,
}

impl Block {
    fn forward(&self, x: Tensor<3>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let hd = d / self.n_heads;
        // q, k and v read one quantized copy of the normed input (as gate and up below).
        let h = self.attn_q.input(self.attn_norm.forward(x.clone()));
        let heads = |y: Tensor<3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
        let q = rope(
            heads(self.attn_q.forward_input(h.clone()), self.n_heads),
            cos,
            sin,
        );
        let mut k = rope(
            heads(self.attn_k.forward_input(h.clone()), self.n_kv_heads),
            cos,
            sin,
        );
        let mut v = heads(self.attn_v.forward_input(h), self.n_kv_heads);
        if self.n_kv_heads != self.n_heads {
            // Query head j reads kv head j / rep, as llama.cpp's GQA does.
            let rep = self.n_heads / self.n_kv_heads;
            let expand = |y: Tensor<4>| {
                y.unsqueeze_dim::<5>(2)
                    .repeat_dim(2, rep)
                    .reshape([b, self.n_heads, t, hd])
            };
            k = expand(k);
            v = expand(v);
        }
        let att = if q.is_autodiff() && super::fused::fused_ops_enabled() {
            // Under autodiff burn decomposes attention into nine tracked ops around the
            // softmax; the fused softmax does it in one pass (model::fused).
            let scores = q.matmul(k.swap_dims(2, 3));
            super::fused::causal_softmax(scores, 1.0 / (hd as f32).sqrt()).matmul(v)
        } else {
            let options = AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: true,
            };
            burn::tensor::module::attention(q, k, v, None, None, options)
        };
        let att = att.swap_dims(1, 2).reshape([b, t, d]);
        let x = x + self.attn_output.forward(self.attn_sub_norm.forward(att));
        let h = self.ffn_gate.input(self.ffn_norm.forward(x.clone()));
        let gate = self.ffn_gate.forward_input(h.clone());
        let gate = if self.relu_squared {
            relu(gate).square()
        } else {
            silu(gate)
        };
        let inner = self
            .ffn_sub_norm
            .forward(gate * self.ffn_up.forward_input(h));
        x + self.ffn_down.forward(inner)
    }
}

/// NEOX-style rotary embedding: dimension `i` pairs with `i + head_dim / 2`.
fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let r1 = x1.clone() * cos.clone() - x2.clone() * sin.clone();
    let r2 = x2 * cos.clone() + x1 * sin.clone();
    Tensor::cat(vec![r1, r2], 3)
}

/// `cos`/`sin` tables `[1, 1, t, head_dim / 2]` for positions `start..start + t`.
pub fn rope_tables(
    head_dim: usize,
    theta: f32,
    start: usize,
    t: usize,
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let half = head_dim / 2;
    let mut cos = Vec::with_capacity(t * half);
    let mut sin = Vec::with_capacity(t * half);
    for p in start..start + t {
        for i in 0..half {
            let freq = f64::from(theta).powf(-2.0 * i as f64 / head_dim as f64);
            let angle = p as f64 * freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let make = |v| Tensor::<4>::from_data(TensorData::new(v, [1, 1, t, half]), device);
    (make(cos), make(sin))
}

/// The whole model. Build it with [`Model::init`] or [`Model::from_weight_map`].
#[derive(Module, Debug)]
pub struct Model {
    /// Token embedding `[vocab, d]`, also the LM head when tied.
    pub token_embd: Param<Tensor<2>>,
    /// Transformer blocks.
    pub blocks: Vec<Block>,
    /// Final norm.
    pub output_norm: RmsNorm,
    /// Untied LM head `[vocab, d]` (full precision).
    pub output: Option<BitLinear>,
    /// RoPE base.
    pub rope_theta: f32,
    /// Maximum sequence length.
    pub context_length: usize,
}

impl Model {
    /// A freshly initialised model: projections `N(0, 1/d_in)` (output projections further
    /// scaled by `1/sqrt(2 n_layers)`), embedding `N(0, 0.02^2)`, norms 1. Same seed, same
    /// weights on every backend.
    pub fn init(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        config.validate()?;
        let mut rng = SplitMix64::new(seed);
        let depth_scale = 1.0 / (2.0 * config.n_layers as f32).sqrt();
        let weights: WeightMap = config
            .tensor_shapes()
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let data = if shape.len() == 1 {
                    vec![1.0; n]
                } else if name == "token_embd.weight" || name == "output.weight" {
                    rng.normal_vec(n, 0.02)
                } else {
                    let mut std = (1.0 / shape[1] as f32).sqrt();
                    if name.contains("attn_output") || name.contains("ffn_down") {
                        std *= depth_scale;
                    }
                    rng.normal_vec(n, std)
                };
                (name, NamedTensor { shape, data })
            })
            .collect();
        Self::from_weight_map(config, &weights, device)
    }

    /// Builds the model from canonical named tensors (validated first).
    pub fn from_weight_map(
        config: &ModelConfig,
        weights: &WeightMap,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        validate_weights(config, weights)?;
        let index: std::collections::BTreeMap<String, u64> = config
            .tensor_shapes()
            .into_iter()
            .enumerate()
            .map(|(i, (name, _))| (name, PARAM_ID_BASE + i as u64))
            .collect();
        let id = |name: &str| ParamId::from(index[name]);
        let quantize = config.weights == WeightKind::Ternary;
        let matrix = |name: String, quantize: bool| {
            let t = &weights[&name];
            BitLinear::from_data(
                t.data.clone(),
                [t.shape[0], t.shape[1]],
                quantize,
                id(&name),
                device,
            )
        };
        let norm = |name: String| {
            let t = &weights[&name];
            let w = Tensor::<1>::from_data(TensorData::new(t.data.clone(), [t.shape[0]]), device);
            RmsNorm {
                weight: param_with_id(w, id(&name)),
                eps: f64::from(config.norm_eps),
            }
        };
        let blocks = (0..config.n_layers)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}.weight");
                Block {
                    attn_norm: norm(n("attn_norm")),
                    attn_q: matrix(n("attn_q"), quantize),
                    attn_k: matrix(n("attn_k"), quantize),
                    attn_v: matrix(n("attn_v"), quantize),
                    attn_sub_norm: norm(n("attn_sub_norm")),
                    attn_output: matrix(n("attn_output"), quantize),
                    ffn_norm: norm(n("ffn_norm")),
                    ffn_gate: matrix(n("ffn_gate"), quantize),
                    ffn_up: matrix(n("ffn_up"), quantize),
                    ffn_sub_norm: norm(n("ffn_sub_norm")),
                    ffn_down: matrix(n("ffn_down"), quantize),
                    n_heads: config.n_heads,
                    n_kv_heads: config.n_kv_heads,
                    relu_squared: config.activation == Activation::ReluSquared,
                }
            })
            .collect();
        let emb = &weights["token_embd.weight"];
        let token_embd = Tensor::<2>::from_data(
            TensorData::new(emb.data.clone(), [emb.shape[0], emb.shape[1]]),
            device,
        );
        Ok(Self {
            token_embd: param_with_id(token_embd, id("token_embd.weight")),
            blocks,
            output_norm: norm("output_norm.weight".into()),
            output: (!config.tied_embeddings).then(|| matrix("output.weight".into(), false)),
            rope_theta: config.rope_theta,
            context_length: config.context_length,
        })
    }

    /// All tensors under their canonical names (latent full-precision values).
    pub fn to_weight_map(&self) -> WeightMap {
        fn put<const D: usize>(map: &mut WeightMap, name: String, t: Tensor<D>) {
            let shape = t.dims().to_vec();
            let data = t
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32 after convert");
            map.insert(name, NamedTensor { shape, data });
        }
        let mut map = WeightMap::new();
        put(&mut map, "token_embd.weight".into(), self.token_embd.val());
        for (i, blk) in self.blocks.iter().enumerate() {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            put(&mut map, n("attn_norm"), blk.attn_norm.weight.val());
            put(&mut map, n("attn_q"), blk.attn_q.weight.val());
            put(&mut map, n("attn_k"), blk.attn_k.weight.val());
            put(&mut map, n("attn_v"), blk.attn_v.weight.val());
            put(&mut map, n("attn_sub_norm"), blk.attn_sub_norm.weight.val());
            put(&mut map, n("attn_output"), blk.attn_output.weight.val());
            put(&mut map, n("ffn_norm"), blk.ffn_norm.weight.val());
            put(&mut map, n("ffn_gate"), blk.ffn_gate.weight.val());
            put(&mut map, n("ffn_up"), blk.ffn_up.weight.val());
            put(&mut map, n("ffn_sub_norm"), blk.ffn_sub_norm.weight.val());
            put(&mut map, n("ffn_down"), blk.ffn_down.weight.val());
        }
        put(
            &mut map,
            "output_norm.weight".into(),
            self.output_norm.weight.val(),
        );
        if let Some(out) = &self.output {
            put(&mut map, "output.weight".into(), out.weight.val());
        }
        map
    }

    /// Logits `[b, t, vocab]` for token ids `[b, t]` (`t <= context_length`).
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.head(self.hidden_states(tokens))
    }

    /// Hidden states `[b, t, d]` for token ids `[b, t]`: the last block's output after
    /// `output_norm`, i.e. what the LM head reads (`forward = head(hidden_states)`). For
    /// representation probes such as CKA between models.
    pub fn hidden_states(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let emb = self.token_embd.val();
        let d = emb.dims()[1];
        let mut x = emb.select(0, tokens.reshape([b * t])).reshape([b, t, d]);
        let head_dim = d / self.blocks.first().map_or(1, |blk| blk.n_heads);
        let (cos, sin) = rope_tables(head_dim, self.rope_theta, 0, t, &device);
        for blk in &self.blocks {
            x = blk.forward(x, &cos, &sin);
        }
        self.output_norm.forward(x)
    }

    /// The LM head: logits `[b, t, vocab]` from [`hidden_states`](Self::hidden_states)
    /// `[b, t, d]` (the tied embedding or the untied `output` projection).
    pub fn head(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.output {
            Some(head) => head.forward(hidden),
            None => burn::tensor::module::linear(hidden, self.token_embd.val().transpose(), None),
        }
    }

    /// Mean next-token cross-entropy (nats): `inputs[b, t]` predicts `targets[b, t]`.
    pub fn loss(&self, inputs: Tensor<2, Int>, targets: Tensor<2, Int>) -> Tensor<1> {
        let logits = self.forward(inputs);
        let [b, t, v] = logits.dims();
        let (logits, targets) = (logits.reshape([b * t, v]), targets.reshape([b * t]));
        if super::fused::fused_ops_enabled() {
            super::fused::cross_entropy(logits, targets)
        } else {
            super::fused::cross_entropy_reference(logits, targets)
        }
    }
}

/// Token ids as a `[b, t]` int tensor.
pub fn token_tensor(ids: &[u32], b: usize, t: usize, device: &Device) -> Result<Tensor<2, Int>> {
    if ids.len() != b * t {
        return Err(Error::Data {
            what: "token batch".into(),
            message: format!("{} ids for a [{b}, {t}] batch", ids.len()),
        });
    }
    let data: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    Ok(Tensor::<2, Int>::from_data(
        TensorData::new(data, [b, t]),
        device,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A micro architecture for fast tests.
    pub(crate) fn micro(weights: WeightKind) -> ModelConfig {
        ModelConfig {
            vocab_size: 64,
            hidden_size: 32,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            ffn_hidden_size: 48,
            context_length: 16,
            rope_theta: 10_000.0,
            norm_eps: 1e-5,
            activation: Activation::Silu,
            tied_embeddings: true,
            weights,
        }
    }

    #[test]
    fn weight_map_round_trip_is_exact() {
        let device = Device::flex();
        for kind in [WeightKind::Ternary, WeightKind::FullPrecision] {
            let mut config = micro(kind);
            config.tied_embeddings = kind == WeightKind::Ternary;
            let model = Model::init(&config, 3, &device).unwrap();
            let map = model.to_weight_map();
            validate_weights(&config, &map).unwrap();
            let again = Model::from_weight_map(&config, &map, &device).unwrap();
            assert_eq!(again.to_weight_map(), map);
            let ids = token_tensor(&[1, 5, 9, 2, 3, 4], 2, 3, &device).unwrap();
            let a = model.forward(ids.clone()).into_data();
            let b = again.forward(ids).into_data();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn head_of_hidden_states_is_forward() {
        let device = Device::flex();
        for tied in [true, false] {
            let mut config = micro(WeightKind::Ternary);
            config.tied_embeddings = tied;
            let model = Model::init(&config, 7, &device).unwrap();
            let ids = token_tensor(&[1, 5, 9, 2, 3, 4, 8, 0], 2, 4, &device).unwrap();
            let hidden = model.hidden_states(ids.clone());
            assert_eq!(hidden.dims(), [2, 4, config.hidden_size]);
            let logits = model.head(hidden);
            assert_eq!(logits.dims(), [2, 4, config.vocab_size]);
            assert_eq!(logits.into_data(), model.forward(ids).into_data());
        }
    }

    #[test]
    fn forward_is_causal_and_shaped() {
        let device = Device::flex();
        let config = micro(WeightKind::Ternary);
        let model = Model::init(&config, 1, &device).unwrap();
        let a = token_tensor(&[1, 2, 3, 4, 5, 6], 1, 6, &device).unwrap();
        let b = token_tensor(&[1, 2, 3, 9, 9, 9], 1, 6, &device).unwrap();
        let la = model.forward(a).into_data().try_into_vec::<f32>().unwrap();
        let lb = model.forward(b).into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(la.len(), 6 * 64);
        // Positions 0..3 see the same prefix, so their logits agree.
        for i in 0..3 * 64 {
            assert!((la[i] - lb[i]).abs() < 1e-5, "{i}");
        }
        assert!(
            la[3 * 64..]
                .iter()
                .zip(&lb[3 * 64..])
                .any(|(x, y)| (x - y).abs() > 1e-4)
        );
    }

    #[test]
    fn initial_loss_is_near_uniform_and_gradients_flow() {
        let device = Device::flex().autodiff();
        let config = micro(WeightKind::Ternary);
        let model = Model::init(&config, 2, &device).unwrap();
        let x = token_tensor(&[1, 2, 3, 4, 5, 6, 7, 8], 2, 4, &device).unwrap();
        let y = token_tensor(&[2, 3, 4, 5, 6, 7, 8, 9], 2, 4, &device).unwrap();
        let loss = model.loss(x, y);
        let value = loss.clone().into_scalar::<f32>();
        assert!((value - (64f32).ln()).abs() < 0.3, "{value}");
        let grads = loss.backward();
        let g = model.blocks[0].attn_q.weight.grad(&grads).unwrap();
        assert!(g.abs().sum().into_scalar::<f32>() > 0.0);
    }

    #[test]
    fn bad_weights_are_rejected_by_name() {
        let device = Device::flex();
        let config = micro(WeightKind::Ternary);
        let mut map = Model::init(&config, 1, &device).unwrap().to_weight_map();
        map.get_mut("blk.0.ffn_up.weight").unwrap().shape = vec![1, 1];
        let err = Model::from_weight_map(&config, &map, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("blk.0.ffn_up.weight"), "{err}");
    }
}
