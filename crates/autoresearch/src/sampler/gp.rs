//! Gaussian-process Bayesian optimisation, after Optuna 5's `GPSampler`.
//!
//! The model: inputs in the unit cube (each numeric parameter's internal range, so log
//! parameters are in log space and discrete ones own equal cells, as in Optuna), categoricals
//! as their index with a Hamming distance; a Matérn 5/2 kernel with one length scale per
//! dimension (ARD), a kernel scale and a noise variance, fitted by maximising the marginal
//! likelihood plus Optuna's priors (L-BFGS on log parameters from the previous fit, as Optuna);
//! objective values standardised.
//!
//! The acquisition is log expected improvement over the best observed value, evaluated in a
//! form that stays finite and accurate however far below the incumbent a point is
//! ([`log_h`]). It is maximised the way Optuna does: 2048 quasi-random candidates, then
//! local searches from the best candidate, from candidates drawn with probability
//! `∝ exp(acquisition)`, and from the best observed point; continuous coordinates by projected
//! L-BFGS in length-scale units, discrete and categorical ones by exhaustive or line search.
//!
//! Running trials (threads or other processes on the same storage) enter as *Kriging
//! believer* observations: their posterior mean is taken as their value, so the variance
//! there collapses and the next proposal moves elsewhere; a proposal that repeats any earlier
//! trial's parameters is never returned. Conditional parameters are sampled by the TPE's
//! univariate model, as [`TpeSampler`] samples them; multi-objective studies are delegated to
//! the TPE. Each kernel fit starts from the previous fit's hyperparameters (Optuna's warm
//! start), which every GP trial records in its user attribute `sampler` (`gp_kernel`): the
//! sampler keeps no state of its own, so a resumed study makes exactly the proposals of an
//! uninterrupted one.

// Index loops read like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use nalgebra::DMatrix;
use rand::RngExt;

use super::{QmcSampler, SampleContext, Sampler, TpeSampler, sample_random};
use crate::error::Result;
use crate::space::{Distribution, Param, ParamValue, Params};
use crate::trial::{Trial, TrialState};

/// How the first trials of a GP study are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Startup {
    /// Uniform random (Optuna's choice).
    #[default]
    Random,
    /// A scrambled Halton sequence, seeded from the study seed.
    Qmc,
}

/// Gaussian-process sampler (Matérn 5/2 ARD, marginal likelihood, log EI).
#[derive(Debug, Clone)]
pub struct GpSampler {
    /// Complete trials before the model is used.
    pub n_startup_trials: usize,
    /// How startup trials are drawn.
    pub startup: Startup,
    /// Quasi-random candidates scored before the local searches.
    pub n_candidates: usize,
    /// Local searches of the acquisition (the best candidate, the best observation and
    /// `n_local_search - 2` candidates drawn by acquisition value).
    pub n_local_search: usize,
    /// Fix the noise variance at its minimum (the objective has no noise).
    pub deterministic_objective: bool,
    /// Start each kernel fit from the latest recorded fit (Optuna's warm start); the fitted
    /// parameters are recorded in each GP trial's user attribute `sampler` (`gp_kernel`).
    pub warm_start: bool,
    /// The model for conditional parameters and multi-objective studies.
    pub tpe: TpeSampler,
    /// What the last proposal recorded (`{"sampler": "gp", "gp_kernel": [...]}`, written by
    /// `sample`; the study stores it as the trial's user attribute `sampler`).
    pub decision: Option<serde_json::Value>,
}

impl Default for GpSampler {
    fn default() -> Self {
        Self {
            n_startup_trials: 10,
            startup: Startup::Random,
            n_candidates: 2048,
            n_local_search: 10,
            deterministic_objective: false,
            warm_start: true,
            tpe: TpeSampler::default(),
            decision: None,
        }
    }
}

impl GpSampler {
    /// Optuna 5's `GPSampler()` settings.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Optuna's floor on the noise variance.
const MIN_NOISE: f64 = 1e-6;
/// Added to the posterior variance inside the acquisition (Optuna's stabilising noise).
const STABILIZING_NOISE: f64 = 1e-12;
/// Discrete dimensions with at most this many values are searched exhaustively.
const EXHAUSTIVE: usize = 16;
/// Discrete dimensions with more values than this are optimised as continuous and snapped.
const MAX_GRID: usize = 4096;

#[derive(Debug, Clone)]
enum Kind {
    Continuous,
    /// Normalised values of every grid point, ascending.
    Discrete(Vec<f64>),
    Categorical(usize),
}

/// Maps the GP's parameters to and from the unit cube.
struct Encoder<'a> {
    params: Vec<&'a Param>,
    kinds: Vec<Kind>,
}

impl<'a> Encoder<'a> {
    /// The encoder of `space`'s unconditional parameters: the ones the GP models jointly
    /// (conditional ones go to the TPE's univariate model).
    fn unconditional(space: &'a crate::space::SearchSpace) -> Self {
        Self::new(
            space
                .params
                .iter()
                .filter(|p| p.condition.is_none())
                .collect(),
        )
    }

    fn new(params: Vec<&'a Param>) -> Self {
        let kinds = params
            .iter()
            .map(|p| match &p.dist {
                Distribution::Categorical { choices } => Kind::Categorical(choices.len()),
                d => match grid_values(d) {
                    Some(vals) => {
                        let mut g: Vec<f64> = vals.iter().filter_map(|v| encode(d, v)).collect();
                        g.sort_by(f64::total_cmp);
                        g.dedup();
                        Kind::Discrete(g)
                    }
                    None => Kind::Continuous,
                },
            })
            .collect();
        Self { params, kinds }
    }

    fn dim(&self) -> usize {
        self.params.len()
    }

    fn is_cat(&self) -> Vec<bool> {
        self.kinds
            .iter()
            .map(|k| matches!(k, Kind::Categorical(_)))
            .collect()
    }

    /// The trial's point, when every GP parameter is present.
    fn encode_trial(&self, t: &Trial) -> Option<Vec<f64>> {
        self.params
            .iter()
            .map(|p| t.params.get(&p.name).and_then(|v| encode(&p.dist, v)))
            .collect()
    }

    fn decode(&self, x: &[f64]) -> Params {
        self.params
            .iter()
            .zip(x)
            .map(|(p, &xi)| (p.name.clone(), decode(&p.dist, xi)))
            .collect()
    }

    /// Snaps discrete coordinates onto their grid, in place.
    fn snap(&self, x: &mut [f64]) {
        for (k, xi) in self.kinds.iter().zip(x.iter_mut()) {
            match k {
                Kind::Continuous => *xi = xi.clamp(0.0, 1.0),
                Kind::Discrete(g) => *xi = g[nearest(g, *xi)],
                Kind::Categorical(n) => *xi = xi.round().clamp(0.0, (*n - 1) as f64),
            }
        }
    }

