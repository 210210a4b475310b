//! Shared by the integration tests that check CMA-ES resume on several storages.

use std::sync::Arc;

use autoresearch::{CmaEsSampler, ParamValue, Params, SearchSpace, Storage, Study, TrialError};

/// Trials in the CMA-ES resume scenario (5 generations of 8: d = 4 gives λ = 8).
pub const CMA_TRIALS: u64 = 40;
/// Where the first process stops: in the middle of the third generation, after the
/// enqueued trial and the failed one.
pub const CMA_CUT: u64 = 21;

/// A CMA-ES study over three floats, an integer and a categorical, seed 5.
pub fn cma_study(storage: Arc<dyn Storage>) -> Study {
    let space = SearchSpace::new()
        .float("x0", -3.0, 3.0, false)
        .float("x1", -3.0, 3.0, false)
        .float("x2", 0.01, 10.0, true)
        .int("k", 0, 20, 1, false)
        .categorical(
            "c",
            vec![ParamValue::Str("a".into()), ParamValue::Str("b".into())],
        );
    Study::builder(space)
        .name("cma-resume")
        .sampler(CmaEsSampler::new())
        .storage(storage)
        .seed(5)
        .build()
        .unwrap()
}

/// Asks and tells trials `from..to` one by one: trial 6 is enqueued by hand (not drawn by
/// CMA-ES) and trial 11 fails, so the replay has to skip and fill such trials.
pub fn cma_drive(study: &Study, from: u64, to: u64) {
    for n in from..to {
        if n == 6 {
            let mut fixed = Params::new();
            for (k, v) in [("x0", 2.5), ("x1", -2.5), ("x2", 5.0)] {
                fixed.insert(k.into(), ParamValue::Float(v));
            }
            fixed.insert("k".into(), ParamValue::Int(19));
            fixed.insert("c".into(), ParamValue::Str("b".into()));
            study.enqueue(fixed).unwrap();
        }
        let t = study.ask().unwrap();
        assert_eq!(t.number(), n);
        let outcome = if n == 11 {
            Err(TrialError::Failed("scripted failure".into()))
        } else {
            let x0 = t.suggest_float("x0").unwrap();
            let x1 = t.suggest_float("x1").unwrap();
            let x2 = t.suggest_float("x2").unwrap().ln();
            let k = t.suggest_int("k").unwrap() as f64;
            let c = if t.suggest_categorical("c").unwrap() == &ParamValue::Str("a".into()) {
                0.0
            } else {
                1.0
            };
            // Rotated, ill-conditioned bowl, so the covariance has something to learn.
            let (u, v) = (x0 + x1 - 1.0, x0 - x1);
            Ok(vec![
                10.0 * u * u + v * v + (x2 - 1.0).powi(2) + 0.05 * (k - 7.0).powi(2) + c,
            ])
        };
        study.tell(&t, outcome).unwrap();
    }
}

/// The parameters of every trial, by number.
pub fn cma_params(study: &Study) -> Vec<Params> {
    study
        .trials()
        .unwrap()
        .into_iter()
        .map(|t| t.params)
        .collect()
}
