//! `genkidama eval --model PATH --text FILE [--max-tokens N] [--json]`.
//!
//! `PATH` is our model directory, a `.gguf` file (any producer) or a Hugging Face folder.
//! Semantics (the exported GGUF gives the same numbers in llama.cpp): the text is read
//! leniently, tokenized as the model says (BOS first only when the file's
//! `add_bos_token` / the HF tokenizer asks for it; our own models: no BOS), cut to its first
//! N tokens, and scored in consecutive windows of the model's context length (window i
//! covers tokens i*ctx .. i*ctx+ctx and predicts each next token inside it); `loss` is the
//! mean next-token NLL in nats, `perplexity` = exp(loss) (what llama-perplexity prints as
//! PPL, computed over the same predicted tokens; llama-perplexity itself scores only the
//! second half of each window, so pass its `-c` with our windows in mind), `bpb` the NLL in
//! bits per UTF-8 byte of the predicted tokens (byte-level vocabularies), `tokens` the
//! number predicted.

use crate::common::Backend;
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
    /// Model: our directory (config.toml, model.safetensors, tokenizer.json), a .gguf file
    /// or a Hugging Face folder (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// UTF-8 text file to score (invalid bytes are replaced and reported).
    #[arg(long)]
    pub text: PathBuf,
    /// Score only the first N tokens.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Print one JSON line {"loss", "perplexity", "bpb", "tokens"}.
    #[arg(long)]
    pub json: bool,
    /// burn device.
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub device: Backend,
}

/// Scores a text file with a model (directory, GGUF file or HF folder).
pub fn eval_file(
    model_dir: &Path,
    text: &Path,
    max_tokens: Option<usize>,
    device: Backend,
) -> Result<EvalStats> {
    let device = crate::common::device(device.name())?;
    let dir = ModelDir::open(model_dir)
        .with_context(|| format!("loading model {}", model_dir.display()))?;
    let read = read_lenient(text)?;
    if read.replaced > 0 {
        eprintln!(
            "warning: {}: {} invalid UTF-8 sequence(s) replaced (first at byte {})",
            text.display(),
            read.replaced,
            read.first_bad_offset.unwrap_or(0)
        );
    }
    let mut ids = dir.encode(&read.text)?;
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
    let s = eval_file(&args.model, &args.text, args.max_tokens, args.device)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "loss": s.loss, "perplexity": s.loss.exp(), "bpb": s.bpb, "tokens": s.tokens
            })
        );
    } else {
        println!(
            "loss {:.4} nats/token, perplexity {:.4}, {:.4} bits/byte over {} predicted tokens",
            s.loss,
            s.loss.exp(),
            s.bpb,
            s.tokens
        );
    }
    Ok(())
}
