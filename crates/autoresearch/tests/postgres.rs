//! PostgreSQL storage against a real server (`MAGNET_POSTGRES_URL`, started by
//! `cargo xtask services`): a round trip, many connections asking at once, several
//! `autoresearch` worker processes sharing one study, TLS (`sslmode`, against the same
//! cluster with TLS on and a role it admits over TLS only) and the indexes' query plans.
#![cfg(feature = "postgres")]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;

use autoresearch::{
    Direction, Error, OptimizeOptions, ParamValue, Params, PostgresStorage, SearchSpace, Storage,
    Study, TlsError, TpeSampler, TrialError, TrialHandle, TrialState,
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

/// The TLS side of the test cluster (`cargo xtask services` exports it with TLS on): a URL
/// for a role pg_hba.conf admits over TLS only, the CA that signed the server's certificate
/// (issued for 127.0.0.1 only) and an unrelated CA.
struct TlsServer {
    url: String,
    root: String,
    wrong_root: String,
}

fn tls_server() -> Option<TlsServer> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(url), Some(root), Some(wrong_root)) = (
        get("MAGNET_POSTGRES_TLS_URL"),
        get("MAGNET_POSTGRES_TLS_ROOT"),
        get("MAGNET_POSTGRES_TLS_WRONG_ROOT"),
    ) {
        return Some(TlsServer {
            url,
            root,
            wrong_root,
        });
    }
    assert!(
        std::env::var("MAGNET_REQUIRE_ORACLES").as_deref() != Ok("1"),
        "MAGNET_POSTGRES_TLS_URL / _ROOT / _WRONG_ROOT are unset but \
         MAGNET_REQUIRE_ORACLES=1 (source the output of `cargo xtask services`)"
    );
    eprintln!(
        "skipping: MAGNET_POSTGRES_TLS_URL / _ROOT / _WRONG_ROOT are unset \
         (source the output of `cargo xtask services`)"
    );
    None
}

/// A few trials through `storage`; panics on any storage error.
fn run_a_study(storage: Arc<PostgresStorage>) {
    let study = Study::builder(space())
        .storage(storage.clone())
        .seed(4)
        .build()
        .unwrap();
    for _ in 0..5 {
        let t = study.ask().unwrap();
        let x = t.suggest_float("x").unwrap();
        study.tell(&t, Ok(vec![x * x])).unwrap();
    }
    let trials = storage.trials().unwrap();
    assert_eq!(trials.len(), 5);
    assert!(trials.iter().all(|t| t.state == TrialState::Complete));
    storage.delete_study().unwrap();
}

/// The TLS error of a refused connection (panics on success or another error).
fn tls_error(url: &str) -> TlsError {
    match PostgresStorage::connect(url, &unique("tls-refused")) {
        Err(Error::Tls { source, .. }) => source,
        Err(e) => panic!("{url}: expected a TLS error, got {e}"),
        Ok(_) => panic!("{url}: connected, expected a TLS error"),
    }
}

#[test]
fn tls_verify_full_with_the_right_root_runs_a_study() {
    let Some(tls) = tls_server() else { return };
    // The role is refused without TLS, so a study that runs ran over TLS.
    let url = format!("{}?sslmode=verify-full&sslrootcert={}", tls.url, tls.root);
    run_a_study(Arc::new(
        PostgresStorage::connect(&url, &unique("tls-full")).unwrap(),
    ));
    let url = format!("{}?sslmode=verify-ca&sslrootcert={}", tls.url, tls.root);
    run_a_study(Arc::new(
        PostgresStorage::connect(&url, &unique("tls-ca")).unwrap(),
    ));
}

#[test]
fn tls_wrong_root_is_a_certificate_error() {
    let Some(tls) = tls_server() else { return };
    for mode in ["verify-full", "verify-ca"] {
        let url = format!("{}?sslmode={mode}&sslrootcert={}", tls.url, tls.wrong_root);
        let err = tls_error(&url);
        assert!(
            matches!(&err, TlsError::Certificate { source: rustls_error, .. }
                if rustls_error.to_string().contains("UnknownIssuer")
                    || rustls_error.to_string().contains("unknown issuer")),
            "{mode}: {err}"
        );
        assert!(
            err.to_string()
                .contains("certificate verification of 127.0.0.1 failed"),
            "{err}"
        );
    }
}

