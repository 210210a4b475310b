//! The validator's side of a round: read the close and the artifacts (bounded), check each
//! artifact against its commit, look for copies in the decoded updates, measure every
//! remaining update's value to the merge on held-out windows the protocol seeds, and sign
//! the evaluations.
//!
//! Measurement (the marginal value of an update to the round's merge), on windows the
//! protocol seeds per contribution and validator:
//!
//! 1. **The reference merge** `T`, `m = |T|`: at first every update that passed the checks.
//!    For each member `i`, `L_with = L(θ − lr · ΣT / m)` against
//!    `L_without = L(θ − lr · (ΣT − u_i) / m)`: the merge with `i`'s update replaced by zero,
//!    at the same denominator.
//! 2. **Trimming.** While the most harmful member harms the reference by more than the
//!    protocol's poison tolerance, it leaves `T` and the remaining members are measured
//!    again (one pass per trimmed update).
//! 3. **Trimmed updates** are scored as added to what remains:
//!    `L(θ − lr · (ΣT + u_i) / (m + 1))` against `L(θ − lr · ΣT / (m + 1))`.
//!
//! The evaluation signs `loss_before = L_without`, `loss_after = L_with`, so the ledger's
//! score `(L_before − L_after) / L_before` is positive when the update helps the merge and
//! negative when it hurts it (a poisoner). The validator needs no optimizer state.
//!
//! Why a reference merge: measured against the merge of every update, a strong poisoner
//! also decides the honest updates' scores. A large negated update among a few honest ones
//! turns the merge backwards, and there the honest updates' marginal values come out
//! negative, so the ledger would slash honest work as poisoned. Against the trimmed
//! reference, a poisoner moves the honest scores only while its own harm stays within the
//! tolerance, and its own score is its harm to the honest merge.
//!
//! Why not plain leave-one-out (`mean(S ∖ {i})`): dropping an update from the mean also
//! lengthens the other updates' share of the step, so when a longer step would help (early
//! rounds, a low learning rate) every honest update looks harmful, past the poison
//! tolerance. Replacing the update by zero changes only that update's contribution.
//! docs/magnet.md has the measurements behind both choices.

use crate::artifact::{self, Expected, Refusal};
use crate::copy::{CopyRule, Finding, Flat, detect};
use crate::error::{Error, Result};
use crate::heldout::HeldOut;
use crate::protocol::{CloseNotice, ProtocolConfig, RoundResult, hx, keys, parse, unhex32};
use crate::store::Store;
use diloco::codec;
use diloco::params::{self, ParamMap};
use incentive_ledger::identity::{Keypair, PublicKey};
use incentive_ledger::merkle::Hash;
use incentive_ledger::record::{Body, Evaluation, Message, SignedMessage, Verdict};
use incentive_ledger::rewards::{Measurement, heldout_seed};
use std::collections::BTreeMap;

/// One round's contributions as read from the store and checked.
#[derive(Debug, Clone)]
pub struct RoundView {
    /// The close.
    pub close: CloseNotice,
    /// Contribution ids in commit order.
    pub ids: Vec<Hash>,
    /// Per contribution: the decoded update, or why it was refused.
    pub checked: Vec<Result<ParamMap, Refusal>>,
    /// Artifact bytes downloaded.
    pub bytes: u64,
}

