//! `cargo xtask bench hpo`: our samplers (TPE, GP, the default `auto`, random, QMC, CMA-ES)
//! against Optuna 5's TPESampler, GPSampler and RandomSampler on the twelve functions of
//! `autoresearch::functions` (smooth, ridged, multimodal, deceptive, ill-conditioned, mixed
//! integer / categorical); 100 trials, 30 seeds, both sides in this run. Writes
//! `$MAGNET_BENCH_OUT/hpo.json`.
//!
//! Our TPE runs twice: `ours_tpe` is `TpeSampler::default()` (Optuna's model plus the
//! acquisition refinement) and `ours_tpe_optuna_defaults` is `TpeSampler::optuna()` (exactly
//! Optuna's `TPESampler()`), so the refinement's gain shows in one run. Each function's
//! summary has the Mann–Whitney p and per-seed wins of both against Optuna's TPE.
//!
//! Quick mode for iterating on one function: `AUTORESEARCH_BENCH_ONLY=hartmann6` (comma list)
//! and `AUTORESEARCH_BENCH_SEEDS=N` run only those (both sides) and write
//! `hpo-<names>-<N>seeds.json` instead, so the full result file is left alone. Quick mode
//! runs only Optuna's default TPE and random samplers (not its two explicit TPE models).
//! `AUTORESEARCH_BENCH_FIRST_SEED=K` runs seeds `K..K+N` instead of `0..N` (tuning seeds
//! such as 1000.. stay apart from the validation seeds 0..30), and
//! `AUTORESEARCH_BENCH_SAMPLERS=gp,auto` runs only those of ours (the others' summary keys are
//! null); both change the output file's name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use autoresearch::functions::TestFunction;
use autoresearch::math::{mann_whitney_p, quantile};
use autoresearch::{
    AutoSampler, CmaEsSampler, GpSampler, OptimizeOptions, QmcSampler, RandomSampler, Sampler,
    Study, TpeSampler, TrialError, TrialHandle,
};
use serde_json::{Value, json};

const DEFAULT_SEEDS: u64 = 30;