#[test]
fn tls_verify_full_checks_the_host_name() {
    let Some(tls) = tls_server() else { return };
    // The certificate names 127.0.0.1 only; `localhost` reaches the same server.
    let url = tls.url.replacen("@127.0.0.1:", "@localhost:", 1);
    assert_ne!(url, tls.url, "unexpected test URL {}", tls.url);
    let with = |mode: &str| {
        format!(
            "{url}?hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}",
            tls.root
        )
    };
    let err = tls_error(&with("verify-full"));
    assert!(
        matches!(err, TlsError::Hostname { ref host, .. } if host == "localhost"),
        "{err}"
    );
    // verify-ca checks the chain only, as libpq's does.
    run_a_study(Arc::new(
        PostgresStorage::connect(&with("verify-ca"), &unique("tls-ca-name")).unwrap(),
    ));
}

#[test]
fn tls_require_encrypts_and_disable_is_refused() {
    let Some(tls) = tls_server() else { return };
    for mode in ["require", "prefer"] {
        let url = format!("{}?sslmode={mode}", tls.url);
        run_a_study(Arc::new(
            PostgresStorage::connect(&url, &unique(&format!("tls-{mode}"))).unwrap(),
        ));
    }
    let err = tls_error(&format!("{}?sslmode=disable", tls.url));
    assert!(
        matches!(
            err,
            TlsError::ServerRequiresTls {
                mode: "disable",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("sslmode=require"), "{err}");
    // A root file that does not exist is named, not ignored.
    let err = tls_error(&format!(
        "{}?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt",
        tls.url
    ));
    assert!(matches!(err, TlsError::RootCert { .. }), "{err}");
}

/// Every hot query of the storage uses an index on tables of a busy server's size (2000
/// studies of 50 trials, next to whatever other tests left; at a few hundred rows the
/// planner rightly prefers a sequential scan): the plans name the index, with sequential
/// scans allowed.
#[test]
fn hot_queries_use_indexes() {
    let Some(url) = url() else { return };
    let prefix = unique("plans");
    // Creates the tables and indexes.
    let storage = PostgresStorage::connect(&url, &format!("{prefix}-0")).unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    /// Deletes the bulk rows also when an assertion fails (they would skew other plans).
    struct Cleanup<'a>(&'a str, &'a str);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            if let Ok(mut c) = postgres::Client::connect(self.0, postgres::NoTls) {
                let _ = c.execute(
                    "DELETE FROM autoresearch_studies WHERE name LIKE $1 || '-%'",
                    &[&self.1],
                );
            }
        }
    }
    let _cleanup = Cleanup(&url, &prefix);
    client
        .execute(
            "INSERT INTO autoresearch_studies (name, meta) \
             SELECT $1 || '-' || g, '{}'::jsonb FROM generate_series(1, 2000) g",
            &[&prefix],
        )
        .unwrap();
    let mine = "SELECT id FROM autoresearch_studies WHERE name LIKE $1 || '-%'";
    client
        .execute(
            &format!(
                "INSERT INTO autoresearch_ops (study_id, seq, op) \
                 SELECT s.id, g, '{{}}'::jsonb FROM ({mine}) s, generate_series(1, 50) g"
            ),
            &[&prefix],
        )
        .unwrap();
    client
        .execute(
            &format!(
                "INSERT INTO autoresearch_trials (study_id, number, state, trial) \
                 SELECT s.id, g, CASE WHEN g % 10 = 0 THEN 'running' ELSE 'complete' END, \
                 '{{}}'::jsonb FROM ({mine}) s, generate_series(0, 49) g"
            ),
            &[&prefix],
        )
        .unwrap();
    client
        .batch_execute("ANALYZE autoresearch_studies, autoresearch_ops, autoresearch_trials")
        .unwrap();
    let id: i64 = client
        .query_one(
            "SELECT id FROM autoresearch_studies WHERE name = $1",
            &[&format!("{prefix}-777")],
        )
        .unwrap()
        .get(0);
    let indexes: BTreeSet<String> = client
        .query(
            "SELECT indexname FROM pg_indexes WHERE tablename LIKE 'autoresearch_%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for want in [
        "autoresearch_studies_pkey",
        "autoresearch_studies_name_key",
        "autoresearch_ops_pkey",
        "autoresearch_trials_pkey",
        "autoresearch_trials_study_state",
    ] {
        assert!(indexes.contains(want), "{want} missing: {indexes:?}");
    }
    for (query, indexes) in [
        // Readers catching up (every ask and tell).
        (
            format!(
                "SELECT seq, op::text FROM autoresearch_ops WHERE study_id = {id} AND seq > 25 ORDER BY seq"
            ),
            &["autoresearch_ops_pkey"][..],
        ),
        (
            format!("SELECT EXISTS (SELECT 1 FROM autoresearch_ops WHERE study_id = {id})"),
            &["autoresearch_ops_pkey"][..],
        ),
        (
            format!("SELECT id FROM autoresearch_studies WHERE id = {id} FOR UPDATE"),
            &["autoresearch_studies_pkey"][..],
        ),
        (
            format!("SELECT id FROM autoresearch_studies WHERE name = '{prefix}-777'"),
            &["autoresearch_studies_name_key"][..],
        ),
        // Tell: the trial row's update.
        (
            format!(
                "UPDATE autoresearch_trials SET state = 'complete' WHERE study_id = {id} AND number = 10"
            ),
            &["autoresearch_trials_pkey"][..],
        ),
        // A study's trials, and those in one state (SQL users, dashboards).
        (
            format!("SELECT trial FROM autoresearch_trials WHERE study_id = {id} ORDER BY number"),
            // Either index leads with study_id; the planner picks the smaller.
            &[
                "autoresearch_trials_pkey",
                "autoresearch_trials_study_state",
            ][..],
        ),
        (
            format!(
                "SELECT number FROM autoresearch_trials WHERE study_id = {id} AND state = 'running'"
            ),
            &["autoresearch_trials_study_state"][..],
        ),
    ] {
        let plan: String = client
            .query(&format!("EXPLAIN {query}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0) + "\n")
            .collect();
        assert!(
            indexes.iter().any(|i| plan.contains(i)) && !plan.contains("Seq Scan"),
            "{query}: expected one of {indexes:?}:\n{plan}"
        );
    }
    storage.delete_study().unwrap();
}

/// Throughput of ask/tell on one study from many connections, with and without the
/// state index (`cargo test --test postgres -- --ignored --nocapture ask_tell_throughput`;
/// it drops and re-creates the index, so not while other tests run on that database).
#[test]
#[ignore = "a measurement for docs/autoresearch.md, not a test"]
fn ask_tell_throughput() {
    let Some(url) = url() else { return };
    const WORKERS: usize = 8;
    const EACH: usize = 25;
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut results: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..3 {
        for with_index in [false, true] {
            let name = unique(&format!("throughput-{round}-{with_index}"));
            let studies: Vec<_> = (0..WORKERS)
                .map(|w| {
                    Study::builder(space())
                        .storage(Arc::new(PostgresStorage::connect(&url, &name).unwrap()))
                        .worker(&format!("w{w}"))
                        .sampler(autoresearch::RandomSampler)
                        .seed(9)
                        .build()
                        .unwrap()
                })
                .collect();
            // After the connects: each connect creates missing indexes.
            client
                .batch_execute(if with_index {
                    "CREATE INDEX IF NOT EXISTS autoresearch_trials_study_state \
                     ON autoresearch_trials (study_id, state)"
                } else {
                    "DROP INDEX IF EXISTS autoresearch_trials_study_state"
                })
                .unwrap();
            let start = std::time::Instant::now();
            std::thread::scope(|scope| {
                for study in &studies {
                    scope.spawn(move || {
                        for _ in 0..EACH {
                            let t = study.ask().unwrap();
                            let x = t.suggest_float("x").unwrap();
                            study.tell(&t, Ok(vec![x * x])).unwrap();
                        }
                    });
                }
            });
            let per_s = (WORKERS * EACH) as f64 / start.elapsed().as_secs_f64();
            results
                .entry(if with_index { "with" } else { "without" })
                .or_default()
                .push(per_s);
            PostgresStorage::connect(&url, &name)
                .unwrap()
                .delete_study()
                .unwrap();
        }
    }
    for (k, mut v) in results {
        v.sort_by(f64::total_cmp);
        println!(
            "{WORKERS} workers x {EACH} trials, {k} the state index: median {:.0} trials/s (runs {v:.0?})",
            v[v.len() / 2]
        );
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
