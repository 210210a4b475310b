//! Model configuration: one type shared by training, the packed runtime and GGUF export.
//!
//! Presets:
//! - `tiny`: trains on 2 CPU cores in minutes; tied, SiLU, so llama.cpp's `bitnet` graph
//!   can run it; every ternary matrix has rows that are a multiple of 256 (TQ1_0/TQ2_0).
//! - `mid`: the training benchmark's mid-size shape (hidden 1024, 8 layers, FFN 2816, GQA
//!   16/4, vocabulary 32,000, context 512; 123M parameters), where a step is mostly matmul.
//! - `genkidama-363m` / `genkidama-618m`: MAGNET's published sizes. The layer count and
//!   vocabulary are not public; we fit a tied 256,000-token vocabulary with 6 layers
//!   (d = 1024, FFN 4096) and 8 layers (d = 1536, FFN 4096): 362.85M and 619.78M
//!   parameters, within 0.3 % of the reported 362.9M and 618M.
//! - `bitnet-2b4t`: Microsoft's BitNet b1.58 2B4T shape (ReLU², GQA 20/5, tied 128,256).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The gated FFN's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `silu(gate) * up` (SwiGLU), the only one llama.cpp's `bitnet` graph computes.
    Silu,
    /// `relu(gate)^2 * up`, as in BitNet b1.58 2B4T.
    ReluSquared,
}

/// Whether the projection matrices are ternary (BitLinear) or plain full precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightKind {
    /// BitNet b1.58: absmean ternary weights and per-token int8 activations.
    Ternary,
    /// The full-precision twin used as a baseline.
    FullPrecision,
}

/// Architecture of a decoder-only BitNet transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Tokenizer vocabulary size.
    pub vocab_size: usize,
    /// Model width `d`.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Inner width of the gated FFN.
    pub ffn_hidden_size: usize,
    /// Maximum sequence length (training context).
    pub context_length: usize,
    /// RoPE base frequency (NEOX-style rotation, as llama.cpp's `bitnet` graph).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f32,
    /// FFN activation.
    #[serde(default = "default_activation")]
    pub activation: Activation,
    /// Share the token embedding with the LM head.
    #[serde(default = "default_true")]
    pub tied_embeddings: bool,
    /// Ternary BitLinear projections or the full-precision twin.
    #[serde(default = "default_weights")]
    pub weights: WeightKind,
}

fn default_rope_theta() -> f32 {
    10_000.0
}
fn default_norm_eps() -> f32 {
    1e-5
}
fn default_activation() -> Activation {
    Activation::Silu
}
fn default_true() -> bool {
    true
}
fn default_weights() -> WeightKind {
    WeightKind::Ternary
}

/// Names of the built-in presets, in the order `ModelConfig::preset` accepts them.
pub const PRESETS: &[&str] = &[
    "tiny",
    "mid",
    "genkidama-363m",
    "genkidama-618m",
    "bitnet-2b4t",
];

/// The architectures [`ModelConfig::preset`] knows: one type for every binary's `--preset`
/// (with the `clap` feature it is a `clap::ValueEnum`, so `--help` lists the values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Preset {
    /// The small model that trains on a laptop CPU.
    Tiny,
    /// The training benchmark's mid-size shape (123M parameters).
    Mid,
    /// Genkidama's 363M-parameter model.
    #[cfg_attr(feature = "clap", value(name = "genkidama-363m"))]
    Genkidama363m,
    /// Genkidama's 618M-parameter model.
    #[cfg_attr(feature = "clap", value(name = "genkidama-618m"))]
    Genkidama618m,
    /// Microsoft's BitNet b1.58 2B4T architecture.
    #[cfg_attr(feature = "clap", value(name = "bitnet-2b4t"))]
    Bitnet2b4t,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 5] = [
        Preset::Tiny,
        Preset::Mid,
        Preset::Genkidama363m,
        Preset::Genkidama618m,
        Preset::Bitnet2b4t,
    ];

    /// The name [`ModelConfig::preset`] takes (and the command line shows).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Mid => "mid",
            Preset::Genkidama363m => "genkidama-363m",
            Preset::Genkidama618m => "genkidama-618m",
            Preset::Bitnet2b4t => "bitnet-2b4t",
        }
    }

    /// Its architecture.
    pub fn config(self) -> Result<ModelConfig> {
        ModelConfig::preset(self.name())
    }
}

