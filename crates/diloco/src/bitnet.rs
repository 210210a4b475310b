//! bitnet-model integration: [`LocalTrainer`] for bitnet-model's burn [`Trainer`] (inner
//! AdamW, its own data shard and seed) and [`WorkerSpec`], the one way to build the
//! BitNet worker of a data shard. bitnet-model's `WeightMap` *is* [`ParamMap`] (one type,
//! ternary-core's), so weights pass between the two without conversion.
//!
//! [`model_config`] resolves one string that is a preset name or a TOML file (the
//! binaries take the two apart: `--preset` and `--model-config`); a [`BitnetWorker`] is
//! also a [`LossEvaluator`] (the coordinator's held-out loss and contribution scorer).
//!
//! Drift probe: [`BitnetWorker`] reports the model's hidden states (after the final norm,
//! what the LM head reads; [`Trainer::hidden_states`]) on a fixed probe batch, one row
//! per probe token, for linear CKA.

use crate::drift::Features;
use crate::error::{Error, Result};
use crate::params::ParamMap;
use crate::trainer::{LocalTrainer, LossEvaluator};
use bitnet_model::ModelConfig;
use bitnet_model::data::TokenData;
use bitnet_model::train::{TrainConfig, Trainer};
use burn::tensor::Device;
use std::path::Path;

/// A model architecture from a preset name (`tiny`, ...; see
/// [`bitnet_model::config::PRESETS`]) or, when `spec` ends in `.toml` or names an
/// existing file, from that TOML file.
pub fn model_config(spec: &str) -> Result<ModelConfig> {
    let path = Path::new(spec);
    let bad = |source: Box<dyn std::error::Error + Send + Sync>| Error::ModelConfig {
        spec: spec.into(),
        source,
    };
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
        || path.is_file()
    {
        let text = std::fs::read_to_string(path).map_err(|e| bad(Box::new(e)))?;
        ModelConfig::from_toml(&text).map_err(|e| bad(Box::new(e)))
    } else {
        ModelConfig::preset(spec).map_err(|e| bad(Box::new(e)))
    }
}

/// How to build the BitNet worker of one data shard: the one recipe behind the `diloco`
/// binary's workers, `diloco-experiment`'s runs and magnet's workers. Start from
/// [`WorkerSpec::new`] (bitnet-model's default two-stage schedule over `steps` inner
/// steps, a tenth of them warm-up) and change what a run needs; [`build`](Self::build)
/// makes the trainer.
///
/// Worker `shard` of `shards` trains on that contiguous slice of the training tokens
/// ([`TokenStream::shard`](bitnet_model::data::TokenStream::shard)) with batches drawn
/// from `seed`; the initial weights it draws are irrelevant (a worker loads the global
/// weights before its first step).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    /// Architecture.
    pub model: ModelConfig,
    /// This worker's shard of the training tokens (`0..shards`).
    pub shard: usize,
    /// Number of shards the training tokens are split into.
    pub shards: usize,
    /// The inner training: seed (batch order), steps (the schedule's length), batch size,
    /// sequence length, learning rates, warm-up and evaluation windows. `eval_every` is
    /// forced to 0 (DiLoCo evaluates the global model, not the worker).
    pub train: TrainConfig,
    /// Probe token ids for drift (see [`BitnetWorker::probe`]); empty: no probe.
    pub probe: Vec<u32>,
    /// Sequences in `probe`.
    pub probe_batch: usize,
}

impl WorkerSpec {
    /// Shard `shard` of `shards`, `steps` inner steps in all (the schedule spans them),
    /// `batch_size` sequences of `seq_len` tokens per step, batch seed `seed`;
    /// bitnet-model's default learning rates, warm-up `max(steps / 10, 1)`.
    pub fn new(
        model: ModelConfig,
        shard: usize,
        shards: usize,
        steps: usize,
        batch_size: usize,
        seq_len: usize,
        seed: u64,
    ) -> Self {
        let steps = steps.max(1);
        Self {
            model,
            shard,
            shards: shards.max(1),
            train: TrainConfig {
                seed,
                steps,
                batch_size,
                seq_len,
                warmup_steps: (steps / 10).max(1),
                eval_every: 0,
                ..TrainConfig::default()
            },
            probe: Vec::new(),
            probe_batch: 0,
        }
    }

