//! Scores and rewards, all in integers so every machine computes the same balances.
//!
//! * A validator's [`Evaluation`] becomes an [`EvalScore`] through a [`Scorer`]; the default,
//!   [`RelativeLossImprovement`], is `(L_before − L_after) / L_before` in parts per million.
//! * Validators' scores for one contribution are combined with a stake-weighted median
//!   ([`stake_weighted_median`], Yuma's κ = 1/2 clipping): the consensus score is the largest
//!   `w` such that validators holding at least half of *all* validator stake scored `≥ w`.
//!   A minority can neither raise nor lower it beyond the honest majority's range.
//! * Each round mints [`emission`] units (halving schedule, hard cap), split pro rata to the
//!   positive consensus scores by [`split`] (floor, then largest remainders).

use crate::merkle::Hash;
use crate::record::{Evaluation, Verdict};
use sha2::{Digest, Sha256};

/// Parts per million.
pub const PPM: i64 = 1_000_000;

/// What one validator's measurement says about a contribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EvalScore {
    /// The artifact was invalid (sorts lowest).
    Invalid,
    /// Losses were NaN or infinite.
    NonFinite,
    /// A copy of the update recorded by this earlier message.
    Copied(Hash),
    /// No work of its own.
    FreeRider,
    /// A score in parts per million (may be negative).
    Ppm(i64),
}

/// Maps a validator's signed measurement to a score. Other crates plug in their own measures.
pub trait Scorer {
    /// Integer score for one evaluation; must be a pure function of the evaluation.
    fn score(&self, eval: &Evaluation) -> EvalScore;
}

/// Default scorer: relative loss improvement `(L_before − L_after) / L_before` in ppm, clamped
/// to `[-1, 1]` so one absurd measurement cannot dominate a median-free consumer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelativeLossImprovement;

impl Scorer for RelativeLossImprovement {
    fn score(&self, e: &Evaluation) -> EvalScore {
        match e.verdict {
            Verdict::Invalid => EvalScore::Invalid,
            Verdict::NonFinite => EvalScore::NonFinite,
            Verdict::Copied(h) => EvalScore::Copied(h),
            Verdict::FreeRider => EvalScore::FreeRider,
            Verdict::Measured if e.loss_before == 0 => EvalScore::Invalid,
            Verdict::Measured => {
                let lb = i128::from(e.loss_before);
                let la = i128::from(e.loss_after);
                let s = (lb - la) * i128::from(PPM) / lb;
                EvalScore::Ppm(s.clamp(-i128::from(PPM), i128::from(PPM)) as i64)
            }
        }
    }
}

/// A validator-side measurement in floating point, before it is fixed for signing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// Mean loss on the held-out batches before applying the update.
    pub loss_before: f64,
    /// Mean loss after applying the update.
    pub loss_after: f64,
}

impl Measurement {
    /// Converts to the signed integer form: micro-units, or [`Verdict::NonFinite`] when either
    /// loss is NaN/infinite (or too large for u64 micro-units), or [`Verdict::Invalid`] when
    /// negative. Floats never enter signed data.
    pub fn to_fixed(self) -> (Verdict, u64, u64) {
        let ok = |x: f64| x.is_finite() && x < (u64::MAX / 1_000_000) as f64;
        if !ok(self.loss_before) || !ok(self.loss_after) {
            return (Verdict::NonFinite, 0, 0);
        }
        if self.loss_before < 0.0 || self.loss_after < 0.0 {
            return (Verdict::Invalid, 0, 0);
        }
        (
            Verdict::Measured,
            (self.loss_before * 1e6).round() as u64,
            (self.loss_after * 1e6).round() as u64,
        )
    }
}

/// Seed of the held-out batches for `(contribution, validator)`, derived from the log root at
/// a size after the contribution was committed: the contributor cannot know it in advance.
pub fn heldout_seed(contribution: &Hash, validator: &[u8; 32], beacon_root: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(b"magnet-ledger/v1/heldout\n");
    h.update(contribution);
    h.update(validator);
    h.update(beacon_root);
    h.finalize().into()
}

/// `n` batch indices in `0..pool` drawn from `seed` (SHA-256 counter mode; same seed, same batches).
pub fn heldout_batches(seed: &Hash, n: usize, pool: u64) -> Vec<u64> {
    assert!(pool > 0, "empty batch pool");
    (0..n as u64)
        .map(|i| {
            let mut h = Sha256::new();
            h.update(seed);
            h.update(i.to_be_bytes());
            let d: [u8; 32] = h.finalize().into();
            u64::from_be_bytes(d[..8].try_into().expect("8 bytes")) % pool
        })
        .collect()
}

