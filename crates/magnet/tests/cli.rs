//! The `magnet` binary on a micro BitNet (2 layers of width 32, 320-token vocabulary) and a
//! learnable grammar corpus, played as an adversary would:
//!
//! - `magnet run`: every party in one process (threads over the in-memory store), with
//!   every attacker of the threat model and a lying minority validator: the model learns,
//!   each attacker is slashed with its reason every round it sends something and earns
//!   nothing, honest workers earn everything minted, the exported GGUF and the model exist,
//!   and the ledger verifies from its files (a flipped byte is caught);
//! - separate processes over a `file://` store (and S3 when the test server is up): the
//!   operator runs the phased search first (its journal hash in the ledger's protocol
//!   record) and the network trains what it chose at the default 1 % poison tolerance;
//!   4 honest workers, every attacker, an honest and a lying validator are their own
//!   processes; one honest worker is killed with SIGKILL after round 1 and started again
//!   (it rejoins), one straggles past the grace window in round 2 (left out, not slashed),
//!   the liar is killed for good after round 1 closed, the operator is killed in the middle
//!   of round 2 and the honest validator once round 3 closed, both started again (they
//!   resume from the ledger and the store); every attacker is slashed with its reason, the
//!   merge is exactly the paid honest work, nothing is paid twice (balances equal the
//!   emission) and the ledger verifies.
#![cfg(feature = "cli")]

use incentive_ledger::identity::PublicKey;
use incentive_ledger::ledger::{Ledger, verify_dir};
use incentive_ledger::log::{CHECKPOINT_FILE, DB_FILE};
use magnet::protocol::keys;
use magnet::store::Store;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODEL_TOML: &str = "vocab_size = 320\nhidden_size = 32\nn_layers = 2\nn_heads = 2\n\
                          n_kv_heads = 1\nffn_hidden_size = 64\ncontext_length = 16\n";
const TRAINING: &str = r#"{"lr": 0.01, "batch_size": 4, "seq_len": 16, "warmup_steps": 2}"#;
const ROUNDS: u64 = 3;

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
        for p in [
            subjects[pick(subjects.len())],
            " ",
            verbs[pick(verbs.len())],
            " ",
            objects[pick(objects.len())],
            endings[pick(endings.len())],
            "\n",
        ] {
            text.push_str(p);
        }
    }
    std::fs::create_dir_all(dir.join("en")).unwrap();
    std::fs::write(dir.join("en/story.txt"), text).unwrap();
}

struct Setup {
    _tmp: Option<tempfile::TempDir>,
    root: PathBuf,
    corpus: PathBuf,
    model: PathBuf,
    training: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    // MAGNET_TEST_KEEP keeps the logs, stores and ledgers for a look after a failure.
    let tmp = if std::env::var_os("MAGNET_TEST_KEEP").is_some() {
        eprintln!("keeping {}", tmp.keep().display());
        None
    } else {
        Some(tmp)
    };
    let corpus = root.join("corpus");
    write_corpus(&corpus);
    let model = root.join("micro.toml");
    std::fs::write(&model, MODEL_TOML).unwrap();
    let training = root.join("training.json");
    std::fs::write(&training, TRAINING).unwrap();
    Setup {
        _tmp: tmp,
        root,
        corpus,
        model,
        training,
    }
}

fn magnet() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_magnet"));
    c.env_remove("MAGNET_CORPUS");
    c
}

fn hex32(s: &str) -> [u8; 32] {
    let b: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    b.try_into().unwrap()
}

/// What an attacker's outcome must be in a round.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// It sends nothing.
    Absent,
    /// It works honestly this round (the replayer's first round): paid, not slashed.
    Honest,
    /// Slashed with a reason starting with this.
    Slashed(&'static str),
}

/// What each attacker's outcome must be in a round.
fn expected(name: &str, round: u64) -> Expect {
    let kind = name.trim_end_matches(|c: char| c.is_ascii_digit());
    match kind {
        // Commit–reveal: in round 1 there is nothing to copy yet.
        "copy-exact" | "copy-noisy" if round == 1 => Expect::Absent,
        "free-rider" if round == 1 => Expect::Slashed("free rider"),
        "replay" if round == 1 => Expect::Honest,
        // The free rider resubmits the last merged step: a copy of that round's settlement;
        // the replayer its own first update.
        "copy-exact" | "copy-noisy" | "free-rider" | "replay" => Expect::Slashed("copied"),
        "inflate" => Expect::Slashed("invalid"),
        "nan" => Expect::Slashed("non-finite"),
        "poison" => Expect::Slashed("poisoned"),
        other => panic!("unknown attacker {other}"),
    }
}

