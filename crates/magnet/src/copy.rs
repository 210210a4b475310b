//! Copy detection from the decoded updates themselves, recomputed by every validator.
//!
//! A submitter's sketch is never read. For an update `u` of round `r` the detector looks for
//! an earlier update it is a copy of, in this order (the earliest match decides, so the
//! earliest committed update is always the one kept):
//!
//! 1. **free rider**: `‖u‖` is zero or below `free_rider_ratio` × the round's median norm;
//! 2. **resubmitted step**: `cos(u, s) ≥ step_cosine` for a previous merged step `s` (the
//!    mean pseudo-gradient a settlement merged, or the outer step it published), and closer
//!    to it than to the sum of the round's other updates (an honest update in a smooth
//!    stretch of training can align with last round's step; it aligns with this round's
//!    descent more);
//! 3. **stale copy**: an update `h` of the last `history_rounds` rounds with
//!    `cos(res(u), res(h)) ≥ copy_cosine`, where `res` removes the projection on the
//!    previous merged mean `c` (honest workers leave the same weights and share the common
//!    descent direction; what is left is their own data's). Against the worker's own earlier
//!    updates the bar is `replay_cosine`, higher than `copy_cosine`: they share its shard's
//!    direction, but a new round's training starts from other weights and other batches,
//!    while a replay (even rescaled, noised or re-encoded) stays within a percent of its
//!    source;
//! 4. **copy within the round** (collusion: commit–reveal makes a plain copy impossible): an
//!    update `v` committed earlier in the round with `cos(res'(u), res'(v)) ≥ copy_cosine`,
//!    where `res'` removes the projection on the mean of the round's *other* updates (without
//!    `u` and `v`), the round's own common direction (with only two updates in the round
//!    there is no such estimate and the pair is not compared).
//!
//! Cosines are signed: residuals of updates that cancel out (two updates after removing
//! their mean, or a converged round whose updates sum to zero) are anti-parallel, not
//! copies; a negated copy is left to the held-out measurement (it is a poisoner). Cosines
//! are invariant to rescaling; 1 % noise or a re-encoding with another codec moves
//! them by far less than the margin between a copy (≈ 1) and independent updates (≈ 0 in the
//! dimensions of a model). Every comparison is symmetric in the data and uses only decoded
//! artifacts, so neither the order of submission nor a sketch can get an honest update
//! flagged: the only ordering that matters is the commit order, and nobody can commit a copy
//! of an update before it is revealed.

use diloco::params::ParamMap;
use incentive_ledger::merkle::Hash;

/// Thresholds (from the protocol).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyRule {
    /// Residual cosine from which an update is a copy.
    pub copy_cosine: f64,
    /// Cosine with a merged step from which an update is a resubmitted step.
    pub step_cosine: f64,
    /// Norm ratio (to the round's median) below which an update is a free rider.
    pub free_rider_ratio: f64,
    /// Residual cosine with the same worker's earlier update from which an update is a
    /// replay of it.
    pub replay_cosine: f64,
}

impl Default for CopyRule {
    fn default() -> Self {
        Self {
            copy_cosine: 0.9,
            step_cosine: 0.95,
            free_rider_ratio: 1e-3,
            replay_cosine: 0.99,
        }
    }
}

/// One update flattened, with the ledger id of the message that recorded it.
#[derive(Debug, Clone)]
pub struct Flat {
    /// Ledger message id (contribution, or the settlement that merged a step).
    pub id: Hash,
    /// The worker key that sent it (`None`: a merged step).
    pub owner: Option<[u8; 32]>,
    /// Values in name order.
    pub data: Vec<f32>,
}

impl Flat {
    /// Flattens a parameter map (name order).
    pub fn new(id: Hash, owner: Option<[u8; 32]>, p: &ParamMap) -> Self {
        Self {
            id,
            owner,
            data: p.values().flat_map(|t| t.data.iter().copied()).collect(),
        }
    }
}

