//! `genkidama-hpo`: the Genkidama sweep at laptop scale. A phased autoresearch study over
//! the `tiny` BitNet preset where every trial is one `genkidama train` run with the same
//! wall-clock budget, in the order the paper's sweep found useful: learning rate, then
//! context length, then model shape, then batch and warm-up. Each phase searches its own
//! parameters while the others stay at the best configuration found so far.
//!
//! ```text
//! cargo build --release -p genkidama -p genkidama-hpo
//! target/release/genkidama-hpo --budget-s 45 --trials-per-phase 3 [--sampler auto]
//! ```
//!
//! `--sampler auto|gp|tpe` searches all six parameters jointly with one of autoresearch's
//! samplers instead of the phases (the same number of trials).
//!
//! Writes `<out>/journal.jsonl` (the study; a killed sweep resumes where it stopped),
//! `<out>/trials/<n>/` (each run's model, metrics and logs), `<out>/results.tsv` and
//! `<out>/report.{json,md}`: the start configuration's loss, the best, the improvement,
//! which phase moved it most, and both configurations re-run with another seed so the
//! gain can be compared with run-to-run noise.

use anyhow::{Context, Result, bail};
use autoresearch::{
    AutoSampler, Direction, GpSampler, GridSampler, JournalStorage, OptimizeOptions, ParamValue,
    Params, Phase, PhasedSampler, QmcSampler, Sampler, SearchSpace, Study, TpeSampler, Trial,
    TrialError, TrialHandle, TrialState,
};
use bitnet_model::ModelConfig;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

/// A phased hyperparameter sweep of the tiny BitNet preset.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The `genkidama` binary (default: next to this executable).
    #[arg(long)]
    genkidama: Option<PathBuf>,
    /// Study directory.
    #[arg(long, default_value = "runs/genkidama-hpo")]
    out: PathBuf,
    /// How trials are proposed.
    #[arg(long, value_enum, default_value_t = SamplerKind::Phased)]
    sampler: SamplerKind,
    /// Wall-clock training budget of every trial, in seconds.
    #[arg(long, default_value_t = 45.0)]
    budget_s: f64,
    /// Give every trial this many training tokens instead of a time budget (steps =
    /// tokens / (batch x sequence length)). On a machine shared with other work a time
    /// budget hands each trial whatever the load left it; a token budget is reproducible.
    #[arg(long)]
    budget_tokens: Option<u64>,
    /// Trials per phase (the learning-rate phase also runs the start configuration first).
    #[arg(long, default_value_t = 3)]
    trials_per_phase: usize,
    /// Tokenizer and token shards (shared by all trials; prepared by the first one).
    /// Default: OUT/data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seed of the sampler and of every training run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Skip the re-runs of the start and best configurations with another seed.
    #[arg(long)]
    no_rerun: bool,
}

/// How the study proposes trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum SamplerKind {
    /// Genkidama's order: one phase per lever (learning rate, context length, shape, batch
    /// and warm-up), the other parameters held at the best configuration so far.
    Phased,
    /// autoresearch's default: the GP and the TPE compete on their predictions of trials
    /// they have not seen, and the better one proposes.
    Auto,
    /// A Gaussian process (Matérn 5/2, log expected improvement) over all six parameters.
    Gp,
    /// TPE over all six parameters.
    Tpe,
}

/// The phases, in the order Genkidama's sweep ran its levers.
const PHASES: &[(&str, &[&str])] = &[
    ("learning rate", &["lr"]),
    ("context length", &["seq_len"]),
    ("model shape", &["hidden_size", "n_layers"]),
    ("batch and warm-up", &["batch_size", "warmup_steps"]),
];

fn ints(values: &[i64]) -> Vec<ParamValue> {
    values.iter().map(|&v| ParamValue::Int(v)).collect()
}

/// The searched parameters; everything else is the `tiny` preset.
fn space() -> SearchSpace {
    SearchSpace::new()
        .float("lr", 1e-3, 1.6e-2, true)
        .categorical("seq_len", ints(&[64, 128, 256, 512]))
        .categorical("hidden_size", ints(&[128, 192, 256, 384]))
        .int("n_layers", 2, 6, 1, false)
        .categorical("batch_size", ints(&[4, 8, 16]))
        .int("warmup_steps", 0, 16, 2, false)
}

