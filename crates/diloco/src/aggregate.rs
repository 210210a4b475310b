//! Screening (rejection with a recorded reason) and robust aggregation of workers'
//! pseudo-gradients.
//!
//! Stale rule: every update names the version (round number) of the global weights it
//! started from, `b`; the round expects the version that last updated these tensors,
//! `c` (for plain DiLoCo `c = r - 1`; for a streaming fragment, the fragment's previous
//! round). Its staleness is `s = c - b`. Updates with `s > max_staleness`, or from a
//! version the coordinator has not published (`b > c`), are rejected; the others count
//! with weight `w / (1 + s)` in the weighted aggregators (mean, norm clipping): a stale
//! pseudo-gradient still points downhill but was measured from older weights. Median and
//! trimmed mean ignore weights.
//!
//! Weights come from the protocol, never from what a worker says about itself:
//! [`Weighting::Equal`] (the default) gives every accepted update weight 1 whatever its
//! header declares; [`Weighting::Declared`] uses the header's weight (e.g. tokens trained
//! on) only inside the protocol's bounds and rejects the update otherwise
//! ([`RejectReason::WeightOutOfBounds`]). A merge policy
//! ([`crate::merge::MergePolicy`]) may then set each merged update's weight from an
//! outside record (e.g. tokens a ledger accepted).

use crate::params::{self, NamedTensor, ParamMap};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One worker's decoded contribution to a round.
#[derive(Debug, Clone)]
pub struct Update {
    /// Worker id.
    pub worker: u32,
    /// The global version the worker started from.
    pub base_version: u64,
    /// Relative weight in the weighted aggregators. Before [`screen`] it is what the
    /// update's header declared; [`screen`] replaces it by the protocol's weight
    /// ([`Weighting`]) divided by `1 + staleness`.
    pub weight: f32,
    /// Pseudo-gradient: global minus local latent weights.
    pub delta: ParamMap,
}

/// Why an update was left out of a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum RejectReason {
    /// The payload did not decode.
    Decode {
        /// The decoder's message.
        message: String,
    },
    /// A tensor the round expects is absent.
    MissingTensor {
        /// Its name.
        tensor: String,
    },
    /// A tensor the round does not expect is present.
    ExtraTensor {
        /// Its name.
        tensor: String,
    },
    /// A tensor has the wrong shape.
    Shape {
        /// Its name.
        tensor: String,
        /// Shape received.
        got: Vec<usize>,
        /// Shape expected.
        expected: Vec<usize>,
    },
    /// A value is NaN or infinite.
    NonFinite {
        /// NamedTensor name.
        tensor: String,
        /// Flat index of the first bad value.
        index: usize,
    },
    /// The update's L2 norm is far above the round's median (or an absolute cap).
    NormOutlier {
        /// The update's norm.
        norm: f64,
        /// The limit it exceeded.
        limit: f64,
    },
    /// Computed from a global version too old for this round.
    Stale {
        /// The version it started from.
        base_version: u64,
        /// The version the round expected.
        expected: u64,
    },
    /// The weight is not a finite positive number.
    BadWeight {
        /// The weight sent.
        weight: f32,
    },
    /// A second update from the same worker in one round.
    Duplicate,
    /// The declared weight lies outside the protocol's bounds ([`Weighting::Declared`]).
    WeightOutOfBounds {
        /// The weight declared.
        weight: f32,
        /// Smallest weight the protocol accepts.
        min: f32,
        /// Largest weight the protocol accepts.
        max: f32,
    },
    /// Well-formed, but the round's merge policy left it out (e.g. the ledger slashed it).
    Excluded {
        /// The policy's reason.
        message: String,
    },
}

/// Where an accepted update's aggregation weight comes from (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Weighting {
    /// Every accepted update weighs 1 (before the stale rule); the header is ignored.
    #[default]
    Equal,
    /// The header's declared weight, accepted only in `[min, max]` (e.g. `max` = the
    /// round's token budget), otherwise rejected with a reason.
    Declared {
        /// Smallest accepted weight (> 0).
        min: f32,
        /// Largest accepted weight (>= `min`, finite).
        max: f32,
    },
}

impl Weighting {
    /// Checks the bounds (`0 < min <= max < inf`).
    pub fn validate(self) -> crate::Result<()> {
        match self {
            Weighting::Equal => Ok(()),
            Weighting::Declared { min, max } if min > 0.0 && min <= max && max.is_finite() => {
                Ok(())
            }
            Weighting::Declared { min, max } => Err(crate::Error::Config {
                field: "weighting".into(),
                message: format!("declared-weight bounds [{min}, {max}] need 0 < min <= max < inf"),
            }),
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", serde_json::to_string(self).unwrap_or_default())
    }
}

/// A rejected update and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// Worker id.
    pub worker: u32,
    /// Why.
    pub reason: RejectReason,
}