/// Functions and seed count of this run (quick mode from the environment).
fn selection() -> (Vec<TestFunction>, u64, Option<String>) {
    let seeds = std::env::var("AUTORESEARCH_BENCH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    let (fs, seeds, file) = selection_of(seeds);
    let first = first_seed();
    let subset = std::env::var("AUTORESEARCH_BENCH_SAMPLERS").unwrap_or_default();
    if first == 0 && subset.is_empty() {
        return (fs, seeds, file);
    }
    let base = file.unwrap_or_else(|| format!("hpo-{seeds}seeds.json"));
    let stem = base.trim_end_matches(".json");
    let tag = if subset.is_empty() {
        String::new()
    } else {
        format!("-{}", subset.replace(',', "-"))
    };
    (fs, seeds, Some(format!("{stem}-from{first}{tag}.json")))
}

/// First seed of this run (`AUTORESEARCH_BENCH_FIRST_SEED`, default 0).
fn first_seed() -> u64 {
    std::env::var("AUTORESEARCH_BENCH_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn selection_of(seeds: u64) -> (Vec<TestFunction>, u64, Option<String>) {
    match std::env::var("AUTORESEARCH_BENCH_ONLY") {
        Ok(only) if !only.is_empty() => {
            let names: Vec<&str> = only.split(',').map(str::trim).collect();
            let fs: Vec<TestFunction> = TestFunction::ALL
                .into_iter()
                .filter(|f| names.contains(&f.name()))
                .collect();
            assert!(
                !fs.is_empty(),
                "AUTORESEARCH_BENCH_ONLY={only}: no such function"
            );
            (
                fs,
                seeds,
                Some(format!("hpo-{}-{seeds}seeds.json", names.join("-"))),
            )
        }
        _ if seeds != DEFAULT_SEEDS => (
            TestFunction::ALL.to_vec(),
            seeds,
            Some(format!("hpo-{seeds}seeds.json")),
        ),
        _ => (TestFunction::ALL.to_vec(), seeds, None),
    }
}
const TRIALS: usize = 100;

fn make(name: &str, seed: u64) -> Box<dyn Sampler> {
    match name {
        // Optuna 5's model plus the acquisition refinement.
        "tpe" => Box::new(TpeSampler::default()),
        // Exactly Optuna 5's TPESampler(): multivariate, constant liar, best of 24 draws.
        "tpe_optuna_defaults" => Box::new(TpeSampler::optuna()),
        "tpe_independent" => Box::new(TpeSampler::independent()),
        "random" => Box::new(RandomSampler::new()),
        "qmc" => Box::new(QmcSampler::new(seed)),
        "gp" => Box::new(GpSampler::default()),
        "auto" => Box::new(AutoSampler::default()),
        _ => Box::new(CmaEsSampler::new()),
    }
}

/// Best value and overhead (study wall time minus time inside the objective).
fn run(f: TestFunction, sampler: &str, seed: u64) -> (f64, f64) {
    let study = Study::builder(f.space())
        .sampler_boxed(make(sampler, seed))
        .seed(seed)
        .build()
        .expect("study");
    let spent = Arc::new(std::sync::Mutex::new(0.0f64));
    let s2 = spent.clone();
    let obj = move |t: &TrialHandle| -> Result<f64, TrialError> {
        let t0 = Instant::now();
        let v = f.eval(t.params());
        *s2.lock().expect("lock") += t0.elapsed().as_secs_f64();
        Ok(v)
    };
    let t0 = Instant::now();
    study
        .optimize(Arc::new(obj), &OptimizeOptions::trials(TRIALS))
        .expect("optimize");
    let wall = t0.elapsed().as_secs_f64();
    let best = study
        .best_trial()
        .expect("trials")
        .and_then(|t| t.value())
        .expect("a complete trial");
    let inside = *spent.lock().expect("lock");
    (best, wall - inside)
}

fn stats(xs: &[f64]) -> Value {
    json!({
        "median": quantile(xs, 0.5),
        "q25": quantile(xs, 0.25),
        "q75": quantile(xs, 0.75),
    })
}

fn med(xs: &[f64]) -> f64 {
    quantile(xs, 0.5).unwrap_or(f64::NAN)
}

/// Mann–Whitney p and the number of seeds on which `ours` is strictly better (lower).
fn versus(ours: &[f64], theirs: &[f64]) -> (Option<f64>, usize) {
    let wins = ours.iter().zip(theirs).filter(|(a, b)| a < b).count();
    (mann_whitney_p(ours, theirs), wins)
}

/// Optuna results given as files (`AUTORESEARCH_BENCH_OPTUNA_JSON=a.json,b.json`, outputs of
/// `hpo_optuna.py` over consecutive seed ranges, merged in order) instead of running Python
/// here: Optuna's GP takes 15-60 s per study, so on a shared machine its side can be run in
/// chunks alongside ours (docs/autoresearch.md says what was run how).
fn optuna_from_files(files: &str) -> Value {
    let mut merged = serde_json::Map::new();
    let mut version = Value::Null;
    for f in files.split(',') {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("reading {f}: {e}"));
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
        version = v["optuna_version"].clone();
        for (func, samplers) in v["results"].as_object().into_iter().flatten() {
            let fm = merged
                .entry(func.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("object");
            for (sname, r) in samplers.as_object().into_iter().flatten() {
                let e = fm
                    .entry(sname.clone())
                    .or_insert_with(|| json!({"best": [], "overhead_s": []}));
                for key in ["best", "overhead_s"] {
                    let extra = r[key].as_array().cloned().unwrap_or_default();
                    e[key].as_array_mut().expect("array").extend(extra);
                }
            }
        }
    }
    json!({"optuna_version": version, "results": merged})
}

fn optuna(fs: &[TestFunction], seeds: u64, first: u64, extras: bool) -> Option<Value> {
    if let Ok(files) = std::env::var("AUTORESEARCH_BENCH_OPTUNA_JSON") {
        return Some(optuna_from_files(&files));
    }
    let Ok(py) = std::env::var("MAGNET_PYTHON") else {
        eprintln!("MAGNET_PYTHON unset: Optuna side skipped");
        return None;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/hpo_optuna.py");
    let t0 = Instant::now();
    let out = std::process::Command::new(&py)
        .args([
            script.to_string(),
            seeds.to_string(),
            TRIALS.to_string(),
            fs.iter().map(|f| f.name()).collect::<Vec<_>>().join(","),
            u8::from(extras).to_string(),
            "tpe,random,gp".to_string(),
            first.to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running MAGNET_PYTHON");
    assert!(out.status.success(), "optuna script failed: {}", out.status);
    eprintln!("optuna side: {:.1} s", t0.elapsed().as_secs_f64());
    Some(serde_json::from_slice(&out.stdout).expect("optuna JSON"))
}

fn main() {
    let samplers = [
        "tpe",
        "tpe_optuna_defaults",
        "tpe_independent",
        "random",
        "qmc",
        "cmaes",
        "gp",
        "auto",
    ];
    // function -> sampler -> (best per seed, overhead per seed)
    type Runs<'a> = BTreeMap<&'a str, (Vec<f64>, Vec<f64>)>;
    let mut ours: BTreeMap<&str, Runs<'_>> = BTreeMap::new();
    let (fs, seeds, quick_file) = selection();
    let first = first_seed();
    let subset = std::env::var("AUTORESEARCH_BENCH_SAMPLERS").unwrap_or_default();
    let wanted = |s: &str| subset.is_empty() || subset.split(',').any(|w| w.trim() == s);
    let t0 = Instant::now();
    for &f in &fs {
        for s in samplers {
            if !wanted(s) {
                // Not run: empty, so its summary keys are null.
                ours.entry(f.name())
                    .or_default()
                    .insert(s, (vec![], vec![]));
                continue;
            }
            let (best, time): (Vec<f64>, Vec<f64>) =
                (first..first + seeds).map(|seed| run(f, s, seed)).unzip();
            eprintln!(
                "ours {:>16} {:>19}: median best {:.4}, {:.2} ms/study",
                f.name(),
                s,
                med(&best),
                1e3 * med(&time)
            );
            ours.entry(f.name()).or_default().insert(s, (best, time));
        }
    }
    eprintln!("our side: {:.1} s", t0.elapsed().as_secs_f64());
    let opt = optuna(&fs, seeds, first, quick_file.is_none());
    let mut summary = serde_json::Map::new();
    let mut detail = serde_json::Map::new();
    for &f in &fs {
        let o = &ours[f.name()];
        let mut d = serde_json::Map::new();
        for s in samplers {
            let (b, t) = &o[s];
            d.insert(
                format!("ours_{s}"),
                json!({"best": stats(b), "overhead_s_per_study": stats(t), "per_seed_best": b}),
            );
        }
        let mut sm = json!({
            "optimum": f.optimum(),
            "ours_tpe_median": med(&o["tpe"].0),
            "ours_tpe_iqr": [quantile(&o["tpe"].0, 0.25), quantile(&o["tpe"].0, 0.75)],
            "ours_tpe_model": "multivariate, Optuna 5's defaults plus acquisition refinement (TpeSampler::default())",
            "ours_tpe_optuna_defaults_median": med(&o["tpe_optuna_defaults"].0),
            "ours_tpe_optuna_defaults_iqr": [
                quantile(&o["tpe_optuna_defaults"].0, 0.25),
                quantile(&o["tpe_optuna_defaults"].0, 0.75)
            ],
            "ours_tpe_independent_median": med(&o["tpe_independent"].0),
            "ours_random_median": med(&o["random"].0),
            "ours_qmc_median": med(&o["qmc"].0),
            "ours_cmaes_median": med(&o["cmaes"].0),
            "ours_gp_median": med(&o["gp"].0),
            "ours_auto_median": med(&o["auto"].0),
            "ours_gp_sampler_s_per_trial": med(&o["gp"].1) / TRIALS as f64,
            "ours_auto_sampler_s_per_trial": med(&o["auto"].1) / TRIALS as f64,
            "ours_tpe_sampler_s_per_study": med(&o["tpe"].1),
            "ours_tpe_optuna_defaults_sampler_s_per_study": med(&o["tpe_optuna_defaults"].1),
        });
        if let Some(op) = &opt {
            let r = &op["results"][f.name()];
            let vals = |s: &str, k: &str| -> Vec<f64> {
                r[s][k]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_f64).collect())
                    .unwrap_or_default()
            };
            let (tb, tt) = (vals("tpe", "best"), vals("tpe", "overhead_s"));
            let (rb, rt) = (vals("random", "best"), vals("random", "overhead_s"));
            let m = sm.as_object_mut().expect("object");
            m.insert("optuna_tpe_median".into(), json!(med(&tb)));
            m.insert(
                "optuna_tpe_iqr".into(),
                json!([quantile(&tb, 0.25), quantile(&tb, 0.75)]),
            );
            m.insert("optuna_random_median".into(), json!(med(&rb)));
            m.insert("optuna_tpe_sampler_s_per_study".into(), json!(med(&tt)));
            m.insert(
                "sampler_time_ratio".into(),
                json!(med(&tt) / med(&o["tpe"].1)),
            );
            m.insert(
                "sampler_time_ratio_optuna_defaults".into(),
                json!(med(&tt) / med(&o["tpe_optuna_defaults"].1)),
            );
            for (key, ours_best) in [
                ("ours_tpe", &o["tpe"].0),
                ("ours_tpe_optuna_defaults", &o["tpe_optuna_defaults"].0),
            ] {
                let (p, wins) = versus(ours_best, &tb);
                m.insert(format!("{key}_vs_optuna_tpe_mannwhitney_p"), json!(p));
                m.insert(format!("{key}_wins_vs_optuna_tpe"), json!(wins));
            }
            let (gb, gt) = (vals("gp", "best"), vals("gp", "overhead_s"));
            if !gb.is_empty() {
                // Seeds where both sides ran (the Optuna GP side may cover fewer seeds).
                let n = gb.len().min(o["gp"].0.len());
                let (ours_gp, ours_auto) = (&o["gp"].0[..n], &o["auto"].0[..n]);
                let (opt_gp, opt_tpe) = (&gb[..n], &tb[..n.min(tb.len())]);
                m.insert("optuna_gp_seeds".into(), json!(n));
                m.insert("optuna_gp_median".into(), json!(med(opt_gp)));
                m.insert("ours_gp_median_same_seeds".into(), json!(med(ours_gp)));
                m.insert("ours_auto_median_same_seeds".into(), json!(med(ours_auto)));
                m.insert("optuna_tpe_median_same_seeds".into(), json!(med(opt_tpe)));
                m.insert(
                    "optuna_gp_sampler_s_per_trial".into(),
                    json!(med(&gt) / TRIALS as f64),
                );
                m.insert(
                    "gp_sampler_time_ratio".into(),
                    json!(med(&gt) / med(&o["gp"].1)),
                );
                let (p, wins) = versus(ours_gp, opt_gp);
                m.insert("ours_gp_vs_optuna_gp_mannwhitney_p".into(), json!(p));
                m.insert("ours_gp_wins_vs_optuna_gp".into(), json!(wins));
                for (key, theirs) in [("optuna_gp", opt_gp), ("optuna_tpe", opt_tpe)] {
                    let (p, wins) = versus(ours_auto, theirs);
                    m.insert(format!("ours_auto_vs_{key}_mannwhitney_p"), json!(p));
                    m.insert(format!("ours_auto_wins_vs_{key}"), json!(wins));
                }
                d.insert(
                    "optuna_gp".into(),
                    json!({"best": stats(&gb), "overhead_s_per_study": stats(&gt), "per_seed_best": gb}),
                );
            }
            d.insert(
                "optuna_tpe".into(),
                json!({"best": stats(&tb), "overhead_s_per_study": stats(&tt), "per_seed_best": tb}),
            );
            d.insert(
                "optuna_random".into(),
                json!({"best": stats(&rb), "overhead_s_per_study": stats(&rt), "per_seed_best": rb}),
            );
            // Explicit TPE models, run for the target function only (keeps the run short).
            for extra in ["tpe_multivariate", "tpe_independent"] {
                let (b, t) = (vals(extra, "best"), vals(extra, "overhead_s"));
                if b.is_empty() {
                    continue;
                }
                m.insert(format!("optuna_{extra}_median"), json!(med(&b)));
                d.insert(
                    format!("optuna_{extra}"),
                    json!({"best": stats(&b), "overhead_s_per_study": stats(&t), "per_seed_best": b}),
                );
            }
        }
        eprintln!("{}: {sm}", f.name());
        summary.insert(f.name().into(), sm);
        detail.insert(f.name().into(), Value::Object(d));
    }
    let doc = json!({
        "area": "hpo",
        "trials": TRIALS,
        "seeds": seeds,
        "first_seed": first,
        "sampler_time": "study wall time minus time inside the objective, median per study",
        "optuna_version": opt.as_ref().map(|o| o["optuna_version"].clone()),
        "summary": summary,
        "detail": detail,
    });
    let dir = std::env::var("MAGNET_BENCH_OUT").unwrap_or_else(|_| "target/bench".into());
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = std::path::Path::new(&dir).join(quick_file.as_deref().unwrap_or("hpo.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("json")).expect("write");
    eprintln!("wrote {}", path.display());
}