/// The start configuration: `genkidama train`'s tiny defaults, with the warm-up scaled to
/// the short runs of a sweep (the default 20 of 300 steps).
fn start_params() -> Params {
    [
        ("lr", ParamValue::Float(4e-3)),
        ("seq_len", ParamValue::Int(128)),
        ("hidden_size", ParamValue::Int(256)),
        ("n_layers", ParamValue::Int(4)),
        ("batch_size", ParamValue::Int(8)),
        ("warmup_steps", ParamValue::Int(4)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn phases(trials_per_phase: usize, seed: u64) -> Vec<Phase> {
    PHASES
        .iter()
        .enumerate()
        .map(|(i, (_, params))| {
            // Continuous phases get low-discrepancy points; discrete ones a shuffled grid.
            let sampler: Box<dyn autoresearch::Sampler> = if params == &["lr"] {
                Box::new(QmcSampler::new(seed + i as u64))
            } else {
                Box::new(GridSampler::new(4, seed + i as u64))
            };
            Phase {
                params: params.iter().map(|s| (*s).to_string()).collect(),
                sampler,
                // The first phase also holds trial 0, the start configuration.
                trials: trials_per_phase + usize::from(i == 0),
            }
        })
        .collect()
}

fn int(params: &Params, key: &str) -> Result<i64> {
    match params.get(key) {
        Some(ParamValue::Int(v)) => Ok(*v),
        other => bail!("parameter {key}: expected an integer, got {other:?}"),
    }
}

fn float(params: &Params, key: &str) -> Result<f64> {
    match params.get(key) {
        Some(ParamValue::Float(v)) => Ok(*v),
        Some(ParamValue::Int(v)) => Ok(*v as f64),
        other => bail!("parameter {key}: expected a number, got {other:?}"),
    }
}

/// The tiny preset reshaped by a trial: 64-wide heads (half as many KV heads), a 3x FFN
/// and a context as long as the training sequences.
fn model_config(params: &Params) -> Result<ModelConfig> {
    let mut c = ModelConfig::preset("tiny")?;
    let hidden = usize::try_from(int(params, "hidden_size")?)?;
    c.hidden_size = hidden;
    c.n_heads = (hidden / 64).max(1);
    c.n_kv_heads = (c.n_heads / 2).max(1);
    c.ffn_hidden_size = 3 * hidden;
    c.n_layers = usize::try_from(int(params, "n_layers")?)?;
    c.context_length = usize::try_from(int(params, "seq_len")?)?;
    c.validate()?;
    Ok(c)
}

/// Runs `genkidama train` for one configuration and returns its final validation loss.
struct Runner {
    genkidama: PathBuf,
    data_dir: PathBuf,
    budget: Budget,
}

/// How much training every trial gets.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum Budget {
    /// Seconds of training (`genkidama train --time-budget-s`).
    Seconds(f64),
    /// Training tokens.
    Tokens(u64),
}

impl Budget {
    /// `genkidama train` arguments for a trial with these batch and sequence sizes (at
    /// least two steps past the warm-up, so both schedule stages exist).
    fn args(self, batch: i64, seq_len: i64, warmup: i64) -> Vec<String> {
        match self {
            Self::Seconds(s) => vec!["--time-budget-s".into(), s.to_string()],
            Self::Tokens(t) => {
                let per_step = u64::try_from((batch * seq_len).max(1)).unwrap_or(1);
                let min = u64::try_from(warmup.max(0)).unwrap_or(0) + 2;
                vec!["--steps".into(), (t / per_step).max(min).to_string()]
            }
        }
    }
}

/// What one training run measured.
#[derive(Debug, Clone, Serialize)]
struct RunResult {
    val_loss: f64,
    val_bpb: f64,
    steps: u64,
    tokens: u64,
    wall_s: f64,
}

impl Runner {
    fn train(&self, params: &Params, dir: &Path, seed: u64) -> Result<RunResult> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let model = model_config(params)?;
        let model_path = dir.join("model.toml");
        std::fs::write(&model_path, toml::to_string(&model)?)?;
        let started = Instant::now();
        let output = Command::new(&self.genkidama)
            .arg("train")
            .arg("--model-config")
            .arg(&model_path)
            .args(["--lr", &float(params, "lr")?.to_string()])
            .args(["--seq-len", &int(params, "seq_len")?.to_string()])
            .args(["--batch-size", &int(params, "batch_size")?.to_string()])
            .args(["--warmup-steps", &int(params, "warmup_steps")?.to_string()])
            .args(self.budget.args(
                int(params, "batch_size")?,
                int(params, "seq_len")?,
                int(params, "warmup_steps")?,
            ))
            .args(["--seed", &seed.to_string()])
            .args(["--eval-every", "0", "--checkpoint-every", "0"])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--out")
            .arg(dir)
            .output()
            .with_context(|| format!("running {}", self.genkidama.display()))?;
        std::fs::write(dir.join("stdout.log"), &output.stdout)?;
        std::fs::write(dir.join("stderr.log"), &output.stderr)?;
        if !output.status.success() {
            bail!(
                "genkidama train failed ({}); see {}",
                output.status,
                dir.join("stderr.log").display()
            );
        }
        let metrics =
            bitnet_model::train::fit::read_metrics(&dir.join("metrics.jsonl"), usize::MAX)?;
        let (mut val, mut steps, mut tokens) = (None, 0, 0);
        for m in metrics {
            match m {
                bitnet_model::train::fit::Metric::Val { loss, bpb, .. } => val = Some((loss, bpb)),
                bitnet_model::train::fit::Metric::Train {
                    step, tokens: t, ..
                } => {
                    steps = step as u64;
                    tokens = t;
                }
            }
        }
        let (val_loss, val_bpb) =
            val.with_context(|| format!("no validation record in {}", dir.display()))?;
        Ok(RunResult {
            val_loss,
            val_bpb,
            steps,
            tokens,
            wall_s: started.elapsed().as_secs_f64(),
        })
    }
}

/// One phase's effect on the best validation loss.
#[derive(Debug, Serialize)]
struct PhaseSummary {
    name: String,
    params: Vec<String>,
    trials: Vec<u64>,
    best_before: Option<f64>,
    best_after: Option<f64>,
    improvement: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    sampler: SamplerKind,
    budget: Budget,
    seed: u64,
    trials: usize,
    start_val_loss: f64,
    best_val_loss: f64,
    improvement_nats: f64,
    best_params: Params,
    best_trial: u64,
    phases: Vec<PhaseSummary>,
    phase_that_moved_most: String,
    rerun_seed: Option<u64>,
    start_rerun_val_loss: Option<f64>,
    best_rerun_val_loss: Option<f64>,
    wall_s: f64,
}

fn phase_summaries(trials: &[Trial], trials_per_phase: usize) -> Vec<PhaseSummary> {
    let mut out = Vec::new();
    let mut best: Option<f64> = None;
    let mut begin = 0u64;
    for (i, (name, params)) in PHASES.iter().enumerate() {
        let n = (trials_per_phase + usize::from(i == 0)) as u64;
        let numbers: Vec<u64> = (begin..begin + n).collect();
        let before = best;
        for t in trials.iter().filter(|t| numbers.contains(&t.number)) {
            if t.state == TrialState::Complete
                && let Some(v) = t.value().filter(|v| v.is_finite())
            {
                best = Some(best.map_or(v, |b: f64| b.min(v)));
            }
        }
        out.push(PhaseSummary {
            name: (*name).to_string(),
            params: params.iter().map(|s| (*s).to_string()).collect(),
            trials: numbers,
            best_before: before,
            best_after: best,
            // The first phase is measured against the start configuration (trial 0).
            improvement: match (before, best) {
                (Some(b), Some(a)) => b - a,
                (None, Some(a)) => trials
                    .iter()
                    .find(|t| t.number == 0)
                    .and_then(Trial::value)
                    .map_or(0.0, |s| s - a),
                _ => 0.0,
            },
        });
        begin += n;
    }
    out
}

fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let title = match r.sampler {
        SamplerKind::Phased => "phased sweep",
        SamplerKind::Auto => "joint search (auto sampler)",
        SamplerKind::Gp => "joint search (GP sampler)",
        SamplerKind::Tpe => "joint search (TPE sampler)",
    };
    let _ = writeln!(s, "# genkidama-hpo: {title} of the tiny preset\n");
    let budget = match r.budget {
        Budget::Seconds(b) => format!("{b:.0} s of training"),
        Budget::Tokens(t) => format!("{t} training tokens"),
    };
    let _ = writeln!(s, "{} trials, {budget} each, seed {}.\n", r.trials, r.seed);
    let _ = writeln!(s, "| | val loss (nats) |\n|---|---|");
    let _ = writeln!(
        s,
        "| start configuration (trial 0) | {:.4} |",
        r.start_val_loss
    );
    let _ = writeln!(
        s,
        "| best (trial {}) | {:.4} |",
        r.best_trial, r.best_val_loss
    );
    let _ = writeln!(s, "| improvement | {:.4} |", r.improvement_nats);
    if let (Some(a), Some(b), Some(seed)) =
        (r.start_rerun_val_loss, r.best_rerun_val_loss, r.rerun_seed)
    {
        let _ = writeln!(s, "| start re-run, seed {seed} | {a:.4} |");
        let _ = writeln!(s, "| best re-run, seed {seed} | {b:.4} |");
    }
    let _ = writeln!(
        s,
        "\n| phase | parameters | best before | best after | gain (nats) |\n|---|---|---|---|---|"
    );
    for p in &r.phases {
        let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.4}"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.4} |",
            p.name,
            p.params.join(", "),
            f(p.best_before),
            f(p.best_after),
            p.improvement
        );
    }
    let _ = writeln!(
        s,
        "\nPhase that moved the loss most: **{}**. Best parameters: `{}`.",
        r.phase_that_moved_most,
        serde_json::to_string(&r.best_params).unwrap_or_default()
    );
    s
}

