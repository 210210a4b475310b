//! The round protocol over any [`Exchange`]: object keys, the update header, the
//! per-round manifest, the coordinator (screen, aggregate, outer step, publish) and the
//! worker side (pseudo-gradient, error feedback, applying the outer step).
//!
//! Keys (all create-only):
//! - `members/{w:05}.json`: worker `w` takes part from round `from_round` on;
//! - `leaves/{w:05}.json`: worker `w` leaves after round `after_round`;
//! - `globals/{v:08}.bin`: the full f32 global weights at version `v` (0 = initial; the
//!   coordinator writes one every `checkpoint_every` rounds, for joiners);
//! - `rounds/{r:08}/updates/{w:05}.bin`: worker `w`'s update for round `r`;
//! - `rounds/{r:08}/step.bin`: the encoded outer step of round `r`;
//! - `rounds/{r:08}/manifest.json`: written last; its existence commits the round.
//!
//! Round `r` produces version `r`. The coordinator waits until every member has
//! delivered or the deadline passes; members that have not delivered are listed as
//! `missing` and the round goes on without them (a dead worker never blocks a round).
//! Updates written after the manifest are never read: a late worker takes the new step
//! and continues, its work dropped (the rule DiLoCo's dropped-communication ablation
//! shows costs little).

use crate::aggregate::{self, Aggregator, RejectReason, Rejection, ScreenConfig, Update};
use crate::codec::{self, Codec};
use crate::error::{Error, Result};
use crate::exchange::{Exchange, wait_for};
use crate::merge::{Candidate, MergeAll, MergePolicy, Verdict};
use crate::outer::{OuterOptimizer, OuterState};
use crate::params::{self, ParamMap};
use crate::trainer::LossEvaluator;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Key of a worker's membership record.
pub fn member_key(worker: u32) -> String {
    format!("members/{worker:05}.json")
}
/// Key of a worker's leave record.
pub fn leave_key(worker: u32) -> String {
    format!("leaves/{worker:05}.json")
}
/// Key of the full global weights at `version`.
pub fn global_key(version: u64) -> String {
    format!("globals/{version:08}.bin")
}
/// Key of worker `worker`'s update for `round`.
pub fn update_key(round: u64, worker: u32) -> String {
    format!("rounds/{round:08}/updates/{worker:05}.bin")
}
/// Key of the outer step of `round`.
pub fn step_key(round: u64) -> String {
    format!("rounds/{round:08}/step.bin")
}
/// Key of the manifest of `round`.
pub fn manifest_key(round: u64) -> String {
    format!("rounds/{round:08}/manifest.json")
}

/// Key of the record that closes the input of `round` (the members and update keys the
/// coordinator merges), written before anything the round produces.
pub fn close_key(round: u64) -> String {
    format!("rounds/{round:08}/close.json")
}
/// Key of the outer optimizer's state (momentum) after `round` (stateful optimizers only).
pub fn outer_key(round: u64) -> String {
    format!("rounds/{round:08}/outer.bin")
}

/// The closed input of a round ([`close_key`]): a coordinator that restarts in the middle
/// of the round merges exactly these objects again, so it publishes the same step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Close {
    /// The round.
    pub round: u64,
    /// Members expected.
    pub members: Vec<u32>,
    /// Update keys merged from (create-only objects, so their bytes cannot change).
    pub updates: Vec<String>,
}

/// Objects read from the exchange: `(key, bytes)`, sorted by key.
pub type Objects = Vec<(String, Vec<u8>)>;

const UPDATE_MAGIC: &[u8; 4] = b"DLU1";
const HEADER_LEN: usize = 4 + 4 + 8 + 8 + 4;

/// A membership record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    /// Worker id.
    pub worker: u32,
    /// First round it contributes to (`from_round` for joins, `after_round` for leaves).
    pub round: u64,
}

/// Loss before and after applying one contribution alone (for the incentive ledger).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ContributionScore {
    /// Held-out loss of the global weights before the round.
    pub before: f32,
    /// Held-out loss after applying only this pseudo-gradient (outer lr, no momentum).
    pub after: f32,
}

/// One accepted contribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// Worker id.
    pub worker: u32,
    /// Weight used in the aggregate (the protocol's or the merge policy's).
    pub weight: f32,
    /// Weight the update's header declared (what the worker claimed; information only).
    #[serde(default)]
    pub declared_weight: f32,
    /// L2 norm of the decoded pseudo-gradient.
    pub norm: f64,
    /// Encoded size in bytes.
    pub bytes: usize,
    /// The contribution score, when the coordinator has a scorer.
    pub score: Option<ContributionScore>,
}