impl ModelConfig {
    /// A named preset (see the module docs), ternary weights.
    pub fn preset(name: &str) -> Result<Self> {
        let base = |vocab_size, hidden_size, n_layers, n_heads, n_kv_heads, ffn, ctx| Self {
            vocab_size,
            hidden_size,
            n_layers,
            n_heads,
            n_kv_heads,
            ffn_hidden_size: ffn,
            context_length: ctx,
            rope_theta: default_rope_theta(),
            norm_eps: default_norm_eps(),
            activation: Activation::Silu,
            tied_embeddings: true,
            weights: WeightKind::Ternary,
        };
        let config = match name {
            "tiny" => base(4096, 256, 4, 4, 2, 768, 256),
            "mid" => base(32_000, 1024, 8, 16, 4, 2816, 512),
            "genkidama-363m" => base(256_000, 1024, 6, 8, 8, 4096, 2048),
            "genkidama-618m" => base(256_000, 1536, 8, 12, 12, 4096, 1024),
            "bitnet-2b4t" => Self {
                rope_theta: 500_000.0,
                activation: Activation::ReluSquared,
                ..base(128_256, 2560, 30, 20, 5, 6912, 4096)
            },
            other => {
                return Err(Error::Config {
                    field: "preset".into(),
                    message: format!("unknown preset `{other}`; known: {}", PRESETS.join(", ")),
                });
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// The same architecture with full-precision projections (the baseline twin).
    pub fn full_precision_twin(&self) -> Self {
        Self {
            weights: WeightKind::FullPrecision,
            ..self.clone()
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.n_heads
    }

    /// Width of the key/value projections (`head_dim * n_kv_heads`).
    pub fn kv_dim(&self) -> usize {
        self.head_dim() * self.n_kv_heads
    }

    /// Checks every field, naming the first one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let fail = |field: &str, message: String| {
            Err(Error::Config {
                field: field.into(),
                message,
            })
        };
        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("ffn_hidden_size", self.ffn_hidden_size),
            ("context_length", self.context_length),
        ] {
            if value == 0 {
                return fail(field, "must be at least 1".into());
            }
        }
        if !self.hidden_size.is_multiple_of(self.n_heads) {
            return fail(
                "n_heads",
                format!(
                    "hidden_size {} is not divisible by n_heads {}",
                    self.hidden_size, self.n_heads
                ),
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            return fail(
                "n_heads",
                format!("head_dim {} must be even for RoPE", self.head_dim()),
            );
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return fail(
                "n_kv_heads",
                format!(
                    "n_heads {} is not a multiple of n_kv_heads {}",
                    self.n_heads, self.n_kv_heads
                ),
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return fail(
                "rope_theta",
                format!("must be a positive number, got {}", self.rope_theta),
            );
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return fail(
                "norm_eps",
                format!("must be a positive number, got {}", self.norm_eps),
            );
        }
        Ok(())
    }

    /// Canonical tensor names and row-major shapes (`[out, in]` for matrices), named as
    /// llama.cpp's `bitnet` architecture names them. Training checkpoints, the packed
    /// runtime and GGUF export all use these names.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, f, kv) = (self.hidden_size, self.ffn_hidden_size, self.kv_dim());
        let mut out = vec![("token_embd.weight".to_string(), vec![self.vocab_size, d])];
        for i in 0..self.n_layers {
            let b = |n: &str| format!("blk.{i}.{n}.weight");
            out.push((b("attn_norm"), vec![d]));
            out.push((b("attn_q"), vec![d, d]));
            out.push((b("attn_k"), vec![kv, d]));
            out.push((b("attn_v"), vec![kv, d]));
            out.push((b("attn_sub_norm"), vec![d]));
            out.push((b("attn_output"), vec![d, d]));
            out.push((b("ffn_norm"), vec![d]));
            out.push((b("ffn_gate"), vec![f, d]));
            out.push((b("ffn_up"), vec![f, d]));
            out.push((b("ffn_sub_norm"), vec![f]));
            out.push((b("ffn_down"), vec![d, f]));
        }
        out.push(("output_norm.weight".to_string(), vec![d]));
        if !self.tied_embeddings {
            out.push(("output.weight".to_string(), vec![self.vocab_size, d]));
        }
        out
    }

    /// Whether a canonical tensor is a projection that BitNet ternarizes (the embedding,
    /// head and norms stay full precision).
    pub fn is_ternary_tensor(name: &str) -> bool {
        [
            "attn_q.",
            "attn_k.",
            "attn_v.",
            "attn_output.",
            "ffn_gate.",
            "ffn_up.",
            "ffn_down.",
        ]
        .iter()
        .any(|p| name.contains(p))
    }

    /// Total number of parameters.
    pub fn param_count(&self) -> usize {
        self.tensor_shapes()
            .iter()
            .map(|(_, shape)| shape.iter().product::<usize>())
            .sum()
    }

    /// Parses a TOML config, validating it.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|source| Error::Toml {
            what: "model config".into(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: usize, expected: f64, tolerance: f64) -> bool {
        (actual as f64 / expected - 1.0).abs() <= tolerance
    }

    #[test]
    fn genkidama_presets_match_published_sizes() {
        let small = ModelConfig::preset("genkidama-363m").unwrap();
        assert_eq!(small.param_count(), 362_851_328);
        assert!(within(small.param_count(), 362.9e6, 0.01));
        let big = ModelConfig::preset("genkidama-618m").unwrap();
        assert_eq!(big.param_count(), 619_779_584);
        assert!(within(big.param_count(), 618e6, 0.01));
        assert_eq!((small.hidden_size, small.context_length), (1024, 2048));
        assert_eq!((big.hidden_size, big.context_length), (1536, 1024));
    }

    #[test]
    fn bitnet_2b4t_has_its_published_size() {
        let c = ModelConfig::preset("bitnet-2b4t").unwrap();
        // The 2B4T report: ~2.4B parameters with the tied 128k embedding.
        assert!(within(c.param_count(), 2.41e9, 0.01), "{}", c.param_count());
        assert_eq!(c.kv_dim(), 640);
    }

    #[test]
    fn every_preset_names_a_valid_config() {
        for p in Preset::ALL {
            p.config().unwrap().validate().unwrap();
        }
    }

    #[test]
    fn mid_is_the_benchmarks_shape() {
        let c = Preset::Mid.config().unwrap();
        assert_eq!(
            (
                c.hidden_size,
                c.n_layers,
                c.ffn_hidden_size,
                c.vocab_size,
                c.context_length
            ),
            (1024, 8, 2816, 32_000, 512)
        );
        assert!(within(c.param_count(), 1.23e8, 0.01), "{}", c.param_count());
        for (name, shape) in c.tensor_shapes() {
            if ModelConfig::is_ternary_tensor(&name) {
                assert_eq!(shape[1] % 256, 0, "{name} rows must fill 256-blocks");
            }
        }
    }

    #[test]
    fn tiny_is_exportable_and_small() {
        let c = ModelConfig::preset("tiny").unwrap();
        assert!(c.tied_embeddings && c.activation == Activation::Silu);
        assert!(c.param_count() < 5_000_000, "{}", c.param_count());
        for (name, shape) in c.tensor_shapes() {
            if ModelConfig::is_ternary_tensor(&name) {
                assert_eq!(shape[1] % 256, 0, "{name} rows must fill 256-blocks");
            }
        }
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let mut c = ModelConfig::preset("tiny").unwrap();
        c.n_kv_heads = 3;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("n_kv_heads"), "{err}");
        let err = ModelConfig::from_toml("vocab_size = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("toml") || err.contains("vocab_size"), "{err}");
        let err = ModelConfig::preset("huge").unwrap_err().to_string();
        assert!(err.contains("preset"), "{err}");
    }

    #[test]
    fn toml_round_trip() {
        let c = ModelConfig::preset("tiny").unwrap();
        let text = toml::to_string(&c).unwrap();
        assert_eq!(ModelConfig::from_toml(&text).unwrap(), c);
    }
}
