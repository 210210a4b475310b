//! `genkidama export --model PATH --out FILE [--format tq2_0|tq1_0|i2_s]`: GGUF for
//! llama.cpp (`bitnet`, TQ2_0 by default, TQ1_0 on request) or bitnet.cpp (I2_S), tokenizer
//! embedded.

use crate::common::{Embedding, WeightFormat};
use anyhow::{Context, Result};
use bitnet_model::export::{ExportOptions, export_gguf};
use bitnet_model::store::ModelDir;
use clap::Args;
use std::path::{Path, PathBuf};

/// Options of `genkidama export`.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// Model: our directory (config.toml, model.safetensors, tokenizer.json), a .gguf file
    /// or a Hugging Face folder (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Output .gguf file.
    #[arg(long)]
    pub out: PathBuf,
    /// Ternary weight format: tq2_0 / tq1_0 (llama.cpp `bitnet`) or i2_s (bitnet.cpp).
    #[arg(long, value_enum, default_value_t, alias = "type")]
    pub format: WeightFormat,
    /// Token embedding type.
    #[arg(long, value_enum, default_value_t)]
    pub embedding: Embedding,
}

pub(crate) fn options(format: WeightFormat, embedding: Embedding) -> ExportOptions {
    ExportOptions {
        target: format.target(),
        embedding: embedding.into(),
        name: "genkidama".into(),
    }
}

/// Exports one model directory to one GGUF file.
pub fn export_file(
    model: &Path,
    out: &Path,
    format: WeightFormat,
    embedding: Embedding,
) -> Result<()> {
    let options = options(format, embedding);
    let dir =
        ModelDir::open(model).with_context(|| format!("loading model {}", model.display()))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let s = export_gguf(out, &dir.config, &dir.weights, &dir.tokenizer, &options)?;
    eprintln!(
        "wrote {} ({} `{}`, {} tensors, {:.2} MB)",
        out.display(),
        s.weight_type,
        s.architecture,
        s.tensors,
        s.bytes as f64 / 1e6
    );
    Ok(())
}

/// `genkidama export`.
pub fn run(args: &ExportArgs) -> Result<()> {
    export_file(&args.model, &args.out, args.format, args.embedding)
}
