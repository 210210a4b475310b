//! PostgreSQL storage against a real server (`MAGNET_POSTGRES_URL`, started by
//! `.ci/services.d/postgres.sh`): a round trip, many connections asking at once, and several
//! `autoresearch` worker processes sharing one study.
#![cfg(feature = "postgres")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;

use autoresearch::{
    Direction, OptimizeOptions, ParamValue, Params, PostgresStorage, SearchSpace, Storage, Study,
    TpeSampler, TrialError, TrialHandle, TrialState,
};

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

/// The server URL, or `None` (test skipped) when it is not configured and not required.
fn url() -> Option<String> {
    match std::env::var("MAGNET_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var("MAGNET_REQUIRE_ORACLES").as_deref() != Ok("1"),
                "MAGNET_POSTGRES_URL is unset but MAGNET_REQUIRE_ORACLES=1 \
                 (source .ci/services.d/postgres.sh)"
            );
            eprintln!("skipping: MAGNET_POSTGRES_URL is unset (source .ci/services.d/postgres.sh)");
            None
        }
    }
}

/// A study name no other test run uses.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{tag}-{}-{nanos}", std::process::id())
}

fn space() -> SearchSpace {
    SearchSpace::new()
        .float("x", -3.0, 3.0, false)
        .int("n", 1, 32, 1, true)
        .categorical(
            "act",
            vec![
                ParamValue::Str("relu".into()),
                ParamValue::Str("gelu".into()),
            ],
        )
}

/// A CMA-ES study stopped mid-generation and resumed on a new connection (a new process's
/// sampler) asks exactly what the uninterrupted study asks.
#[test]
fn cmaes_resumes_from_the_database() {
    let Some(url) = url() else { return };
    let whole = support::cma_study(Arc::new(autoresearch::InMemoryStorage::new()));
    support::cma_drive(&whole, 0, support::CMA_TRIALS);
    let name = unique("cma");
    let connect =
        || -> Arc<dyn Storage> { Arc::new(PostgresStorage::connect(&url, &name).unwrap()) };
    support::cma_drive(&support::cma_study(connect()), 0, support::CMA_CUT);
    let resumed = support::cma_study(connect());
    support::cma_drive(&resumed, support::CMA_CUT, support::CMA_TRIALS);
    assert_eq!(support::cma_params(&resumed), support::cma_params(&whole));
    PostgresStorage::connect(&url, &name)
        .unwrap()
        .delete_study()
        .unwrap();
}

#[test]
fn round_trip_through_the_database() {
    let Some(url) = url() else { return };
    let name = unique("roundtrip");
    let storage = Arc::new(PostgresStorage::connect(&url, &name).unwrap());
    let study = Study::builder(space())
        .name("ignored: the storage names the study")
        .sampler(TpeSampler {
            n_startup_trials: 4,
            ..TpeSampler::default()
        })
        .storage(storage.clone())
        .seed(3)
        .attr("purpose", serde_json::json!("round trip"))
        .build()
        .unwrap();
    assert_eq!(study.meta().name, name);
    let mut warm = Params::new();
    warm.insert("x".into(), ParamValue::Float(0.5));
    warm.insert("n".into(), ParamValue::Int(4));
    warm.insert("act".into(), ParamValue::Str("gelu".into()));
    assert_eq!(study.enqueue(warm.clone()).unwrap(), 0);
    let objective = |t: &TrialHandle| -> Result<f64, TrialError> {
        let x = t.suggest_float("x")?;
        let n = t.suggest_int("n")?;
        if n == 32 {
            return Err(TrialError::Failed("n = 32 is refused".into()));
        }
        for step in 0..3 {
            t.report(step, x * x + 1.0 / (step as f64 + 1.0))?;
        }
        t.set_user_attr("n_squared", serde_json::json!(n * n))?;
        Ok(x * x + (n as f64).ln())
    };
    study
        .optimize(Arc::new(objective), &OptimizeOptions::trials(10))
        .unwrap();
    let mine = study.trials().unwrap();
    assert_eq!(mine.len(), 10);
    assert_eq!(mine[0].params, warm);
    assert_eq!(mine[0].state, TrialState::Complete);
    assert!(mine.iter().all(|t| t.state.is_finished()));

    // A second connection (another process would do the same) reads the same study.
    let other = PostgresStorage::connect(&url, &name).unwrap();
    let meta = other.meta().unwrap().expect("stored study");
    assert_eq!(meta.space, space());
    assert_eq!(meta.attrs["purpose"], serde_json::json!("round trip"));
    assert_eq!(other.trials().unwrap(), mine);
    let complete = mine
        .iter()
        .find(|t| t.state == TrialState::Complete)
        .unwrap();
    assert_eq!(complete.intermediate.len(), 3);
    assert!(complete.user_attrs.contains_key("n_squared"));

    // The materialised trial rows agree with the op log.
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let rows = client
        .query(
            "SELECT t.number, t.state, t.trial::text FROM autoresearch_trials t \
             JOIN autoresearch_studies s ON s.id = t.study_id WHERE s.name = $1 ORDER BY t.number",
            &[&name],
        )
        .unwrap();
    assert_eq!(rows.len(), mine.len());
    for (row, t) in rows.iter().zip(&mine) {
        assert_eq!(row.get::<_, i64>(0), t.number as i64);
        assert_eq!(row.get::<_, String>(1), t.state.as_str());
        let stored: autoresearch::Trial = serde_json::from_str(&row.get::<_, String>(2)).unwrap();
        assert_eq!(&stored, t);
    }

    // Reopening with other directions is refused; deleting removes everything.
    let again = Study::builder(space())
        .direction(Direction::Maximize)
        .storage(Arc::new(PostgresStorage::connect(&url, &name).unwrap()))
        .build();
    assert!(again.is_err());
    assert!(other.study_names().unwrap().contains(&name));
    other.delete_study().unwrap();
    assert!(other.meta().unwrap().is_none());
}

