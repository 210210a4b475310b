//! The in-process outer loop: k local trainers stepped in lockstep on one thread, talking
//! through any [`Exchange`] with the same protocol the separate binaries use, so a run is
//! deterministic for a fixed seed. Covers plain DiLoCo (one fragment) and Streaming
//! DiLoCo (strided fragments, outer step applied `delay` inner steps late and mixed with
//! the local weights).

use crate::aggregate::{Aggregator, ScreenConfig};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::exchange::Exchange;
use crate::fragment::FragmentPlan;
use crate::outer::OuterOptimizer;
use crate::params::{self, ParamMap};
use crate::protocol::{Coordinator, CoordinatorConfig, Manifest, WorkerClient};
use crate::trainer::{LocalTrainer, LossEvaluator};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings of an in-process DiLoCo run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DilocoConfig {
    /// Inner steps between two syncs of the same tensors (H).
    pub inner_steps: u64,
    /// Inner steps each worker takes in total.
    pub total_steps: u64,
    /// Outer optimizer.
    pub outer: OuterOptimizer,
    /// Aggregation rule.
    pub aggregator: Aggregator,
    /// Rejection rules.
    pub screen: ScreenConfig,
    /// Uplink codec (pseudo-gradients).
    pub codec: Codec,
    /// Downlink codec (outer steps).
    pub step_codec: Codec,
    /// Keep and re-send what the uplink codec lost.
    pub error_feedback: bool,
    /// Streaming fragments (1 = plain DiLoCo).
    pub fragments: usize,
    /// Inner steps between sending a fragment and applying its outer step (tau).
    pub delay: u64,
    /// Weight of the new global weights when applying a step: `alpha * global +
    /// (1 - alpha) * local`. With `delay = 0` use 1 (plain replacement).
    pub mix: f32,
    /// Before each sync, measure drift: mean pairwise linear CKA of the workers'
    /// [`probe_features`](LocalTrainer::probe_features).
    pub probe_drift: bool,
}

impl Default for DilocoConfig {
    fn default() -> Self {
        Self {
            inner_steps: 50,
            total_steps: 500,
            outer: OuterOptimizer::default(),
            aggregator: Aggregator::Mean,
            screen: ScreenConfig::default(),
            codec: Codec::F32,
            step_codec: Codec::F32,
            error_feedback: false,
            fragments: 1,
            delay: 0,
            mix: 1.0,
            probe_drift: false,
        }
    }
}

/// What happened at one sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundLog {
    /// Inner step (per worker) after which the outer step was applied.
    pub step: u64,
    /// Tokens trained on by all workers so far.
    pub tokens: u64,
    /// Mean training loss of the workers' last inner step.
    pub train_loss: f32,
    /// Total bytes sent by all workers so far.
    pub bytes_sent: u64,
    /// Total bytes received by all workers so far.
    pub bytes_received: u64,
    /// Mean pairwise linear CKA between the workers' probe features just before the
    /// sync (1 = no drift); `None` when not measured.
    pub worker_cka: Option<f64>,
    /// The coordinator's manifest.
    pub manifest: Manifest,
}

/// Result of [`run_in_process`].
#[derive(Debug, Clone)]
pub struct RunReport {
    /// One record per sync.
    pub rounds: Vec<RoundLog>,
    /// The final global weights.
    pub global: ParamMap,
    /// Bytes sent by all workers.
    pub bytes_sent: u64,
    /// Bytes received by all workers (initial download included).
    pub bytes_received: u64,
    /// Of `bytes_received`, the initial global weights each worker downloaded on
    /// joining (a run whose workers share a seeded initialisation would not send them).
    pub initial_download: u64,
    /// Tokens trained on by all workers.
    pub tokens: u64,
}

/// Called after each sync with the log, the global weights and the trainers.
pub type Observer<'a, T> = dyn FnMut(&RoundLog, &ParamMap, &mut [T]) -> Result<()> + 'a;

