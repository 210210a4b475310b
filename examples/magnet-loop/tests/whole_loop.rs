//! The whole loop on a micro BitNet (2 layers of width 32, 320-token vocabulary) with a
//! copycat: the global val loss falls, every honest worker is paid, the copycat is slashed
//! as a copy every round and earns nothing, balances sum to the emission, the ledger
//! verifies after reopening from its files, and flipping a stored byte is detected.

use incentive_ledger::identity::PublicKey;
use incentive_ledger::ledger::{Ledger, verify_dir};
use incentive_ledger::log::{CHECKPOINT_FILE, DB_FILE};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const MODEL_TOML: &str = "vocab_size = 320\nhidden_size = 32\nn_layers = 2\nn_heads = 2\n\
                          n_kv_heads = 1\nffn_hidden_size = 64\ncontext_length = 16\n";
const ROUNDS: u64 = 3;
const WORKERS: usize = 3;

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
    for _ in 0..4000 {
        let parts = [
            subjects[pick(subjects.len())],
            " ",
            verbs[pick(verbs.len())],
            " ",
            objects[pick(objects.len())],
            endings[pick(endings.len())],
            "\n",
        ];
        for p in parts {
            text.push_str(p);
        }
    }
    std::fs::create_dir_all(dir.join("en")).unwrap();
    std::fs::write(dir.join("en/story.txt"), text).unwrap();
}

fn hex32(s: &str) -> [u8; 32] {
    let b: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    b.try_into().unwrap()
}