    /// A point from unit coordinates `u` (categoricals by cell, discrete values snapped).
    fn point_of_unit(&self, u: &[f64]) -> Vec<f64> {
        let mut x: Vec<f64> = self
            .kinds
            .iter()
            .zip(u)
            .map(|(k, &ui)| match k {
                Kind::Categorical(n) => ((ui * *n as f64).floor()).min((*n - 1) as f64),
                _ => ui,
            })
            .collect();
        self.snap(&mut x);
        x
    }
}

/// Every legal value of a discrete numeric distribution (None when continuous or huge).
fn grid_values(d: &Distribution) -> Option<Vec<ParamValue>> {
    match *d {
        Distribution::Float {
            low,
            high,
            step: Some(s),
            ..
        } => {
            let count = ((high - low) / s + 1e-9).floor() as usize + 1;
            (count <= MAX_GRID).then(|| {
                (0..count)
                    .map(|k| ParamValue::Float(low + k as f64 * s))
                    .collect()
            })
        }
        Distribution::Int {
            low, high, step, ..
        } => {
            let count = ((high - low) / step + 1) as usize;
            (count <= MAX_GRID).then(|| {
                (0..count as i64)
                    .map(|k| ParamValue::Int(low + k * step))
                    .collect()
            })
        }
        _ => None,
    }
}

fn encode(d: &Distribution, v: &ParamValue) -> Option<f64> {
    let x = d.to_internal(v)?;
    if d.is_categorical() {
        return Some(x);
    }
    let (lo, hi) = d.internal_bounds();
    Some(if hi > lo { (x - lo) / (hi - lo) } else { 0.5 })
}

fn decode(d: &Distribution, x: f64) -> ParamValue {
    if d.is_categorical() {
        return d.from_internal(x);
    }
    let (lo, hi) = d.internal_bounds();
    d.from_internal(lo + x.clamp(0.0, 1.0) * (hi - lo))
}

fn nearest(grid: &[f64], x: f64) -> usize {
    let i = grid.partition_point(|&g| g < x);
    if i == 0 {
        0
    } else if i >= grid.len() {
        grid.len() - 1
    } else if (x - grid[i - 1]).abs() <= (grid[i] - x).abs() {
        i - 1
    } else {
        i
    }
}

// ---------------------------------------------------------------------------------------
// Matérn 5/2 and the GP.

/// Matérn 5/2 as a function of the squared scaled distance, and its derivative in it.
fn matern52(d2: f64) -> (f64, f64) {
    let r = (5.0 * d2).sqrt();
    let e = (-r).exp();
    (e * (5.0 / 3.0 * d2 + r + 1.0), -5.0 / 6.0 * (r + 1.0) * e)
}

/// Fitted kernel hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    /// Inverse squared length scale per dimension.
    pub inv_sq_lengthscales: Vec<f64>,
    /// Kernel (signal) variance.
    pub scale: f64,
    /// Noise variance.
    pub noise: f64,
}

/// A GP posterior over fixed data and kernel: Matérn 5/2 ARD, Hamming distance on the
/// categorical dimensions, zero prior mean (the data are standardised by the caller).
#[derive(Debug, Clone)]
pub struct Gp {
    x: Vec<Vec<f64>>,
    cat: Vec<bool>,
    kernel: Kernel,
    /// Row-major lower Cholesky factor of `K + noise I`.
    l: Vec<f64>,
    alpha: Vec<f64>,
    n: usize,
}

fn sq_dist(a: &[f64], b: &[f64], cat: &[bool], rho: &[f64]) -> f64 {
    let mut s = 0.0;
    for j in 0..a.len() {
        let d = if cat[j] {
            f64::from(u8::from(a[j] != b[j]))
        } else {
            (a[j] - b[j]) * (a[j] - b[j])
        };
        s += rho[j] * d;
    }
    s
}

impl Gp {
    /// The posterior given training inputs `x`, targets `y`, categorical flags and a kernel.
    /// Returns `None` when the covariance is not positive definite.
    pub fn new(x: Vec<Vec<f64>>, y: &[f64], cat: Vec<bool>, kernel: Kernel) -> Option<Self> {
        let n = x.len();
        let c = DMatrix::from_fn(n, n, |a, b| {
            let k =
                kernel.scale * matern52(sq_dist(&x[a], &x[b], &cat, &kernel.inv_sq_lengthscales)).0;
            if a == b { k + kernel.noise } else { k }
        });
        let chol = c.cholesky()?;
        let lm = chol.l();
        let alpha = chol.solve(&nalgebra::DVector::from_column_slice(y));
        let mut l = vec![0.0; n * n];
        for a in 0..n {
            for b in 0..=a {
                l[a * n + b] = lm[(a, b)];
            }
        }
        Some(Self {
            x,
            cat,
            kernel,
            l,
            alpha: alpha.as_slice().to_vec(),
            n,
        })
    }

    /// The kernel.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    fn kvec(&self, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let rho = &self.kernel.inv_sq_lengthscales;
        self.x
            .iter()
            .map(|xi| {
                let (m, dm) = matern52(sq_dist(x, xi, &self.cat, rho));
                (self.kernel.scale * m, self.kernel.scale * dm)
            })
            .unzip()
    }

    /// `L⁻¹ k` by forward substitution.
    fn forward(&self, k: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut w = vec![0.0; n];
        for a in 0..n {
            let row = &self.l[a * n..a * n + a];
            let s: f64 = row.iter().zip(&w).map(|(l, w)| l * w).sum();
            w[a] = (k[a] - s) / self.l[a * n + a];
        }
        w
    }

    /// `L⁻ᵀ w` by back substitution.
    fn backward(&self, w: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut v = w.to_vec();
        for a in (0..n).rev() {
            v[a] /= self.l[a * n + a];
            let va = v[a];
            for b in 0..a {
                v[b] -= self.l[a * n + b] * va;
            }
        }
        v
    }

    /// Posterior mean and variance of `f(x)` (noise excluded).
    pub fn posterior(&self, x: &[f64]) -> (f64, f64) {
        let (k, _) = self.kvec(x);
        let mean: f64 = k.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let w = self.forward(&k);
        let var = self.kernel.scale - w.iter().map(|v| v * v).sum::<f64>();
        (mean, var.max(0.0))
    }

    /// Posterior mean and variance with their gradients in the coordinates `dims`.
    fn posterior_grad(&self, x: &[f64], dims: &[usize]) -> (f64, f64, Vec<f64>, Vec<f64>) {
        let (k, dk) = self.kvec(x);
        let mean: f64 = k.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let w = self.forward(&k);
        let var = self.kernel.scale - w.iter().map(|v| v * v).sum::<f64>();
        let v = self.backward(&w);
        let rho = &self.kernel.inv_sq_lengthscales;
        let mut gm = vec![0.0; dims.len()];
        let mut gv = vec![0.0; dims.len()];
        for (i, xi) in self.x.iter().enumerate() {
            for (o, &j) in dims.iter().enumerate() {
                // ∂k_i/∂x_j = s M'(d²) · 2 ρ_j (x_j − X_ij)
                let dkij = dk[i] * 2.0 * rho[j] * (x[j] - xi[j]);
                gm[o] += self.alpha[i] * dkij;
                gv[o] -= 2.0 * v[i] * dkij;
            }
        }
        if var <= 0.0 {
            gv.fill(0.0);
        }
        (mean, var.max(0.0), gm, gv)
    }
}