/// What the coordinator decided in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Round number (= the version it produces).
    pub round: u64,
    /// Streaming fragment synced, or `None` for the whole model.
    pub fragment: Option<u32>,
    /// Members expected this round.
    pub members: Vec<u32>,
    /// Contributions aggregated.
    pub accepted: Vec<Accepted>,
    /// Contributions rejected, with reasons.
    pub rejected: Vec<Rejection>,
    /// Members with no update by the deadline.
    pub missing: Vec<u32>,
    /// Codec of `step.bin`.
    pub step_codec: Codec,
    /// Size of `step.bin`.
    pub step_bytes: usize,
    /// L2 norm of the aggregated pseudo-gradient (0 when nothing was accepted).
    pub delta_norm: f64,
    /// The tensors a fragment round updated (empty for whole-model rounds), so a resumed
    /// coordinator knows each tensor's version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tensors: Vec<String>,
}

fn json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        what: what.into(),
        source,
    })
}

/// Serializes an update: header (worker, round, base version, weight) + codec payload.
pub fn encode_update(
    worker: u32,
    round: u64,
    base_version: u64,
    weight: f32,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(UPDATE_MAGIC);
    out.extend_from_slice(&worker.to_le_bytes());
    out.extend_from_slice(&round.to_le_bytes());
    out.extend_from_slice(&base_version.to_le_bytes());
    out.extend_from_slice(&weight.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Parses an update object: `(worker, round, base_version, weight, tensors)`.
pub fn decode_update(bytes: &[u8], what: &str) -> Result<(u32, u64, u64, f32, ParamMap)> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != UPDATE_MAGIC {
        return Err(Error::Decode {
            what: what.into(),
            offset: 0,
            message: format!(
                "not an update (need the DLU1 header, {} bytes)",
                bytes.len()
            ),
        });
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4"));
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8"));
    let (_, tensors) = codec::decode(&bytes[HEADER_LEN..], what)?;
    Ok((
        u32_at(4),
        u64_at(8),
        u64_at(16),
        f32::from_bits(u32_at(24)),
        tensors,
    ))
}

/// Members expected in `round`: joined at or before it and not left before it.
pub fn members_for(ex: &dyn Exchange, round: u64) -> Result<BTreeSet<u32>> {
    let read = |prefix: &str| -> Result<BTreeMap<u32, u64>> {
        let mut m = BTreeMap::new();
        for key in ex.list(prefix)? {
            if let Some(b) = ex.get(&key)? {
                let rec: Membership = json(&b, &key)?;
                m.insert(rec.worker, rec.round);
            }
        }
        Ok(m)
    };
    let joins = read("members/")?;
    let leaves = read("leaves/")?;
    Ok(joins
        .into_iter()
        .filter(|&(w, from)| from <= round && leaves.get(&w).is_none_or(|&after| round <= after))
        .map(|(w, _)| w)
        .collect())
}

/// Coordinator settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorConfig {
    /// Outer optimizer.
    pub outer: OuterOptimizer,
    /// Aggregation rule.
    pub aggregator: Aggregator,
    /// Rejection rules.
    pub screen: ScreenConfig,
    /// Codec of the published outer step (the downlink).
    pub step_codec: Codec,
    /// Write the full global weights every this many rounds (0: only version 0).
    pub checkpoint_every: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            outer: OuterOptimizer::default(),
            aggregator: Aggregator::Mean,
            screen: ScreenConfig::default(),
            step_codec: Codec::F32,
            checkpoint_every: 1,
        }
    }
}

/// Holds the global weights and the outer optimizer; runs rounds.
pub struct Coordinator {
    global: ParamMap,
    outer: OuterState,
    cfg: CoordinatorConfig,
    /// Last round that updated each tensor (its version for the stale rule).
    version_of: BTreeMap<String, u64>,
    scorer: Option<Box<dyn LossEvaluator + Send>>,
    policy: Box<dyn MergePolicy + Send>,
}

/// A round's update objects decoded and screened, before the merge policy
/// ([`Coordinator::screen_round`]).
#[derive(Debug, Clone)]
pub struct ScreenedRound {
    /// Well-formed updates, sorted by worker, weights = the protocol's (after the stale
    /// rule).
    pub updates: Vec<Update>,
    /// Weight each worker's header declared.
    pub declared: BTreeMap<u32, f32>,
    /// Size of each worker's update object.
    pub sizes: BTreeMap<u32, usize>,
    /// Updates refused, with reasons, sorted by worker.
    pub rejected: Vec<Rejection>,
}

