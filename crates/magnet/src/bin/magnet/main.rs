//! `magnet`: the parties of a MAGNET run as subcommands of one binary. They meet only
//! through the object store given by `--store` (`file:///dir`, `s3://bucket/prefix` with the
//! `AWS_*` / `MAGNET_S3_ENDPOINT` settings), so each can run on its own machine:
//!
//! ```text
//! magnet prepare   --preset tiny --data-dir D                       # tokenizer + shards, once per machine
//! magnet operator  --store URL --ledger L --preset tiny --data-dir D --rounds 8 [--training-config T]
//! magnet worker    --store URL --preset tiny --data-dir D --name w0 --shard 0 --shards 3
//! magnet validator --store URL --preset tiny --data-dir D --name v0 --stake 100
//! ```
//!
//! The operator runs a short phased search for the training config first unless
//! `--training-config FILE` gives one; workers read the chosen config from the store.

use anyhow::{Context, Result, bail};
use bitnet_model::ModelConfig;
use bitnet_model::data::{TokenData, find_corpus, prepare_dataset};
use clap::{Args, Parser, Subcommand, ValueEnum};
use diloco::codec::Codec;
use magnet::bitnet::BitnetHeldOut;
use magnet::operator::Operator;
use magnet::protocol::{ProtocolConfig, keys, parse, to_json};
use magnet::roles::{self, Adversary, Party, WorkerOptions, derived_key};
use magnet::run::RunDoc;
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

/// Architecture presets.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// bitnet-model's `tiny`.
    Tiny,
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

