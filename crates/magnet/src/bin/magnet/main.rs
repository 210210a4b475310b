//! `magnet`: the parties of a MAGNET run as subcommands of one binary. They meet only
//! through the object store given by `--store` (`file:///dir`, `s3://bucket/prefix` with the
//! `AWS_*` / `MAGNET_S3_ENDPOINT` settings), so each can run on its own machine:
//!
//! ```text
//! magnet prepare   --preset tiny --data-dir D                       # tokenizer + shards, once per machine
//! magnet operator  --store URL --ledger L --preset tiny --data-dir D --rounds 8 [--training-config T]
//! magnet worker    --store URL --preset tiny --data-dir D --name w0 --shard 0 --shards 3
//! magnet validator --store URL --preset tiny --data-dir D --name v0 --stake 100
//! magnet run       --preset tiny --workers 3 --validators 2 --adversary copy-exact,nan   # all in one process
//! ```
//!
//! The operator (and `run`) runs a short phased search for the training config first unless
//! `--training-config FILE` or `--no-search` says otherwise; workers read the chosen config
//! from the store. `run` plays every party as threads over an in-memory store with the same
//! library code, then saves the merged model, exports it to GGUF and verifies the ledger
//! from its files.

mod progress;

use anyhow::{Context, Result, bail};
use bitnet_model::data::{TextTokenizer, TokenData, find_corpus, prepare_dataset};
use bitnet_model::export::{EmbeddingType, ExportOptions, Target, TernaryType, export_gguf};
use bitnet_model::store::ModelDir;
use bitnet_model::{ModelConfig, Preset};
use clap::{Args, Parser, Subcommand};
use diloco::codec::Codec;
use diloco::outer::OuterOptimizer;
use magnet::bitnet::BitnetHeldOut;
use magnet::operator::Operator;
use magnet::protocol::{ProtocolConfig, keys, parse, to_json};
use magnet::roles::{self, Adversary, Party, WorkerOptions, derived_key};
use magnet::run::{RunDoc, WorkerPlan, check_ledger, in_process};
use magnet::search::SearchRecord;
use magnet::store::Store;
use magnet::training::{Training, bitnet_worker, initial_weights};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "magnet",
    version,
    about = "MAGNET's operator, worker and validator over an object store"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone, Debug)]
struct ModelArgs {
    /// Architecture to train from scratch.
    #[arg(long, value_enum, default_value_t = Preset::Tiny)]
    preset: Preset,
    /// A full architecture file (TOML; overrides --preset).
    #[arg(long)]
    model_config: Option<PathBuf>,
    /// Prepared dataset (tokenizer.json, train/val shards; `magnet prepare` writes it).
    #[arg(long)]
    data_dir: PathBuf,
}

