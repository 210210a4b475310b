//! Tree-structured Parzen Estimator: Optuna 5's model (multivariate, constant liar,
//! gap-based bandwidths, magic clip, prior kernel) plus a local refinement of the
//! acquisition that Optuna lacks.
//!
//! Optuna proposes the best of 24 draws from the good-trial density `l` under the
//! acquisition `ln l(x) − ln g(x)`. In six dimensions 24 draws leave that maximum far from
//! found, so [`TpeSampler::default()`] follows them with a few rounds of local search on the
//! same acquisition ([`Refinement`]), rejecting points that nearly repeat an observation.
//! [`TpeSampler::optuna()`] is Optuna 5.0's `TPESampler()` exactly.

use rand::RngExt;
use rand::rngs::StdRng;

use super::{SampleContext, Sampler, sample_random};
use crate::error::Result;
use crate::math::{ln_ndtr_diff, logsumexp, ndtr, ndtri};
use crate::space::{Distribution, Param, Params, SearchSpace};
use crate::trial::{Direction, Trial, TrialState, nondomination_ranks};

/// TPE sampler. `TpeSampler::default()` has Optuna 5.0's single-objective defaults (10
/// startup trials, 24 EI candidates, gamma, weights, constant liar, multivariate) plus the
/// acquisition [`Refinement`]; [`TpeSampler::optuna()`] drops the refinement.
#[derive(Debug, Clone)]
pub struct TpeSampler {
    /// Trials drawn at random before the model is used.
    pub n_startup_trials: usize,
    /// Candidates drawn from the good-trial density per proposal.
    pub n_ei_candidates: usize,
    /// Model all unconditional parameters jointly.
    pub multivariate: bool,
    /// Treat running trials as bad ("above") observations so parallel workers spread out.
    pub constant_liar: bool,
    /// Weight of the prior kernel.
    pub prior_weight: f64,
    /// Local search on the acquisition after the candidate draws; `None` keeps Optuna's
    /// "best of the draws".
    pub refine: Option<Refinement>,
}

/// Local search on the acquisition `ln l(x) − ln g(x)`, started from the best EI candidate.
///
/// Each round perturbs the numeric coordinates of the incumbent with a truncated normal of
/// standard deviation `scale × range` (snapped to legal values; categoricals stay), keeps a
/// perturbation that scores higher, then multiplies `scale` by `shrink`. The maximum of
/// `l/g` sits on the good observations themselves, so a perturbation within
/// `min_distance × range` of an observation in every coordinate is rejected: a near repeat
/// costs a trial and teaches nothing. Tuned on held-out seeds (docs/autoresearch.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refinement {
    /// Rounds of local search.
    pub rounds: usize,
    /// Perturbed candidates per round.
    pub candidates: usize,
    /// First round's standard deviation, as a fraction of each numeric range.
    pub scale: f64,
    /// Factor applied to `scale` after each round.
    pub shrink: f64,
    /// Candidates this close (fraction of each range, every coordinate) to an observation
    /// are rejected.
    pub min_distance: f64,
}

impl Default for Refinement {
    fn default() -> Self {
        Self {
            rounds: 4,
            candidates: 8,
            scale: 0.05,
            shrink: 0.5,
            min_distance: 0.03,
        }
    }
}

impl Default for TpeSampler {
    fn default() -> Self {
        Self {
            refine: Some(Refinement::default()),
            ..Self::optuna()
        }
    }
}

impl TpeSampler {
    /// Optuna 5 defaults plus the acquisition refinement (same as `default()`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Exactly Optuna 5.0's `TPESampler()`: multivariate, constant liar, best of 24 draws.
    pub fn optuna() -> Self {
        Self {
            n_startup_trials: 10,
            n_ei_candidates: 24,
            multivariate: true,
            constant_liar: true,
            prior_weight: 1.0,
            refine: None,
        }
    }

    /// Independent (univariate) TPE exactly as Optuna's `TPESampler(multivariate=False)`.
    pub fn independent() -> Self {
        Self {
            multivariate: false,
            ..Self::optuna()
        }
    }
}

/// Number of "good" trials: `min(ceil(0.1 n), 25)` (single objective), `ceil(0.1 n)` (multi).
pub fn gamma(n: usize, multi_objective: bool) -> usize {
    let g = n.div_ceil(10);
    if multi_objective { g } else { g.min(25) }
}

/// Optuna's default observation weights: uniform below 25, else a ramp for the oldest.
pub fn default_weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let mut w: Vec<f64> = (0..ramp)
        .map(|i| {
            if ramp == 1 {
                1.0 / n as f64
            } else {
                1.0 / n as f64 + (1.0 - 1.0 / n as f64) * i as f64 / (ramp - 1) as f64
            }
        })
        .collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

