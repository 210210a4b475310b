//! Samplers propose the parameters of the next trial from the history of the study.
//!
//! A sampler gets a [`SampleContext`] holding the space, every trial so far (running ones
//! included, which is what constant liar needs) and an RNG derived from the study seed and the
//! trial number, so a sequential study with a fixed seed is reproducible.

mod auto;
mod cmaes;
mod gp;
mod tpe;

pub use auto::AutoSampler;
pub use cmaes::CmaEsSampler;
pub use gp::{
    Gp, GpSampler, Kernel, Model as GpModel, Startup, fit as fit_gp, lbfgsb, log_ei, log_h,
};
pub use tpe::{Refinement, TpeSampler};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use crate::error::{Error, Result};
use crate::space::{ParamValue, Params, SearchSpace};
use crate::trial::{Direction, Trial, TrialState};

/// What a sampler sees when it proposes a trial.
pub struct SampleContext<'a> {
    /// The space to sample.
    pub space: &'a SearchSpace,
    /// All earlier trials (any state).
    pub trials: &'a [Trial],
    /// Objective directions.
    pub directions: &'a [Direction],
    /// Number of the trial being proposed.
    pub number: u64,
    /// Randomness for this trial (`rng_of(number)`, unused so far).
    pub rng: &'a mut StdRng,
    /// The RNG that trial `n` of this context gets, so a sampler whose state lives in
    /// memory (CMA-ES) can replay how earlier trials were drawn after a resume.
    pub rng_of: &'a dyn Fn(u64) -> StdRng,
}

/// Proposes parameters for new trials.
pub trait Sampler: Send {
    /// Proposes the next trial's parameters (only active ones need be present).
    fn sample(&mut self, ctx: &mut SampleContext<'_>) -> Result<Params>;
    /// A short name for reports.
    fn name(&self) -> String;
    /// What the last `sample` call decided, for samplers that choose between strategies;
    /// the study stores it as the trial's user attribute `sampler`.
    fn last_decision(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Mixes the study seed and the trial number into an independent RNG (splitmix64).
pub fn trial_rng(seed: u64, number: u64) -> StdRng {
    let mut z = seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// Uniform sampling in each parameter's internal space.
#[derive(Debug, Clone, Default)]
pub struct RandomSampler;

impl RandomSampler {
    /// A random sampler (randomness comes from the study seed).
    pub fn new() -> Self {
        Self
    }
}

pub(crate) fn sample_random(space: &SearchSpace, rng: &mut StdRng) -> Params {
    space.sample_with(|p, _| p.dist.from_unit(rng.random::<f64>()))
}

impl Sampler for RandomSampler {
    fn sample(&mut self, ctx: &mut SampleContext<'_>) -> Result<Params> {
        Ok(sample_random(ctx.space, ctx.rng))
    }
    fn name(&self) -> String {
        "random".into()
    }
}

/// Exhaustive search over a grid, in a seeded shuffled order; stops the study when every
/// point has been tried.
#[derive(Debug, Clone)]
pub struct GridSampler {
    points_per_param: usize,
    seed: u64,
    grid: Option<Vec<Params>>,
}

impl GridSampler {
    /// A grid with `points_per_param` points for continuous parameters (categoricals and small
    /// integer ranges are enumerated fully).
    pub fn new(points_per_param: usize, seed: u64) -> Self {
        Self {
            points_per_param: points_per_param.max(1),
            seed,
            grid: None,
        }
    }

    /// Every point of the grid over `space` (conditional parameters only where active).
    pub fn points(space: &SearchSpace, n: usize) -> Vec<Params> {
        let mut combos: Vec<Params> = vec![Params::new()];
        for p in &space.params {
            let mut next = Vec::new();
            for c in combos {
                if SearchSpace::is_active(p, &c) {
                    for v in p.dist.grid(n) {
                        let mut c2 = c.clone();
                        c2.insert(p.name.clone(), v);
                        next.push(c2);
                    }
                } else {
                    next.push(c);
                }
            }
            combos = next;
        }
        combos
    }
}

impl Sampler for GridSampler {
    fn sample(&mut self, ctx: &mut SampleContext<'_>) -> Result<Params> {
        let grid = self.grid.get_or_insert_with(|| {
            let mut g = Self::points(ctx.space, self.points_per_param);
            g.shuffle(&mut StdRng::seed_from_u64(self.seed));
            g
        });
        // A point counts as tried when a trial agrees on the grid's own parameters: inside a
        // phased search the trials also carry the parameters other phases fixed.
        grid.iter()
            .find(|g| {
                !ctx.trials
                    .iter()
                    .any(|t| g.iter().all(|(k, v)| t.params.get(k) == Some(v)))
            })
            .cloned()
            .ok_or_else(|| Error::Exhausted("grid".into()))
    }
    fn name(&self) -> String {
        "grid".into()
    }
}

/// Scrambled Halton sequence (random digit permutations per dimension and digit): a
/// space-filling quasi-random design.
#[derive(Debug, Clone)]
pub struct QmcSampler {
    seed: u64,
    perms: Vec<Vec<Vec<u32>>>,
}

const PRIMES: [u32; 40] = [
    2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97,
    101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167, 173,
];

impl QmcSampler {
    /// A scrambled Halton sampler.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            perms: Vec::new(),
        }
    }

    fn prime(d: usize) -> u32 {
        if d < PRIMES.len() {
            return PRIMES[d];
        }
        let mut k = d;
        let mut c = PRIMES[PRIMES.len() - 1] + 2;
        loop {
            if (2..c)
                .take_while(|q| q * q <= c)
                .all(|q| !c.is_multiple_of(q))
            {
                if k == PRIMES.len() {
                    return c;
                }
                k -= 1;
            }
            c += 2;
        }
    }

    /// The `index`-th point in `[0,1)^dims`.
    pub fn point(&mut self, index: u64, dims: usize) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x51_7cc1_b727_220a);
        while self.perms.len() < dims {
            let d = self.perms.len();
            let base = Self::prime(d);
            let digits = (53.0 / f64::from(base).log2()).ceil() as usize;
            // Each dimension gets its own stream so adding dimensions keeps earlier ones.
            let mut drng = StdRng::seed_from_u64(rng.random::<u64>() ^ d as u64);
            let perms = (0..digits)
                .map(|_| {
                    let mut p: Vec<u32> = (0..base).collect();
                    p.shuffle(&mut drng);
                    p
                })
                .collect();
            self.perms.push(perms);
        }
        (0..dims)
            .map(|d| {
                let base = Self::prime(d);
                let inv = 1.0 / f64::from(base);
                let mut f = inv;
                let mut i = index;
                let mut r = 0.0;
                for perm in &self.perms[d] {
                    let digit = (i % u64::from(base)) as usize;
                    r += f64::from(perm[digit]) * f;
                    i /= u64::from(base);
                    f *= inv;
                }
                r.min(1.0 - f64::EPSILON)
            })
            .collect()
    }
}

