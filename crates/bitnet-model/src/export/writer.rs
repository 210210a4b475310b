//! GGUF export for llama.cpp's `bitnet` architecture (TQ2_0 / TQ1_0) and bitnet.cpp
//! (I2_S).

use super::tokenizer::GgufVocab;
use crate::config::{Activation, ModelConfig, WeightKind};
use crate::data::tokenizer::TextTokenizer;
use crate::error::{Error, Result};
use crate::runtime::ops::QUANT_EPS;
use crate::weights::{WeightMap, validate_weights};
use gguf_io::{GgmlType, GgufBuilder};
use std::path::Path;
use ternary_core::{Format, Granularity, PackedMatrix, quantize_absmean};

/// Which runtime the file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Mainline llama.cpp, architecture `bitnet`: tied SiLU models only, projections in
    /// TQ2_0 (default) or TQ1_0 (rows must be multiples of 256).
    LlamaCpp(TernaryType),
    /// bitnet.cpp, I2_S projections (one f32 scale per tensor, rows multiples of 128):
    /// architecture `bitnet-b1.58` (squared-ReLU FFN, tied or untied head) for ReLU²
    /// models, the fork's `bitnet` graph (SiLU, tied) for SiLU models.
    BitnetCpp,
}

/// Ternary GGUF types llama.cpp multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TernaryType {
    /// 2.0625 bits per weight, the faster one.
    Tq2_0,
    /// 1.6875 bits per weight.
    Tq1_0,
}

/// Element type of the token embedding (and untied head).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingType {
    /// What llama.cpp's converter writes for TQ files.
    F16,
    /// Lossless.
    F32,
}

/// Export settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// Runtime and weight format.
    pub target: Target,
    /// Embedding element type.
    pub embedding: EmbeddingType,
    /// `general.name`.
    pub name: String,
}

impl ExportOptions {
    /// llama.cpp, TQ2_0, F16 embedding.
    pub fn llama_cpp() -> Self {
        Self {
            target: Target::LlamaCpp(TernaryType::Tq2_0),
            embedding: EmbeddingType::F16,
            name: "genkidama".into(),
        }
    }