enum Dim {
    Num {
        mus: Vec<f64>,
        sigmas: Vec<f64>,
        low: f64,
        high: f64,
        step: Option<f64>,
        /// Step of a log-scaled integer: value `v` owns the log-space bin
        /// `[ln(v − step/2), ln(v + step/2)]`, as in Optuna's discrete log-normal kernels.
        log_step: Option<f64>,
        /// Per-kernel constant of the log density: `−ln(Φ(b) − Φ(a))` (truncation), plus
        /// `−ln σ − ½ ln 2π` for continuous values.
        ln_c: Vec<f64>,
        /// `1 / σ` per kernel.
        inv_s: Vec<f64>,
        /// Precomputed terms of every value of a small integer dimension.
        table: Option<IntTable>,
    },
    Cat {
        /// Row per kernel of choice probabilities (already logs).
        ln_probs: Vec<Vec<f64>>,
        probs: Vec<Vec<f64>>,
    },
}

/// Integer dimensions with at most this many values get their kernel terms precomputed:
/// a stepped kernel costs a `ln(Φ(b) − Φ(a))` per kernel and candidate, and the refined
/// acquisition evaluates 56 candidates per proposal.
const MAX_TABLE_VALUES: i64 = 32;

/// `ln p_k(x) + ln_c[k]` of every kernel of an integer dimension, per value.
struct IntTable {
    first: f64,
    step: f64,
    log: bool,
    rows: Vec<Vec<f64>>,
}

impl IntTable {
    fn new(dist: &Distribution, kernels: &NumKernels<'_>) -> Option<Self> {
        let Distribution::Int {
            low,
            high,
            step,
            log,
        } = *dist
        else {
            return None;
        };
        let count = (high - low) / step + 1;
        if count > MAX_TABLE_VALUES {
            return None;
        }
        let values = (0..count).map(|j| (low + j * step) as f64);
        let mut rows = Vec::with_capacity(count as usize);
        for v in values {
            let xd = if log { v.ln() } else { v };
            // A row answers for the values whose terms it holds (a log value is read back
            // through `exp().round()`).
            if log && xd.exp().round() != v {
                return None;
            }
            let mut row = vec![0.0; kernels.mus.len()];
            kernels.add_terms(&mut row, xd);
            rows.push(row);
        }
        Some(Self {
            first: low as f64,
            step: step as f64,
            log,
            rows,
        })
    }

    /// The precomputed terms of `xd`, when it is one of the table's values exactly.
    fn row(&self, xd: f64) -> Option<&[f64]> {
        let v = if self.log { xd.exp().round() } else { xd };
        let j = ((v - self.first) / self.step).round();
        if !(j >= 0.0 && j < self.rows.len() as f64) || self.first + j * self.step != v {
            return None;
        }
        Some(&self.rows[j as usize])
    }
}

/// The kernels of one numeric dimension.
struct NumKernels<'a> {
    mus: &'a [f64],
    inv_s: &'a [f64],
    ln_c: &'a [f64],
    step: Option<f64>,
    log_step: Option<f64>,
}

impl NumKernels<'_> {
    /// Adds `ln p_k(xd) + ln_c[k]` of kernel k to `terms[k]`.
    fn add_terms(&self, terms: &mut [f64], xd: f64) {
        // A log integer's bin edges, from its value (internal x = ln v).
        let log_bin = self.log_step.map(|st| {
            let v = xd.exp().round();
            ((v - st / 2.0).ln(), (v + st / 2.0).ln())
        });
        for (k, t) in terms.iter_mut().enumerate() {
            let (m, is) = (self.mus[k], self.inv_s[k]);
            let lp = if let Some((lo, hi)) = log_bin {
                ln_ndtr_diff((lo - m) * is, (hi - m) * is)
            } else if let Some(st) = self.step {
                ln_ndtr_diff((xd - st / 2.0 - m) * is, (xd + st / 2.0 - m) * is)
            } else {
                let z = (xd - m) * is;
                -0.5 * z * z
            };
            *t += lp + self.ln_c[k];
        }
    }
}

/// A product-kernel Parzen mixture over a group of parameters.
struct Parzen {
    ln_w: Vec<f64>,
    w: Vec<f64>,
    dims: Vec<Dim>,
}

