//! GGUF import: a `bitnet` / `bitnet-b1.58` file back into a [`ModelConfig`], latent
//! weights and the tokenizer.

use super::tokenizer::GgufVocab;
use crate::config::{Activation, ModelConfig, WeightKind};
use crate::error::{Error, Result};
use crate::runtime::ops::QUANT_EPS;
use crate::weights::{NamedTensor, WeightMap, validate_weights};
use gguf_io::{GgmlType, GgufFile, Metadata};
use std::path::Path;
use ternary_core::{Format, PackedMatrix};

/// A model read from GGUF.
#[derive(Debug, Clone)]
pub struct ImportedModel {
    /// `general.architecture`.
    pub architecture: String,
    /// The architecture, rebuilt from the `<arch>.*` keys and the tensor list.
    pub config: ModelConfig,
    /// Latent weights whose per-tensor absmean ternarization gives back exactly the
    /// file's ternary values (see [`latent_from_ternary`]).
    pub weights: WeightMap,
    /// The embedded tokenizer, when the file has a gpt2-style one.
    pub vocab: Option<GgufVocab>,
}

impl ImportedModel {
    /// The embedded tokenizer as `tokenizer.json` text.
    pub fn tokenizer_json(&self) -> Option<std::result::Result<String, String>> {
        self.vocab.as_ref().map(GgufVocab::to_tokenizer_json)
    }
}

/// Latent weights for ternary codes with one scale `s`: `code * c` with `c` chosen so that
/// absmean ternarization (`scale = mean|W| + 1e-5`, codes `round(W / scale)`) returns the
/// same codes and exactly `s` again. (Storing `code * s` would not: its absmean is `s`
/// times the fraction of non-zero codes.)
pub fn latent_from_ternary(codes: &[i8], s: f32) -> Vec<f32> {
    let nonzero = codes.iter().filter(|&&c| c != 0).count();
    if nonzero == 0 {
        return vec![0.0; codes.len()];
    }
    let p = nonzero as f64 / codes.len() as f64;
    let c = ((f64::from(s) - f64::from(QUANT_EPS)) / p).max(0.0) as f32;
    codes.iter().map(|&q| f32::from(q) * c).collect()
}

fn uint(m: &Metadata, key: &str) -> std::result::Result<usize, String> {
    m.get_uint(key)
        .map(|v| v as usize)
        .map_err(|e| format!("{key}: {e}"))
}

