//! Honest evaluation: a locked test metric computed once for the final choice, noise-aware
//! acceptance of a new best (re-run the top candidates over seeds; accept only an
//! improvement larger than the measured noise), walk-forward splits for time series, and a
//! final report that puts out-of-sample results next to in-search ones.

use std::fmt::Write as _;
use std::ops::Range;

use crate::error::{Error, Result};
use crate::math::mean_std;
use crate::space::Params;
use crate::trial::{Direction, Trial, TrialState};

/// Expanding-window walk-forward splits over `n` time-ordered rows: split `i` trains on
/// `0..min_train + i·test_size` and tests on the next `test_size` rows. Test windows never
/// overlap and always follow their training window.
pub fn walk_forward_splits(
    n: usize,
    min_train: usize,
    test_size: usize,
) -> Vec<(Range<usize>, Range<usize>)> {
    let mut out = Vec::new();
    if test_size == 0 {
        return out;
    }
    let mut end = min_train;
    while end + test_size <= n {
        out.push((0..end, end..end + test_size));
        end += test_size;
    }
    out
}

/// A test metric that can be computed only once (for the final choice).
pub struct LockedTest<F> {
    eval: F,
    used: Option<(Params, f64)>,
}

impl<F: FnMut(&Params) -> f64> LockedTest<F> {
    /// Wraps the test evaluation.
    pub fn new(eval: F) -> Self {
        Self { eval, used: None }
    }

    /// Computes the test metric of the final choice; a second call is an error.
    pub fn evaluate_once(&mut self, params: &Params) -> Result<f64> {
        if let Some((p, _)) = &self.used {
            return Err(Error::Config(format!(
                "the locked test set was already used for {p:?}; choose before you look"
            )));
        }
        let v = (self.eval)(params);
        self.used = Some((params.clone(), v));
        Ok(v)
    }

    /// The one result, if computed.
    pub fn result(&self) -> Option<&(Params, f64)> {
        self.used.as_ref()
    }
}

/// A candidate re-run over several seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Rerun {
    /// Trial number in the study.
    pub number: u64,
    /// Its parameters.
    pub params: Params,
    /// In-search value.
    pub in_search: f64,
    /// Values over the re-run seeds.
    pub values: Vec<f64>,
    /// Their mean.
    pub mean: f64,
    /// Their sample standard deviation.
    pub std: f64,
}

/// Re-runs the `top_k` best complete trials over `seeds`.
pub fn rerun_top(
    trials: &[Trial],
    dir: Direction,
    top_k: usize,
    seeds: &[u64],
    mut eval: impl FnMut(&Params, u64) -> f64,
) -> Vec<Rerun> {
    let mut done: Vec<&Trial> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete && t.value().is_some())
        .collect();
    done.sort_by(|a, b| {
        dir.loss(a.value().unwrap_or(f64::INFINITY))
            .total_cmp(&dir.loss(b.value().unwrap_or(f64::INFINITY)))
    });
    done.into_iter()
        .take(top_k)
        .map(|t| {
            let values: Vec<f64> = seeds.iter().map(|s| eval(&t.params, *s)).collect();
            let (mean, std) = mean_std(&values);
            Rerun {
                number: t.number,
                params: t.params.clone(),
                in_search: t.value().unwrap_or(f64::NAN),
                values,
                mean,
                std,
            }
        })
        .collect()
}

/// Outcome of comparing a challenger with the incumbent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Acceptance {
    /// Whether the challenger replaces the incumbent.
    pub accepted: bool,
    /// Mean improvement (positive = challenger better).
    pub improvement: f64,
    /// Noise threshold it had to exceed: `k · sqrt(s₁²/n₁ + s₂²/n₂)`.
    pub threshold: f64,
}

/// Accepts the challenger only when its mean beats the incumbent's by more than `k`
/// standard errors of the difference (Welch).
pub fn noise_aware_accept(
    incumbent: &[f64],
    challenger: &[f64],
    dir: Direction,
    k: f64,
) -> Acceptance {
    let (mi, si) = mean_std(incumbent);
    let (mc, sc) = mean_std(challenger);
    let se =
        (si * si / incumbent.len().max(1) as f64 + sc * sc / challenger.len().max(1) as f64).sqrt();
    let improvement = dir.loss(mi) - dir.loss(mc);
    let threshold = k * se;
    Acceptance {
        accepted: improvement > threshold,
        improvement,
        threshold,
    }
}