impl Parzen {
    /// `obs[i][d]` is observation i's internal value of dimension d.
    fn new(obs: &[Vec<f64>], weights: &[f64], dists: &[&Distribution], prior_weight: f64) -> Self {
        let n = obs.len();
        let mut w: Vec<f64> = weights.to_vec();
        w.push(prior_weight);
        let total: f64 = w.iter().sum();
        for x in &mut w {
            *x /= total;
        }
        let n_kernels = n + 1;
        let dims = dists
            .iter()
            .enumerate()
            .map(|(d, dist)| {
                if let Distribution::Categorical { choices } = dist {
                    let k = choices.len();
                    let fill = prior_weight / n_kernels as f64;
                    let mut probs = vec![vec![fill; k]; n_kernels];
                    for (i, o) in obs.iter().enumerate() {
                        let c = (o[d].round().max(0.0) as usize).min(k - 1);
                        probs[i][c] += 1.0;
                    }
                    for row in &mut probs {
                        let s: f64 = row.iter().sum();
                        for p in row.iter_mut() {
                            *p /= s;
                        }
                    }
                    let ln_probs = probs
                        .iter()
                        .map(|r| r.iter().map(|p| p.ln()).collect())
                        .collect();
                    return Dim::Cat { ln_probs, probs };
                }
                let (low, high) = dist.internal_bounds();
                let mut mus: Vec<f64> = obs.iter().map(|o| o[d]).collect();
                let mut sigmas = gap_bandwidths(&mus, low, high);
                let range = high - low;
                let minsigma = range / (100.0f64).min(1.0 + n_kernels as f64);
                for s in &mut sigmas {
                    *s = s.clamp(minsigma, range.max(minsigma));
                }
                mus.push(0.5 * (low + high));
                sigmas.push(range);
                let step = dist.internal_step();
                let log_step = match dist {
                    Distribution::Int {
                        step, log: true, ..
                    } => Some(*step as f64),
                    _ => None,
                };
                let half_ln_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
                let ln_c: Vec<f64> = mus
                    .iter()
                    .zip(&sigmas)
                    .map(|(m, s)| {
                        let norm = ln_ndtr_diff((low - m) / s, (high - m) / s);
                        if step.is_some() || log_step.is_some() {
                            -norm
                        } else {
                            -norm - s.ln() - half_ln_2pi
                        }
                    })
                    .collect();
                let inv_s: Vec<f64> = sigmas.iter().map(|s| 1.0 / s).collect();
                let table = IntTable::new(
                    dist,
                    &NumKernels {
                        mus: &mus,
                        inv_s: &inv_s,
                        ln_c: &ln_c,
                        step,
                        log_step,
                    },
                );
                Dim::Num {
                    mus,
                    sigmas,
                    low,
                    high,
                    step,
                    log_step,
                    ln_c,
                    inv_s,
                    table,
                }
            })
            .collect();
        Self {
            ln_w: w.iter().map(|x| x.ln()).collect(),
            w,
            dims,
        }
    }

    fn sample(&self, rng: &mut StdRng, dists: &[&Distribution]) -> Vec<f64> {
        let r: f64 = rng.random();
        let mut acc = 0.0;
        let mut k = self.w.len() - 1;
        for (i, w) in self.w.iter().enumerate() {
            acc += w;
            if r < acc {
                k = i;
                break;
            }
        }
        self.dims
            .iter()
            .zip(dists)
            .map(|(dim, dist)| match dim {
                Dim::Num {
                    mus,
                    sigmas,
                    low,
                    high,
                    ..
                } => {
                    let (m, s) = (mus[k], sigmas[k]);
                    let pa = ndtr((low - m) / s);
                    let pb = ndtr((high - m) / s);
                    let u = pa + rng.random::<f64>() * (pb - pa);
                    let x = (m + s * ndtri(u)).clamp(*low, *high);
                    // Snap discrete values onto their grid.
                    dist.to_internal(&dist.from_internal(x)).unwrap_or(x)
                }
                Dim::Cat { probs, .. } => {
                    let r: f64 = rng.random();
                    let mut acc = 0.0;
                    let row = &probs[k];
                    let mut c = row.len() - 1;
                    for (i, p) in row.iter().enumerate() {
                        acc += p;
                        if r < acc {
                            c = i;
                            break;
                        }
                    }
                    c as f64
                }
            })
            .collect()
    }

    /// A truncated-normal perturbation of the numeric coordinates of `x` with standard
    /// deviation `scale` times each range, snapped to legal values; categoricals stay.
    fn perturb(
        &self,
        x: &[f64],
        scale: f64,
        rng: &mut StdRng,
        dists: &[&Distribution],
    ) -> Vec<f64> {
        self.dims
            .iter()
            .zip(dists)
            .zip(x)
            .map(|((dim, dist), &xd)| match dim {
                Dim::Num { low, high, .. } => {
                    let s = scale * (high - low);
                    let pa = ndtr((low - xd) / s);
                    let pb = ndtr((high - xd) / s);
                    let y = xd + s * ndtri(pa + rng.random::<f64>() * (pb - pa));
                    // ndtri(0 or 1) is infinite: a draw at the very bound stays put.
                    let y = if y.is_finite() {
                        y.clamp(*low, *high)
                    } else {
                        xd
                    };
                    dist.to_internal(&dist.from_internal(y)).unwrap_or(y)
                }
                Dim::Cat { .. } => xd,
            })
            .collect()
    }

    /// Whether `a` and `b` are within `frac` of the range in every numeric coordinate and
    /// agree on every categorical one.
    fn near(&self, a: &[f64], b: &[f64], frac: f64) -> bool {
        self.dims
            .iter()
            .zip(a)
            .zip(b)
            .all(|((dim, &x), &y)| match dim {
                Dim::Num { low, high, .. } => (x - y).abs() <= frac * (high - low),
                Dim::Cat { .. } => x == y,
            })
    }

