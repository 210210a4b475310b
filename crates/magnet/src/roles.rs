//! The parties' loops: a worker and a validator, each a process of its own (or a thread of
//! the in-process run) that meets the others only through the [`Store`]. They join by
//! writing a signed request, wait for the operator's membership record, and follow the
//! rounds the operator opens; a party can join at any round and leave after any round.
//!
//! [`Adversary`] behaviours exist for tests and demonstrations of the defences: each plays
//! one attacker of the threat model in docs/ledger.md.

use crate::artifact::{self, artifact_hash};
use crate::error::{Error, Result};
use crate::heldout::HeldOut;
use crate::protocol::{
    CloseNotice, JoinRequest, Member, ProtocolConfig, Role, RoundOpen, RoundResult, hx, keys,
    parse, to_json, unhex32,
};
use crate::store::Store;
use crate::validator::{self, Assessment, History, RoundView};
use diloco::codec::{self, Codec};
use diloco::exchange::Exchange;
use diloco::params::{self, ParamMap};
use diloco::protocol::{global_key, step_key};
use diloco::trainer::LocalTrainer;
use incentive_ledger::identity::Keypair;
use incentive_ledger::record::{Body, Contribution, Message, Metric, Verdict};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Test and demo behaviours of a worker (each one attacker of the threat model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Adversary {
    /// Resubmits an earlier update it has seen (the previous round's first merged one),
    /// bit for bit in its payload, with an empty sketch.
    CopyExact,
    /// The same copy rescaled by 1.5, with 1 % noise, re-encoded with the 4-bit codec.
    CopyNoisy,
    /// Trains honestly but declares an aggregation weight of 1e30.
    Inflate,
    /// Sends an update with a NaN written into its payload.
    Nan,
    /// Sends a zero update in round 1, then the previous round's published step.
    FreeRider,
    /// Trains honestly and sends its update negated and scaled by 8.
    Poison,
    /// Trains honestly in its first round, then resubmits that update (rescaled by 1.5, with
    /// 1 % noise, in the protocol's codec) instead of training.
    Replay,
}

impl Adversary {
    /// Its name on the command line and in reports (kebab-case, as serde writes it).
    pub fn name(self) -> &'static str {
        match self {
            Adversary::CopyExact => "copy-exact",
            Adversary::CopyNoisy => "copy-noisy",
            Adversary::Inflate => "inflate",
            Adversary::Nan => "nan",
            Adversary::FreeRider => "free-rider",
            Adversary::Poison => "poison",
            Adversary::Replay => "replay",
        }
    }

    /// Whether it needs a trainer (some or all of its updates start from real work).
    pub fn trains(self) -> bool {
        matches!(
            self,
            Adversary::Inflate | Adversary::Poison | Adversary::Replay
        )
    }
}

/// Where a party stands in a run.
#[derive(Debug, Clone)]
pub struct Party {
    /// Its key.
    pub key: Keypair,
    /// Name in reports.
    pub name: String,
    /// Validators: stake.
    pub stake: u64,
}

fn wait_doc<T: serde::de::DeserializeOwned>(
    store: &Store,
    key: &str,
    p: &ProtocolConfig,
    timeout: Duration,
) -> Result<T> {
    let b = store.wait_for(
        key,
        p.limits.document,
        timeout,
        Duration::from_millis(p.poll_ms),
    )?;
    parse(&b, key)
}

/// Reads the run's protocol (waiting up to `timeout` for the operator to publish it).
pub fn read_protocol(store: &Store, timeout: Duration) -> Result<ProtocolConfig> {
    let b = store.wait_for(keys::PROTOCOL, 1 << 20, timeout, Duration::from_millis(20))?;
    let p: ProtocolConfig = parse(&b, keys::PROTOCOL)?;
    p.validate()?;
    Ok(p)
}

/// Asks to join (idempotent) and waits for the operator's membership record.
pub fn join(
    store: &Store,
    p: &ProtocolConfig,
    party: &Party,
    role: Role,
    timeout: Duration,
) -> Result<Member> {
    let key_hex = hx(&party.key.public().0);
    let mut req = JoinRequest {
        key: key_hex.clone(),
        role,
        stake: party.stake,
        name: party.name.clone(),
        signature: String::new(),
    };
    let sig = party.key.sign(&req.signed_bytes(&p.origin));
    req.signature = incentive_ledger::codec::hex(&sig);
    store.put_idempotent(&keys::join(&key_hex), &to_json(&req), p.limits.document)?;
    wait_doc(store, &keys::member(&key_hex), p, timeout)
}

/// Model version `v` (the operator's full weights).
pub fn model_version(
    store: &Store,
    p: &ProtocolConfig,
    v: u64,
    timeout: Duration,
) -> Result<ParamMap> {
    let key = global_key(v);
    let b = store.wait_for(
        &key,
        p.limits.artifact,
        timeout,
        Duration::from_millis(p.poll_ms),
    )?;
    Ok(codec::decode(&b, &key)?.1)
}

