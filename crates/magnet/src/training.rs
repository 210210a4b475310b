//! What workers train: a BitNet model config, the prepared dataset and the inner training
//! config (the part of the run a search may choose), and one way to build a worker's
//! trainer for its data shard.

use crate::error::{Error, Result};
use bitnet_model::ModelConfig;
use bitnet_model::data::TokenData;
use bitnet_model::train::{TrainConfig, Trainer};
use burn::tensor::Device;
use diloco::bitnet::BitnetWorker;
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

    /// bitnet-model's train config for `steps` inner steps with this schedule.
    pub fn train_config(&self, model: &ModelConfig, seed: u64, steps: usize) -> TrainConfig {
        let lr = self.lr;
        TrainConfig {
            seed,
            steps: steps.max(1),
            batch_size: self.batch_size,
            seq_len: self.seq_len.min(model.context_length),
            warmup_steps: self.warmup_steps.min(steps.max(1)),
            lr,
            lr_stage1_end: lr * 2.0 / 3.0,
            lr_stage2: lr / 3.0,
            lr_final: lr / 30.0,
            eval_every: 0,
            ..TrainConfig::default()
        }
    }
}

/// A BitNet DiLoCo worker on shard `shard` of `shards` of the training tokens, with its own
/// seed for batch order; every worker built from the same `init_seed` starts from the same
/// weights (the operator's version 0 replaces them anyway).
pub fn bitnet_worker(
    model: &ModelConfig,
    data: &TokenData,
    training: &Training,
    shard: usize,
    shards: usize,
    seed: u64,
    steps: usize,
) -> Result<BitnetWorker> {
    let mut d = data.clone();
    d.train = d.train.shard(shard % shards.max(1), shards.max(1));
    let trainer = Trainer::new(
        model.clone(),
        training.train_config(model, seed, steps),
        d,
        &Device::flex(),
    )?;
    Ok(BitnetWorker {
        trainer,
        probe: Vec::new(),
        probe_batch: 0,
    })
}

/// The seeded initial weights of `model` (what the operator publishes as version 0).
pub fn initial_weights(
    model: &ModelConfig,
    data: &TokenData,
    seed: u64,
) -> Result<diloco::params::ParamMap> {
    use diloco::trainer::LocalTrainer;
    let w = bitnet_worker(model, data, &Training::default(), 0, 1, seed, 1)?;
    Ok(w.params()?)
}
