//! The `autoresearch` binary driving a shell command as the objective.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_autoresearch");

fn write_space(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("space.toml");
    std::fs::write(
        &p,
        r#"
[[params]]
name = "x"
type = "float"
low = 0.0
high = 1.0

[[params]]
name = "k"
type = "int"
low = 1
high = 4
"#,
    )
    .unwrap();
    p
}

fn ar(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_status_best_export_resume() {
    let dir = tempfile::tempdir().unwrap();
    let space = write_space(dir.path());
    let study = dir.path().join("st");
    // k = 4 crashes; otherwise two intermediate lines then the final metric. The env var and
    // the params file must agree with the substituted value.
    let script = r#"test "$AR_PARAM_X" = "{x}" && test -f "$AUTORESEARCH_PARAMS_FILE" || exit 3
if [ {k} = 4 ]; then echo "bad k" >&2; exit 2; fi
awk -v x={x} -v k={k} 'BEGIN { printf "{\"step\":0,\"metric\":%f}\n", (x-0.3)^2 + 1;
  printf "{\"step\":1,\"metric\":%f}\n", (x-0.3)^2 + 0.5;
  printf "{\"metric\":%f,\"description\":\"k%d\"}\n", (x-0.3)^2 + k/10, k }'"#;
    let (ok, out, err) = ar(&[
        "run",
        "--space",
        space.to_str().unwrap(),
        "--study",
        study.to_str().unwrap(),
        "--trials",
        "12",
        "--jobs",
        "2",
        "--sampler",
        "random",
        "--seed",
        "3",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("12 started"), "{out}");
    let tsv = std::fs::read_to_string(study.join("results.tsv")).unwrap();
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines[0], "trial\tmetric\tmemory_gb\tstatus\tdescription");
    assert_eq!(lines.len(), 13);
    assert!(lines.iter().any(|l| l.contains("\tkeep\t")), "{tsv}");
    // Per-trial logs are kept.
    assert!(study.join("trials/0/stdout.log").exists());
    assert!(study.join("trials/0/params.json").exists());

    #[cfg(feature = "plot")]
    {
        let (ok, out, err) = ar(&["plot", "--study", study.to_str().unwrap()]);
        assert!(ok, "{err}");
        for f in [
            "optimization_history.svg",
            "parallel_coordinates.svg",
            "importance.svg",
        ] {
            let p = study.join("plots").join(f);
            assert!(out.contains(f), "{out}");
            let svg = std::fs::read_to_string(&p).unwrap();
            assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        }
    }
    let (ok, out, _) = ar(&["status", "--study", study.to_str().unwrap()]);
    assert!(ok);
    assert!(out.contains("12 trials"), "{out}");
    assert!(out.contains("importance (PED-ANOVA-style): "), "{out}");
    let crashed = out.lines().filter(|l| l.contains("\tcrash\t")).count();
    let (ok, csv, _) = ar(&[
        "export",
        "--study",
        study.to_str().unwrap(),
        "--format",
        "csv",
    ]);
    assert!(ok);
    assert!(csv.starts_with("number,state,value,duration_s,param_x,param_k,message"));
    assert_eq!(
        csv.lines().filter(|l| l.contains(",failed,")).count(),
        crashed
    );
    for l in csv.lines().filter(|l| l.contains(",failed,")) {
        assert!(l.contains("bad k"), "{l}");
    }
    // Intermediate values were streamed.
    let (ok, json, _) = ar(&[
        "export",
        "--study",
        study.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(ok);
    let trials: serde_json::Value = serde_json::from_str(&json).unwrap();
    let t0 = trials
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["state"] == "complete")
        .unwrap();
    assert_eq!(t0["intermediate"].as_object().unwrap().len(), 2);
    assert!(
        t0["user_attrs"]["description"]
            .as_str()
            .unwrap()
            .starts_with('k')
    );

    let (ok, best, _) = ar(&["best", "--study", study.to_str().unwrap()]);
    assert!(ok);
    let b: serde_json::Value = serde_json::from_str(&best).unwrap();
    assert_eq!(b["state"], "complete");

    let (ok, out, err) = ar(&[
        "resume",
        "--study",
        study.to_str().unwrap(),
        "--trials",
        "3",
    ]);
    assert!(ok, "{out}{err}");
    let (_, out, _) = ar(&["status", "--study", study.to_str().unwrap()]);
    assert!(out.contains("15 trials"), "{out}");
    // A second `run` on the same directory refuses.
    let (ok, _, err) = ar(&[
        "run",
        "--space",
        space.to_str().unwrap(),
        "--study",
        study.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert!(!ok && err.contains("resume"), "{err}");
}

#[test]
fn regex_metric_pruning_and_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let space = write_space(dir.path());
    let study = dir.path().join("re");
    let (ok, out, err) = ar(&[
        "run",
        "--space",
        space.to_str().unwrap(),
        "--study",
        study.to_str().unwrap(),
        "--trials",
        "4",
        "--sampler",
        "tpe-optuna",
        "--metric-regex",
        r"val_loss: ([0-9.]+)",
        "--timeout",
        "1",
        "--",
        "sh",
        "-c",
        "if [ $AUTORESEARCH_TRIAL = 1 ]; then sleep 30; fi; echo 'val_loss: 0.25'; echo 'val_loss: {x}'",
    ]);
    assert!(ok, "{out}{err}");
    let (_, json, _) = ar(&[
        "export",
        "--study",
        study.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let trials: serde_json::Value = serde_json::from_str(&json).unwrap();
    for t in trials.as_array().unwrap() {
        if t["number"] == 1 {
            assert_eq!(t["state"], "timed_out");
        } else {
            assert_eq!(t["state"], "complete");
            assert_eq!(t["values"][0].as_f64(), t["params"]["x"].as_f64());
        }
    }
    // Bad inputs give errors, not panics.
    let (ok, _, err) = ar(&[
        "status",
        "--study",
        dir.path().join("none").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("no study"), "{err}");
    std::fs::write(dir.path().join("bad.toml"), "[[params]]\nname = 3\n").unwrap();
    let (ok, _, err) = ar(&[
        "run",
        "--space",
        dir.path().join("bad.toml").to_str().unwrap(),
        "--study",
        dir.path().join("b").to_str().unwrap(),
        "--",
        "true",
    ]);
    assert!(!ok && err.contains("bad.toml"), "{err}");
}

/// Optuna's CLI verbs: `ask` creates the study from a space and prints the trial as JSON,
/// `tell` finishes it (refusing a wrong number of values and a second tell), `enqueue` queues
/// fixed parameters that the next `ask` returns, `status` / `best` / `studies` print JSON or
/// a table, `delete-study` removes it; `--version` works.
#[test]
fn ask_tell_enqueue_studies_delete() {
    let dir = tempfile::tempdir().unwrap();
    let space = write_space(dir.path());
    let study = dir.path().join("st");
    let st = study.to_str().unwrap();
    let (ok, out, _) = ar(&["--version"]);
    assert!(ok && out.starts_with("autoresearch "), "{out}");
    let (ok, out, err) = ar(&["ask", "--study", st, "--space", space.to_str().unwrap()]);
    assert!(ok, "{err}");
    let asked: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(asked["number"], 0);
    let x = asked["params"]["x"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&x));
    let (ok, _, err) = ar(&[
        "tell",
        "--study",
        st,
        "--trial-number",
        "0",
        "--values",
        "1",
        "2",
    ]);
    assert!(!ok && err.contains("1 objective"), "{err}");
    let (ok, _, err) = ar(&[
        "tell",
        "--study",
        st,
        "--trial-number",
        "0",
        "--values",
        "-0.5",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = ar(&[
        "tell",
        "--study",
        st,
        "--trial-number",
        "0",
        "--values",
        "1",
    ]);
    assert!(!ok && err.contains("already complete"), "{err}");
    let (ok, _, _) = ar(&[
        "tell",
        "--study",
        st,
        "--trial-number",
        "0",
        "--values",
        "1",
        "--skip-if-finished",
    ]);
    assert!(ok);
    let (ok, _, err) = ar(&[
        "enqueue",
        "--study",
        st,
        "--params",
        r#"{"x": 0.25, "k": 3}"#,
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = ar(&["enqueue", "--study", st, "--params", r#"{"x": 7.0}"#]);
    assert!(!ok && err.contains("outside"), "{err}");
    let (ok, out, _) = ar(&["ask", "--study", st]);
    assert!(ok);
    let asked: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(asked["params"]["x"], 0.25);
    assert_eq!(asked["params"]["k"], 3);
    let n = asked["number"].as_u64().unwrap().to_string();
    let (ok, _, _) = ar(&[
        "tell",
        "--study",
        st,
        "--trial-number",
        &n,
        "--state",
        "fail",
    ]);
    assert!(ok);
    let (ok, out, _) = ar(&["status", "--study", st, "--format", "json"]);
    assert!(ok);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["n_trials"], 2);
    assert_eq!(status["states"]["complete"], 1);
    assert_eq!(status["states"]["failed"], 1);
    assert_eq!(status["best"][0]["values"][0], -0.5);
    let (ok, out, _) = ar(&["best", "--study", st, "--format", "table"]);
    assert!(
        ok && out.lines().next().unwrap().starts_with("number"),
        "{out}"
    );
    assert!(
        !out.contains("Some(") && !out.contains("Float("),
        "Debug text in {out}"
    );
    let (ok, out, _) = ar(&["studies", "--study", st, "--format", "json"]);
    assert!(ok);
    let studies: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(studies[0]["n_trials"], 2);
    let (ok, _, _) = ar(&["delete-study", "--study", st]);
    assert!(ok);
    let (ok, _, err) = ar(&["status", "--study", st]);
    assert!(!ok && err.contains("no study"), "{err}");
}

/// A multi-objective `run`: two `--metric` keys with their directions, read from the
/// program's JSON line; `best` prints the Pareto front.
#[test]
fn multi_objective_run() {
    let dir = tempfile::tempdir().unwrap();
    let space = write_space(dir.path());
    let study = dir.path().join("mo");
    let script = r#"awk -v x={x} -v k={k} 'BEGIN { printf "{\"loss\":%f,\"speed\":%f}\n", (x-0.3)^2, k - x }'"#;
    let (ok, out, err) = ar(&[
        "run",
        "--space",
        space.to_str().unwrap(),
        "--study",
        study.to_str().unwrap(),
        "--trials",
        "8",
        "--metric",
        "loss",
        "--metric",
        "speed",
        "--direction",
        "minimize",
        "--direction",
        "maximize",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("8 complete"), "{out}");
    let (ok, out, _) = ar(&[
        "best",
        "--study",
        study.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(ok);
    let front: serde_json::Value = serde_json::from_str(&out).unwrap();
    let front = front.as_array().unwrap();
    assert!(!front.is_empty());
    for t in front {
        assert_eq!(t["values"].as_array().unwrap().len(), 2);
        assert_eq!(t["user_attrs"]["sampler"]["reason"], "multi-objective");
    }
    let (ok, _, err) = ar(&[
        "run",
        "--space",
        space.to_str().unwrap(),
        "--study",
        dir.path().join("bad").to_str().unwrap(),
        "--metric",
        "a",
        "--metric",
        "b",
        "--direction",
        "minimize",
        "--",
        "true",
    ]);
    assert!(!ok && err.contains("one direction per metric"), "{err}");
}
