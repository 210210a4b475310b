//! bitnet-model integration: [`WeightMap`] <-> [`ParamMap`] conversions (moving the data)
//! and [`LocalTrainer`] for bitnet-model's burn [`Trainer`] (inner AdamW, its own data
//! shard and seed).
//!
//! [`model_config`] resolves a `--model` argument (a preset name or a TOML file) for the
//! worker and coordinator binaries; a [`BitnetWorker`] is also a [`LossEvaluator`] (the
//! coordinator's held-out loss and contribution scorer).
//!
//! Drift probe: [`BitnetWorker`] reports the model's hidden states (after the final norm,
//! what the LM head reads; [`Trainer::hidden_states`]) on a fixed probe batch, one row
//! per probe token, for linear CKA.

use crate::drift::Features;
use crate::error::{Error, Result};
use crate::params::{ParamMap, Tensor};
use crate::trainer::{LocalTrainer, LossEvaluator};
use bitnet_model::train::Trainer;
use bitnet_model::{ModelConfig, NamedTensor, WeightMap};
use std::path::Path;

/// A model architecture from a preset name (`tiny`, ...; see
/// [`bitnet_model::config::PRESETS`]) or, when `spec` ends in `.toml` or names an
/// existing file, from that TOML file.
pub fn model_config(spec: &str) -> Result<ModelConfig> {
    let path = Path::new(spec);
    let bad = |message: String| Error::Config {
        field: "model".into(),
        message,
    };
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
        || path.is_file()
    {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("reading {}: {e}", path.display())))?;
        ModelConfig::from_toml(&text).map_err(|e| bad(format!("{}: {e}", path.display())))
    } else {
        ModelConfig::preset(spec).map_err(|e| bad(e.to_string()))
    }
}

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
        worker: None,
        source: e.to_string().into(),
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

impl LossEvaluator for BitnetWorker {
    /// Loads `params` (all tensors, or a subset merged into the current weights) and
    /// returns the held-out loss. The inner optimizer's state is untouched.
    fn loss(&mut self, params: &ParamMap) -> Result<f32> {
        self.set_params(params)?;
        self.eval_loss()
    }
}