/// Rules for rejecting updates before aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScreenConfig {
    /// Reject updates whose norm exceeds `norm_ratio` x the median norm of the round's
    /// well-formed updates (applied when at least 3 are present).
    pub norm_ratio: f64,
    /// Absolute cap on an update's L2 norm, if any.
    pub max_norm: Option<f64>,
    /// Largest accepted staleness (see the module docs).
    pub max_staleness: u64,
    /// Where the aggregation weights come from.
    #[serde(default)]
    pub weighting: Weighting,
}

impl Default for ScreenConfig {
    fn default() -> Self {
        Self {
            norm_ratio: 10.0,
            max_norm: None,
            max_staleness: 1,
            weighting: Weighting::Equal,
        }
    }
}

/// Splits `updates` into accepted (with stale weights applied) and rejected, checking
/// each against the `reference` layout (names and shapes) and the expected base
/// version `current` (see the module docs).
pub fn screen(
    updates: Vec<Update>,
    reference: &ParamMap,
    current: u64,
    cfg: &ScreenConfig,
) -> (Vec<Update>, Vec<Rejection>) {
    let mut ok = Vec::new();
    let mut rejected = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for mut u in updates {
        let reason = if seen.insert(u.worker) {
            check_one(&u, reference, current, cfg)
        } else {
            Some(RejectReason::Duplicate)
        };
        if let Some(reason) = reason {
            rejected.push(Rejection {
                worker: u.worker,
                reason,
            });
        } else {
            let stale = current.saturating_sub(u.base_version);
            if cfg.weighting == Weighting::Equal {
                u.weight = 1.0;
            }
            u.weight /= 1.0 + stale as f32;
            ok.push(u);
        }
    }
    let norms: Vec<f64> = ok.iter().map(|u| params::l2_norm(&u.delta)).collect();
    let median_limit = (norms.len() >= 3).then(|| median_f64(&norms) * cfg.norm_ratio);
    let limit = match (median_limit, cfg.max_norm) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(limit) = limit {
        let mut kept = Vec::new();
        for (u, norm) in ok.into_iter().zip(norms) {
            if norm > limit {
                rejected.push(Rejection {
                    worker: u.worker,
                    reason: RejectReason::NormOutlier { norm, limit },
                });
            } else {
                kept.push(u);
            }
        }
        ok = kept;
    }
    ok.sort_by_key(|u| u.worker);
    rejected.sort_by_key(|r| r.worker);
    (ok, rejected)
}

fn check_one(
    u: &Update,
    reference: &ParamMap,
    current: u64,
    cfg: &ScreenConfig,
) -> Option<RejectReason> {
    if let Weighting::Declared { min, max } = cfg.weighting {
        if !(u.weight.is_finite() && u.weight > 0.0) {
            return Some(RejectReason::BadWeight { weight: u.weight });
        }
        if !(min..=max).contains(&u.weight) {
            return Some(RejectReason::WeightOutOfBounds {
                weight: u.weight,
                min,
                max,
            });
        }
    }
    if u.base_version > current || current - u.base_version > cfg.max_staleness {
        return Some(RejectReason::Stale {
            base_version: u.base_version,
            expected: current,
        });
    }
    for (name, r) in reference {
        let Some(t) = u.delta.get(name) else {
            return Some(RejectReason::MissingTensor {
                tensor: name.clone(),
            });
        };
        if t.shape != r.shape || t.data.len() != r.data.len() {
            return Some(RejectReason::Shape {
                tensor: name.clone(),
                got: t.shape.clone(),
                expected: r.shape.clone(),
            });
        }
        if let Some(index) = t.data.iter().position(|v| !v.is_finite()) {
            return Some(RejectReason::NonFinite {
                tensor: name.clone(),
                index,
            });
        }
    }
    u.delta
        .keys()
        .find(|k| !reference.contains_key(*k))
        .map(|k| RejectReason::ExtraTensor { tensor: k.clone() })
}

fn median_f64(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        0.5 * (s[m - 1] + s[m])
    }
}

/// How accepted pseudo-gradients are combined into one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Aggregator {
    /// Weighted mean (DiLoCo's default).
    Mean,
    /// Coordinate-wise median (Yin et al. 2018).
    Median,
    /// Coordinate-wise mean after dropping the `trim` fraction of largest and of smallest
    /// values (Yin et al. 2018).
    TrimmedMean {
        /// Fraction trimmed from each end, in [0, 0.5).
        trim: f32,
    },
    /// Each update's L2 norm clipped to `multiple` x the median norm, then the weighted
    /// mean.
    NormClip {
        /// Clip threshold relative to the median norm.
        multiple: f32,
    },
}