/// The sweep's bar over trials on stderr, with an ETA (docs/cli.md, section 6); indicatif
/// hides it when stderr is not a terminal.
fn trial_bar(len: u64, done: u64) -> ProgressBar {
    let bar = ProgressBar::new(len).with_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({eta} left) {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix("trials");
    bar.set_position(done);
    // The ETA from this process's trials only, not those a resumed sweep found done.
    bar.reset_eta();
    bar
}

/// One log line above the bar, or a plain stderr line where it is hidden (indicatif drops
/// `println` on a hidden bar).
fn log(bar: &ProgressBar, line: &str) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn genkidama_binary(arg: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = arg {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let beside = exe.with_file_name("genkidama");
    if beside.exists() {
        return Ok(beside);
    }
    bail!(
        "no genkidama binary at {}: build it with `cargo build --release -p genkidama` or pass --genkidama PATH",
        beside.display()
    )
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let runner = Arc::new(Runner {
        genkidama: genkidama_binary(args.genkidama.as_deref())?,
        data_dir: args
            .data_dir
            .clone()
            .unwrap_or_else(|| args.out.join("data")),
        budget: match args.budget_tokens {
            Some(t) => Budget::Tokens(t),
            None => Budget::Seconds(args.budget_s),
        },
    });
    std::fs::create_dir_all(&args.out)?;
    let storage = Arc::new(JournalStorage::open(args.out.join("journal.jsonl"))?);
    let total: usize = phases(args.trials_per_phase, args.seed)
        .iter()
        .map(|p| p.trials)
        .sum();
    let sampler: Box<dyn Sampler> = match args.sampler {
        SamplerKind::Phased => Box::new(PhasedSampler::new(
            phases(args.trials_per_phase, args.seed),
            Some(start_params()),
        )),
        SamplerKind::Auto => Box::new(AutoSampler::default()),
        SamplerKind::Gp => Box::new(GpSampler::default()),
        SamplerKind::Tpe => Box::new(TpeSampler::default()),
    };
    let study = Study::builder(space())
        .name("genkidama-hpo")
        .direction(Direction::Minimize)
        .sampler_boxed(sampler)
        .storage(storage)
        .seed(args.seed)
        .build()?;
    if study.trials()?.is_empty() {
        study.enqueue(start_params())?;
    }
    let done = study
        .trials()?
        .iter()
        .filter(|t| t.state != TrialState::Running)
        .count();
    let trials_dir = args.out.join("trials");
    let seed = args.seed;
    let r = Arc::clone(&runner);
    // Every trial of the study, then the two re-runs; a resumed sweep starts at `done`.
    let reruns = if args.no_rerun { 0 } else { 2 };
    let bar = trial_bar((total.max(done) + reruns) as u64, done as u64);
    let b = bar.clone();
    let objective = move |t: &TrialHandle| -> Result<f64, TrialError> {
        let dir = trials_dir.join(t.number().to_string());
        b.set_message(format!("trial {}", t.number()));
        let res = r.train(t.params(), &dir, seed);
        // A failed trial is done too (the study records it and goes on).
        b.inc(1);
        let res = res.map_err(|e| TrialError::Failed(format!("{e:#}")))?;
        log(
            &b,
            &format!(
                "trial {}: val loss {:.4} after {} steps ({} tokens) {}",
                t.number(),
                res.val_loss,
                res.steps,
                res.tokens,
                serde_json::to_string(t.params()).unwrap_or_default()
            ),
        );
        t.set_user_attr(
            "description",
            serde_json::json!(format!("{} steps", res.steps)),
        )?;
        t.set_user_attr("result", serde_json::to_value(&res)?)?;
        Ok(res.val_loss)
    };
    study.optimize(
        Arc::new(objective),
        &OptimizeOptions::trials(total.saturating_sub(done)),
    )?;

    let trials = study.trials()?;
    std::fs::write(
        args.out.join("results.tsv"),
        autoresearch::report::results_table(&trials, Direction::Minimize),
    )?;
    let start = trials
        .iter()
        .find(|t| t.number == 0)
        .and_then(Trial::value)
        .context("the start configuration (trial 0) did not complete")?;
    let best = study.best_trial()?.context("no trial completed")?;
    let best_value = best.value().context("best trial has no value")?;
    // Per-phase gains exist only for the phased search (the others search jointly).
    let phases = if args.sampler == SamplerKind::Phased {
        phase_summaries(&trials, args.trials_per_phase)
    } else {
        Vec::new()
    };
    let most = phases
        .iter()
        .max_by(|a, b| a.improvement.total_cmp(&b.improvement))
        .map(|p| p.name.clone())
        .unwrap_or_default();
    let (mut start_rerun, mut best_rerun, mut rerun_seed) = (None, None, None);
    if !args.no_rerun {
        let s = args.seed + 1;
        rerun_seed = Some(s);
        bar.set_message("re-run of the start configuration");
        start_rerun = Some(
            runner
                .train(&start_params(), &args.out.join("rerun/start"), s)?
                .val_loss,
        );
        bar.inc(1);
        bar.set_message("re-run of the best configuration");
        best_rerun = Some(
            runner
                .train(&best.params, &args.out.join("rerun/best"), s)?
                .val_loss,
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    let report = Report {
        sampler: args.sampler,
        budget: runner.budget,
        seed: args.seed,
        trials: trials.len(),
        start_val_loss: start,
        best_val_loss: best_value,
        improvement_nats: start - best_value,
        best_params: best.params.clone(),
        best_trial: best.number,
        phases,
        phase_that_moved_most: most,
        rerun_seed,
        start_rerun_val_loss: start_rerun,
        best_rerun_val_loss: best_rerun,
        wall_s: started.elapsed().as_secs_f64(),
    };
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(args.out.join("report.md"), &md)?;
    println!("{md}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_of_the_space_is_a_valid_model() {
        let space = space();
        for hidden in [128, 192, 256, 384] {
            for layers in 2..=6 {
                for seq in [64, 128, 256, 512] {
                    let mut p = start_params();
                    p.insert("hidden_size".into(), ParamValue::Int(hidden));
                    p.insert("n_layers".into(), ParamValue::Int(layers));
                    p.insert("seq_len".into(), ParamValue::Int(seq));
                    let c = model_config(&p).unwrap();
                    assert_eq!(c.hidden_size % c.n_heads, 0);
                    assert_eq!(c.context_length, seq as usize);
                }
            }
        }
        assert_eq!(space.params.len(), start_params().len());
    }

    #[test]
    fn token_budgets_become_steps() {
        assert_eq!(Budget::Tokens(24_576).args(8, 128, 4), ["--steps", "24"]);
        assert_eq!(Budget::Tokens(24_576).args(4, 64, 4), ["--steps", "96"]);
        // Never fewer steps than the warm-up plus both schedule stages.
        assert_eq!(Budget::Tokens(10).args(8, 128, 4), ["--steps", "6"]);
        assert_eq!(
            Budget::Seconds(30.0).args(8, 128, 4),
            ["--time-budget-s", "30"]
        );
    }

    #[test]
    fn phases_cover_the_space_once() {
        let mut names: Vec<&str> = PHASES.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        names.sort_unstable();
        let mut all: Vec<String> = space().params.iter().map(|p| p.name.clone()).collect();
        all.sort();
        assert_eq!(names, all);
        let p = phases(3, 0);
        assert_eq!(p.iter().map(|p| p.trials).sum::<usize>(), 13);
    }

    #[test]
    fn phase_gains_are_measured_from_the_start_configuration() {
        let trial = |number: u64, v: f64| {
            let mut t = Trial::new(number, start_params(), "test");
            t.state = TrialState::Complete;
            t.values = Some(vec![v]);
            t.finished_at = Some(1.0);
            t
        };
        // Phase 1 = trials 0..4 (0 is the start), phase 2 = 4..7, ...
        let trials = vec![
            trial(0, 6.0),
            trial(1, 5.8),
            trial(2, 6.1),
            trial(3, 5.9),
            trial(4, 5.5),
            trial(5, 5.9),
            trial(6, 5.7),
        ];
        let s = phase_summaries(&trials, 3);
        assert!((s[0].improvement - 0.2).abs() < 1e-12);
        assert!((s[1].improvement - 0.3).abs() < 1e-12);
        assert_eq!(s[2].improvement, 0.0);
    }
}
