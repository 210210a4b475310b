//! CMA-ES (Hansen's (μ/μ_w, λ) evolution strategy) in the unit cube of the numeric
//! parameters; categorical parameters are drawn at random.
//!
//! The evolution state lives in memory, but it is a deterministic fold over the study's
//! history: trials this sampler did not ask itself (a study resumed from a journal or a
//! database, another worker with the same seed) are replayed in number order. Each is
//! redrawn with the RNG it was given ([`SampleContext::rng_of`]) and counted as a
//! generation member when the redraw reproduces its stored parameters; a full generation is
//! told before a trial when every member had finished before that trial was created
//! (`finished_at <= started_at`, both stamped under the storage's write lock). A resumed
//! study therefore asks what the uninterrupted one would have.

// Index loops read like the textbook update equations.
#![allow(clippy::needless_range_loop)]

use rand::RngExt;

use super::{SampleContext, Sampler};
use crate::error::Result;
use crate::math::{randn, sym_eigen};
use crate::space::{Params, SearchSpace};
use crate::trial::{Direction, Trial, TrialState};

struct State {
    d: usize,
    lambda: usize,
    mu: usize,
    weights: Vec<f64>,
    mueff: f64,
    cc: f64,
    cs: f64,
    c1: f64,
    cmu: f64,
    damps: f64,
    chi_n: f64,
    mean: Vec<f64>,
    sigma: f64,
    c: Vec<Vec<f64>>,
    b: Vec<Vec<f64>>,
    dsq: Vec<f64>,
    pc: Vec<f64>,
    ps: Vec<f64>,
    generation: u64,
    asked: Vec<(u64, Vec<f64>)>,
}

impl State {
    fn new(d: usize, popsize: Option<usize>, sigma0: f64) -> Self {
        let df = d as f64;
        let lambda = popsize
            .unwrap_or(4 + (3.0 * df.ln()).floor() as usize)
            .max(2);
        let mu = lambda / 2;
        let raw: Vec<f64> = (0..mu)
            .map(|i| (mu as f64 + 0.5).ln() - ((i + 1) as f64).ln())
            .collect();
        let s: f64 = raw.iter().sum();
        let weights: Vec<f64> = raw.iter().map(|w| w / s).collect();
        let mueff = 1.0 / weights.iter().map(|w| w * w).sum::<f64>();
        let cc = (4.0 + mueff / df) / (df + 4.0 + 2.0 * mueff / df);
        let cs = (mueff + 2.0) / (df + mueff + 5.0);
        let c1 = 2.0 / ((df + 1.3).powi(2) + mueff);
        let cmu = (1.0 - c1).min(2.0 * (mueff - 2.0 + 1.0 / mueff) / ((df + 2.0).powi(2) + mueff));
        let damps = 1.0 + 2.0 * (((mueff - 1.0) / (df + 1.0)).sqrt() - 1.0).max(0.0) + cs;
        let chi_n = df.sqrt() * (1.0 - 1.0 / (4.0 * df) + 1.0 / (21.0 * df * df));
        let mut eye = vec![vec![0.0; d]; d];
        for (i, r) in eye.iter_mut().enumerate() {
            r[i] = 1.0;
        }
        Self {
            d,
            lambda,
            mu,
            weights,
            mueff,
            cc,
            cs,
            c1,
            cmu,
            damps,
            chi_n,
            mean: vec![0.5; d],
            sigma: sigma0,
            c: eye.clone(),
            b: eye,
            dsq: vec![1.0; d],
            pc: vec![0.0; d],
            ps: vec![0.0; d],
            generation: 0,
            asked: Vec::new(),
        }
    }

    fn ask(&self, rng: &mut rand::rngs::StdRng) -> Vec<f64> {
        let d = self.d;
        let mut x = vec![0.0; d];
        for _ in 0..100 {
            let z: Vec<f64> = (0..d).map(|_| randn(rng)).collect();
            for (i, xi) in x.iter_mut().enumerate() {
                let y: f64 = (0..d).map(|k| self.b[i][k] * self.dsq[k] * z[k]).sum();
                *xi = self.mean[i] + self.sigma * y;
            }
            if x.iter().all(|v| (0.0..=1.0).contains(v)) {
                return x;
            }
        }
        x.iter().map(|v| v.clamp(0.0, 1.0)).collect()
    }

    /// Tells the generation once every member has finished: by now (`before = None`) or
    /// before the time `before` (replaying the history).
    fn tell_if_done(&mut self, trials: &[Trial], dir: Direction, before: Option<f64>) {
        if self.asked.len() < self.lambda {
            return;
        }
        let done: Option<Vec<(Vec<f64>, Option<f64>)>> = self
            .asked
            .iter()
            .map(|(n, x)| {
                let t = trials.iter().find(|t| t.number == *n)?;
                let finished_then = match (before, t.finished_at) {
                    (None, _) => t.state.is_finished(),
                    (Some(b), Some(f)) => t.state.is_finished() && f <= b,
                    (Some(_), None) => false,
                };
                if !finished_then {
                    return None;
                }
                let v = (t.state == TrialState::Complete)
                    .then(|| t.value().map(|v| dir.loss(v)))
                    .flatten()
                    .filter(|v| v.is_finite());
                Some((x.clone(), v))
            })
            .collect();
        let Some(done) = done else { return };
        let worst = done
            .iter()
            .filter_map(|(_, v)| *v)
            .fold(f64::NEG_INFINITY, f64::max);
        let fill = if worst.is_finite() { worst + 1.0 } else { 0.0 };
        let sols = done
            .into_iter()
            .map(|(x, v)| (x, v.unwrap_or(fill)))
            .collect();
        self.tell(sols);
        self.asked.clear();
    }

