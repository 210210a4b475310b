//! Step-level training: [`Trainer`] (one optimizer step at a time, evaluation, weight
//! exchange, checkpoints) and [`fit`] (the loop with periodic validation, metrics JSONL and
//! checkpoints) that `genkidama train` drives.
//!
//! Optimizer: AdamW (betas from [`TrainConfig`], 0.9 / 0.95 by default) with decoupled
//! weight decay 0.1 in stage 1 and 0 in stage 2, the two-stage learning rate of
//! [`TrainConfig::lr_at`], global gradient-norm clipping, gradient accumulation.
//!
//! Checkpoint directory (`Trainer::save_checkpoint`):
//!
//! | file | content |
//! |---|---|
//! | `model.safetensors` | canonical weights |
//! | `optimizer.bpk` | AdamW moments (burnpack, keyed by stable parameter ids) |
//! | `state.json` | [`CheckpointState`]: step, data-sampler RNG, configs, tokens seen |
//!
//! The schedule is a pure function of the step, so step + RNG + moments + weights is the
//! whole training state: a resumed run reproduces the uninterrupted loss trajectory.

pub mod allocator;
pub mod fit;
pub mod schedule;

mod machine;

pub use fit::{Event, FitReport, Metric, fit};
pub use machine::Machine;
pub use schedule::TrainConfig;

use crate::config::ModelConfig;
use crate::data::TokenData;
use crate::error::{Error, Result};
use crate::model::{Model, token_tensor};
use crate::rng::SplitMix64;
use crate::store::{load_safetensors, save_safetensors, write_atomic};
use crate::weights::{WeightMap, validate_weights};
use burn::module::{Module, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What one optimizer step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// 1-based index of the step just taken.
    pub step: usize,
    /// Mean training loss over the step's micro-batches (nats per token).
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Weight decay used.
    pub weight_decay: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Training tokens consumed so far.
    pub tokens: u64,
}

/// Validation result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalStats {
    /// Mean next-token NLL in nats.
    pub loss: f64,
    /// Bits per UTF-8 byte of the predicted tokens.
    pub bpb: f64,
    /// Number of predicted tokens.
    pub tokens: u64,
}

/// Everything besides weights and optimizer moments that a checkpoint stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimizer steps taken.
    pub step: usize,
    /// Batch-sampler RNG state (the data cursor).
    pub rng_state: u64,
    /// Training tokens consumed.
    pub tokens_seen: u64,
    /// Architecture.
    pub model: ModelConfig,
    /// Training configuration.
    pub train: TrainConfig,
}

/// Evaluates `tokens` in consecutive windows of `window` tokens (window `i` covers
/// `i*window .. i*window + window` and predicts each next token inside it; a shorter last
/// window counts when it has at least 2 tokens). Returns mean NLL (nats), bits per byte of
/// the predicted tokens, and the number predicted.
pub fn evaluate_tokens(
    model: &Model,
    tokens: &[u32],
    window: usize,
    batch_size: usize,
    token_bytes: &[u32],
    device: &Device,
) -> Result<EvalStats> {
    let window = window.max(2);
    let chunks: Vec<&[u32]> = tokens.chunks(window).filter(|c| c.len() >= 2).collect();
    let (mut nll, mut count, mut bytes) = (0f64, 0u64, 0u64);
    let mut i = 0;
    while i < chunks.len() {
        // Batch equal-length windows together (only the last one may be shorter).
        let len = chunks[i].len();
        let mut j = i;
        while j < chunks.len() && j - i < batch_size.max(1) && chunks[j].len() == len {
            j += 1;
        }
        let group = &chunks[i..j];
        let b = group.len();
        let t = len - 1;
        let xs: Vec<u32> = group.iter().flat_map(|c| c[..t].iter().copied()).collect();
        let ys: Vec<u32> = group.iter().flat_map(|c| c[1..].iter().copied()).collect();
        let x = token_tensor(&xs, b, t, device)?;
        let y = token_tensor(&ys, b, t, device)?;
        let mean = f64::from(model.loss(x, y).into_scalar::<f32>());
        nll += mean * (b * t) as f64;
        count += (b * t) as u64;
        bytes += ys
            .iter()
            .map(|&id| u64::from(token_bytes.get(id as usize).copied().unwrap_or(0)))
            .sum::<u64>();
        i = j;
    }
    if count == 0 {
        return Err(Error::data(
            "evaluation text",
            "fewer than 2 tokens: nothing to predict",
        ));
    }
    let loss = nll / count as f64;
    let bpb = if bytes == 0 {
        0.0
    } else {
        nll / std::f64::consts::LN_2 / bytes as f64
    };
    Ok(EvalStats {
        loss,
        bpb,
        tokens: count,
    })
}