/// Reads a GGUF file written by [`export_gguf`](super::export_gguf) (or any `bitnet` /
/// `bitnet-b1.58` file with ternary or float projections and a per-tensor scale).
pub fn import_gguf(path: &Path) -> Result<ImportedModel> {
    let fail = |message: String| Error::Import {
        path: path.display().to_string(),
        message,
    };
    let file = GgufFile::open(path).map_err(|e| fail(e.to_string()))?;
    let m = file.metadata();
    let arch = m
        .get_str("general.architecture")
        .map_err(|e| fail(e.to_string()))?
        .to_string();
    let activation = match arch.as_str() {
        "bitnet" => Activation::Silu,
        "bitnet-b1.58" => Activation::ReluSquared,
        other => {
            return Err(fail(format!(
                "architecture `{other}` is not bitnet or bitnet-b1.58"
            )));
        }
    };
    let k = |key: &str| format!("{arch}.{key}");
    let n_heads = uint(m, &k("attention.head_count")).map_err(fail)?;
    let embd = file
        .tensor_info("token_embd.weight")
        .ok_or_else(|| fail("tensor token_embd.weight is missing".into()))?;
    if embd.dims().len() != 2 {
        return Err(fail(format!(
            "token_embd.weight has dims {:?}",
            embd.dims()
        )));
    }
    let config = ModelConfig {
        vocab_size: embd.dims()[1] as usize,
        hidden_size: uint(m, &k("embedding_length")).map_err(fail)?,
        n_layers: uint(m, &k("block_count")).map_err(fail)?,
        n_heads,
        n_kv_heads: if m.contains_key(&k("attention.head_count_kv")) {
            uint(m, &k("attention.head_count_kv")).map_err(fail)?
        } else {
            n_heads
        },
        ffn_hidden_size: uint(m, &k("feed_forward_length")).map_err(fail)?,
        context_length: uint(m, &k("context_length")).map_err(fail)?,
        rope_theta: if m.contains_key(&k("rope.freq_base")) {
            m.get_float(&k("rope.freq_base"))
                .map_err(|e| fail(e.to_string()))? as f32
        } else {
            10_000.0
        },
        norm_eps: m
            .get_float(&k("attention.layer_norm_rms_epsilon"))
            .map_err(|e| fail(e.to_string()))? as f32,
        activation,
        tied_embeddings: file.tensor_info("output.weight").is_none(),
        weights: WeightKind::Ternary,
    };
    config.validate()?;
    let mut weights = WeightMap::new();
    for (name, shape) in config.tensor_shapes() {
        let view = file
            .tensor(&name)
            .map_err(|e| fail(format!("{name}: {e}")))?;
        let dims: Vec<usize> = view.dims().iter().rev().map(|&d| d as usize).collect();
        if dims != shape {
            return Err(fail(format!(
                "{name} has shape {dims:?}, the metadata implies {shape:?}"
            )));
        }
        let format = match view.ty() {
            GgmlType::TQ1_0 => Some(Format::Tq1_0),
            GgmlType::TQ2_0 => Some(Format::Tq2_0),
            GgmlType::I2_S => Some(Format::I2S),
            _ => None,
        };
        let data = match format {
            Some(format) if ModelConfig::is_ternary_tensor(&name) => {
                let (rows, cols) = (shape[0], shape[1]);
                let packed = PackedMatrix::from_bytes(format, rows, cols, view.data())
                    .map_err(|e| fail(format!("{name}: {e}")))?;
                let codes = packed.unpack_codes();
                let values = packed.dequantize();
                let s = tensor_scale(&codes, &values).map_err(|e| fail(format!("{name}: {e}")))?;
                latent_from_ternary(&codes, s)
            }
            _ => view.to_f32().map_err(|e| fail(format!("{name}: {e}")))?,
        };
        weights.insert(name, NamedTensor { shape, data });
    }
    validate_weights(&config, &weights)?;
    let vocab = if m.get_str("tokenizer.ggml.model").ok() == Some("gpt2") {
        let strings = |key: &str| {
            m.get_str_array(key)
                .map(<[String]>::to_vec)
                .map_err(|e| fail(e.to_string()))
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let token_types = m
            .get_i32_array("tokenizer.ggml.token_type")
            .map_err(|e| fail(e.to_string()))?
            .to_vec();
        if token_types.len() != tokens.len() {
            return Err(fail(format!(
                "{} token types for {} tokens",
                token_types.len(),
                tokens.len()
            )));
        }
        Some(GgufVocab {
            tokens,
            token_types,
            merges: strings("tokenizer.ggml.merges")?,
            eos_id: m
                .get_uint("tokenizer.ggml.eos_token_id")
                .map_err(|e| fail(e.to_string()))? as u32,
        })
    } else {
        None
    };
    Ok(ImportedModel {
        architecture: arch,
        config,
        weights,
        vocab,
    })
}

/// The one scale of a per-tensor ternary matrix: `|value|` of every non-zero code. Block
/// formats store it rounded to fp16 in each block; blocks that disagree mean the tensor was
/// not ternarized per tensor and cannot be represented exactly.
fn tensor_scale(codes: &[i8], values: &[f32]) -> std::result::Result<f32, String> {
    let mut scale = None;
    for (&c, &v) in codes.iter().zip(values) {
        if c == 0 {
            continue;
        }
        let s = v.abs();
        match scale {
            None => scale = Some(s),
            Some(first) if (s - first).abs() > 1e-6 * first => {
                return Err(format!(
                    "blocks have different scales ({first} and {s}); only per-tensor ternary \
                     weights import exactly"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(scale.unwrap_or(0.0))
}
