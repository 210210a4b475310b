//! `autoresearch`: run any program as a hyperparameter-search objective.
//!
//! ```text
//! autoresearch run --space space.toml --trials 50 --jobs 2 -- ./train --lr {lr} --ctx {ctx}
//! autoresearch status | best | plot | export --format csv | resume --trials 20
//! # many machines, one study: the same command on each, with a shared database
//! autoresearch run --storage postgres://user:pass@db/hpo --study-name s1 --space ... -- ...
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use autoresearch::command::{CommandObjective, MetricSource};
use autoresearch::report::{export_csv, results_table};
use autoresearch::{
    CmaEsSampler, Direction, GridSampler, HyperbandPruner, JournalStorage, MedianPruner, NopPruner,
    OptimizeOptions, Pruner, QmcSampler, RandomSampler, Sampler, SearchSpace, Storage, Study,
    StudyMeta, SuccessiveHalvingPruner, TpeSampler, TrialState,
};
use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Optuna 5's TPE plus the acquisition refinement (the default).
    Tpe,
    /// Optuna 5's TPESampler() exactly (no acquisition refinement).
    TpeOptuna,
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

/// Where a study lives: per-trial logs and results always go to `--study`; the trials
/// themselves to the journal there, or to a PostgreSQL database given by `--storage`.
#[derive(Args, Clone)]
struct Where {
    /// Study directory (journal, per-trial logs, results table).
    #[arg(long, default_value = "autoresearch-study")]
    study: PathBuf,
    /// Shared storage instead of the directory's journal: `postgres://user:pass@host/db`
    /// (workers on several machines join one study).
    #[arg(long)]
    storage: Option<String>,
    /// Study name in the database (default: the `--study` path as given).
    #[arg(long)]
    study_name: Option<String>,
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
        #[command(flatten)]
        at: Where,
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
        #[command(flatten)]
        at: Where,
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
        #[command(flatten)]
        at: Where,
    },
    /// The best trial.
    Best {
        #[command(flatten)]
        at: Where,
    },
    /// Write SVG plots: optimization history, parallel coordinates, parameter importance.
    #[cfg(feature = "plot")]
    Plot {
        #[command(flatten)]
        at: Where,
        /// Output directory (default: `<study>/plots`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Export trials.
    Export {
        #[command(flatten)]
        at: Where,
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
        "tpe-optuna" => Box::new(TpeSampler::optuna()),
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

/// The storage a study lives in, and the stored study if there is one.
fn open_storage(at: &Where) -> autoresearch::Result<(Arc<dyn Storage>, Option<StudyMeta>)> {
    match &at.storage {
        #[cfg(feature = "postgres")]
        Some(url) if autoresearch::storage::is_postgres_url(url) => {
            let name = at
                .study_name
                .clone()
                .unwrap_or_else(|| at.study.display().to_string());
            let pg = autoresearch::PostgresStorage::connect(url, &name)?;
            let meta = pg.meta()?;
            Ok((Arc::new(pg), meta))
        }
        Some(other) => Err(autoresearch::Error::Config(format!(
            "--storage {other:?}: only postgres:// URLs are supported{}",
            if cfg!(feature = "postgres") {
                ""
            } else {
                " (and this build lacks the `postgres` feature)"
            }
        ))),
        None => {
            let path = journal(&at.study);
            let existed = path.exists();
            if !existed {
                std::fs::create_dir_all(&at.study).map_err(|e| autoresearch::Error::Io {
                    path: at.study.clone(),
                    source: e,
                })?;
            }
            let j = JournalStorage::open(&path)?;
            let meta = j.meta()?;
            Ok((Arc::new(j), meta))
        }
    }
}

fn open_existing(at: &Where) -> autoresearch::Result<Study> {
    if at.storage.is_none() && !journal(&at.study).exists() {
        return Err(autoresearch::Error::Config(format!(
            "{} holds no study (no journal.jsonl)",
            at.study.display()
        )));
    }
    let (storage, meta) = open_storage(at)?;
    let meta = meta.ok_or_else(|| autoresearch::Error::Study {
        study: at
            .study_name
            .clone()
            .unwrap_or_else(|| at.study.display().to_string()),
        msg: "no such study in the storage".into(),
    })?;
    study_from(storage, &meta)
}

fn study_from(storage: Arc<dyn Storage>, meta: &StudyMeta) -> autoresearch::Result<Study> {
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
        .storage(storage)
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
            at,
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
            std::fs::create_dir_all(&at.study).map_err(|e| autoresearch::Error::Io {
                path: at.study.clone(),
                source: e,
            })?;
            if at.storage.is_none() && journal(&at.study).exists() {
                return Err(autoresearch::Error::Config(format!(
                    "{} already holds a study; use `autoresearch resume`",
                    at.study.display()
                )));
            }
            let (storage, existing) = open_storage(&at)?;
            if let Some(meta) = existing {
                // Only a shared database gets here: this process becomes one more worker.
                println!(
                    "joining study `{}` ({} trials so far); its stored command and settings apply",
                    meta.name,
                    storage.trials()?.len()
                );
                let s = study_from(storage, &meta)?;
                return drive(&s, &at.study, trials, jobs);
            }
            let sname = match sampler {
                SamplerKind::Tpe => "tpe",
                SamplerKind::TpeOptuna => "tpe-optuna",
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
                .name(
                    &at.study_name
                        .clone()
                        .unwrap_or_else(|| at.study.display().to_string()),
                )
                .direction(if maximize {
                    Direction::Maximize
                } else {
                    Direction::Minimize
                })
                .sampler_boxed(make_sampler(sname, seed))
                .pruner_arc(make_pruner(pname))
                .storage(storage)
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
            drive(&s, &at.study, trials, jobs)
        }
        Cmd::Resume {
            at,
            trials,
            jobs,
            join,
        } => {
            let s = open_existing(&at)?;
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
            drive(&s, &at.study, trials.max(queued), jobs)
        }
        Cmd::Status { at } => {
            let s = open_existing(&at)?;
            let trials = s.trials()?;
            let mut counts = std::collections::BTreeMap::new();
            for t in &trials {
                *counts.entry(t.state.as_str()).or_insert(0usize) += 1;
            }
            println!(
                "study {}: {} trials {counts:?}",
                s.meta().name,
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
        Cmd::Best { at } => {
            let s = open_existing(&at)?;
            match s.best_trial()? {
                Some(b) => {
                    println!("{}", serde_json::to_string_pretty(&b).unwrap_or_default());
                    Ok(())
                }
                None => Err(autoresearch::Error::Study {
                    study: s.meta().name.clone(),
                    msg: "no complete trial".into(),
                }),
            }
        }
        #[cfg(feature = "plot")]
        Cmd::Plot { at, out } => {
            let s = open_existing(&at)?;
            let dir = out.unwrap_or_else(|| at.study.join("plots"));
            let trials = s.trials()?;
            for p in autoresearch::plot::write_plots(&trials, s.space(), s.directions()[0], &dir)? {
                println!("{}", p.display());
            }
            Ok(())
        }
        Cmd::Export { at, format, out } => {
            let s = open_existing(&at)?;
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