/// Negative log marginal likelihood minus Optuna's log prior, and its gradient, in the raw
/// parameters `[ln ρ_1..ln ρ_d, ln scale, ln(noise − MIN_NOISE)]`.
struct Mll<'a> {
    sqd: Vec<Vec<f64>>,
    y: &'a [f64],
    n: usize,
    d: usize,
    deterministic: bool,
}

impl<'a> Mll<'a> {
    fn new(x: &[Vec<f64>], y: &'a [f64], cat: &[bool], deterministic: bool) -> Self {
        let n = x.len();
        let d = cat.len();
        let mut sqd = vec![vec![0.0; n * n]; d];
        for j in 0..d {
            for a in 0..n {
                for b in 0..n {
                    let diff = x[a][j] - x[b][j];
                    sqd[j][a * n + b] = if cat[j] {
                        f64::from(u8::from(diff != 0.0))
                    } else {
                        diff * diff
                    };
                }
            }
        }
        Self {
            sqd,
            y,
            n,
            d,
            deterministic,
        }
    }

    fn kernel(&self, raw: &[f64]) -> Kernel {
        Kernel {
            inv_sq_lengthscales: raw[..self.d].iter().map(|r| r.exp()).collect(),
            scale: raw[self.d].exp(),
            noise: if self.deterministic {
                MIN_NOISE
            } else {
                MIN_NOISE + raw[self.d + 1].exp()
            },
        }
    }

    fn eval(&self, raw: &[f64], grad: &mut [f64]) -> f64 {
        let (n, d) = (self.n, self.d);
        let k = self.kernel(raw);
        let mut d2 = vec![0.0; n * n];
        for j in 0..d {
            let rho = k.inv_sq_lengthscales[j];
            for (o, s) in d2.iter_mut().zip(&self.sqd[j]) {
                *o += rho * s;
            }
        }
        let mut m = vec![0.0; n * n];
        let mut dm = vec![0.0; n * n];
        for i in 0..n * n {
            let (a, b) = matern52(d2[i]);
            m[i] = k.scale * a;
            dm[i] = k.scale * b;
        }
        let c = DMatrix::from_fn(n, n, |a, b| {
            if a == b {
                m[a * n + b] + k.noise
            } else {
                m[a * n + b]
            }
        });
        let Some(chol) = c.cholesky() else {
            grad.fill(0.0);
            return f64::INFINITY;
        };
        let l = chol.l();
        let logdet: f64 = (0..n).map(|i| l[(i, i)].ln()).sum();
        let yv = nalgebra::DVector::from_column_slice(self.y);
        let alpha = chol.solve(&yv);
        let quad = yv.dot(&alpha);
        let cinv = spd_inverse(&l);
        // W = α αᵀ − C⁻¹; d(−MLL)/dθ = −½ Σ W ∘ ∂C/∂θ.
        let w = |a: usize, b: usize| alpha[a] * alpha[b] - cinv[(a, b)];
        let mut g_scale = 0.0;
        let mut trace_w = 0.0;
        // W ∘ s M'(d²), row-major like `sqd`.
        let mut wd = vec![0.0; n * n];
        for a in 0..n {
            trace_w += w(a, a);
            for b in 0..n {
                let wab = w(a, b);
                g_scale += wab * m[a * n + b];
                wd[a * n + b] = wab * dm[a * n + b];
            }
        }
        let g_rho: Vec<f64> = self
            .sqd
            .iter()
            .map(|sq| sq.iter().zip(&wd).map(|(s, w)| s * w).sum())
            .collect();
        let mut prior = 0.0;
        for j in 0..d {
            let rho = k.inv_sq_lengthscales[j];
            prior -= 0.1 / rho + 0.1 * rho;
            grad[j] = -0.5 * g_rho[j] * rho - (0.1 / rho - 0.1 * rho);
        }
        // Gamma(2, 1) on the kernel scale, Gamma(1.1, 30) on the noise (constants dropped).
        prior += k.scale.ln() - k.scale;
        grad[d] = -0.5 * g_scale - (1.0 - k.scale);
        prior += 0.1 * k.noise.ln() - 30.0 * k.noise;
        grad[d + 1] = if self.deterministic {
            0.0
        } else {
            let e = raw[d + 1].exp();
            -0.5 * trace_w * e - (0.1 / k.noise - 30.0) * e
        };
        logdet + 0.5 * quad - prior
    }
}

/// `C⁻¹ = L⁻ᵀ L⁻¹` from the Cholesky factor: the triangular inverse by substitution, the
/// product by nalgebra's blocked matrix multiply (about three times faster than solving
/// for the identity column by column).
fn spd_inverse(l: &DMatrix<f64>) -> DMatrix<f64> {
    let n = l.nrows();
    let ls = l.as_slice(); // column-major: L[i, k] = ls[k n + i]
    let mut inv = DMatrix::<f64>::zeros(n, n);
    let data = inv.as_mut_slice();
    for j in 0..n {
        // Column j of L⁻¹: forward substitution in axpy form (contiguous columns of L).
        let x = &mut data[j * n..(j + 1) * n];
        x[j] = 1.0;
        for k in j..n {
            x[k] /= ls[k * n + k];
            let xk = x[k];
            let col = &ls[k * n + k + 1..(k + 1) * n];
            for (xi, lik) in x[k + 1..].iter_mut().zip(col) {
                *xi -= lik * xk;
            }
        }
    }
    inv.tr_mul(&inv)
}

/// Fits the kernel by maximising the marginal likelihood plus Optuna's priors with L-BFGS
/// from Optuna's all-ones start (so this fit depends only on the data).
pub fn fit(x: Vec<Vec<f64>>, y: &[f64], cat: Vec<bool>, deterministic: bool) -> Option<Gp> {
    fit_from(x, y, cat, deterministic, None).map(|(gp, _)| gp)
}

/// The raw start of a kernel fit: Optuna's all-ones default, or (Optuna's warm start) the
/// previous fit's raw parameters `[ln ρ.., ln scale, ln(noise − MIN_NOISE)]`, the noise
/// moved up by `0.01 · MIN_NOISE` as Optuna re-derives it from the previous noise variance.
fn fit_start(d: usize, warm: Option<&[f64]>) -> Vec<f64> {
    match warm {
        Some(w) if w.len() == d + 2 && w.iter().all(|v| v.is_finite()) => {
            let mut x0 = w.to_vec();
            x0[d + 1] = (w[d + 1].exp() + 0.01 * MIN_NOISE).ln();
            x0
        }
        _ => {
            // Every raw parameter 0: unit length scales and kernel scale; the noise
            // 1 − 0.99 · MIN_NOISE above its floor.
            let mut x0 = vec![0.0; d + 1];
            x0.push((1.0 - 0.99 * MIN_NOISE).ln());
            x0
        }
    }
}

