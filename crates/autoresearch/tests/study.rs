//! Study mechanics: failures, panics, timeouts, pruning, parallel workers, enqueue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use autoresearch::{
    MedianPruner, OptimizeOptions, ParamValue, Params, RandomSampler, SearchSpace, Study,
    TpeSampler, TrialError, TrialHandle, TrialState,
};

#[test]
fn failing_panicking_and_hanging_objectives_are_recorded_and_the_study_goes_on() {
    let space = SearchSpace::new().int("i", 0, 1000, 1, false);
    let study = Study::builder(space)
        .sampler(RandomSampler::new())
        .build()
        .unwrap();
    let obj = |t: &TrialHandle| -> Result<f64, TrialError> {
        match t.number() % 4 {
            0 => Ok(1.0),
            1 => Err(TrialError::Failed("diverged".into())),
            2 => panic!("boom in trial {}", t.number()),
            _ => {
                // Hangs until cancelled by the timeout.
                while !t.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(0.0)
            }
        }
    };
    let s = study
        .optimize(
            Arc::new(obj),
            &OptimizeOptions::trials(8)
                .jobs(2)
                .timeout(Duration::from_millis(1500)),
        )
        .unwrap();
    assert_eq!((s.complete, s.failed, s.timed_out), (2, 4, 2), "{s:?}");
    let trials = study.trials().unwrap();
    for t in &trials {
        let expect = match t.number % 4 {
            0 => TrialState::Complete,
            1 | 2 => TrialState::Failed,
            _ => TrialState::TimedOut,
        };
        assert_eq!(t.state, expect, "trial {}", t.number);
    }
    assert!(
        trials[2]
            .message
            .as_deref()
            .unwrap()
            .contains("boom in trial 2")
    );
    assert!(trials[3].message.as_deref().unwrap().contains("timeout"));
}

#[test]
fn non_finite_values_fail_the_trial() {
    let study = Study::builder(SearchSpace::new().float("x", 0.0, 1.0, false))
        .build()
        .unwrap();
    let obj = |_: &TrialHandle| -> Result<f64, TrialError> { Ok(f64::NAN) };
    let s = study
        .optimize(Arc::new(obj), &OptimizeOptions::trials(3))
        .unwrap();
    assert_eq!(s.failed, 3);
    assert!(study.best_trial().unwrap().is_none());
}

#[test]
fn median_pruner_stops_bad_curves_in_a_study() {
    let space = SearchSpace::new().float("final", 0.0, 1.0, false);
    let study = Study::builder(space)
        .sampler(RandomSampler::new())
        .pruner(MedianPruner::default())
        .seed(4)
        .build()
        .unwrap();
    let obj = |t: &TrialHandle| -> Result<f64, TrialError> {
        let f = t.suggest_float("final")?;
        let mut v = 0.0;
        for step in 0..20 {
            v = f + 1.0 / (step as f64 + 1.0);
            t.report(step, v)?;
            if t.should_prune() {
                return Err(TrialError::Pruned);
            }
        }
        Ok(v)
    };
    let s = study
        .optimize(Arc::new(obj), &OptimizeOptions::trials(40))
        .unwrap();
    assert!(s.pruned >= 10, "{s:?}");
    for t in study.trials().unwrap() {
        if t.state == TrialState::Pruned {
            assert!(t.intermediate.len() < 20);
        }
    }
}

#[test]
fn parallel_threads_run_trials_concurrently_with_constant_liar() {
    let space = SearchSpace::new()
        .float("x", -3.0, 3.0, false)
        .float("y", -3.0, 3.0, false);
    let study = Study::builder(space)
        .sampler(TpeSampler {
            n_startup_trials: 4,
            ..TpeSampler::default()
        })
        .build()
        .unwrap();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r2, p2) = (running.clone(), peak.clone());
    let obj = move |t: &TrialHandle| -> Result<f64, TrialError> {
        let now = r2.fetch_add(1, Ordering::SeqCst) + 1;
        p2.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(15));
        r2.fetch_sub(1, Ordering::SeqCst);
        Ok(t.suggest_float("x")?.powi(2) + t.suggest_float("y")?.powi(2))
    };
    let s = study
        .optimize(Arc::new(obj), &OptimizeOptions::trials(40).jobs(4))
        .unwrap();
    assert_eq!(s.complete, 40);
    assert!(peak.load(Ordering::SeqCst) >= 2);
    let trials = study.trials().unwrap();
    assert_eq!(trials.len(), 40);
    // Constant liar: concurrent proposals differ.
    for i in 1..trials.len() {
        assert_ne!(trials[i].params, trials[i - 1].params);
    }
}

#[test]
fn enqueued_trials_run_first_with_their_parameters() {
    let study = Study::builder(SearchSpace::new().float("x", 0.0, 10.0, false))
        .build()
        .unwrap();
    let mut p = Params::new();
    p.insert("x".into(), ParamValue::Float(3.25));
    study.enqueue(p.clone()).unwrap();
    let obj = |t: &TrialHandle| -> Result<f64, TrialError> { Ok(t.suggest_float("x")?) };
    study
        .optimize(Arc::new(obj), &OptimizeOptions::trials(3))
        .unwrap();
    let trials = study.trials().unwrap();
    assert_eq!(trials[0].params, p);
    assert_eq!(trials[0].value(), Some(3.25));
    assert_eq!(trials.len(), 3);
}