/// Runs DiLoCo with `trainers` as the workers (ids 0..k). The initial global weights are
/// `trainers[0]`'s; every trainer starts from them. `observe` is called after each sync
/// with the log, the global weights and the trainers (for evaluation and drift).
pub fn run_in_process<T: LocalTrainer>(
    trainers: &mut [T],
    cfg: &DilocoConfig,
    ex: &dyn Exchange,
    scorer: Option<Box<dyn LossEvaluator + Send>>,
    observe: &mut Observer<'_, T>,
) -> Result<RunReport> {
    let bad = |m: String| Error::Config {
        field: "diloco".into(),
        message: m,
    };
    if trainers.is_empty() {
        return Err(bad("no workers".into()));
    }
    if cfg.delay >= cfg.inner_steps {
        return Err(bad(format!(
            "delay {} must be below the sync period {}",
            cfg.delay, cfg.inner_steps
        )));
    }
    if !(cfg.mix > 0.0 && cfg.mix <= 1.0) {
        return Err(bad(format!("mix {} must be in (0, 1]", cfg.mix)));
    }
    let init = trainers[0].params()?;
    let plan = FragmentPlan::strided(init.keys().cloned(), cfg.fragments, cfg.inner_steps)?;
    let ccfg = CoordinatorConfig {
        outer: cfg.outer,
        aggregator: cfg.aggregator,
        screen: cfg.screen,
        step_codec: cfg.step_codec,
        checkpoint_every: 0,
    };
    let mut coord = Coordinator::start(ex, init.clone(), ccfg)?;
    if let Some(s) = scorer {
        coord = coord.with_scorer(s);
    }
    let instant = Duration::ZERO;
    let mut clients = Vec::with_capacity(trainers.len());
    for (w, t) in trainers.iter_mut().enumerate() {
        let mut c = WorkerClient::join(ex, w as u32, cfg.codec, 1, instant, instant)?;
        c.error_feedback = cfg.error_feedback;
        t.set_params(c.anchor())?;
        clients.push(c);
    }
    let initial_download: u64 = clients.iter().map(|c| c.bytes_received).sum();
    let mut round = 0u64;
    let mut pending: Vec<(u64, u64)> = Vec::new(); // (apply at step, round)
    let mut rounds = Vec::new();
    let mut tokens = 0u64;
    let mut last_loss = vec![0.0f32; trainers.len()];
    let mut cka_at: std::collections::BTreeMap<u64, Option<f64>> =
        std::collections::BTreeMap::new();
    for t in 1..=cfg.total_steps {
        for (w, tr) in trainers.iter_mut().enumerate() {
            last_loss[w] = tr.train_step().map_err(|e| match e {
                // Name the worker on the trainer's own error; keep every error's cause.
                Error::Trainer {
                    worker: None,
                    source,
                } => Error::Trainer {
                    worker: Some(w as u32),
                    source,
                },
                Error::Trainer { .. } => e,
                other => Error::Trainer {
                    worker: Some(w as u32),
                    source: Box::new(other),
                },
            })?;
            tokens += tr.tokens_per_step();
        }
        for f in plan.syncing_at(t) {
            round += 1;
            cka_at.insert(
                round,
                if cfg.probe_drift {
                    worker_cka(trainers)?
                } else {
                    None
                },
            );
            let names = &plan.fragments[f];
            for (c, tr) in clients.iter_mut().zip(trainers.iter()) {
                let local = params::subset(&tr.params()?, names);
                c.submit(ex, round, tr.tokens_per_step() as f32, &local)?;
            }
            let frag = (cfg.fragments > 1).then_some((f as u32, names.as_slice()));
            coord.run_round(ex, round, frag, instant, instant)?;
            pending.push((t + cfg.delay, round));
        }
        let last_step = t == cfg.total_steps;
        let due: Vec<u64> = pending
            .iter()
            .filter(|(at, _)| *at <= t || last_step)
            .map(|&(_, r)| r)
            .collect();
        pending.retain(|(at, _)| *at > t && !last_step);
        for r in due {
            let mut manifest = None;
            for (c, tr) in clients.iter_mut().zip(trainers.iter_mut()) {
                let (m, fresh) = c.receive(ex, r, instant, instant)?;
                let load = if cfg.mix < 1.0 {
                    let local = params::subset(&tr.params()?, fresh.keys());
                    let mut mixed = fresh;
                    params::scale(&mut mixed, cfg.mix);
                    params::axpy(&mut mixed, 1.0 - cfg.mix, &local)?;
                    mixed
                } else {
                    fresh
                };
                tr.set_params(&load)?;
                manifest = Some(m);
            }
            let log = RoundLog {
                step: t,
                tokens,
                train_loss: last_loss.iter().sum::<f32>() / last_loss.len() as f32,
                bytes_sent: clients.iter().map(|c| c.bytes_sent).sum(),
                bytes_received: clients.iter().map(|c| c.bytes_received).sum(),
                worker_cka: cka_at.remove(&r).flatten(),
                manifest: manifest.expect("at least one worker"),
            };
            observe(&log, coord.global(), trainers)?;
            rounds.push(log);
        }
    }
    Ok(RunReport {
        rounds,
        global: coord.global().clone(),
        bytes_sent: clients.iter().map(|c| c.bytes_sent).sum(),
        bytes_received: clients.iter().map(|c| c.bytes_received).sum(),
        initial_download,
        tokens,
    })
}

/// Mean pairwise linear CKA of the trainers' probe features (`None` if any has none).
pub fn worker_cka<T: LocalTrainer>(trainers: &mut [T]) -> Result<Option<f64>> {
    let mut feats = Vec::with_capacity(trainers.len());
    for t in trainers.iter_mut() {
        match t.probe_features()? {
            Some(f) => feats.push(f),
            None => return Ok(None),
        }
    }
    let (mut sum, mut n) = (0.0, 0u32);
    for i in 0..feats.len() {
        for j in i + 1..feats.len() {
            sum += crate::drift::linear_cka(&feats[i], &feats[j])?;
            n += 1;
        }
    }
    Ok((n > 0).then(|| sum / f64::from(n)))
}