/// [`fit`] from a given start (`warm`, the raw parameters of an earlier fit; `None` or a
/// start that does not factor: Optuna's default start, as Optuna falls back). Returns the
/// posterior and the fitted raw parameters (the next fit's warm start).
pub fn fit_from(
    x: Vec<Vec<f64>>,
    y: &[f64],
    cat: Vec<bool>,
    deterministic: bool,
    warm: Option<&[f64]>,
) -> Option<(Gp, Vec<f64>)> {
    let d = cat.len();
    let mll = Mll::new(&x, y, &cat, deterministic);
    let mut lo = vec![-12.0; d + 2];
    let hi = vec![12.0; d + 2];
    // The noise's raw parameter is ln(noise − MIN_NOISE): unbounded below in Optuna, so its
    // fit reaches the floor on noiseless data. A bound of −12 held it at 7.1e-6 (session 9:
    // a worse marginal likelihood and a smoother GP than Optuna's); −50 puts the floor within
    // rounding of MIN_NOISE.
    lo[d + 1] = -50.0;
    let run = |x0: &[f64]| {
        let (raw, fr, _) = lbfgsb(|r, g| mll.eval(r, g), x0, &lo, &hi, 1e-2, 200);
        (raw, fr)
    };
    let default = fit_start(d, None);
    let start = fit_start(d, warm);
    let (mut raw, mut fr) = run(&start);
    if !fr.is_finite() && start != default {
        (raw, fr) = run(&default);
    }
    // A fit that never left an unfactorable start falls back to the default start itself.
    if !fr.is_finite() {
        raw = default;
    }
    let kernel = mll.kernel(&raw);
    Gp::new(x, y, cat, kernel).map(|gp| (gp, raw))
}

/// The raw kernel parameters of the latest fit recorded in `trials` (user attribute
/// `sampler`, key `gp_kernel`), if it has `len` entries: the warm start of the next fit.
/// Read from the stored trials, so a resumed study starts each fit where the uninterrupted
/// one did.
fn recorded_kernel(trials: &[Trial], len: usize) -> Option<Vec<f64>> {
    trials.iter().rev().find_map(|t| {
        let v = t.user_attrs.get("sampler")?.get("gp_kernel")?.as_array()?;
        let raw: Vec<f64> = v.iter().filter_map(serde_json::Value::as_f64).collect();
        (raw.len() == len && v.len() == len).then_some(raw)
    })
}

// ---------------------------------------------------------------------------------------
// Log expected improvement.

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// `ln h(z)` with `h(z) = φ(z) + z Φ(z)`, the expected improvement of a standard normal over
/// `−z`, accurate for every finite `z`: direct for `z > −25` (erfc is accurate there and the
/// cancellation costs at most three digits), else the asymptotic series
/// `h(z) = φ(z)/z² · Σ (−1)^k (2k+1)!! / z^{2k}` in log form, which never underflows.
pub fn log_h(z: f64) -> f64 {
    if z > -25.0 {
        let cdf = 0.5 * libm::erfc(-z / std::f64::consts::SQRT_2);
        let pdf = (-0.5 * z * z - LN_SQRT_2PI).exp();
        (z * cdf + pdf).ln()
    } else {
        let (s2, _) = tail_series(z);
        -0.5 * z * z - LN_SQRT_2PI - 2.0 * (-z).ln() + s2.ln()
    }
}

/// For `z ≤ −25`: `(Σ (−1)^k (2k+1)!!/z^{2k}, Σ (−1)^k (2k−1)!!/z^{2k})`, the series of
/// `h(z) z²/φ(z)` and of `Φ(z)|z|/φ(z)`.
fn tail_series(z: f64) -> (f64, f64) {
    let inv = 1.0 / (z * z);
    let (mut s_h, mut s_c) = (1.0, 1.0);
    let (mut t_h, mut t_c) = (1.0, 1.0);
    for k in 1..=12 {
        let kf = f64::from(k);
        t_h *= -(2.0 * kf + 1.0) * inv;
        t_c *= -(2.0 * kf - 1.0) * inv;
        s_h += t_h;
        s_c += t_c;
    }
    (s_h, s_c)
}

/// `d ln h / dz = Φ(z) / h(z)`, stable in the tail.
fn dlog_h(z: f64) -> f64 {
    if z > -25.0 {
        let cdf = 0.5 * libm::erfc(-z / std::f64::consts::SQRT_2);
        let pdf = (-0.5 * z * z - LN_SQRT_2PI).exp();
        cdf / (z * cdf + pdf)
    } else {
        let (s_h, s_c) = tail_series(z);
        -z * s_c / s_h
    }
}

/// Log expected improvement of `N(mean, var)` over `best` (maximisation).
pub fn log_ei(mean: f64, var: f64, best: f64) -> f64 {
    let sigma = (var + STABILIZING_NOISE).sqrt();
    log_h((mean - best) / sigma) + sigma.ln()
}

struct Acq<'a> {
    gp: &'a Gp,
    best: f64,
}

impl Acq<'_> {
    fn value(&self, x: &[f64]) -> f64 {
        let (m, v) = self.gp.posterior(x);
        log_ei(m, v, self.best)
    }

    /// Value and gradient in the coordinates `dims`.
    fn value_grad(&self, x: &[f64], dims: &[usize]) -> (f64, Vec<f64>) {
        let (m, v, gm, gv) = self.gp.posterior_grad(x, dims);
        let sigma = (v + STABILIZING_NOISE).sqrt();
        let z = (m - self.best) / sigma;
        let r = dlog_h(z);
        let d_mean = r / sigma;
        let d_sigma = (1.0 - r * z) / sigma;
        let g = gm
            .iter()
            .zip(&gv)
            .map(|(a, b)| d_mean * a + d_sigma * b / (2.0 * sigma))
            .collect();
        (log_h(z) + sigma.ln(), g)
    }
}

// ---------------------------------------------------------------------------------------
// Box-constrained L-BFGS (projected, with an active set and backtracking line search).

