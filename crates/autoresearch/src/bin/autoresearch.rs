//! `autoresearch`: run any program as a hyperparameter-search objective.
//!
//! ```text
//! autoresearch run --space space.toml --trials 50 --jobs 2 -- ./train --lr {lr} --ctx {ctx}
//! autoresearch status | best [--format json|table] | plot | export --format csv | resume --trials 20
//! # many machines, one study: the same command on each, with a shared database
//! autoresearch run --storage postgres://user:pass@db/hpo --study-name s1 --space ... -- ...
//! # Optuna-style external loop
//! autoresearch ask --space space.toml --study st        # prints {"number": 0, "params": {...}}
//! autoresearch tell --study st --trial-number 0 --values 0.42
//! autoresearch enqueue --study st --params '{"lr": 0.01}'
//! autoresearch studies --storage postgres://... | delete-study --study-name s1 --storage ...
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use autoresearch::command::{CommandObjective, MetricSource};
use autoresearch::report::{export_csv, results_table};
use autoresearch::{
    AutoSampler, CmaEsSampler, Direction, GpSampler, GridSampler, HyperbandPruner, JournalStorage,
    MedianPruner, NopPruner, OptimizeOptions, Params, Pruner, QmcSampler, RandomSampler, Sampler,
    SearchSpace, Storage, Study, StudyMeta, SuccessiveHalvingPruner, TpeSampler, Trial, TrialState,
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
    /// GP where the study's evidence says the landscape is smooth, TPE elsewhere (the
    /// default; see docs/autoresearch.md).
    Auto,
    /// Gaussian process (Matérn 5/2, log expected improvement), after Optuna's GPSampler.
    Gp,
    /// Optuna 5's TPE plus the acquisition refinement.
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

/// Output of the commands that print a result (Optuna's CLI `--format`).
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OutFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document.
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum DirectionArg {
    Minimize,
    Maximize,
}

impl From<DirectionArg> for Direction {
    fn from(d: DirectionArg) -> Self {
        match d {
            DirectionArg::Minimize => Direction::Minimize,
            DirectionArg::Maximize => Direction::Maximize,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum TellState {
    Complete,
    Pruned,
    Fail,
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
        #[arg(long, value_enum, default_value = "auto")]
        sampler: SamplerKind,
        /// Pruner for streamed intermediate values.
        #[arg(long, value_enum, default_value = "none")]
        pruner: PrunerKind,
        /// Maximize instead of minimize (single objective; see `--direction`).
        #[arg(long)]
        maximize: bool,
        /// JSON key of the metric; repeat it for a multi-objective study (one value each).
        #[arg(long, default_value = "metric")]
        metric: Vec<String>,
        /// Direction of each `--metric`, in order (default: minimize, or `--maximize`).
        #[arg(long, value_enum)]
        direction: Vec<DirectionArg>,
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
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// The best trial (the Pareto front for several objectives).
    Best {
        #[command(flatten)]
        at: Where,
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        format: OutFormat,
    },
    /// Create a trial and print its number and parameters (Optuna's `ask`); the study is
    /// created from `--space` when it does not exist.
    Ask {
        #[command(flatten)]
        at: Where,
        /// Search space (TOML or JSON), for a new study.
        #[arg(long)]
        space: Option<PathBuf>,
        /// Directions of a new study, one per objective (default: minimize).
        #[arg(long, value_enum)]
        direction: Vec<DirectionArg>,
        /// Sampler of a new study.
        #[arg(long, value_enum, default_value = "auto")]
        sampler: SamplerKind,
        /// Seed of a new study.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output format.
        #[arg(long, value_enum, default_value = "json")]
        format: OutFormat,
    },
    /// Finish a trial with its objective values or a state (Optuna's `tell`).
    Tell {
        #[command(flatten)]
        at: Where,
        /// The trial's number.
        #[arg(long)]
        trial_number: u64,
        /// Objective values, one per direction.
        #[arg(long, num_args = 1.., allow_negative_numbers = true)]
        values: Vec<f64>,
        /// State (default: complete with values, else fail).
        #[arg(long, value_enum)]
        state: Option<TellState>,
        /// Succeed without changes when the trial is already finished.
        #[arg(long)]
        skip_if_finished: bool,
    },
    /// Queue a trial with fixed parameters (JSON object), run before sampled ones.
    Enqueue {
        #[command(flatten)]
        at: Where,
        /// Parameters as a JSON object, e.g. `{"lr": 0.01, "layers": 4}`.
        #[arg(long)]
        params: String,
    },
    /// List the studies in a storage (all studies of a database; the one study of a
    /// directory).
    Studies {
        #[command(flatten)]
        at: Where,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: OutFormat,
    },
    /// Delete a study and all its trials.
    DeleteStudy {
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
        "gp" => Box::new(GpSampler::default()),
        // Studies stored before `auto` existed name "tpe" explicitly.
        "tpe" => Box::new(TpeSampler::default()),
        _ => Box::new(AutoSampler::default()),
    }
}

fn sampler_name(kind: SamplerKind) -> &'static str {
    match kind {
        SamplerKind::Auto => "auto",
        SamplerKind::Gp => "gp",
        SamplerKind::Tpe => "tpe",
        SamplerKind::TpeOptuna => "tpe-optuna",
        SamplerKind::Random => "random",
        SamplerKind::Qmc => "qmc",
        SamplerKind::Cmaes => "cmaes",
        SamplerKind::Grid => "grid",
    }
}

fn study_name(at: &Where) -> String {
    at.study_name
        .clone()
        .unwrap_or_else(|| at.study.display().to_string())
}

/// A trial as the CLI prints it: number, state, values, parameters, user attributes.
fn trial_json(t: &Trial) -> serde_json::Value {
    serde_json::json!({
        "number": t.number,
        "state": t.state.as_str(),
        "values": t.values,
        "params": t.params,
        "user_attrs": t.user_attrs,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
    })
}

/// Left-aligned columns under a header.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        parts.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| (*h).to_string()).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

fn params_text(p: &Params) -> String {
    p.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn values_text(t: &Trial) -> String {
    t.values
        .as_ref()
        .map(|v| v.iter().map(f64::to_string).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

fn print_trials(trials: &[Trial], format: OutFormat) {
    match format {
        OutFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&trials.iter().map(trial_json).collect::<Vec<_>>())
                .unwrap_or_default()
        ),
        OutFormat::Table => {
            let rows: Vec<Vec<String>> = trials
                .iter()
                .map(|t| {
                    vec![
                        t.number.to_string(),
                        t.state.as_str().to_string(),
                        values_text(t),
                        params_text(&t.params),
                    ]
                })
                .collect();
            print!("{}", table(&["number", "state", "values", "params"], &rows));
        }
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
    let extra_keys: Vec<String> = a
        .get("extra_metrics")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    Ok(CommandObjective {
        argv,
        metric,
        intermediate_key: None,
        extra_keys,
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
    if study.directions().len() > 1 {
        let front = study.pareto_front()?;
        println!("pareto front: {} trials", front.len());
        for t in front {
            println!(
                "  trial {} values {} params {}",
                t.number,
                values_text(&t),
                params_text(&t.params)
            );
        }
        return Ok(());
    }
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
            direction,
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
            let sname = sampler_name(sampler);
            let directions: Vec<Direction> = if direction.is_empty() {
                vec![
                    if maximize {
                        Direction::Maximize
                    } else {
                        Direction::Minimize
                    };
                    metric.len()
                ]
            } else {
                direction.into_iter().map(Direction::from).collect()
            };
            if directions.len() != metric.len() {
                return Err(autoresearch::Error::Config(format!(
                    "{} --metric keys but {} --direction values: give one direction per metric",
                    metric.len(),
                    directions.len()
                )));
            }
            if metric_regex.is_some() && metric.len() > 1 {
                return Err(autoresearch::Error::Config(
                    "--metric-regex reads one metric; use JSON keys for several".into(),
                ));
            }
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
                .name(&study_name(&at))
                .directions(directions)
                .sampler_boxed(make_sampler(sname, seed))
                .pruner_arc(make_pruner(pname))
                .storage(storage)
                .seed(seed)
                .attr("command", serde_json::json!(command))
                .attr("metric", serde_json::json!(metric[0]))
                .attr("extra_metrics", serde_json::json!(metric[1..]))
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
        Cmd::Status { at, format } => {
            let s = open_existing(&at)?;
            let trials = s.trials()?;
            let mut counts = std::collections::BTreeMap::new();
            for t in &trials {
                *counts.entry(t.state.as_str()).or_insert(0usize) += 1;
            }
            if format == OutFormat::Json {
                let best = if s.directions().len() > 1 {
                    s.pareto_front()?.iter().map(trial_json).collect()
                } else {
                    s.best_trial()?.iter().map(trial_json).collect::<Vec<_>>()
                };
                let doc = serde_json::json!({
                    "study": s.meta().name,
                    "directions": s.directions(),
                    "n_trials": trials.len(),
                    "states": counts,
                    "best": best,
                    "trials": trials.iter().map(trial_json).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                return Ok(());
            }
            let counts_text: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
            println!(
                "study {}: {} trials ({})",
                s.meta().name,
                trials.len(),
                counts_text.join(", ")
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
        Cmd::Best { at, format } => {
            let s = open_existing(&at)?;
            let best: Vec<Trial> = if s.directions().len() > 1 {
                s.pareto_front()?
            } else {
                s.best_trial()?.into_iter().collect()
            };
            if best.is_empty() {
                return Err(autoresearch::Error::Study {
                    study: s.meta().name.clone(),
                    msg: "no complete trial".into(),
                });
            }
            match (format, s.directions().len()) {
                (OutFormat::Json, 1) => println!(
                    "{}",
                    serde_json::to_string_pretty(&trial_json(&best[0])).unwrap_or_default()
                ),
                _ => print_trials(&best, format),
            }
            Ok(())
        }
        Cmd::Ask {
            at,
            space,
            direction,
            sampler,
            seed,
            format,
        } => {
            let (storage, existing) = open_storage(&at)?;
            let study = if let Some(meta) = existing {
                study_from(storage, &meta)?
            } else {
                let Some(space) = space else {
                    return Err(autoresearch::Error::Config(format!(
                        "study `{}` does not exist yet: give --space to create it",
                        study_name(&at)
                    )));
                };
                let directions: Vec<Direction> = if direction.is_empty() {
                    vec![Direction::Minimize]
                } else {
                    direction.into_iter().map(Direction::from).collect()
                };
                let sname = sampler_name(sampler);
                Study::builder(SearchSpace::from_file(&space)?)
                    .name(&study_name(&at))
                    .directions(directions)
                    .sampler_boxed(make_sampler(sname, seed))
                    .storage(storage)
                    .seed(seed)
                    .attr("sampler", serde_json::json!(sname))
                    .attr("seed", serde_json::json!(seed))
                    .build()?
            };
            let t = study.ask()?;
            match format {
                OutFormat::Json => println!(
                    "{}",
                    serde_json::json!({"number": t.number(), "params": t.params()})
                ),
                OutFormat::Table => print!(
                    "{}",
                    table(
                        &["number", "params"],
                        &[vec![t.number().to_string(), params_text(t.params())]]
                    )
                ),
            }
            Ok(())
        }
        Cmd::Tell {
            at,
            trial_number,
            values,
            state,
            skip_if_finished,
        } => {
            let s = open_existing(&at)?;
            let trials = s.trials()?;
            let Some(t) = trials.iter().find(|t| t.number == trial_number) else {
                return Err(autoresearch::Error::Study {
                    study: s.meta().name.clone(),
                    msg: format!("no trial {trial_number}"),
                });
            };
            if t.state.is_finished() {
                if skip_if_finished {
                    println!("trial {trial_number} is already {}", t.state.as_str());
                    return Ok(());
                }
                return Err(autoresearch::Error::Study {
                    study: s.meta().name.clone(),
                    msg: format!(
                        "trial {trial_number} is already {} (--skip-if-finished to ignore)",
                        t.state.as_str()
                    ),
                });
            }
            let state = state.unwrap_or(if values.is_empty() {
                TellState::Fail
            } else {
                TellState::Complete
            });
            let n_dirs = s.directions().len();
            match state {
                TellState::Complete => {
                    if values.len() != n_dirs || values.iter().any(|v| !v.is_finite()) {
                        return Err(autoresearch::Error::Config(format!(
                            "--values: the study has {n_dirs} objective(s), got {} value(s) {values:?}",
                            values.len()
                        )));
                    }
                    s.storage()
                        .finish(trial_number, TrialState::Complete, Some(&values), None)?;
                }
                TellState::Pruned => {
                    s.storage()
                        .finish(trial_number, TrialState::Pruned, None, Some("pruned"))?;
                }
                TellState::Fail => {
                    s.storage().finish(
                        trial_number,
                        TrialState::Failed,
                        None,
                        Some("failed (told by the CLI)"),
                    )?;
                }
            }
            println!("told trial {trial_number}");
            Ok(())
        }
        Cmd::Enqueue { at, params } => {
            let s = open_existing(&at)?;
            let p: Params = serde_json::from_str(&params).map_err(|e| {
                autoresearch::Error::Config(format!("--params {params:?}: not a JSON object: {e}"))
            })?;
            for (k, v) in &p {
                let Some(param) = s.space().get(k) else {
                    return Err(autoresearch::Error::Config(format!(
                        "--params: `{k}` is not a parameter of the study"
                    )));
                };
                if !param.dist.contains(v) {
                    return Err(autoresearch::Error::Config(format!(
                        "--params: {k} = {v} is outside its distribution"
                    )));
                }
            }
            let n = s.enqueue(p)?;
            println!("enqueued trial {n}");
            Ok(())
        }
        Cmd::Studies { at, format } => {
            let names: Vec<String> = match &at.storage {
                #[cfg(feature = "postgres")]
                Some(url) if autoresearch::storage::is_postgres_url(url) => {
                    autoresearch::PostgresStorage::connect(url, &study_name(&at))?.study_names()?
                }
                _ => {
                    let (_, meta) = open_storage(&at)?;
                    meta.into_iter().map(|m| m.name).collect()
                }
            };
            let mut rows = Vec::new();
            let mut docs = Vec::new();
            for name in names {
                let w = Where {
                    study_name: Some(name.clone()),
                    ..at.clone()
                };
                let s = open_existing(&w)?;
                let trials = s.trials()?;
                let dirs: Vec<&str> = s
                    .directions()
                    .iter()
                    .map(|d| match d {
                        Direction::Minimize => "minimize",
                        Direction::Maximize => "maximize",
                    })
                    .collect();
                let start = trials
                    .iter()
                    .map(|t| t.started_at)
                    .fold(f64::INFINITY, f64::min);
                rows.push(vec![
                    name.clone(),
                    dirs.join(","),
                    trials.len().to_string(),
                    if start.is_finite() {
                        format!("{start:.0}")
                    } else {
                        String::new()
                    },
                ]);
                docs.push(serde_json::json!({
                    "name": name, "directions": dirs, "n_trials": trials.len(),
                    "started_at": start.is_finite().then_some(start),
                }));
            }
            match format {
                OutFormat::Json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&docs).unwrap_or_default()
                    );
                }
                OutFormat::Table => print!(
                    "{}",
                    table(&["name", "directions", "n_trials", "started_at"], &rows)
                ),
            }
            Ok(())
        }
        Cmd::DeleteStudy { at } => {
            match &at.storage {
                #[cfg(feature = "postgres")]
                Some(url) if autoresearch::storage::is_postgres_url(url) => {
                    let pg = autoresearch::PostgresStorage::connect(url, &study_name(&at))?;
                    if pg.meta()?.is_none() {
                        return Err(autoresearch::Error::Study {
                            study: study_name(&at),
                            msg: "no such study in the storage".into(),
                        });
                    }
                    pg.delete_study()?;
                }
                Some(_) => {
                    open_storage(&at)?;
                }
                None => {
                    let path = journal(&at.study);
                    if !path.exists() {
                        return Err(autoresearch::Error::Config(format!(
                            "{} holds no study (no journal.jsonl)",
                            at.study.display()
                        )));
                    }
                    std::fs::remove_file(&path)
                        .map_err(|e| autoresearch::Error::Io { path, source: e })?;
                }
            }
            println!("deleted study {}", study_name(&at));
            Ok(())
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
