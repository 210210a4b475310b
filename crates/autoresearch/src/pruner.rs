//! Pruners decide, from intermediate values, whether a running trial should stop early.

use crate::math::quantile;
use crate::trial::{Direction, Trial, TrialState};

/// Decides whether a trial should stop early.
pub trait Pruner: Send + Sync {
    /// `trial` is the current state of the trial being asked about (its latest report is
    /// the last intermediate value); `trials` is every trial of the study.
    fn should_prune(&self, trials: &[Trial], trial: &Trial, direction: Direction) -> bool;
}

/// Never prunes.
#[derive(Debug, Clone, Copy, Default)]
pub struct NopPruner;

impl Pruner for NopPruner {
    fn should_prune(&self, _: &[Trial], _: &Trial, _: Direction) -> bool {
        false
    }
}

/// Prunes when the trial's best value so far is worse than the median (or another
/// percentile) of completed trials at the same step. Defaults are Optuna's.
#[derive(Debug, Clone)]
pub struct MedianPruner {
    /// Completed trials needed before pruning starts.
    pub n_startup_trials: usize,
    /// Steps before which a trial is never pruned.
    pub n_warmup_steps: u64,
    /// Only decide every this many steps (after warm-up).
    pub interval_steps: u64,
    /// Completed trials that must have reported the step.
    pub n_min_trials: usize,
    /// Percentile of the comparison (50 = median).
    pub percentile: f64,
}

impl Default for MedianPruner {
    fn default() -> Self {
        Self {
            n_startup_trials: 5,
            n_warmup_steps: 0,
            interval_steps: 1,
            n_min_trials: 1,
            percentile: 50.0,
        }
    }
}

impl Pruner for MedianPruner {
    fn should_prune(&self, trials: &[Trial], trial: &Trial, dir: Direction) -> bool {
        let Some((step, _)) = trial.last_intermediate() else {
            return false;
        };
        if step < self.n_warmup_steps
            || !(step - self.n_warmup_steps).is_multiple_of(self.interval_steps.max(1))
        {
            return false;
        }
        let complete: Vec<&Trial> = trials
            .iter()
            .filter(|t| t.state == TrialState::Complete && t.number != trial.number)
            .collect();
        if complete.is_empty() || complete.len() < self.n_startup_trials {
            return false;
        }
        let own: Vec<f64> = trial
            .intermediate
            .values()
            .map(|v| dir.loss(*v))
            .filter(|v| !v.is_nan())
            .collect();
        let Some(best) = own.iter().copied().reduce(f64::min) else {
            return true;
        };
        let at_step: Vec<f64> = complete
            .iter()
            .filter_map(|t| t.intermediate.get(&step))
            .map(|v| dir.loss(*v))
            .filter(|v| !v.is_nan())
            .collect();
        if at_step.len() < self.n_min_trials.max(1) {
            return false;
        }
        // For losses, "worse than the p-th percentile of values" means above it.
        let q = match dir {
            Direction::Minimize => self.percentile / 100.0,
            Direction::Maximize => 1.0 - self.percentile / 100.0,
        };
        quantile(&at_step, q).is_some_and(|p| best > p)
    }
}

/// Asynchronous successive halving (ASHA): rungs at `min_resource · η^(s + k)`; a trial
/// reaching a rung continues only when it is in the top `1/η` of all trials that reached
/// that rung so far. Defaults are Optuna's (`η = 4`, `s = 0`, `min_resource = 1`).
#[derive(Debug, Clone)]
pub struct SuccessiveHalvingPruner {
    /// Resource (step) of the first rung.
    pub min_resource: u64,
    /// Keep the top `1/η` per rung.
    pub reduction_factor: u64,
    /// `s`: skip the first `s` rungs.
    pub min_early_stopping_rate: u32,
}

impl Default for SuccessiveHalvingPruner {
    fn default() -> Self {
        Self {
            min_resource: 1,
            reduction_factor: 4,
            min_early_stopping_rate: 0,
        }
    }
}

/// A trial's value at a rung: its first report at or after the rung's step.
fn rung_value(t: &Trial, rung_step: u64) -> Option<f64> {
    t.intermediate.range(rung_step..).next().map(|(_, v)| *v)
}

