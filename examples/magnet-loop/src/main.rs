//! `magnet-loop`: one run of MAGNET's whole loop in one process. DiLoCo workers train a
//! BitNet model on their data shards; every round each worker's encoded pseudo-gradient is
//! an artifact whose hash it signs into the incentive ledger; validators score each
//! contribution by measured loss improvement on held-out windows chosen after the commit
//! and sign their evaluations; the ledger slashes copies and pays by the stake-weighted
//! median score; the unslashed updates are merged with the outer Nesterov step. At the end the
//! model is saved and exported to GGUF, the ledger is reopened and verified from its files,
//! and `report.json` / `report.md` show the loss curve, bytes, scores, balances and slashes.
//!
//! ```text
//! magnet-loop run --model tiny --workers 3 --validators 3 --rounds 4 --inner-steps 20 --copycat
//! ```

mod r#loop;
mod report;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use diloco::codec::Codec;
use std::path::PathBuf;

/// MAGNET's whole loop: DiLoCo + signed contributions + validator scoring + ledger
/// settlement + GGUF export.
#[derive(Parser, Debug)]
#[command(name = "magnet-loop", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the loop and writes OUT/ledger, OUT/model, the GGUF file and OUT/report.{json,md}.
    Run(RunArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Model preset (`tiny`, ...) or a config TOML file.
    #[arg(long, default_value = "tiny")]
    model: String,
    /// Honest DiLoCo workers.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Validators (equal stake).
    #[arg(long, default_value_t = 3)]
    validators: usize,
    /// Outer rounds.
    #[arg(long, default_value_t = 4)]
    rounds: u64,
    /// Inner steps per round (H).
    #[arg(long, default_value_t = 20)]
    inner_steps: u64,
    /// Uplink codec: f32, f16, int8:B, q4:B, topk:D.
    #[arg(long, default_value = "f32")]
    codec: String,
    /// Corpus directory of UTF-8 *.txt files (else MAGNET_CORPUS, else the shipped corpus).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Seed of keys, initialisation and data order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Adds a worker that resubmits a copy of worker 0's update (it must be slashed).
    #[arg(long)]
    copycat: bool,
    /// Inner batch size.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Inner sequence length (clipped to the model's context).
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Inner peak learning rate (AdamW).
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Outer Nesterov learning rate.
    #[arg(long, default_value_t = 0.7)]
    outer_lr: f32,
    /// Outer Nesterov momentum.
    #[arg(long, default_value_t = 0.9)]
    outer_momentum: f32,
    /// Held-out windows per validator measurement.
    #[arg(long, default_value_t = 8)]
    heldout_windows: usize,
    /// Windows of the fixed validation loss.
    #[arg(long, default_value_t = 16)]
    eval_windows: usize,
    /// Sketch overlap (ppm) from which a later contribution counts as a copy.
    #[arg(long, default_value_t = 600_000)]
    copy_threshold_ppm: u32,
    /// Units minted in round 1.
    #[arg(long, default_value_t = 1_000_000)]
    emission: u64,
    /// Rounds per emission halving.
    #[arg(long, default_value_t = 2)]
    halving_rounds: u64,
    /// Which contributions the outer step merges: every unslashed one (paid by score all the
    /// same; the default: merging only the paid ones ended 0.78 nats worse on `tiny`), or
    /// only those the ledger paid.
    #[arg(long, value_enum, default_value_t = r#loop::Merge::Unslashed)]
    merge: r#loop::Merge,
    /// What validators measure: each contribution's marginal value to the merged outer step
    /// (leave-one-out; the default), or the contribution alone (its local weights vs the
    /// global model, which scored most honest updates negative after round 1 on `tiny`).
    #[arg(long, value_enum, default_value_t = r#loop::Score::Marginal)]
    score: r#loop::Score,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn run(a: RunArgs) -> Result<()> {
    let model = diloco::bitnet::model_config(&a.model)?;
    let codec: Codec = a.codec.parse().context("--codec")?;
    let out = a.out.unwrap_or_else(|| PathBuf::from("runs/magnet-loop"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // Absolute paths in the report.
    let out = out
        .canonicalize()
        .with_context(|| format!("resolving {}", out.display()))?;
    let cfg = r#loop::RunConfig {
        model,
        model_name: a.model,
        workers: a.workers,
        validators: a.validators,
        rounds: a.rounds,
        inner_steps: a.inner_steps,
        codec,
        corpus: a.corpus,
        seed: a.seed,
        copycat: a.copycat,
        batch_size: a.batch_size,
        seq_len: a.seq_len,
        lr: a.lr,
        outer_lr: a.outer_lr,
        outer_momentum: a.outer_momentum,
        heldout_windows: a.heldout_windows,
        eval_windows: a.eval_windows,
        copy_threshold_ppm: a.copy_threshold_ppm,
        emission: a.emission,
        halving_rounds: a.halving_rounds,
        merge: a.merge,
        score: a.score,
        out: out.clone(),
    };
    let report = r#loop::run(&cfg)?;
    report::write(&report, &out)?;
    print!("{}", report::markdown(&report));
    let (json, _) = r#loop::report_paths(&out);
    eprintln!("wrote {}", json.display());
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(a) => run(a),
    }
}
