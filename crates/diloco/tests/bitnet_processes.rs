//! The real `diloco` binary training a BitNet model across processes: `diloco prepare`
//! builds a dataset from a generated corpus, then one coordinator and three worker
//! processes (bitnet-model trainers on their own shards) run DiLoCo rounds on a
//! filesystem store; one worker is killed in the middle of round 2. Checks that every
//! round commits a manifest, the killed worker is cut by the grace period, bytes are
//! reported, the global model's held-out loss goes down and the saved model directory
//! holds the final global weights. The same run goes to a real S3-compatible server
//! when `.ci/services.d/s3.sh` has exported `MAGNET_S3_ENDPOINT` / `MAGNET_S3_BUCKET`.
#![cfg(all(feature = "bitnet", feature = "cli"))]

use bitnet_model::store::ModelDir;
use diloco::codec;
use diloco::exchange::Exchange;
use diloco::exchange::store::ObjectStoreExchange;
use diloco::protocol;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

const ROUNDS: u64 = 3;
const INNER_STEPS: u64 = 10;

/// A micro BitNet: 2 layers of width 32 over a 320-token vocabulary, context 16.
const MODEL_TOML: &str = "vocab_size = 320\nhidden_size = 32\nn_layers = 2\nn_heads = 2\n\
                          n_kv_heads = 1\nffn_hidden_size = 64\ncontext_length = 16\n";

/// A learnable English-like corpus: seeded sentences from a small grammar.
fn write_corpus(dir: &Path) {
    let subjects = ["the cat", "a dog", "the old man", "my sister", "the bird"];
    let verbs = ["sees", "likes", "follows", "finds", "watches"];
    let objects = [
        "the river",
        "a red ball",
        "the small house",
        "the moon",
        "a tree",
    ];
    let endings = [".", " today.", " again.", " at night."];
    let mut state = 11u64;
    let mut pick = |n: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize % n
    };
    let mut text = String::new();
    for _ in 0..3000 {
        let s = subjects[pick(subjects.len())];
        let v = verbs[pick(verbs.len())];
        let o = objects[pick(objects.len())];
        let e = endings[pick(endings.len())];
        for part in [s, " ", v, " ", o, e, "\n"] {
            text.push_str(part);
        }
    }
    std::fs::create_dir_all(dir.join("en")).unwrap();
    std::fs::write(dir.join("en/story.txt"), text).unwrap();
}

fn diloco(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_diloco"));
    // `--json`: the test reads each process's summary from stdout.
    c.arg("--json")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
}

fn json_of(out: &Output, who: &str) -> serde_json::Value {
    assert!(out.status.success(), "{who} failed: {:?}", out.status);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{who}: stdout is not one JSON document: {e}"))
}

#[test]
fn bitnet_worker_processes_train_the_global_model_and_survive_a_killed_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("file://{}", tmp.path().join("run").display());
    bitnet_run(&tmp, &store);
}

#[test]
fn bitnet_worker_processes_on_s3() {
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
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let store = format!("s3://{bucket}/bitnet-{}-{nanos}", std::process::id());
    bitnet_run(&tempfile::tempdir().unwrap(), &store);
}