impl std::str::FromStr for Aggregator {
    type Err = crate::Error;
    /// `mean`, `median`, `trimmed:0.2`, `clip:2`.
    fn from_str(s: &str) -> crate::Result<Self> {
        let (kind, arg) = s.split_once(':').map_or((s, None), |(k, a)| (k, Some(a)));
        let num = |d: f32| -> crate::Result<f32> {
            arg.map_or(Ok(d), |a| {
                a.parse().map_err(|e| crate::Error::Config {
                    field: "aggregator".into(),
                    message: format!("`{a}`: {e}"),
                })
            })
        };
        Ok(match kind {
            "mean" => Aggregator::Mean,
            "median" => Aggregator::Median,
            "trimmed" => Aggregator::TrimmedMean { trim: num(0.25)? },
            "clip" => Aggregator::NormClip {
                multiple: num(1.0)?,
            },
            other => {
                return Err(crate::Error::Config {
                    field: "aggregator".into(),
                    message: format!(
                        "unknown aggregator `{other}` (mean, median, trimmed:F, clip:F)"
                    ),
                });
            }
        })
    }
}

impl Aggregator {
    /// Combines the (screened, same-layout, non-empty) `updates`.
    pub fn aggregate(&self, updates: &[Update]) -> ParamMap {
        assert!(!updates.is_empty(), "aggregate needs at least one update");
        match *self {
            Aggregator::Mean => weighted_mean(updates, &vec![1.0; updates.len()]),
            Aggregator::NormClip { multiple } => {
                let norms: Vec<f64> = updates.iter().map(|u| params::l2_norm(&u.delta)).collect();
                let tau = median_f64(&norms) * f64::from(multiple);
                let factors: Vec<f64> = norms
                    .iter()
                    .map(|&n| if n > tau && n > 0.0 { tau / n } else { 1.0 })
                    .collect();
                weighted_mean(updates, &factors)
            }
            Aggregator::Median => coordinatewise(updates, |v| {
                let m = v.len() / 2;
                if v.len() % 2 == 1 {
                    v[m]
                } else {
                    0.5 * (v[m - 1] + v[m])
                }
            }),
            Aggregator::TrimmedMean { trim } => coordinatewise(updates, |v| {
                let cut = ((v.len() as f32 * trim.clamp(0.0, 0.49)).floor() as usize)
                    .min((v.len() - 1) / 2);
                let kept = &v[cut..v.len() - cut];
                (kept.iter().map(|&x| f64::from(x)).sum::<f64>() / kept.len() as f64) as f32
            }),
        }
    }
}

fn weighted_mean(updates: &[Update], factors: &[f64]) -> ParamMap {
    let total: f64 = updates.iter().map(|u| f64::from(u.weight)).sum();
    updates[0]
        .delta
        .iter()
        .map(|(name, t0)| {
            let mut acc = vec![0.0f64; t0.data.len()];
            for (u, &f) in updates.iter().zip(factors) {
                let w = f64::from(u.weight) / total * f;
                for (a, &x) in acc.iter_mut().zip(&u.delta[name].data) {
                    *a += w * f64::from(x);
                }
            }
            (
                name.clone(),
                NamedTensor {
                    shape: t0.shape.clone(),
                    data: acc.into_iter().map(|a| a as f32).collect(),
                },
            )
        })
        .collect()
}