/// The outer step on some updates and the global weights it leads to
/// ([`Coordinator::preview`]).
#[derive(Debug, Clone)]
pub struct MergedStep {
    /// The aggregated pseudo-gradient (zeros when no update was given).
    pub delta: ParamMap,
    /// The outer step as every party applies it: encoded with the step codec and decoded.
    pub step: ParamMap,
    /// The encoded step (the bytes of `step.bin`).
    pub step_bytes: Vec<u8>,
    /// The global weights after the step.
    pub global: ParamMap,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("tensors", &self.global.len())
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Publishes `init` as version 0 and returns the coordinator.
    pub fn start(ex: &dyn Exchange, init: ParamMap, cfg: CoordinatorConfig) -> Result<Self> {
        Self::check_config(&cfg)?;
        ex.put_new(&global_key(0), &codec::encode(&init, Codec::F32)?)?;
        Ok(Self {
            version_of: init.keys().map(|k| (k.clone(), 0)).collect(),
            global: init,
            outer: OuterState::new(cfg.outer),
            cfg,
            scorer: None,
            policy: Box::new(MergeAll),
        })
    }

    /// Picks up a run from the exchange after a restart: the last committed round `R`
    /// (the last manifest; rounds commit in order), the global weights at version `R`
    /// (the newest full checkpoint at or below `R` plus the published steps after it,
    /// applied as [`finish_round`](Self::finish_round) applied them, so bitwise the same),
    /// the outer optimizer's momentum after `R` and each tensor's version. Returns the
    /// coordinator and `R`; the next round to run is `R + 1`. If the crash happened
    /// inside round `R + 1` after its input was closed, [`finish_round`](Self::finish_round)
    /// merges exactly that closed input again and publishes the same step (objects it
    /// already wrote are accepted when their bytes are equal). Scorer and policy are not
    /// stored: attach them again (a policy must be deterministic).
    pub fn resume(ex: &dyn Exchange, cfg: CoordinatorConfig) -> Result<(Self, u64)> {
        Self::check_config(&cfg)?;
        let read = |key: &str| -> Result<Vec<u8>> {
            ex.get(key)?.ok_or_else(|| Error::Exchange {
                key: key.into(),
                source: "missing: nothing to resume from".into(),
            })
        };
        let init_bytes = read(&global_key(0))?;
        let exists = |r: u64| -> Result<bool> { Ok(ex.get(&manifest_key(r))?.is_some()) };
        // Manifests exist for 1..=R: gallop, then bisect for R.
        let (mut lo, mut hi) = (0u64, 1u64);
        while exists(hi)? {
            lo = hi;
            hi = hi.saturating_mul(2);
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if exists(mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let last = lo;
        let mut base = last;
        let mut global = loop {
            if base == 0 {
                break codec::decode(&init_bytes, &global_key(0))?.1;
            }
            if let Some(b) = ex.get(&global_key(base))? {
                break codec::decode(&b, &global_key(base))?.1;
            }
            base -= 1;
        };
        for r in base + 1..=last {
            let (_, step) = codec::decode(&read(&step_key(r))?, &step_key(r))?;
            apply_step(&mut global, &step)?;
        }
        let mut version_of: BTreeMap<String, u64> = global.keys().map(|k| (k.clone(), 0)).collect();
        for r in 1..=last {
            let m: Manifest = json(&read(&manifest_key(r))?, &manifest_key(r))?;
            if m.fragment.is_none() {
                for v in version_of.values_mut() {
                    *v = r;
                }
            } else {
                for t in &m.tensors {
                    version_of.insert(t.clone(), r);
                }
            }
        }
        let mut outer = OuterState::new(cfg.outer);
        if last > 0 && outer.is_stateful() {
            let (_, momentum) = codec::decode(&read(&outer_key(last))?, &outer_key(last))?;
            outer = OuterState::with_momentum(cfg.outer, momentum);
        }
        Ok((
            Self {
                global,
                outer,
                cfg,
                version_of,
                scorer: None,
                policy: Box::new(MergeAll),
            },
            last,
        ))
    }

    /// Closes the input of `round`: the first time, records `members` and the keys of
    /// `objects`; after a restart, returns what was recorded (re-reading any object
    /// `objects` lacks) and drops objects that arrived after the close.
    fn close_round(
        ex: &dyn Exchange,
        round: u64,
        members: &BTreeSet<u32>,
        objects: Objects,
    ) -> Result<(BTreeSet<u32>, Objects)> {
        let rec = Close {
            round,
            members: members.iter().copied().collect(),
            updates: objects.iter().map(|(k, _)| k.clone()).collect(),
        };
        let body = serde_json::to_vec(&rec).map_err(|source| Error::Json {
            what: close_key(round),
            source,
        })?;
        match ex.put_new(&close_key(round), &body) {
            Ok(()) => return Ok((members.clone(), objects)),
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let bytes = ex.get(&close_key(round))?.ok_or_else(|| Error::Exchange {
            key: close_key(round),
            source: "exists but cannot be read".into(),
        })?;
        let closed: Close = json(&bytes, &close_key(round))?;
        let mut have: BTreeMap<String, Vec<u8>> = objects.into_iter().collect();
        let mut out = Vec::with_capacity(closed.updates.len());
        for key in closed.updates {
            let b = match have.remove(&key) {
                Some(b) => b,
                None => ex.get(&key)?.ok_or_else(|| Error::Exchange {
                    key: key.clone(),
                    source: format!("listed in {} but absent", close_key(round)).into(),
                })?,
            };
            out.push((key, b));
        }
        Ok((closed.members.into_iter().collect(), out))
    }

    fn check_config(cfg: &CoordinatorConfig) -> Result<()> {
        cfg.step_codec.validate()?;
        cfg.screen.weighting.validate()
    }

    /// Scores every accepted contribution with `scorer` (loss before/after).
    pub fn with_scorer(mut self, scorer: Box<dyn LossEvaluator + Send>) -> Self {
        self.scorer = Some(scorer);
        self
    }

    /// Merges through `policy` in [`finish_round`](Self::finish_round) (default:
    /// [`MergeAll`]).
    pub fn with_policy(mut self, policy: Box<dyn MergePolicy + Send>) -> Self {
        self.policy = policy;
        self
    }

    /// The settings.
    pub fn config(&self) -> &CoordinatorConfig {
        &self.cfg
    }

    /// The current global weights.
    pub fn global(&self) -> &ParamMap {
        &self.global
    }

    /// Waits until every member of `round` has an update object or `deadline` passes,
    /// then returns the update objects present, sorted by key.
    pub fn collect(
        &self,
        ex: &dyn Exchange,
        round: u64,
        deadline: Duration,
        poll: Duration,
    ) -> Result<(BTreeSet<u32>, Objects)> {
        self.collect_with_grace(ex, round, deadline, None, poll)
    }

    /// [`collect`](Self::collect), also closing the round once `grace` has passed since
    /// the first update of the round was seen: after a worker dies, the rounds that
    /// expect it cost the healthy workers' time plus `grace` instead of the whole
    /// `deadline` (which still bounds a round where nobody delivers). A member slower
    /// than the fastest by more than `grace` is `missing`, its work dropped by the usual
    /// late-update rule.
    pub fn collect_with_grace(
        &self,
        ex: &dyn Exchange,
        round: u64,
        deadline: Duration,
        grace: Option<Duration>,
        poll: Duration,
    ) -> Result<(BTreeSet<u32>, Objects)> {
        let start = Instant::now();
        let mut first_seen: Option<Instant> = None;
        let prefix = format!("rounds/{round:08}/updates/");
        loop {
            let members = members_for(ex, round)?;
            let keys = ex.list(&prefix)?;
            if !keys.is_empty() {
                first_seen.get_or_insert_with(Instant::now);
            }
            let all_in = members
                .iter()
                .all(|&w| keys.contains(&update_key(round, w)));
            let graced = matches!((grace, first_seen), (Some(g), Some(t)) if t.elapsed() >= g);
            if (all_in && !members.is_empty()) || graced || start.elapsed() >= deadline {
                let mut out = Vec::new();
                for key in keys {
                    if let Some(b) = ex.get(&key)? {
                        out.push((key, b));
                    }
                }
                return Ok((members, out));
            }
            std::thread::sleep(poll);
        }
    }

    /// The tensors a round touches (a fragment's, or all) and the version it expects.
    fn reference(&self, fragment: Option<(u32, &[String])>) -> (ParamMap, u64) {
        let reference = match fragment {
            Some((_, names)) => params::subset(&self.global, names),
            None => self.global.clone(),
        };
        let current = reference
            .keys()
            .map(|k| self.version_of.get(k).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        (reference, current)
    }

    /// Decodes and screens the update objects of `round` (restricted to the tensors of
    /// `fragment`, or all) exactly as [`finish_round`](Self::finish_round) does, without
    /// changing anything: what a merge policy's authority (validators, a ledger) should
    /// judge. Objects whose key names no worker are ignored; a header that disagrees with
    /// its key, a payload that does not decode or carries a non-finite value, and
    /// everything [`aggregate::screen`] refuses are rejected with a reason.
    pub fn screen_round(
        &self,
        round: u64,
        fragment: Option<(u32, &[String])>,
        objects: &Objects,
    ) -> ScreenedRound {
        let (reference, current) = self.reference(fragment);
        let mut decoded = Vec::new();
        let mut rejected = Vec::new();
        let mut sizes = BTreeMap::new();
        let mut declared = BTreeMap::new();
        for (key, bytes) in objects {
            // The key names the worker; a header that disagrees is a rejected update.
            let Some(key_worker) = worker_of_key(key) else {
                continue;
            };
            match decode_update(bytes, key) {
                Ok((w, r, base, weight, delta)) if w == key_worker && r == round => {
                    sizes.insert(w, bytes.len());
                    declared.insert(w, weight);
                    decoded.push(Update {
                        worker: w,
                        base_version: base,
                        weight,
                        delta,
                    });
                }
                Ok((w, r, ..)) => rejected.push(Rejection {
                    worker: key_worker,
                    reason: RejectReason::Decode {
                        message: format!("header says worker {w} round {r}"),
                    },
                }),
                Err(Error::NonFinite { tensor, index, .. }) => rejected.push(Rejection {
                    worker: key_worker,
                    reason: RejectReason::NonFinite { tensor, index },
                }),
                Err(e) => rejected.push(Rejection {
                    worker: key_worker,
                    reason: RejectReason::Decode {
                        message: e.to_string(),
                    },
                }),
            }
        }
        let (updates, screened_out) =
            aggregate::screen(decoded, &reference, current, &self.cfg.screen);
        rejected.extend(screened_out);
        rejected.sort_by_key(|r| r.worker);
        ScreenedRound {
            updates,
            declared,
            sizes,
            rejected,
        }
    }

    /// The outer step the coordinator would take on `updates` (their `weight`s as given)
    /// and the global weights after it, without changing anything (the outer
    /// optimizer's state is cloned): the one merge rule, for a validator's "model after
    /// merging these" or a check that the committed model is the merge of a given set.
    /// [`finish_round`](Self::finish_round) on the same updates reaches bitwise the same
    /// `global`. Every update must have the layout of the global weights (or of one
    /// fragment of them).
    pub fn preview(&self, updates: &[Update]) -> Result<MergedStep> {
        // The aggregate sums in worker order, as the screened set of a round is.
        if !updates.is_sorted_by_key(|u| u.worker) {
            let mut sorted = updates.to_vec();
            sorted.sort_by_key(|u| u.worker);
            return self.preview(&sorted);
        }
        let mut outer = self.outer.clone();
        let reference = match updates.first() {
            Some(u) => params::subset(&self.global, u.delta.keys()),
            None => self.global.clone(),
        };
        merge_step(&self.global, &reference, &mut outer, &self.cfg, updates, 0)
    }

    /// Screens, aggregates and applies the updates of `round` (restricted to the tensors
    /// `fragment_names`, or all) through the coordinator's merge policy, publishes the
    /// step and the manifest, and returns it.
    pub fn finish_round(
        &mut self,
        ex: &dyn Exchange,
        round: u64,
        fragment: Option<(u32, &[String])>,
        members: &BTreeSet<u32>,
        objects: Objects,
    ) -> Result<Manifest> {
        let mut policy = std::mem::replace(&mut self.policy, Box::new(MergeAll));
        let out = self.finish_round_with(ex, round, fragment, members, objects, policy.as_mut());
        self.policy = policy;
        out
    }

    /// [`finish_round`](Self::finish_round) with `policy` deciding which screened updates
    /// are merged and with what weight (e.g. [`crate::merge::ExternalVerdicts`] filled
    /// from a ledger's settlement). Excluded updates are listed as rejected with
    /// [`RejectReason::Excluded`]; a verdict weight that is not finite and positive, or a
    /// verdict count that does not match, is an error and nothing is published.
    pub fn finish_round_with(
        &mut self,
        ex: &dyn Exchange,
        round: u64,
        fragment: Option<(u32, &[String])>,
        members: &BTreeSet<u32>,
        objects: Objects,
        policy: &mut dyn MergePolicy,
    ) -> Result<Manifest> {
        let (members, objects) = Self::close_round(ex, round, members, objects)?;
        let members = &members;
        let (reference, _) = self.reference(fragment);
        let ScreenedRound {
            updates,
            declared,
            sizes,
            mut rejected,
        } = self.screen_round(round, fragment, &objects);
        let candidates: Vec<Candidate<'_>> = updates
            .iter()
            .map(|u| Candidate {
                update: u,
                declared_weight: declared.get(&u.worker).copied().unwrap_or(0.0),
                norm: params::l2_norm(&u.delta),
                bytes: sizes.get(&u.worker).copied().unwrap_or(0),
            })
            .collect();
        let verdicts = policy
            .verdicts(round, &candidates)
            .map_err(|source| Error::Policy { round, source })?;
        if verdicts.len() != candidates.len() {
            return Err(Error::Config {
                field: "merge policy".into(),
                message: format!(
                    "round {round}: {} verdicts for {} candidates",
                    verdicts.len(),
                    candidates.len()
                ),
            });
        }
        drop(candidates);
        let mut ok = Vec::with_capacity(updates.len());
        for (mut u, v) in updates.into_iter().zip(verdicts) {
            match v {
                Verdict::Merge { weight } if weight.is_finite() && weight > 0.0 => {
                    u.weight = weight;
                    ok.push(u);
                }
                Verdict::Merge { weight } => {
                    return Err(Error::Config {
                        field: "merge policy".into(),
                        message: format!(
                            "round {round}: weight {weight} for worker {} (must be finite and > 0)",
                            u.worker
                        ),
                    });
                }
                Verdict::Exclude { reason } => rejected.push(Rejection {
                    worker: u.worker,
                    reason: RejectReason::Excluded { message: reason },
                }),
            }
        }
        rejected.sort_by_key(|r| r.worker);

        let mut accepted: Vec<Accepted> = ok
            .iter()
            .map(|u| Accepted {
                worker: u.worker,
                weight: u.weight,
                declared_weight: declared.get(&u.worker).copied().unwrap_or(0.0),
                norm: params::l2_norm(&u.delta),
                bytes: sizes.get(&u.worker).copied().unwrap_or(0),
                score: None,
            })
            .collect();
        if let Some(scorer) = self.scorer.as_mut() {
            let before = scorer.loss(&self.global)?;
            let lr = self.cfg.outer.lr();
            for (a, u) in accepted.iter_mut().zip(&ok) {
                let mut candidate = self.global.clone();
                for (name, d) in &u.delta {
                    let t = candidate.get_mut(name).expect("screened layout");
                    t.data
                        .iter_mut()
                        .zip(&d.data)
                        .for_each(|(x, g)| *x -= lr * g);
                }
                a.score = Some(ContributionScore {
                    before,
                    after: scorer.loss(&candidate)?,
                });
            }
        }

        let merged = merge_step(
            &self.global,
            &reference,
            &mut self.outer,
            &self.cfg,
            &ok,
            round,
        )?;
        let delta_norm = if ok.is_empty() {
            0.0
        } else {
            params::l2_norm(&merged.delta)
        };
        // Everyone (the coordinator included) applies the *decoded* step, so all copies
        // of the global weights stay bitwise identical whatever the codec loses.
        self.global = merged.global;
        for name in merged.step.keys() {
            self.version_of.insert(name.clone(), round);
        }
        let step_bytes = merged.step_bytes;
        // Every output is create-only and, after a restart inside this round, equal to
        // what the crashed coordinator wrote (same closed input, deterministic merge).
        if self.cfg.checkpoint_every > 0 && round.is_multiple_of(self.cfg.checkpoint_every) {
            put_same(
                ex,
                &global_key(round),
                &codec::encode(&self.global, Codec::F32)?,
            )?;
        }
        put_same(ex, &step_key(round), &step_bytes)?;
        if self.outer.is_stateful() {
            put_same(
                ex,
                &outer_key(round),
                &codec::encode(self.outer.momentum(), Codec::F32)?,
            )?;
        }
        let present: BTreeSet<u32> = objects
            .iter()
            .filter_map(|(k, _)| worker_of_key(k))
            .collect();
        accepted.sort_by_key(|a| a.worker);
        let manifest = Manifest {
            round,
            fragment: fragment.map(|(f, _)| f),
            members: members.iter().copied().collect(),
            accepted,
            rejected,
            missing: members.difference(&present).copied().collect(),
            step_codec: self.cfg.step_codec,
            step_bytes: step_bytes.len(),
            delta_norm,
            tensors: match fragment {
                Some(_) => reference.keys().cloned().collect(),
                None => Vec::new(),
            },
        };
        let body = serde_json::to_vec_pretty(&manifest).map_err(|source| Error::Json {
            what: manifest_key(round),
            source,
        })?;
        put_same(ex, &manifest_key(round), &body)?;
        Ok(manifest)
    }

    /// [`collect`](Self::collect) then [`finish_round`](Self::finish_round).
    pub fn run_round(
        &mut self,
        ex: &dyn Exchange,
        round: u64,
        fragment: Option<(u32, &[String])>,
        deadline: Duration,
        poll: Duration,
    ) -> Result<Manifest> {
        let (members, objects) = self.collect(ex, round, deadline, poll)?;
        self.finish_round(ex, round, fragment, &members, objects)
    }
}

/// Writes `key` unless it already holds exactly `bytes` (a restarted coordinator
/// re-publishing what it wrote before the crash); different bytes are an error.
fn put_same(ex: &dyn Exchange, key: &str, bytes: &[u8]) -> Result<()> {
    match ex.put_new(key, bytes) {
        Err(Error::AlreadyExists { .. }) => {
            if ex.get(key)?.as_deref() == Some(bytes) {
                Ok(())
            } else {
                Err(Error::Exchange {
                    key: key.into(),
                    source: "already written with other bytes (two coordinators, or a \
                             non-deterministic merge policy or scorer)"
                        .into(),
                })
            }
        }
        other => other,
    }
}

/// Adds a decoded step to `global`, tensor by tensor (the one way every party applies it).
fn apply_step(global: &mut ParamMap, step: &ParamMap) -> Result<()> {
    for (name, s) in step {
        let g = global.get_mut(name).ok_or_else(|| Error::Tensor {
            name: name.clone(),
            message: "in the step but not in the global weights".into(),
        })?;
        if g.data.len() != s.data.len() {
            return Err(Error::Tensor {
                name: name.clone(),
                message: format!("step shape {:?} vs {:?}", s.shape, g.shape),
            });
        }
        g.data.iter_mut().zip(&s.data).for_each(|(x, d)| *x += d);
    }
    Ok(())
}

/// The worker an update key `rounds/.../updates/{w:05}.bin` names.
fn worker_of_key(key: &str) -> Option<u32> {
    key.rsplit('/').next()?.strip_suffix(".bin")?.parse().ok()
}

/// The one merge rule: aggregate `updates` (none: a zero step on `reference`'s tensors),
/// take the outer step (advancing `outer`), pass it through the step codec and add the
/// decoded step to `global`. `round` names the step in decode errors.
fn merge_step(
    global: &ParamMap,
    reference: &ParamMap,
    outer: &mut OuterState,
    cfg: &CoordinatorConfig,
    updates: &[Update],
    round: u64,
) -> Result<MergedStep> {
    let (delta, step) = if updates.is_empty() {
        let zero: ParamMap = reference
            .iter()
            .map(|(n, t)| {
                (
                    n.clone(),
                    crate::params::NamedTensor::zeros(t.shape.clone()),
                )
            })
            .collect();
        (zero.clone(), zero)
    } else {
        let delta = cfg.aggregator.aggregate(updates);
        let step = outer.step(&delta);
        (delta, step)
    };
    let step_bytes = codec::encode(&step, cfg.step_codec)?;
    let (_, step) = codec::decode(&step_bytes, &step_key(round))?;
    let mut global = global.clone();
    apply_step(&mut global, &step)?;
    Ok(MergedStep {
        delta,
        step,
        step_bytes,
        global,
    })
}

/// A worker's side of the protocol: its anchor (copy of the global weights), error
/// feedback residual and byte counters.
#[derive(Debug, Clone)]
pub struct WorkerClient {
    /// Worker id.
    pub id: u32,
    /// Uplink codec.
    pub codec: Codec,
    /// Keep what the codec lost and add it to the next pseudo-gradient.
    pub error_feedback: bool,
    anchor: ParamMap,
    anchor_version: BTreeMap<String, u64>,
    residual: ParamMap,
    /// Bytes uploaded so far.
    pub bytes_sent: u64,
    /// Bytes downloaded so far.
    pub bytes_received: u64,
}

impl WorkerClient {
    /// Joins from round `from_round`, downloading the global weights at version
    /// `from_round - 1` (waiting up to `timeout` for them).
    pub fn join(
        ex: &dyn Exchange,
        id: u32,
        codec: Codec,
        from_round: u64,
        timeout: Duration,
        poll: Duration,
    ) -> Result<Self> {
        codec.validate()?;
        let version = from_round.saturating_sub(1);
        let bytes = wait_for(ex, &global_key(version), timeout, poll)?;
        let (_, anchor) = codec::decode(&bytes, &global_key(version))?;
        let rec = serde_json::to_vec(&Membership {
            worker: id,
            round: from_round.max(1),
        })
        .map_err(|source| Error::Json {
            what: member_key(id),
            source,
        })?;
        ex.put_new(&member_key(id), &rec)?;
        Ok(Self {
            id,
            codec,
            error_feedback: false,
            anchor_version: anchor.keys().map(|k| (k.clone(), version)).collect(),
            anchor,
            residual: ParamMap::new(),
            bytes_sent: 0,
            bytes_received: bytes.len() as u64,
        })
    }

    /// Records that this worker contributes to no round after `after_round`.
    pub fn leave(&self, ex: &dyn Exchange, after_round: u64) -> Result<()> {
        let rec = serde_json::to_vec(&Membership {
            worker: self.id,
            round: after_round,
        })
        .map_err(|source| Error::Json {
            what: leave_key(self.id),
            source,
        })?;
        ex.put_new(&leave_key(self.id), &rec)
    }

    /// The global weights as this worker last received them.
    pub fn anchor(&self) -> &ParamMap {
        &self.anchor
    }

    /// Computes the pseudo-gradient `anchor - local` on the tensors of `local`, encodes
    /// it (with error feedback if enabled) and uploads it for `round`. Returns the
    /// object size.
    pub fn submit(
        &mut self,
        ex: &dyn Exchange,
        round: u64,
        weight: f32,
        local: &ParamMap,
    ) -> Result<usize> {
        let anchor = params::subset(&self.anchor, local.keys());
        let mut delta = params::sub(&anchor, local)?;
        if self.error_feedback {
            for (name, d) in &mut delta {
                if let Some(r) = self.residual.get(name) {
                    d.data.iter_mut().zip(&r.data).for_each(|(x, e)| *x += e);
                }
            }
        }
        let payload = codec::encode(&delta, self.codec)?;
        if self.error_feedback {
            let (_, sent) = codec::decode(&payload, "own update")?;
            for (name, r) in params::sub(&delta, &sent)? {
                self.residual.insert(name, r);
            }
        }
        let base = local
            .keys()
            .map(|k| self.anchor_version.get(k).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        let bytes = encode_update(self.id, round, base, weight, &payload);
        ex.put_new(&update_key(round, self.id), &bytes)?;
        self.bytes_sent += bytes.len() as u64;
        Ok(bytes.len())
    }

    /// Waits for round `round` to commit, applies its step to the anchor and returns
    /// the manifest and the updated tensors of the anchor (what the trainer should load,
    /// possibly after mixing with its local weights).
    pub fn receive(
        &mut self,
        ex: &dyn Exchange,
        round: u64,
        timeout: Duration,
        poll: Duration,
    ) -> Result<(Manifest, ParamMap)> {
        let mbytes = wait_for(ex, &manifest_key(round), timeout, poll)?;
        let manifest: Manifest = json(&mbytes, &manifest_key(round))?;
        let sbytes = ex.get(&step_key(round))?.ok_or_else(|| Error::Exchange {
            key: step_key(round),
            source: "manifest committed without a step".into(),
        })?;
        self.bytes_received += (mbytes.len() + sbytes.len()) as u64;
        let (_, step) = codec::decode(&sbytes, &step_key(round))?;
        for (name, s) in &step {
            let a = self.anchor.get_mut(name).ok_or_else(|| Error::Tensor {
                name: name.clone(),
                message: format!("in step of round {round} but not in the model"),
            })?;
            if a.data.len() != s.data.len() {
                return Err(Error::Tensor {
                    name: name.clone(),
                    message: format!("step shape {:?} vs {:?}", s.shape, a.shape),
                });
            }
            a.data.iter_mut().zip(&s.data).for_each(|(x, d)| *x += d);
            self.anchor_version.insert(name.clone(), round);
        }
        let updated = params::subset(&self.anchor, step.keys());
        Ok((manifest, updated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::InProcess;
    use crate::params::NamedTensor;
    use proptest::prelude::*;

    fn one(data: Vec<f32>) -> ParamMap {
        let mut m = ParamMap::new();
        m.insert(
            "w".into(),
            NamedTensor {
                shape: vec![data.len()],
                data,
            },
        );
        m
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Error feedback keeps a finite residual whatever the deltas (up to f32's range)
        /// and whichever lossy codec, and a non-finite local model is a typed error that
        /// leaves the residual as it was.
        #[test]
        fn error_feedback_residuals_stay_finite(
            rounds in prop::collection::vec(
                prop::collection::vec(-3e38f32..3e38, 6), 1..6),
            poison in any::<prop::sample::Index>(),
            codec in prop::sample::select(vec![
                Codec::F16, Codec::Int8 { block: 4 }, Codec::Q4 { block: 4 }, Codec::TopK { density: 0.34 },
            ]),
        ) {
            let ex = InProcess::new();
            ex.put_new(&global_key(0), &codec::encode(&one(vec![0.0; 6]), Codec::F32).unwrap()).unwrap();
            let mut c = WorkerClient::join(&ex, 0, codec, 1, Duration::ZERO, Duration::ZERO).unwrap();
            c.error_feedback = true;
            for (r, local) in rounds.iter().enumerate() {
                // The anchor is zero, so the pseudo-gradient is -local (+ the residual).
                match c.submit(&ex, r as u64 + 1, 1.0, &one(local.clone())) {
                    Ok(_) | Err(Error::NonFinite { .. }) => {}
                    Err(e) => prop_assert!(false, "{e}"),
                }
                prop_assert!(c.residual.values().all(|t| t.data.iter().all(|v| v.is_finite())), "{:?}", c.residual);
            }
            let before = c.residual.clone();
            let mut bad = rounds[0].clone();
            bad[poison.index(6)] = f32::NAN;
            let next = rounds.len() as u64 + 1;
            let refused = matches!(c.submit(&ex, next, 1.0, &one(bad)), Err(Error::NonFinite { .. }));
            prop_assert!(refused);
            prop_assert_eq!(&c.residual, &before);
            prop_assert!(ex.get(&update_key(next, 0)).unwrap().is_none());
        }
    }
}