/// What a worker did in one round.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkerRound {
    /// Round.
    pub round: u64,
    /// Committed (false: nothing to send, or skipped).
    pub committed: bool,
    /// Revealed (its commit was in the close).
    pub revealed: bool,
    /// Artifact bytes.
    pub bytes: u64,
    /// Mean inner training loss.
    pub train_loss: Option<f64>,
}

/// A progress callback: (round, phase name), called as a party (operator, worker,
/// validator) enters each phase of a round (progress display, fault tests). `Send`, so the
/// operator can own one while its round runs on another thread.
pub type PhaseFn = dyn FnMut(u64, &str) + Send;

/// Worker options.
pub struct WorkerOptions<'a> {
    /// Makes the update (honest: the trainer); `None` for adversaries that do not train.
    pub trainer: Option<&'a mut dyn LocalTrainer>,
    /// Test behaviour.
    pub adversary: Option<Adversary>,
    /// Rounds it sits out (trains nothing, sends nothing).
    pub skip: Vec<u64>,
    /// Leaves after this round.
    pub leave_after: Option<u64>,
    /// Rounds in which it straggles: it trains, then commits only once the round has
    /// closed (past the quorum's grace window), so its update is not in the round.
    pub late: Vec<u64>,
    /// Longest wait for any document.
    pub timeout: Duration,
    /// Seed of the noisy copier's noise.
    pub seed: u64,
    /// Called with (round, phase) as the worker moves through a round (progress display).
    pub on_phase: Option<&'a mut PhaseFn>,
}

fn copy_source(
    store: &Store,
    p: &ProtocolConfig,
    round: u64,
    reference: &ParamMap,
) -> Result<Option<ParamMap>> {
    if round < 2 {
        return Ok(None);
    }
    let prev = round - 1;
    let (Some(c), Some(r)) = (
        store.get_limited(&keys::close(prev), p.limits.document)?,
        store.get_limited(&keys::result(prev), p.limits.document)?,
    ) else {
        return Ok(None);
    };
    let close: CloseNotice = parse(&c, &keys::close(prev))?;
    let result: RoundResult = parse(&r, &keys::result(prev))?;
    let view = RoundView::load(store, p, close, reference)?;
    Ok(view
        .ids
        .iter()
        .zip(&view.checked)
        .find(|(id, _)| result.merged.first() == Some(&hx(id)))
        .and_then(|(_, c)| c.as_ref().ok().cloned()))
}

/// `d` rescaled by 1.5 with 1 % of each tensor's RMS as noise: a copy disguised as work.
fn disguise(d: &mut ParamMap, seed: u64) {
    for (i, t) in d.values_mut().enumerate() {
        let rms = (t.data.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>()
            / t.data.len().max(1) as f64)
            .sqrt() as f32;
        let nz = noise(seed.wrapping_add(i as u64), t.data.len());
        for (x, e) in t.data.iter_mut().zip(nz) {
            *x = 1.5 * (*x + 0.01 * rms * e);
        }
    }
}

fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.46
        })
        .collect()
}

