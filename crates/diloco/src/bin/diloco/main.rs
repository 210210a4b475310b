//! `diloco worker` / `diloco coordinator`: DiLoCo across processes (or machines) that
//! share an object store (`file:///dir` or `s3://bucket/prefix`).
//!
//! `--preset toy` (the default) trains the crate's deterministic linear-regression toy,
//! generated from `--data-seed` on every process, so a run needs nothing but the store.
//! With the `bitnet` feature, `--preset tiny` (or another bitnet-model preset) or
//! `--model-config FILE` (a model-config TOML) trains a BitNet transformer with
//! bitnet-model's trainer (inner AdamW, two-stage schedule over `rounds x inner-steps`
//! steps) on a dataset directory that `diloco prepare` builds once from a text corpus;
//! worker N trains on shard `N % shards` of the training tokens, the coordinator scores
//! the global model on the held-out split after every round and can save it as a model
//! directory.
//!
//! Each process prints a short summary on stdout, or with `--json` one JSON document
//! (workers: bytes; coordinator: losses, bytes, manifests; prepare: the dataset), and
//! progress on stderr.

mod model;
mod progress;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use diloco::aggregate::{Aggregator, ScreenConfig};
use diloco::codec::Codec;
use diloco::exchange::Exchange;
use diloco::exchange::store::ObjectStoreExchange;
use diloco::outer::OuterOptimizer;
use diloco::protocol::{Coordinator, CoordinatorConfig, WorkerClient};
use model::{ModelArgs, WorkerOpts};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "diloco",
    version,
    about = "DiLoCo worker and coordinator over object storage"
)]
struct Cli {
    /// Print the result as one JSON document on stdout (and no progress bar on stderr).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Store URL: file:///abs/dir or s3://bucket/prefix (S3 settings from AWS_* and
    /// MAGNET_S3_ENDPOINT).
    #[arg(long)]
    store: String,
    /// Last round.
    #[arg(long, default_value_t = 5)]
    rounds: u64,
    /// Poll interval in milliseconds.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Trains H inner steps per round on shard `id % shards` and exchanges pseudo-gradients.
    Worker {
        #[command(flatten)]
        common: Common,
        /// Worker id.
        #[arg(long)]
        id: u32,
        /// Number of data shards.
        #[arg(long, default_value_t = 4)]
        shards: usize,
        /// Inner steps per round (H).
        #[arg(long, default_value_t = 20)]
        inner_steps: u64,
        /// Uplink codec: f32, f16, int8[:block], q4[:block], topk:density.
        #[arg(long, default_value = "f32")]
        codec: Codec,
        /// Keep what the uplink codec loses and add it to the next pseudo-gradient.
        #[arg(long)]
        error_feedback: bool,
        /// Inner learning rate (toy: SGD, default 0.05; BitNet: peak of the schedule,
        /// default 3e-3, later stages scaled alike).
        #[arg(long)]
        lr: Option<f32>,
        /// Examples (toy, default 8) or sequences (BitNet, default 4) per inner step, per
        /// worker.
        #[arg(long = "batch-size", alias = "batch")]
        batch: Option<usize>,
        /// BitNet: warm-up steps (default: a tenth of rounds x inner steps).
        #[arg(long)]
        warmup: Option<usize>,
        /// First round to contribute to (joining a running job).
        #[arg(long, default_value_t = 1)]
        join_at: u64,
        /// Leave after this round.
        #[arg(long)]
        leave_after: Option<u64>,
        /// Sleep this long after each inner step (to make a worker slow).
        #[arg(long, default_value_t = 0)]
        step_delay_ms: u64,
        /// How long to wait for the global weights and each manifest.
        #[arg(long, default_value_t = 120_000)]
        timeout_ms: u64,
    },
    /// Publishes the initial weights, then per round collects updates until every member
    /// delivered or the deadline passed, screens, aggregates and publishes the step.
    Coordinator {
        #[command(flatten)]
        common: Common,
        /// Per-round deadline in milliseconds, counted from the start of collection.
        #[arg(long, default_value_t = 30_000)]
        deadline_ms: u64,
        /// Also close a round this many milliseconds after its first update arrived
        /// (so a dead worker costs this, not the whole deadline, per round).
        #[arg(long)]
        grace_ms: Option<u64>,
        /// Outer optimizer: nesterov[:lr[:momentum]], sgd[:lr], average.
        #[arg(long, default_value = "nesterov")]
        outer: OuterOptimizer,
        /// Aggregator: mean, median, trimmed:F, clip:F.
        #[arg(long, default_value = "mean")]
        aggregator: Aggregator,
        /// Downlink codec of the outer step.
        #[arg(long, default_value = "f32")]
        step_codec: Codec,
        /// Score each contribution on held-out data.
        #[arg(long)]
        score: bool,
        /// Before round 1, wait (up to the deadline) for this many workers to join.
        #[arg(long, visible_alias = "workers", default_value_t = 1)]
        min_workers: usize,
        /// BitNet: held-out windows of `seq_len + 1` tokens per evaluation.
        #[arg(long, default_value_t = 32)]
        eval_windows: usize,
        /// Evaluate the global model every this many rounds (0: only before and after).
        #[arg(long, default_value_t = 1)]
        eval_every: u64,
        /// BitNet: write the final global model here (`config.toml`, `model.safetensors`,
        /// `tokenizer.json`: the model directory bitnet-model's tools read).
        #[arg(long)]
        save: Option<PathBuf>,
        /// Continue the run already in `--store` (after a crash or a kill): from its last
        /// committed round, with the same model versions; starts a new run when the store
        /// is empty.
        #[arg(long)]
        resume: bool,
    },
    /// BitNet: builds `--data-dir` (tokenizer with the model's vocabulary, train/val token
    /// shards) from a text corpus; run it once before starting workers on one machine.
    Prepare {
        #[command(flatten)]
        model: ModelArgs,
        /// Corpus directory of `*.txt` files (default: MAGNET_CORPUS, then the shipped corpus).
        #[arg(long)]
        corpus: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Worker {
            common,
            id,
            shards,
            inner_steps,
            codec,
            error_feedback,
            lr,
            batch,
            warmup,
            join_at,
            leave_after,
            step_delay_ms,
            timeout_ms,
        } => {
            let last = leave_after.unwrap_or(common.rounds).min(common.rounds);
            let rounds = (last + 1).saturating_sub(join_at.max(1));
            let opts = WorkerOpts {
                id,
                shards,
                batch,
                lr,
                warmup,
                total_steps: usize::try_from(rounds * inner_steps)?,
            };
            let mut trainer = model::worker_trainer(&common.model, &opts)?;
            let ex = ObjectStoreExchange::open(&common.store)?;
            let poll = Duration::from_millis(common.poll_ms);
            let timeout = Duration::from_millis(timeout_ms);
            let mut client = WorkerClient::join(&ex, id, codec, join_at, timeout, poll)
                .with_context(|| format!("worker {id} joining at round {join_at}"))?;
            client.error_feedback = error_feedback;
            trainer.set_params(client.anchor())?;
            if let Some(after) = leave_after {
                client.leave(&ex, after)?;
            }
            let mut train_loss = Vec::new();
            let bar = progress::bar(rounds * inner_steps, &format!("worker {id}"), cli.json);
            for round in join_at.max(1)..=last {
                let mut sum = 0.0f64;
                for _ in 0..inner_steps {
                    sum += f64::from(trainer.train_step()?);
                    bar.inc(1);
                    if step_delay_ms > 0 {
                        std::thread::sleep(Duration::from_millis(step_delay_ms));
                    }
                }
                let mean = sum / inner_steps.max(1) as f64;
                train_loss.push(mean);
                // Shown while the worker waits for the round to close.
                bar.set_message(format!("round {round}: train loss {mean:.4}"));
                let sent = client.submit(&ex, round, 1.0, &trainer.params()?)?;
                let (manifest, global) = client.receive(&ex, round, timeout, poll)?;
                trainer.set_params(&global)?;
                let used = manifest.accepted.iter().any(|a| a.worker == id);
                progress::log(
                    &bar,
                    &format!(
                        "worker {id}: round {round} committed (train loss {mean:.4}, sent {sent} bytes, mine accepted: {used})"
                    ),
                );
            }
            bar.finish_and_clear();
            if cli.json {
                let doc = serde_json::json!({"worker": id, "bytes_sent": client.bytes_sent,
                    "bytes_received": client.bytes_received, "train_loss": train_loss});
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!(
                    "worker {id}: {} rounds, sent {} bytes, received {} bytes, last train loss {}",
                    train_loss.len(),
                    client.bytes_sent,
                    client.bytes_received,
                    train_loss
                        .last()
                        .map_or_else(|| "-".into(), |l| format!("{l:.4}")),
                );
            }
        }
        Cmd::Coordinator {
            common,
            deadline_ms,
            grace_ms,
            outer,
            aggregator,
            step_codec,
            score,
            min_workers,
            eval_windows,
            eval_every,
            save,
            resume,
        } => {
            let side = model::coordinator_side(&common.model, eval_windows, score)?;
            let mut eval = side.eval;
            let ex = ObjectStoreExchange::open(&common.store)?;
            let cfg = CoordinatorConfig {
                outer,
                aggregator,
                screen: ScreenConfig::default(),
                step_codec,
                checkpoint_every: 1,
            };
            let stored = resume && ex.get(&diloco::protocol::global_key(0))?.is_some();
            let (mut coord, done) = if stored {
                let (c, done) = Coordinator::resume(&ex, cfg)
                    .with_context(|| format!("resuming the run in {}", common.store))?;
                eprintln!("coordinator: resumed after round {done}");
                (c, done)
            } else {
                (Coordinator::start(&ex, side.init, cfg)?, 0)
            };
            let initial_loss = eval.loss(coord.global())?;
            eprintln!("coordinator: val loss {initial_loss:.4} after round {done}");
            if let Some(scorer) = side.scorer {
                coord = coord.with_scorer(scorer);
            }
            let poll = Duration::from_millis(common.poll_ms);
            let deadline = Duration::from_millis(deadline_ms);
            let start = Instant::now();
            while !stored
                && diloco::protocol::members_for(&ex, 1)?.len() < min_workers
                && start.elapsed() < deadline
            {
                std::thread::sleep(poll);
            }
            let bar = progress::bar(common.rounds.saturating_sub(done), "coordinator", cli.json);
            bar.set_message(format!("val loss {initial_loss:.4}"));
            let mut manifests = Vec::new();
            let mut curve = vec![serde_json::json!({"round": done, "val_loss": initial_loss})];
            let (mut uplink, mut step_bytes) = (0u64, 0u64);
            // The last round is always evaluated: this ends as the final model's loss.
            let mut final_loss = initial_loss;
            for round in done + 1..=common.rounds {
                let grace = grace_ms.map(Duration::from_millis);
                let (members, objects) =
                    coord.collect_with_grace(&ex, round, deadline, grace, poll)?;
                let m = coord.finish_round(&ex, round, None, &members, objects)?;
                let up: u64 = m.accepted.iter().map(|a| a.bytes as u64).sum();
                uplink += up;
                step_bytes += m.step_bytes as u64;
                let val = if round == common.rounds
                    || (eval_every > 0 && round.is_multiple_of(eval_every))
                {
                    let v = eval.loss(coord.global())?;
                    final_loss = v;
                    bar.set_message(format!("val loss {v:.4}"));
                    curve.push(serde_json::json!({"round": round, "val_loss": v}));
                    format!("{v:.4}")
                } else {
                    "-".into()
                };
                progress::log(
                    &bar,
                    &format!(
                        "coordinator: round {round}: accepted {:?}, missing {:?}, rejected {}, up {up} bytes, step {} bytes, val loss {val} ({:.1} s)",
                        m.accepted.iter().map(|a| a.worker).collect::<Vec<_>>(),
                        m.missing,
                        m.rejected.len(),
                        m.step_bytes,
                        start.elapsed().as_secs_f64()
                    ),
                );
                bar.inc(1);
                manifests.push(m);
            }
            bar.finish_and_clear();
            if let Some(dir) = &save {
                model::save(&common.model, dir, coord.global())?;
                eprintln!("coordinator: saved the global model to {}", dir.display());
            }
            let seconds = start.elapsed().as_secs_f64();
            if cli.json {
                let doc = serde_json::json!({
                    "setup": side.describe,
                    "resumed_after": stored.then_some(done),
                    "initial_loss": initial_loss,
                    "final_loss": final_loss,
                    "val_curve": curve,
                    "uplink_bytes": uplink,
                    "step_bytes": step_bytes,
                    "seconds": seconds,
                    "saved": save,
                    "manifests": manifests,
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                println!(
                    "coordinator: {}, rounds {}..={}: val loss {initial_loss:.4} -> {final_loss:.4}, uplink {uplink} bytes, steps {step_bytes} bytes, {seconds:.1} s",
                    model::label(&common.model),
                    done + 1,
                    common.rounds,
                );
            }
        }
        Cmd::Prepare { model, corpus } => {
            let p = model::prepare(&model, corpus.as_deref())?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                println!(
                    "{}: {} train tokens, {} val tokens, vocabulary {}",
                    p.data_dir.display(),
                    p.train_tokens,
                    p.val_tokens,
                    p.vocab_size
                );
            }
        }
    }
    Ok(())
}
