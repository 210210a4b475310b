//! A whole run in one process: the operator, the workers and the validators as threads that
//! meet only through an in-memory [`Store`] (the same code the separate processes run).

use crate::bitnet::BitnetHeldOut;
use crate::error::{Error, Result};
use crate::heldout::HeldOut;
use crate::operator::{Operator, RoundTiming};
use crate::protocol::{ProtocolConfig, RoundResult};
use crate::roles::{
    self, Adversary, Party, ValidatorRound, WorkerOptions, WorkerRound, derived_key,
};
use crate::store::Store;
use crate::training::{Training, bitnet_worker, initial_weights};
use bitnet_model::ModelConfig;
use bitnet_model::data::TokenData;
use incentive_ledger::merkle::Hash;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// The run's configuration document (`magnet/run.json`): its SHA-256 is in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDoc {
    /// Model architecture.
    pub model: ModelConfig,
    /// Inner training config every worker uses.
    pub training: Training,
    /// Seed of the initial weights.
    pub seed: u64,
    /// The search that chose `training`, if one ran.
    pub search: Option<crate::search::SearchRecord>,
    /// SHA-256 (hex) of the protocol.
    pub protocol: String,
}

impl RunDoc {
    /// The search journal's hash (zeros: no search).
    pub fn search_hash(&self) -> Result<Hash> {
        match &self.search {
            Some(s) => crate::protocol::unhex32(&s.journal_sha256),
            None => Ok([0; 32]),
        }
    }
}

/// One worker of an in-process run: its name, data shard and behaviour.
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    /// Name.
    pub name: String,
    /// Data shard.
    pub shard: usize,
    /// Behaviour (`None`: honest).
    pub adversary: Option<Adversary>,
}

/// What an in-process run produced.
#[derive(Debug)]
pub struct InProcessReport {
    /// Per round.
    pub results: Vec<RoundResult>,
    /// Operator timings.
    pub timings: Vec<RoundTiming>,
    /// Per worker name.
    pub workers: Vec<(String, Vec<WorkerRound>)>,
    /// Per validator name.
    pub validators: Vec<(String, Vec<ValidatorRound>)>,
    /// The global weights after the last round (what the operator published last).
    pub global: diloco::params::ParamMap,
    /// The global model's loss on the fixed validation windows: before round 1, then after
    /// each round.
    pub val_losses: Vec<f64>,
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join()
        .map_err(|_| Error::Protocol("a party's thread panicked".into()))?
}

/// Runs a whole run with threads over an in-memory store; the ledger goes to `ledger_dir`.
/// `on_phase` sees the operator's phases (progress display).
#[allow(clippy::too_many_arguments)]
pub fn in_process(
    ledger_dir: &Path,
    protocol: ProtocolConfig,
    doc: &RunDoc,
    data: &TokenData,
    workers: &[WorkerPlan],
    validators: &[(String, u64, bool)],
    val_windows: usize,
    key_seed: &str,
    on_phase: Option<Box<crate::roles::PhaseFn>>,
) -> Result<InProcessReport> {
    let store = Store::memory();
    let shards = workers.iter().map(|w| w.shard + 1).max().unwrap_or(1);
    let total = usize::try_from(protocol.rounds * protocol.inner_steps).unwrap_or(usize::MAX);
    let init = initial_weights(&doc.model, data, doc.seed)?;
    let doc_bytes = crate::protocol::to_json(doc);
    let timeout = Duration::from_mins(10);
    let mut on_phase = on_phase;
    std::thread::scope(|s| -> Result<InProcessReport> {
        let store = &store;
        type OpOut = (
            Vec<RoundResult>,
            Vec<RoundTiming>,
            diloco::params::ParamMap,
            Vec<f64>,
        );
        let op = s.spawn(|| -> Result<OpOut> {
            let mut op = Operator::start(
                store,
                ledger_dir,
                derived_key(key_seed, "operator"),
                protocol.clone(),
                init,
                &doc_bytes,
                doc.search_hash()?,
            )?;
            op.on_phase = on_phase.take();
            let mut heldout =
                BitnetHeldOut::new(doc.model.clone(), data, doc.training.seq_len, val_windows)?;
            let mut val = vec![heldout.val_loss(op.global())?];
            let mut results = Vec::new();
            while op.ledger().state().round <= op.protocol().rounds {
                results.push(op.run_round()?);
                val.push(heldout.val_loss(op.global())?);
            }
            Ok((results, op.timings.clone(), op.global().clone(), val))
        });
        let ws: Vec<_> = workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let doc = doc.clone();
                s.spawn(move || -> Result<(String, Vec<WorkerRound>)> {
                    let mut t = match w.adversary {
                        a if a.is_none_or(Adversary::trains) => Some(bitnet_worker(
                            &doc.model,
                            data,
                            &doc.training,
                            w.shard,
                            shards,
                            doc.seed + 1 + i as u64,
                            total,
                        )?),
                        _ => None,
                    };
                    let party = Party {
                        key: derived_key(key_seed, &w.name),
                        name: w.name.clone(),
                        stake: 0,
                    };
                    let rounds = roles::run_worker(
                        store,
                        &party,
                        WorkerOptions {
                            trainer: t
                                .as_mut()
                                .map(|t| t as &mut dyn diloco::trainer::LocalTrainer),
                            adversary: w.adversary,
                            skip: Vec::new(),
                            leave_after: None,
                            late: Vec::new(),
                            timeout,
                            seed: i as u64,
                            on_phase: None,
                        },
                    )?;
                    Ok((w.name.clone(), rounds))
                })
            })
            .collect();
        let vs: Vec<_> = validators
            .iter()
            .map(|(name, stake, liar)| {
                let doc = doc.clone();
                s.spawn(move || -> Result<(String, Vec<ValidatorRound>)> {
                    let mut h = BitnetHeldOut::new(
                        doc.model.clone(),
                        data,
                        doc.training.seq_len,
                        val_windows,
                    )?;
                    let party = Party {
                        key: derived_key(key_seed, name),
                        name: name.clone(),
                        stake: *stake,
                    };
                    Ok((
                        name.clone(),
                        roles::run_validator(store, &party, &mut h, *liar, timeout, None)?,
                    ))
                })
            })
            .collect();
        let (results, timings, global, val_losses) = join(op)?;
        let workers = ws.into_iter().map(join).collect::<Result<_>>()?;
        let validators = vs.into_iter().map(join).collect::<Result<_>>()?;
        Ok(InProcessReport {
            results,
            timings,
            workers,
            validators,
            global,
            val_losses,
        })
    })
}

