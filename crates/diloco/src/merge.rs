//! The coordinator's merge policy: of a round's screened updates, which enter the
//! aggregate and with what weight.
//!
//! Screening ([`crate::aggregate::screen`]) decides what is *well-formed* (decodes, right
//! layout, finite, not stale, not a norm outlier, weight within the protocol's bounds);
//! a [`MergePolicy`] decides what is *wanted*. The default, [`MergeAll`], merges every
//! screened update with the protocol's weight (plain DiLoCo). [`ExternalVerdicts`] merges
//! what an outside authority decided, e.g. an incentive ledger that slashed copies and
//! poisoners and records the tokens it accepted: an update without a verdict is left
//! out. Either way the coordinator runs the one merge path (aggregate, outer step,
//! step codec, publish), so a caller never re-implements it.
//!
//! ```
//! use diloco::merge::{ExternalVerdicts, Verdict};
//!
//! let mut verdicts = ExternalVerdicts::new();
//! verdicts.insert(3, 0, Verdict::Merge { weight: 1.0 });
//! verdicts.insert(3, 1, Verdict::Exclude { reason: "slashed: copied worker 0".into() });
//! assert_eq!(verdicts.len(), 2);
//! ```

use crate::aggregate::Update;
use std::collections::BTreeMap;

/// The error a policy returns (boxed, so any policy's own error type keeps its cause).
pub type PolicyError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One screened update offered to the policy, with what the coordinator knows of it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The decoded update; `weight` is the protocol's weight after the stale rule.
    pub update: &'a Update,
    /// The weight the update's header declared (information only; see
    /// [`crate::aggregate::Weighting`]).
    pub declared_weight: f32,
    /// L2 norm of the decoded pseudo-gradient.
    pub norm: f64,
    /// Size of the update object in bytes.
    pub bytes: usize,
}

/// A policy's decision on one candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Merge it with this weight (finite, > 0; used by the weighted aggregators).
    Merge {
        /// Aggregation weight.
        weight: f32,
    },
    /// Leave it out; the manifest records it as rejected with
    /// [`RejectReason::Excluded`](crate::aggregate::RejectReason::Excluded).
    Exclude {
        /// Why (recorded in the manifest).
        reason: String,
    },
}

/// Decides, for the screened updates of one round, which to merge and with what weight.
///
/// Must be deterministic in its inputs: a coordinator resumed after a crash re-runs the
/// round it had not committed and must reach the same step.
pub trait MergePolicy {
    /// One verdict per candidate, in the same order (candidates are sorted by worker).
    fn verdicts(
        &mut self,
        round: u64,
        candidates: &[Candidate<'_>],
    ) -> Result<Vec<Verdict>, PolicyError>;
}

/// Merges every screened update with the protocol's weight (plain DiLoCo; the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct MergeAll;

impl MergePolicy for MergeAll {
    fn verdicts(
        &mut self,
        _: u64,
        candidates: &[Candidate<'_>],
    ) -> Result<Vec<Verdict>, PolicyError> {
        Ok(candidates
            .iter()
            .map(|c| Verdict::Merge {
                weight: c.update.weight,
            })
            .collect())
    }
}

/// Verdicts decided elsewhere (e.g. by a ledger's settlement), by round and worker.
/// A screened update with no verdict is excluded ("no verdict for this update").
#[derive(Debug, Clone, Default)]
pub struct ExternalVerdicts {
    by_round: BTreeMap<u64, BTreeMap<u32, Verdict>>,
}

impl ExternalVerdicts {
    /// No verdicts yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the verdict on worker `worker`'s update of `round` (replacing any earlier).
    pub fn insert(&mut self, round: u64, worker: u32, verdict: Verdict) {
        self.by_round
            .entry(round)
            .or_default()
            .insert(worker, verdict);
    }

    /// Number of verdicts held.
    pub fn len(&self) -> usize {
        self.by_round.values().map(BTreeMap::len).sum()
    }

    /// True when no verdict is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MergePolicy for ExternalVerdicts {
    fn verdicts(
        &mut self,
        round: u64,
        candidates: &[Candidate<'_>],
    ) -> Result<Vec<Verdict>, PolicyError> {
        let of_round = self.by_round.get(&round);
        Ok(candidates
            .iter()
            .map(|c| {
                of_round
                    .and_then(|m| m.get(&c.update.worker))
                    .cloned()
                    .unwrap_or_else(|| Verdict::Exclude {
                        reason: "no verdict for this update".into(),
                    })
            })
            .collect())
    }
}