    fn ln_pdf(&self, x: &[f64]) -> f64 {
        let mut terms = self.ln_w.clone();
        for (dim, &xd) in self.dims.iter().zip(x) {
            match dim {
                Dim::Num {
                    mus,
                    step,
                    log_step,
                    ln_c,
                    inv_s,
                    table,
                    ..
                } => {
                    if let Some(row) = table.as_ref().and_then(|t| t.row(xd)) {
                        for (t, r) in terms.iter_mut().zip(row) {
                            *t += r;
                        }
                    } else {
                        let kernels = NumKernels {
                            mus,
                            inv_s,
                            ln_c,
                            step: *step,
                            log_step: *log_step,
                        };
                        kernels.add_terms(&mut terms, xd);
                    }
                }
                Dim::Cat { ln_probs, .. } => {
                    let c = xd.round().max(0.0) as usize;
                    for (k, t) in terms.iter_mut().enumerate() {
                        let row = &ln_probs[k];
                        *t += row[c.min(row.len() - 1)];
                    }
                }
            }
        }
        logsumexp(&terms)
    }
}

/// Optuna 5's bandwidths: the larger gap to the sorted neighbours (bounds as sentinels),
/// using only the inner gap at both ends when there are two or more observations.
fn gap_bandwidths(mus: &[f64], low: f64, high: f64) -> Vec<f64> {
    let n = mus.len();
    if n == 0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| mus[a].total_cmp(&mus[b]));
    let mut ends = Vec::with_capacity(n + 2);
    ends.push(low);
    ends.extend(idx.iter().map(|&i| mus[i]));
    ends.push(high);
    let mut sorted_sigmas: Vec<f64> = (1..=n)
        .map(|i| (ends[i] - ends[i - 1]).max(ends[i + 1] - ends[i]))
        .collect();
    if n >= 2 {
        sorted_sigmas[0] = ends[2] - ends[1];
        sorted_sigmas[n - 1] = ends[n] - ends[n - 1];
    }
    let mut out = vec![0.0; n];
    for (j, &i) in idx.iter().enumerate() {
        out[i] = sorted_sigmas[j];
    }
    out
}

/// Splits finished trials into good ("below") and bad ("above") sets, Optuna style; running
/// trials join "above" as the constant lie.
fn split<'a>(
    trials: &'a [Trial],
    dirs: &[Direction],
    constant_liar: bool,
) -> (Vec<&'a Trial>, Vec<&'a Trial>) {
    let complete: Vec<&Trial> = trials
        .iter()
        .filter(|t| {
            t.state == TrialState::Complete
                && t.values.as_ref().is_some_and(|v| v.len() == dirs.len())
        })
        .collect();
    let mut pruned: Vec<&Trial> = trials
        .iter()
        .filter(|t| t.state == TrialState::Pruned)
        .collect();
    let n = complete.len() + pruned.len();
    let multi = dirs.len() > 1;
    let n_below = gamma(n, multi);
    let dir0 = dirs.first().copied().unwrap_or_default();
    let mut ordered: Vec<&Trial> = if multi {
        let vals: Vec<&[f64]> = complete
            .iter()
            .map(|t| t.values.as_deref().unwrap_or(&[]))
            .collect();
        let ranks = nondomination_ranks(&vals, dirs);
        let mut idx: Vec<usize> = (0..complete.len()).collect();
        idx.sort_by_key(|&i| (ranks[i], complete[i].number));
        idx.into_iter().map(|i| complete[i]).collect()
    } else {
        let mut c = complete;
        c.sort_by(|a, b| {
            let la = nan_last(dir0.loss(a.value().unwrap_or(f64::NAN)));
            let lb = nan_last(dir0.loss(b.value().unwrap_or(f64::NAN)));
            la.total_cmp(&lb).then(a.number.cmp(&b.number))
        });
        c
    };
    // Pruned trials that got further rank better; then by their last value.
    pruned.sort_by(|a, b| {
        let (sa, va) = a.last_intermediate().unwrap_or((0, f64::NAN));
        let (sb, vb) = b.last_intermediate().unwrap_or((0, f64::NAN));
        sb.cmp(&sa)
            .then(nan_last(dir0.loss(va)).total_cmp(&nan_last(dir0.loss(vb))))
    });
    ordered.extend(pruned);
    let mut below: Vec<&Trial> = ordered[..n_below.min(ordered.len())].to_vec();
    let mut above: Vec<&Trial> = ordered[n_below.min(ordered.len())..].to_vec();
    if constant_liar {
        above.extend(trials.iter().filter(|t| t.state == TrialState::Running));
    }
    below.sort_by_key(|t| t.number);
    above.sort_by_key(|t| t.number);
    (below, above)
}

fn nan_last(x: f64) -> f64 {
    if x.is_nan() { f64::INFINITY } else { x }
}

