//! [`HeldOut`] for BitNet models: windows of the validation stream.

use crate::error::{Error, Result};
use crate::heldout::HeldOut;
use bitnet_model::ModelConfig;
use bitnet_model::data::TokenData;
use bitnet_model::model::Model;
use bitnet_model::train::evaluate_tokens;
use burn::tensor::Device;
use diloco::params::ParamMap;
use incentive_ledger::merkle::Hash;
use incentive_ledger::rewards::heldout_batches;

/// [`HeldOut`] for a BitNet model: windows of the validation stream, the first
/// `val_windows` kept for the fixed val loss, the rest the validators' pool.
pub struct BitnetHeldOut {
    model: ModelConfig,
    device: Device,
    val: Vec<u32>,
    token_bytes: std::sync::Arc<Vec<u32>>,
    window: usize,
    val_windows: usize,
    batch: usize,
}

impl std::fmt::Debug for BitnetHeldOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BitnetHeldOut")
            .field("window", &self.window)
            .field("val_windows", &self.val_windows)
            .field("pool", &self.pool())
            .finish_non_exhaustive()
    }
}

impl BitnetHeldOut {
    /// Windows of `seq_len + 1` tokens of `data`'s validation stream.
    pub fn new(
        model: ModelConfig,
        data: &TokenData,
        seq_len: usize,
        val_windows: usize,
    ) -> Result<Self> {
        let window = seq_len.min(model.context_length) + 1;
        let h = Self {
            model,
            device: Device::flex(),
            val: data.val.tokens().to_vec(),
            token_bytes: data.token_bytes.clone(),
            window,
            val_windows,
            batch: 8,
        };
        if h.pool() == 0 {
            return Err(Error::config(
                "heldout",
                format!(
                    "the validation stream has {} windows of {window} tokens, {val_windows} of \
                     them for the val loss: none left for the validators",
                    h.val.len() / window
                ),
            ));
        }
        Ok(h)
    }

    fn pool(&self) -> u64 {
        (self.val.len() / self.window).saturating_sub(self.val_windows) as u64
    }

    fn build(&self, p: &ParamMap) -> Result<Model> {
        Ok(Model::from_weight_map(&self.model, p, &self.device)?)
    }

    fn loss(&self, model: &Model, tokens: &[u32]) -> Result<f64> {
        Ok(evaluate_tokens(
            model,
            tokens,
            self.window,
            self.batch,
            &self.token_bytes,
            &self.device,
        )?
        .loss)
    }
}

impl HeldOut for BitnetHeldOut {
    fn losses(&mut self, params: &ParamMap, seeds: &[Hash], windows: usize) -> Result<Vec<f64>> {
        let model = self.build(params)?;
        let pool = self.pool();
        seeds
            .iter()
            .map(|s| {
                let tokens: Vec<u32> = heldout_batches(s, windows, pool)
                    .into_iter()
                    .flat_map(|i| {
                        let start = (self.val_windows + i as usize) * self.window;
                        self.val[start..start + self.window].iter().copied()
                    })
                    .collect();
                self.loss(&model, &tokens)
            })
            .collect()
    }

    fn val_loss(&mut self, params: &ParamMap) -> Result<f64> {
        let model = self.build(params)?;
        let n = (self.val_windows * self.window).min(self.val.len());
        self.loss(&model, &self.val[..n])
    }
}