fn model_config(preset: Preset, file: Option<&PathBuf>) -> Result<ModelConfig> {
    Ok(match file {
        Some(p) => ModelConfig::from_toml(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing {}", p.display()))?,
        None => preset.config()?,
    })
}

impl ModelArgs {
    fn load(&self) -> Result<(ModelConfig, TokenData)> {
        let model = model_config(self.preset, self.model_config.as_ref())?;
        let data = TokenData::open(&self.data_dir)
            .with_context(|| format!("opening the dataset {}", self.data_dir.display()))?;
        Ok((model, data))
    }
}

/// The protocol's parameters that a run chooses (the rest keep their defaults).
#[derive(Args, Clone, Debug)]
struct ProtocolArgs {
    /// Outer rounds.
    #[arg(long, default_value_t = 4)]
    rounds: u64,
    /// Inner steps per round (H).
    #[arg(long, default_value_t = 20)]
    inner_steps: u64,
    /// Uplink codec honest workers use: f32, f16, int8[:B], q4[:B], topk:D.
    #[arg(long, default_value = "f32")]
    codec: Codec,
    /// Outer Nesterov learning rate.
    #[arg(long, default_value_t = 0.7)]
    outer_lr: f32,
    /// Outer Nesterov momentum.
    #[arg(long, default_value_t = 0.9)]
    outer_momentum: f32,
    /// Held-out windows per validator measurement.
    #[arg(long, default_value_t = 8)]
    heldout_windows: usize,
    /// Units minted in round 1.
    #[arg(long, default_value_t = 1_000_000)]
    emission: u64,
    /// Rounds per emission halving.
    #[arg(long, default_value_t = 4)]
    halving_rounds: u64,
    /// A consensus score below minus this (ppm) is slashed as poisoned and not merged.
    #[arg(long, default_value_t = ProtocolConfig::default().poison_tolerance_ppm)]
    poison_tolerance_ppm: u32,
}

impl ProtocolArgs {
    fn protocol(&self) -> ProtocolConfig {
        ProtocolConfig {
            rounds: self.rounds,
            inner_steps: self.inner_steps,
            codec: self.codec,
            outer: OuterOptimizer::Nesterov {
                lr: self.outer_lr,
                momentum: self.outer_momentum,
            },
            heldout_windows: self.heldout_windows,
            emission: self.emission,
            halving_rounds: self.halving_rounds,
            poison_tolerance_ppm: self.poison_tolerance_ppm,
            ..ProtocolConfig::default()
        }
    }
}

/// How the inner training config is chosen: given, defaults, or MAGNET's first pillar (a
/// phased autoresearch search whose journal hash goes into the ledger).
#[derive(Args, Clone, Debug)]
struct TrainingArgs {
    /// The training config (JSON: lr, batch_size, seq_len, warmup_steps); skips the search.
    #[arg(long, conflicts_with = "no_search")]
    training_config: Option<PathBuf>,
    /// Train with the default config (lr 3e-3, batch 4, warm-up 4; --seq-len) instead of
    /// searching for one.
    #[arg(long)]
    no_search: bool,
    /// Search: trials over the learning rate (the first phase).
    #[arg(long, default_value_t = 3)]
    search_lr_trials: usize,
    /// Search: trials over batch size and warm-up (the second phase).
    #[arg(long, default_value_t = 2)]
    search_shape_trials: usize,
    /// Search: inner steps per trial.
    #[arg(long, default_value_t = 20)]
    search_steps: usize,
    /// Sequence length of every trial and of the run.
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
}

impl TrainingArgs {
    fn choose(
        &self,
        model: &ModelConfig,
        data: &TokenData,
        val_windows: usize,
        seed: u64,
        out: &std::path::Path,
    ) -> Result<(Training, Option<SearchRecord>)> {
        let base = Training {
            seq_len: self.seq_len,
            ..Training::default()
        };
        if let Some(p) = &self.training_config {
            let t: Training = serde_json::from_str(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("parsing {}", p.display()))?;
            t.validate()?;
            return Ok((t, None));
        }
        if self.no_search {
            base.validate()?;
            return Ok((base, None));
        }
        eprintln!(
            "phased search ({} + {} trials of {} steps)",
            self.search_lr_trials, self.search_shape_trials, self.search_steps
        );
        let s = magnet::search::phased_search(
            &out.join("search"),
            model,
            data,
            &base,
            val_windows,
            self.search_steps,
            self.search_lr_trials,
            self.search_shape_trials,
            seed,
        )?;
        eprintln!(
            "search chose {:?} (val loss {:.4}, journal {})",
            s.best,
            s.best_value,
            &s.journal_sha256[..16]
        );
        Ok((s.best, Some(s)))
    }
}

#[derive(Args, Clone, Debug)]
struct PartyArgs {
    /// Store URL: file:///abs/dir, s3://bucket/prefix.
    #[arg(long)]
    store: String,
    /// Name in reports; with --key-seed it derives this party's key.
    #[arg(long)]
    name: String,
    /// Seed phrase of the derived keys (tests and demos; a real party brings its own key).
    #[arg(long, default_value = "magnet")]
    key_seed: String,
    /// Longest wait for any document (ms).
    #[arg(long, default_value_t = 600_000)]
    timeout_ms: u64,
    /// Print the party's report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Builds --data-dir from a text corpus (tokenizer with the model's vocabulary, shards).
    Prepare {
        #[command(flatten)]
        model: ModelArgs,
        /// Training text.
        #[arg(long, env = "MAGNET_CORPUS")]
        corpus: Option<PathBuf>,
        /// Seed of the tokenizer and the split.
        #[arg(long, default_value_t = 1234)]
        seed: u64,
    },
    /// Runs the ledger and the coordinator: registers parties, opens and closes rounds,
    /// ingests records, settles and merges.
    Operator(Box<OperatorArgs>),
    /// Trains on its shard and contributes an update per round.
    Worker {
        #[command(flatten)]
        party: PartyArgs,
        #[command(flatten)]
        model: ModelArgs,
        /// Data shard of this worker.
        #[arg(long, default_value_t = 0)]
        shard: usize,
        /// Number of shards.
        #[arg(long, default_value_t = 1)]
        shards: usize,
        /// Seed of this worker's batch order.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// For tests and demos only: play one attacker of the threat model.
        #[arg(long, value_enum)]
        adversary: Option<Adversary>,
        /// Rounds to sit out (comma-separated).
        #[arg(long, value_delimiter = ',')]
        skip: Vec<u64>,
        /// Leave after this round.
        #[arg(long)]
        leave_after: Option<u64>,
        /// For tests and demos only: rounds in which to straggle (train, then commit only
        /// after the round closed).
        #[arg(long, value_delimiter = ',')]
        late: Vec<u64>,
    },
    /// A whole run in one process: the operator, the workers (honest ones and the attackers
    /// --adversary names) and the validators as threads over an in-memory store, running
    /// the same code as the separate processes; then the merged model is saved and exported
    /// to GGUF and the ledger verified from its files (OUT/report.json).
    Run(Box<RunArgs>),
    /// Checks and measures every contribution and signs evaluations.
    Validator {
        #[command(flatten)]
        party: PartyArgs,
        #[command(flatten)]
        model: ModelArgs,
        /// Stake (vote weight).
        #[arg(long, default_value_t = 100)]
        stake: u64,
        /// Windows of the fixed val loss (the validators draw from the rest).
        #[arg(long, default_value_t = 16)]
        val_windows: usize,
        /// For tests and demos only: sign lies (honest updates as poison, attacks as gains).
        #[arg(long)]
        lie: bool,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Architecture to train from scratch.
    #[arg(long, value_enum, default_value_t = Preset::Tiny)]
    preset: Preset,
    /// A full architecture file (TOML; overrides --preset).
    #[arg(long)]
    model_config: Option<PathBuf>,
    /// Training text (UTF-8 *.txt files; else MAGNET_CORPUS, else the shipped corpus).
    #[arg(long, env = "MAGNET_CORPUS")]
    corpus: Option<PathBuf>,
    /// Seed of the tokenizer, the split, the initial weights, the search and the keys.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Honest workers (one data shard each).
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Attackers to add, one worker each (for demonstrations of the defences).
    #[arg(long, value_enum, value_delimiter = ',')]
    adversary: Vec<Adversary>,
    /// Honest validators (stake 100 each).
    #[arg(long, default_value_t = 2)]
    validators: usize,
    /// Adds a lying validator with minority stake (40): its verdicts must not count.
    #[arg(long)]
    liar: bool,
    #[command(flatten)]
    protocol: ProtocolArgs,
    #[command(flatten)]
    training: TrainingArgs,
    /// Windows of the fixed val loss (search objective and report).
    #[arg(long, default_value_t = 16)]
    val_windows: usize,
    /// Output directory (data, ledger, model, GGUF, report).
    #[arg(long, default_value = "runs/magnet")]
    out: PathBuf,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs every party in one process; writes OUT/{data,ledger,model,magnet-tq2_0.gguf,report.json}.
fn run_all(a: &RunArgs) -> Result<()> {
    if a.workers == 0 || a.validators == 0 {
        bail!("--workers and --validators must be at least 1");
    }
    let model = model_config(a.preset, a.model_config.as_ref())?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let out = a
        .out
        .canonicalize()
        .with_context(|| format!("resolving {}", a.out.display()))?;
    let corpus = find_corpus(a.corpus.as_deref())?
        .context("no corpus: pass --corpus DIR (UTF-8 *.txt files) or set MAGNET_CORPUS")?;
    let data_dir = out.join("data");
    prepare_dataset(&corpus.dir, &data_dir, model.vocab_size, a.seed, &mut |s| {
        eprintln!("{s}");
    })
    .with_context(|| format!("preparing the dataset in {}", data_dir.display()))?;
    let data = TokenData::open(&data_dir)?;
    let tokenizer = TextTokenizer::load(&data_dir.join("tokenizer.json"))?;
    let ledger_dir = out.join("ledger");
    if ledger_dir.exists() {
        bail!(
            "{} holds a ledger of an earlier run: choose another --out",
            ledger_dir.display()
        );
    }
    let n = a.workers + a.adversary.len();
    let v = a.validators + usize::from(a.liar);
    let protocol = ProtocolConfig {
        origin: "magnet-run".into(),
        min_workers: n,
        min_validators: v,
        // Every worker that can commit in round 1 (the copiers have nothing to copy yet).
        // A round closes when every member committed, or 10 s after this many did: time
        // for the trainers that finish last (parties that send at once do not start it).
        quorum: a.workers
            + a.adversary
                .iter()
                .filter(|x| !matches!(x, Adversary::CopyExact | Adversary::CopyNoisy))
                .count(),
        grace_ms: 10_000,
        poll_ms: 10,
        ..a.protocol.protocol()
    };
    protocol.validate()?;
    let (training, search) = a
        .training
        .choose(&model, &data, a.val_windows, a.seed, &out)?;
    let doc = RunDoc {
        model: model.clone(),
        training,
        seed: a.seed,
        search,
        protocol: magnet::protocol::hx(&protocol.hash()),
    };
    let mut plans: Vec<WorkerPlan> = (0..a.workers)
        .map(|i| WorkerPlan {
            name: format!("worker{i}"),
            shard: i,
            adversary: None,
        })
        .collect();
    for (i, x) in a.adversary.iter().enumerate() {
        plans.push(WorkerPlan {
            name: format!("{}{i}", x.name()),
            shard: i % a.workers,
            adversary: Some(*x),
        });
    }
    let mut validators: Vec<(String, u64, bool)> = (0..a.validators)
        .map(|i| (format!("validator{i}"), 100, false))
        .collect();
    if a.liar {
        validators.push(("liar".into(), 40, true));
    }
    let key_seed = format!("magnet-run-{}", a.seed);
    let started = std::time::Instant::now();
    let bar = progress::rounds(protocol.rounds, "run", a.json);
    let report = in_process(
        &ledger_dir,
        protocol.clone(),
        &doc,
        &data,
        &plans,
        &validators,
        a.val_windows,
        &key_seed,
        Some(Box::new(progress::phases(&bar))),
    )?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();

    let gguf = save_and_export(&out, &model, &report.global, &tokenizer)?;
    let names: Vec<_> = plans
        .iter()
        .map(|w| w.name.clone())
        .chain(validators.iter().map(|v| v.0.clone()))
        .map(|n| {
            let k = derived_key(&key_seed, &n).public();
            (n, k)
        })
        .collect();
    let operator = derived_key(&key_seed, "operator").public();
    let ledger = check_ledger(&ledger_dir, &operator, &names)?;
    let rounds: Vec<_> = ledger
        .rounds
        .iter()
        .map(|r| {
            let idx = usize::try_from(r.round).unwrap_or(usize::MAX);
            serde_json::json!({
                "round": r.round,
                "val_loss": report.val_losses.get(idx),
                "emission": r.emission,
                "merged": report.results.get(idx - 1).map(|x| x.merged.len()),
                "outcomes": r.outcomes,
                "uplink_bytes": report.workers.iter().map(|(_, w)| {
                    w.iter().filter(|x| x.round == r.round).map(|x| x.bytes).sum::<u64>()
                }).sum::<u64>(),
            })
        })
        .collect();
    let json = serde_json::json!({
        "model": model,
        "parameters": model.param_count(),
        "corpus": corpus.dir,
        "corpus_source": corpus.source,
        "seed": a.seed,
        "workers": plans.iter().map(|w| serde_json::json!({"name": w.name, "shard": w.shard, "adversary": w.adversary})).collect::<Vec<_>>(),
        "validators": validators.iter().map(|(n, s, l)| serde_json::json!({"name": n, "stake": s, "liar": l})).collect::<Vec<_>>(),
        "protocol": protocol,
        "doc": doc,
        "initial_val_loss": report.val_losses.first(),
        "rounds": rounds,
        "timings": report.timings,
        "evaluations": report.validators,
        "ledger": ledger,
        "gguf": gguf,
        "seconds": seconds,
    });
    std::fs::write(out.join("report.json"), serde_json::to_vec_pretty(&json)?)?;
    eprintln!(
        "run: {} rounds in {seconds:.1} s; val loss {:.4} -> {:.4}; ledger verified ({} entries, root {})",
        ledger.rounds.len(),
        report.val_losses.first().copied().unwrap_or(f64::NAN),
        report.val_losses.last().copied().unwrap_or(f64::NAN),
        ledger.entries,
        &ledger.root[..16],
    );
    for (name, units) in &ledger.balances {
        eprintln!("  {name:>16}: {units}");
    }
    eprintln!("wrote {}", out.join("report.json").display());
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}

#[derive(Args)]
struct OperatorArgs {
    /// Store URL: file:///abs/dir, s3://bucket/prefix.
    #[arg(long)]
    store: String,
    /// Ledger directory (created, or resumed when it holds a ledger).
    #[arg(long)]
    ledger: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Seed phrase of the operator's derived key.
    #[arg(long, default_value = "magnet")]
    key_seed: String,
    /// Seed of the initial weights and the search.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    protocol: ProtocolArgs,
    #[command(flatten)]
    training: TrainingArgs,
    /// Workers to wait for before round 1.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Validators to wait for before round 1.
    #[arg(long, default_value_t = 1)]
    validators: usize,
    /// Commits after which a round closes once the grace window has passed.
    #[arg(long, default_value_t = 1)]
    quorum: usize,
    /// Grace window for stragglers once the commit quorum / more than half of the
    /// validators' stake is in (ms).
    #[arg(long, default_value_t = 20_000)]
    grace_ms: u64,
    /// Hard deadline of a commit phase (ms).
    #[arg(long, default_value_t = 600_000)]
    commit_deadline_ms: u64,
    /// Deadline of the evaluations after a close (ms).
    #[arg(long, default_value_t = 300_000)]
    eval_deadline_ms: u64,
    /// Windows of the fixed val loss (search objective and report).
    #[arg(long, default_value_t = 16)]
    val_windows: usize,
    /// Where the search journal and the report go.
    #[arg(long, default_value = "runs/magnet")]
    out: PathBuf,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn operator(a: &OperatorArgs) -> Result<()> {
    let (model, data) = a.model.load()?;
    let store = Store::open(&a.store)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let protocol = ProtocolConfig {
        min_workers: a.workers,
        min_validators: a.validators,
        quorum: a.quorum,
        grace_ms: a.grace_ms,
        commit_deadline_ms: a.commit_deadline_ms,
        eval_deadline_ms: a.eval_deadline_ms,
        ..a.protocol.protocol()
    };
    protocol.validate()?;
    // A resumed run keeps the document it started with.
    let doc = if let Some(b) = store.get_limited(keys::RUN, protocol.limits.document)? {
        parse::<RunDoc>(&b, keys::RUN)?
    } else {
        let (training, search) = a
            .training
            .choose(&model, &data, a.val_windows, a.seed, &a.out)?;
        RunDoc {
            model: model.clone(),
            training,
            seed: a.seed,
            search,
            protocol: magnet::protocol::hx(&protocol.hash()),
        }
    };
    if doc.model != model {
        bail!("the store's run trains another model than --preset/--model-config");
    }
    let init = initial_weights(&model, &data, doc.seed)?;
    let mut op = Operator::start(
        &store,
        &a.ledger,
        derived_key(&a.key_seed, "operator"),
        protocol,
        init,
        &to_json(&doc),
        doc.search_hash()?,
    )?;
    let mut heldout =
        BitnetHeldOut::new(model.clone(), &data, doc.training.seq_len, a.val_windows)?;
    let mut curve = Vec::new();
    let bar = progress::rounds(op.protocol().rounds, "operator", a.json);
    bar.set_position(op.ledger().state().round.saturating_sub(1));
    op.on_phase = Some(Box::new(progress::phases(&bar)));
    while op.ledger().state().round <= op.protocol().rounds {
        let r = op.run_round()?;
        let val = magnet::heldout::HeldOut::val_loss(&mut heldout, op.global())?;
        bar.set_position(r.round);
        progress::log(
            &bar,
            &format!(
                "operator: round {}: merged {:?}, {} slashed, emission {}, val loss {val:.4}",
                r.round,
                r.merged_workers,
                r.slashed.len(),
                r.emission
            ),
        );
        curve.push(serde_json::json!({"round": r.round, "val_loss": val, "result": r}));
    }
    bar.finish_and_clear();
    let tokenizer = TextTokenizer::load(&a.model.data_dir.join("tokenizer.json"))?;
    let gguf = save_and_export(&a.out, &model, op.global(), &tokenizer)?;
    let state = op.ledger().state();
    let report = serde_json::json!({
        "rounds": curve,
        "timings": op.timings,
        "gguf": gguf,
        "emitted": state.emitted,
        "balances": state.balances.iter().map(|(k, v)| (magnet::protocol::hx(&k.0), *v)).collect::<Vec<_>>(),
        "ledger": a.ledger,
        "doc": doc,
    });
    std::fs::write(
        a.out.join("operator.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// Saves the merged model as a model directory (OUT/model) and exports it to TQ2_0 GGUF
/// (OUT/magnet-tq2_0.gguf); the export's outcome as JSON for the report (a shape that
/// TQ2_0 cannot hold, such as the micro test models, is reported instead of failing a run
/// whose training is done).
fn save_and_export(
    out: &std::path::Path,
    model: &ModelConfig,
    global: &diloco::params::ParamMap,
    tokenizer: &TextTokenizer,
) -> Result<serde_json::Value> {
    ModelDir::save(&out.join("model"), model, global, tokenizer)?;
    let gguf_path = out.join("magnet-tq2_0.gguf");
    let options = ExportOptions {
        target: Target::LlamaCpp(TernaryType::Tq2_0),
        embedding: EmbeddingType::F16,
        name: "magnet".into(),
    };
    Ok(
        match export_gguf(&gguf_path, model, global, tokenizer, &options) {
            Ok(s) => {
                serde_json::json!({"path": gguf_path, "bytes": s.bytes, "type": s.weight_type})
            }
            Err(e) => serde_json::json!({"error": e.to_string()}),
        },
    )
}

/// The protocol and the run document the operator published (what every party reads
/// before it joins).
fn run_documents(store: &Store, timeout: Duration) -> Result<(ProtocolConfig, RunDoc)> {
    let p = roles::read_protocol(store, timeout)?;
    let doc: RunDoc = parse(
        &store.wait_for(
            keys::RUN,
            p.limits.document,
            timeout,
            Duration::from_millis(p.poll_ms),
        )?,
        keys::RUN,
    )?;
    Ok((p, doc))
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Prepare {
            model,
            corpus,
            seed,
        } => {
            let m = model_config(model.preset, model.model_config.as_ref())?;
            let corpus = find_corpus(corpus.as_deref())?
                .context("no corpus: pass --corpus or set MAGNET_CORPUS")?;
            prepare_dataset(&corpus.dir, &model.data_dir, m.vocab_size, seed, &mut |s| {
                eprintln!("{s}");
            })?;
        }
        Cmd::Operator(a) => operator(&a)?,
        Cmd::Run(a) => run_all(&a)?,
        Cmd::Worker {
            party,
            model,
            shard,
            shards,
            seed,
            adversary,
            skip,
            leave_after,
            late,
        } => {
            let (m, data) = model.load()?;
            let store = Store::open(&party.store)?;
            let timeout = Duration::from_millis(party.timeout_ms);
            let (p, doc) = run_documents(&store, timeout)?;
            let total = usize::try_from(p.rounds * p.inner_steps)?;
            let mut trainer = match adversary {
                a if a.is_none_or(Adversary::trains) => Some(bitnet_worker(
                    &m,
                    &data,
                    &doc.training,
                    shard,
                    shards,
                    seed,
                    total,
                )?),
                _ => None,
            };
            let me = Party {
                key: derived_key(&party.key_seed, &party.name),
                name: party.name.clone(),
                stake: 0,
            };
            let bar = progress::rounds(p.rounds, &party.name, party.json);
            let mut phases = progress::phases(&bar);
            let rounds = roles::run_worker(
                &store,
                &me,
                WorkerOptions {
                    trainer: trainer
                        .as_mut()
                        .map(|t| t as &mut dyn diloco::trainer::LocalTrainer),
                    adversary,
                    skip,
                    leave_after,
                    late,
                    timeout,
                    seed,
                    on_phase: Some(&mut phases),
                },
            )?;
            bar.finish_and_clear();
            let sent: u64 = rounds.iter().map(|r| r.bytes).sum();
            eprintln!(
                "worker {}: {} rounds, {sent} artifact bytes",
                party.name,
                rounds.len()
            );
            if party.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"name": party.name, "rounds": rounds})
                    )?
                );
            }
        }
        Cmd::Validator {
            party,
            model,
            stake,
            val_windows,
            lie,
        } => {
            let (m, data) = model.load()?;
            let store = Store::open(&party.store)?;
            let timeout = Duration::from_millis(party.timeout_ms);
            let (p, doc) = run_documents(&store, timeout)?;
            let mut heldout = BitnetHeldOut::new(m, &data, doc.training.seq_len, val_windows)?;
            let me = Party {
                key: derived_key(&party.key_seed, &party.name),
                name: party.name.clone(),
                stake,
            };
            let bar = progress::rounds(p.rounds, &party.name, party.json);
            let mut phases = progress::phases(&bar);
            let rounds =
                roles::run_validator(&store, &me, &mut heldout, lie, timeout, Some(&mut phases))?;
            bar.finish_and_clear();
            eprintln!("validator {}: {} rounds", party.name, rounds.len());
            if party.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"name": party.name, "rounds": rounds})
                    )?
                );
            }
        }
    }
    Ok(())
}