/// Checks the settled rounds of a ledger check (`report.json`'s `ledger`): honest workers
/// are never slashed and are paid every round they contributed; every attacker is slashed
/// with its reason and never paid; honest workers hold everything minted. In a round of
/// `crashed` an honest worker may be absent (restarted after the close), slashed as
/// invalid (killed between its commit and its reveal: withholding is slashed, whatever the
/// cause) or as a copy (restarted after its commit, it trains again from the same global
/// weights and seed and commits the same update twice: the later one is a copy).
fn check_settlement(ledger: &Value, honest: &[&str], crashed: &[(&str, u64)]) {
    let rounds = ledger["rounds"].as_array().unwrap();
    assert_eq!(rounds.len() as u64, ROUNDS);
    for r in rounds {
        let round = r["round"].as_u64().unwrap();
        let outcomes = r["outcomes"].as_array().unwrap();
        for o in outcomes {
            let name = o["worker"].as_str().unwrap();
            if crashed.contains(&(name, round))
                && o["slashed"]
                    .as_str()
                    .is_some_and(|x| x.starts_with("invalid") || x.starts_with("copied"))
            {
                assert_eq!(o["reward"].as_u64().unwrap(), 0, "round {round}: {o}");
            } else if honest.contains(&name) || expected(name, round) == Expect::Honest {
                assert!(o["slashed"].is_null(), "round {round}: {o}");
                assert!(o["reward"].as_u64().unwrap() > 0, "round {round}: {o}");
            } else {
                let Expect::Slashed(want) = expected(name, round) else {
                    panic!("round {round}: {name} contributed: {o}");
                };
                let got = o["slashed"].as_str().unwrap_or("");
                assert!(
                    got.starts_with(want),
                    "round {round}: {name} slashed `{got}`, want `{want}`; the round: {r}"
                );
                assert_eq!(o["reward"].as_u64().unwrap(), 0, "round {round}: {o}");
            }
        }
        for h in honest {
            let present = outcomes.iter().any(|o| o["worker"] == *h);
            let sat_out = crashed.contains(&(*h, round));
            assert!(
                present || sat_out,
                "round {round}: honest {h} has no outcome"
            );
        }
    }
    let emitted = ledger["emitted"].as_u64().unwrap();
    assert!(emitted > 0);
    assert_eq!(ledger["total_balance"].as_u64().unwrap(), emitted);
    // Paid for honest work: the honest workers, and the replayer for its first round.
    let mut earned = 0;
    for b in ledger["balances"].as_array().unwrap() {
        let (name, units) = (b[0].as_str().unwrap(), b[1].as_u64().unwrap());
        if honest.contains(&name) {
            assert!(units > 0, "{name} earned nothing");
            earned += units;
        } else if name.starts_with("replay") {
            earned += units;
        } else if !name.starts_with("validator") && name != "liar" {
            assert_eq!(units, 0, "attacker {name} holds {units}");
        }
    }
    assert_eq!(earned, emitted, "honest work holds everything minted");
}

/// Prints the consensus scores (honest and poisoner) and, from the validators' reports when
/// given, the largest residual cosine of an honest update with its own worker's earlier
/// ones (the replay bar's margin); the honest updates must stay below the bar.
fn scores_and_cosines(ledger: &Value, evaluations: &Value, honest: &[&str]) {
    let mut worker_of = std::collections::HashMap::new();
    let (mut honest_scores, mut poison_scores) = (Vec::new(), Vec::new());
    for r in ledger["rounds"].as_array().unwrap() {
        for o in r["outcomes"].as_array().unwrap() {
            let w = o["worker"].as_str().unwrap().to_string();
            worker_of.insert(o["contribution"].as_str().unwrap().to_string(), w.clone());
            let score = o["score_ppm"].as_i64();
            if honest.contains(&w.as_str()) {
                honest_scores.extend(score);
            } else if w.starts_with("poison") {
                poison_scores.extend(score);
            }
        }
    }
    let mut own = 0.0f64;
    for v in evaluations.as_array().unwrap() {
        if v[0] == "liar" {
            continue;
        }
        for round in v[1].as_array().unwrap() {
            for x in round["verdicts"].as_array().unwrap() {
                let c = x["contribution"].as_str().unwrap();
                if worker_of
                    .get(c)
                    .is_some_and(|w| honest.contains(&w.as_str()))
                {
                    own = own.max(x["own_cosine"].as_f64().unwrap());
                }
            }
        }
    }
    eprintln!("consensus scores (ppm): honest {honest_scores:?}, poisoner {poison_scores:?}");
    if !evaluations.as_array().unwrap().is_empty() {
        eprintln!("largest honest own-history residual cosine {own:.4}");
    }
    assert!(
        own < magnet::protocol::ProtocolConfig::default().replay_cosine,
        "an honest update came within the replay bar of its own earlier one: {own}"
    );
}

