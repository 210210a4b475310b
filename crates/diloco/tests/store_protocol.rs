//! The round protocol on object storage: the local filesystem store in threads and as
//! separate worker/coordinator processes (one killed mid-round), and the S3 path against
//! a real S3-compatible server when `MAGNET_S3_ENDPOINT` is set.
// Most tests run the `diloco` binary, which needs the `cli` feature (it implies `store`).
#![cfg(feature = "cli")]

use diloco::codec::Codec;
use diloco::exchange::Exchange;
use diloco::exchange::store::ObjectStoreExchange;
use diloco::protocol::{self, Coordinator, CoordinatorConfig, WorkerClient};
use diloco::toy::{LinearTrainer, RegressionData};
use diloco::trainer::LocalTrainer;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

const POLL: Duration = Duration::from_millis(10);

fn url(dir: &tempfile::TempDir) -> String {
    format!("file://{}", dir.path().join("run").display())
}

/// Threads as workers on a filesystem store; worker 2 joins at round 2, worker 1 leaves
/// after round 2, worker 3 dies after its round-1 update: every round commits.
#[test]
fn joins_leaves_and_a_dead_worker_on_the_filesystem_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = url(&dir);
    let (train, held) = RegressionData::generate(500, 6, 1).split(400);
    let init = LinearTrainer::new(train.clone(), held.clone(), 0.0, 1, 0)
        .params()
        .unwrap();
    let ex = ObjectStoreExchange::open(&url).unwrap();
    let mut coord = Coordinator::start(&ex, init, CoordinatorConfig::default()).unwrap();

    let worker = |id: u32, join_at: u64, last: u64, leave: bool| {
        let url = url.clone();
        let (train, held) = (train.shard(id as usize, 4), held.clone());
        std::thread::spawn(move || {
            let ex = ObjectStoreExchange::open(&url).unwrap();
            let mut t = LinearTrainer::new(train, held, 0.05, 4, u64::from(id));
            let mut c = WorkerClient::join(
                &ex,
                id,
                Codec::Int8 { block: 4 },
                join_at,
                Duration::from_secs(20),
                POLL,
            )
            .unwrap();
            t.set_params(c.anchor()).unwrap();
            if leave {
                c.leave(&ex, last).unwrap();
            }
            for r in join_at..=last {
                for _ in 0..5 {
                    t.train_step().unwrap();
                }
                c.submit(&ex, r, 1.0, &t.params().unwrap()).unwrap();
                if id == 3 {
                    return; // dies before the round commits, never comes back
                }
                let (_, g) = c.receive(&ex, r, Duration::from_secs(20), POLL).unwrap();
                t.set_params(&g).unwrap();
            }
        })
    };
    // Workers 0, 1, 3 join before round 1 (join records written before the coordinator
    // starts collecting, so membership is known).
    let w0 = worker(0, 1, 3, false);
    let w1 = worker(1, 1, 2, true);
    let w3 = worker(3, 1, 3, false);
    let wait_members = |n: usize| {
        let start = Instant::now();
        while protocol::members_for(&ex, 1).unwrap().len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "workers did not join"
            );
            std::thread::sleep(POLL);
        }
    };
    wait_members(3);
    let m1 = coord
        .run_round(&ex, 1, None, Duration::from_secs(20), POLL)
        .unwrap();
    assert_eq!(
        m1.accepted.iter().map(|a| a.worker).collect::<Vec<_>>(),
        vec![0, 1, 3]
    );
    w3.join().unwrap();
    let w2 = worker(2, 2, 3, false);
    // Round 2 expects 0, 1, 2, 3 once 2 has joined; 3 is dead: cut by the deadline.
    let start = Instant::now();
    while protocol::members_for(&ex, 2).unwrap().len() < 4 {
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(POLL);
    }
    let m2 = coord
        .run_round(&ex, 2, None, Duration::from_millis(1500), POLL)
        .unwrap();
    assert_eq!(
        m2.accepted.iter().map(|a| a.worker).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(m2.missing, vec![3]);
    let m3 = coord
        .run_round(&ex, 3, None, Duration::from_millis(1500), POLL)
        .unwrap();
    assert_eq!(m3.members, vec![0, 2, 3], "worker 1 left after round 2");
    assert_eq!(
        m3.accepted.iter().map(|a| a.worker).collect::<Vec<_>>(),
        vec![0, 2]
    );
    for h in [w0, w1, w2] {
        h.join().unwrap();
    }
    // Round objects are immutable.
    assert!(ex.put_new(&protocol::manifest_key(1), b"{}").is_err());
}

