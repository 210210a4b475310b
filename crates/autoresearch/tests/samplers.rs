//! Samplers on known functions, determinism, conditional spaces, phases, grid, multi-objective.

use std::sync::Arc;

use autoresearch::functions::TestFunction;
use autoresearch::math::median;
use autoresearch::sampler::choice;
use autoresearch::trial::dominates;
use autoresearch::{
    CmaEsSampler, Direction, GridSampler, MultiObjective, OptimizeOptions, ParamValue, Phase,
    PhasedSampler, QmcSampler, RandomSampler, Sampler, SearchSpace, Study, TpeSampler, TrialError,
    TrialHandle, TrialState,
};

fn best_on(f: TestFunction, make: &dyn Fn() -> Box<dyn Sampler>, seed: u64, n: usize) -> f64 {
    let study = Study::builder(f.space())
        .sampler_boxed(make())
        .seed(seed)
        .build()
        .unwrap();
    let obj = move |t: &TrialHandle| -> Result<f64, TrialError> { Ok(f.eval(t.params())) };
    study
        .optimize(Arc::new(obj), &OptimizeOptions::trials(n))
        .unwrap();
    study.best_trial().unwrap().unwrap().value().unwrap()
}

fn medians(f: TestFunction, make: &dyn Fn() -> Box<dyn Sampler>, n: usize) -> f64 {
    let v: Vec<f64> = (0..12).map(|s| best_on(f, make, s, n)).collect();
    median(&v).unwrap()
}

#[test]
fn tpe_and_cmaes_beat_random_on_hartmann6() {
    let f = TestFunction::Hartmann6;
    let random = medians(f, &|| Box::new(RandomSampler::new()), 100);
    let tpe = medians(f, &|| Box::new(TpeSampler::default()), 100);
    let tpe_ind = medians(f, &|| Box::new(TpeSampler::independent()), 100);
    let cma = medians(f, &|| Box::new(CmaEsSampler::new()), 100);
    eprintln!(
        "hartmann6 medians: random {random:.4} tpe {tpe:.4} tpe-ind {tpe_ind:.4} cma {cma:.4}"
    );
    assert!(tpe < random - 0.6, "tpe {tpe} vs random {random}");
    assert!(
        tpe_ind < random - 0.3,
        "independent tpe {tpe_ind} vs random {random}"
    );
    assert!(cma < random - 0.3, "cma {cma} vs random {random}");
}

#[test]
fn tpe_beats_random_on_mixed_and_branin() {
    for f in [TestFunction::Mixed, TestFunction::Branin] {
        let random = medians(f, &|| Box::new(RandomSampler::new()), 80);
        let tpe = medians(f, &|| Box::new(TpeSampler::default()), 80);
        let regret_r = random - f.optimum();
        let regret_t = tpe - f.optimum();
        eprintln!(
            "{}: random regret {regret_r:.4}, tpe regret {regret_t:.4}",
            f.name()
        );
        assert!(
            regret_t < 0.5 * regret_r,
            "{}: tpe {tpe} random {random}",
            f.name()
        );
    }
}

#[test]
fn qmc_covers_the_cube_evenly() {
    let mut q = QmcSampler::new(3);
    let pts: Vec<Vec<f64>> = (0..256).map(|i| q.point(i, 2)).collect();
    // Every cell of an 8x8 grid holds a point (random would leave ~1.3 empty on average... and
    // often more); discrepancy check.
    let mut cells = [[0u32; 8]; 8];
    for p in &pts {
        cells[(p[0] * 8.0) as usize][(p[1] * 8.0) as usize] += 1;
    }
    assert!(
        cells.iter().flatten().all(|&c| (2..=6).contains(&c)),
        "{cells:?}"
    );
    // Scrambling depends on the seed.
    assert_ne!(QmcSampler::new(4).point(5, 2), pts[5]);
}

