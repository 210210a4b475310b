//! The training loop: steps, periodic validation, metrics JSONL, checkpoints.

use super::{EvalStats, StepStats, Trainer};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Metric {
    /// A training step.
    Train {
        /// Step taken (1-based).
        step: usize,
        /// Mean training loss (nats).
        loss: f64,
        /// Learning rate.
        lr: f64,
        /// Weight decay.
        weight_decay: f64,
        /// Gradient norm before clipping.
        grad_norm: f64,
        /// Tokens consumed so far.
        tokens: u64,
        /// Seconds since this process started training.
        elapsed_s: f64,
    },
    /// A validation pass.
    Val {
        /// Steps taken when it ran.
        step: usize,
        /// Validation loss (nats).
        loss: f64,
        /// Bits per byte.
        bpb: f64,
    },
}

/// Progress notifications for a front end (progress bar, logs).
#[derive(Debug, Clone)]
pub enum Event {
    /// A step finished; `tokens_per_s` is measured over this process's steps.
    Step {
        /// The step's statistics.
        stats: StepStats,
        /// Training throughput so far.
        tokens_per_s: f64,
    },
    /// A validation pass finished.
    Eval {
        /// Steps taken.
        step: usize,
        /// Result.
        stats: EvalStats,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Steps taken.
        step: usize,
        /// Where.
        path: PathBuf,
    },
}

/// What [`fit`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// Final validation result.
    pub final_eval: EvalStats,
    /// All metrics of this run (including earlier lines kept on resume).
    pub metrics: Vec<Metric>,
    /// Training tokens per second (steps of this process only, validation excluded).
    pub tokens_per_s: f64,
    /// Wall-clock seconds of this call.
    pub wall_s: f64,
    /// Steps taken in total.
    pub steps: usize,
}

/// `metrics.jsonl` inside an output directory.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The checkpoint directory inside an output directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// Reads `metrics.jsonl`, keeping only lines up to `max_step` (used on resume so the
/// file describes one trajectory).
pub fn read_metrics(path: &Path, max_step: usize) -> Result<Vec<Metric>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let m: Metric = serde_json::from_str(line).map_err(|e| Error::Json {
            what: format!("{}:{}", path.display(), i + 1),
            source: e,
        })?;
        let step = match &m {
            Metric::Train { step, .. } | Metric::Val { step, .. } => *step,
        };
        if step <= max_step {
            out.push(m);
        }
    }
    Ok(out)
}

/// Trains until `trainer.train_config().steps`, validating every `eval_every` steps and
/// at the end, checkpointing every `checkpoint_every` steps into `out/checkpoint`, and
/// writing `out/metrics.jsonl`. A non-finite loss stops with an error that names the
/// last good checkpoint.
pub fn fit(
    trainer: &mut Trainer,
    out: &Path,
    on_event: &mut dyn FnMut(&Event),
) -> Result<FitReport> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let metrics_path = out.join(METRICS_FILE);
    let mut metrics = read_metrics(&metrics_path, trainer.step_index())?;
    let mut file = std::fs::File::create(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
    let write = |file: &mut std::fs::File, m: &Metric| -> Result<()> {
        let line = serde_json::to_string(m).expect("metric serializes");
        writeln!(file, "{line}").map_err(|e| Error::io(&metrics_path, e))
    };
    for m in &metrics {
        write(&mut file, m)?;
    }
    let config = trainer.train_config().clone();
    let ckpt = out.join(CHECKPOINT_DIR);
    let start = Instant::now();
    let mut train_time = 0f64;
    let mut trained_tokens = 0u64;
    let mut last_eval = None;
    while trainer.step_index() < config.steps {
        let t0 = Instant::now();
        let stats = trainer.step().map_err(|e| match e {
            Error::Training(msg) => Error::Training(if ckpt.join("state.json").exists() {
                format!("{msg}; the last good checkpoint is {}", ckpt.display())
            } else {
                format!("{msg}; no checkpoint was written yet")
            }),
            other => other,
        })?;
        train_time += t0.elapsed().as_secs_f64();
        trained_tokens += config.tokens_per_step() as u64;
        let tokens_per_s = trained_tokens as f64 / train_time.max(1e-9);
        let m = Metric::Train {
            step: stats.step,
            loss: stats.loss,
            lr: stats.lr,
            weight_decay: stats.weight_decay,
            grad_norm: stats.grad_norm,
            tokens: stats.tokens,
            elapsed_s: start.elapsed().as_secs_f64(),
        };
        write(&mut file, &m)?;
        metrics.push(m);
        let step = stats.step;
        on_event(&Event::Step {
            stats,
            tokens_per_s,
        });
        let last = step == config.steps;
        if last || (config.eval_every > 0 && step % config.eval_every == 0) {
            let e = trainer.eval()?;
            let m = Metric::Val {
                step,
                loss: e.loss,
                bpb: e.bpb,
            };
            write(&mut file, &m)?;
            metrics.push(m);
            on_event(&Event::Eval { step, stats: e });
            last_eval = Some(e);
        }
        if config.checkpoint_every > 0 && (step % config.checkpoint_every == 0 || last) {
            trainer.save_checkpoint(&ckpt)?;
            on_event(&Event::Checkpoint {
                step,
                path: ckpt.clone(),
            });
        }
    }
    let final_eval = match last_eval {
        Some(e) => e,
        None => trainer.eval()?,
    };
    Ok(FitReport {
        final_eval,
        metrics,
        tokens_per_s: trained_tokens as f64 / train_time.max(1e-9),
        wall_s: start.elapsed().as_secs_f64(),
        steps: trainer.step_index(),
    })
}
