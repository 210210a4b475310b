//! What the processes train: the linear-regression toy (always available) or a BitNet
//! transformer through bitnet-model's trainer (feature `bitnet`). Each side asks for what
//! it needs: a worker for a [`LocalTrainer`] on its shard, the coordinator for the
//! initial weights and a held-out [`LossEvaluator`].

use anyhow::{Result, bail};
use diloco::params::ParamMap;
use diloco::toy::{LinearEvaluator, LinearTrainer, RegressionData};
use diloco::trainer::{LocalTrainer, LossEvaluator};
use std::path::{Path, PathBuf};

/// What `--preset` builds from scratch: the toy, or a bitnet-model architecture preset
/// (the names of `bitnet_model::config::PRESETS`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// The linear-regression toy: data generated from `--data-seed` on every process, so a
    /// run needs nothing but the store.
    Toy,
    /// bitnet-model's `tiny` (feature `bitnet`).
    Tiny,
    /// The training benchmark's mid-size shape, 123M parameters (feature `bitnet`).
    Mid,
    /// Genkidama's 363M-parameter model (feature `bitnet`).
    #[value(name = "genkidama-363m")]
    Genkidama363m,
    /// Genkidama's 618M-parameter model (feature `bitnet`).
    #[value(name = "genkidama-618m")]
    Genkidama618m,
    /// Microsoft's BitNet b1.58 2B4T architecture (feature `bitnet`).
    #[value(name = "bitnet-2b4t")]
    Bitnet2b4t,
}

impl Preset {
    /// The name on the command line (and, for BitNet presets, `ModelConfig::preset`'s).
    pub fn name(self) -> &'static str {
        match self {
            Preset::Toy => "toy",
            Preset::Tiny => "tiny",
            Preset::Mid => "mid",
            Preset::Genkidama363m => "genkidama-363m",
            Preset::Genkidama618m => "genkidama-618m",
            Preset::Bitnet2b4t => "bitnet-2b4t",
        }
    }
}

/// Model and data options shared by every subcommand (they must agree across the
/// processes of one run).
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// Architecture to train from scratch: `toy` (linear regression), or a BitNet preset
    /// (feature `bitnet`).
    #[arg(long, value_enum, default_value_t = Preset::Toy)]
    pub preset: Preset,
    /// A full BitNet architecture file (model-config TOML; overrides --preset; feature
    /// `bitnet`).
    #[arg(long)]
    pub model_config: Option<PathBuf>,
    /// BitNet: prepared dataset directory (`tokenizer.json`, `train.bin`, `val.bin`),
    /// written once by `diloco prepare`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// BitNet: tokens per training sequence and per evaluation window.
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// BitNet: seed of the initial weights (coordinator); worker N samples its batches
    /// with seed + 1 + N.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Toy model: input width.
    #[arg(long, default_value_t = 16)]
    pub dim: usize,
    /// Toy model: examples generated.
    #[arg(long, default_value_t = 2000)]
    pub examples: usize,
    /// Toy model: data seed (must be the same on every process).
    #[arg(long, default_value_t = 7)]
    pub data_seed: u64,
}

/// A worker's training options.
#[derive(Debug, Clone, Copy)]
pub struct WorkerOpts {
    /// Worker id.
    pub id: u32,
    /// Number of data shards (the worker takes shard `id % shards`).
    pub shards: usize,
    /// Examples (toy) or sequences (BitNet) per inner step; `None`: 8 / 4.
    pub batch: Option<usize>,
    /// Inner learning rate; `None`: 0.05 (toy SGD) or bitnet-model's schedule (peak 3e-3).
    pub lr: Option<f32>,
    /// Warm-up steps of the BitNet schedule; `None`: a tenth of `total_steps`.
    // Read only by the BitNet trainer, absent without the feature.
    #[cfg_attr(not(feature = "bitnet"), allow(dead_code))]
    pub warmup: Option<usize>,
    /// Inner steps this worker will take (the BitNet schedule spans them).
    #[cfg_attr(not(feature = "bitnet"), allow(dead_code))]
    pub total_steps: usize,
}

/// The coordinator's model-specific parts.
pub struct CoordinatorSide {
    /// Initial global weights (version 0).
    pub init: ParamMap,
    /// Held-out loss of the global weights.
    pub eval: Box<dyn LossEvaluator + Send>,
    /// A second evaluator for contribution scores, when asked for.
    pub scorer: Option<Box<dyn LossEvaluator + Send>>,
    /// What was trained, for the summary.
    pub describe: serde_json::Value,
}