#[test]
fn fixed_seed_is_deterministic() {
    for make in [
        (|_| Box::new(TpeSampler::default()) as Box<dyn Sampler>) as fn(u64) -> Box<dyn Sampler>,
        |_| Box::new(CmaEsSampler::new()),
        |s| Box::new(QmcSampler::new(s)),
    ] {
        let run = |seed| {
            let study = Study::builder(TestFunction::Mixed.space())
                .sampler_boxed(make(seed))
                .seed(seed)
                .build()
                .unwrap();
            let obj = |t: &TrialHandle| -> Result<f64, TrialError> {
                Ok(TestFunction::Mixed.eval(t.params()))
            };
            study
                .optimize(Arc::new(obj), &OptimizeOptions::trials(30))
                .unwrap();
            study
                .trials()
                .unwrap()
                .into_iter()
                .map(|t| t.params)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}

fn conditional_space() -> SearchSpace {
    SearchSpace::new()
        .categorical("opt", vec![choice("adam"), choice("sgd")])
        .float("lr", 1e-4, 1.0, true)
        .float("momentum", 0.0, 0.99, false)
        .when("opt", vec![choice("sgd")])
        .int("layers", 1, 8, 1, false)
}

#[test]
fn conditional_parameters_only_appear_when_active() {
    for sampler in [
        Box::new(TpeSampler::default()) as Box<dyn Sampler>,
        Box::new(RandomSampler::new()),
        Box::new(CmaEsSampler::new()),
        Box::new(QmcSampler::new(1)),
    ] {
        let study = Study::builder(conditional_space())
            .sampler_boxed(sampler)
            .build()
            .unwrap();
        let obj = |t: &TrialHandle| -> Result<f64, TrialError> {
            let lr = t.suggest_float("lr")?;
            let opt = t.suggest_categorical("opt")?.clone();
            let m = if opt == choice("sgd") {
                t.suggest_float("momentum")?
            } else {
                assert!(t.suggest_float("momentum").is_err());
                0.9
            };
            Ok((lr.ln() - 0.01f64.ln()).powi(2) + (m - 0.9).powi(2))
        };
        study
            .optimize(Arc::new(obj), &OptimizeOptions::trials(40))
            .unwrap();
        let trials = study.trials().unwrap();
        assert_eq!(trials.len(), 40);
        let mut saw = [false, false];
        for t in &trials {
            assert_eq!(t.state, TrialState::Complete, "{:?}", t.message);
            let sgd = t.params["opt"] == choice("sgd");
            saw[usize::from(sgd)] = true;
            assert_eq!(t.params.contains_key("momentum"), sgd);
        }
        assert!(saw[0] && saw[1]);
    }
}

#[test]
fn grid_enumerates_then_stops() {
    let space = SearchSpace::new()
        .categorical(
            "a",
            vec![ParamValue::Int(1), ParamValue::Int(2), ParamValue::Int(3)],
        )
        .float("x", 0.0, 1.0, false);
    let study = Study::builder(space)
        .sampler(GridSampler::new(4, 0))
        .build()
        .unwrap();
    let obj =
        |t: &TrialHandle| -> Result<f64, TrialError> { t.suggest_float("x").map_err(Into::into) };
    let s = study
        .optimize(Arc::new(obj), &OptimizeOptions::trials(100))
        .unwrap();
    assert!(s.exhausted);
    assert_eq!(s.complete, 12);
    let trials = study.trials().unwrap();
    for i in 0..trials.len() {
        for j in 0..i {
            assert_ne!(trials[i].params, trials[j].params);
        }
    }
}

#[test]
fn phased_search_moves_one_group_at_a_time() {
    let space = SearchSpace::new()
        .float("a", -5.0, 5.0, false)
        .float("b", -5.0, 5.0, false)
        .int("c", 0, 20, 1, false);
    let phases = vec![
        Phase {
            params: vec!["a".into()],
            sampler: Box::new(TpeSampler {
                n_startup_trials: 4,
                ..TpeSampler::default()
            }),
            trials: 15,
        },
        Phase {
            params: vec!["b".into(), "c".into()],
            sampler: Box::new(TpeSampler {
                n_startup_trials: 5,
                ..TpeSampler::default()
            }),
            trials: 25,
        },
    ];
    let study = Study::builder(space)
        .sampler(PhasedSampler::new(phases, None))
        .seed(2)
        .build()
        .unwrap();
    let obj = |t: &TrialHandle| -> Result<f64, TrialError> {
        let a = t.suggest_float("a")?;
        let b = t.suggest_float("b")?;
        let c = t.suggest_int("c")? as f64;
        Ok((a - 2.0).powi(2) + (b + 1.0).powi(2) + 0.1 * (c - 13.0).powi(2))
    };
    let s = study
        .optimize(Arc::new(obj), &OptimizeOptions::trials(100))
        .unwrap();
    assert!(s.exhausted);
    let trials = study.trials().unwrap();
    assert_eq!(trials.len(), 40);
    // Phase 1 keeps b and c at their defaults (centers).
    for t in &trials[..15] {
        assert_eq!(t.params["b"], ParamValue::Float(0.0));
        assert_eq!(t.params["c"], ParamValue::Int(10));
    }
    // Phase 2 keeps `a` at phase 1's best.
    let best_a = trials[..15]
        .iter()
        .min_by(|x, y| x.value().unwrap().total_cmp(&y.value().unwrap()))
        .unwrap()
        .params["a"]
        .clone();
    for t in &trials[15..] {
        assert_eq!(t.params["a"], best_a);
    }
    let best = study.best_trial().unwrap().unwrap().value().unwrap();
    assert!(best < 1.5, "{best}");
}

#[test]
fn grid_phase_inside_a_phased_search_tries_each_point_once() {
    // The trials of a grid phase also carry the parameters other phases fixed, so "tried"
    // must compare only the grid's own parameters (this once re-ran the first point).
    let space = SearchSpace::new().float("lr", 0.1, 1.0, false).categorical(
        "ctx",
        [64, 128, 256].iter().map(|&v| ParamValue::Int(v)).collect(),
    );
    let phases = vec![
        Phase {
            params: vec!["lr".into()],
            sampler: Box::new(QmcSampler::new(0)),
            trials: 2,
        },
        Phase {
            params: vec!["ctx".into()],
            sampler: Box::new(GridSampler::new(4, 1)),
            trials: 3,
        },
    ];
    let study = Study::builder(space)
        .sampler(PhasedSampler::new(phases, None))
        .seed(3)
        .build()
        .unwrap();
    let obj = |t: &TrialHandle| -> Result<f64, TrialError> {
        Ok(t.suggest_float("lr")? + t.suggest_categorical("ctx")?.as_f64().unwrap_or(0.0))
    };
    study
        .optimize(Arc::new(obj), &OptimizeOptions::trials(5))
        .unwrap();
    let mut ctx: Vec<i64> = study.trials().unwrap()[2..]
        .iter()
        .map(|t| match t.params["ctx"] {
            ParamValue::Int(v) => v,
            ref other => panic!("{other:?}"),
        })
        .collect();
    ctx.sort_unstable();
    assert_eq!(ctx, vec![64, 128, 256]);
}

#[test]
fn multi_objective_pareto_front() {
    let space = SearchSpace::new().float("x", 0.0, 1.0, false);
    let study = Study::builder(space)
        .directions(vec![Direction::Minimize, Direction::Minimize])
        .seed(1)
        .build()
        .unwrap();
    let obj = MultiObjective(|t: &TrialHandle| -> Result<Vec<f64>, TrialError> {
        let x = t.suggest_float("x")?;
        Ok(vec![x * x, (x - 1.0) * (x - 1.0)])
    });
    study
        .optimize(Arc::new(obj), &OptimizeOptions::trials(40))
        .unwrap();
    let front = study.pareto_front().unwrap();
    // Every trial with x in [0,1] is Pareto optimal for this problem.
    assert_eq!(front.len(), 40);
    let space2 = SearchSpace::new().float("x", -1.0, 2.0, false);
    let study = Study::builder(space2)
        .directions(vec![Direction::Minimize, Direction::Maximize])
        .sampler(RandomSampler::new())
        .build()
        .unwrap();
    let obj = MultiObjective(|t: &TrialHandle| -> Result<Vec<f64>, TrialError> {
        let x = t.suggest_float("x")?;
        Ok(vec![x * x, -(x - 1.0) * (x - 1.0)])
    });
    study
        .optimize(Arc::new(obj), &OptimizeOptions::trials(50))
        .unwrap();
    let front = study.pareto_front().unwrap();
    assert!(!front.is_empty() && front.len() < 50);
    let dirs = [Direction::Minimize, Direction::Maximize];
    let vals = |t: &autoresearch::Trial| t.values.clone().unwrap();
    for a in &front {
        for b in &front {
            assert!(!dominates(&vals(a), &vals(b), &dirs));
        }
    }
    for t in study.trials().unwrap() {
        if !front.iter().any(|f| f.number == t.number) {
            assert!(front.iter().any(|f| dominates(&vals(f), &vals(&t), &dirs)));
        }
    }
}
