//! `genkidama eval --model DIR --text FILE [--max-tokens N] [--json]`.
//!
//! Semantics (the exported GGUF gives the same numbers in llama.cpp): the text is read
//! leniently, tokenized without BOS, cut to its first N tokens, and scored in consecutive
//! windows of the model's context length (window i covers tokens i*ctx .. i*ctx+ctx and
//! predicts each next token inside it); `loss` is the mean next-token NLL in nats, `bpb`
//! that NLL in bits per UTF-8 byte of the predicted tokens, `tokens` the number predicted.

use anyhow::{Context, Result};
use bitnet_model::data::read_lenient;
use bitnet_model::model::Model;
use bitnet_model::store::ModelDir;
use bitnet_model::train::{EvalStats, evaluate_tokens};
use clap::Args;
use std::path::{Path, PathBuf};

/// Options of `genkidama eval`.
#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// Model directory (config.toml, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// UTF-8 text file to score (invalid bytes are replaced and reported).
    #[arg(long)]
    pub text: PathBuf,
    /// Score only the first N tokens.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Print one JSON line {"loss", "bpb", "tokens"}.
    #[arg(long)]
    pub json: bool,
    /// burn device: flex (CPU) or cuda.
    #[arg(long, default_value = "flex")]
    pub device: String,
}

/// Scores a text file with a model directory.
pub fn eval_file(
    model_dir: &Path,
    text: &Path,
    max_tokens: Option<usize>,
    device: &str,
) -> Result<EvalStats> {
    let device = crate::common::device(device)?;
    let dir = ModelDir::load(model_dir)?;
    let read = read_lenient(text)?;
    if read.replaced > 0 {
        eprintln!(
            "warning: {}: {} invalid UTF-8 sequence(s) replaced (first at byte {})",
            text.display(),
            read.replaced,
            read.first_bad_offset.unwrap_or(0)
        );
    }
    let mut ids = dir.tokenizer.encode(&read.text)?;
    if let Some(n) = max_tokens {
        ids.truncate(n);
    }
    let model = Model::from_weight_map(&dir.config, &dir.weights, &device)?;
    let token_bytes: Vec<u32> = (0..dir.config.vocab_size as u32)
        .map(|i| dir.tokenizer.token_bytes(i))
        .collect();
    evaluate_tokens(
        &model,
        &ids,
        dir.config.context_length,
        4,
        &token_bytes,
        &device,
    )
    .with_context(|| format!("scoring {}", text.display()))
}

/// `genkidama eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let s = eval_file(&args.model, &args.text, args.max_tokens, &args.device)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"loss": s.loss, "bpb": s.bpb, "tokens": s.tokens})
        );
    } else {
        println!(
            "loss {:.4} nats/token, {:.4} bits/byte over {} predicted tokens",
            s.loss, s.bpb, s.tokens
        );
    }
    Ok(())
}