/// Stake-weighted median (κ = 1/2 of `total_stake`): the largest score `w` such that the votes
/// with score `≥ w` hold at least half of `total_stake`. `None` when the votes cast hold less
/// than half of all stake (no quorum).
pub fn stake_weighted_median(votes: &[(EvalScore, u64)], total_stake: u64) -> Option<EvalScore> {
    let mut v: Vec<(EvalScore, u64)> = votes.to_vec();
    v.sort_by_key(|x| std::cmp::Reverse(x.0));
    let mut acc: u128 = 0;
    for (s, st) in v {
        acc += u128::from(st);
        if 2 * acc >= u128::from(total_stake) && acc > 0 {
            return Some(s);
        }
    }
    None
}

/// Emission of `round` (1-based): `initial >> ((round−1) / halving)`, clipped so the total
/// never exceeds `cap` given `emitted_before`.
pub fn emission(
    initial: u64,
    halving_rounds: u64,
    cap: u64,
    round: u64,
    emitted_before: u64,
) -> u64 {
    let halvings = round.saturating_sub(1) / halving_rounds.max(1);
    let base = if halvings >= 64 {
        0
    } else {
        initial >> halvings
    };
    base.min(cap.saturating_sub(emitted_before))
}

/// The networked round's split ([`crate::record::Protocol`]): `participation_ppm` of
/// `amount` equally among the `eligible` entries, the rest pro rata to `weights` (each
/// [`split`]); if no weight is positive, everything is split equally. All zeros when nothing is
/// eligible. Sums to `amount` exactly otherwise.
pub fn split_with_participation(
    amount: u64,
    participation_ppm: u32,
    eligible: &[bool],
    weights: &[u64],
) -> Vec<u64> {
    if !eligible.iter().any(|&e| e) {
        return vec![0; eligible.len()];
    }
    let equal: Vec<u64> = eligible.iter().map(|&e| u64::from(e)).collect();
    let scored: Vec<u64> = weights
        .iter()
        .zip(eligible)
        .map(|(&w, &e)| if e { w } else { 0 })
        .collect();
    let part = if scored.iter().all(|&w| w == 0) {
        amount
    } else {
        (u128::from(amount) * u128::from(participation_ppm.min(1_000_000)) / 1_000_000) as u64
    };
    let a = split(part, &equal);
    let b = split(amount - part, &scored);
    a.iter().zip(&b).map(|(x, y)| x + y).collect()
}

/// Splits `amount` pro rata to `weights` (floor), then hands the remaining units one each to the
/// largest remainders, ties to the lower index. Sums to `amount` exactly when any weight > 0;
/// all zeros when every weight is 0.
pub fn split(amount: u64, weights: &[u64]) -> Vec<u64> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let mut out = Vec::with_capacity(weights.len());
    let mut rems = Vec::with_capacity(weights.len());
    let mut given: u128 = 0;
    for (i, &w) in weights.iter().enumerate() {
        let num = u128::from(amount) * u128::from(w);
        out.push((num / total) as u64);
        given += num / total;
        rems.push((num % total, i));
    }
    rems.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let left = u128::from(amount) - given;
    for &(_, i) in rems.iter().take(left as usize) {
        out[i] += 1;
    }
    out
}

