//! The operator: runs the ledger and diloco's coordinator, registers the parties that ask to
//! join, opens and closes rounds, ingests the signed records from the store, records what
//! the ledger derives (slashes), merges the contributions the ledger's verdicts accept
//! through diloco's coordinator, settles, and publishes the result.
//!
//! It keeps no state outside the ledger and the store: [`Operator::start`] on an existing
//! ledger directory replays every settled round through a fresh coordinator (the merged set
//! of each round is what the ledger's history says; every object the replay would publish
//! must already hold the same bytes), then resumes the open round at the phase the ledger
//! and the store show. Nothing accepted is lost (every admission is durable in the ledger
//! before the next phase), nothing is paid twice (a round settles once in the ledger), and
//! the model version sequence is the same.

use crate::artifact::Refusal;
use crate::error::{Error, Result};
use crate::protocol::{
    CloseNotice, Committed, JoinRequest, Member, ProtocolConfig, Role, RoundOpen, RoundResult, hx,
    keys, parse, to_json, unhex32, unhex64,
};
use crate::roles::PhaseFn;
use crate::store::Store;
use crate::validator::{RoundView, decode_batch};
use diloco::aggregate::ScreenConfig;
use diloco::codec::Codec;
use diloco::exchange::Exchange;
use diloco::merge::{ExternalVerdicts, Verdict as MergeVerdict};
use diloco::params::ParamMap;
use diloco::protocol::{Coordinator, CoordinatorConfig, Manifest, update_key};
use incentive_ledger::identity::{Keypair, PublicKey, verify_strict};
use incentive_ledger::ledger::Ledger;
use incentive_ledger::merkle::Hash;
use incentive_ledger::record::{Body, Genesis, Protocol, SignedMessage};
use incentive_ledger::rewards::EvalScore;
use incentive_ledger::state::ContributionOutcome;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// SHA-256 of named tensors (names, shapes, little-endian f32 values, in name order): the
/// model hash contributions name as parent and settlements as next base.
pub fn params_hash(p: &ParamMap) -> Hash {
    let mut h = Sha256::new();
    for (name, t) in p {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((t.shape.len() as u64).to_le_bytes());
        for &d in &t.shape {
            h.update((d as u64).to_le_bytes());
        }
        for x in &t.data {
            h.update(x.to_le_bytes());
        }
    }
    h.finalize().into()
}

/// The merge policy the ledger's verdicts decide: a contribution is merged (with the
/// protocol's equal weight) exactly when it is unslashed and has a measured consensus
/// score; copies, free riders, poisoners, invalid and non-finite updates are slashed and
/// left out, and a contribution without a quorum of validator stake is left out too.
pub fn merged_by_verdicts(outcomes: &[ContributionOutcome]) -> Vec<Hash> {
    outcomes
        .iter()
        .filter(|o| o.slash.is_none() && matches!(o.consensus, Some(EvalScore::Ppm(_))))
        .map(|o| o.id)
        .collect()
}

/// An exchange on which re-publishing an object with the same bytes succeeds (the replay
/// of a restarted operator), and different bytes fail.
struct Idempotent<'a>(&'a Store, u64);

impl Exchange for Idempotent<'_> {
    fn put_new(&self, key: &str, bytes: &[u8]) -> diloco::Result<()> {
        self.0
            .put_idempotent(key, bytes, self.1)
            .map(|_| ())
            .map_err(|e| diloco::Error::Exchange {
                key: key.into(),
                source: Box::new(e),
            })
    }
    fn get(&self, key: &str) -> diloco::Result<Option<Vec<u8>>> {
        self.0.get(key)
    }
    fn list(&self, prefix: &str) -> diloco::Result<Vec<String>> {
        self.0.list(prefix)
    }
}