impl SuccessiveHalvingPruner {
    /// Step at which rung `k` is decided.
    pub fn rung_step(&self, k: u32) -> u64 {
        self.min_resource.saturating_mul(
            self.reduction_factor
                .saturating_pow(self.min_early_stopping_rate + k),
        )
    }

    fn decide<'a>(
        &self,
        peers: impl Iterator<Item = &'a Trial> + Clone,
        trial: &Trial,
        dir: Direction,
    ) -> bool {
        let Some((step, _)) = trial.last_intermediate() else {
            return false;
        };
        let eta = self.reduction_factor.max(2) as usize;
        for k in 0.. {
            let rs = self.rung_step(k);
            if step < rs {
                return false;
            }
            let Some(own) = rung_value(trial, rs) else {
                return false;
            };
            if own.is_nan() {
                return true;
            }
            let mut competing: Vec<f64> = peers
                .clone()
                .filter(|t| t.number != trial.number)
                .filter_map(|t| rung_value(t, rs))
                .filter(|v| !v.is_nan())
                .map(|v| dir.loss(v))
                .collect();
            competing.push(dir.loss(own));
            competing.sort_by(f64::total_cmp);
            let idx = (competing.len() / eta).saturating_sub(1);
            if dir.loss(own) > competing[idx] {
                return true;
            }
            if rs == u64::MAX {
                return false;
            }
        }
        false
    }
}

impl Pruner for SuccessiveHalvingPruner {
    fn should_prune(&self, trials: &[Trial], trial: &Trial, dir: Direction) -> bool {
        self.decide(trials.iter(), trial, dir)
    }
}

/// Hyperband: several successive-halving brackets with different early-stopping rates;
/// each trial is assigned to a bracket (by a hash of its number, weighted by the bracket's
/// budget) and competes only within it.
#[derive(Debug, Clone)]
pub struct HyperbandPruner {
    /// Smallest resource.
    pub min_resource: u64,
    /// Largest resource.
    pub max_resource: u64,
    /// η.
    pub reduction_factor: u64,
}

impl Default for HyperbandPruner {
    fn default() -> Self {
        Self {
            min_resource: 1,
            max_resource: 81,
            reduction_factor: 3,
        }
    }
}

impl HyperbandPruner {
    /// Number of brackets `⌊log_η(R / r)⌋ + 1`.
    pub fn n_brackets(&self) -> u32 {
        let eta = self.reduction_factor.max(2);
        let mut n = 0;
        let mut r = self.min_resource.max(1);
        while r.saturating_mul(eta) <= self.max_resource {
            r *= eta;
            n += 1;
        }
        n + 1
    }

    /// The bracket (its early-stopping rate) trial `number` belongs to.
    pub fn bracket_of(&self, number: u64) -> u32 {
        let nb = self.n_brackets();
        let eta = self.reduction_factor.max(2) as f64;
        let budgets: Vec<u64> = (0..nb)
            .map(|i| {
                let s = f64::from(nb - 1 - i);
                (f64::from(nb) * eta.powf(s) / (s + 1.0)).ceil() as u64
            })
            .collect();
        let total: u64 = budgets.iter().sum();
        let mut h = number.wrapping_add(0x9E37_79B9_7F4A_7C15);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let mut x = (h ^ (h >> 31)) % total;
        for (i, b) in budgets.iter().enumerate() {
            if x < *b {
                return i as u32;
            }
            x -= b;
        }
        nb - 1
    }
}