fn coordinatewise(updates: &[Update], f: impl Fn(&[f32]) -> f32) -> ParamMap {
    let mut buf = vec![0.0f32; updates.len()];
    updates[0]
        .delta
        .iter()
        .map(|(name, t0)| {
            let cols: Vec<&[f32]> = updates
                .iter()
                .map(|u| u.delta[name].data.as_slice())
                .collect();
            let data = (0..t0.data.len())
                .map(|i| {
                    for (b, c) in buf.iter_mut().zip(&cols) {
                        *b = c[i];
                    }
                    buf.sort_by(f32::total_cmp);
                    f(&buf)
                })
                .collect();
            (
                name.clone(),
                NamedTensor {
                    shape: t0.shape.clone(),
                    data,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upd(worker: u32, vals: Vec<f32>) -> Update {
        let mut delta = ParamMap::new();
        delta.insert(
            "w".into(),
            NamedTensor {
                shape: vec![vals.len()],
                data: vals,
            },
        );
        Update {
            worker,
            base_version: 0,
            weight: 1.0,
            delta,
        }
    }

    const ALL: [Aggregator; 4] = [
        Aggregator::Mean,
        Aggregator::Median,
        Aggregator::TrimmedMean { trim: 0.25 },
        Aggregator::NormClip { multiple: 1.0 },
    ];

    #[test]
    fn identical_updates_aggregate_to_the_update() {
        let v = vec![0.1, -2.5, 3.0, 1e-3];
        let us: Vec<Update> = (0..5).map(|w| upd(w, v.clone())).collect();
        for a in ALL {
            assert_eq!(a.aggregate(&us)["w"].data, v, "{a:?}");
        }
    }

    #[test]
    fn robust_aggregators_resist_one_outlier() {
        let mut us: Vec<Update> = (0..4).map(|w| upd(w, vec![1.0, 1.0])).collect();
        us.push(upd(4, vec![1e6, -1e6]));
        assert_eq!(Aggregator::Median.aggregate(&us)["w"].data, vec![1.0, 1.0]);
        assert_eq!(
            Aggregator::TrimmedMean { trim: 0.2 }.aggregate(&us)["w"].data,
            vec![1.0, 1.0]
        );
        let clipped = Aggregator::NormClip { multiple: 1.0 }.aggregate(&us);
        assert!(
            clipped["w"].data.iter().all(|v| v.abs() < 1.5),
            "{clipped:?}"
        );
        assert!(Aggregator::Mean.aggregate(&us)["w"].data[0] > 1e5);
    }

    /// The attacker of issue 12: one worker declares weight 1e30 for an update that
    /// points the other way. Before, the weighted mean was the attacker's update; now
    /// equal weighting gives it 1/k and declared weighting refuses it with a reason.
    #[test]
    fn a_weight_inflator_does_not_become_the_aggregate() {
        let reference = upd(0, vec![0.0; 2]).delta;
        let mut us: Vec<Update> = (0..4).map(|w| upd(w, vec![1.0, 1.0])).collect();
        let mut attacker = upd(4, vec![-1.0, -1.0]);
        attacker.weight = 1e30;
        us.push(attacker);
        for u in &mut us[..4] {
            u.weight = 64.0; // honest: the tokens of one round
        }
        let (ok, rej) = screen(us.clone(), &reference, 0, &ScreenConfig::default());
        assert!(rej.is_empty(), "{rej:?}");
        assert!(ok.iter().all(|u| u.weight == 1.0));
        let mean = Aggregator::Mean.aggregate(&ok)["w"].data.clone();
        assert_eq!(mean, vec![0.6, 0.6]); // (4 x 1 - 1) / 5, not -1
        let declared = ScreenConfig {
            weighting: Weighting::Declared {
                min: 1.0,
                max: 64.0,
            },
            ..ScreenConfig::default()
        };
        let (ok, rej) = screen(us, &reference, 0, &declared);
        assert_eq!(ok.len(), 4);
        assert_eq!(
            rej,
            vec![Rejection {
                worker: 4,
                reason: RejectReason::WeightOutOfBounds {
                    weight: 1e30,
                    min: 1.0,
                    max: 64.0
                }
            }]
        );
        assert_eq!(Aggregator::Mean.aggregate(&ok)["w"].data, vec![1.0, 1.0]);
        assert!(
            Weighting::Declared { min: 0.0, max: 1.0 }
                .validate()
                .is_err()
        );
        assert!(
            Weighting::Declared {
                min: 2.0,
                max: f32::INFINITY
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn screening_records_reasons_and_applies_the_stale_rule() {
        let reference = upd(0, vec![0.0; 2]).delta;
        let mut stale = upd(5, vec![1.0, 1.0]);
        stale.base_version = 2; // round 4 expects base 3: staleness 1, weight halves
        let mut too_stale = upd(6, vec![1.0, 1.0]);
        too_stale.base_version = 1;
        let us = vec![
            upd(0, vec![1.0, 1.0]),
            upd(1, vec![1.1, 0.9]),
            upd(2, vec![f32::NAN, 1.0]),
            upd(3, vec![1.0, 1.0, 1.0]),
            upd(4, vec![500.0, 500.0]),
            stale,
            too_stale,
            upd(1, vec![1.0, 1.0]),
        ];
        let us = us
            .into_iter()
            .map(|mut u| {
                if u.worker != 5 && u.worker != 6 {
                    u.base_version = 3;
                }
                u
            })
            .collect();
        let (ok, rej) = screen(us, &reference, 3, &ScreenConfig::default());
        assert_eq!(
            ok.iter().map(|u| u.worker).collect::<Vec<_>>(),
            vec![0, 1, 5]
        );
        assert_eq!(ok[2].weight, 0.5);
        let reasons: Vec<(u32, &str)> = rej
            .iter()
            .map(|r| {
                let s = serde_json::to_value(&r.reason).unwrap();
                (
                    r.worker,
                    s["reason"].as_str().unwrap().to_owned().leak() as &str,
                )
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                (1, "duplicate"),
                (2, "non_finite"),
                (3, "shape"),
                (4, "norm_outlier"),
                (6, "stale")
            ]
        );
    }
}