/// Picks the final configuration from re-runs: start from the candidate with the best
/// in-search value and switch only when another beats it by more than the noise.
pub fn choose(reruns: &[Rerun], dir: Direction, k: f64) -> Option<&Rerun> {
    let mut best = reruns.first()?;
    for r in &reruns[1..] {
        if noise_aware_accept(&best.values, &r.values, dir, k).accepted {
            best = r;
        }
    }
    Some(best)
}

/// The final report: in-search, re-run and locked-test numbers side by side.
#[derive(Debug, Clone)]
pub struct FinalReport {
    /// Re-run candidates.
    pub reruns: Vec<Rerun>,
    /// Trial number chosen.
    pub chosen: u64,
    /// Its locked test metric.
    pub test: f64,
}

impl FinalReport {
    /// Markdown table.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from(
            "| trial | in-search | re-run mean ± std (n) | test (locked) |\n|---|---|---|---|\n",
        );
        for r in &self.reruns {
            let test = if r.number == self.chosen {
                format!("**{:.6}**", self.test)
            } else {
                "—".into()
            };
            let _ = writeln!(
                s,
                "| {}{} | {:.6} | {:.6} ± {:.6} ({}) | {test} |",
                r.number,
                if r.number == self.chosen {
                    " (chosen)"
                } else {
                    ""
                },
                r.in_search,
                r.mean,
                r.std,
                r.values.len()
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::ParamValue;

    #[test]
    fn walk_forward_never_trains_on_the_future() {
        let s = walk_forward_splits(100, 40, 20);
        assert_eq!(s.len(), 3);
        for (tr, te) in &s {
            assert_eq!(tr.start, 0);
            assert_eq!(tr.end, te.start);
        }
        assert_eq!(s[2].1, 80..100);
        assert!(walk_forward_splits(10, 40, 5).is_empty());
    }

    #[test]
    fn locked_test_runs_once() {
        let mut calls = 0;
        let mut lt = LockedTest::new(|_: &Params| {
            calls += 1;
            0.5
        });
        let p = Params::new();
        assert_eq!(lt.evaluate_once(&p).unwrap(), 0.5);
        assert!(lt.evaluate_once(&p).is_err());
        drop(lt);
        assert_eq!(calls, 1);
    }

    #[test]
    fn noise_is_not_accepted_as_improvement() {
        // A "seed change": same distribution, lucky single run in search.
        let inc = [1.00, 1.02, 0.98, 1.01, 0.99];
        let lucky = [0.99, 1.01, 1.00, 1.02, 0.985];
        assert!(!noise_aware_accept(&inc, &lucky, Direction::Minimize, 2.0).accepted);
        let real = [0.90, 0.91, 0.89, 0.905, 0.9];
        assert!(noise_aware_accept(&inc, &real, Direction::Minimize, 2.0).accepted);
        assert!(!noise_aware_accept(&inc, &real, Direction::Maximize, 2.0).accepted);
    }

    #[test]
    fn rerun_and_choose_prefer_robust_configs() {
        // Trial 0 looked best in search only by luck; trial 1 is truly better.
        let mk = |n: u64, x: f64, v: f64| {
            let mut p = Params::new();
            p.insert("x".into(), ParamValue::Float(x));
            let mut t = Trial::new(n, p, "w");
            t.state = TrialState::Complete;
            t.values = Some(vec![v]);
            t
        };
        let trials = vec![mk(0, 0.9, 0.10), mk(1, 0.1, 0.12), mk(2, 0.5, 0.5)];
        let truth = |p: &Params, seed: u64| {
            let x = p["x"].as_f64().unwrap();
            x + 0.01 * ((seed % 3) as f64 - 1.0)
        };
        let reruns = rerun_top(&trials, Direction::Minimize, 2, &[1, 2, 3, 4, 5, 6], truth);
        assert_eq!(reruns.len(), 2);
        assert_eq!(reruns[0].number, 0);
        let c = choose(&reruns, Direction::Minimize, 2.0).unwrap();
        assert_eq!(c.number, 1);
        let mut lt = LockedTest::new(|p: &Params| truth(p, 99));
        let test = lt.evaluate_once(&c.params).unwrap();
        let rep = FinalReport {
            reruns: reruns.clone(),
            chosen: c.number,
            test,
        };
        let md = rep.to_markdown();
        assert!(
            md.contains("1 (chosen)") && md.contains("**0.090000**"),
            "{md}"
        );
    }
}