/// A model being trained, one optimizer step at a time.
pub struct Trainer {
    model_config: ModelConfig,
    config: TrainConfig,
    device: Device,
    model: Option<Model>,
    optim: ModuleOptimizer,
    optim_wd: f64,
    data: TokenData,
    rng: SplitMix64,
    step: usize,
    tokens_seen: u64,
    param_specs: Vec<(ParamId, usize)>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("step", &self.step)
            .field("model", &self.model_config)
            .finish_non_exhaustive()
    }
}

fn make_optim(config: &TrainConfig, weight_decay: f64) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(config.beta1)
        .with_beta_2(config.beta2)
        .with_epsilon(1e-8)
        .with_weight_decay(weight_decay as f32)
        .init()
}

fn check_tokens(data: &TokenData, config: &ModelConfig, train: &TrainConfig) -> Result<()> {
    for (name, stream) in [("train", &data.train), ("val", &data.val)] {
        if let Some(&bad) = stream
            .tokens()
            .iter()
            .find(|&&t| t as usize >= config.vocab_size)
        {
            return Err(Error::data(
                format!("{name} tokens"),
                format!("token id {bad} is outside vocab_size {}", config.vocab_size),
            ));
        }
    }
    if data.train.len() <= train.seq_len {
        return Err(Error::data(
            "train tokens",
            format!(
                "{} tokens, need more than seq_len {}",
                data.train.len(),
                train.seq_len
            ),
        ));
    }
    if data.val.len() < 2 {
        return Err(Error::data("val tokens", "fewer than 2 tokens"));
    }
    Ok(())
}

impl Trainer {
    /// A trainer for a freshly initialised model (seeded by `config.seed`). `device` is
    /// a plain device (e.g. `Device::flex()`); autodiff is enabled on it here. Both configs
    /// are validated before anything else happens.
    pub fn new(
        model_config: ModelConfig,
        config: TrainConfig,
        data: TokenData,
        device: &Device,
    ) -> Result<Self> {
        model_config.validate()?;
        config.validate(model_config.context_length)?;
        check_tokens(&data, &model_config, &config)?;
        let device = device.clone().autodiff();
        let model = Model::init(&model_config, config.seed, &device)?;
        Ok(Self::assemble(model_config, config, device, model, data))
    }

    fn assemble(
        model_config: ModelConfig,
        config: TrainConfig,
        device: Device,
        model: Model,
        data: TokenData,
    ) -> Self {
        allocator::retain_freed_memory();
        let param_specs = crate::model::transformer::param_specs(&model_config);
        let optim_wd = config.weight_decay_at(0);
        Self {
            optim: make_optim(&config, optim_wd),
            optim_wd,
            rng: SplitMix64::new(config.seed ^ 0x5EED_DA7A),
            model_config,
            config,
            device,
            model: Some(model),
            data,
            step: 0,
            tokens_seen: 0,
            param_specs,
        }
    }

    /// The architecture.
    pub fn model_config(&self) -> &ModelConfig {
        &self.model_config
    }

    /// The training configuration.
    pub fn train_config(&self) -> &TrainConfig {
        &self.config
    }

    /// Optimizer steps taken so far.
    pub fn step_index(&self) -> usize {
        self.step
    }

    /// Training tokens consumed so far.
    pub fn tokens_seen(&self) -> u64 {
        self.tokens_seen
    }

    /// The model (on the autodiff device).
    pub fn model(&self) -> &Model {
        self.model
            .as_ref()
            .expect("model is always present between steps")
    }