/// One contribution's outcome in a settled round, by party name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The worker's name (its key in hex when the name is unknown).
    pub worker: String,
    /// Contribution id (hex).
    pub contribution: String,
    /// Stake-weighted median score in ppm (`None`: no score, e.g. slashed before scoring).
    pub score_ppm: Option<i64>,
    /// Slash reason, if slashed.
    pub slashed: Option<String>,
    /// Units paid.
    pub reward: u64,
}

/// A settled round as the ledger records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettledRound {
    /// Round.
    pub round: u64,
    /// Units minted.
    pub emission: u64,
    /// Every contribution, in log order.
    pub outcomes: Vec<Outcome>,
}

/// What reopening and re-verifying a ledger from its files found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerCheck {
    /// Ledger directory.
    pub dir: String,
    /// The operator key it was pinned to (hex).
    pub operator: String,
    /// Entries replayed.
    pub entries: u64,
    /// Settlements replayed.
    pub settlements: u64,
    /// Sum of all balances after the replay.
    pub total_balance: u64,
    /// Units minted.
    pub emitted: u64,
    /// Merkle root over every entry (hex).
    pub root: String,
    /// Balances by name (key hex when the name is unknown), in `names` order first.
    pub balances: Vec<(String, u64)>,
    /// The rounds as settled.
    pub rounds: Vec<SettledRound>,
}

/// Reopens the ledger in `dir` pinned to `operator`, verifies every entry and signature
/// from its files ([`incentive_ledger::ledger::verify_dir`]) and reads the settled rounds
/// back, naming keys by `names`. Nothing here trusts the run's own report: it is what anyone
/// holding the ledger files can check.
pub fn check_ledger(
    dir: &Path,
    operator: &incentive_ledger::identity::PublicKey,
    names: &[(String, incentive_ledger::identity::PublicKey)],
) -> Result<LedgerCheck> {
    use incentive_ledger::rewards::EvalScore;
    let verified = incentive_ledger::ledger::verify_dir(dir, Some(operator))?;
    let ledger = incentive_ledger::ledger::Ledger::open(dir, Some(operator), None)?;
    let name = |k: &incentive_ledger::identity::PublicKey| {
        names
            .iter()
            .find(|(_, key)| key == k)
            .map_or_else(|| crate::protocol::hx(&k.0), |(n, _)| n.clone())
    };
    let state = ledger.state();
    let mut balances: Vec<(String, u64)> = names
        .iter()
        .map(|(n, k)| (n.clone(), state.balances.get(k).copied().unwrap_or(0)))
        .collect();
    for (k, v) in &state.balances {
        if !names.iter().any(|(_, key)| key == k) {
            balances.push((name(k), *v));
        }
    }
    let rounds = state
        .history
        .iter()
        .map(|h| SettledRound {
            round: h.round,
            emission: h.emission,
            outcomes: h
                .outcomes
                .iter()
                .map(|o| Outcome {
                    worker: name(&o.worker),
                    contribution: crate::protocol::hx(&o.id),
                    score_ppm: match o.consensus {
                        Some(EvalScore::Ppm(p)) => Some(p),
                        _ => None,
                    },
                    slashed: o.slash.map(|s| s.to_string()),
                    reward: o.reward,
                })
                .collect(),
        })
        .collect();
    Ok(LedgerCheck {
        dir: dir.display().to_string(),
        operator: crate::protocol::hx(&operator.0),
        entries: verified.entries,
        settlements: verified.settlements,
        total_balance: verified.total_balance,
        emitted: state.emitted,
        root: crate::protocol::hx(&ledger.log().tree().root()),
        balances,
        rounds,
    })
}