/// Runs `magnet-loop run` on the micro model and returns its report.json.
fn run_loop(corpus: &Path, model: &Path, out: &Path, extra: &[&str]) -> Value {
    let status = Command::new(env!("CARGO_BIN_EXE_magnet-loop"))
        .args(["run", "--model"])
        .arg(model)
        .args(["--workers", &WORKERS.to_string(), "--validators", "3"])
        .args(["--rounds", &ROUNDS.to_string(), "--inner-steps", "10"])
        .args(["--seq-len", "16", "--batch-size", "4", "--lr", "0.01"])
        .args(["--heldout-windows", "4", "--eval-windows", "8", "--copycat"])
        .arg("--corpus")
        .arg(corpus)
        .arg("--out")
        .arg(out)
        .args(extra)
        .status()
        .unwrap();
    assert!(status.success(), "magnet-loop run failed: {status:?}");
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn the_whole_loop_trains_pays_honest_workers_slashes_the_copycat_and_verifies() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    write_corpus(&corpus);
    let model = tmp.path().join("micro.toml");
    std::fs::write(&model, MODEL_TOML).unwrap();
    let out = tmp.path().join("out");
    let alone_paid: &[&str] = &["--score", "alone", "--merge", "paid"];
    let r = run_loop(&corpus, &model, &out, alone_paid);
    assert!(out.join("report.md").is_file());
    assert_eq!(r["merge"], "paid");
    assert_eq!(r["score"], "alone");
    assert!(out.join("model/model.safetensors").is_file());

    // The global model learns.
    let initial = r["initial_val_loss"].as_f64().unwrap();
    let rounds = r["per_round"].as_array().unwrap();
    assert_eq!(rounds.len() as u64, ROUNDS);
    let last = rounds.last().unwrap()["val_loss"].as_f64().unwrap();
    assert!(last < initial - 0.3, "val loss {initial} -> {last}");

    // Every round: honest workers scored positive and paid, the copycat slashed as a copy
    // and unpaid; every contribution is an artifact of the same size.
    let threshold = r["copy_threshold_ppm"].as_u64().unwrap();
    for x in rounds {
        let ws = x["workers"].as_array().unwrap();
        assert_eq!(ws.len(), WORKERS + 1);
        for w in &ws[..WORKERS] {
            assert!(w["slashed"].is_null(), "honest worker slashed: {w}");
            assert!(w["score_ppm"].as_i64().unwrap() > 0, "{w}");
            assert!(w["reward"].as_u64().unwrap() > 0, "{w}");
            assert!(w["max_overlap_ppm"].as_u64().unwrap() < threshold, "{w}");
        }
        let c = &ws[WORKERS];
        assert_eq!(c["worker"], "copycat");
        assert!(c["slashed"].as_str().unwrap().starts_with("copied"), "{c}");
        assert_eq!(c["reward"].as_u64().unwrap(), 0);
        assert!(c["max_overlap_ppm"].as_u64().unwrap() >= threshold, "{c}");
        assert_eq!(x["merged"].as_u64().unwrap(), WORKERS as u64);
        assert!(x["uplink_bytes"].as_u64().unwrap() > 0);
    }
    let slashes = r["slashes"].as_array().unwrap();
    assert_eq!(slashes.len() as u64, ROUNDS);
    assert!(
        slashes
            .iter()
            .all(|s| s["kind"] == "copied" && s["worker"] == "copycat")
    );

    // Balances: honest workers > 0, copycat 0, sum = everything minted = the schedule.
    let balances = r["final_balances"].as_array().unwrap();
    let mut sum = 0;
    for b in balances {
        let (name, units) = (b[0].as_str().unwrap(), b[1].as_u64().unwrap());
        if name == "copycat" {
            assert_eq!(units, 0);
        } else {
            assert!(units > 0, "{name} earned nothing");
        }
        sum += units;
    }
    let l = &r["ledger"];
    assert_eq!(sum, l["emitted"].as_u64().unwrap());
    assert_eq!(sum, r["emission_scheduled"].as_u64().unwrap());
    assert_eq!(sum, l["total_balance"].as_u64().unwrap());

    // The ledger verifies again here, from its files, pinned to the reported operator.
    let dir = Path::new(l["dir"].as_str().unwrap());
    let operator = PublicKey(hex32(l["operator"].as_str().unwrap()));
    let v = verify_dir(dir, Some(&operator)).unwrap();
    assert_eq!(v.entries, l["entries"].as_u64().unwrap());
    assert_eq!(v.settlements, ROUNDS);
    assert_eq!(v.total_balance, sum);
    let reopened = Ledger::open(dir, Some(&operator), None).unwrap();
    assert_eq!(
        incentive_ledger::codec::hex(&reopened.log().tree().root()),
        l["root"].as_str().unwrap()
    );
    assert_eq!(reopened.state().history.len() as u64, ROUNDS);
    drop(reopened);

    // A flipped byte in the checkpoint, or inside a stored entry of the database, is caught.
    for file in [CHECKPOINT_FILE, DB_FILE] {
        let p = dir.join(file);
        let orig = std::fs::read(&p).unwrap();
        let at = if file == DB_FILE {
            // The origin string is inside every signed entry: flip one of its bytes in the
            // last copy in the file (live data, not a freed page).
            let needle = b"magnet-loop";
            orig.windows(needle.len())
                .rposition(|w| w == needle)
                .expect("an entry in the database file")
                + 3
        } else {
            orig.len() / 2
        };
        let mut bad = orig.clone();
        bad[at] ^= 0x01;
        std::fs::write(&p, &bad).unwrap();
        assert!(
            verify_dir(dir, Some(&operator)).is_err(),
            "flip at byte {at} of {file} not detected"
        );
        std::fs::write(&p, &orig).unwrap();
    }
    verify_dir(dir, Some(&operator)).unwrap();

    // Same seed, same run: the same ledger (Merkle root over every signed entry) and curve.
    let again = run_loop(&corpus, &model, &tmp.path().join("again"), alone_paid);
    assert_eq!(again["ledger"]["root"], r["ledger"]["root"]);
    assert_eq!(again["per_round"], r["per_round"]);

    // A lossy uplink (4-bit blocks), validators scoring each update's marginal value to the
    // merged step (leave-one-out), every unslashed update merged: artifacts shrink ~6x, the
    // loop still learns, everything minted goes to honest workers, and the copycat
    // (re-quantized copy) is still caught, unpaid and left out of the merge.
    let q4 = run_loop(
        &corpus,
        &model,
        &tmp.path().join("q4"),
        // The defaults: --merge unslashed --score marginal.
        &["--codec", "q4:64"],
    );
    assert_eq!(q4["merge"], "unslashed");
    assert_eq!(q4["score"], "marginal");
    let f32_bytes = rounds[0]["uplink_bytes"].as_u64().unwrap();
    let q4_bytes = q4["per_round"][0]["uplink_bytes"].as_u64().unwrap();
    assert!(
        q4_bytes * 5 < f32_bytes,
        "q4 {q4_bytes} vs f32 {f32_bytes} bytes"
    );
    let q4_last = q4["per_round"][ROUNDS as usize - 1]["val_loss"]
        .as_f64()
        .unwrap();
    assert!(
        q4_last < initial - 0.3,
        "q4 val loss {initial} -> {q4_last}"
    );
    for x in q4["per_round"].as_array().unwrap() {
        // Leave-one-out scores of three similar updates are small and their sign is noisy
        // on 4 held-out windows: no per-round claim about each honest worker here.
        let ws = x["workers"].as_array().unwrap();
        assert_eq!(ws[WORKERS]["reward"].as_u64().unwrap(), 0);
        assert!(
            ws[WORKERS]["slashed"]
                .as_str()
                .unwrap()
                .starts_with("copied")
        );
        assert_eq!(x["merged"].as_u64().unwrap(), WORKERS as u64);
    }
    let q4_balances = q4["final_balances"].as_array().unwrap();
    let honest: u64 = q4_balances[..WORKERS]
        .iter()
        .map(|b| b[1].as_u64().unwrap())
        .sum();
    assert_eq!(q4_balances[WORKERS][1].as_u64().unwrap(), 0);
    assert_eq!(honest, q4["ledger"]["emitted"].as_u64().unwrap());
    assert!(honest > 0);
    eprintln!("whole loop test: {:.1} s", started.elapsed().as_secs_f64());
}