/// Minimises `f` (value and gradient) on `[lo, hi]` from `x0`; returns the point, its value and
/// the iterations run. Stops when the projected gradient's largest component is below
/// `pgtol` or after `max_iter` iterations.
pub fn lbfgsb(
    mut f: impl FnMut(&[f64], &mut [f64]) -> f64,
    x0: &[f64],
    lo: &[f64],
    hi: &[f64],
    pgtol: f64,
    max_iter: usize,
) -> (Vec<f64>, f64, usize) {
    const MEM: usize = 8;
    let n = x0.len();
    let project = |x: &mut [f64]| {
        for i in 0..n {
            x[i] = x[i].clamp(lo[i], hi[i]);
        }
    };
    let mut x = x0.to_vec();
    project(&mut x);
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    if !fx.is_finite() {
        return (x, fx, 0);
    }
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut iters = 0;
    for it in 0..max_iter {
        iters = it;
        // Free variables: not at a bound with the gradient pushing outwards.
        let free: Vec<bool> = (0..n)
            .map(|i| !((x[i] <= lo[i] && g[i] > 0.0) || (x[i] >= hi[i] && g[i] < 0.0)))
            .collect();
        let pg_max = (0..n)
            .filter(|&i| free[i])
            .map(|i| g[i].abs())
            .fold(0.0, f64::max);
        if pg_max < pgtol {
            break;
        }
        // Two-loop recursion on the free subspace.
        let mut q: Vec<f64> = (0..n).map(|i| if free[i] { g[i] } else { 0.0 }).collect();
        let dotf = |a: &[f64], b: &[f64]| -> f64 {
            (0..n).filter(|&i| free[i]).map(|i| a[i] * b[i]).sum()
        };
        let mut alphas = Vec::with_capacity(s_hist.len());
        for (s, y) in s_hist.iter().zip(&y_hist).rev() {
            let sy = dotf(s, y);
            if sy <= 1e-12 {
                alphas.push(0.0);
                continue;
            }
            let a = dotf(s, &q) / sy;
            for i in 0..n {
                q[i] -= a * y[i];
            }
            alphas.push(a);
        }
        let gamma = match (s_hist.last(), y_hist.last()) {
            (Some(s), Some(y)) => {
                let (sy, yy) = (dotf(s, y), dotf(y, y));
                if sy > 1e-12 && yy > 0.0 { sy / yy } else { 1.0 }
            }
            _ => 1.0 / pg_max.max(1.0),
        };
        for v in &mut q {
            *v *= gamma;
        }
        for ((s, y), a) in s_hist.iter().zip(&y_hist).zip(alphas.iter().rev()) {
            let sy = dotf(s, y);
            if sy <= 1e-12 {
                continue;
            }
            let b = dotf(y, &q) / sy;
            for i in 0..n {
                q[i] += s[i] * (a - b);
            }
        }
        let mut dir: Vec<f64> = (0..n).map(|i| if free[i] { -q[i] } else { 0.0 }).collect();
        let slope: f64 = (0..n).map(|i| dir[i] * g[i]).sum();
        if slope >= 0.0 {
            dir = (0..n).map(|i| if free[i] { -g[i] } else { 0.0 }).collect();
            s_hist.clear();
            y_hist.clear();
        }
        // Backtracking (Armijo) along the projected path.
        let mut step = 1.0;
        let mut accepted = None;
        let mut gn = vec![0.0; n];
        for _ in 0..30 {
            let mut xn: Vec<f64> = (0..n).map(|i| x[i] + step * dir[i]).collect();
            project(&mut xn);
            let fnew = f(&xn, &mut gn);
            let decrease: f64 = (0..n).map(|i| g[i] * (xn[i] - x[i])).sum();
            if decrease < 0.0 && fnew.is_finite() && fnew <= fx + 1e-4 * decrease {
                accepted = Some((xn, fnew));
                break;
            }
            step *= 0.5;
        }
        let Some((xn, fnew)) = accepted else { break };
        let s: Vec<f64> = (0..n).map(|i| xn[i] - x[i]).collect();
        let y: Vec<f64> = (0..n).map(|i| gn[i] - g[i]).collect();
        let improvement = fx - fnew;
        x = xn;
        g.copy_from_slice(&gn);
        fx = fnew;
        if s.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>() > 1e-12 {
            s_hist.push(s);
            y_hist.push(y);
            if s_hist.len() > MEM {
                s_hist.remove(0);
                y_hist.remove(0);
            }
        }
        if improvement.abs() <= 1e-12 * fx.abs().max(1.0) {
            break;
        }
        iters = it + 1;
    }
    (x, fx, iters)
}

// ---------------------------------------------------------------------------------------
// The sampler.

/// Standardised values (to maximise) of the complete trials that have every GP parameter.
fn training_data(
    enc: &Encoder<'_>,
    trials: &[Trial],
    minimize: bool,
) -> (Vec<Vec<f64>>, Vec<f64>, Vec<Vec<f64>>) {
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut running = Vec::new();
    for t in trials {
        let Some(p) = enc.encode_trial(t) else {
            continue;
        };
        match t.state {
            TrialState::Complete => {
                if let Some(v) = t.value().filter(|v| v.is_finite()) {
                    x.push(p);
                    y.push(if minimize { -v } else { v });
                }
            }
            TrialState::Running => running.push(p),
            _ => {}
        }
    }
    let n = y.len() as f64;
    let mean = y.iter().sum::<f64>() / n.max(1.0);
    let std = (y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n.max(1.0)).sqrt();
    let std = std.max(1e-10);
    let y = y.iter().map(|v| (v - mean) / std).collect();
    (x, y, running)
}

