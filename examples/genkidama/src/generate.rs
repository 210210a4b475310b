//! `genkidama generate --model PATH --prompt TEXT`: streams text from the packed CPU
//! runtime (ternary-core kernels), or from the f32 reference for a full-precision model.

use crate::common::WeightFormat;
use crate::run::Sample;
use anyhow::{Context, Result};
use bitnet_model::WeightKind;
use bitnet_model::runtime::{
    Format, GenerateOptions, Generation, PackOptions, PackedModel, ReferenceModel, SamplingConfig,
    Threads,
};
use bitnet_model::store::ModelDir;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

/// Options of `genkidama generate`.
#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// Model: our directory (config.toml, model.safetensors, tokenizer.json), a .gguf file
    /// or a Hugging Face folder (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt text.
    #[arg(long, default_value = "The package")]
    pub prompt: String,
    /// Most new tokens.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus probability mass (1 = all).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Packed weight format the runtime computes with.
    #[arg(long, value_enum, default_value_t)]
    pub format: WeightFormat,
}

/// A loaded model, packed when ternary.
enum Runner {
    Packed(PackedModel),
    Reference(ReferenceModel),
}

impl Runner {
    fn load(dir: &ModelDir, threads: usize, format: Format) -> Result<Self> {
        Ok(match dir.config.weights {
            WeightKind::Ternary => Runner::Packed(PackedModel::from_weights(
                &dir.config,
                &dir.weights,
                PackOptions {
                    format,
                    threads: Threads(threads),
                },
            )?),
            WeightKind::FullPrecision => Runner::Reference(ReferenceModel::from_weights(
                &dir.config,
                &dir.weights,
                Threads(threads),
            )?),
        })
    }

    fn generate(
        &self,
        dir: &ModelDir,
        prompt: &str,
        options: &GenerateOptions,
        on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        Ok(match self {
            Runner::Packed(m) => m.generate_text(&dir.tokenizer, prompt, options, on_text)?,
            Runner::Reference(m) => m.generate_text(&dir.tokenizer, prompt, options, on_text)?,
        })
    }
}

/// `genkidama generate`.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let format = args.format.packed();
    let dir = ModelDir::open(&args.model)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let runner = Runner::load(&dir, args.threads, format)?;
    let options = GenerateOptions {
        max_new_tokens: args.max_tokens,
        sampling: SamplingConfig {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        stop_tokens: vec![dir.eos_id],
    };
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{}", args.prompt)?;
    let g = runner.generate(&dir, &args.prompt, &options, |piece| {
        // A closed pipe just ends the stream early; the stats still print.
        let _ = write!(stdout, "{piece}").and_then(|()| stdout.flush());
    })?;
    writeln!(stdout)?;
    eprintln!(
        "{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s",
        g.prompt_tokens,
        g.prompt_tokens_per_s(),
        g.tokens.len(),
        g.gen_tokens_per_s()
    );
    Ok(())
}

/// Prompts for the report's samples, two per corpus language.
pub const PROMPTS: &[(&str, &str)] = &[
    ("en", "This package provides"),
    ("en", "To install the program,"),
    ("ja", "このパッケージは"),
    ("ja", "設定ファイルを"),
    ("ko", "이 패키지는"),
    ("ko", "설정 파일을"),
];

/// Generates the report's samples with the packed runtime; returns them with the mean
/// generation tokens/s.
pub fn samples(dir: &ModelDir, max_tokens: usize, seed: u64) -> Result<(Vec<Sample>, f64)> {
    let runner = Runner::load(dir, 0, Format::I2S)?;
    let mut out = Vec::new();
    let (mut tokens, mut seconds) = (0usize, 0f64);
    for (i, (language, prompt)) in PROMPTS.iter().enumerate() {
        let options = GenerateOptions {
            max_new_tokens: max_tokens,
            sampling: SamplingConfig {
                seed: seed + i as u64,
                ..SamplingConfig::default()
            },
            stop_tokens: vec![],
        };
        let g = runner.generate(dir, prompt, &options, |_| {})?;
        tokens += g.tokens.len();
        seconds += g.gen_s;
        out.push(Sample {
            language: (*language).to_string(),
            prompt: (*prompt).to_string(),
            text: g.text,
        });
    }
    Ok((out, tokens as f64 / seconds.max(1e-9)))
}