#[test]
fn concurrent_connections_number_trials_once() {
    let Some(url) = url() else { return };
    let name = unique("threads");
    const WORKERS: usize = 6;
    const EACH: usize = 8;
    std::thread::scope(|scope| {
        for w in 0..WORKERS {
            let (url, name) = (url.clone(), name.clone());
            scope.spawn(move || {
                // Each worker has its own connection, as separate processes would.
                let study = Study::builder(space())
                    .storage(Arc::new(PostgresStorage::connect(&url, &name).unwrap()))
                    .worker(&format!("w{w}"))
                    .seed(9)
                    .build()
                    .unwrap();
                for _ in 0..EACH {
                    let t = study.ask().unwrap();
                    let x = t.suggest_float("x").unwrap();
                    study.tell(&t, Ok(vec![x * x])).unwrap();
                }
            });
        }
    });
    let storage = PostgresStorage::connect(&url, &name).unwrap();
    storage.meta().unwrap().expect("study exists");
    let trials = storage.trials().unwrap();
    assert_eq!(trials.len(), WORKERS * EACH);
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(t.number, i as u64);
        assert_eq!(t.state, TrialState::Complete);
    }
    let mut per_worker = BTreeMap::new();
    for t in &trials {
        *per_worker.entry(t.worker.clone()).or_insert(0) += 1;
    }
    assert_eq!(per_worker.len(), WORKERS);
    assert!(per_worker.values().all(|&c| c == EACH), "{per_worker:?}");
    storage.delete_study().unwrap();
}

#[test]
fn worker_processes_share_one_study() {
    let Some(url) = url() else { return };
    let name = unique("procs");
    let dir = tempfile::tempdir().unwrap();
    let space_file = dir.path().join("space.toml");
    std::fs::write(
        &space_file,
        "[[params]]\nname = \"x\"\ntype = \"float\"\nlow = -2.0\nhigh = 2.0\n\n\
         [[params]]\nname = \"k\"\ntype = \"int\"\nlow = 1\nhigh = 5\n",
    )
    .unwrap();
    const PROCS: usize = 4;
    const EACH: usize = 6;
    let script =
        r#"awk -v x={x} -v k={k} 'BEGIN { printf "{\"metric\":%f}\n", (x-0.5)^2 + k/10 }'"#;
    let children: Vec<_> = (0..PROCS)
        .map(|i| {
            let wdir = dir.path().join(format!("worker{i}"));
            Command::new(BIN)
                .args([
                    "run",
                    "--storage",
                    &url,
                    "--study-name",
                    &name,
                    "--space",
                    space_file.to_str().unwrap(),
                    "--study",
                    wdir.to_str().unwrap(),
                    "--trials",
                    &EACH.to_string(),
                    "--jobs",
                    "2",
                    "--seed",
                    "5",
                    "--",
                    "sh",
                    "-c",
                    script,
                ])
                .output_async()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let storage = PostgresStorage::connect(&url, &name).unwrap();
    let meta = storage.meta().unwrap().expect("study exists");
    assert_eq!(meta.attrs["command"][0], serde_json::json!("sh"));
    let trials = storage.trials().unwrap();
    assert_eq!(trials.len(), PROCS * EACH);
    let mut per_worker = BTreeMap::new();
    for (i, t) in trials.iter().enumerate() {
        assert_eq!(t.number, i as u64);
        assert_eq!(t.state, TrialState::Complete, "trial {i}: {:?}", t.message);
        let x = t.params["x"].as_f64().unwrap();
        let k = t.params["k"].as_f64().unwrap();
        assert!((t.value().unwrap() - ((x - 0.5).powi(2) + k / 10.0)).abs() < 1e-5);
        *per_worker.entry(t.worker.clone()).or_insert(0) += 1;
    }
    assert_eq!(per_worker.len(), PROCS, "{per_worker:?}");
    assert!(per_worker.values().all(|&c| c == EACH), "{per_worker:?}");
    // Each trial ran in exactly one worker: its log directory exists in one place only.
    let mut seen = BTreeSet::new();
    for i in 0..PROCS {
        let tdir = dir.path().join(format!("worker{i}")).join("trials");
        for e in std::fs::read_dir(&tdir).unwrap() {
            let n: u64 = e.unwrap().file_name().to_str().unwrap().parse().unwrap();
            assert!(seen.insert(n), "trial {n} ran in two workers");
        }
    }
    assert_eq!(seen.len(), PROCS * EACH);
    // The CLI reads the shared study back.
    let out = Command::new(BIN)
        .args(["status", "--storage", &url, "--study-name", &name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{} trials", PROCS * EACH)), "{text}");
    storage.delete_study().unwrap();
}

trait OutputAsync {
    fn output_async(&mut self) -> std::process::Child;
}

impl OutputAsync for Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}