fn spawn(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_diloco"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn diloco")
}

fn args(cmd: &str, store: &str, extra: &[&str]) -> Vec<String> {
    // `--json`: the tests read each process's summary from stdout.
    let mut v = vec![
        cmd.to_string(),
        "--json".into(),
        "--store".into(),
        store.into(),
        "--rounds".into(),
        "4".into(),
        "--poll-ms".into(),
        "10".into(),
    ];
    v.extend(extra.iter().map(ToString::to_string));
    v
}

/// One coordinator and three worker processes; worker 2 is slow and is killed in the
/// middle of round 2. The job still finishes and learns.
fn multi_process_run(store: &str) {
    let coord = spawn(&args(
        "coordinator",
        store,
        &["--deadline-ms", "3000", "--score", "--min-workers", "3"],
    ));
    let mut workers: Vec<Child> = (0..3)
        .map(|id| {
            let id_s = id.to_string();
            let mut extra = vec![
                "--id",
                id_s.as_str(),
                "--inner-steps",
                "10",
                "--codec",
                "q4:8",
            ];
            if id == 2 {
                extra.extend(["--step-delay-ms", "100"]);
            }
            spawn(&args("worker", store, &extra))
        })
        .collect();
    // Kill worker 2 once round 1 has committed (it is then training round 2).
    let ex = ObjectStoreExchange::open(store).unwrap();
    support::wait_for_manifest(&ex, 1, Duration::from_mins(1));
    workers[2].kill().unwrap();
    workers[2].wait().unwrap();
    for w in workers.drain(..2) {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "worker failed");
    }
    let out = coord.wait_with_output().unwrap();
    assert!(out.status.success(), "coordinator failed");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifests = summary["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 4);
    let accepted = |m: &serde_json::Value| {
        m["accepted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["worker"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(accepted(&manifests[0]), vec![0, 1, 2]);
    for m in &manifests[1..] {
        assert_eq!(accepted(m), vec![0, 1]);
        assert_eq!(m["missing"], serde_json::json!([2]));
    }
    let (l0, l1) = (
        summary["initial_loss"].as_f64().unwrap(),
        summary["final_loss"].as_f64().unwrap(),
    );
    assert!(l1 < 0.5 * l0, "loss {l0} -> {l1}");
}

#[test]
fn worker_processes_on_the_filesystem_store_survive_a_killed_worker() {
    let dir = tempfile::tempdir().unwrap();
    multi_process_run(&url(&dir));
}

#[test]
fn worker_processes_on_s3() {
    let (Ok(_), Ok(bucket)) = (
        std::env::var("MAGNET_S3_ENDPOINT"),
        std::env::var("MAGNET_S3_BUCKET"),
    ) else {
        assert!(
            std::env::var("MAGNET_REQUIRE_ORACLES").as_deref() != Ok("1"),
            "MAGNET_S3_ENDPOINT / MAGNET_S3_BUCKET unset but MAGNET_REQUIRE_ORACLES=1 (run .ci/services.d/s3.sh)"
        );
        eprintln!("skipping: MAGNET_S3_ENDPOINT unset (source .ci/services.d/s3.sh)");
        return;
    };
    let prefix = format!(
        "test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let store = format!("s3://{bucket}/{prefix}");
    // Create-only is enforced by the server (conditional put).
    let ex = ObjectStoreExchange::open(&store).unwrap();
    ex.put_new("probe", b"1").unwrap();
    assert!(matches!(
        ex.put_new("probe", b"2"),
        Err(diloco::Error::AlreadyExists { .. })
    ));
    multi_process_run(&store);
}

/// Runs a toy coordinator + 3 workers on `store` for 6 rounds; with `kill_after`, the
/// coordinator is killed once that round has committed (it is then collecting or
/// merging the next) and restarted with `--resume`. Returns the final summary's
/// manifests of the last coordinator process.
fn resumable_run(store: &str, kill_after: Option<u64>) -> Vec<serde_json::Value> {
    let six = |cmd: &str, extra: &[&str]| {
        let mut a = args(cmd, store, extra);
        a[5] = "6".into(); // --rounds
        a
    };
    let coord_args = six(
        "coordinator",
        &["--deadline-ms", "20000", "--min-workers", "3", "--resume"],
    );
    let mut coord = spawn(&coord_args);
    let workers: Vec<Child> = (0..3)
        .map(|id| {
            let id_s = id.to_string();
            spawn(&six(
                "worker",
                &[
                    "--id",
                    id_s.as_str(),
                    "--inner-steps",
                    "5",
                    "--codec",
                    "q4:8",
                    "--error-feedback",
                ],
            ))
        })
        .collect();
    if let Some(r) = kill_after {
        let ex = ObjectStoreExchange::open(store).unwrap();
        support::wait_for_manifest(&ex, r, Duration::from_mins(1));
        coord.kill().unwrap();
        coord.wait().unwrap();
        coord = spawn(&coord_args);
    }
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success(), "worker failed");
    }
    let out = coord.wait_with_output().unwrap();
    assert!(out.status.success(), "coordinator failed");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    summary["manifests"].as_array().unwrap().clone()
}

/// The coordinator killed after round 2 and restarted with `--resume` continues the run:
/// every round commits once, every worker's update of every round is accepted, and the
/// published model versions are bitwise those of an uninterrupted run.
#[test]
fn a_killed_coordinator_resumes_from_the_store() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ua, ub) = (url(&a), url(&b));
    let reference = resumable_run(&ua, None);
    assert_eq!(reference.len(), 6);
    let resumed = resumable_run(&ub, Some(2));
    // The restarted process ran the rounds after the last one committed before the kill.
    let first = resumed[0]["round"].as_u64().unwrap();
    assert!((3..=4).contains(&first), "resumed at {first}");
    let (ea, eb) = (
        ObjectStoreExchange::open(&ua).unwrap(),
        ObjectStoreExchange::open(&ub).unwrap(),
    );
    for r in 1..=6u64 {
        let m: protocol::Manifest =
            serde_json::from_slice(&eb.get(&protocol::manifest_key(r)).unwrap().unwrap()).unwrap();
        assert_eq!(
            m.accepted.iter().map(|x| x.worker).collect::<Vec<_>>(),
            vec![0, 1, 2],
            "round {r}: {m:?}"
        );
        for key in [protocol::global_key(r), protocol::step_key(r)] {
            assert_eq!(ea.get(&key).unwrap(), eb.get(&key).unwrap(), "{key}");
            assert!(eb.get(&key).unwrap().is_some(), "{key}");
        }
    }
}

/// A store that cannot be opened says which URL, and keeps the backend's error as the
/// source (not its text).
#[test]
fn a_store_that_cannot_be_opened_keeps_the_backends_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    // A directory cannot be created below a regular file.
    let url = format!("file://{}/store", file.path().display());
    let Err(e) = ObjectStoreExchange::open(&url) else {
        panic!("opened a store below a file");
    };
    assert!(e.to_string().contains(&url), "{e}");
    let source = std::error::Error::source(&e).expect("a source");
    assert!(
        source.downcast_ref::<std::io::Error>().is_some(),
        "{source:?}"
    );
}