/// What the operator measured about one round (for reports).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RoundTiming {
    /// Round.
    pub round: u64,
    /// Wall time from open to result (s).
    pub wall_s: f64,
    /// Operator work: ingest, slashes, settlement, merge (s).
    pub operator_s: f64,
    /// Bytes the operator read from the store (records, artifacts, evaluations).
    pub read_bytes: u64,
    /// Bytes it wrote (documents, model versions, steps).
    pub written_bytes: u64,
}

/// The operator of one run.
pub struct Operator<'s> {
    store: &'s Store,
    protocol: ProtocolConfig,
    ledger: Ledger,
    coordinator: Coordinator,
    /// Registered parties by key.
    members: BTreeMap<PublicKey, Member>,
    /// Timings of the rounds run by this process.
    pub timings: Vec<RoundTiming>,
    /// Called with (round, phase name) before each phase (progress display, fault tests).
    pub on_phase: Option<Box<PhaseFn>>,
}

impl std::fmt::Debug for Operator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("round", &self.ledger.state().round)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

fn coordinator_config(p: &ProtocolConfig) -> CoordinatorConfig {
    CoordinatorConfig {
        outer: p.outer,
        aggregator: diloco::aggregate::Aggregator::Mean,
        screen: ScreenConfig {
            max_staleness: 0,
            ..ScreenConfig::default()
        },
        step_codec: Codec::F32,
        checkpoint_every: 1,
    }
}