    /// Sets the peak learning rate, scaling every stage of the schedule alike (its shape
    /// stays bitnet-model's).
    #[must_use]
    pub fn peak_lr(mut self, lr: f64) -> Self {
        let s = lr / self.train.lr;
        self.train.lr *= s;
        self.train.lr_stage1_end *= s;
        self.train.lr_stage2 *= s;
        self.train.lr_final *= s;
        self
    }

    /// Sets the warm-up steps.
    #[must_use]
    pub fn warmup(mut self, steps: usize) -> Self {
        self.train.warmup_steps = steps;
        self
    }

    /// Sets the held-out windows [`LocalTrainer::eval_loss`] scores.
    #[must_use]
    pub fn eval_windows(mut self, windows: usize) -> Self {
        self.train.eval_windows = windows;
        self
    }

    /// Sets a drift probe: `batch` sequences of equal length, back to back.
    #[must_use]
    pub fn probe(mut self, tokens: Vec<u32>, batch: usize) -> Self {
        self.probe = tokens;
        self.probe_batch = batch;
        self
    }

    /// Builds the worker on its shard of `data` (cloned; token buffers are shared).
    pub fn build(&self, data: &TokenData, device: &Device) -> Result<BitnetWorker> {
        let mut data = data.clone();
        data.train = data.train.shard(self.shard % self.shards, self.shards);
        let mut train = self.train.clone();
        train.eval_every = 0;
        let trainer =
            Trainer::new(self.model.clone(), train, data, device).map_err(|e| Error::Trainer {
                worker: Some(self.shard as u32),
                source: Box::new(e),
            })?;
        Ok(BitnetWorker {
            trainer,
            probe: self.probe.clone(),
            probe_batch: self.probe_batch,
        })
    }
}

/// A bitnet-model trainer as a DiLoCo worker, with a fixed probe batch for drift.
pub struct BitnetWorker {
    /// The trainer.
    pub trainer: Trainer,
    /// Probe token ids: `probe_batch` sequences of equal length, back to back (each at
    /// most the model's context). Empty: no drift probe.
    pub probe: Vec<u32>,
    /// Number of sequences in `probe`.
    pub probe_batch: usize,
}

impl std::fmt::Debug for BitnetWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitnetWorker")
            .field("trainer", &self.trainer)
            .field("probe_len", &self.probe.len())
            .field("probe_batch", &self.probe_batch)
            .finish()
    }
}

/// bitnet-model's error as this crate's, cause kept (the worker id is added by whoever
/// knows it, e.g. the runner).
fn model_err(e: bitnet_model::Error) -> Error {
    Error::Trainer {
        worker: None,
        source: Box::new(e),
    }
}

impl LocalTrainer for BitnetWorker {
    fn params(&self) -> Result<ParamMap> {
        Ok(self.trainer.weights())
    }

    fn set_params(&mut self, params: &ParamMap) -> Result<()> {
        // A fragment updates some tensors: merge into the full map first.
        let mut full = self.trainer.weights();
        for (name, t) in params {
            let slot = full.get_mut(name).ok_or_else(|| Error::Tensor {
                name: name.clone(),
                message: "not a tensor of this model".into(),
            })?;
            slot.data.clone_from(&t.data);
        }
        self.trainer.set_weights(&full).map_err(model_err)
    }

    fn train_step(&mut self) -> Result<f32> {
        Ok(self.trainer.step().map_err(model_err)?.loss as f32)
    }

    fn tokens_per_step(&self) -> u64 {
        self.trainer.train_config().tokens_per_step() as u64
    }

    fn eval_loss(&mut self) -> Result<f32> {
        Ok(self.trainer.eval().map_err(model_err)?.loss as f32)
    }

    fn probe_features(&mut self) -> Result<Option<Features>> {
        if self.probe.is_empty() {
            return Ok(None);
        }
        let hidden = self
            .trainer
            .hidden_states(&self.probe, self.probe_batch)
            .map_err(model_err)?;
        let [b, t, d] = hidden.dims();
        let data = hidden
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Tensor {
                name: "hidden states".into(),
                message: format!("not f32: {e:?}"),
            })?;
        Ok(Some(Features {
            rows: b * t,
            cols: d,
            data,
        }))
    }
}

impl LossEvaluator for BitnetWorker {
    /// Loads `params` (all tensors, or a subset merged into the current weights) and
    /// returns the held-out loss. The inner optimizer's state is untouched.
    fn loss(&mut self, params: &ParamMap) -> Result<f32> {
        self.set_params(params)?;
        self.eval_loss()
    }
}
