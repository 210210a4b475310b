//! `diloco worker` / `diloco coordinator`: DiLoCo across processes (or machines) that
//! share an object store (`file:///dir` or `s3://bucket/prefix`).
//!
//! The model trained is the crate's deterministic linear-regression toy, generated from
//! `--data-seed` on every process, so a run needs nothing but the store.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use diloco::aggregate::{Aggregator, ScreenConfig};
use diloco::codec::Codec;
use diloco::exchange::store::ObjectStoreExchange;
use diloco::outer::OuterOptimizer;
use diloco::protocol::{Coordinator, CoordinatorConfig, WorkerClient};
use diloco::toy::{LinearEvaluator, LinearTrainer, RegressionData};
use diloco::trainer::{LocalTrainer, LossEvaluator};
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "diloco",
    about = "DiLoCo worker and coordinator over object storage"
)]
struct Cli {
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
    /// Toy model: input width.
    #[arg(long, default_value_t = 16)]
    dim: usize,
    /// Toy model: examples generated.
    #[arg(long, default_value_t = 2000)]
    examples: usize,
    /// Toy model: data seed (must be the same on every process).
    #[arg(long, default_value_t = 7)]
    data_seed: u64,
    /// Poll interval in milliseconds.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
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
        /// Inner SGD learning rate.
        #[arg(long, default_value_t = 0.05)]
        lr: f32,
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
        #[arg(long, default_value_t = 1)]
        min_workers: usize,
    },
}

fn data(c: &Common) -> (RegressionData, RegressionData) {
    RegressionData::generate(c.examples + c.examples / 4, c.dim, c.data_seed).split(c.examples)
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
            lr,
            join_at,
            leave_after,
            step_delay_ms,
            timeout_ms,
        } => {
            let ex = ObjectStoreExchange::open(&common.store)?;
            let (train, held) = data(&common);
            let mut trainer = LinearTrainer::new(
                train.shard(id as usize % shards.max(1), shards),
                held,
                lr,
                8,
                u64::from(id),
            );
            let poll = Duration::from_millis(common.poll_ms);
            let timeout = Duration::from_millis(timeout_ms);
            let mut client = WorkerClient::join(&ex, id, codec, join_at, timeout, poll)
                .with_context(|| format!("worker {id} joining at round {join_at}"))?;
            trainer.set_params(client.anchor())?;
            if let Some(after) = leave_after {
                client.leave(&ex, after)?;
            }
            let last = leave_after.unwrap_or(common.rounds).min(common.rounds);
            for round in join_at.max(1)..=last {
                for _ in 0..inner_steps {
                    trainer.train_step()?;
                    if step_delay_ms > 0 {
                        std::thread::sleep(Duration::from_millis(step_delay_ms));
                    }
                }
                client.submit(&ex, round, 1.0, &trainer.params()?)?;
                let (manifest, global) = client.receive(&ex, round, timeout, poll)?;
                trainer.set_params(&global)?;
                let used = manifest.accepted.iter().any(|a| a.worker == id);
                eprintln!("worker {id}: round {round} committed (mine accepted: {used})");
            }
            println!(
                "{}",
                serde_json::json!({"worker": id, "bytes_sent": client.bytes_sent, "bytes_received": client.bytes_received})
            );
        }
        Cmd::Coordinator {
            common,
            deadline_ms,
            outer,
            aggregator,
            step_codec,
            score,
            min_workers,
        } => {
            let ex = ObjectStoreExchange::open(&common.store)?;
            let (train, held) = data(&common);
            let init = LinearTrainer::new(train, held.clone(), 0.0, 1, 0).params()?;
            let cfg = CoordinatorConfig {
                outer,
                aggregator,
                screen: ScreenConfig::default(),
                step_codec,
                checkpoint_every: 1,
            };
            let mut eval = LinearEvaluator(held.clone());
            let initial_loss = eval.loss(&init)?;
            let mut coord = Coordinator::start(&ex, init, cfg)?;
            if score {
                coord = coord.with_scorer(Box::new(LinearEvaluator(held)));
            }
            let poll = Duration::from_millis(common.poll_ms);
            let start = std::time::Instant::now();
            while diloco::protocol::members_for(&ex, 1)?.len() < min_workers
                && start.elapsed() < Duration::from_millis(deadline_ms)
            {
                std::thread::sleep(poll);
            }
            let mut manifests = Vec::new();
            for round in 1..=common.rounds {
                let m =
                    coord.run_round(&ex, round, None, Duration::from_millis(deadline_ms), poll)?;
                eprintln!(
                    "coordinator: round {round}: accepted {:?}, missing {:?}, rejected {}",
                    m.accepted.iter().map(|a| a.worker).collect::<Vec<_>>(),
                    m.missing,
                    m.rejected.len()
                );
                manifests.push(m);
            }
            let final_loss = eval.loss(coord.global())?;
            println!(
                "{}",
                serde_json::json!({"initial_loss": initial_loss, "final_loss": final_loss, "manifests": manifests})
            );
        }
    }
    Ok(())
}
