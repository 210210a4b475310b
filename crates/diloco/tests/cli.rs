//! The `diloco` binary's command line (docs/cli.md): the model is `--preset` (with `toy`)
//! or `--model-config FILE`, the old `--model` is refused by the parser, and `--json`
//! makes a process print one JSON document on stdout (a short summary line otherwise).
#![cfg(feature = "cli")]

use std::process::{Command, Output};

fn diloco(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diloco"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run diloco")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_old_model_flag_and_unknown_presets_are_refused_by_the_parser() {
    let out = diloco(&[
        "worker",
        "--store",
        "file:///nonexistent",
        "--id",
        "0",
        "--model",
        "toy",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unexpected argument '--model'"),
        "{}",
        stderr(&out)
    );
    let out = diloco(&["prepare", "--preset", "huge"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    for name in [
        "toy",
        "tiny",
        "genkidama-363m",
        "genkidama-618m",
        "bitnet-2b4t",
    ] {
        assert!(stderr(&out).contains(name), "{name}: {}", stderr(&out));
    }
}

/// The parser takes any path; the command reads it and names it when it cannot (a build
/// without `bitnet` names the missing feature and the file alike).
#[test]
fn a_missing_model_config_is_a_failure_of_the_work_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.toml");
    let data = tmp.path().join("data");
    let out = diloco(&[
        "prepare",
        "--model-config",
        missing.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(missing.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
}

/// A two-round toy run (one coordinator, one worker): the coordinator's `--json` summary
/// parses and shows learning; the worker without `--json` prints its one summary line.
#[test]
fn a_toy_run_prints_json_with_json_and_a_summary_line_without() {
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("file://{}", tmp.path().join("run").display());
    let common = [
        "--store",
        store.as_str(),
        "--rounds",
        "2",
        "--poll-ms",
        "10",
    ];
    let coordinator = Command::new(env!("CARGO_BIN_EXE_diloco"))
        .arg("coordinator")
        .args(common)
        .args(["--preset", "toy", "--deadline-ms", "30000", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut args = vec!["worker"];
    args.extend(common);
    args.extend(["--preset", "toy", "--id", "0", "--shards", "1"]);
    args.extend(["--inner-steps", "10"]);
    let worker = diloco(&args);
    assert!(worker.status.success(), "{}", stderr(&worker));
    let line = String::from_utf8(worker.stdout).unwrap();
    assert!(
        line.starts_with("worker 0: 2 rounds, sent ") && line.lines().count() == 1,
        "{line:?}"
    );
    let out = coordinator.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(doc["setup"]["model"], "toy");
    assert_eq!(doc["manifests"].as_array().unwrap().len(), 2);
    let (l0, l1) = (
        doc["initial_loss"].as_f64().unwrap(),
        doc["final_loss"].as_f64().unwrap(),
    );
    assert!(l1 < l0, "held-out loss {l0} -> {l1}");
}

/// `prepare --model-config FILE --json` builds the dataset for that architecture.
#[cfg(feature = "bitnet")]
#[test]
fn prepare_reads_a_model_config_and_prints_json() {
    use std::fmt::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let (who, what) = (
        ["the cat", "a dog", "my sister"],
        ["sees", "likes", "follows"],
    );
    let mut text = String::new();
    for i in 0..600 {
        writeln!(
            text,
            "{} {} the house number {i}.",
            who[i % 3],
            what[i / 3 % 3]
        )
        .unwrap();
    }
    std::fs::write(corpus.join("story.txt"), text).unwrap();
    let config = tmp.path().join("micro.toml");
    std::fs::write(
        &config,
        "vocab_size = 320\nhidden_size = 32\nn_layers = 1\nn_heads = 2\nn_kv_heads = 1\n\
         ffn_hidden_size = 64\ncontext_length = 16\n",
    )
    .unwrap();
    let data = tmp.path().join("data");
    let out = diloco(&[
        "prepare",
        "--model-config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(doc["vocab_size"], 320);
    assert!(doc["train_tokens"].as_u64().unwrap() > 0, "{doc}");
    assert!(data.join("tokenizer.json").is_file());
}