/// Runs a worker until the protocol's last round (or `leave_after`).
pub fn run_worker(
    store: &Store,
    party: &Party,
    mut o: WorkerOptions<'_>,
) -> Result<Vec<WorkerRound>> {
    let p = read_protocol(store, o.timeout)?;
    let member = join(store, &p, party, Role::Worker, o.timeout)?;
    let last = o.leave_after.unwrap_or(p.rounds).min(p.rounds);
    let mut out = Vec::new();
    // What it last sent (the replaying attacker's source).
    let mut last_sent: Option<ParamMap> = None;
    let mut phase = |round: u64, name: &str| {
        if let Some(f) = o.on_phase.as_mut() {
            f(round, name);
        }
    };
    for round in member.from_round..=last {
        phase(round, "wait for the round");
        let open: RoundOpen = wait_doc(store, &keys::open(round), &p, o.timeout)?;
        let mut rec = WorkerRound {
            round,
            committed: false,
            revealed: false,
            bytes: 0,
            train_loss: None,
        };
        // Joined or restarted after this round's commits closed: wait for the next one.
        if o.skip.contains(&round)
            || store
                .get_limited(&keys::close(round), p.limits.document)?
                .is_some()
        {
            out.push(rec);
            continue;
        }
        let global = model_version(store, &p, round - 1, o.timeout)?;
        phase(round, "train");
        let mut weight = p.update_weight;
        let mut uplink = p.codec;
        let replay = match (o.adversary, &last_sent) {
            (Some(Adversary::Replay), Some(d)) => Some(d.clone()),
            _ => None,
        };
        let mut delta = match (o.adversary, o.trainer.as_deref_mut()) {
            (Some(Adversary::Replay), _) if let Some(mut d) = replay => {
                disguise(&mut d, o.seed.wrapping_add(round * 1000));
                d
            }
            (adv, Some(t)) if adv.is_none_or(Adversary::trains) => {
                t.set_params(&global)?;
                let mut sum = 0.0;
                for _ in 0..p.inner_steps {
                    sum += f64::from(t.train_step()?);
                }
                rec.train_loss = Some(sum / p.inner_steps as f64);
                params::sub(&global, &t.params()?)?
            }
            (None, None) => {
                return Err(Error::config("worker", "an honest worker needs a trainer"));
            }
            (Some(a), _) if a.trains() => {
                return Err(Error::config("worker", format!("{a:?} needs a trainer")));
            }
            (Some(a), _) => match a {
                Adversary::CopyExact | Adversary::CopyNoisy => {
                    // Commit–reveal: nothing of this round is readable yet, so the freshest
                    // update to copy is one of the previous round.
                    let Some(mut d) = copy_source(store, &p, round, &global)? else {
                        out.push(rec);
                        continue;
                    };
                    if a == Adversary::CopyNoisy {
                        disguise(&mut d, o.seed.wrapping_add(round * 1000));
                        uplink = Codec::Q4 { block: 64 };
                    }
                    d
                }
                Adversary::Nan => {
                    let mut d = global.clone();
                    for (i, t) in d.values_mut().enumerate() {
                        t.data = noise(o.seed + i as u64, t.data.len())
                            .iter()
                            .map(|x| x * 1e-3)
                            .collect();
                    }
                    d
                }
                Adversary::FreeRider => {
                    let mut d = global.clone();
                    params::scale(&mut d, 0.0);
                    if round >= 2
                        && let Some(b) =
                            store.get_limited(&step_key(round - 1), p.limits.artifact)?
                    {
                        // The published outer step, turned back into a pseudo-gradient.
                        d = codec::decode(&b, "step")?.1;
                        params::scale(&mut d, -1.0);
                    }
                    d
                }
                Adversary::Inflate | Adversary::Poison | Adversary::Replay => {
                    unreachable!("trains")
                }
            },
            (None, Some(_)) => unreachable!("an honest worker with a trainer trains"),
        };
        let mut bytes = match o.adversary {
            Some(Adversary::Inflate) => {
                weight = 1e30;
                artifact::build(member.worker_id, round, weight, &delta, uplink)?
            }
            Some(Adversary::Poison) => {
                params::scale(&mut delta, -8.0);
                artifact::build(member.worker_id, round, weight, &delta, uplink)?
            }
            Some(Adversary::Nan) => {
                let first = delta.values_mut().next().expect("a tensor");
                first.data[0] = 1234.5;
                let mut b = artifact::build(member.worker_id, round, weight, &delta, Codec::F32)?;
                let at = b
                    .windows(4)
                    .position(|w| w == 1234.5f32.to_le_bytes())
                    .expect("marker");
                b[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
                b
            }
            _ => artifact::build(member.worker_id, round, weight, &delta, uplink)?,
        };
        bytes.shrink_to_fit();
        if o.adversary == Some(Adversary::Replay) && last_sent.is_none() {
            last_sent = Some(delta.clone());
        }
        let hash = artifact_hash(&bytes);
        let metrics = rec
            .train_loss
            .filter(|l| l.is_finite())
            .map(|l| Metric {
                name: "train_loss".into(),
                micro: (l * 1e6).round() as i64,
            })
            .into_iter()
            .collect();
        let record = Message {
            origin: p.origin.clone(),
            signer: party.key.public(),
            seq: round,
            round,
            body: Body::Contribution(Contribution {
                parent_model: unhex32(&open.parent)?,
                artifact: hash,
                artifact_size: bytes.len() as u64,
                metrics,
                sketch: Vec::new(),
            }),
        }
        .sign(&party.key)
        .to_bytes();
        phase(round, "commit");
        if o.late.contains(&round) {
            let _: CloseNotice = wait_doc(store, &keys::close(round), &p, o.timeout)?;
        }
        store.put_idempotent(
            &keys::commit(round, &hx(&artifact_hash(&record))),
            &record,
            p.limits.record,
        )?;
        rec.committed = true;
        phase(round, "wait for the close, reveal");
        let close: CloseNotice = wait_doc(store, &keys::close(round), &p, o.timeout)?;
        if close.contributions.iter().any(|c| c.artifact == hx(&hash)) {
            store.put_idempotent(
                &keys::artifact(round, &hx(&hash)),
                &bytes,
                p.limits.artifact,
            )?;
            rec.revealed = true;
            rec.bytes = bytes.len() as u64;
        }
        out.push(rec);
    }
    Ok(out)
}

/// What a validator did in one round.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ValidatorRound {
    /// Round.
    pub round: u64,
    /// Artifact bytes it downloaded for the round.
    pub bytes: u64,
    /// What it signed, one per contribution.
    pub verdicts: Vec<SignedVerdict>,
}