/// Overlap of two strictly increasing sketches in ppm of the smaller one (0 if either is empty).
pub fn sketch_overlap_ppm(a: &[u32], b: &[u32]) -> u64 {
    let m = a.len().min(b.len());
    if m == 0 {
        return 0;
    }
    let (mut i, mut j, mut common) = (0, 0, 0u64);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    common * 1_000_000 / m as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eval(lb: u64, la: u64) -> Evaluation {
        Evaluation {
            contribution: [0; 32],
            beacon_size: 1,
            heldout_seed: [0; 32],
            verdict: Verdict::Measured,
            loss_before: lb,
            loss_after: la,
        }
    }

    #[test]
    fn relative_improvement_golden() {
        let s = RelativeLossImprovement;
        assert_eq!(
            s.score(&eval(2_000_000, 1_500_000)),
            EvalScore::Ppm(250_000)
        );
        assert_eq!(
            s.score(&eval(3_000_000, 3_300_000)),
            EvalScore::Ppm(-100_000)
        );
        assert_eq!(s.score(&eval(0, 1)), EvalScore::Invalid);
        assert_eq!(s.score(&eval(1, u64::MAX)), EvalScore::Ppm(-PPM));
    }

    #[test]
    fn non_finite_measurements_never_reach_signed_data() {
        for (b, a) in [(f64::NAN, 1.0), (1.0, f64::INFINITY), (1e300, 1.0)] {
            let m = Measurement {
                loss_before: b,
                loss_after: a,
            };
            assert_eq!(m.to_fixed(), (Verdict::NonFinite, 0, 0));
        }
        let m = Measurement {
            loss_before: 2.5,
            loss_after: 2.25,
        };
        assert_eq!(m.to_fixed(), (Verdict::Measured, 2_500_000, 2_250_000));
    }

    #[test]
    fn median_ignores_a_lying_minority() {
        let honest = [
            (EvalScore::Ppm(100), 30),
            (EvalScore::Ppm(110), 25),
            (EvalScore::Ppm(90), 20),
        ];
        let base = stake_weighted_median(&honest, 100).unwrap();
        // A 25%-stake liar claiming a huge score (or a huge penalty) stays clipped.
        for lie in [
            EvalScore::Ppm(PPM),
            EvalScore::Ppm(-PPM),
            EvalScore::Invalid,
        ] {
            let mut v = honest.to_vec();
            v.push((lie, 25));
            let m = stake_weighted_median(&v, 100).unwrap();
            assert!(
                (EvalScore::Ppm(90)..=EvalScore::Ppm(110)).contains(&m),
                "{lie:?} moved it to {m:?}"
            );
        }
        assert_eq!(base, EvalScore::Ppm(100));
        assert_eq!(stake_weighted_median(&[(EvalScore::Ppm(5), 10)], 100), None);
    }

    #[test]
    fn emission_halves_and_respects_cap() {
        assert_eq!(emission(1000, 2, 10_000, 1, 0), 1000);
        assert_eq!(emission(1000, 2, 10_000, 2, 1000), 1000);
        assert_eq!(emission(1000, 2, 10_000, 3, 2000), 500);
        assert_eq!(emission(1000, 2, 2300, 5, 2000), 250);
        assert_eq!(emission(1000, 2, 2300, 5, 2200), 100);
        assert_eq!(emission(1000, 1, u64::MAX, 200, 0), 0);
    }

    proptest! {
        #[test]
        fn split_is_exact_and_proportional(amount in 0u64..1_000_000_000_000, w in proptest::collection::vec(0u64..1_000_000, 1..20)) {
            let out = split(amount, &w);
            let total_w: u64 = w.iter().sum();
            if total_w == 0 {
                prop_assert!(out.iter().all(|&x| x == 0));
            } else {
                prop_assert_eq!(out.iter().sum::<u64>(), amount);
                for (o, wi) in out.iter().zip(&w) {
                    let exact = u128::from(amount) * u128::from(*wi) / u128::from(total_w);
                    prop_assert!(u128::from(*o) >= exact && u128::from(*o) <= exact + 1);
                }
            }
        }

        #[test]
        fn median_stays_within_majority_range(h in proptest::collection::vec((-1000i64..1000, 1u64..100), 1..8),
                                               l in proptest::collection::vec((any::<i64>(), 1u64..100), 0..8)) {
            let hs: u64 = h.iter().map(|x| x.1).sum();
            let ls: u64 = l.iter().map(|x| x.1).sum();
            prop_assume!(ls < hs);
            let votes: Vec<(EvalScore, u64)> = h.iter().chain(&l).map(|&(s, w)| (EvalScore::Ppm(s), w)).collect();
            let m = stake_weighted_median(&votes, hs + ls).unwrap();
            let lo = h.iter().map(|x| x.0).min().unwrap();
            let hi = h.iter().map(|x| x.0).max().unwrap();
            prop_assert!(EvalScore::Ppm(lo) <= m && m <= EvalScore::Ppm(hi));
        }
    }

    proptest! {
        #[test]
        fn participation_split_is_exact_and_pays_every_eligible(amount in 1_000u64..1_000_000_000, part in 1u32..=1_000_000,
                                                               w in proptest::collection::vec((any::<bool>(), 0u64..1_000_000), 1..12)) {
            let eligible: Vec<bool> = w.iter().map(|x| x.0).collect();
            let weights: Vec<u64> = w.iter().map(|x| x.1).collect();
            let out = split_with_participation(amount, part, &eligible, &weights);
            if eligible.iter().any(|&e| e) {
                prop_assert_eq!(out.iter().sum::<u64>(), amount);
                let n = eligible.iter().filter(|&&e| e).count() as u64;
                for (o, e) in out.iter().zip(&eligible) {
                    if *e {
                        // The equal share alone is at least floor(part * amount / n).
                        prop_assert!(*o >= u64::from(part) * amount / 1_000_000 / n);
                    } else {
                        prop_assert_eq!(*o, 0);
                    }
                }
            } else {
                prop_assert!(out.iter().all(|&x| x == 0));
            }
        }
    }

    #[test]
    fn sketch_overlap() {
        assert_eq!(sketch_overlap_ppm(&[1, 2, 3, 4], &[3, 4, 5, 6, 7]), 500_000);
        assert_eq!(sketch_overlap_ppm(&[], &[1]), 0);
        assert_eq!(
            heldout_batches(&[1; 32], 4, 10),
            heldout_batches(&[1; 32], 4, 10)
        );
    }
}
