//! `genkidama train`: prepare the data, train one model, write a model directory,
//! metrics JSONL, checkpoints and a loss PNG.

use crate::common::{self, Backend, Preset};
use anyhow::{Context, Result};
use bitnet_model::data::TextTokenizer;
use bitnet_model::store::ModelDir;
use bitnet_model::train::{Event, FitReport, TrainConfig, Trainer, fit};
use bitnet_model::{ModelConfig, WeightKind};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// Options of `genkidama train`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Model preset.
    #[arg(long, value_enum, default_value_t = Preset::Tiny)]
    pub preset: Preset,
    /// Model config TOML (overrides --preset).
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// Training config TOML (fields not given keep the defaults below).
    #[arg(long)]
    pub train_config: Option<PathBuf>,
    /// Train the full-precision twin instead of the ternary model.
    #[arg(long)]
    pub full_precision: bool,
    /// Optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Tokens per sequence.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Micro-batches per step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Stage-1 peak learning rate (the other rates scale with it).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warm-up steps.
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Validate every N steps.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Corpus directory of UTF-8 *.txt files (else MAGNET_CORPUS, else the shipped
    /// corpus).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Where the tokenizer and token shards are cached (default:
    /// ./runs/genkidama/data-v<vocab>).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Output directory: model/, metrics.jsonl, checkpoint/, loss.png (default:
    /// ./runs/genkidama/train-ternary or train-fp).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from <out>/checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// burn device.
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub device: Backend,
    /// Train for about this many seconds instead of a fixed step count: a few probe steps
    /// on a throw-away copy measure the step time, and the schedule (warm-up, the drop at
    /// half way, the final decay) is laid over the steps that fit. For sweeps that give
    /// every trial the same wall-clock budget (autoresearch's fixed-time rule).
    #[arg(long)]
    pub time_budget_s: Option<f64>,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Training settings tuned for the `tiny` preset on 2 CPU cores (timings: docs/genkidama.md).
pub fn tiny_defaults(full_precision: bool) -> TrainConfig {
    let lr = if full_precision { 2e-3 } else { 4e-3 };
    TrainConfig {
        steps: 300,
        batch_size: 8,
        seq_len: 128,
        warmup_steps: 20,
        lr,
        lr_stage1_end: lr * 0.6,
        lr_stage2: lr * 0.4,
        lr_final: lr * 0.04,
        eval_every: 50,
        eval_windows: 32,
        ..TrainConfig::default()
    }
}

/// The model and training configs the arguments describe (validated).
pub fn configs(args: &TrainArgs, vocab: Option<usize>) -> Result<(ModelConfig, TrainConfig)> {
    let mut model = match &args.model_config {
        Some(p) => ModelConfig::from_toml(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("in {}", p.display()))?,
        None => ModelConfig::preset(args.preset.name())?,
    };
    if let Some(v) = vocab {
        model.vocab_size = v;
    }
    if args.full_precision {
        model = model.full_precision_twin();
    }
    let mut train = match &args.train_config {
        Some(p) => TrainConfig::from_toml(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            model.context_length,
        )
        .with_context(|| format!("in {}", p.display()))?,
        None => tiny_defaults(args.full_precision),
    };
    if let Some(v) = args.steps {
        train.steps = v;
    }
    if let Some(v) = args.batch_size {
        train.batch_size = v;
    }
    if let Some(v) = args.seq_len {
        train.seq_len = v;
    }
    if let Some(v) = args.grad_accum {
        train.grad_accum = v;
    }
    if let Some(lr) = args.lr {
        let scale = lr / train.lr;
        train.lr = lr;
        train.lr_stage1_end *= scale;
        train.lr_stage2 *= scale;
        train.lr_final *= scale;
    }
    if let Some(v) = args.warmup_steps {
        train.warmup_steps = v;
    }
    if let Some(v) = args.seed {
        train.seed = v;
    }
    if let Some(v) = args.eval_every {
        train.eval_every = v;
    }
    if let Some(v) = args.checkpoint_every {
        train.checkpoint_every = v;
    }
    train.seq_len = train.seq_len.min(model.context_length);
    model.validate()?;
    train.validate(model.context_length)?;
    Ok((model, train))
}

/// What a training run produced.
pub struct Trained {
    /// The model directory.
    pub model_dir: PathBuf,
    /// Loop report.
    pub report: FitReport,
    /// The architecture trained.
    pub config: ModelConfig,
    /// Training settings.
    pub train: TrainConfig,
}

/// Trains with a progress bar; writes `<out>/model`, `metrics.jsonl`, `checkpoint/`.
pub fn train_to(
    label: &str,
    model: ModelConfig,
    train: TrainConfig,
    data: bitnet_model::data::TokenData,
    tokenizer: &TextTokenizer,
    out: &Path,
    device: &burn::tensor::Device,
    resume: bool,
    progress: Option<&indicatif::MultiProgress>,
) -> Result<Trained> {
    let ckpt = out.join(bitnet_model::train::fit::CHECKPOINT_DIR);
    let mut trainer = if resume {
        Trainer::resume(&ckpt, data, device, Some(train.steps))
            .with_context(|| format!("resuming from {}", ckpt.display()))?
    } else {
        Trainer::new(model, train, data, device)?
    };
    let steps = trainer.train_config().steps as u64;
    let mut bar = ProgressBar::new(steps);
    if let Some(progress) = progress {
        bar = progress.add(bar);
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>9} [{elapsed_precise}] {bar:30} {pos}/{len} ({eta} left) {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(label.to_string());
    bar.set_position(trainer.step_index() as u64);
    let mut last_val = String::new();
    let report = fit(&mut trainer, out, &mut |e| match e {
        Event::Step {
            stats,
            tokens_per_s,
        } => {
            bar.set_position(stats.step as u64);
            bar.set_message(format!(
                "loss {:.3} lr {:.1e} {:.0} tok/s{last_val}",
                stats.loss, stats.lr, tokens_per_s
            ));
        }
        Event::Eval { step, stats } => {
            last_val = format!(" | val {:.3} ({:.3} bpb)", stats.loss, stats.bpb);
            bar.println(format!(
                "{label} step {step}: val loss {:.4}, {:.4} bits/byte",
                stats.loss, stats.bpb
            ));
        }
        Event::Checkpoint { .. } => {}
    })?;
    bar.finish();
    let model_dir = out.join("model");
    ModelDir::save(
        &model_dir,
        trainer.model_config(),
        &trainer.weights(),
        tokenizer,
    )?;
    Ok(Trained {
        model_dir,
        report,
        config: trainer.model_config().clone(),
        train: trainer.train_config().clone(),
    })
}

/// Steps that fit in `budget_s` seconds: times a few steps of a throw-away trainer (after
/// one warm-up step, which pays one-off allocation costs) and divides. Evaluation time is
/// not counted against the budget: it is the same for every trial of a sweep.
pub fn steps_for_budget(
    model: &ModelConfig,
    train: &TrainConfig,
    data: &bitnet_model::data::TokenData,
    device: &burn::tensor::Device,
    budget_s: f64,
) -> Result<usize> {
    anyhow::ensure!(
        budget_s.is_finite() && budget_s > 0.0,
        "--time-budget-s must be a positive number of seconds, got {budget_s}"
    );
    const PROBE: usize = 3;
    let probe_config = TrainConfig {
        steps: PROBE + 1,
        warmup_steps: 1,
        eval_every: 0,
        ..train.clone()
    };
    let mut probe = Trainer::new(model.clone(), probe_config, data.clone(), device)?;
    probe.step()?;
    let start = std::time::Instant::now();
    for _ in 0..PROBE {
        probe.step()?;
    }
    let per_step = start.elapsed().as_secs_f64() / PROBE as f64;
    // At least enough steps for the warm-up and both schedule stages to exist.
    let min_steps = train.warmup_steps + 2;
    Ok(((budget_s / per_step).floor() as usize).max(min_steps))
}

/// What `genkidama train` prints with `--json` and writes to `<out>/summary.json`.
#[derive(Debug, serde::Serialize)]
pub struct TrainSummary {
    /// Validation loss at the end (nats/token).
    pub val_loss: f64,
    /// Validation bits per byte.
    pub val_bpb: f64,
    /// Optimizer steps.
    pub steps: usize,
    /// Tokens per optimizer step.
    pub tokens_per_step: usize,
    /// Training throughput.
    pub train_tokens_per_s: f64,
    /// The trained model directory.
    pub model_dir: String,
    /// Corpus directory.
    pub corpus: String,
    /// Text fingerprint of the corpus (`magnet_corpus::Manifest::fingerprint`).
    pub corpus_fingerprint: String,
    /// CPU model and features (results are bit-identical only on the same ones).
    pub machine: bitnet_model::train::Machine,
}

/// `genkidama train`.
pub fn run(args: &TrainArgs) -> Result<()> {
    let device = common::device(args.device.name())?;
    let (model, train) = configs(args, None)?;
    let corpus = common::corpus(args.corpus.as_deref())?;
    let fingerprint = corpus.fingerprint()?;
    let corpus = corpus.dir;
    let out = args.out.clone().unwrap_or_else(|| {
        let kind = if model.weights == WeightKind::Ternary {
            "ternary"
        } else {
            "fp"
        };
        common::default_out().join(format!("train-{kind}"))
    });
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| common::default_out().join(format!("data-v{}", model.vocab_size)));
    let (_, data) = common::dataset(&corpus, &data_dir, model.vocab_size, train.seed)?;
    let tokenizer = TextTokenizer::load(&data_dir.join("tokenizer.json"))?;
    let (model, train) = configs(args, Some(tokenizer.vocab_size().max(model.vocab_size)))?;
    let label = if model.weights == WeightKind::Ternary {
        "ternary"
    } else {
        "fp"
    };
    let mut train = train;
    if let Some(budget) = args.time_budget_s {
        train.steps = steps_for_budget(&model, &train, &data, &device, budget)?;
        eprintln!(
            "time budget {budget:.0} s: {} steps of {} tokens",
            train.steps,
            train.tokens_per_step()
        );
    }
    let trained = train_to(
        label,
        model,
        train,
        data,
        &tokenizer,
        &out,
        &device,
        args.resume,
        None,
    )?;
    crate::plot::loss_png(
        &out.join("loss.png"),
        &[crate::plot::Curves {
            name: label,
            metrics: &trained.report.metrics,
        }],
    )?;
    let summary = TrainSummary {
        val_loss: trained.report.final_eval.loss,
        val_bpb: trained.report.final_eval.bpb,
        steps: trained.train.steps,
        tokens_per_step: trained.train.tokens_per_step(),
        train_tokens_per_s: trained.report.tokens_per_s,
        model_dir: std::path::absolute(&trained.model_dir)?
            .display()
            .to_string(),
        corpus: std::path::absolute(&corpus)?.display().to_string(),
        corpus_fingerprint: fingerprint,
        machine: bitnet_model::train::Machine::detect(),
    };
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "val loss {:.4} ({:.4} bits/byte), {:.0} train tokens/s, model in {}",
            summary.val_loss, summary.val_bpb, summary.train_tokens_per_s, summary.model_dir
        );
    }
    Ok(())
}