impl RoundView {
    /// Reads round `close.round`'s artifacts (each bounded by the protocol's limit) and
    /// checks them against their commits and the model layout `reference`.
    pub fn load(
        store: &Store,
        p: &ProtocolConfig,
        close: CloseNotice,
        reference: &ParamMap,
    ) -> Result<Self> {
        let mut ids = Vec::with_capacity(close.contributions.len());
        let mut checked = Vec::with_capacity(close.contributions.len());
        let mut bytes = 0u64;
        for c in &close.contributions {
            ids.push(unhex32(&c.id)?);
            let hash = unhex32(&c.artifact)?;
            let got = if c.size > p.limits.artifact {
                Err(Refusal::TooLarge { size: c.size })
            } else {
                match store.get_limited(
                    &keys::artifact(close.round, &c.artifact),
                    p.limits.artifact.min(c.size),
                ) {
                    Ok(b) => {
                        bytes += b.as_ref().map_or(0, |b| b.len() as u64);
                        artifact::check(
                            b.as_deref(),
                            &Expected {
                                hash: &hash,
                                size: c.size,
                                worker_id: c.worker_id,
                                round: close.round,
                                weight: p.update_weight,
                                reference,
                            },
                        )
                    }
                    // Bigger than committed: the bytes cannot match the hash anyway.
                    Err(Error::TooLarge { .. }) => Err(Refusal::HashMismatch),
                    Err(e) => return Err(e),
                }
            };
            checked.push(got);
        }
        Ok(Self {
            close,
            ids,
            checked,
            bytes,
        })
    }

    /// The accepted updates, flattened with their ids and senders.
    pub fn flats(&self) -> Vec<Flat> {
        self.ids
            .iter()
            .zip(&self.checked)
            .zip(&self.close.contributions)
            .filter_map(|((id, c), k)| {
                let owner = unhex32(&k.worker).ok();
                c.as_ref().ok().map(|d| Flat::new(*id, owner, d))
            })
            .collect()
    }
}

/// Mean of the given updates (equal weights, the protocol's), `None` if there are none.
pub fn mean(updates: &[&ParamMap]) -> Option<ParamMap> {
    let first = *updates.first()?;
    let mut out = first.clone();
    for u in &updates[1..] {
        params::axpy(&mut out, 1.0, u).ok()?;
    }
    params::scale(&mut out, 1.0 / updates.len() as f32);
    Some(out)
}

/// What a validator remembers of earlier rounds: their accepted updates, and per settled
/// round the merged mean and the published outer step (as pseudo-gradient directions), with
/// the settlement's id.
#[derive(Debug, Clone, Default)]
pub struct History {
    rounds: BTreeMap<u64, Past>,
}

#[derive(Debug, Clone)]
struct Past {
    updates: Vec<Flat>,
    merged: Option<Flat>,
    step: Option<Flat>,
}

impl History {
    /// Records round `view.close.round` once its result is known.
    pub fn record(
        &mut self,
        view: &RoundView,
        result: &RoundResult,
        step: Option<&ParamMap>,
        keep: u64,
    ) -> Result<()> {
        let settlement = unhex32(&result.settlement)?;
        let merged_ids: Vec<Hash> = result
            .merged
            .iter()
            .map(|h| unhex32(h))
            .collect::<Result<_>>()?;
        let merged: Vec<&ParamMap> = view
            .ids
            .iter()
            .zip(&view.checked)
            .filter(|(id, _)| merged_ids.contains(id))
            .filter_map(|(_, c)| c.as_ref().ok())
            .collect();
        let merged = mean(&merged).map(|m| Flat::new(settlement, None, &m));
        let step = step.map(|s| {
            let mut f = Flat::new(settlement, None, s);
            f.data.iter_mut().for_each(|x| *x = -*x);
            f
        });
        // Only originals are references: a copy slashed in that round (say, of this worker's
        // earlier update) must not make the worker's next update look a copy of it.
        let copies: Vec<Hash> = result
            .slashed
            .iter()
            .filter(|(_, why)| why.starts_with("copied") || why.starts_with("free rider"))
            .filter_map(|(id, _)| unhex32(id).ok())
            .collect();
        let updates = view
            .flats()
            .into_iter()
            .filter(|f| !copies.contains(&f.id))
            .collect();
        let r = view.close.round;
        self.rounds.insert(
            r,
            Past {
                updates,
                merged,
                step,
            },
        );
        while self.rounds.len() as u64 > keep.max(1) {
            let oldest = *self.rounds.keys().next().expect("non-empty");
            self.rounds.remove(&oldest);
        }
        Ok(())
    }

    /// Whether round `r` is recorded.
    pub fn has(&self, r: u64) -> bool {
        self.rounds.contains_key(&r)
    }

