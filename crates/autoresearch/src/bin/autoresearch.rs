//! `autoresearch`: run any program as a hyperparameter-search objective.
//!
//! ```text
//! autoresearch run --space space.toml --trials 50 --jobs 2 -- ./train --lr {lr} --ctx {ctx}
//! autoresearch status | best | export --format csv | resume --trials 20
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use autoresearch::command::{CommandObjective, MetricSource};
use autoresearch::report::{export_csv, results_table};
use autoresearch::{
    CmaEsSampler, Direction, GridSampler, HyperbandPruner, JournalStorage, MedianPruner, NopPruner,
    OptimizeOptions, Pruner, QmcSampler, RandomSampler, Sampler, SearchSpace, Study,
    SuccessiveHalvingPruner, TpeSampler, TrialState,
};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "autoresearch",
    version,
    about = "Hyperparameter search for any program"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum SamplerKind {
    Tpe,
    Random,
    Qmc,
    Cmaes,
    Grid,
}

#[derive(Clone, Copy, ValueEnum)]
enum PrunerKind {
    None,
    Median,
    Asha,
    Hyperband,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a study and run trials.
    Run {
        /// Search space (TOML or JSON).
        #[arg(long)]
        space: PathBuf,
        /// Trials to run.
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Parallel worker processes.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Study directory (journal, per-trial logs, results table).
        #[arg(long, default_value = "autoresearch-study")]
        study: PathBuf,
        /// Sampler.
        #[arg(long, value_enum, default_value = "tpe")]
        sampler: SamplerKind,
        /// Pruner for streamed intermediate values.
        #[arg(long, value_enum, default_value = "none")]
        pruner: PrunerKind,
        /// Maximize instead of minimize.
        #[arg(long)]
        maximize: bool,
        /// JSON key of the metric.
        #[arg(long, default_value = "metric")]
        metric: String,
        /// Regex whose first group is the metric (instead of JSON).
        #[arg(long)]
        metric_regex: Option<String>,
        /// Per-trial timeout in seconds.
        #[arg(long)]
        timeout: Option<f64>,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The command; `{name}` is replaced by parameter values.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Continue a study (after a crash or to add trials); stale running trials are re-run.
    Resume {
        /// Study directory.
        #[arg(long, default_value = "autoresearch-study")]
        study: PathBuf,
        /// More trials to run.
        #[arg(long, default_value_t = 0)]
        trials: usize,
        /// Parallel worker processes.
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Join a live study as an extra worker (do not mark running trials stale).
        #[arg(long)]
        join: bool,
    },
    /// Trial counts and the results table.
    Status {
        /// Study directory.
        #[arg(long, default_value = "autoresearch-study")]
        study: PathBuf,
    },
    /// The best trial.
    Best {
        /// Study directory.
        #[arg(long, default_value = "autoresearch-study")]
        study: PathBuf,
    },
    /// Export trials.
    Export {
        /// Study directory.
        #[arg(long, default_value = "autoresearch-study")]
        study: PathBuf,
        /// Format.
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
        /// Output file (stdout when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn journal(dir: &Path) -> PathBuf {
    dir.join("journal.jsonl")
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("autoresearch: {e}");
        std::process::exit(1);
    }
}

fn make_sampler(kind: &str, seed: u64) -> Box<dyn Sampler> {
    match kind {
        "random" => Box::new(RandomSampler::new()),
        "qmc" => Box::new(QmcSampler::new(seed)),
        "cmaes" => Box::new(CmaEsSampler::new()),
        "grid" => Box::new(GridSampler::new(5, seed)),
        _ => Box::new(TpeSampler::default()),
    }
}

fn make_pruner(kind: &str) -> Arc<dyn Pruner> {
    match kind {
        "median" => Arc::new(MedianPruner::default()),
        "asha" => Arc::new(SuccessiveHalvingPruner::default()),
        "hyperband" => Arc::new(HyperbandPruner::default()),
        _ => Arc::new(NopPruner),
    }
}

fn open_existing(dir: &Path) -> autoresearch::Result<Study> {
    let path = journal(dir);
    if !path.exists() {
        return Err(autoresearch::Error::Config(format!(
            "{} holds no study (no journal.jsonl)",
            dir.display()
        )));
    }
    let storage = JournalStorage::open(&path)?;
    let meta = storage.meta()?.ok_or_else(|| autoresearch::Error::Study {
        study: dir.display().to_string(),
        msg: "journal has no study header".into(),
    })?;
    let get = |k: &str| {
        meta.attrs
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let seed = meta
        .attrs
        .get("seed")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Study::builder(meta.space.clone())
        .name(&meta.name)
        .directions(meta.directions.clone())
        .sampler_boxed(make_sampler(&get("sampler"), seed))
        .pruner_arc(make_pruner(&get("pruner")))
        .storage(Arc::new(storage))
        .seed(seed)
        .build()
}

fn objective_of(study: &Study, dir: &Path) -> autoresearch::Result<CommandObjective> {
    let a = &study.meta().attrs;
    let argv: Vec<String> = a
        .get("command")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let metric = match a.get("metric_regex").and_then(|v| v.as_str()) {
        Some(re) => MetricSource::Regex(
            regex::Regex::new(re)
                .map_err(|e| autoresearch::Error::Config(format!("--metric-regex {re:?}: {e}")))?,
        ),
        None => MetricSource::JsonKey(
            a.get("metric")
                .and_then(|v| v.as_str())
                .unwrap_or("metric")
                .into(),
        ),
    };
    Ok(CommandObjective {
        argv,
        metric,
        intermediate_key: None,
        dir: dir.to_path_buf(),
    })
}

fn drive(study: &Study, dir: &Path, trials: usize, jobs: usize) -> autoresearch::Result<()> {
    let obj = objective_of(study, dir)?;
    let timeout = study
        .meta()
        .attrs
        .get("timeout")
        .and_then(serde_json::Value::as_f64);
    let bar = indicatif::ProgressBar::new(trials as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} trials  {elapsed}  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let bar2 = bar.clone();
    let mut opts = OptimizeOptions::trials(trials).jobs(jobs);
    opts.timeout = timeout.map(Duration::from_secs_f64);
    opts.callback = Some(Arc::new(move |n, st: TrialState| {
        bar2.inc(1);
        bar2.set_message(format!("trial {n}: {}", st.as_str()));
    }));
    let s = study.optimize(Arc::new(obj), &opts)?;
    bar.finish_and_clear();
    let trials = study.trials()?;
    let table = results_table(&trials, study.directions()[0]);
    let tsv = dir.join("results.tsv");
    std::fs::write(&tsv, &table).map_err(|e| autoresearch::Error::Io {
        path: tsv.clone(),
        source: e,
    })?;
    println!(
        "{} started: {} complete, {} pruned, {} failed, {} timed out{}",
        s.started,
        s.complete,
        s.pruned,
        s.failed,
        s.timed_out,
        if s.exhausted {
            " (sampler exhausted)"
        } else {
            ""
        }
    );
    print_best(study)?;
    println!("results: {}", tsv.display());
    Ok(())
}

fn print_best(study: &Study) -> autoresearch::Result<()> {
    match study.best_trial()? {
        Some(b) => {
            let params: Vec<String> = b.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "best: trial {} value {} params {}",
                b.number,
                b.value().unwrap_or(f64::NAN),
                params.join(" ")
            );
        }
        None => println!("best: no complete trial yet"),
    }
    Ok(())
}

fn real_main() -> autoresearch::Result<()> {
    match Cli::parse().cmd {
        Cmd::Run {
            space,
            trials,
            jobs,
            study,
            sampler,
            pruner,
            maximize,
            metric,
            metric_regex,
            timeout,
            seed,
            command,
        } => {
            let sp = SearchSpace::from_file(&space)?;
            std::fs::create_dir_all(&study).map_err(|e| autoresearch::Error::Io {
                path: study.clone(),
                source: e,
            })?;
            if journal(&study).exists() {
                return Err(autoresearch::Error::Config(format!(
                    "{} already holds a study; use `autoresearch resume`",
                    study.display()
                )));
            }
            let sname = match sampler {
                SamplerKind::Tpe => "tpe",
                SamplerKind::Random => "random",
                SamplerKind::Qmc => "qmc",
                SamplerKind::Cmaes => "cmaes",
                SamplerKind::Grid => "grid",
            };
            let pname = match pruner {
                PrunerKind::None => "none",
                PrunerKind::Median => "median",
                PrunerKind::Asha => "asha",
                PrunerKind::Hyperband => "hyperband",
            };
            if let Some(re) = &metric_regex {
                regex::Regex::new(re).map_err(|e| {
                    autoresearch::Error::Config(format!("--metric-regex {re:?}: {e}"))
                })?;
            }
            let mut b = Study::builder(sp)
                .name(&study.display().to_string())
                .direction(if maximize {
                    Direction::Maximize
                } else {
                    Direction::Minimize
                })
                .sampler_boxed(make_sampler(sname, seed))
                .pruner_arc(make_pruner(pname))
                .storage(Arc::new(JournalStorage::open(journal(&study))?))
                .seed(seed)
                .attr("command", serde_json::json!(command))
                .attr("metric", serde_json::json!(metric))
                .attr("sampler", serde_json::json!(sname))
                .attr("pruner", serde_json::json!(pname))
                .attr("seed", serde_json::json!(seed));
            if let Some(re) = metric_regex {
                b = b.attr("metric_regex", serde_json::json!(re));
            }
            if let Some(t) = timeout {
                b = b.attr("timeout", serde_json::json!(t));
            }
            let s = b.build()?;
            drive(&s, &study, trials, jobs)
        }
        Cmd::Resume {
            study,
            trials,
            jobs,
            join,
        } => {
            let s = open_existing(&study)?;
            if !join {
                let stale = s.recover_stale(Duration::ZERO)?;
                if !stale.is_empty() {
                    println!("re-queued stale trials {stale:?}");
                }
            }
            let queued = s
                .trials()?
                .iter()
                .filter(|t| t.state == TrialState::Waiting)
                .count();
            drive(&s, &study, trials.max(queued), jobs)
        }
        Cmd::Status { study } => {
            let s = open_existing(&study)?;
            let trials = s.trials()?;
            let mut counts = std::collections::BTreeMap::new();
            for t in &trials {
                *counts.entry(t.state.as_str()).or_insert(0usize) += 1;
            }
            println!(
                "study {}: {} trials {counts:?}",
                study.display(),
                trials.len()
            );
            print!("{}", results_table(&trials, s.directions()[0]));
            let imp =
                autoresearch::importance::ped_anova(&trials, s.space(), s.directions()[0], 0.1);
            if !imp.is_empty() {
                let mut v: Vec<(String, f64)> = imp.into_iter().collect();
                v.sort_by(|a, b| b.1.total_cmp(&a.1));
                let parts: Vec<String> = v.iter().map(|(k, x)| format!("{k} {x:.3}")).collect();
                println!("importance (PED-ANOVA-style): {}", parts.join(", "));
            }
            print_best(&s)
        }
        Cmd::Best { study } => {
            let s = open_existing(&study)?;
            match s.best_trial()? {
                Some(b) => {
                    println!("{}", serde_json::to_string_pretty(&b).unwrap_or_default());
                    Ok(())
                }
                None => Err(autoresearch::Error::Study {
                    study: study.display().to_string(),
                    msg: "no complete trial".into(),
                }),
            }
        }
        Cmd::Export { study, format, out } => {
            let s = open_existing(&study)?;
            let trials = s.trials()?;
            let text = match format {
                Format::Csv => export_csv(&trials, s.space()),
                Format::Json => serde_json::to_string_pretty(&trials).unwrap_or_default(),
            };
            if let Some(p) = out {
                std::fs::write(&p, text).map_err(|e| autoresearch::Error::Io { path: p, source: e })
            } else {
                print!("{text}");
                Ok(())
            }
        }
    }
}