fn toy_data(a: &ModelArgs) -> (RegressionData, RegressionData) {
    RegressionData::generate(a.examples + a.examples / 4, a.dim, a.data_seed).split(a.examples)
}

fn is_toy(a: &ModelArgs) -> bool {
    a.model_config.is_none() && a.preset == Preset::Toy
}

/// What trains, for messages and the summary: the config file, else the preset name.
pub fn label(a: &ModelArgs) -> String {
    a.model_config
        .as_ref()
        .map_or_else(|| a.preset.name().to_string(), |p| p.display().to_string())
}

/// The trainer of worker `o.id`.
pub fn worker_trainer(a: &ModelArgs, o: &WorkerOpts) -> Result<Box<dyn LocalTrainer>> {
    if is_toy(a) {
        let (train, held) = toy_data(a);
        return Ok(Box::new(LinearTrainer::new(
            train.shard(o.id as usize % o.shards.max(1), o.shards.max(1)),
            held,
            o.lr.unwrap_or(0.05),
            o.batch.unwrap_or(8),
            u64::from(o.id),
        )));
    }
    bitnet_worker(a, o)
}

/// Initial weights and evaluators for the coordinator; `eval_windows` held-out windows of
/// `seq_len + 1` tokens score a BitNet model.
pub fn coordinator_side(
    a: &ModelArgs,
    eval_windows: usize,
    score: bool,
) -> Result<CoordinatorSide> {
    if is_toy(a) {
        let (train, held) = toy_data(a);
        let init = LinearTrainer::new(train, held.clone(), 0.0, 1, 0).params()?;
        return Ok(CoordinatorSide {
            init,
            eval: Box::new(LinearEvaluator(held.clone())),
            scorer: score.then(|| Box::new(LinearEvaluator(held)) as Box<_>),
            describe: serde_json::json!({"model": "toy", "dim": a.dim, "examples": a.examples}),
        });
    }
    bitnet_coordinator(a, eval_windows, score)
}

/// Writes the final global weights as a model directory.
pub fn save(a: &ModelArgs, dir: &Path, global: &ParamMap) -> Result<()> {
    if is_toy(a) {
        bail!("--save writes a BitNet model directory; the toy model has none");
    }
    bitnet_save(a, dir, global)
}

/// What `diloco prepare` built.
#[derive(serde::Serialize)]
pub struct Prepared {
    /// The dataset directory.
    pub data_dir: PathBuf,
    /// Tokens in the training split.
    pub train_tokens: u64,
    /// Tokens in the held-out split.
    pub val_tokens: u64,
    /// The tokenizer's vocabulary (the model's).
    pub vocab_size: usize,
}

/// Builds the dataset directory for the BitNet model from a text corpus.
pub fn prepare(a: &ModelArgs, corpus: Option<&Path>) -> Result<Prepared> {
    if is_toy(a) {
        bail!(
            "prepare builds a BitNet dataset: pass a BitNet --preset (tiny, ...) or --model-config FILE"
        );
    }
    bitnet_prepare(a, corpus)
}

#[cfg(not(feature = "bitnet"))]
fn no_bitnet(a: &ModelArgs) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: this binary was built without the `bitnet` feature (only --preset toy)",
        label(a)
    )
}

#[cfg(not(feature = "bitnet"))]
fn bitnet_worker(a: &ModelArgs, _: &WorkerOpts) -> Result<Box<dyn LocalTrainer>> {
    Err(no_bitnet(a))
}

#[cfg(not(feature = "bitnet"))]
fn bitnet_coordinator(a: &ModelArgs, _: usize, _: bool) -> Result<CoordinatorSide> {
    Err(no_bitnet(a))
}

#[cfg(not(feature = "bitnet"))]
fn bitnet_save(a: &ModelArgs, _: &Path, _: &ParamMap) -> Result<()> {
    Err(no_bitnet(a))
}

#[cfg(not(feature = "bitnet"))]
fn bitnet_prepare(a: &ModelArgs, _: Option<&Path>) -> Result<Prepared> {
    Err(no_bitnet(a))
}

#[cfg(feature = "bitnet")]
use bitnet::{bitnet_coordinator, bitnet_prepare, bitnet_save, bitnet_worker};

#[cfg(feature = "bitnet")]
mod bitnet {
    use super::{CoordinatorSide, ModelArgs, Prepared, WorkerOpts, label};
    use anyhow::{Context, Result};
    use bitnet_model::ModelConfig;
    use bitnet_model::data::{TextTokenizer, TokenData, find_corpus, prepare_dataset};
    use bitnet_model::store::ModelDir;
    use burn::tensor::Device;
    use diloco::bitnet::{BitnetWorker, WorkerSpec};
    use diloco::params::ParamMap;
    use diloco::trainer::LocalTrainer;
    use std::path::{Path, PathBuf};

