//! The narrow interfaces the outer loop drives: a worker's local trainer and a loss
//! evaluator for contribution scoring.

use crate::drift::Features;
use crate::error::Result;
use crate::params::ParamMap;

/// One worker's inner training, on its own data shard with its own inner optimizer.
pub trait LocalTrainer {
    /// The latent full-precision weights (ternarization stays inside the forward pass,
    /// so DiLoCo merges these).
    fn params(&self) -> Result<ParamMap>;
    /// Replaces the weights named in `params` (all of them, or one streaming fragment),
    /// keeping the inner optimizer's state.
    fn set_params(&mut self, params: &ParamMap) -> Result<()>;
    /// One inner optimizer step; returns the training loss.
    fn train_step(&mut self) -> Result<f32>;
    /// Tokens (or examples) consumed by one inner step.
    fn tokens_per_step(&self) -> u64;
    /// Loss on held-out data at the current weights.
    fn eval_loss(&mut self) -> Result<f32>;
    /// Hidden states on a fixed probe batch, for drift (CKA); `None` if unsupported.
    fn probe_features(&mut self) -> Result<Option<Features>> {
        Ok(None)
    }
}

/// Loss of arbitrary weights on held-out batches: the coordinator's scorer for the
/// incentive ledger (loss before vs after applying one contribution).
pub trait LossEvaluator {
    /// Loss at `params`.
    fn loss(&mut self, params: &ParamMap) -> Result<f32>;
}
