//! `diloco-experiment`'s command line (docs/cli.md): `--preset` / `--model-config` choose
//! the architecture, `--combine` (not `--merge`, a merge rule elsewhere) joins reports,
//! and `--json` prints the report as one JSON document. The run is the experiment at two
//! steps on a micro model and a generated corpus (seconds).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

fn experiment(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_diloco-experiment"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run diloco-experiment")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn old_flags_are_refused_by_the_parser() {
    for old in [["--model", "tiny"], ["--merge", "a,b"]] {
        let out = experiment(&old);
        assert_eq!(out.status.code(), Some(2), "{old:?}: {}", stderr(&out));
        let want = format!("unexpected argument '{}'", old[0]);
        assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    }
}

#[test]
fn a_two_step_run_prints_its_report_as_json_and_combines() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let (who, what) = (
        ["the cat", "a dog", "my sister", "the old man"],
        ["sees", "likes", "follows"],
    );
    let mut text = String::new();
    for i in 0..800 {
        writeln!(
            text,
            "{} {} the house number {i}.",
            who[i % 4],
            what[i / 4 % 3]
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
    let (out_dir, data) = (tmp.path().join("out"), tmp.path().join("data"));
    let flags = [
        "--model-config",
        s(&config),
        "--corpus",
        s(&corpus),
        "--data-dir",
        s(&data),
        "--out",
        s(&out_dir),
        "--steps",
        "2",
        "--workers",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "8",
        "--eval-windows",
        "2",
        "--eval-every",
        "1",
        "--probe-seqs",
        "1",
        "--h",
        "1",
    ];

    // A misspelt run is refused before any work.
    let mut typo = flags.to_vec();
    typo.extend(["--only", "diloco-h2"]);
    let out = experiment(&typo);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such run"), "{}", stderr(&out));

    let mut run = flags.to_vec();
    run.extend(["--only", "sync,diloco-h1", "--json"]);
    let report = json(&experiment(&run));
    let names: Vec<&str> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sync", "diloco-h1"]);
    assert!(
        report["summary"]["sync_val_loss"]
            .as_f64()
            .unwrap()
            .is_finite()
    );
    assert_eq!(report["setup"]["preset"], s(&config));
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(written, report, "stdout is report.json");

    // `--combine` reads reports only: the preset is accepted and not used.
    let combined = tmp.path().join("combined");
    let out = experiment(&[
        "--preset",
        "tiny",
        "--combine",
        s(&out_dir),
        "--out",
        s(&combined),
        "--json",
    ]);
    let again = json(&out);
    assert_eq!(again["runs"], report["runs"]);
    assert!(combined.join("val_loss.png").is_file());
}