/// One local search: alternate projected L-BFGS on the continuous coordinates (in
/// length-scale units) with discrete / categorical coordinate searches until nothing moves.
fn local_search(acq: &Acq<'_>, enc: &Encoder<'_>, x0: Vec<f64>) -> (Vec<f64>, f64) {
    let rho = &acq.gp.kernel.inv_sq_lengthscales;
    let cont: Vec<usize> = (0..enc.dim())
        .filter(|&j| matches!(enc.kinds[j], Kind::Continuous))
        .collect();
    let ls: Vec<f64> = cont.iter().map(|&j| 1.0 / rho[j].sqrt()).collect();
    let mut x = x0;
    let mut fx = acq.value(&x);
    for _round in 0..20 {
        let mut moved = false;
        if !cont.is_empty() {
            let z0: Vec<f64> = cont.iter().zip(&ls).map(|(&j, l)| x[j] / l).collect();
            let hi: Vec<f64> = ls.iter().map(|l| 1.0 / l).collect();
            let lo = vec![0.0; cont.len()];
            let base = x.clone();
            let (z, neg, it) = lbfgsb(
                |z, g| {
                    let mut xx = base.clone();
                    for (o, &j) in cont.iter().enumerate() {
                        xx[j] = z[o] * ls[o];
                    }
                    let (v, gr) = acq.value_grad(&xx, &cont);
                    for o in 0..cont.len() {
                        g[o] = -gr[o] * ls[o];
                    }
                    if v.is_finite() { -v } else { f64::INFINITY }
                },
                &z0,
                &lo,
                &hi,
                1e-2,
                200,
            );
            if it > 0 && -neg > fx {
                for (o, &j) in cont.iter().enumerate() {
                    x[j] = (z[o] * ls[o]).clamp(0.0, 1.0);
                }
                fx = acq.value(&x);
                moved = true;
            }
        }
        let mut discrete_moved = false;
        for j in 0..enc.dim() {
            let options: Vec<f64> = match &enc.kinds[j] {
                Kind::Continuous => continue,
                Kind::Categorical(n) => (0..*n).map(|c| c as f64).collect(),
                Kind::Discrete(g) if g.len() <= EXHAUSTIVE => g.clone(),
                Kind::Discrete(g) => {
                    // Neighbours at doubling distances plus 16 evenly spaced grid points.
                    let i = nearest(g, x[j]) as i64;
                    let mut idx: Vec<i64> =
                        (0..16).map(|k| k * (g.len() as i64 - 1) / 15).collect();
                    let mut step = 1;
                    while step < g.len() as i64 {
                        idx.push(i - step);
                        idx.push(i + step);
                        step *= 2;
                    }
                    idx.into_iter()
                        .filter(|&k| k >= 0 && k < g.len() as i64)
                        .map(|k| g[k as usize])
                        .collect()
                }
            };
            let cur = x[j];
            let mut best = (fx, cur);
            for o in options {
                if o == cur {
                    continue;
                }
                x[j] = o;
                let v = acq.value(&x);
                if v > best.0 {
                    best = (v, o);
                }
            }
            x[j] = best.1;
            if best.1 != cur {
                fx = best.0;
                discrete_moved = true;
            }
        }
        if !discrete_moved && (!moved || enc.kinds.iter().all(|k| matches!(k, Kind::Continuous))) {
            break;
        }
    }
    (x, fx)
}

/// A GP fitted to a study's complete trials (unconditional parameters, standardised values
/// to maximise), with the study's running trials.
pub struct Model {
    /// The posterior over the complete trials.
    pub gp: Gp,
    x: Vec<Vec<f64>>,
    y: Vec<f64>,
    running: Vec<Vec<f64>>,
    /// The fitted raw kernel parameters (recorded with the trial: the next fit's start).
    raw: Vec<f64>,
}

impl Model {
    /// The fitted raw kernel parameters `[ln ρ.., ln scale, ln(noise − 1e-6)]`, which the
    /// sampler records in the trial's user attribute `sampler` (key `gp_kernel`) so the
    /// next fit starts from them, as Optuna warm-starts each fit from the previous one.
    pub fn raw_kernel(&self) -> &[f64] {
        &self.raw
    }

    /// Fraction of the standardised variance the fit attributes to noise: near 0 when the
    /// data look like a smooth function at the resolution sampled, near 1 when they look
    /// like noise (rugged or multimodal landscapes fit with large noise).
    pub fn noise_fraction(&self) -> f64 {
        let k = &self.gp.kernel;
        k.noise / (k.noise + k.scale)
    }

    /// Number of complete trials in the fit.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether the fit has no data.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

impl GpSampler {
    /// Fits the GP to the unconditional parameters of `trials`, or `None` with fewer than
    /// `n_startup_trials` complete trials (or a covariance that would not factor).
    pub fn fit_study(
        &self,
        space: &crate::space::SearchSpace,
        trials: &[Trial],
        directions: &[crate::trial::Direction],
    ) -> Option<Model> {
        let enc = Encoder::unconditional(space);
        self.model(&enc, trials, directions)
    }

    fn model(
        &self,
        enc: &Encoder<'_>,
        trials: &[Trial],
        directions: &[crate::trial::Direction],
    ) -> Option<Model> {
        if enc.dim() == 0 {
            return None;
        }
        let minimize =
            directions.first().copied().unwrap_or_default() == crate::trial::Direction::Minimize;
        let (x, y, running) = training_data(enc, trials, minimize);
        if x.len() < self.n_startup_trials.max(1) {
            return None;
        }
        let warm = if self.warm_start {
            recorded_kernel(trials, enc.dim() + 2)
        } else {
            None
        };
        let (gp, raw) = fit_from(
            x.clone(),
            &y,
            enc.is_cat(),
            self.deterministic_objective,
            warm.as_deref(),
        )?;
        Some(Model {
            gp,
            x,
            y,
            running,
            raw,
        })
    }

    /// The acquisition search: every local optimum found and every candidate, best first.
    fn maximize(
        &self,
        acq: &Acq<'_>,
        enc: &Encoder<'_>,
        best_x: Vec<f64>,
        rng: &mut rand::rngs::StdRng,
    ) -> Vec<(Vec<f64>, f64)> {
        // Quasi-random candidates, scrambled from this trial's RNG.
        let mut qmc = QmcSampler::new(rng.random::<u64>());
        let cands: Vec<Vec<f64>> = (0..self.n_candidates as u64)
            .map(|i| enc.point_of_unit(&qmc.point(i, enc.dim())))
            .collect();
        let vals: Vec<f64> = cands.iter().map(|c| acq.value(c)).collect();
        let imax = (0..vals.len())
            .max_by(|&a, &b| vals[a].total_cmp(&vals[b]))
            .unwrap_or(0);
        let mut starts = vec![cands[imax].clone(), best_x];
        // Roulette selection ∝ exp(acq − max), without replacement.
        let vmax = vals[imax];
        let mut probs: Vec<f64> = vals
            .iter()
            .map(|v| if v.is_finite() { (v - vmax).exp() } else { 0.0 })
            .collect();
        probs[imax] = 0.0;
        for _ in 0..self.n_local_search.saturating_sub(2) {
            let total: f64 = probs.iter().sum();
            if total <= 0.0 || !total.is_finite() {
                break;
            }
            let mut r = rng.random::<f64>() * total;
            let mut pick = probs.len() - 1;
            for (i, p) in probs.iter().enumerate() {
                if r < *p {
                    pick = i;
                    break;
                }
                r -= p;
            }
            probs[pick] = 0.0;
            starts.push(cands[pick].clone());
        }
        let mut results: Vec<(Vec<f64>, f64)> = starts
            .into_iter()
            .map(|s| {
                let (mut x, _) = local_search(acq, enc, s);
                enc.snap(&mut x);
                let v = acq.value(&x);
                (x, v)
            })
            .collect();
        results.extend(cands.into_iter().zip(vals));
        results.sort_by(|a, b| b.1.total_cmp(&a.1));
        results
    }

    /// Maximises log expected improvement over `best` of a given posterior on the unit cube
    /// of `space`'s unconditional parameters (encoded as the sampler encodes them), starting
    /// the local searches as a proposal does, `best_x` among them. Returns the maximiser and
    /// its log EI. The sampler's own proposals go through the same search; this entry exists
    /// so the search can be compared with Optuna's `optimize_acqf_mixed` on a fixed GP.
    pub fn maximize_log_ei(
        &self,
        space: &crate::space::SearchSpace,
        gp: &Gp,
        best: f64,
        best_x: &[f64],
        rng: &mut rand::rngs::StdRng,
    ) -> (Vec<f64>, f64) {
        let enc = Encoder::unconditional(space);
        let acq = Acq { gp, best };
        self.maximize(&acq, &enc, best_x.to_vec(), rng)
            .into_iter()
            .next()
            .unwrap_or_else(|| (best_x.to_vec(), acq.value(best_x)))
    }