impl ModelArgs {
    fn load(&self) -> Result<(ModelConfig, TokenData)> {
        let model = match &self.model_config {
            Some(p) => ModelConfig::from_toml(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )?,
            None => match self.preset {
                Preset::Tiny => ModelConfig::preset("tiny")?,
            },
        };
        let data = TokenData::open(&self.data_dir)
            .with_context(|| format!("opening the dataset {}", self.data_dir.display()))?;
        Ok((model, data))
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
    },
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
    /// Outer rounds.
    #[arg(long, default_value_t = 4)]
    rounds: u64,
    /// Inner steps per round (H).
    #[arg(long, default_value_t = 20)]
    inner_steps: u64,
    /// Uplink codec honest workers use: f32, f16, int8[:B], q4[:B], topk:D.
    #[arg(long, default_value = "f32")]
    codec: Codec,
    /// Workers to wait for before round 1.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Validators to wait for before round 1.
    #[arg(long, default_value_t = 1)]
    validators: usize,
    /// Commits that close a round after the grace window.
    #[arg(long, default_value_t = 1)]
    quorum: usize,
    /// Grace window after the first commit / the validators' stake quorum (ms).
    #[arg(long, default_value_t = 20_000)]
    grace_ms: u64,
    /// Hard deadline of a commit phase (ms).
    #[arg(long, default_value_t = 600_000)]
    commit_deadline_ms: u64,
    /// Deadline of the evaluations after a close (ms).
    #[arg(long, default_value_t = 300_000)]
    eval_deadline_ms: u64,
    /// Held-out windows per validator measurement.
    #[arg(long, default_value_t = 8)]
    heldout_windows: usize,
    /// Units minted in round 1.
    #[arg(long, default_value_t = 1_000_000)]
    emission: u64,
    /// Rounds per emission halving.
    #[arg(long, default_value_t = 4)]
    halving_rounds: u64,
    /// The training config (JSON: lr, batch_size, seq_len, warmup_steps); skips the search.
    #[arg(long)]
    training_config: Option<PathBuf>,
    /// Search: trials over the learning rate (the first phase).
    #[arg(long, default_value_t = 3)]
    search_lr_trials: usize,
    /// Search: trials over batch size and warm-up (the second phase).
    #[arg(long, default_value_t = 2)]
    search_shape_trials: usize,
    /// Search: inner steps per trial.
    #[arg(long, default_value_t = 20)]
    search_steps: usize,
    /// Search: sequence length of every trial (and the run).
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
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
        rounds: a.rounds,
        inner_steps: a.inner_steps,
        codec: a.codec,
        min_workers: a.workers,
        min_validators: a.validators,
        quorum: a.quorum,
        grace_ms: a.grace_ms,
        commit_deadline_ms: a.commit_deadline_ms,
        eval_deadline_ms: a.eval_deadline_ms,
        heldout_windows: a.heldout_windows,
        emission: a.emission,
        halving_rounds: a.halving_rounds,
        ..ProtocolConfig::default()
    };
    protocol.validate()?;
    // A resumed run keeps the document it started with.
    let doc = match store.get_limited(keys::RUN, protocol.limits.document)? {
        Some(b) => parse::<RunDoc>(&b, keys::RUN)?,
        None => {
            let (training, search) = match &a.training_config {
                Some(p) => {
                    let t: Training = serde_json::from_str(
                        &std::fs::read_to_string(p)
                            .with_context(|| format!("reading {}", p.display()))?,
                    )
                    .with_context(|| format!("parsing {}", p.display()))?;
                    t.validate()?;
                    (t, None)
                }
                None => {
                    let base = Training {
                        seq_len: a.seq_len,
                        ..Training::default()
                    };
                    eprintln!(
                        "operator: phased search ({} + {} trials of {} steps)",
                        a.search_lr_trials, a.search_shape_trials, a.search_steps
                    );
                    let s = magnet::search::phased_search(
                        &a.out.join("search"),
                        &model,
                        &data,
                        &base,
                        a.val_windows,
                        a.search_steps,
                        a.search_lr_trials,
                        a.search_shape_trials,
                        a.seed,
                    )?;
                    eprintln!(
                        "operator: search chose {:?} (val loss {:.4}, journal {})",
                        s.best,
                        s.best_value,
                        &s.journal_sha256[..16]
                    );
                    (s.best, Some(s))
                }
            };
            RunDoc {
                model: model.clone(),
                training,
                seed: a.seed,
                search,
                protocol: magnet::protocol::hx(&protocol.hash()),
            }
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
    while op.ledger().state().round <= op.protocol().rounds {
        let r = op.run_round()?;
        let val = magnet::heldout::HeldOut::val_loss(&mut heldout, op.global())?;
        eprintln!(
            "operator: round {}: merged {:?}, {} slashed, emission {}, val loss {val:.4}",
            r.round,
            r.merged_workers,
            r.slashed.len(),
            r.emission
        );
        curve.push(serde_json::json!({"round": r.round, "val_loss": val, "result": r}));
    }
    let state = op.ledger().state();
    let report = serde_json::json!({
        "rounds": curve,
        "timings": op.timings,
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

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Prepare {
            model,
            corpus,
            seed,
        } => {
            let m = match &model.model_config {
                Some(p) => ModelConfig::from_toml(&std::fs::read_to_string(p)?)?,
                None => ModelConfig::preset("tiny")?,
            };
            let corpus = find_corpus(corpus.as_deref())?
                .context("no corpus: pass --corpus or set MAGNET_CORPUS")?;
            prepare_dataset(&corpus.dir, &model.data_dir, m.vocab_size, seed, &mut |s| {
                eprintln!("{s}")
            })?;
        }
        Cmd::Operator(a) => operator(&a)?,
        Cmd::Worker {
            party,
            model,
            shard,
            shards,
            seed,
            adversary,
            skip,
            leave_after,
        } => {
            let (m, data) = model.load()?;
            let store = Store::open(&party.store)?;
            let timeout = Duration::from_millis(party.timeout_ms);
            let p = roles::read_protocol(&store, timeout)?;
            let doc: RunDoc = parse(
                &store.wait_for(
                    keys::RUN,
                    p.limits.document,
                    timeout,
                    Duration::from_millis(p.poll_ms),
                )?,
                keys::RUN,
            )?;
            let total = usize::try_from(p.rounds * p.inner_steps)?;
            let mut trainer = match adversary {
                None | Some(Adversary::Inflate | Adversary::Poison) => Some(bitnet_worker(
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
                    timeout,
                    seed,
                },
            )?;
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
            let p = roles::read_protocol(&store, timeout)?;
            let doc: RunDoc = parse(
                &store.wait_for(
                    keys::RUN,
                    p.limits.document,
                    timeout,
                    Duration::from_millis(p.poll_ms),
                )?,
                keys::RUN,
            )?;
            let mut heldout = BitnetHeldOut::new(m, &data, doc.training.seq_len, val_windows)?;
            let me = Party {
                key: derived_key(&party.key_seed, &party.name),
                name: party.name.clone(),
                stake,
            };
            let rounds = roles::run_validator(&store, &me, &mut heldout, lie, timeout)?;
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
