//! Parameter importance in the spirit of PED-ANOVA (Watanabe et al., 2023; Optuna 5's
//! default): how differently a parameter is distributed among the top trials than among all
//! trials, measured by the Pearson χ² divergence between the two (smoothed histograms in the
//! unit encoding for numbers, per-choice frequencies for categoricals), normalised to sum 1.

use std::collections::BTreeMap;

use crate::space::SearchSpace;
use crate::trial::{Direction, Trial, TrialState};

/// Importance per parameter (sums to 1 when any parameter matters). `target_quantile` is
/// the fraction of best trials compared with the rest (Optuna: 0.1).
pub fn ped_anova(
    trials: &[Trial],
    space: &SearchSpace,
    dir: Direction,
    target_quantile: f64,
) -> BTreeMap<String, f64> {
    let mut done: Vec<&Trial> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete && t.value().is_some_and(f64::is_finite))
        .collect();
    done.sort_by(|a, b| {
        dir.loss(a.value().unwrap_or(f64::INFINITY))
            .total_cmp(&dir.loss(b.value().unwrap_or(f64::INFINITY)))
    });
    let n_top = ((done.len() as f64 * target_quantile).ceil() as usize).max(2);
    let mut out = BTreeMap::new();
    if done.len() < n_top + 2 {
        return out;
    }
    let top = &done[..n_top];
    for p in &space.params {
        let bins = if p.dist.is_categorical() {
            p.dist.n_choices()
        } else {
            10
        };
        let hist = |ts: &[&Trial]| -> Option<Vec<f64>> {
            let mut h = vec![1.0 / bins as f64; bins]; // add-one style smoothing
            let mut n = 0.0;
            for t in ts {
                if let Some(u) = t.params.get(&p.name).and_then(|v| p.dist.to_unit(v)) {
                    h[((u * bins as f64) as usize).min(bins - 1)] += 1.0;
                    n += 1.0;
                }
            }
            if n == 0.0 {
                return None;
            }
            let s: f64 = h.iter().sum();
            Some(h.into_iter().map(|x| x / s).collect())
        };
        let (Some(ht), Some(ha)) = (hist(top), hist(&done)) else {
            continue;
        };
        let div: f64 = ht.iter().zip(&ha).map(|(t, a)| (t - a).powi(2) / a).sum();
        out.insert(p.name.clone(), div);
    }
    let total: f64 = out.values().sum();
    if total > 0.0 {
        for v in out.values_mut() {
            *v /= total;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::{RandomSampler, SampleContext, Sampler, trial_rng};

    #[test]
    fn strong_parameter_ranks_first() {
        let space = SearchSpace::new()
            .float("x", 0.0, 1.0, false)
            .float("y", 0.0, 1.0, false)
            .float("z", 0.0, 1.0, false);
        let mut trials = Vec::new();
        let mut s = RandomSampler::new();
        for n in 0..300u64 {
            let mut rng = trial_rng(1, n);
            let p = s
                .sample(&mut SampleContext {
                    space: &space,
                    trials: &[],
                    directions: &[Direction::Minimize],
                    number: n,
                    rng: &mut rng,
                    rng_of: &|m| trial_rng(1, m),
                })
                .unwrap();
            let f = |k: &str| p[k].as_f64().unwrap();
            let v = 10.0 * (f("x") - 0.2).powi(2) + (f("y") - 0.7).powi(2);
            let mut t = Trial::new(n, p, "w");
            t.state = TrialState::Complete;
            t.values = Some(vec![v]);
            trials.push(t);
        }
        let imp = ped_anova(&trials, &space, Direction::Minimize, 0.1);
        assert!((imp.values().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(imp["x"] > imp["y"] && imp["y"] > imp["z"], "{imp:?}");
        assert!(imp["x"] > 0.5, "{imp:?}");
    }
}