impl<'s> Operator<'s> {
    /// Starts a run on `store` with the ledger in `ledger_dir` (created with `init` as the
    /// base model), or resumes it when the directory holds a ledger. `run_doc` is the run's
    /// configuration document (JSON: model, training config, the search record if a search
    /// chose it), published as `magnet/run.json`; its SHA-256 and `search` (the SHA-256 of
    /// the search journal, zeros when the config was given) go into the ledger's protocol
    /// record.
    pub fn start(
        store: &'s Store,
        ledger_dir: &Path,
        key: Keypair,
        protocol: ProtocolConfig,
        init: ParamMap,
        run_doc: &[u8],
        search: Hash,
    ) -> Result<Self> {
        protocol.validate()?;
        let lim = protocol.limits.document;
        let resume = ledger_dir.join(incentive_ledger::log::DB_FILE).exists();
        let pubkey = key.public();
        let ledger = if resume {
            Ledger::open(ledger_dir, Some(&pubkey), Some(key))?
        } else {
            let genesis = Genesis {
                base_model: params_hash(&init),
                initial_emission: protocol.emission,
                halving_rounds: protocol.halving_rounds,
                cap: protocol
                    .emission
                    .saturating_mul(2 * protocol.halving_rounds),
                copy_threshold_ppm: 1_000_000,
            };
            let mut l = Ledger::create(ledger_dir, &protocol.origin, key, genesis)?;
            l.set_protocol(Protocol {
                participation_ppm: protocol.participation_ppm,
                poison_tolerance_ppm: protocol.poison_tolerance_ppm,
                config: Sha256::digest(run_doc).into(),
                search,
            })?;
            l
        };
        store.put_idempotent(keys::RUN, run_doc, lim)?;
        store.put_idempotent(keys::PROTOCOL, &to_json(&protocol), lim)?;
        let coordinator = Coordinator::start(
            &Idempotent(store, protocol.limits.artifact),
            init,
            coordinator_config(&protocol),
        )?;
        let mut op = Self {
            store,
            protocol,
            ledger,
            coordinator,
            members: BTreeMap::new(),
            timings: Vec::new(),
            on_phase: None,
        };
        op.load_members()?;
        op.replay()?;
        Ok(op)
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The global weights (the latest model version).
    pub fn global(&self) -> &ParamMap {
        self.coordinator.global()
    }

    /// The protocol.
    pub fn protocol(&self) -> &ProtocolConfig {
        &self.protocol
    }

    /// Closes the ledger (flushes) and returns it.
    pub fn into_ledger(self) -> Ledger {
        self.ledger
    }

    fn phase(&mut self, round: u64, name: &str) {
        if let Some(f) = self.on_phase.as_mut() {
            f(round, name);
        }
    }

    fn load_members(&mut self) -> Result<()> {
        for key in self.store.list(keys::MEMBERS)? {
            let Some(b) = self
                .store
                .get_limited(&key, self.protocol.limits.document)?
            else {
                continue;
            };
            let m: Member = parse(&b, &key)?;
            let k = PublicKey(unhex32(&m.key)?);
            if self.ledger.state().registry.contains_key(&k) {
                self.members.insert(k, m);
            }
        }
        Ok(())
    }

    /// Registers every valid join request not yet registered; refused requests are skipped
    /// (and stay refused: nothing is written for them).
    fn admit_joins(&mut self, round: u64) -> Result<usize> {
        let mut added = 0;
        for key in self.store.list(keys::JOIN)? {
            let Ok(Some(b)) = self.store.get_limited(&key, 64 << 10) else {
                continue;
            };
            let Ok(req) = parse::<JoinRequest>(&b, &key) else {
                continue;
            };
            let (Ok(k), Ok(sig)) = (unhex32(&req.key), unhex64(&req.signature)) else {
                continue;
            };
            let k = PublicKey(k);
            if verify_strict(&k, &req.signed_bytes(&self.protocol.origin), &sig).is_err() {
                continue;
            }
            if self.members.contains_key(&k) {
                continue;
            }
            let role = match req.role {
                Role::Worker => incentive_ledger::record::Role::Worker,
                Role::Validator => incentive_ledger::record::Role::Validator,
            };
            if !self.ledger.state().registry.contains_key(&k) {
                let stake = if req.role == Role::Validator {
                    req.stake
                } else {
                    0
                };
                if self.ledger.register(k, role, stake).is_err() {
                    continue;
                }
            }
            let worker_id = match req.role {
                Role::Worker => self
                    .members
                    .values()
                    .filter(|m| m.role == Role::Worker)
                    .map(|m| m.worker_id + 1)
                    .max()
                    .unwrap_or(0),
                Role::Validator => u32::MAX,
            };
            let m = Member {
                key: req.key.clone(),
                role: req.role,
                worker_id,
                name: req.name.chars().take(64).collect(),
                from_round: round,
            };
            self.store.put_idempotent(
                &keys::member(&req.key),
                &to_json(&m),
                self.protocol.limits.document,
            )?;
            self.members.insert(k, m);
            added += 1;
        }
        Ok(added)
    }

    fn workers_for(&self, round: u64) -> BTreeSet<PublicKey> {
        self.members
            .iter()
            .filter(|(_, m)| m.role == Role::Worker && m.from_round <= round)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Validators expected to evaluate `round`, with their stake.
    fn validators_for(&self, round: u64) -> BTreeMap<PublicKey, u64> {
        self.members
            .iter()
            .filter(|(_, m)| m.role == Role::Validator && m.from_round <= round)
            .filter_map(|(k, _)| self.ledger.state().registry.get(k).map(|(_, s)| (*k, *s)))
            .collect()
    }

    /// Parses and ingests the round's commit objects not yet in the ledger. Returns the
    /// refusals (object key, reason).
    fn ingest_commits(
        &mut self,
        round: u64,
        records: &mut BTreeMap<Hash, Committed>,
        refused: &mut BTreeMap<String, String>,
        read: &mut u64,
    ) -> Result<()> {
        for key in self.store.list(&keys::commits(round))? {
            if refused.contains_key(&key) {
                continue;
            }
            let bytes = match self.store.get_limited(&key, self.protocol.limits.record) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(Error::TooLarge { size, limit, .. }) => {
                    refused.insert(
                        key,
                        format!("record of {size} bytes over the limit {limit}"),
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            *read += bytes.len() as u64;
            let sm = match SignedMessage::from_bytes(&bytes) {
                Ok(sm) => sm,
                Err(e) => {
                    refused.insert(key, format!("malformed record: {e}"));
                    continue;
                }
            };
            if records.contains_key(&sm.id) {
                continue;
            }
            let Body::Contribution(c) = &sm.msg.body else {
                refused.insert(
                    key,
                    format!(
                        "a {} record where a contribution belongs",
                        sm.msg.body.kind()
                    ),
                );
                continue;
            };
            let Some(member) = self
                .members
                .get(&sm.msg.signer)
                .filter(|m| m.role == Role::Worker)
            else {
                refused.insert(key, "signer is not a registered worker".into());
                continue;
            };
            let committed = Committed {
                id: hx(&sm.id),
                worker: member.key.clone(),
                worker_id: member.worker_id,
                artifact: hx(&c.artifact),
                size: c.artifact_size,
                index: 0,
            };
            let already = self
                .ledger
                .state()
                .open_contributions()
                .iter()
                .find(|x| x.id == sm.id)
                .map(|x| x.index);
            let index = match already {
                Some(i) => i,
                None => match self.ledger.submit(&sm) {
                    Ok(i) => i,
                    Err(e) => {
                        refused.insert(key, e.to_string());
                        continue;
                    }
                },
            };
            records.insert(sm.id, Committed { index, ..committed });
        }
        Ok(())
    }

    /// Runs every remaining round; returns the results of the rounds this call ran.
    pub fn run(&mut self) -> Result<Vec<RoundResult>> {
        let mut out = Vec::new();
        while self.ledger.state().round <= self.protocol.rounds {
            out.push(self.run_round()?);
        }
        Ok(out)
    }

    /// Runs (or resumes) the ledger's open round to its result.
    pub fn run_round(&mut self) -> Result<RoundResult> {
        let round = self.ledger.state().round;
        let started = Instant::now();
        let mut op_time = Duration::ZERO;
        let (mut read, mut written) = (0u64, 0u64);
        let lim = self.protocol.limits.document;
        let poll = Duration::from_millis(self.protocol.poll_ms);
        self.phase(round, "open");
        if self.ledger.state().closed_at.is_none() {
            let begin = Instant::now();
            loop {
                self.admit_joins(round)?;
                let workers = self.workers_for(round).len();
                let validators = self.validators_for(round).len();
                if round > 1
                    || (workers >= self.protocol.min_workers
                        && validators >= self.protocol.min_validators)
                    || begin.elapsed() >= Duration::from_millis(self.protocol.commit_deadline_ms)
                {
                    break;
                }
                std::thread::sleep(poll);
            }
        }
        let parent = params_hash(self.coordinator.global());
        if parent != self.ledger.state().base {
            return Err(Error::Protocol(format!(
                "round {round}: the coordinator's model {} is not the ledger's base {}",
                hx(&parent),
                hx(&self.ledger.state().base)
            )));
        }
        let open = to_json(&RoundOpen {
            round,
            version: round - 1,
            parent: hx(&parent),
        });
        written += open.len() as u64;
        self.store.put_idempotent(&keys::open(round), &open, lim)?;

        // Commit phase (a restarted operator takes the close it already published).
        self.phase(round, "commit");
        let close = match self.store.get_limited(&keys::close(round), lim)? {
            Some(b) if self.ledger.state().closed_at.is_some() => parse(&b, &keys::close(round))?,
            _ => self.commit_phase(round, &mut op_time, &mut read, &mut written)?,
        };
        self.finish(round, close, started, op_time, read, written)
    }

    fn commit_phase(
        &mut self,
        round: u64,
        op_time: &mut Duration,
        read: &mut u64,
        written: &mut u64,
    ) -> Result<CloseNotice> {
        let lim = self.protocol.limits.document;
        let poll = Duration::from_millis(self.protocol.poll_ms);
        let mut records: BTreeMap<Hash, Committed> = BTreeMap::new();
        let mut refused: BTreeMap<String, String> = BTreeMap::new();
        let begin = Instant::now();
        // When the quorum was first reached: the grace window for stragglers starts there,
        // not at the first commit, so parties that commit at once without training (a
        // copier, a NaN sender) cannot start the clock and cut the honest workers out.
        let mut quorum_at: Option<Instant> = None;
        loop {
            let t = Instant::now();
            self.ingest_commits(round, &mut records, &mut refused, read)?;
            *op_time += t.elapsed();
            if self.ledger.state().closed_at.is_some() {
                break;
            }
            let n = self.ledger.state().open_contributions().len();
            if n >= self.protocol.quorum {
                quorum_at.get_or_insert_with(Instant::now);
            }
            let expected = self.workers_for(round);
            let committed: BTreeSet<PublicKey> = self
                .ledger
                .state()
                .open_contributions()
                .iter()
                .map(|c| c.worker)
                .collect();
            let all = !expected.is_empty() && expected.iter().all(|k| committed.contains(k));
            let graced = quorum_at
                .is_some_and(|q| q.elapsed() >= Duration::from_millis(self.protocol.grace_ms));
            if all
                || graced
                || begin.elapsed() >= Duration::from_millis(self.protocol.commit_deadline_ms)
            {
                self.ledger.close_round()?;
                break;
            }
            // New parties may join while a round waits; they take part from the next one.
            if round < self.protocol.rounds {
                self.admit_joins(round + 1)?;
            }
            std::thread::sleep(poll);
        }
        let beacon_size = self.ledger.state().beacon_size().expect("closed");
        let contributions: Vec<Committed> = self
            .ledger
            .state()
            .open_contributions()
            .iter()
            .map(|c| {
                records.get(&c.id).cloned().ok_or_else(|| {
                    Error::Protocol(format!("round {round}: contribution {} is in the ledger but its record is not in the store", hx(&c.id)))
                })
            })
            .collect::<Result<_>>()?;
        let close = CloseNotice {
            round,
            contributions,
            beacon_size,
            beacon_root: hx(&self.ledger.log().tree().root_at(beacon_size)?),
            refused: refused.into_iter().collect(),
        };
        let close_bytes = to_json(&close);
        *written += close_bytes.len() as u64;
        self.store
            .put_idempotent(&keys::close(round), &close_bytes, lim)?;
        Ok(close)
    }

    fn finish(
        &mut self,
        round: u64,
        close: CloseNotice,
        started: Instant,
        mut op_time: Duration,
        mut read: u64,
        mut written: u64,
    ) -> Result<RoundResult> {
        let lim = self.protocol.limits.document;
        let poll = Duration::from_millis(self.protocol.poll_ms);

        // Evaluation phase: wait for the validators' batches (all of them, or the deadline).
        self.phase(round, "evaluate");
        let marker = format!(
            "{}evaluated.json",
            keys::evals(round).trim_end_matches("evals/")
        );
        let batches: Vec<String> = if let Some(b) = self.store.get_limited(&marker, lim)? {
            parse(&b, &marker)?
        } else {
            {
                let validators = self.validators_for(round);
                let total: u64 = self.ledger.state().validator_stake();
                let begin = Instant::now();
                let mut quorum_at: Option<Instant> = None;
                let batches = loop {
                    let listed = self.store.list(&keys::evals(round))?;
                    let mut signers = BTreeSet::new();
                    for k in &listed {
                        if let Ok(Some(b)) =
                            self.store.get_limited(k, self.protocol.limits.evaluations)
                            && let Ok(msgs) = decode_batch(&b, k)
                            && let Some(m) = msgs.first()
                        {
                            signers.insert(m.msg.signer);
                        }
                    }
                    let all = validators.keys().all(|v| signers.contains(v));
                    // Stake of more than half in: a dead validator costs the grace window.
                    let stake: u64 = validators
                        .iter()
                        .filter(|(k, _)| signers.contains(*k))
                        .map(|(_, s)| s)
                        .sum();
                    if 2 * stake > total {
                        quorum_at.get_or_insert_with(Instant::now);
                    }
                    let graced = quorum_at.is_some_and(|t| {
                        t.elapsed() >= Duration::from_millis(self.protocol.grace_ms)
                    });
                    if all
                        || graced
                        || begin.elapsed() >= Duration::from_millis(self.protocol.eval_deadline_ms)
                    {
                        break listed;
                    }
                    std::thread::sleep(poll);
                };
                // Fixed before ingest, so a restarted operator ingests exactly these.
                self.store
                    .put_idempotent(&marker, &to_json(&batches), lim)?;
                batches
            }
        };
        let t = Instant::now();
        for k in &batches {
            let Ok(Some(b)) = self.store.get_limited(k, self.protocol.limits.evaluations) else {
                continue;
            };
            read += b.len() as u64;
            let Ok(msgs) = decode_batch(&b, k) else {
                continue;
            };
            // Refusals (a lying or confused validator's replays, wrong seeds) are the
            // ledger's to decide; they are simply not admitted.
            let _ = self.ledger.submit_batch(&msgs)?;
        }
        self.ledger.record_slashes()?;
        op_time += t.elapsed();

        // Merge what the verdicts accept, then settle on the merged model.
        self.phase(round, "merge");
        let t = Instant::now();
        let (_, outcomes) = self.ledger.state().compute_settlement([0; 32]);
        let view = RoundView::load(
            self.store,
            &self.protocol,
            close.clone(),
            self.coordinator.global(),
        )?;
        read += view.bytes;
        let merged = merged_by_verdicts(&outcomes);
        let manifest = self.merge(round, &view, &outcomes)?;
        written += manifest.step_bytes as u64;
        let model = params_hash(self.coordinator.global());
        let settlement = self.ledger.settle(model)?;
        let settlement_id = self.ledger.state().settlement_id(round).expect("settled");
        op_time += t.elapsed();
        let result = self.result(
            round,
            &outcomes,
            &merged,
            &view,
            &settlement,
            settlement_id,
            model,
        );
        let rb = to_json(&result);
        written += rb.len() as u64;
        self.store.put_idempotent(&keys::result(round), &rb, lim)?;
        self.timings.push(RoundTiming {
            round,
            wall_s: started.elapsed().as_secs_f64(),
            operator_s: op_time.as_secs_f64(),
            read_bytes: read,
            written_bytes: written,
        });
        Ok(result)
    }

    /// Feeds every well-formed artifact of the round to diloco's coordinator with the
    /// ledger's verdicts as its merge policy (one merge path: screen → policy → mean →
    /// outer step → publish); the manifest lists what the verdicts excluded and why.
    fn merge(
        &mut self,
        round: u64,
        view: &RoundView,
        outcomes: &[ContributionOutcome],
    ) -> Result<Manifest> {
        let merged = merged_by_verdicts(outcomes);
        let mut objects = Vec::new();
        let mut members = BTreeSet::new();
        let mut verdicts = ExternalVerdicts::new();
        for (c, checked) in view.close.contributions.iter().zip(&view.checked) {
            members.insert(c.worker_id);
            let id = unhex32(&c.id)?;
            if checked.is_err() {
                continue;
            }
            let bytes = self
                .store
                .get_limited(
                    &keys::artifact(round, &c.artifact),
                    self.protocol.limits.artifact,
                )?
                .ok_or_else(|| {
                    Error::Protocol(format!("round {round}: artifact {} vanished", c.artifact))
                })?;
            objects.push((update_key(round, c.worker_id), bytes));
            let verdict = if merged.contains(&id) {
                MergeVerdict::Merge { weight: 1.0 }
            } else {
                let o = outcomes.iter().find(|o| o.id == id);
                MergeVerdict::Exclude {
                    reason: match o.and_then(|o| o.slash) {
                        Some(s) => format!("slashed: {s}"),
                        None => "no measured consensus score".into(),
                    },
                }
            };
            verdicts.insert(round, c.worker_id, verdict);
        }
        objects.sort_by(|a, b| a.0.cmp(&b.0));
        let ex = Idempotent(self.store, self.protocol.limits.artifact);
        Ok(self.coordinator.finish_round_with(
            &ex,
            round,
            None,
            &members,
            objects,
            &mut verdicts,
        )?)
    }

    #[allow(clippy::too_many_arguments)]
    fn result(
        &self,
        round: u64,
        _outcomes: &[ContributionOutcome],
        merged: &[Hash],
        view: &RoundView,
        settlement: &incentive_ledger::record::Settlement,
        settlement_id: Hash,
        model: Hash,
    ) -> RoundResult {
        let summary = self.ledger.state().history.last().expect("settled");
        let worker_of: BTreeMap<String, u32> = view
            .close
            .contributions
            .iter()
            .map(|c| (c.id.clone(), c.worker_id))
            .collect();
        RoundResult {
            round,
            merged: merged.iter().map(hx).collect(),
            merged_workers: merged
                .iter()
                .filter_map(|h| worker_of.get(&hx(h)).copied())
                .collect(),
            slashed: summary
                .outcomes
                .iter()
                .filter_map(|o| o.slash.map(|s| (hx(&o.id), s.to_string())))
                .collect(),
            paid: settlement
                .allocations
                .iter()
                .map(|(k, a)| (hx(&k.0), *a))
                .collect(),
            emission: settlement.emission,
            settlement: hx(&settlement_id),
            model: hx(&model),
        }
    }

    /// Replays the ledger's settled rounds through the coordinator (a restarted operator).
    fn replay(&mut self) -> Result<()> {
        let settled: Vec<(u64, Vec<ContributionOutcome>)> = self
            .ledger
            .state()
            .history
            .iter()
            .map(|s| (s.round, s.outcomes.clone()))
            .collect();
        for (round, outcomes) in settled {
            let merged = merged_by_verdicts(&outcomes);
            let key = keys::close(round);
            let close: CloseNotice = parse(
                &self
                    .store
                    .get_limited(&key, self.protocol.limits.document)?
                    .ok_or_else(|| Error::Protocol(format!("replay: `{key}` is missing")))?,
                &key,
            )?;
            let view =
                RoundView::load(self.store, &self.protocol, close, self.coordinator.global())?;
            self.merge(round, &view, &outcomes)?;
            let model = params_hash(self.coordinator.global());
            if self.ledger.state().round == round + 1 && model != self.ledger.state().base {
                return Err(Error::Protocol(format!(
                    "replay of round {round} gives model {}, the ledger settled on {}",
                    hx(&model),
                    hx(&self.ledger.state().base)
                )));
            }
            if self
                .store
                .get_limited(&keys::result(round), self.protocol.limits.document)?
                .is_none()
            {
                // Crashed between the settlement and the result: write it now.
                let summary = &self.ledger.state().history[round as usize - 1];
                let settlement = incentive_ledger::record::Settlement {
                    emission: summary.emission,
                    allocations: {
                        let mut a: BTreeMap<PublicKey, u64> = BTreeMap::new();
                        for o in &outcomes {
                            if o.reward > 0 {
                                *a.entry(o.worker).or_insert(0) += o.reward;
                            }
                        }
                        a.into_iter().collect()
                    },
                    next_base: model,
                };
                let id = self.ledger.state().settlement_id(round).expect("settled");
                let r = self.result(round, &outcomes, &merged, &view, &settlement, id, model);
                self.store.put_idempotent(
                    &keys::result(round),
                    &to_json(&r),
                    self.protocol.limits.document,
                )?;
            }
        }
        Ok(())
    }
}

/// Why an artifact of a round was refused, per contribution id, for reports.
pub fn refusals(view: &RoundView) -> Vec<(String, String)> {
    view.ids
        .iter()
        .zip(&view.checked)
        .filter_map(|(id, c)| c.as_ref().err().map(|r: &Refusal| (hx(id), r.to_string())))
        .collect()
}
