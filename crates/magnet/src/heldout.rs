//! Validators' measuring instrument: the loss of given weights on held-out windows drawn
//! from a seed the protocol fixes (`heldout_seed(contribution, validator, beacon root)`).

use crate::error::Result;
use diloco::params::ParamMap;
use incentive_ledger::merkle::Hash;

/// Loss of weights on held-out windows chosen by seeds.
pub trait HeldOut {
    /// For each seed, the mean loss of `params` on `windows` held-out windows drawn from it.
    fn losses(&mut self, params: &ParamMap, seeds: &[Hash], windows: usize) -> Result<Vec<f64>>;
    /// Loss on the fixed validation windows (the run's val loss per round).
    fn val_loss(&mut self, params: &ParamMap) -> Result<f64>;
}