    /// The GP's proposal for the unconditional parameters from a fitted model.
    fn propose(
        &self,
        ctx: &mut SampleContext<'_>,
        enc: &Encoder<'_>,
        model: Model,
    ) -> Option<Params> {
        let Model {
            gp, x, y, running, ..
        } = model;
        let cat = enc.is_cat();
        let mut best = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut best_x = x[y.iter().position(|&v| v == best).unwrap_or(0)].clone();
        // Kriging believer: running trials take their posterior mean as their value.
        let gp = if running.is_empty() {
            gp
        } else {
            let mut xs = x.clone();
            let mut ys = y.clone();
            for r in &running {
                let (m, _) = gp.posterior(r);
                if m > best {
                    best = m;
                    best_x.clone_from(r);
                }
                xs.push(r.clone());
                ys.push(m);
            }
            Gp::new(xs, &ys, cat, gp.kernel.clone()).unwrap_or(gp)
        };
        let acq = Acq { gp: &gp, best };
        let results = self.maximize(&acq, enc, best_x, ctx.rng);
        // Never repeat an earlier trial (running ones included): a repeat teaches nothing and
        // parallel workers must not get the same proposal.
        let seen: Vec<Params> = ctx
            .trials
            .iter()
            .filter_map(|t| enc.encode_trial(t).map(|p| enc.decode(&p)))
            .collect();
        results
            .into_iter()
            .map(|(x, _)| enc.decode(&x))
            .find(|p| !seen.contains(p))
    }
}

impl GpSampler {
    /// Proposes from an already fitted model (`None`: random, as before the startup ends).
    pub fn sample_with_model(
        &self,
        ctx: &mut SampleContext<'_>,
        model: Option<Model>,
    ) -> Result<Params> {
        let space = ctx.space;
        let enc = Encoder::unconditional(space);
        let joint = if enc.dim() == 0 {
            Some(Params::new())
        } else {
            model.and_then(|m| self.propose(ctx, &enc, m))
        };
        match joint {
            Some(joint) => Ok(self.tpe.sample_rest(ctx, &joint)),
            None => Ok(sample_random(ctx.space, ctx.rng)),
        }
    }
}

impl Sampler for GpSampler {
    fn sample(&mut self, ctx: &mut SampleContext<'_>) -> Result<Params> {
        self.decision = None;
        if ctx.directions.len() > 1 {
            return self.tpe.sample(ctx);
        }
        let complete = ctx
            .trials
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .count();
        if complete < self.n_startup_trials {
            return Ok(match self.startup {
                Startup::Random => sample_random(ctx.space, ctx.rng),
                Startup::Qmc => {
                    let seed = (ctx.rng_of)(0).random::<u64>();
                    let u = QmcSampler::new(seed).point(ctx.number, ctx.space.params.len());
                    super::from_unit_vector(ctx.space, &u)
                }
            });
        }
        let model = self.fit_study(ctx.space, ctx.trials, ctx.directions);
        if let Some(m) = &model {
            self.decision = Some(serde_json::json!({"sampler": "gp", "gp_kernel": m.raw_kernel()}));
        }
        self.sample_with_model(ctx, model)
    }

    fn name(&self) -> String {
        "gp".into()
    }

