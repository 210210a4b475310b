//! `genkidama convert --model PATH --out FILE.gguf [--format tq2_0|tq1_0|i2_s]`: writes GGUF
//! from a Hugging Face folder (like llama.cpp's `convert_hf_to_gguf.py`) or re-quantizes a
//! GGUF file (TQ1_0 / TQ2_0 / I2_S), keeping its tokenizer (`pre`, BOS / EOS, `add_bos`).
//!
//! Ternary projections are re-packed exactly (one absmean scale per tensor); a SiLU tied
//! model can go to llama.cpp (`bitnet`, TQ2_0 / TQ1_0) or bitnet.cpp (I2_S), a ReLU² or
//! untied one only to bitnet.cpp (llama.cpp's `bitnet` graph would compute it wrongly).
//! `--i2s-layout arm|1x4` reads an I2_S input written by bitnet.cpp's ARM or "1x4" build
//! (the file does not say which); the output is always the x86 layout.

use crate::common::{Embedding, I2sLayoutArg, WeightFormat};
use anyhow::{Context, Result};
use bitnet_model::export::{GgufVocab, ImportOptions, export_gguf_with_vocab};
use bitnet_model::store::ModelDir;
use clap::Args;
use std::path::PathBuf;

/// Options of `genkidama convert`.
#[derive(Args, Debug, Clone)]
pub struct ConvertArgs {
    /// Input: a Hugging Face folder, a .gguf file or our model directory.
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
    /// Code layout of an I2_S input (the file does not say which bitnet.cpp build wrote it).
    #[arg(long, value_enum, default_value_t)]
    pub i2s_layout: I2sLayoutArg,
}

/// `genkidama convert`.
pub fn run(args: &ConvertArgs) -> Result<()> {
    let mut options = crate::export::options(args.format, args.embedding);
    let options_in = ImportOptions {
        i2s_layout: args.i2s_layout.into(),
    };
    let dir = ModelDir::open_with(&args.model, &options_in)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    if let Some(name) = args.model.file_stem().and_then(|s| s.to_str()) {
        options.name = name.to_string();
    }
    let mut vocab = GgufVocab::from_tokenizer(&dir.tokenizer)
        .with_context(|| format!("tokenizer of {}", args.model.display()))?;
    vocab.bos_id = dir.bos_id.or(vocab.bos_id);
    vocab.eos_id = dir.eos_id;
    vocab.add_bos = dir.add_bos;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let s = export_gguf_with_vocab(&args.out, &dir.config, &dir.weights, vocab, &options)?;
    eprintln!(
        "wrote {} ({} `{}`, {} tensors, {:.2} MB) from {:?} {}",
        args.out.display(),
        s.weight_type,
        s.architecture,
        s.tensors,
        s.bytes as f64 / 1e6,
        dir.source,
        args.model.display()
    );
    Ok(())
}