    /// Hidden states `[batch, t, d]` of the current weights (no autodiff, on the plain
    /// device) for `ids` = `batch` sequences of `t` tokens back to back: see
    /// [`Model::hidden_states`]. For drift probes (CKA between copies of a model).
    pub fn hidden_states(&self, ids: &[u32], batch: usize) -> Result<Tensor<3>> {
        let t = ids.len() / batch.max(1);
        if batch == 0 || t == 0 || t > self.model_config.context_length {
            return Err(Error::data(
                "probe tokens",
                format!(
                    "{} ids in {batch} sequences: need 1..={} tokens each",
                    ids.len(),
                    self.model_config.context_length
                ),
            ));
        }
        let device = self.device.clone().inner();
        let x = token_tensor(ids, batch, t, &device)?;
        Ok(self.model().valid().hidden_states(x))
    }

    fn sample_batch(&mut self) -> Result<(Tensor<2, Int>, Tensor<2, Int>)> {
        let (b, t) = (self.config.batch_size, self.config.seq_len);
        let tokens = self.data.train.tokens();
        let span = (tokens.len() - t) as u64;
        let mut xs = Vec::with_capacity(b * t);
        let mut ys = Vec::with_capacity(b * t);
        for _ in 0..b {
            let off = self.rng.below(span) as usize;
            xs.extend_from_slice(&tokens[off..off + t]);
            ys.extend_from_slice(&tokens[off + 1..=off + t]);
        }
        Ok((
            token_tensor(&xs, b, t, &self.device)?,
            token_tensor(&ys, b, t, &self.device)?,
        ))
    }

    fn global_norm(&self, grads: &GradientsParams) -> f64 {
        let mut total: Option<Tensor<1>> = None;
        for &(id, rank) in &self.param_specs {
            let sq = match rank {
                1 => grads.get::<1>(id).map(|g| g.square().sum()),
                _ => grads.get::<2>(id).map(|g| g.square().sum()),
            };
            if let Some(sq) = sq {
                total = Some(match total {
                    Some(t) => t + sq,
                    None => sq,
                });
            }
        }
        total.map_or(0.0, |t| f64::from(t.sqrt().into_scalar::<f32>()))
    }

    fn scale_grads(&self, grads: &mut GradientsParams, factor: f64) {
        for &(id, rank) in &self.param_specs {
            if rank == 1 {
                if let Some(g) = grads.remove::<1>(id) {
                    grads.register(id, g.mul_scalar(factor));
                }
            } else if let Some(g) = grads.remove::<2>(id) {
                grads.register(id, g.mul_scalar(factor));
            }
        }
    }

    /// One optimizer step (`grad_accum` micro-batches). A non-finite loss or gradient
    /// returns [`Error::Training`] and leaves the weights as they were before the step.
    pub fn step(&mut self) -> Result<StepStats> {
        let lr = self.config.lr_at(self.step);
        let wd = self.config.weight_decay_at(self.step);
        if wd != self.optim_wd {
            // Stage 2: same moments, new decay.
            let record = self.optim.to_record();
            self.optim = make_optim(&self.config, wd).load_record(record);
            self.optim_wd = wd;
        }
        let model = self.model.take().expect("model present");
        let result = self.accumulate(&model);
        let (loss, mut grads) = match result {
            Ok(v) => v,
            Err(e) => {
                self.model = Some(model);
                return Err(e);
            }
        };
        let grad_norm = self.global_norm(&grads);
        if !loss.is_finite() || !grad_norm.is_finite() {
            self.model = Some(model);
            return Err(Error::Training(format!(
                "non-finite loss {loss} / gradient norm {grad_norm} at step {} (lr {lr:.3e}); \
                 weights are left as after step {}",
                self.step + 1,
                self.step
            )));
        }
        if self.config.grad_clip > 0.0 && grad_norm > self.config.grad_clip {
            self.scale_grads(&mut grads, self.config.grad_clip / grad_norm);
        }
        self.model = Some(self.optim.step(lr, model, grads));
        self.step += 1;
        self.tokens_seen += self.config.tokens_per_step() as u64;
        Ok(StepStats {
            step: self.step,
            loss,
            lr,
            weight_decay: wd,
            grad_norm,
            tokens: self.tokens_seen,
        })
    }

    fn accumulate(&mut self, model: &Model) -> Result<(f64, GradientsParams)> {
        let accum = self.config.grad_accum;
        let mut acc = GradientsAccumulator::<Model>::new();
        let mut loss_sum = 0.0;
        for _ in 0..accum {
            let (x, y) = self.sample_batch()?;
            let loss = model.loss(x, y);
            loss_sum += f64::from(loss.clone().into_scalar::<f32>());
            let loss = if accum > 1 {
                loss.div_scalar(accum as f64)
            } else {
                loss
            };
            let grads = GradientsParams::from_grads(loss.backward(), model);
            acc.accumulate(model, grads);
        }
        Ok((loss_sum / accum as f64, acc.grads()))
    }

