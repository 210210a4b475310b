//! bitnet-model integration: [`WeightMap`] <-> [`ParamMap`] conversions (moving the data)
//! and [`LocalTrainer`] for bitnet-model's burn [`Trainer`] (inner AdamW, its own data
//! shard and seed).
//!
//! Drift probe: [`BitnetWorker`] reports the model's hidden states (after the final norm,
//! what the LM head reads; [`Trainer::hidden_states`]) on a fixed probe batch, one row
//! per probe token, for linear CKA.

use crate::drift::Features;
use crate::error::{Error, Result};
use crate::params::{ParamMap, Tensor};
use crate::trainer::LocalTrainer;
use bitnet_model::train::Trainer;
use bitnet_model::{NamedTensor, WeightMap};

/// Moves a bitnet-model weight map into a [`ParamMap`].
pub fn from_weights(w: WeightMap) -> ParamMap {
    w.into_iter()
        .map(|(n, t)| {
            (
                n,
                Tensor {
                    shape: t.shape,
                    data: t.data,
                },
            )
        })
        .collect()
}

/// Moves a [`ParamMap`] into a bitnet-model weight map.
pub fn to_weights(p: ParamMap) -> WeightMap {
    p.into_iter()
        .map(|(n, t)| {
            (
                n,
                NamedTensor {
                    shape: t.shape,
                    data: t.data,
                },
            )
        })
        .collect()
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

fn model_err(e: impl std::fmt::Display) -> Error {
    Error::Trainer {
        worker: u32::MAX,
        message: e.to_string(),
    }
}

impl LocalTrainer for BitnetWorker {
    fn params(&self) -> Result<ParamMap> {
        Ok(from_weights(self.trainer.weights()))
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
            .map_err(|e| model_err(format!("{e:?}")))?;
        Ok(Some(Features {
            rows: b * t,
            cols: d,
            data,
        }))
    }
}
