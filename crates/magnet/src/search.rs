//! MAGNET's first pillar at the start of a run: a short phased autoresearch search over the
//! inner training config (learning rate, then batch size and warm-up), each trial a short
//! BitNet training run scored by its val loss. The winner trains the network; the best trial
//! and the SHA-256 of the study's journal are recorded in the ledger (the protocol record),
//! so anyone can check which search chose the config.

use crate::bitnet::BitnetHeldOut;
use crate::error::{Error, Result};
use crate::heldout::HeldOut;
use crate::training::{Training, bitnet_worker};
use autoresearch::{
    Direction, GridSampler, JournalStorage, OptimizeOptions, ParamValue, Params, Phase,
    PhasedSampler, QmcSampler, SearchSpace, Study, TrialError, TrialHandle,
};
use bitnet_model::ModelConfig;
use bitnet_model::data::TokenData;
use diloco::trainer::LocalTrainer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// What the search chose, and how to check it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRecord {
    /// The winning training config.
    pub best: Training,
    /// Its val loss.
    pub best_value: f64,
    /// Its trial number.
    pub best_trial: u64,
    /// Trials run.
    pub trials: usize,
    /// SHA-256 (hex) of the study journal (`journal.jsonl`).
    pub journal_sha256: String,
    /// Steps per trial.
    pub trial_steps: usize,
}

fn ints(v: &[i64]) -> Vec<ParamValue> {
    v.iter().map(|&x| ParamValue::Int(x)).collect()
}

/// Runs the phased search: `lr_trials` low-discrepancy learning rates, then a shuffled grid
/// of `shape_trials` (batch size, warm-up) pairs at the best rate, each trial `trial_steps`
/// inner steps of one worker on the whole training split, scored by the val loss on the
/// first `val_windows` windows of the validation stream (the run's val loss).
#[allow(clippy::too_many_arguments)]
pub fn phased_search(
    dir: &Path,
    model: &ModelConfig,
    data: &TokenData,
    base: &Training,
    val_windows: usize,
    trial_steps: usize,
    lr_trials: usize,
    shape_trials: usize,
    seed: u64,
) -> Result<SearchRecord> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
    let journal = dir.join("journal.jsonl");
    let space = SearchSpace::new()
        .float("lr", 1e-3, 3e-2, true)
        .categorical("batch_size", ints(&[2, 4, 8]))
        .categorical("warmup_steps", ints(&[0, 2, 4]));
    let start: Params = [
        ("lr", ParamValue::Float(base.lr)),
        ("batch_size", ParamValue::Int(base.batch_size as i64)),
        ("warmup_steps", ParamValue::Int(base.warmup_steps as i64)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let phases = vec![
        Phase {
            params: vec!["lr".into()],
            sampler: Box::new(QmcSampler::new(seed)),
            trials: lr_trials.max(1),
        },
        Phase {
            params: vec!["batch_size".into(), "warmup_steps".into()],
            sampler: Box::new(GridSampler::new(3, seed + 1)),
            trials: shape_trials,
        },
    ];
    let total = lr_trials.max(1) + shape_trials;
    let study = Study::builder(space)
        .name("magnet-search")
        .direction(Direction::Minimize)
        .sampler(PhasedSampler::new(phases, Some(start)))
        .storage(Arc::new(JournalStorage::open(&journal)?))
        .seed(seed)
        .build()?;
    let done = study.trials()?.len();
    let (model, data, base) = (model.clone(), data.clone(), *base);
    let objective = move |t: &TrialHandle| -> Result<f64, TrialError> {
        let fail = |e: Error| TrialError::Failed(e.to_string());
        let training = Training {
            lr: t.suggest_float("lr")?,
            batch_size: t.suggest_int("batch_size")? as usize,
            warmup_steps: t.suggest_int("warmup_steps")? as usize,
            ..base
        };
        let mut w =
            bitnet_worker(&model, &data, &training, 0, 1, seed, trial_steps).map_err(fail)?;
        for _ in 0..trial_steps {
            w.train_step().map_err(|e| fail(e.into()))?;
        }
        let p = w.params().map_err(|e| fail(e.into()))?;
        let mut h = BitnetHeldOut::new(model.clone(), &data, training.seq_len, val_windows)
            .map_err(fail)?;
        h.val_loss(&p).map_err(fail)
    };
    study.optimize(
        Arc::new(objective),
        &OptimizeOptions::trials(total.saturating_sub(done)),
    )?;
    let best = study
        .best_trial()?
        .ok_or_else(|| Error::Protocol("the search completed no trial".into()))?;
    let get_i = |k: &str| match best.params.get(k) {
        Some(ParamValue::Int(v)) => Ok(*v as usize),
        other => Err(Error::Protocol(format!("best trial: {k} = {other:?}"))),
    };
    let lr = match best.params.get("lr") {
        Some(ParamValue::Float(v)) => *v,
        other => return Err(Error::Protocol(format!("best trial: lr = {other:?}"))),
    };
    let bytes = std::fs::read(&journal).map_err(|e| Error::io(journal.display(), e))?;
    Ok(SearchRecord {
        best: Training {
            lr,
            batch_size: get_i("batch_size")?,
            warmup_steps: get_i("warmup_steps")?,
            ..base
        },
        best_value: best.value().unwrap_or(f64::NAN),
        best_trial: best.number,
        trials: study.trials()?.len(),
        journal_sha256: crate::protocol::hx(&Sha256::digest(&bytes).into()),
        trial_steps,
    })
}
