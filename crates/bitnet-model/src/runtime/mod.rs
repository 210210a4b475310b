//! Packed CPU inference: ternary-core packed projections with per-token int8 activations,
//! a KV cache, sampling and streaming generation; plus the plain f32 reference model the
//! packed one is tested and benchmarked against.
//!
//! Both run the same graph ([`Transformer`]), exactly the training graph: per block
//! `attn_norm -> q,k,v -> NEOX RoPE -> causal GQA attention -> attn_sub_norm -> attn_output
//! -> residual`, `ffn_norm -> act(gate) * up -> ffn_sub_norm -> ffn_down -> residual`, then
//! `output_norm` and the tied embedding (or `output.weight`) as the head.

pub mod generate;
pub mod load;
pub mod model;
pub mod ops;
pub mod packed;
pub mod reference;
pub mod sampling;

pub use generate::{GenerateOptions, Generation, TextStream};
pub use load::{GgufLoad, gguf_config};
pub use model::{KvCache, KvPrecision, Logits, Projection, Threads, Transformer};
pub use packed::{PackOptions, PackedModel, PackedProjection};
pub use reference::{DenseProjection, ReferenceModel};
pub use sampling::{Sampler, SamplingConfig};
pub use ternary_core::Format;

use crate::config::ModelConfig;
use crate::rng::SplitMix64;
use crate::weights::{NamedTensor, WeightMap};

/// Seeded random weights with the training initialisation's scales (projections
/// `N(0, 1/d_in)`, embedding and head `N(0, 0.02^2)`) and norm gains drawn around 1, so
/// that every tensor matters: for tests and benchmarks of untrained models.
pub fn random_weights(config: &ModelConfig, seed: u64) -> WeightMap {
    let mut rng = SplitMix64::new(seed);
    config
        .tensor_shapes()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data = if shape.len() == 1 {
                rng.normal_vec(n, 0.2)
                    .into_iter()
                    .map(|v| 1.0 + v)
                    .collect()
            } else if name == "token_embd.weight" || name == "output.weight" {
                rng.normal_vec(n, 0.02)
            } else {
                rng.normal_vec(n, (1.0 / shape[1] as f32).sqrt())
            };
            (name, NamedTensor { shape, data })
        })
        .collect()
}