    /// bitnet.cpp, I2_S, F16 embedding.
    pub fn bitnet_cpp() -> Self {
        Self {
            target: Target::BitnetCpp,
            ..Self::llama_cpp()
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    /// `general.architecture`.
    pub architecture: String,
    /// Projection type name (`tq2_0`, `tq1_0`, `i2_s`).
    pub weight_type: String,
    /// Tensors written.
    pub tensors: usize,
    /// File size in bytes.
    pub bytes: u64,
}

/// llama_ftype written as `general.file_type` (36/37 from gguf-py's `LlamaFileType`; 40 is
/// what bitnet.cpp's converter writes for I2_S).
fn file_type(format: Format) -> u32 {
    match format {
        Format::Tq1_0 => 36,
        Format::Tq2_0 => 37,
        Format::I2S => 40,
        Format::Q8_0 => 7,
    }
}

/// The GGUF architecture string and projection format for `target`, or why the target
/// cannot compute this model.
pub fn plan(
    config: &ModelConfig,
    target: Target,
) -> std::result::Result<(&'static str, Format), String> {
    if config.weights != WeightKind::Ternary {
        return Err("the model has full-precision projections; only ternary models export".into());
    }
    let (arch, format) = match target {
        Target::LlamaCpp(t) => {
            if config.activation != Activation::Silu {
                return Err(
                    "llama.cpp's `bitnet` graph always computes a SiLU-gated FFN; this \
                            model uses squared ReLU (export it for bitnet.cpp instead)"
                        .into(),
                );
            }
            if !config.tied_embeddings {
                return Err(
                    "llama.cpp's `bitnet` graph uses token_embd as the output layer; this \
                            model has an untied head"
                        .into(),
                );
            }
            let format = match t {
                TernaryType::Tq2_0 => Format::Tq2_0,
                TernaryType::Tq1_0 => Format::Tq1_0,
            };
            ("bitnet", format)
        }
        Target::BitnetCpp => match config.activation {
            Activation::ReluSquared => ("bitnet-b1.58", Format::I2S),
            Activation::Silu => {
                if !config.tied_embeddings {
                    return Err("bitnet.cpp's SiLU `bitnet` graph has no untied head".into());
                }
                ("bitnet", Format::I2S)
            }
        },
    };
    let block = match format {
        Format::I2S => 128,
        _ => 256,
    };
    for (name, shape) in config.tensor_shapes() {
        if ModelConfig::is_ternary_tensor(&name) && shape[1] % block != 0 {
            return Err(format!(
                "{name} has rows of {} values; {} needs multiples of {block}",
                shape[1],
                format.name()
            ));
        }
    }
    Ok((arch, format))
}

/// Writes `weights` (latent full-precision values, absmean-ternarized per tensor here, as
/// the training forward pass does) and the tokenizer to a GGUF file at `path`.
pub fn export_gguf(
    path: &Path,
    config: &ModelConfig,
    weights: &WeightMap,
    tokenizer: &TextTokenizer,
    options: &ExportOptions,
) -> Result<ExportSummary> {
    let vocab = GgufVocab::from_tokenizer(tokenizer).map_err(|source| Error::Vocabulary {
        path: path.display().to_string(),
        source,
    })?;
    export_gguf_with_vocab(path, config, weights, vocab, options)
}

/// [`export_gguf`] with the vocabulary given as GGUF stores it (BOS / EOS / `add_bos`,
/// `pre`), e.g. one read from another GGUF file or a Hugging Face `tokenizer.json`.
pub fn export_gguf_with_vocab(
    path: &Path,
    config: &ModelConfig,
    weights: &WeightMap,
    mut vocab: GgufVocab,
    options: &ExportOptions,
) -> Result<ExportSummary> {
    let fail = |message: String| Error::Export {
        path: path.display().to_string(),
        message,
    };
    let (arch, format) = plan(config, options.target).map_err(fail)?;
    validate_weights(config, weights)?;
    if vocab.tokens.len() > config.vocab_size {
        return Err(fail(format!(
            "the tokenizer has {} tokens, more than the model's {}",
            vocab.tokens.len(),
            config.vocab_size
        )));
    }
    if vocab.kind == super::tokenizer::PreTokenizer::SentencePiece {
        return Err(fail(
            "SentencePiece vocabularies are read, not written: their scores are not kept".into(),
        ));
    }
    // llama.cpp wants one token per embedding row: pad like its converter does.
    vocab.pad_to(config.vocab_size);
    let gguf = |source: gguf_io::Error| Error::Gguf {
        path: path.display().to_string(),
        source,
    };

    let mut b = GgufBuilder::new();
    let k = |key: &str| format!("{arch}.{key}");
    let u = |v: usize| v as u32;
    b.add_metadata("general.architecture", arch).map_err(gguf)?;
    b.add_metadata("general.name", options.name.as_str())
        .map_err(gguf)?;
    b.add_metadata("general.file_type", file_type(format))
        .map_err(gguf)?;
    b.add_metadata(
        "general.quantization_version",
        gguf_io::QUANTIZATION_VERSION,
    )
    .map_err(gguf)?;
    for (key, value) in [
        ("context_length", config.context_length),
        ("embedding_length", config.hidden_size),
        ("block_count", config.n_layers),
        ("feed_forward_length", config.ffn_hidden_size),
        ("attention.head_count", config.n_heads),
        ("attention.head_count_kv", config.n_kv_heads),
        ("rope.dimension_count", config.head_dim()),
        ("vocab_size", config.vocab_size),
    ] {
        b.add_metadata(k(key), u(value)).map_err(gguf)?;
    }
    b.add_metadata(k("rope.freq_base"), config.rope_theta)
        .map_err(gguf)?;
    b.add_metadata(k("attention.layer_norm_rms_epsilon"), config.norm_eps)
        .map_err(gguf)?;
    if arch == "bitnet" {
        // As llama.cpp's converter writes them (no scaling).
        b.add_metadata(k("rope.scaling.type"), "linear")
            .map_err(gguf)?;
        b.add_metadata(k("rope.scaling.factor"), 1.0f32)
            .map_err(gguf)?;
    }
    b.add_metadata("tokenizer.ggml.model", vocab.kind.model())
        .map_err(gguf)?;
    b.add_metadata("tokenizer.ggml.pre", vocab.kind.pre())
        .map_err(gguf)?;
    b.add_metadata("tokenizer.ggml.tokens", vocab.tokens)
        .map_err(gguf)?;
    b.add_metadata("tokenizer.ggml.token_type", vocab.token_types)
        .map_err(gguf)?;
    b.add_metadata("tokenizer.ggml.merges", vocab.merges)
        .map_err(gguf)?;
    b.add_metadata(
        "tokenizer.ggml.bos_token_id",
        vocab.bos_id.unwrap_or(vocab.eos_id),
    )
    .map_err(gguf)?;
    b.add_metadata("tokenizer.ggml.eos_token_id", vocab.eos_id)
        .map_err(gguf)?;
    // Our models score text without BOS (`genkidama eval`), and so must llama.cpp; imported
    // vocabularies keep what their file said.
    b.add_metadata("tokenizer.ggml.add_bos_token", vocab.add_bos)
        .map_err(gguf)?;
    b.add_metadata("tokenizer.ggml.add_eos_token", false)
        .map_err(gguf)?;

    let embd_type = match options.embedding {
        EmbeddingType::F16 => GgmlType::F16,
        EmbeddingType::F32 => GgmlType::F32,
    };
    let ggml_format = match format {
        Format::Tq1_0 => GgmlType::TQ1_0,
        Format::Tq2_0 => GgmlType::TQ2_0,
        _ => GgmlType::I2_S,
    };
    let shapes = config.tensor_shapes();
    for (name, shape) in &shapes {
        // ggml order: row length first.
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let ty = if ModelConfig::is_ternary_tensor(name) {
            ggml_format
        } else if shape.len() == 1 {
            GgmlType::F32
        } else {
            embd_type
        };
        b.add_tensor(name.as_str(), &dims, ty).map_err(gguf)?;
    }
    let mut w = b.create(path).map_err(gguf)?;
    for (name, shape) in &shapes {
        let t = &weights[name];
        if ModelConfig::is_ternary_tensor(name) {
            let q = quantize_absmean(
                &t.data,
                shape[0],
                shape[1],
                Granularity::PerTensor,
                QUANT_EPS,
            )
            .and_then(|q| PackedMatrix::from_ternary(format, &q))
            .map_err(|source| Error::Kernel {
                what: format!("GGUF export to `{}`: tensor {name}", path.display()),
                source,
            })?;
            w.write_tensor(name, &q.to_bytes()).map_err(gguf)?;
        } else if shape.len() == 1 || embd_type == GgmlType::F32 {
            w.write_tensor_f32(name, &t.data).map_err(gguf)?;
        } else {
            let bytes = gguf_io::convert::quantize(GgmlType::F16, &t.data).map_err(gguf)?;
            w.write_tensor(name, &bytes).map_err(gguf)?;
        }
    }
    w.finish().map_err(gguf)?;
    let bytes = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    Ok(ExportSummary {
        architecture: arch.into(),
        weight_type: format.name().into(),
        tensors: shapes.len(),
        bytes,
    })
}
