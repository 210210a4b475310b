//! What workers train: a BitNet model config, the prepared dataset and the inner training
//! config (the part of the run a search may choose), and one way to build a worker's
//! trainer for its data shard.

use crate::error::{Error, Result};
use bitnet_model::ModelConfig;
use bitnet_model::data::TokenData;
use burn::tensor::Device;
use diloco::bitnet::{BitnetWorker, WorkerSpec};
use serde::{Deserialize, Serialize};

/// The inner training config (searched, or given).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Training {
    /// Peak inner learning rate (AdamW; later stages of bitnet-model's schedule scale alike).
    pub lr: f64,
    /// Sequences per inner step.
    pub batch_size: usize,
    /// Tokens per sequence (clipped to the model's context).
    pub seq_len: usize,
    /// Warm-up steps of the schedule.
    pub warmup_steps: usize,
}

impl Default for Training {
    fn default() -> Self {
        Self {
            lr: 3e-3,
            batch_size: 4,
            seq_len: 64,
            warmup_steps: 4,
        }
    }
}

impl Training {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) || self.batch_size == 0 || self.seq_len < 2 {
            return Err(Error::config(
                "training",
                "lr must be positive, batch_size at least 1, seq_len at least 2",
            ));
        }
        Ok(())
    }

    /// diloco's recipe for the BitNet worker of shard `shard` of `shards`: `steps` inner
    /// steps in all (the schedule spans them), batches from `seed`, this config's peak rate
    /// (bitnet-model's schedule shape scaled alike), batch, sequence length and warm-up.
    pub fn worker_spec(
        &self,
        model: &ModelConfig,
        shard: usize,
        shards: usize,
        seed: u64,
        steps: usize,
    ) -> WorkerSpec {
        let steps = steps.max(1);
        WorkerSpec::new(
            model.clone(),
            shard,
            shards,
            steps,
            self.batch_size,
            self.seq_len.min(model.context_length),
            seed,
        )
        .peak_lr(self.lr)
        .warmup(self.warmup_steps.min(steps))
    }
}

/// A BitNet DiLoCo worker on shard `shard` of `shards` of the training tokens, with its own
/// seed for batch order, built by diloco's one recipe ([`WorkerSpec`]); the initial
/// weights it draws do not matter (it loads the operator's global weights first).
pub fn bitnet_worker(
    model: &ModelConfig,
    data: &TokenData,
    training: &Training,
    shard: usize,
    shards: usize,
    seed: u64,
    steps: usize,
) -> Result<BitnetWorker> {
    Ok(training
        .worker_spec(model, shard, shards, seed, steps)
        .build(data, &Device::flex())?)
}

/// The seeded initial weights of `model` (what the operator publishes as version 0): the
/// weights a trainer seeded with `seed` draws, so every party can rebuild them.
pub fn initial_weights(
    model: &ModelConfig,
    data: &TokenData,
    seed: u64,
) -> Result<diloco::params::ParamMap> {
    use diloco::trainer::LocalTrainer;
    let w = bitnet_worker(model, data, &Training::default(), 0, 1, seed, 1)?;
    Ok(w.params()?)
}