impl TpeSampler {
    /// Samples a group of parameters jointly from the below/above split; returns the
    /// internal values and their acquisition `ln l − ln g`.
    fn sample_group(
        &self,
        group: &[&Param],
        below: &[&Trial],
        above: &[&Trial],
        multi: bool,
        rng: &mut StdRng,
    ) -> (Vec<f64>, f64) {
        let dists: Vec<&Distribution> = group.iter().map(|p| &p.dist).collect();
        let observe = |ts: &[&Trial]| -> Vec<Vec<f64>> {
            ts.iter()
                .filter_map(|t| {
                    group
                        .iter()
                        .map(|p| t.params.get(&p.name).and_then(|v| p.dist.to_internal(v)))
                        .collect::<Option<Vec<f64>>>()
                })
                .collect()
        };
        let ob = observe(below);
        let oa = observe(above);
        let wb = if multi {
            vec![1.0; ob.len()]
        } else {
            default_weights(ob.len())
        };
        let wa = default_weights(oa.len());
        let l = Parzen::new(&ob, &wb, &dists, self.prior_weight);
        let g = Parzen::new(&oa, &wa, &dists, self.prior_weight);
        let mut best = None;
        let mut best_score = f64::NEG_INFINITY;
        for _ in 0..self.n_ei_candidates.max(1) {
            let x = l.sample(rng, &dists);
            let score = l.ln_pdf(&x) - g.ln_pdf(&x);
            if best.is_none() || score > best_score {
                best_score = score;
                best = Some(x);
            }
        }
        let mut best = best.unwrap_or_default();
        if let Some(r) = self.refine {
            let mut scale = r.scale;
            for _ in 0..r.rounds {
                for _ in 0..r.candidates {
                    let y = l.perturb(&best, scale, rng, &dists);
                    if ob.iter().chain(&oa).any(|o| l.near(o, &y, r.min_distance)) {
                        continue;
                    }
                    let score = l.ln_pdf(&y) - g.ln_pdf(&y);
                    if score > best_score {
                        best_score = score;
                        best = y;
                    }
                }
                scale *= r.shrink;
            }
        }
        (best, best_score)
    }
}

impl TpeSampler {
    /// Keeps the values in `fixed` and samples every other active parameter one by one with
    /// the univariate model (how the multivariate TPE treats conditional parameters); random
    /// before `n_startup_trials` finished trials. Used by samplers that model only the
    /// unconditional parameters themselves.
    pub(crate) fn sample_rest(&self, ctx: &mut SampleContext<'_>, fixed: &Params) -> Params {
        let finished = ctx
            .trials
            .iter()
            .filter(|t| matches!(t.state, TrialState::Complete | TrialState::Pruned))
            .count();
        let startup = finished < self.n_startup_trials;
        let multi = ctx.directions.len() > 1;
        let (below, above) = split(ctx.trials, ctx.directions, self.constant_liar);
        let rng = &mut *ctx.rng;
        ctx.space.sample_with(|p, _| {
            if let Some(v) = fixed.get(&p.name) {
                return v.clone();
            }
            if startup {
                return p.dist.from_unit(rng.random::<f64>());
            }
            let (x, _) = self.sample_group(&[p], &below, &above, multi, rng);
            p.dist.from_internal(x[0])
        })
    }
}

impl Sampler for TpeSampler {
    fn sample(&mut self, ctx: &mut SampleContext<'_>) -> Result<Params> {
        let finished = ctx
            .trials
            .iter()
            .filter(|t| matches!(t.state, TrialState::Complete | TrialState::Pruned))
            .count();
        if finished < self.n_startup_trials {
            return Ok(sample_random(ctx.space, ctx.rng));
        }
        let multi = ctx.directions.len() > 1;
        let (below, above) = split(ctx.trials, ctx.directions, self.constant_liar);
        let space: &SearchSpace = ctx.space;
        let mut joint: Params = Params::new();
        if self.multivariate {
            let group: Vec<&Param> = space
                .params
                .iter()
                .filter(|p| p.condition.is_none())
                .collect();
            if !group.is_empty() {
                let (x, _) = self.sample_group(&group, &below, &above, multi, ctx.rng);
                for (p, xi) in group.iter().zip(x) {
                    joint.insert(p.name.clone(), p.dist.from_internal(xi));
                }
            }
        }
        let rng = &mut *ctx.rng;
        Ok(space.sample_with(|p, _| {
            if let Some(v) = joint.get(&p.name) {
                return v.clone();
            }
            let (x, _) = self.sample_group(&[p], &below, &above, multi, rng);
            p.dist.from_internal(x[0])
        }))
    }