/// What the detector found for one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Finding {
    /// No copy found; the largest similarities seen, for reports.
    Original {
        /// Largest cosine against another party's update or a merged step.
        max_cosine: f64,
        /// Largest residual cosine against the same worker's earlier updates (what the
        /// replay bar is measured against).
        own_cosine: f64,
    },
    /// Carries no work of its own.
    FreeRider,
    /// Copies the update recorded by this message.
    Copied {
        /// The earlier message.
        earlier: Hash,
        /// The cosine that decided.
        cosine: f64,
    },
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

/// `a` minus its projection on `dir` (unchanged when `dir` is zero).
fn residual(a: &[f32], dir: Option<&[f32]>) -> Vec<f64> {
    let mut out: Vec<f64> = a.iter().map(|&x| f64::from(x)).collect();
    if let Some(d) = dir {
        let dd = dot(d, d);
        if dd > 0.0 {
            let k = dot(a, d) / dd;
            for (o, &x) in out.iter_mut().zip(d) {
                *o -= k * f64::from(x);
            }
        }
    }
    out
}

fn cos64(a: &[f64], b: &[f64]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa <= 0.0 || bb <= 0.0 {
        return 0.0;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

fn cos32(a: &[f32], b: &[f32]) -> f64 {
    let (na, nb) = (norm(a), norm(b));
    if na <= 0.0 || nb <= 0.0 {
        return 0.0;
    }
    dot(a, b) / (na * nb)
}

/// Checks every update of a round. `round` is in commit order; `history` holds the earlier
/// rounds' updates (oldest first), `steps` the previous merged steps, `common` the previous
/// merged mean (removed before comparing with the history). Updates of a different length
/// than the round's first are compared with nothing (their layout is refused elsewhere).
pub fn detect(
    round: &[Flat],
    history: &[Flat],
    steps: &[Flat],
    common: Option<&[f32]>,
    rule: &CopyRule,
) -> Vec<Finding> {
    let n = round.first().map_or(0, |f| f.data.len());
    let norms: Vec<f64> = round.iter().map(|f| norm(&f.data)).collect();
    let mut sorted: Vec<f64> = norms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let common = common.filter(|c| c.len() == n);
    let history_res: Vec<(Hash, Option<[u8; 32]>, Vec<f64>)> = history
        .iter()
        .filter(|h| h.data.len() == n)
        .map(|h| (h.id, h.owner, residual(&h.data, common)))
        .collect();
    let same = |f: &Flat| f.data.len() == n;
    let total: Vec<f32> = (0..n)
        .map(|k| round.iter().filter(|f| same(f)).map(|f| f.data[k]).sum())
        .collect();
    let n_same = round.iter().filter(|f| same(f)).count();
    // Pass 1: free riders, resubmitted steps, stale copies (each update on its own).
    let mut out: Vec<Finding> = round
        .iter()
        .enumerate()
        .map(|(i, u)| {
            if !same(u) {
                return Finding::Original {
                    max_cosine: 0.0,
                    own_cosine: 0.0,
                };
            }
            if norms[i] <= 0.0 || norms[i] < rule.free_rider_ratio * median {
                return Finding::FreeRider;
            }
            let mut max_cosine: f64 = 0.0;
            // How well the round's other updates explain this one: an honest update follows
            // this round's descent at least as closely as last round's step.
            let others: Vec<f32> = total.iter().zip(&u.data).map(|(t, x)| t - x).collect();
            let now = if n_same > 1 {
                cos32(&u.data, &others)
            } else {
                0.0
            };
            for s in steps.iter().filter(|s| s.data.len() == n) {
                let c = cos32(&u.data, &s.data);
                if c >= rule.step_cosine && c > now {
                    return Finding::Copied {
                        earlier: s.id,
                        cosine: c,
                    };
                }
                max_cosine = max_cosine.max(c);
            }
            let ru = residual(&u.data, common);
            let mut own_cosine: f64 = 0.0;
            for (id, owner, rh) in &history_res {
                let c = cos64(&ru, rh);
                // A worker's own earlier updates share its data's direction: only a near
                // duplicate of one is a replay.
                let own = owner.is_some() && *owner == u.owner;
                let bar = if own {
                    rule.replay_cosine
                } else {
                    rule.copy_cosine
                };
                if c >= bar {
                    return Finding::Copied {
                        earlier: *id,
                        cosine: c,
                    };
                }
                if own {
                    own_cosine = own_cosine.max(c);
                } else {
                    max_cosine = max_cosine.max(c);
                }
            }
            Finding::Original {
                max_cosine,
                own_cosine,
            }
        })
        .collect();
    // Pass 2: copies within the round, among the updates pass 1 left as originals (an update
    // already caught, say a copy of this worker's previous update committed first, must not
    // make the worker's new one look a copy, nor skew the round's common direction).
    let original: Vec<bool> = round
        .iter()
        .zip(&out)
        .map(|(f, o)| same(f) && matches!(o, Finding::Original { .. }))
        .collect();
    let count = original.iter().filter(|&&o| o).count();
    // The round's common direction without the pair: the mean of the other originals. Two
    // originals alone share the round's own direction: nothing tells a colluder's copy from
    // it (and commit–reveal rules out any other copy), so a pair alone is not compared.
    if count >= 3 {
        let sum: Vec<f64> = (0..n)
            .map(|k| {
                round
                    .iter()
                    .zip(&original)
                    .filter(|(_, o)| **o)
                    .map(|(f, _)| f64::from(f.data[k]))
                    .sum()
            })
            .collect();
        let others = (count - 2) as f64;
        for i in 0..round.len() {
            if !original[i] {
                continue;
            }
            let u = &round[i];
            for j in 0..i {
                if !original[j] || !matches!(out[j], Finding::Original { .. }) {
                    continue;
                }
                let v = &round[j];
                let dir: Vec<f32> = (0..n)
                    .map(|k| {
                        ((sum[k] - f64::from(u.data[k]) - f64::from(v.data[k])) / others) as f32
                    })
                    .collect();
                let c = cos64(
                    &residual(&u.data, Some(&dir)),
                    &residual(&v.data, Some(&dir)),
                );
                if c >= rule.copy_cosine {
                    out[i] = Finding::Copied {
                        earlier: v.id,
                        cosine: c,
                    };
                    break;
                }
                if let Finding::Original { max_cosine, .. } = &mut out[i] {
                    *max_cosine = max_cosine.max(c);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic Gaussian-ish noise (sum of uniforms) from a seed.
    fn noise(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                let mut acc = 0.0f32;
                for _ in 0..4 {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                }
                acc
            })
            .collect()
    }

    fn id(i: u8) -> Hash {
        [i; 32]
    }

    fn mix(a: &[f32], wa: f32, b: &[f32], wb: f32) -> Vec<f32> {
        a.iter().zip(b).map(|(x, y)| wa * x + wb * y).collect()
    }

    /// A round of `k` honest updates sharing a common direction (weight `signal`) plus each
    /// worker's own direction, and the previous round's updates and merged mean.
    fn honest_rounds(
        seed: u64,
        k: usize,
        n: usize,
        signal: f32,
    ) -> (Vec<Flat>, Vec<Flat>, Vec<f32>) {
        let common_prev = noise(seed, n);
        let common_now = mix(&common_prev, 0.6, &noise(seed + 1, n), 0.8);
        let prev: Vec<Flat> = (0..k)
            .map(|w| Flat {
                id: id(100 + w as u8),
                owner: Some([w as u8; 32]),
                data: mix(&common_prev, signal, &noise(seed + 10 + w as u64, n), 1.0),
            })
            .collect();
        let mut mean = vec![0.0f32; n];
        for p in &prev {
            for (m, x) in mean.iter_mut().zip(&p.data) {
                *m += x / k as f32;
            }
        }
        let now: Vec<Flat> = (0..k)
            .map(|w| Flat {
                id: id(w as u8),
                owner: Some([w as u8; 32]),
                data: mix(&common_now, signal, &noise(seed + 50 + w as u64, n), 1.0),
            })
            .collect();
        (prev, now, mean)
    }

    /// Symmetric 4-bit quantization per 64 values (what the q4 codec does to a payload).
    fn q4(v: &mut [f32]) {
        for block in v.chunks_mut(64) {
            let m = block.iter().fold(0.0f32, |a, b| a.max(b.abs())) / 7.0;
            if m > 0.0 {
                for x in block.iter_mut() {
                    *x = (*x / m).round().clamp(-7.0, 7.0) * m;
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn a_replay_of_a_workers_own_update_is_caught_and_its_honest_next_one_is_not(
            seed in 0u64..10_000, k in 3usize..6, signal in 0.0f32..4.0,
            scale in 0.2f32..5.0, noise_pct in 0.0f32..0.01, persist in 0.0f32..0.95,
        ) {
            let n = 4096;
            let (prev, _, mean) = honest_rounds(seed, k, n, signal);
            let common_now = mix(&noise(seed, n), 0.6, &noise(seed + 1, n), 0.8);
            // Each worker's own direction persists from round to round with weight
            // `persist` (its residual cosine with its previous update): its shard's data.
            let honest: Vec<Flat> = (0..k)
                .map(|w| {
                    let own = mix(
                        &noise(seed + 10 + w as u64, n),
                        persist,
                        &noise(seed + 70 + w as u64, n),
                        (1.0 - persist * persist).sqrt(),
                    );
                    Flat {
                        id: id(w as u8),
                        owner: Some([w as u8; 32]),
                        data: mix(&common_now, signal, &own, 1.0),
                    }
                })
                .collect();
            let rule = CopyRule::default();
            let steps = [Flat { id: id(200), owner: None, data: mean.clone() }];
            for f in detect(&honest, &prev, &steps, Some(&mean), &rule) {
                prop_assert!(matches!(f, Finding::Original { .. }), "{f:?}");
            }
            // Worker 0 replays its previous update instead, rescaled and noised. (Re-encoded
            // with 4 bits as well, its residual moves by up to a fifth when the common
            // direction dominates, and then it passes: docs/magnet.md, "Known weaknesses".)
            let nz = noise(seed + 999, n);
            let src = &prev[0];
            let rms = (dot(&src.data, &src.data) / n as f64).sqrt() as f32;
            let replay: Vec<f32> = src.data.iter().zip(&nz)
                .map(|(x, e)| scale * (x + noise_pct * rms * e * 2.0)).collect();
            let mut round = honest.clone();
            round[0].data = replay;
            let found = detect(&round, &prev, &steps, Some(&mean), &rule);
            prop_assert!(
                // (With a strong common direction the old update is also close to the merged
                // step: caught either way.)
                matches!(found[0], Finding::Copied { earlier, .. } if earlier == src.id || earlier == id(200)),
                "replay not caught: {:?}", found[0]
            );
            for f in &found[1..] {
                prop_assert!(matches!(f, Finding::Original { .. }), "{found:?}");
            }
        }

        #[test]
        fn rescaled_noised_and_requantized_copies_are_caught_and_honest_updates_are_not(
            seed in 0u64..10_000, k in 2usize..6, signal in 0.0f32..4.0,
            scale in 0.05f32..20.0, victim in 0usize..6, noise_pct in 0.0f32..0.01,
            within in any::<bool>(),
        ) {
            let n = 4096;
            let (prev, mut now, mean) = honest_rounds(seed, k, n, signal);
            let rule = CopyRule::default();
            let steps = [Flat { id: id(200), owner: None, data: mean.clone() }];
            // Honest only: nothing flagged, whatever the share of the common direction.
            let honest = detect(&now, &prev, &steps, Some(&mean), &rule);
            for f in &honest {
                prop_assert!(matches!(f, Finding::Original { .. }), "{honest:?}");
            }
            // A copy (of an earlier round's update, or a colluder's within the round),
            // rescaled, with noise_pct relative noise, then quantized to 4 bits per 64 values.
            let victim = victim % k;
            let src = if within { now[victim].clone() } else { prev[victim].clone() };
            let nz = noise(seed + 999, n);
            let rms = (dot(&src.data, &src.data) / n as f64).sqrt() as f32;
            let mut copy: Vec<f32> = src.data.iter().zip(&nz).map(|(x, e)| scale * (x + noise_pct * rms * e * 2.0)).collect();
            q4(&mut copy);
            now.push(Flat { id: id(77), owner: Some([77; 32]), data: copy });
            let found = detect(&now, &prev, &steps, Some(&mean), &rule);
            let want = src.id;
            drop(src);
            // A stale copy may be attributed to another update of that round or to its merged
            // step (with two updates in a round their residuals after the mean are collinear;
            // an update that is nearly all of the step matches the step): it is caught
            // either way, and the sources are all of earlier rounds.
            let stale_ok = |e: Hash| !within && (e == id(200) || prev.iter().any(|p| p.id == e));
            prop_assert!(
                matches!(found[k], Finding::Copied { earlier, .. } if earlier == want || stale_ok(earlier)),
                "copy of {want:?} not caught: {:?}", found[k]
            );
            // Adding the copy never flags an honest update.
            for f in &found[..k] {
                prop_assert!(matches!(f, Finding::Original { .. }), "{found:?}");
            }
        }
    }

    #[test]
    fn an_early_copy_of_a_workers_last_update_cannot_get_its_next_one_flagged() {
        // Worker 0's updates share its shard's direction from round to round (cos ≈ 0.9
        // after removing the common direction): an attacker commits worker 0's previous
        // update first, hoping worker 0's honest update then looks like a copy of it.
        let n = 4096;
        let own = noise(900, n);
        let c_prev = noise(901, n);
        let c_now = mix(&c_prev, 0.6, &noise(902, n), 0.8);
        let prev: Vec<Flat> = (0..4)
            .map(|w| Flat {
                id: id(100 + w),
                owner: Some([w; 32]),
                data: mix(
                    &c_prev,
                    1.0,
                    &if w == 0 {
                        own.clone()
                    } else {
                        noise(910 + u64::from(w), n)
                    },
                    1.0,
                ),
            })
            .collect();
        let mean: Vec<f32> = (0..n)
            .map(|k| prev.iter().map(|p| p.data[k]).sum::<f32>() / 4.0)
            .collect();
        let mut now = vec![Flat {
            id: id(77),
            owner: Some([77; 32]),
            data: prev[0].data.clone(),
        }];
        for w in 0..4u8 {
            let o = if w == 0 {
                mix(&own, 0.9, &noise(920, n), 0.4)
            } else {
                noise(930 + u64::from(w), n)
            };
            now.push(Flat {
                id: id(w),
                owner: Some([w; 32]),
                data: mix(&c_now, 1.0, &o, 1.0),
            });
        }
        let found = detect(&now, &prev, &[], Some(&mean), &CopyRule::default());
        assert!(
            matches!(found[0], Finding::Copied { earlier, .. } if earlier == id(100)),
            "{found:?}"
        );
        for f in &found[1..] {
            assert!(matches!(f, Finding::Original { .. }), "{found:?}");
        }
    }

    #[test]
    fn free_riders_and_resubmitted_steps_are_caught() {
        let n = 2048;
        let (prev, mut now, mean) = honest_rounds(3, 4, n, 1.0);
        let rule = CopyRule::default();
        let step = Flat {
            id: id(200),
            owner: None,
            data: mean.clone(),
        };
        now.push(Flat {
            id: id(50),
            owner: Some([50; 32]),
            data: vec![0.0; n],
        });
        // Last round's merged step, resubmitted (scaled, as an outer step would be).
        now.push(Flat {
            id: id(51),
            owner: Some([51; 32]),
            data: mean.iter().map(|x| 0.7 * x).collect(),
        });
        let found = detect(&now, &prev, std::slice::from_ref(&step), Some(&mean), &rule);
        assert_eq!(found[4], Finding::FreeRider);
        assert!(matches!(found[5], Finding::Copied { earlier, .. } if earlier == id(200)));
        assert!(
            found[..4]
                .iter()
                .all(|f| matches!(f, Finding::Original { .. }))
        );
        // An empty round and updates of another length are harmless.
        assert!(detect(&[], &prev, &[], None, &rule).is_empty());
        let odd = [
            Flat {
                id: id(1),
                owner: None,
                data: vec![1.0; 3],
            },
            Flat {
                id: id(2),
                owner: None,
                data: vec![1.0; 5],
            },
        ];
        assert!(matches!(
            detect(&odd, &prev, &[], None, &rule)[1],
            Finding::Original { .. }
        ));
    }
}