    fn data_dir(a: &ModelArgs) -> Result<&PathBuf> {
        a.data_dir
            .as_ref()
            .with_context(|| format!("{} needs --data-dir (see `diloco prepare`)", label(a)))
    }

    /// The architecture: `--model-config` when given, else the BitNet `--preset`.
    fn model_config(a: &ModelArgs) -> Result<ModelConfig> {
        match &a.model_config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                ModelConfig::from_toml(&text).with_context(|| format!("parsing {}", p.display()))
            }
            None => ModelConfig::preset(a.preset.name())
                .with_context(|| format!("--preset {}", a.preset.name())),
        }
    }

    fn load(a: &ModelArgs) -> Result<(ModelConfig, TokenData)> {
        let model = model_config(a)?;
        let dir = data_dir(a)?;
        let data = TokenData::open(dir)
            .with_context(|| format!("opening the dataset in {}", dir.display()))?;
        Ok((model, data))
    }

    /// The coordinator's held-out scorer: never trains (its batch only sets how many
    /// windows one eval forward holds); its seeded initial weights are version 0.
    fn evaluator(
        a: &ModelArgs,
        model: &ModelConfig,
        data: &TokenData,
        windows: usize,
    ) -> Result<BitnetWorker> {
        let windows = windows.max(1);
        Ok(
            WorkerSpec::new(model.clone(), 0, 1, 1, windows, a.seq_len, a.seed)
                .eval_windows(windows)
                .build(data, &Device::flex())?,
        )
    }

    pub(super) fn bitnet_worker(a: &ModelArgs, o: &WorkerOpts) -> Result<Box<dyn LocalTrainer>> {
        let (model, data) = load(a)?;
        let mut spec = WorkerSpec::new(
            model,
            o.id as usize,
            o.shards,
            o.total_steps,
            o.batch.unwrap_or(4),
            a.seq_len,
            a.seed + 1 + u64::from(o.id),
        );
        if let Some(lr) = o.lr {
            spec = spec.peak_lr(f64::from(lr));
        }
        if let Some(w) = o.warmup {
            spec = spec.warmup(w);
        }
        let worker = spec
            .build(&data, &Device::flex())
            .with_context(|| format!("worker {}: building the trainer", o.id))?;
        Ok(Box::new(worker))
    }

    pub(super) fn bitnet_coordinator(
        a: &ModelArgs,
        windows: usize,
        score: bool,
    ) -> Result<CoordinatorSide> {
        let (model, data) = load(a)?;
        let eval = evaluator(a, &model, &data, windows)?;
        // The seeded initialisation every worker starts from.
        let init = eval.params()?;
        let scorer = if score {
            Some(Box::new(evaluator(a, &model, &data, windows)?) as Box<_>)
        } else {
            None
        };
        Ok(CoordinatorSide {
            init,
            eval: Box::new(eval),
            scorer,
            describe: serde_json::json!({
                "model": label(a),
                "params": model.param_count(),
                "config": model,
                "seq_len": a.seq_len,
                "eval_tokens": windows * (a.seq_len + 1),
                "train_tokens": data.train.len(),
                "val_tokens": data.val.len(),
            }),
        })
    }

    pub(super) fn bitnet_save(a: &ModelArgs, dir: &Path, global: &ParamMap) -> Result<()> {
        let model = model_config(a)?;
        let tok_path = data_dir(a)?.join("tokenizer.json");
        let tokenizer = TextTokenizer::load(&tok_path)?;
        ModelDir::save(dir, &model, global, &tokenizer)
            .with_context(|| format!("saving the model to {}", dir.display()))
    }

    pub(super) fn bitnet_prepare(a: &ModelArgs, corpus: Option<&Path>) -> Result<Prepared> {
        let model = model_config(a)?;
        let corpus =
            find_corpus(corpus)?.context("no corpus: pass --corpus or set MAGNET_CORPUS")?;
        let out = data_dir(a)?;
        let info = prepare_dataset(&corpus.dir, out, model.vocab_size, 1234, &mut |m| {
            eprintln!("{m}");
        })?;
        Ok(Prepared {
            data_dir: out.clone(),
            train_tokens: info.train_tokens,
            val_tokens: info.val_tokens,
            vocab_size: model.vocab_size,
        })
    }
}