    fn name(&self) -> String {
        if self.multivariate {
            "tpe".into()
        } else {
            "tpe-independent".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optuna_gamma_and_weights() {
        assert_eq!(gamma(10, false), 1);
        assert_eq!(gamma(11, false), 2);
        assert_eq!(gamma(1000, false), 25);
        assert_eq!(gamma(1000, true), 100);
        assert_eq!(default_weights(3), vec![1.0; 3]);
        let w = default_weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-12);
        assert!((w[4] - 1.0).abs() < 1e-12 && w[29] == 1.0);
    }

    #[test]
    fn bandwidths_follow_gap_rule() {
        let s = gap_bandwidths(&[0.5], 0.0, 1.0);
        assert_eq!(s, vec![0.5]);
        let s = gap_bandwidths(&[0.2, 0.9, 0.5], 0.0, 1.0);
        // 0.2: inner gap only (0.3); 0.5: max(0.3, 0.4); 0.9: inner gap only (0.4).
        assert!((s[0] - 0.3).abs() < 1e-12 && (s[2] - 0.4).abs() < 1e-12);
        assert!((s[1] - 0.4).abs() < 1e-12);
    }

    /// The mixture density equals Optuna 5.0.0's `_ParzenEstimator.log_pdf` on the same
    /// observations (continuous, log, int and categorical dimensions). Expected values from
    /// optuna 5.0.0 with `prior_weight=1, consider_magic_clip=True, consider_endpoints=False,
    /// weights=default_weights`; observations a=[.1,.35,.8,.82], b=[.01,.5,.002,.1] (log
    /// float in [1e-3, 1]), c=[1,4,4,9] (int 0..=10), d=[x,z,z,y] (choices x,y,z).
    #[test]
    fn parzen_matches_optuna() {
        let dists = [
            unit_float(),
            Distribution::Float {
                low: 1e-3,
                high: 1.0,
                log: true,
                step: None,
            },
            Distribution::Int {
                low: 0,
                high: 10,
                step: 1,
                log: false,
            },
            Distribution::Categorical {
                choices: vec![
                    crate::ParamValue::Str("x".into()),
                    crate::ParamValue::Str("y".into()),
                    crate::ParamValue::Str("z".into()),
                ],
            },
        ];
        let d: Vec<&Distribution> = dists.iter().collect();
        let obs = [
            [0.1, 0.01, 1.0, 0.0],
            [0.35, 0.5, 4.0, 2.0],
            [0.8, 0.002, 4.0, 2.0],
            [0.82, 0.1, 9.0, 1.0],
        ];
        let internal = |row: &[f64; 4]| vec![row[0], row[1].ln(), row[2], row[3]];
        let o: Vec<Vec<f64>> = obs.iter().map(internal).collect();
        let p = Parzen::new(&o, &default_weights(4), &d, 1.0);
        let pts = [
            [0.0, 0.001, 0.0, 0.0],
            [0.3, 0.05, 4.0, 1.0],
            [0.81, 0.3, 7.0, 2.0],
            [1.0, 1.0, 10.0, 2.0],
        ];
        let optuna = [
            -4.739_239_776_147_767,
            -5.959_815_451_307_353,
            -5.109_038_274_488_344,
            -6.316_761_915_040_069,
        ];
        let pts: Vec<Vec<f64>> = pts.iter().map(internal).collect();
        assert_ln_pdf_matches(&p, &pts, &optuna);
    }

    /// A linear float on [0, 1], the first dimension of both Optuna oracle tests.
    fn unit_float() -> Distribution {
        Distribution::Float {
            low: 0.0,
            high: 1.0,
            log: false,
            step: None,
        }
    }

    /// `p.ln_pdf` at each internal point equals the value optuna 5.0.0 computed (to 1e-6).
    fn assert_ln_pdf_matches(p: &Parzen, internal_points: &[Vec<f64>], optuna: &[f64]) {
        assert_eq!(internal_points.len(), optuna.len());
        for (x, want) in internal_points.iter().zip(optuna) {
            let got = p.ln_pdf(x);
            assert!(
                (got - want).abs() < 1e-6,
                "{x:?}: ours {got}, optuna {want}"
            );
        }
    }

    /// Log-scaled integers get Optuna's discrete log-normal kernels (bin mass in log space).
    /// Expected values from optuna 5.0.0's `_ParzenEstimator.log_pdf` (same parameters as
    /// above, multivariate) with a = [.1, .35, .8, .82] and n = [1, 3, 8, 40] (int 1..=64, log).
    #[test]
    fn parzen_log_int_matches_optuna() {
        let dists = [
            unit_float(),
            Distribution::Int {
                low: 1,
                high: 64,
                step: 1,
                log: true,
            },
        ];
        let d: Vec<&Distribution> = dists.iter().collect();
        let o: Vec<Vec<f64>> = [[0.1, 1.0], [0.35, 3.0], [0.8, 8.0], [0.82, 40.0]]
            .iter()
            .map(|r| vec![r[0], f64::ln(r[1])])
            .collect();
        let p = Parzen::new(&o, &default_weights(4), &d, 1.0);
        let pts = [[0.0, 1.0], [0.3, 2.0], [0.81, 5.0], [1.0, 64.0]];
        let optuna = [
            -1.136_280_275_632_583_2,
            -1.859_368_330_959_045_9,
            -2.917_282_221_438_332_7,
            -5.832_785_682_605_523_5,
        ];
        let pts: Vec<Vec<f64>> = pts.iter().map(|x| vec![x[0], f64::ln(x[1])]).collect();
        assert_ln_pdf_matches(&p, &pts, &optuna);
        // The bins form a distribution over 1..=64.
        let single = Parzen::new(&[vec![3f64.ln()]], &[1.0], &d[1..], 1.0);
        let total: f64 = (1..=64)
            .map(|v| single.ln_pdf(&[f64::from(v).ln()]).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
    }

    /// The precomputed integer terms are bit-identical to computing them per point, for
    /// stepped and log integers, and points off the grid fall back to the direct path.
    #[test]
    fn integer_tables_equal_direct_terms() {
        let dists = [
            Distribution::Int {
                low: 0,
                high: 30,
                step: 3,
                log: false,
            },
            Distribution::Int {
                low: 1,
                high: 32,
                step: 1,
                log: true,
            },
        ];
        let d: Vec<&Distribution> = dists.iter().collect();
        let obs: Vec<Vec<f64>> = [[3.0, 2.0], [12.0, 5.0], [12.0, 30.0], [27.0, 1.0]]
            .iter()
            .map(|r| vec![r[0], f64::ln(r[1])])
            .collect();
        let p = Parzen::new(&obs, &default_weights(4), &d, 1.0);
        for dim in &p.dims {
            let Dim::Num {
                mus,
                inv_s,
                ln_c,
                step,
                log_step,
                table,
                ..
            } = dim
            else {
                panic!("numeric dimension");
            };
            let table = table.as_ref().expect("a table for a small integer range");
            let kernels = NumKernels {
                mus,
                inv_s,
                ln_c,
                step: *step,
                log_step: *log_step,
            };
            let points: Vec<f64> = if log_step.is_some() {
                (1..=32).map(|v| f64::from(v).ln()).collect()
            } else {
                (0..=10).map(|j| f64::from(3 * j)).collect()
            };
            for xd in points {
                let mut direct = vec![0.0; mus.len()];
                kernels.add_terms(&mut direct, xd);
                assert_eq!(table.row(xd), Some(direct.as_slice()), "{xd}");
            }
            if log_step.is_none() {
                assert_eq!(table.row(4.0), None, "off the step grid");
                assert_eq!(table.row(33.0), None, "above the range");
            }
        }
    }

    #[test]
    fn parzen_density_integrates_to_one() {
        let d = Distribution::Float {
            low: 0.0,
            high: 2.0,
            log: false,
            step: None,
        };
        let p = Parzen::new(&[vec![0.3], vec![1.7]], &[1.0, 1.0], &[&d], 1.0);
        let n = 20000;
        let h = 2.0 / n as f64;
        let total: f64 = (0..n)
            .map(|i| p.ln_pdf(&[(i as f64 + 0.5) * h]).exp() * h)
            .sum();
        assert!((total - 1.0).abs() < 1e-4, "{total}");
        let di = Distribution::Int {
            low: 0,
            high: 5,
            step: 1,
            log: false,
        };
        let p = Parzen::new(&[vec![2.0]], &[1.0], &[&di], 1.0);
        let total: f64 = (0..=5).map(|i| p.ln_pdf(&[f64::from(i)]).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
    }

    /// A finished trial with one objective value.
    fn complete(number: u64, params: Params, value: f64) -> Trial {
        let mut t = Trial::new(number, params, "w");
        t.state = TrialState::Complete;
        t.values = Some(vec![value]);
        t
    }

    /// One proposal of `s` after `trials`, with the RNG a study seeded `seed` would use.
    fn propose(s: &mut TpeSampler, space: &SearchSpace, trials: &[Trial], seed: u64) -> Params {
        let number = trials.len() as u64;
        let mut rng = super::super::trial_rng(seed, number);
        let rng_of = |n| super::super::trial_rng(seed, n);
        let mut ctx = SampleContext {
            space,
            trials,
            directions: &[Direction::Minimize],
            number,
            rng: &mut rng,
            rng_of: &rng_of,
        };
        s.sample(&mut ctx).expect("a proposal")
    }

    /// Every kind of parameter: linear, log and stepped floats, stepped and log integers,
    /// a categorical.
    fn mixed_space() -> SearchSpace {
        SearchSpace::new()
            .float("lin", -2.0, 3.0, false)
            .float("lg", 1e-4, 1.0, true)
            .int("n", 0, 20, 3, false)
            .int("ln", 1, 256, 1, true)
            .categorical(
                "c",
                vec![
                    crate::ParamValue::Str("a".into()),
                    crate::ParamValue::Int(2),
                    crate::ParamValue::Bool(true),
                ],
            )
            .float("st", 0.0, 1.0, false)
    }

    /// A history of `n` random trials on `space` with a smooth objective.
    fn history(space: &SearchSpace, n: usize, seed: u64) -> Vec<Trial> {
        let mut rng = super::super::trial_rng(seed, 1 << 40);
        (0..n as u64)
            .map(|i| {
                let p = sample_random(space, &mut rng);
                let v: f64 = space
                    .params
                    .iter()
                    .map(|q| (q.dist.to_unit(&p[&q.name]).unwrap_or(0.5) - 0.3).powi(2))
                    .sum();
                complete(i, p, v)
            })
            .collect()
    }

    /// The acquisition of a proposal under the model `history` gives (one joint group).
    fn acquisition(space: &SearchSpace, trials: &[Trial], x: &Params) -> f64 {
        let group: Vec<&Param> = space.params.iter().collect();
        let dists: Vec<&Distribution> = group.iter().map(|p| &p.dist).collect();
        let (below, above) = split(trials, &[Direction::Minimize], true);
        let obs = |ts: &[&Trial]| -> Vec<Vec<f64>> {
            ts.iter()
                .map(|t| {
                    group
                        .iter()
                        .map(|p| p.dist.to_internal(&t.params[&p.name]).expect("legal"))
                        .collect()
                })
                .collect()
        };
        let (ob, oa) = (obs(&below), obs(&above));
        let l = Parzen::new(&ob, &default_weights(ob.len()), &dists, 1.0);
        let g = Parzen::new(&oa, &default_weights(oa.len()), &dists, 1.0);
        let xi: Vec<f64> = group
            .iter()
            .map(|p| p.dist.to_internal(&x[&p.name]).expect("legal"))
            .collect();
        l.ln_pdf(&xi) - g.ln_pdf(&xi)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Refined proposals are legal values of every kind of parameter (on the step grid,
        /// inside the bounds, a real choice), even with perturbations wider than the range,
        /// and the same seed gives the same proposal.
        #[test]
        fn refined_proposals_are_legal_and_deterministic(
            seed in 0u64..1000,
            n in 11usize..40,
            scale in 0.01f64..3.0,
            multivariate in proptest::bool::ANY,
        ) {
            let space = mixed_space();
            let trials = history(&space, n, seed);
            let mut s = TpeSampler {
                multivariate,
                refine: Some(Refinement { rounds: 5, candidates: 6, scale, shrink: 0.7, min_distance: 0.0 }),
                ..TpeSampler::default()
            };
            let a = propose(&mut s, &space, &trials, seed);
            let b = propose(&mut s.clone(), &space, &trials, seed);
            proptest::prop_assert_eq!(&a, &b);
            proptest::prop_assert_eq!(a.len(), space.params.len());
            for p in &space.params {
                let v = &a[&p.name];
                proptest::prop_assert!(p.dist.contains(v), "{} = {:?}", p.name, v);
                let back = p.dist.from_internal(p.dist.to_internal(v).expect("encodes"));
                proptest::prop_assert_eq!(&back, v);
            }
        }
    }

    /// Starting from the same best-of-24 draw (same RNG), the refinement never lowers the
    /// acquisition and raises it in most proposals.
    #[test]
    fn refinement_raises_the_acquisition() {
        let space = mixed_space();
        let mut raised = 0;
        for seed in 0..30 {
            let trials = history(&space, 40, seed);
            let plain = propose(&mut TpeSampler::optuna(), &space, &trials, seed);
            let refined = propose(&mut TpeSampler::default(), &space, &trials, seed);
            let (a0, a1) = (
                acquisition(&space, &trials, &plain),
                acquisition(&space, &trials, &refined),
            );
            assert!(a1 >= a0 - 1e-9, "seed {seed}: {a1} < {a0}");
            raised += usize::from(a1 > a0 + 1e-9);
        }
        assert!(raised >= 20, "raised in {raised} of 30");
    }

    /// No refined proposal nearly repeats an observation: within `min_distance` of the
    /// range in every numeric coordinate with the same category.
    #[test]
    fn refinement_skips_near_repeats() {
        let space = SearchSpace::new()
            .float("x", 0.0, 1.0, false)
            .float("y", -5.0, 5.0, false);
        let r = Refinement::default();
        let mut optuna_repeats = 0;
        for seed in 0..40 {
            let trials = history(&space, 30, seed);
            let near = |p: &Params| {
                trials.iter().any(|t| {
                    let dx = (t.params["x"].as_f64().unwrap() - p["x"].as_f64().unwrap()).abs();
                    let dy = (t.params["y"].as_f64().unwrap() - p["y"].as_f64().unwrap()).abs();
                    dx <= r.min_distance && dy <= r.min_distance * 10.0
                })
            };
            let plain = propose(&mut TpeSampler::optuna(), &space, &trials, seed);
            let refined = propose(&mut TpeSampler::default(), &space, &trials, seed);
            optuna_repeats += usize::from(near(&plain));
            // A near repeat can only come from the unrefined draw itself.
            assert!(
                !near(&refined) || refined == plain,
                "seed {seed}: {refined:?}"
            );
        }
        eprintln!("best-of-24 draws that nearly repeat an observation: {optuna_repeats} of 40");
    }

    /// Constant liar still steers the refined sampler away from a running trial placed at
    /// the best region: with the lie, fewer proposals land next to it.
    #[test]
    fn constant_liar_works_with_refinement() {
        let space = SearchSpace::new().float("x", 0.0, 1.0, false);
        let mut trials: Vec<Trial> = (0..30u64)
            .map(|i| {
                let x = (i as f64 + 0.5) / 30.0;
                let mut p = Params::new();
                p.insert("x".into(), crate::ParamValue::Float(x));
                complete(i, p, (x - 0.3).powi(2))
            })
            .collect();
        for (k, x) in [0.29, 0.3, 0.31].into_iter().enumerate() {
            let mut p = Params::new();
            p.insert("x".into(), crate::ParamValue::Float(x));
            trials.push(Trial::new(30 + k as u64, p, "other"));
        }
        let close = |liar: bool| -> usize {
            let mut s = TpeSampler {
                constant_liar: liar,
                ..TpeSampler::default()
            };
            (0..200)
                .filter(|&seed| {
                    let x = propose(&mut s, &space, &trials, seed)["x"]
                        .as_f64()
                        .unwrap();
                    (x - 0.3).abs() < 0.04
                })
                .count()
        };
        let (with_lie, without) = (close(true), close(false));
        eprintln!(
            "proposals within 0.04 of the running trials: liar {with_lie}, no liar {without}"
        );
        assert!(with_lie * 2 < without, "liar {with_lie}, no liar {without}");
    }
}