/// One run at a time: eight processes each on a 2-core CI machine would stretch the
/// gap between the fast and the slow worker towards the grace period.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Prepares the data in `tmp`, runs the coordinator and workers on `store`, checks.
fn bitnet_run(tmp: &tempfile::TempDir, store: &str) {
    let _one_at_a_time = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let started = Instant::now();
    let corpus = tmp.path().join("corpus");
    write_corpus(&corpus);
    let model_toml = tmp.path().join("micro.toml");
    std::fs::write(&model_toml, MODEL_TOML).unwrap();
    let data = tmp.path().join("data");
    let saved = tmp.path().join("final-model");
    let (model, data_s) = (model_toml.to_str().unwrap(), data.to_str().unwrap());
    let shared = [
        "--model-config",
        model,
        "--data-dir",
        data_s,
        "--seq-len",
        "16",
        "--poll-ms",
        "10",
    ];
    let rounds = ROUNDS.to_string();
    let common = |cmd: &'static str| {
        let mut v = vec![cmd, "--store", store, "--rounds", rounds.as_str()];
        v.extend(shared);
        v
    };

    let prep = diloco(&[
        "prepare",
        "--model-config",
        model,
        "--data-dir",
        data_s,
        "--corpus",
    ])
    .arg(&corpus)
    .output()
    .unwrap();
    let prep = json_of(&prep, "prepare");
    assert!(prep["train_tokens"].as_u64().unwrap() > 10_000, "{prep}");

    let mut coord_args = common("coordinator");
    let save_s = saved.to_str().unwrap();
    coord_args.extend([
        "--workers",
        "3",
        // The killed worker costs each later round the grace, not the deadline.
        "--deadline-ms",
        "30000",
        "--grace-ms",
        "2500",
        "--eval-windows",
        "16",
        "--save",
        save_s,
        "--score",
    ]);
    let coord = diloco(&coord_args).spawn().unwrap();
    let h = INNER_STEPS.to_string();
    let mut workers: Vec<Child> = (0..3)
        .map(|id| {
            let id_s = id.to_string();
            let mut a = common("worker");
            a.extend([
                "--id",
                &id_s,
                "--shards",
                "3",
                "--inner-steps",
                &h,
                "--batch-size",
                "4",
            ]);
            if id == 2 {
                // Slow enough to be caught mid-round 2, well within the grace.
                a.extend(["--step-delay-ms", "50"]);
            }
            diloco(&a).spawn().unwrap()
        })
        .collect();

    let ex = ObjectStoreExchange::open(store).unwrap();
    support::wait_for_manifest(&ex, 1, Duration::from_secs(90));
    workers[2].kill().unwrap();
    workers[2].wait().unwrap();
    let reports: Vec<serde_json::Value> = workers
        .drain(..2)
        .enumerate()
        .map(|(i, w)| json_of(&w.wait_with_output().unwrap(), &format!("worker {i}")))
        .collect();
    let summary = json_of(&coord.wait_with_output().unwrap(), "coordinator");

    // Every round committed; the killed worker is missing from rounds 2 and 3.
    let params = summary["setup"]["params"].as_u64().unwrap();
    let manifests = summary["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), ROUNDS as usize);
    for (r, m) in (1..=ROUNDS).zip(manifests) {
        assert!(
            ex.get(&protocol::manifest_key(r)).unwrap().is_some(),
            "round {r}"
        );
        let accepted: Vec<u64> = m["accepted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["worker"].as_u64().unwrap())
            .collect();
        if r == 1 {
            assert_eq!(accepted, vec![0, 1, 2]);
        } else {
            assert_eq!(accepted, vec![0, 1], "round {r}");
            assert_eq!(m["missing"], serde_json::json!([2]), "round {r}");
        }
        // f32 pseudo-gradients: at least 4 bytes per parameter each; every contribution
        // scored on held-out data (loss before vs after applying it alone).
        for a in m["accepted"].as_array().unwrap() {
            assert!(a["bytes"].as_u64().unwrap() >= 4 * params);
            let (before, after) = (
                a["score"]["before"].as_f64().unwrap(),
                a["score"]["after"].as_f64().unwrap(),
            );
            assert!(before.is_finite() && after.is_finite(), "{a}");
            if r == 1 {
                assert!(after < before, "one worker's first round helps alone: {a}");
            }
        }
    }

    // Bytes: what the coordinator accepted, and what each surviving worker moved.
    assert!(summary["uplink_bytes"].as_u64().unwrap() >= (3 + 2 + 2) * 4 * params);
    assert!(summary["step_bytes"].as_u64().unwrap() >= ROUNDS * 4 * params);
    for r in &reports {
        assert!(
            r["bytes_sent"].as_u64().unwrap() >= ROUNDS * 4 * params,
            "{r}"
        );
        // The initial weights plus one step per round.
        assert!(
            r["bytes_received"].as_u64().unwrap() >= (ROUNDS + 1) * 4 * params,
            "{r}"
        );
        assert_eq!(r["train_loss"].as_array().unwrap().len(), ROUNDS as usize);
    }

    // The global model learned.
    let (l0, l1) = (
        summary["initial_loss"].as_f64().unwrap(),
        summary["final_loss"].as_f64().unwrap(),
    );
    assert!(l1 < l0 - 0.5, "held-out loss {l0} -> {l1}");
    let curve = summary["val_curve"].as_array().unwrap();
    assert_eq!(
        curve.len(),
        ROUNDS as usize + 1,
        "evaluated before and after every round"
    );

    // The saved model directory is the final global model.
    let dir = ModelDir::load(&saved).unwrap();
    assert_eq!(dir.config.param_count() as u64, params);
    let last = ex.get(&protocol::global_key(ROUNDS)).unwrap().unwrap();
    let (_, global) = codec::decode(&last, "global").unwrap();
    assert_eq!(dir.weights, global);
    eprintln!(
        "{store}: whole run {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