/// One evaluation a validator signed, as its report shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SignedVerdict {
    /// Contribution id.
    pub contribution: String,
    /// Verdict.
    pub verdict: String,
    /// Why (refusal, copy).
    pub note: String,
    /// Held-out loss of the merge without the update, and with it (measured verdicts).
    pub losses: Option<(f64, f64)>,
    /// Largest cosine against other parties' updates and merged steps.
    pub max_cosine: f64,
    /// Largest residual cosine against the same worker's earlier updates.
    pub own_cosine: f64,
    /// Whether it stayed in the reference merge (`validator::assess`).
    #[serde(default)]
    pub trusted: bool,
}

/// The lying validator of the tests: scores honest-looking updates as poison and every
/// refused or copied one as a big improvement (a minority's lie the median must ignore).
pub fn lie(a: &mut [Assessment]) {
    for x in a {
        if x.verdict == Verdict::Measured {
            x.loss_before = 2.0;
            x.loss_after = 4.0;
        } else {
            x.verdict = Verdict::Measured;
            x.loss_before = 2.0;
            x.loss_after = 1.0;
        }
    }
}

/// Runs a validator until the protocol's last round.
pub fn run_validator(
    store: &Store,
    party: &Party,
    heldout: &mut dyn HeldOut,
    liar: bool,
    timeout: Duration,
    mut on_phase: Option<&mut PhaseFn>,
) -> Result<Vec<ValidatorRound>> {
    let mut phase = |round: u64, name: &str| {
        if let Some(f) = on_phase.as_mut() {
            f(round, name);
        }
    };
    let p = read_protocol(store, timeout)?;
    let member = join(store, &p, party, Role::Validator, timeout)?;
    let mut history = History::default();
    let mut out = Vec::new();
    for round in member.from_round..=p.rounds {
        phase(round, "wait for the close");
        let close: CloseNotice = wait_doc(store, &keys::close(round), &p, timeout)?;
        let global = model_version(store, &p, round - 1, timeout)?;
        for k in round.saturating_sub(p.history_rounds).max(1)..round {
            if !history.has(k) {
                history.load(store, &p, k, &global)?;
            }
        }
        // The reveals: every committed artifact, or the deadline.
        let begin = std::time::Instant::now();
        while begin.elapsed() < Duration::from_millis(p.reveal_deadline_ms) {
            let present = store.list(&format!("magnet/rounds/{round:08}/artifacts/"))?;
            if close
                .contributions
                .iter()
                .all(|c| present.contains(&keys::artifact(round, &c.artifact)))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(p.poll_ms));
        }
        phase(round, "check and measure");
        let view = RoundView::load(store, &p, close, &global)?;
        let mut assessments =
            validator::assess(&p, &view, &global, &history, heldout, &party.key.public())?;
        if liar {
            lie(&mut assessments);
        }
        let msgs = validator::sign(&assessments, &party.key, &p.origin, &view.close)?;
        let batch = validator::encode_batch(&msgs);
        store.put_idempotent(
            &keys::eval(round, &hx(&artifact_hash(&batch))),
            &batch,
            p.limits.evaluations,
        )?;
        out.push(ValidatorRound {
            round,
            bytes: view.bytes,
            verdicts: assessments
                .iter()
                .map(|a| SignedVerdict {
                    contribution: hx(&a.contribution),
                    verdict: format!("{:?}", a.verdict),
                    note: a.note.clone(),
                    losses: (a.verdict == Verdict::Measured)
                        .then_some((a.loss_before, a.loss_after)),
                    max_cosine: a.max_cosine,
                    own_cosine: a.own_cosine,
                    trusted: a.trusted,
                })
                .collect(),
        });
        phase(round, "wait for the settlement");
        let result: RoundResult = wait_doc(store, &keys::result(round), &p, timeout)?;
        let step = match store.get_limited(&step_key(round), p.limits.artifact)? {
            Some(b) => Some(codec::decode(&b, "step")?.1),
            None => None,
        };
        history.record(&view, &result, step.as_ref(), p.history_rounds)?;
    }
    Ok(out)
}

/// A key derived from a name and a seed (tests, demos: real parties keep their own keys).
pub fn derived_key(seed: &str, name: &str) -> Keypair {
    let mut h = Sha256::new();
    h.update(b"magnet/v1/key\n");
    h.update(seed.as_bytes());
    h.update(b"\n");
    h.update(name.as_bytes());
    Keypair::from_seed(h.finalize().into())
}
