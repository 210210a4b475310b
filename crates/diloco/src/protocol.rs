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
    /// Weight used (after the stale rule).
    pub weight: f32,
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
        cfg.step_codec.validate()?;
        ex.put_new(&global_key(0), &codec::encode(&init, Codec::F32)?)?;
        Ok(Self {
            version_of: init.keys().map(|k| (k.clone(), 0)).collect(),
            global: init,
            outer: OuterState::new(cfg.outer),
            cfg,
            scorer: None,
        })
    }

    /// Scores every accepted contribution with `scorer` (loss before/after).
    pub fn with_scorer(mut self, scorer: Box<dyn LossEvaluator + Send>) -> Self {
        self.scorer = Some(scorer);
        self
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

    /// Screens, aggregates and applies the updates of `round` (restricted to the tensors
    /// `fragment_names`, or all), publishes the step and the manifest, and returns it.
    pub fn finish_round(
        &mut self,
        ex: &dyn Exchange,
        round: u64,
        fragment: Option<(u32, &[String])>,
        members: &BTreeSet<u32>,
        objects: Objects,
    ) -> Result<Manifest> {
        let reference = match fragment {
            Some((_, names)) => params::subset(&self.global, names),
            None => self.global.clone(),
        };
        let current = reference
            .keys()
            .map(|k| self.version_of.get(k).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        let mut decoded = Vec::new();
        let mut rejected = Vec::new();
        let mut sizes = BTreeMap::new();
        for (key, bytes) in &objects {
            // The key names the worker; a header that disagrees is a rejected update.
            let key_worker = key
                .rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".bin"))
                .and_then(|w| w.parse::<u32>().ok());
            let Some(key_worker) = key_worker else {
                continue;
            };
            match decode_update(bytes, key) {
                Ok((w, r, base, weight, delta)) if w == key_worker && r == round => {
                    sizes.insert(w, bytes.len());
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
                Err(e) => rejected.push(Rejection {
                    worker: key_worker,
                    reason: RejectReason::Decode {
                        message: e.to_string(),
                    },
                }),
            }
        }
        let (ok, screened_out) = aggregate::screen(decoded, &reference, current, &self.cfg.screen);
        rejected.extend(screened_out);
        rejected.sort_by_key(|r| r.worker);

        let mut accepted: Vec<Accepted> = ok
            .iter()
            .map(|u| Accepted {
                worker: u.worker,
                weight: u.weight,
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

        let (step, delta_norm) = if ok.is_empty() {
            let zero = reference
                .iter()
                .map(|(n, t)| (n.clone(), crate::params::Tensor::zeros(t.shape.clone())))
                .collect();
            (zero, 0.0)
        } else {
            let delta = self.cfg.aggregator.aggregate(&ok);
            let norm = params::l2_norm(&delta);
            (self.outer.step(&delta), norm)
        };
        // Everyone (the coordinator included) applies the *decoded* step, so all copies
        // of the global weights stay bitwise identical whatever the codec loses.
        let step_bytes = codec::encode(&step, self.cfg.step_codec)?;
        let (_, step) = codec::decode(&step_bytes, &step_key(round))?;
        for (name, s) in &step {
            let g = self.global.get_mut(name).expect("reference layout");
            g.data.iter_mut().zip(&s.data).for_each(|(x, d)| *x += d);
            self.version_of.insert(name.clone(), round);
        }
        if self.cfg.checkpoint_every > 0 && round.is_multiple_of(self.cfg.checkpoint_every) {
            ex.put_new(
                &global_key(round),
                &codec::encode(&self.global, Codec::F32)?,
            )?;
        }
        ex.put_new(&step_key(round), &step_bytes)?;
        let present: BTreeSet<u32> = objects
            .iter()
            .filter_map(|(k, _)| k.rsplit('/').next()?.strip_suffix(".bin")?.parse().ok())
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
        };
        let body = serde_json::to_vec_pretty(&manifest).map_err(|source| Error::Json {
            what: manifest_key(round),
            source,
        })?;
        ex.put_new(&manifest_key(round), &body)?;
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
            message: "manifest committed without a step".into(),
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