#[test]
fn run_in_one_process_slashes_every_attacker_and_verifies_the_ledger() {
    let started = Instant::now();
    let s = setup();
    let out = s.root.join("run");
    let status = magnet()
        .args(["run", "--model-config"])
        .arg(&s.model)
        .arg("--corpus")
        .arg(&s.corpus)
        .arg("--training-config")
        .arg(&s.training)
        .args(["--workers", "3", "--validators", "2", "--liar"])
        .args([
            "--adversary",
            "copy-exact,copy-noisy,inflate,nan,free-rider,poison,replay",
        ])
        .args(["--rounds", &ROUNDS.to_string(), "--inner-steps", "10"])
        // 16 windows of 17 tokens per measurement: with 4, an honest update's leave-one-out
        // score scatters by a few percent, past the 1 % poison tolerance.
        .args(["--heldout-windows", "16", "--val-windows", "8"])
        .args(["--emission", "1000", "--halving-rounds", "2"])
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "magnet run failed: {status:?}");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();

    // The global model learns.
    let initial = r["initial_val_loss"].as_f64().unwrap();
    let rounds = r["rounds"].as_array().unwrap();
    assert_eq!(rounds.len() as u64, ROUNDS);
    let last = rounds.last().unwrap()["val_loss"].as_f64().unwrap();
    assert!(last < initial - 0.3, "val loss {initial} -> {last}");
    for x in rounds {
        // Only honest work: the 3 honest workers, and the replayer's first round.
        let want = if x["round"] == 1 { 4 } else { 3 };
        assert_eq!(
            x["merged"].as_u64().unwrap(),
            want,
            "only honest updates: {x}"
        );
        assert!(x["uplink_bytes"].as_u64().unwrap() > 0);
    }
    assert!(out.join("model/model.safetensors").is_file());
    // The micro model's rows (32 values) cannot be TQ2_0 blocks (256): the report says so
    // instead of failing the run (the tiny preset exports).
    assert!(
        r["gguf"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("multiples of 256")),
        "GGUF export: {}",
        r["gguf"]
    );

    let l = &r["ledger"];
    let honest = ["worker0", "worker1", "worker2"];
    check_settlement(l, &honest, &[]);
    scores_and_cosines(l, &r["evaluations"], &honest);
    // 1000 + 1000 + 500 (halving every 2 rounds).
    assert_eq!(l["emitted"].as_u64().unwrap(), 2_500);

    // Anyone holding the files checks the same, pinned to the reported operator; a
    // flipped byte in the checkpoint or in a stored entry is caught.
    let dir = Path::new(l["dir"].as_str().unwrap());
    let operator = PublicKey(hex32(l["operator"].as_str().unwrap()));
    let v = verify_dir(dir, Some(&operator)).unwrap();
    assert_eq!(v.entries, l["entries"].as_u64().unwrap());
    assert_eq!(v.settlements, ROUNDS);
    let reopened = Ledger::open(dir, Some(&operator), None).unwrap();
    assert_eq!(
        incentive_ledger::codec::hex(&reopened.log().tree().root()),
        l["root"].as_str().unwrap()
    );
    drop(reopened);
    for file in [CHECKPOINT_FILE, DB_FILE] {
        let p = dir.join(file);
        let orig = std::fs::read(&p).unwrap();
        let at = if file == DB_FILE {
            // The origin is inside every signed entry: flip a byte of its last copy.
            let needle = b"magnet-run";
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

    // A second run into the same directory would mix two ledgers: refused.
    let again = magnet()
        .args(["run", "--model-config"])
        .arg(&s.model)
        .arg("--corpus")
        .arg(&s.corpus)
        .args(["--no-search", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("holds a ledger"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    eprintln!("magnet run test: {:.1} s", started.elapsed().as_secs_f64());
}

struct Party {
    name: String,
    child: Child,
}

impl Drop for Party {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, args: &[String], log: &Path) -> Party {
    let file = std::fs::File::create(log.join(format!("{name}.log"))).unwrap();
    let child = magnet()
        .args(args)
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    Party {
        name: name.into(),
        child,
    }
}

fn wait_ok(p: &mut Party, deadline: Instant, log: &Path) {
    loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            let text =
                std::fs::read_to_string(log.join(format!("{}.log", p.name))).unwrap_or_default();
            assert!(st.success(), "{} failed ({st:?}):\n{text}", p.name);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not finish in time",
            p.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Operator, 4 honest workers (one killed after round 1 and restarted, one straggling past
/// the grace window in round 2), every attacker of the threat model, an honest validator
/// (killed once round 3 closed and restarted) and a lying one with minority stake (killed
/// once round 1 closed, for good), each its own process, over `store_url`.
fn separate_processes(store_url: &str, s: &Setup, tag: &str) {
    let started = Instant::now();
    let logs = s.root.join(format!("logs-{tag}"));
    std::fs::create_dir_all(&logs).unwrap();
    let data = s.root.join("data");
    if !data.join("tokenizer.json").is_file() {
        let st = magnet()
            .args(["prepare", "--model-config"])
            .arg(&s.model)
            .arg("--data-dir")
            .arg(&data)
            .arg("--corpus")
            .arg(&s.corpus)
            .status()
            .unwrap();
        assert!(st.success(), "magnet prepare failed");
    }
    let common = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = extra.iter().map(|x| (*x).to_string()).collect();
        v.extend([
            "--store".into(),
            store_url.into(),
            "--model-config".into(),
            s.model.display().to_string(),
            "--data-dir".into(),
            data.display().to_string(),
            "--key-seed".into(),
            tag.into(),
        ]);
        v
    };
    let ledger = s.root.join(format!("ledger-{tag}"));
    let out = s.root.join(format!("out-{tag}"));
    let mut op_args = vec![
        "operator".to_string(),
        "--ledger".into(),
        ledger.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    op_args.extend(common(&[
        "--rounds",
        &ROUNDS.to_string(),
        "--inner-steps",
        "10",
        "--workers",
        "11",
        "--validators",
        "2",
        // Round 1: the copiers have nothing to copy, so 9 commit; a round closes when all
        // 11 did, or 10 s after 8 did (time for the slowest trainers; the killed worker's
        // and the straggler's rounds).
        "--quorum",
        "8",
        "--grace-ms",
        "10000",
        "--commit-deadline-ms",
        "120000",
        "--eval-deadline-ms",
        "120000",
        "--heldout-windows",
        "16",
        "--val-windows",
        "8",
        "--emission",
        "1000",
        "--halving-rounds",
        "2",
        "--seq-len",
        "16",
        // MAGNET's first pillar: a short phased search chooses the training config.
        "--search-lr-trials",
        "2",
        "--search-shape-trials",
        "1",
        "--search-steps",
        "5",
    ]));
    let mut operator = spawn("operator", &op_args, &logs);
    let worker = |name: &str, shard: &str, extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            "worker".to_string(),
            "--name".into(),
            name.into(),
            "--shard".into(),
            shard.into(),
            "--shards".into(),
            "4".into(),
            "--seed".into(),
            shard.into(),
        ];
        v.extend(extra.iter().map(|x| (*x).to_string()));
        v.extend(common(&[]));
        v
    };
    let mut w0 = spawn("w0", &worker("w0", "0", &[]), &logs);
    let mut w1 = spawn("w1", &worker("w1", "1", &[]), &logs);
    let w2_args = worker("w2", "2", &[]);
    let mut w2 = spawn("w2", &w2_args, &logs);
    // The straggler: trains in round 2 but commits only once the round has closed.
    let mut w3 = spawn("w3", &worker("w3", "3", &["--late", "2"]), &logs);
    let attackers = [
        "copy-exact",
        "copy-noisy",
        "inflate",
        "nan",
        "free-rider",
        "poison",
        "replay",
    ];
    let mut bad: Vec<Party> = attackers
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let name = format!("{a}0");
            // Seeds apart from the honest workers' batch orders on the same shards.
            let shard = (i % 4).to_string();
            let mut args = worker(&name, &shard, &["--adversary", a]);
            let seed_at = args.iter().position(|x| x == "--seed").unwrap() + 1;
            args[seed_at] = (100 + i).to_string();
            spawn(&name, &args, &logs)
        })
        .collect();
    let validator = |name: &str, stake: &str, extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            "validator".to_string(),
            "--name".into(),
            name.into(),
            "--stake".into(),
            stake.into(),
            "--val-windows".into(),
            "8".into(),
        ];
        v.extend(extra.iter().map(|x| (*x).to_string()));
        v.extend(common(&[]));
        v
    };
    let v0_args = validator("validator0", "100", &[]);
    let mut v0 = spawn("validator0", &v0_args, &logs);
    let mut liar = spawn("liar", &validator("liar", "40", &["--lie"]), &logs);
    let store = Store::open(store_url).unwrap();
    let deadline = Instant::now() + Duration::from_mins(15);
    let wait_for = |key: &str, what: &str| {
        while store.get_limited(key, 1 << 20).unwrap().is_none() {
            assert!(Instant::now() < deadline, "{what} never happened");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // The liar dies once round 1 closed (before or after its evaluations) and stays dead:
    // the honest validator's majority stake settles each round after the grace window.
    wait_for(&keys::close(1), "round 1's close");
    liar.child.kill().unwrap();
    liar.child.wait().unwrap();

    // Kill w2 once round 1 is settled, and start it again: it rejoins with the same key
    // and contributes from the round that is still open.
    while store
        .get_limited(&keys::result(1), 1 << 20)
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "round 1 never settled");
        if let Some(st) = operator.child.try_wait().unwrap() {
            panic!(
                "operator exited early ({st:?}):\n{}",
                std::fs::read_to_string(logs.join("operator.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    w2.child.kill().unwrap();
    w2.child.wait().unwrap();
    drop(w2);
    let mut w2 = spawn("w2-restarted", &w2_args, &logs);

    // Kill the operator in the middle of round 2 (its commits closed, the evaluations not
    // yet settled) and start it again on the same ledger and store: it resumes the round.
    while store
        .get_limited(&keys::close(2), 1 << 20)
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "round 2 never closed");
        std::thread::sleep(Duration::from_millis(20));
    }
    operator.child.kill().unwrap();
    operator.child.wait().unwrap();
    drop(operator);
    let mut operator = spawn("operator-restarted", &op_args, &logs);

    // Kill the honest validator once round 3 closed, and start it again: it reloads the
    // history it needs from the store and signs round 3 (re-signing earlier rounds is
    // idempotent: the same batch under the same content-addressed key).
    wait_for(&keys::close(ROUNDS), "the last round's close");
    v0.child.kill().unwrap();
    v0.child.wait().unwrap();
    drop(v0);
    let mut v0 = spawn("validator0-restarted", &v0_args, &logs);

    wait_ok(&mut operator, deadline, &logs);
    for p in [&mut w0, &mut w1, &mut w2, &mut w3, &mut v0]
        .into_iter()
        .chain(bad.iter_mut())
    {
        wait_ok(p, deadline, &logs);
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("operator.json")).unwrap()).unwrap();
    assert!(
        report["doc"]["search"]["trials"].as_u64().unwrap() == 3,
        "the search ran its 3 trials: {}",
        report["doc"]["search"]
    );
    // The operator saves the merged model and reports its GGUF export (the micro model's
    // 32-wide rows cannot fill TQ2_0's 256-blocks; the tiny preset exports).
    assert!(out.join("model/model.safetensors").is_file());
    assert!(
        report["gguf"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("multiples of 256")),
        "{}",
        report["gguf"]
    );
    // The restarted operator reports the rounds it ran itself, the last one included.
    let curve = report["rounds"].as_array().unwrap();
    assert_eq!(
        curve.last().unwrap()["round"].as_u64().unwrap(),
        ROUNDS,
        "{report}"
    );

    // Settlement as the ledger files say, names from the derived keys.
    let names: Vec<(String, PublicKey)> = ["w0", "w1", "w2", "w3", "validator0", "liar"]
        .iter()
        .map(ToString::to_string)
        .chain(attackers.iter().map(|a| format!("{a}0")))
        .map(|n| {
            let k = magnet::roles::derived_key(tag, &n).public();
            (n, k)
        })
        .collect();
    let op_key = magnet::roles::derived_key(tag, "operator").public();
    let check = magnet::run::check_ledger(&ledger, &op_key, &names).unwrap();
    let check = serde_json::to_value(&check).unwrap();
    // w2 may have missed the round it was killed in, or committed and died before revealing.
    let mut crashed: Vec<(&str, u64)> = (2..=ROUNDS).map(|r| ("w2", r)).collect();
    crashed.push(("w3", 2));
    let honest = ["w0", "w1", "w2", "w3"];
    check_settlement(&check, &honest, &crashed);
    // The straggler's late commit is simply not in round 2 (neither paid nor slashed), and
    // it is paid in the rounds around it.
    for r in check["rounds"].as_array().unwrap() {
        let w3 = r["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["worker"] == "w3");
        if r["round"] == 2 {
            assert!(w3.is_none(), "the straggler is in round 2: {w3:?}");
        } else {
            let w3 = w3.expect("w3 contributes in rounds 1 and 3");
            assert!(w3["slashed"].is_null() && w3["reward"].as_u64().unwrap() > 0);
        }
    }
    // The merge is exactly the honest work: each round's merged contributions are the ones
    // the ledger paid (the honest workers', and the replayer's first round).
    for r in check["rounds"].as_array().unwrap() {
        let round = r["round"].as_u64().unwrap();
        let result: magnet::protocol::RoundResult = serde_json::from_slice(
            &store
                .get_limited(&keys::result(round), 1 << 20)
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        let mut merged = result.merged.clone();
        merged.sort();
        let mut paid: Vec<String> = r["outcomes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["reward"].as_u64().unwrap() > 0)
            .map(|o| o["contribution"].as_str().unwrap().to_string())
            .collect();
        paid.sort();
        assert_eq!(merged, paid, "round {round}: merged vs paid");
    }
    scores_and_cosines(&check, &serde_json::json!([]), &honest);
    // Nothing minted or paid twice across the operator's restart: the schedule exactly.
    assert_eq!(check["emitted"].as_u64().unwrap(), 2_500);
    assert_eq!(check["settlements"].as_u64().unwrap(), ROUNDS);
    let l = Ledger::open(&ledger, Some(&op_key), None).unwrap();
    let protocol = l.state().protocol.expect("protocol record");
    assert_ne!(
        protocol.search, [0; 32],
        "the search journal's hash is recorded"
    );
    let journal = std::fs::read(out.join("search/journal.jsonl")).unwrap();
    use sha2::Digest;
    assert_eq!(
        <[u8; 32]>::from(sha2::Sha256::digest(&journal)),
        protocol.search,
        "the recorded hash is the journal's"
    );
    eprintln!(
        "separate processes over {store_url}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn separate_processes_over_a_file_store_hold_against_attackers_and_a_killed_worker() {
    let s = setup();
    let url = format!("file://{}", s.root.join("store").display());
    separate_processes(&url, &s, "file");
}

#[test]
fn separate_processes_over_s3() {
    let (Ok(endpoint), Ok(bucket)) = (
        std::env::var("MAGNET_S3_ENDPOINT"),
        std::env::var("MAGNET_S3_BUCKET"),
    ) else {
        assert!(
            std::env::var_os("MAGNET_REQUIRE_ORACLES").is_none(),
            "MAGNET_S3_ENDPOINT / MAGNET_S3_BUCKET unset but MAGNET_REQUIRE_ORACLES=1 \
             (run `eval \"$(cargo xtask services)\"`)"
        );
        eprintln!("skipping: MAGNET_S3_ENDPOINT unset (eval \"$(cargo xtask services)\")");
        return;
    };
    let _ = endpoint;
    let s = setup();
    let prefix = format!(
        "magnet-cli-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    separate_processes(&format!("s3://{bucket}/{prefix}"), &s, "s3");
}