    fn tell(&mut self, mut sols: Vec<(Vec<f64>, f64)>) {
        let d = self.d;
        sols.sort_by(|a, b| a.1.total_cmp(&b.1));
        let old = self.mean.clone();
        let ys: Vec<Vec<f64>> = sols
            .iter()
            .take(self.mu)
            .map(|(x, _)| {
                x.iter()
                    .zip(&old)
                    .map(|(a, m)| (a - m) / self.sigma)
                    .collect()
            })
            .collect();
        let mut yw = vec![0.0; d];
        for (w, y) in self.weights.iter().zip(&ys) {
            for i in 0..d {
                yw[i] += w * y[i];
            }
        }
        for i in 0..d {
            self.mean[i] = old[i] + self.sigma * yw[i];
        }
        // C^{-1/2} y_w = B D^{-1} Bᵀ y_w.
        let bt_y: Vec<f64> = (0..d)
            .map(|k| (0..d).map(|i| self.b[i][k] * yw[i]).sum::<f64>() / self.dsq[k])
            .collect();
        let cinv_y: Vec<f64> = (0..d)
            .map(|i| (0..d).map(|k| self.b[i][k] * bt_y[k]).sum())
            .collect();
        let csn = (self.cs * (2.0 - self.cs) * self.mueff).sqrt();
        for i in 0..d {
            self.ps[i] = (1.0 - self.cs) * self.ps[i] + csn * cinv_y[i];
        }
        let ps_norm = self.ps.iter().map(|v| v * v).sum::<f64>().sqrt();
        let g = (self.generation + 1) as f64;
        let hsig = ps_norm / (1.0 - (1.0 - self.cs).powf(2.0 * g)).sqrt() / self.chi_n
            < 1.4 + 2.0 / (d as f64 + 1.0);
        let hs = if hsig { 1.0 } else { 0.0 };
        let ccn = (self.cc * (2.0 - self.cc) * self.mueff).sqrt();
        for i in 0..d {
            self.pc[i] = (1.0 - self.cc) * self.pc[i] + hs * ccn * yw[i];
        }
        for i in 0..d {
            for j in 0..d {
                let rank_mu: f64 = self
                    .weights
                    .iter()
                    .zip(&ys)
                    .map(|(w, y)| w * y[i] * y[j])
                    .sum();
                self.c[i][j] = (1.0 - self.c1 - self.cmu) * self.c[i][j]
                    + self.c1
                        * (self.pc[i] * self.pc[j]
                            + (1.0 - hs) * self.cc * (2.0 - self.cc) * self.c[i][j])
                    + self.cmu * rank_mu;
            }
        }
        self.sigma *= ((self.cs / self.damps) * (ps_norm / self.chi_n - 1.0)).exp();
        self.sigma = self.sigma.clamp(1e-12, 1.0);
        let (e, v) = sym_eigen(&self.c);
        self.dsq = e.iter().map(|x| x.max(1e-20).sqrt()).collect();
        self.b = v;
        self.generation += 1;
    }
}

/// CMA-ES sampler.
pub struct CmaEsSampler {
    popsize: Option<usize>,
    sigma0: f64,
    state: Option<State>,
    /// Trials numbered below this are folded into `state`.
    seen: u64,
}

impl Default for CmaEsSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl CmaEsSampler {
    /// Default population `4 + ⌊3 ln d⌋`, initial step 1/6 of each range, start at the center.
    pub fn new() -> Self {
        Self {
            popsize: None,
            sigma0: 1.0 / 6.0,
            state: None,
            seen: 0,
        }
    }

    /// Sets the population size.
    pub fn with_popsize(mut self, popsize: usize) -> Self {
        self.popsize = Some(popsize);
        self
    }
}

impl Sampler for CmaEsSampler {
    fn sample(&mut self, ctx: &mut SampleContext<'_>) -> Result<Params> {
        let space: &SearchSpace = ctx.space;
        let numeric: Vec<usize> = space
            .params
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.dist.is_categorical() && p.condition.is_none())
            .map(|(i, _)| i)
            .collect();
        let d = numeric.len().max(1);
        let st = self
            .state
            .get_or_insert_with(|| State::new(d, self.popsize, self.sigma0));
        let dir = ctx.directions.first().copied().unwrap_or_default();
        for t in ctx
            .trials
            .iter()
            .filter(|t| t.number >= self.seen && t.number < ctx.number)
        {
            st.tell_if_done(ctx.trials, dir, Some(t.started_at));
            let x = st.ask(&mut (ctx.rng_of)(t.number));
            let drawn_here = numeric.iter().zip(&x).all(|(&i, &xk)| {
                let p = &space.params[i];
                t.params.get(&p.name) == Some(&p.dist.from_unit(xk))
            });
            if drawn_here && st.asked.len() < st.lambda {
                st.asked.push((t.number, x));
            }
        }
        self.seen = self.seen.max(ctx.number + 1);
        st.tell_if_done(ctx.trials, dir, None);
        let x = st.ask(ctx.rng);
        if st.asked.len() < st.lambda {
            st.asked.push((ctx.number, x.clone()));
        }
        let mut u: Vec<f64> = (0..space.params.len()).map(|_| ctx.rng.random()).collect();
        for (k, &i) in numeric.iter().enumerate() {
            u[i] = x[k];
        }
        Ok(super::from_unit_vector(space, &u))
    }

    fn name(&self) -> String {
        "cmaes".into()
    }
}