impl Pruner for HyperbandPruner {
    fn should_prune(&self, trials: &[Trial], trial: &Trial, dir: Direction) -> bool {
        let b = self.bracket_of(trial.number);
        let sha = SuccessiveHalvingPruner {
            min_resource: self.min_resource,
            reduction_factor: self.reduction_factor,
            min_early_stopping_rate: b,
        };
        sha.decide(
            trials.iter().filter(|t| self.bracket_of(t.number) == b),
            trial,
            dir,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Params;

    /// A scripted learning curve `final + gap / (step + 1)` for steps `0..=upto`.
    fn curve(number: u64, final_loss: f64, upto: u64, state: TrialState) -> Trial {
        let mut t = Trial::new(number, Params::new(), "w");
        for s in 0..=upto {
            t.intermediate
                .insert(s, final_loss + 1.0 / (s as f64 + 1.0));
        }
        t.state = state;
        if state == TrialState::Complete {
            t.values = Some(vec![final_loss + 1.0 / (upto as f64 + 1.0)]);
        }
        t
    }

    #[test]
    fn median_prunes_the_worse_half_after_startup() {
        let done: Vec<Trial> = (0..5)
            .map(|i| curve(i, i as f64 * 0.1, 9, TrialState::Complete))
            .collect();
        let p = MedianPruner::default();
        let bad = curve(5, 1.0, 3, TrialState::Running);
        let good = curve(6, 0.05, 3, TrialState::Running);
        assert!(p.should_prune(&done, &bad, Direction::Minimize));
        assert!(!p.should_prune(&done, &good, Direction::Minimize));
        // Too few completed trials: no pruning.
        assert!(!p.should_prune(&done[..4], &bad, Direction::Minimize));
        // Maximize flips the comparison.
        assert!(!p.should_prune(&done, &bad, Direction::Maximize));
        let low = curve(7, -5.0, 3, TrialState::Running);
        assert!(p.should_prune(&done, &low, Direction::Maximize));
        // Warm-up protects early steps.
        let warm = MedianPruner {
            n_warmup_steps: 5,
            ..MedianPruner::default()
        };
        assert!(!warm.should_prune(&done, &bad, Direction::Minimize));
    }

    #[test]
    fn asha_keeps_top_fraction_per_rung() {
        let p = SuccessiveHalvingPruner {
            min_resource: 1,
            reduction_factor: 2,
            min_early_stopping_rate: 0,
        };
        assert_eq!(p.rung_step(0), 1);
        assert_eq!(p.rung_step(3), 8);
        let mut trials: Vec<Trial> = Vec::new();
        // The first trial to reach a rung is always promoted.
        let first = curve(0, 0.5, 1, TrialState::Running);
        assert!(!p.should_prune(&trials, &first, Direction::Minimize));
        trials.push(curve(0, 0.5, 8, TrialState::Complete));
        trials.push(curve(1, 0.1, 8, TrialState::Complete));
        trials.push(curve(2, 0.3, 8, TrialState::Complete));
        // Values at rung 1 (step 1): 1.0, 0.6, 0.8; a 0.9 trial is outside the top half.
        let worse = curve(3, 0.4, 1, TrialState::Running);
        assert!(p.should_prune(&trials, &worse, Direction::Minimize));
        let better = curve(4, 0.05, 1, TrialState::Running);
        assert!(!p.should_prune(&trials, &better, Direction::Minimize));
        // Before the first rung nothing is decided.
        let early = curve(5, 9.0, 0, TrialState::Running);
        assert!(!p.should_prune(&trials, &early, Direction::Minimize));
    }

    #[test]
    fn hyperband_brackets_match_the_paper() {
        let hb = HyperbandPruner::default();
        assert_eq!(hb.n_brackets(), 5);
        let mut counts = [0usize; 5];
        for n in 0..10_000 {
            counts[hb.bracket_of(n) as usize] += 1;
        }
        // Budgets ceil(5·3^s/(s+1)) = 81, 34, 15, 8, 5 for s = 4..0.
        let total = 81.0 + 34.0 + 15.0 + 8.0 + 5.0;
        for (c, b) in counts.iter().zip([81.0, 34.0, 15.0, 8.0, 5.0]) {
            let expect = 10_000.0 * b / total;
            assert!(
                (*c as f64 - expect).abs() < 0.15 * expect + 30.0,
                "{counts:?}"
            );
        }
        // Within a bracket a clearly bad curve is pruned at its first rung.
        let b0: Vec<Trial> = (0..200u64)
            .filter(|n| hb.bracket_of(*n) == 0)
            .take(8)
            .map(|n| curve(n, 0.1, 81, TrialState::Complete))
            .collect();
        let n_bad = (200..400u64).find(|n| hb.bracket_of(*n) == 0).unwrap();
        let bad = curve(n_bad, 5.0, 1, TrialState::Running);
        assert!(hb.should_prune(&b0, &bad, Direction::Minimize));
    }
}