    /// Loads round `r` from the store (a validator that starts late or restarts).
    pub fn load(
        &mut self,
        store: &Store,
        p: &ProtocolConfig,
        r: u64,
        reference: &ParamMap,
    ) -> Result<()> {
        let l = p.limits.document;
        let (Some(close), Some(result)) = (
            store.get_limited(&keys::close(r), l)?,
            store.get_limited(&keys::result(r), l)?,
        ) else {
            return Ok(());
        };
        let close: CloseNotice = parse(&close, &keys::close(r))?;
        let result: RoundResult = parse(&result, &keys::result(r))?;
        let view = RoundView::load(store, p, close, reference)?;
        let step = match store.get_limited(&diloco::protocol::step_key(r), p.limits.artifact)? {
            Some(b) => Some(codec::decode(&b, &diloco::protocol::step_key(r))?.1),
            None => None,
        };
        self.record(&view, &result, step.as_ref(), p.history_rounds)
    }

    /// `(updates, merged steps, common direction)` for checking round `r`.
    pub fn references(&self, r: u64) -> (Vec<Flat>, Vec<Flat>, Option<Vec<f32>>) {
        let mut updates = Vec::new();
        let mut steps = Vec::new();
        for (_, p) in self.rounds.range(..r) {
            updates.extend(p.updates.iter().cloned());
            steps.extend(p.merged.iter().cloned());
            steps.extend(p.step.iter().cloned());
        }
        let common = self
            .rounds
            .range(..r)
            .next_back()
            .and_then(|(_, p)| p.merged.as_ref().map(|m| m.data.clone()));
        (updates, steps, common)
    }
}

/// A validator's finding about one contribution.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// Contribution id.
    pub contribution: Hash,
    /// Verdict to sign.
    pub verdict: Verdict,
    /// Loss without the update (measured verdicts).
    pub loss_before: f64,
    /// Loss with it.
    pub loss_after: f64,
    /// Why (refusal, copy) for reports.
    pub note: String,
    /// Largest cosine the copy check saw against other parties' updates and merged steps.
    pub max_cosine: f64,
    /// Largest residual cosine against the same worker's earlier updates.
    pub own_cosine: f64,
    /// Whether it stayed in the reference merge (measured verdicts; see the module docs).
    pub trusted: bool,
}

/// Checks and measures every contribution of `view`'s round.
pub fn assess(
    p: &ProtocolConfig,
    view: &RoundView,
    global: &ParamMap,
    history: &History,
    heldout: &mut dyn HeldOut,
    validator: &PublicKey,
) -> Result<Vec<Assessment>> {
    let rule = CopyRule {
        copy_cosine: p.copy_cosine,
        step_cosine: p.step_cosine,
        free_rider_ratio: p.free_rider_ratio,
        replay_cosine: p.replay_cosine,
    };
    let beacon = unhex32(&view.close.beacon_root)?;
    let flats = view.flats();
    let (past, steps, common) = history.references(view.close.round);
    let findings = detect(&flats, &past, &steps, common.as_deref(), &rule);
    let mut out: Vec<Assessment> = Vec::with_capacity(view.ids.len());
    let mut fi = 0;
    let mut candidates: Vec<usize> = Vec::new();
    for (i, (id, c)) in view.ids.iter().zip(&view.checked).enumerate() {
        let mut a = Assessment {
            contribution: *id,
            verdict: Verdict::Invalid,
            loss_before: 0.0,
            loss_after: 0.0,
            note: String::new(),
            max_cosine: 0.0,
            own_cosine: 0.0,
            trusted: false,
        };
        if let Err(r) = c {
            a.verdict = r.verdict();
            a.note = r.to_string();
        } else {
            {
                match findings[fi] {
                    Finding::FreeRider => {
                        a.verdict = Verdict::FreeRider;
                        a.note = "no work of its own (zero or negligible norm)".into();
                    }
                    Finding::Copied { earlier, cosine } => {
                        a.verdict = Verdict::Copied(earlier);
                        a.note = format!("copies {} (|cos| {cosine:.4})", &hx(&earlier)[..12]);
                        a.max_cosine = cosine;
                    }
                    Finding::Original {
                        max_cosine,
                        own_cosine,
                    } => {
                        a.verdict = Verdict::Measured;
                        a.max_cosine = max_cosine;
                        a.own_cosine = own_cosine;
                        candidates.push(i);
                    }
                }
                fi += 1;
            }
        }
        out.push(a);
    }
    if candidates.is_empty() {
        return Ok(out);
    }
    let seeds: Vec<Hash> = candidates
        .iter()
        .map(|&i| heldout_seed(&view.ids[i], &validator.0, &beacon))
        .collect();
    let deltas: Vec<&ParamMap> = candidates
        .iter()
        .map(|&i| view.checked[i].as_ref().expect("candidate"))
        .collect();
    let measured = measure(
        global,
        &deltas,
        &seeds,
        heldout,
        p.eval_lr,
        f64::from(p.poison_tolerance_ppm) / 1e6,
        p.heldout_windows,
    )?;
    for (&i, x) in candidates.iter().zip(measured) {
        let m = Measurement {
            loss_before: x.without,
            loss_after: x.with,
        };
        let (verdict, ..) = m.to_fixed();
        out[i].verdict = verdict;
        out[i].loss_before = x.without;
        out[i].loss_after = x.with;
        out[i].trusted = x.trusted;
    }
    Ok(out)
}