impl Sampler for QmcSampler {
    fn sample(&mut self, ctx: &mut SampleContext<'_>) -> Result<Params> {
        let u = self.point(ctx.number, ctx.space.params.len());
        Ok(from_unit_vector(ctx.space, &u))
    }
    fn name(&self) -> String {
        "qmc-halton".into()
    }
}

/// One phase of a [`PhasedSampler`].
pub struct Phase {
    /// Parameters this phase searches.
    pub params: Vec<String>,
    /// Sampler used for them.
    pub sampler: Box<dyn Sampler>,
    /// Number of trials in this phase.
    pub trials: usize,
}

/// Ordered phases, each searching one group of parameters with its own sampler and budget
/// while every other parameter stays at the best value found so far (the Genkidama method).
/// Phase boundaries are trial numbers; after the last phase the sampler is exhausted.
pub struct PhasedSampler {
    phases: Vec<Phase>,
    start: Option<Params>,
}

impl PhasedSampler {
    /// Phases in order; parameters outside a phase start at `start` (or the space defaults).
    pub fn new(phases: Vec<Phase>, start: Option<Params>) -> Self {
        Self { phases, start }
    }

    /// Which phase trial `number` belongs to, and the first trial number of that phase.
    pub fn phase_of(&self, number: u64) -> Option<(usize, u64)> {
        let mut begin = 0u64;
        for (i, p) in self.phases.iter().enumerate() {
            let end = begin + p.trials as u64;
            if number < end {
                return Some((i, begin));
            }
            begin = end;
        }
        None
    }
}

/// The best complete trial under the first direction.
pub fn best_trial(trials: &[Trial], dir: Direction) -> Option<&Trial> {
    trials
        .iter()
        .filter(|t| t.state == TrialState::Complete && t.value().is_some_and(f64::is_finite))
        .min_by(|a, b| {
            dir.loss(a.value().unwrap_or(f64::INFINITY))
                .total_cmp(&dir.loss(b.value().unwrap_or(f64::INFINITY)))
        })
}

impl Sampler for PhasedSampler {
    fn sample(&mut self, ctx: &mut SampleContext<'_>) -> Result<Params> {
        let (pi, begin) = self
            .phase_of(ctx.number)
            .ok_or_else(|| Error::Exhausted("phased".into()))?;
        let dir = ctx.directions.first().copied().unwrap_or_default();
        let mut base = match best_trial(ctx.trials, dir) {
            Some(t) => t.params.clone(),
            None => self.start.clone().unwrap_or_else(|| ctx.space.defaults()),
        };
        let phase = &mut self.phases[pi];
        let sub = ctx.space.subspace(&phase.params);
        // The phase's sampler models only its own trials: others had different fixed values.
        // They are numbered from the phase start, as the trial being proposed is.
        let own: Vec<Trial> = ctx
            .trials
            .iter()
            .filter(|t| t.number >= begin)
            .map(|t| {
                let mut t = t.clone();
                t.number -= begin;
                t
            })
            .collect();
        let parent_rng_of = ctx.rng_of;
        let rng_of = |n: u64| parent_rng_of(n + begin);
        let mut sub_ctx = SampleContext {
            space: &sub,
            trials: &own,
            directions: ctx.directions,
            number: ctx.number - begin,
            rng: ctx.rng,
            rng_of: &rng_of,
        };
        let proposal = phase.sampler.sample(&mut sub_ctx)?;
        for (k, v) in proposal {
            base.insert(k, v);
        }
        // Parameters that became active through the new values get their defaults.
        let full = ctx.space.sample_with(|p, _| {
            base.get(&p.name)
                .cloned()
                .unwrap_or_else(|| p.default.clone().unwrap_or_else(|| p.dist.center()))
        });
        Ok(full)
    }
    fn name(&self) -> String {
        let names: Vec<String> = self.phases.iter().map(|p| p.sampler.name()).collect();
        format!("phased[{}]", names.join(","))
    }
}

/// Decodes unit coordinates into parameters (inactive ones dropped).
pub(crate) fn from_unit_vector(space: &SearchSpace, u: &[f64]) -> Params {
    let mut i = 0;
    space.sample_with(|p, _| {
        let idx = space
            .params
            .iter()
            .position(|q| q.name == p.name)
            .unwrap_or(i);
        i += 1;
        p.dist.from_unit(u[idx])
    })
}

/// A categorical choice as a value, for tests and examples.
pub fn choice(s: &str) -> ParamValue {
    ParamValue::Str(s.into())
}
