//! A whole run in one process: the operator, the workers and the validators as threads that
//! meet only through an in-memory [`Store`] (the same code the separate processes run).

use crate::bitnet::BitnetHeldOut;
use crate::error::{Error, Result};
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

/// One worker of an in-process run.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
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
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join()
        .map_err(|_| Error::Protocol("a party's thread panicked".into()))?
}

/// Runs a whole run with threads over an in-memory store; the ledger goes to `ledger_dir`.
#[allow(clippy::too_many_arguments)]
pub fn in_process(
    ledger_dir: &Path,
    protocol: ProtocolConfig,
    doc: &RunDoc,
    data: &TokenData,
    workers: &[WorkerSpec],
    validators: &[(String, u64, bool)],
    val_windows: usize,
    key_seed: &str,
) -> Result<InProcessReport> {
    let store = Store::memory();
    let shards = workers.iter().map(|w| w.shard + 1).max().unwrap_or(1);
    let total = usize::try_from(protocol.rounds * protocol.inner_steps).unwrap_or(usize::MAX);
    let init = initial_weights(&doc.model, data, doc.seed)?;
    let doc_bytes = crate::protocol::to_json(doc);
    let timeout = Duration::from_secs(600);
    std::thread::scope(|s| -> Result<InProcessReport> {
        let store = &store;
        let op = s.spawn(|| -> Result<(Vec<RoundResult>, Vec<RoundTiming>)> {
            let mut op = Operator::start(
                store,
                ledger_dir,
                derived_key(key_seed, "operator"),
                protocol.clone(),
                init,
                &doc_bytes,
                doc.search_hash()?,
            )?;
            let r = op.run()?;
            Ok((r, op.timings.clone()))
        });
        let ws: Vec<_> = workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let doc = doc.clone();
                s.spawn(move || -> Result<(String, Vec<WorkerRound>)> {
                    let mut t = match w.adversary {
                        None | Some(Adversary::Inflate | Adversary::Poison) => Some(bitnet_worker(
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
                            timeout,
                            seed: i as u64,
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
                        roles::run_validator(store, &party, &mut h, *liar, timeout)?,
                    ))
                })
            })
            .collect();
        let (results, timings) = join(op)?;
        let workers = ws.into_iter().map(join).collect::<Result<_>>()?;
        let validators = vs.into_iter().map(join).collect::<Result<_>>()?;
        Ok(InProcessReport {
            results,
            timings,
            workers,
            validators,
        })
    })
}