/// One update's measurement (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Marginal {
    /// Held-out loss of the reference merge with the update.
    pub with: f64,
    /// The same without it (replaced by zero, same denominator).
    pub without: f64,
    /// Whether the update stayed in the reference merge.
    pub trusted: bool,
}

/// Measures each update's marginal value to the round's reference merge on its seeded
/// held-out windows (the module docs): outer step `global − lr · mean`, the reference
/// trimmed one update at a time while its most harmful member harms it by more than
/// `tolerance` (relative loss change), trimmed updates scored as added to what remains.
pub fn measure(
    global: &ParamMap,
    deltas: &[&ParamMap],
    seeds: &[Hash],
    heldout: &mut dyn HeldOut,
    lr: f32,
    tolerance: f64,
    windows: usize,
) -> Result<Vec<Marginal>> {
    if deltas.is_empty() {
        return Ok(Vec::new());
    }
    let step = |m: &ParamMap, scale: f32| -> Result<ParamMap> {
        let mut g = global.clone();
        params::axpy(&mut g, -lr * scale, m)?;
        Ok(g)
    };
    let sum_of = |members: &[usize]| -> Result<ParamMap> {
        let mut s = deltas[members[0]].clone();
        for &k in &members[1..] {
            params::axpy(&mut s, 1.0, deltas[k])?;
        }
        Ok(s)
    };
    // The reference merge, trimmed one update at a time: while its most harmful member
    // harms it by more than the tolerance, that member leaves and the others are measured
    // again without it. At most one pass per trimmed update.
    let mut reference: Vec<usize> = (0..deltas.len()).collect();
    let (sum, inside) = loop {
        let m = reference.len();
        let sum = sum_of(&reference)?;
        let seeds_r: Vec<Hash> = reference.iter().map(|&k| seeds[k]).collect();
        let with = heldout.losses(&step(&sum, 1.0 / m as f32)?, &seeds_r, windows)?;
        let mut inside = Vec::with_capacity(m);
        for (j, &k) in reference.iter().enumerate() {
            // The merge with this update replaced by zero: (ΣT − u_k) / m.
            let mut rest = sum.clone();
            params::axpy(&mut rest, -1.0, deltas[k])?;
            let without = heldout.losses(&step(&rest, 1.0 / m as f32)?, &seeds[k..=k], windows)?[0];
            inside.push((k, with[j], without));
        }
        let worst = inside
            .iter()
            .enumerate()
            .map(|(j, &(_, with, without))| (j, relative_gain(without, with)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match worst {
            Some((j, gain)) if gain < -tolerance && m > 1 => {
                reference.remove(j);
            }
            _ => break (sum, inside),
        }
    };
    let m = reference.len();
    let mut out = Vec::with_capacity(deltas.len());
    for k in 0..deltas.len() {
        let (with, without) =
            if let Some(&(_, with, without)) = inside.iter().find(|(x, ..)| *x == k) {
                (with, without)
            } else {
                // Trimmed from the reference: the reference with this update added, against
                // the reference alone, at the denominator m + 1.
                let denom = 1.0 / (m + 1) as f32;
                let mut added = sum.clone();
                params::axpy(&mut added, 1.0, deltas[k])?;
                let with = heldout.losses(&step(&added, denom)?, &seeds[k..=k], windows)?[0];
                let without = heldout.losses(&step(&sum, denom)?, &seeds[k..=k], windows)?[0];
                (with, without)
            };
        out.push(Marginal {
            with,
            without,
            trusted: reference.contains(&k),
        });
    }
    Ok(out)
}

/// `(before − after) / before`: positive when the loss fell (0 for a non-positive `before`).
fn relative_gain(before: f64, after: f64) -> f64 {
    if before > 0.0 {
        (before - after) / before
    } else {
        0.0
    }
}

/// Sequence number of a validator's `i`-th evaluation of `round` (stateless: one validator
/// signs at most 10^6 evaluations a round).
pub fn eval_seq(round: u64, i: usize) -> u64 {
    round * 1_000_000 + i as u64 + 1
}

/// Signs the assessments as ledger evaluations bound to the round's beacon.
pub fn sign(
    assessments: &[Assessment],
    key: &Keypair,
    origin: &str,
    close: &CloseNotice,
) -> Result<Vec<SignedMessage>> {
    let beacon = unhex32(&close.beacon_root)?;
    Ok(assessments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let (verdict, loss_before, loss_after) = match a.verdict {
                Verdict::Measured => Measurement {
                    loss_before: a.loss_before,
                    loss_after: a.loss_after,
                }
                .to_fixed(),
                v => (v, 0, 0),
            };
            Message {
                origin: origin.into(),
                signer: key.public(),
                seq: eval_seq(close.round, i),
                round: close.round,
                body: Body::Evaluation(Evaluation {
                    contribution: a.contribution,
                    beacon_size: close.beacon_size,
                    heldout_seed: heldout_seed(&a.contribution, &key.public().0, &beacon),
                    verdict,
                    loss_before,
                    loss_after,
                }),
            }
            .sign(key)
        })
        .collect())
}