    fn last_decision(&self) -> Option<serde_json::Value> {
        self.decision.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_h_branches_agree_and_stay_finite() {
        // Both branches at the switch point.
        let z: f64 = -25.0;
        let direct = {
            let cdf = 0.5 * libm::erfc(-z / std::f64::consts::SQRT_2);
            let pdf = (-0.5 * z * z - LN_SQRT_2PI).exp();
            (z * cdf + pdf).ln()
        };
        let (s2, _) = tail_series(z);
        let series = -0.5 * z * z - LN_SQRT_2PI - 2.0 * (-z).ln() + s2.ln();
        assert!((direct - series).abs() < 1e-9, "{direct} vs {series}");
        // Far from the incumbent: finite, decreasing, with the asymptote −z²/2 − 2 ln|z|.
        let mut last = f64::INFINITY;
        for z in [-1.0, -10.0, -30.0, -1e2, -1e3, -1e5, -1e10, -1e100] {
            let v = log_h(z);
            assert!(v.is_finite() && v < last, "log_h({z}) = {v}");
            let asym = -0.5 * z * z - LN_SQRT_2PI - 2.0 * (-z).ln();
            if z <= -1e3 {
                // ln h = asymptote + ln(1 − 3/z² + O(z⁻⁴)).
                let tail = (-3.0 / (z * z)).ln_1p();
                assert!(
                    (v - asym - tail).abs() < 1e-9,
                    "log_h({z}) = {v} vs {}",
                    asym + tail
                );
            }
            let r = dlog_h(z);
            assert!(r.is_finite() && r > 0.0, "dlog_h({z}) = {r}");
            last = v;
        }
        // Known values: h(0) = φ(0); h(z) → z for large z.
        assert!((log_h(0.0) - (-LN_SQRT_2PI)).abs() < 1e-15);
        assert!((log_h(40.0) - 40f64.ln()).abs() < 1e-15);
        // The gradient matches finite differences on both branches.
        for z in [-40.0, -25.5, -24.5, -3.0, 0.5, 4.0] {
            let e = 1e-6;
            let fd = (log_h(z + e) - log_h(z - e)) / (2.0 * e);
            assert!(
                ((fd - dlog_h(z)) / dlog_h(z)).abs() < 1e-5,
                "z = {z}: {fd} vs {}",
                dlog_h(z)
            );
        }
    }

    #[test]
    fn posterior_matches_the_closed_form_with_one_observation() {
        // One point at 0.2 with value y, kernel scale s, noise σ²: at x, with k = s M(ρ d²),
        // mean = k y / (s + σ²) and var = s − k² / (s + σ²).
        let kernel = Kernel {
            inv_sq_lengthscales: vec![4.0],
            scale: 1.7,
            noise: 0.01,
        };
        let y = 0.8;
        let gp = Gp::new(vec![vec![0.2]], &[y], vec![false], kernel).expect("factor");
        for x in [0.2, 0.35, 0.9] {
            let d2: f64 = 4.0 * (x - 0.2) * (x - 0.2);
            let r = (5.0 * d2).sqrt();
            let k = 1.7 * (1.0 + r + 5.0 / 3.0 * d2) * (-r).exp();
            let (m, v) = gp.posterior(&[x]);
            assert!((m - k * y / 1.71).abs() < 1e-12);
            assert!((v - (1.7 - k * k / 1.71)).abs() < 1e-12);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let x: Vec<Vec<f64>> = (0..12)
            .map(|i| {
                let t = f64::from(i) / 11.0;
                vec![t, (3.0 * t).sin().abs(), f64::from(i % 3)]
            })
            .collect();
        let y: Vec<f64> = x
            .iter()
            .map(|p| (4.0 * p[0]).sin() + p[1] * p[1] - 0.3 * p[2])
            .collect();
        let cat = vec![false, false, true];
        let mll = Mll::new(&x, &y, &cat, false);
        let raw = vec![0.3, -0.5, 0.2, 0.1, -3.0];
        let mut g = vec![0.0; 5];
        mll.eval(&raw, &mut g);
        for i in 0..5 {
            let e = 1e-6;
            let mut a = raw.clone();
            let mut b = raw.clone();
            a[i] += e;
            b[i] -= e;
            let mut tmp = vec![0.0; 5];
            let fd = (mll.eval(&a, &mut tmp) - mll.eval(&b, &mut tmp)) / (2.0 * e);
            assert!(
                (fd - g[i]).abs() < 1e-5 * (1.0 + fd.abs()),
                "raw {i}: {fd} vs {}",
                g[i]
            );
        }
        let gp = fit(x, &y, cat, false).expect("fit");
        let acq = Acq { gp: &gp, best: 1.5 };
        let p = [0.37, 0.61, 1.0];
        let (_, ga) = acq.value_grad(&p, &[0, 1]);
        for (o, j) in [0usize, 1].into_iter().enumerate() {
            let e = 1e-6;
            let mut a = p;
            let mut b = p;
            a[j] += e;
            b[j] -= e;
            let fd = (acq.value(&a) - acq.value(&b)) / (2.0 * e);
            assert!(
                (fd - ga[o]).abs() < 1e-4 * (1.0 + fd.abs()),
                "x{j}: {fd} vs {}",
                ga[o]
            );
        }
    }

    /// A warm-started fit (Optuna's start from the previous fit) reaches a loss at least as
    /// low as the default start's on data where the previous fit had one point less; an
    /// unusable warm start (wrong length, non-finite) is the default start exactly.
    #[test]
    fn warm_started_fit_is_as_good_and_falls_back() {
        let pts: Vec<Vec<f64>> = (0..25)
            .map(|i| {
                let t = f64::from(i);
                vec![(t * 0.618_034).fract(), (t * 0.414_214 + 0.3).fract()]
            })
            .collect();
        let f = |p: &[f64]| (6.0 * p[0]).sin() + 4.0 * (p[1] - 0.4).powi(2);
        let y: Vec<f64> = pts.iter().map(|p| f(p)).collect();
        let cat = vec![false, false];
        let (_, prev) =
            fit_from(pts[..24].to_vec(), &y[..24], cat.clone(), false, None).expect("fit");
        let loss = |raw: &[f64]| Mll::new(&pts, &y, &cat, false).eval(raw, &mut [0.0; 4]);
        let (_, cold) = fit_from(pts.clone(), &y, cat.clone(), false, None).expect("cold");
        let (_, warm) = fit_from(pts.clone(), &y, cat.clone(), false, Some(&prev)).expect("warm");
        // Noiseless, densely sampled data: the noise goes below the old bound's 7.1e-6.
        let xs: Vec<Vec<f64>> = (0..40).map(|i| vec![f64::from(i) / 39.0]).collect();
        let ys: Vec<f64> = xs.iter().map(|p| (5.0 * p[0]).sin()).collect();
        let (g1, _) = fit_from(xs, &ys, vec![false], false, None).expect("fit");
        assert!(g1.kernel().noise < 7e-6, "noise {}", g1.kernel().noise);
        assert!(
            loss(&warm) <= loss(&cold) + 1e-3,
            "warm {} cold {}",
            loss(&warm),
            loss(&cold)
        );
        for bad in [vec![0.0; 3], vec![f64::NAN, 0.0, 0.0, 0.0]] {
            let (_, r) = fit_from(pts.clone(), &y, cat.clone(), false, Some(&bad)).expect("fit");
            assert_eq!(r, cold);
        }
        let noise = fit_start(2, Some(&[0.5, -0.5, 0.1, (1e-6f64).ln()]))[3];
        assert!((noise - (1.01e-6f64).ln()).abs() < 1e-12, "{noise}");
    }

    /// The latest recorded kernel of the right length is the warm start; others are skipped.
    #[test]
    fn recorded_kernel_reads_the_latest_fit() {
        let mut trials: Vec<Trial> = (0..3).map(|n| Trial::new(n, Params::new(), "w")).collect();
        trials[0].user_attrs.insert(
            "sampler".into(),
            serde_json::json!({"gp_kernel": [1.0, 2.0, 3.0, 4.0]}),
        );
        trials[1].user_attrs.insert(
            "sampler".into(),
            serde_json::json!({"gp_kernel": [9.0, 9.0, 9.0]}),
        );
        trials[2]
            .user_attrs
            .insert("sampler".into(), serde_json::json!({"sampler": "tpe"}));
        assert_eq!(recorded_kernel(&trials, 4), Some(vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(recorded_kernel(&trials, 3), Some(vec![9.0, 9.0, 9.0]));
        assert_eq!(recorded_kernel(&trials, 5), None);
    }

    #[test]
    fn lbfgsb_solves_a_bounded_quadratic() {
        // min (x−2)² + 10 (y+1)² on [0,1]²: optimum (1, 0).
        let (x, f, _) = lbfgsb(
            |v, g| {
                g[0] = 2.0 * (v[0] - 2.0);
                g[1] = 20.0 * (v[1] + 1.0);
                (v[0] - 2.0).powi(2) + 10.0 * (v[1] + 1.0).powi(2)
            },
            &[0.5, 0.5],
            &[0.0, 0.0],
            &[1.0, 1.0],
            1e-8,
            100,
        );
        assert_eq!(x, vec![1.0, 0.0]);
        assert!((f - 11.0).abs() < 1e-12);
        // Unbounded Rosenbrock from (−1.2, 1).
        let (x, _, _) = lbfgsb(
            |v, g| {
                g[0] = -400.0 * v[0] * (v[1] - v[0] * v[0]) - 2.0 * (1.0 - v[0]);
                g[1] = 200.0 * (v[1] - v[0] * v[0]);
                100.0 * (v[1] - v[0] * v[0]).powi(2) + (1.0 - v[0]).powi(2)
            },
            &[-1.2, 1.0],
            &[-10.0, -10.0],
            &[10.0, 10.0],
            1e-9,
            500,
        );
        assert!(
            (x[0] - 1.0).abs() < 1e-4 && (x[1] - 1.0).abs() < 1e-4,
            "{x:?}"
        );
    }
}