    /// Validation loss and bits per byte on the first `eval_windows` windows of
    /// `seq_len + 1` tokens of the validation stream (a fixed set, so values are
    /// comparable across steps and runs).
    pub fn eval(&self) -> Result<EvalStats> {
        let window = self.config.seq_len + 1;
        let n = (window * self.config.eval_windows).min(self.data.val.len());
        let model = self.model().valid();
        let device = self.device.clone().inner();
        evaluate_tokens(
            &model,
            &self.data.val.tokens()[..n],
            window,
            self.config.batch_size,
            &self.data.token_bytes,
            &device,
        )
    }

    /// Current weights under canonical names.
    pub fn weights(&self) -> WeightMap {
        self.model().to_weight_map()
    }

    /// Replaces the weights (DiLoCo's outer step). Parameter ids are derived from the
    /// canonical names, so the AdamW moments are **kept** and apply to the new weights;
    /// call [`Trainer::reset_optimizer`] for fresh moments.
    pub fn set_weights(&mut self, weights: &WeightMap) -> Result<()> {
        let model = Model::from_weight_map(&self.model_config, weights, &self.device)?;
        self.model = Some(model);
        Ok(())
    }

    /// Drops the optimizer moments.
    pub fn reset_optimizer(&mut self) {
        self.optim = make_optim(&self.config, self.optim_wd);
    }

    /// Writes a checkpoint into `dir` (replacing an existing one only once the new one is
    /// complete, so a crash keeps the last good checkpoint).
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        let tmp = dir.with_extension("partial");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let meta = BTreeMap::from([("step".to_string(), self.step.to_string())]);
        save_safetensors(&tmp.join("model.safetensors"), &self.weights(), &meta)?;
        let optim_path = tmp.join("optimizer.bpk");
        self.optim.save(&optim_path).map_err(|e| Error::Record {
            path: optim_path.display().to_string(),
            source: e,
        })?;
        let state = CheckpointState {
            step: self.step,
            rng_state: self.rng.state,
            tokens_seen: self.tokens_seen,
            model: self.model_config.clone(),
            train: self.config.clone(),
        };
        let json = serde_json::to_vec_pretty(&state).expect("state serializes");
        write_atomic(&tmp.join("state.json"), &json)?;
        let old = dir.with_extension("old");
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        Ok(())
    }

    /// Continues from a checkpoint written by [`Trainer::save_checkpoint`], with the
    /// configs stored in it. `steps` may be raised (`Some`) to train further; every other
    /// field is kept so that the trajectory is the same.
    pub fn resume(
        dir: &Path,
        data: TokenData,
        device: &Device,
        steps: Option<usize>,
    ) -> Result<Self> {
        let state_path = dir.join("state.json");
        let text = std::fs::read(&state_path).map_err(|e| Error::io(&state_path, e))?;
        let state: CheckpointState = serde_json::from_slice(&text).map_err(|e| Error::Json {
            what: state_path.display().to_string(),
            source: e,
        })?;
        let mut config = state.train.clone();
        if let Some(steps) = steps {
            config.steps = steps;
        }
        state.model.validate()?;
        config.validate(state.model.context_length)?;
        check_tokens(&data, &state.model, &config)?;
        let (weights, _) = load_safetensors(&dir.join("model.safetensors"))?;
        validate_weights(&state.model, &weights)?;
        let device = device.clone().autodiff();
        let model = Model::from_weight_map(&state.model, &weights, &device)?;
        let mut trainer = Self::assemble(state.model, config, device, model, data);
        trainer.optim_wd = trainer.config.weight_decay_at(state.step);
        let optim_path = dir.join("optimizer.bpk");
        trainer.optim = make_optim(&trainer.config, trainer.optim_wd)
            .load(&optim_path)
            .map_err(|e| Error::Record {
                path: optim_path.display().to_string(),
                source: e,
            })?;
        trainer.rng = SplitMix64 {
            state: state.rng_state,
        };
        trainer.step = state.step;
        trainer.tokens_seen = state.tokens_seen;
        Ok(trainer)
    }
}

#[cfg(test)]
mod tests;