/// A batch of signed entries as one object: `u32 count`, then `u32 len ‖ entry` each.
pub fn encode_batch(msgs: &[SignedMessage]) -> Vec<u8> {
    let mut out = (msgs.len() as u32).to_be_bytes().to_vec();
    for m in msgs {
        let b = m.to_bytes();
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(&b);
    }
    out
}

/// Parses a batch from untrusted bytes (each entry bounded by the ledger's entry limit).
pub fn decode_batch(bytes: &[u8], what: &str) -> Result<Vec<SignedMessage>> {
    let bad = |m: String| Error::Protocol(format!("{what}: {m}"));
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let s = bytes
            .get(at..at + n)
            .ok_or_else(|| bad(format!("truncated at byte {at}")))?;
        at += n;
        Ok(s)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().expect("4")) as usize;
    if count > bytes.len() / 68 + 1 {
        return Err(bad(format!(
            "{count} entries cannot fit in {} bytes",
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let len = u32::from_be_bytes(take(4)?.try_into().expect("4")) as usize;
        if len > incentive_ledger::record::MAX_ENTRY {
            return Err(bad(format!("entry {i} of {len} bytes over the limit")));
        }
        let entry = take(len)?;
        out.push(SignedMessage::from_bytes(entry).map_err(|e| bad(format!("entry {i}: {e}")))?);
    }
    if at != bytes.len() {
        return Err(bad(format!("{} trailing bytes", bytes.len() - at)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;
    use diloco::params::NamedTensor;

    /// One coordinate `x`, loss `(x − 1)² + 3·exp(−((x + 0.35) / 0.15)²)`: a descent
    /// towards 1 from 0, and a ridge at −0.35 behind the start. Past the ridge, a step
    /// towards 1 climbs it: there an honest update looks harmful.
    struct Ridge;

    impl HeldOut for Ridge {
        fn losses(&mut self, p: &ParamMap, seeds: &[Hash], _: usize) -> Result<Vec<f64>> {
            let x = f64::from(p["x"].data[0]);
            let l = (x - 1.0).powi(2) + 3.0 * (-((x + 0.35) / 0.15).powi(2)).exp();
            Ok(vec![l; seeds.len()])
        }
        fn val_loss(&mut self, p: &ParamMap) -> Result<f64> {
            Ok(self.losses(p, &[[0; 32]], 1)?[0])
        }
    }

    fn point(x: f32) -> ParamMap {
        [(
            "x".to_string(),
            NamedTensor {
                shape: vec![1],
                data: vec![x],
            },
        )]
        .into_iter()
        .collect()
    }

    fn gain(m: &Marginal) -> f64 {
        relative_gain(m.without, m.with)
    }

    /// Three honest updates (each a step of 0.35 towards 1 at lr 0.7) and one negated ×8:
    /// against the merge of all four (x = −0.44, past the ridge) each honest update would
    /// look harmful; the trimmed reference drops the poisoner, scores the honest updates
    /// without it (helpful) and the poisoner as added to them (very harmful).
    #[test]
    fn a_strong_poisoner_cannot_make_honest_updates_look_harmful() {
        let honest = point(-0.5);
        let poison = point(4.0);
        let deltas = [&honest, &honest, &poison, &honest];
        let seeds = [[1; 32], [2; 32], [3; 32], [4; 32]];

        // Without the trimming (a tolerance nothing reaches), the poisoner decides.
        let all = measure(&point(0.0), &deltas, &seeds, &mut Ridge, 0.7, 1e9, 1).unwrap();
        assert!(all.iter().all(|m| m.trusted));
        for k in [0, 1, 3] {
            assert!(
                gain(&all[k]) < -0.2,
                "honest {k} in the poisoned merge: {:?}",
                all[k]
            );
        }

        let m = measure(&point(0.0), &deltas, &seeds, &mut Ridge, 0.7, 0.01, 1).unwrap();
        for k in [0, 1, 3] {
            assert!(m[k].trusted);
            assert!(gain(&m[k]) > 0.2, "honest {k}: {:?}", m[k]);
        }
        assert!(!m[2].trusted);
        assert!(gain(&m[2]) < -1.0, "poisoner: {:?}", m[2]);
        // Scored as added to the three honest updates, at the denominator 4.
        let reference = (0.0f64 + 0.7 * 0.5 * 3.0 / 4.0 - 1.0).powi(2);
        assert!((m[2].without - reference).abs() < 1e-3, "{:?}", m[2]);
    }

    /// Honest updates only: nothing is trimmed, and each is measured against the merge of
    /// all (replaced by zero at the same denominator).
    #[test]
    fn honest_rounds_keep_every_update_in_the_reference() {
        let a = point(-0.5);
        let b = point(-0.3);
        let m = measure(
            &point(0.0),
            &[&a, &b],
            &[[1; 32], [2; 32]],
            &mut Ridge,
            0.7,
            0.01,
            1,
        )
        .unwrap();
        assert!(m.iter().all(|x| x.trusted && gain(x) > 0.0), "{m:?}");
        let with = (0.7f64 * 0.4 - 1.0).powi(2);
        assert!((m[0].with - with).abs() < 1e-3 && (m[1].with - with).abs() < 1e-3);
        assert!(
            measure(&point(0.0), &[], &[], &mut Ridge, 0.7, 0.01, 1)
                .unwrap()
                .is_empty()
        );
    }
}
