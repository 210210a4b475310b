//! `genkidama export --model PATH --out FILE`: GGUF for llama.cpp (`bitnet`, TQ2_0 by
//! default, TQ1_0 on request) or bitnet.cpp (I2_S), tokenizer embedded.

use anyhow::{Context, Result, bail};
use bitnet_model::export::{EmbeddingType, ExportOptions, Target, TernaryType, export_gguf};
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
    /// Weight type: tq2_0 or tq1_0 (llama.cpp `bitnet`), i2_s (bitnet.cpp).
    #[arg(long, default_value = "tq2_0")]
    pub r#type: String,
    /// Token embedding type: f16 or f32.
    #[arg(long, default_value = "f16")]
    pub embedding: String,
}

pub(crate) fn options(weight_type: &str, embedding: &str) -> Result<ExportOptions> {
    let target = match weight_type.to_ascii_lowercase().as_str() {
        "tq2_0" => Target::LlamaCpp(TernaryType::Tq2_0),
        "tq1_0" => Target::LlamaCpp(TernaryType::Tq1_0),
        "i2_s" => Target::BitnetCpp,
        other => bail!("--type must be tq2_0, tq1_0 or i2_s, got `{other}`"),
    };
    let embedding = match embedding.to_ascii_lowercase().as_str() {
        "f16" => EmbeddingType::F16,
        "f32" => EmbeddingType::F32,
        other => bail!("--embedding must be f16 or f32, got `{other}`"),
    };
    Ok(ExportOptions {
        target,
        embedding,
        name: "genkidama".into(),
    })
}

/// Exports one model directory to one GGUF file.
pub fn export_file(model: &Path, out: &Path, weight_type: &str, embedding: &str) -> Result<()> {
    let options = options(weight_type, embedding)?;
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
    export_file(&args.model, &args.out, &args.r#type, &args.embedding)
}
