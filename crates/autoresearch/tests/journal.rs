//! Journal storage: a child process running a study is killed; the study resumes from the
//! journal with no trial lost.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoresearch::{
    JournalStorage, OptimizeOptions, SearchSpace, Storage, Study, TpeSampler, TrialError,
    TrialHandle, TrialState,
};

const CHILD_ENV: &str = "AUTORESEARCH_TEST_CHILD_JOURNAL";
const TOTAL: usize = 24;

fn space() -> SearchSpace {
    SearchSpace::new()
        .float("x", -4.0, 4.0, false)
        .int("n", 1, 64, 1, true)
}

fn study(path: &std::path::Path) -> Study {
    Study::builder(space())
        .name("resume")
        .sampler(TpeSampler {
            n_startup_trials: 5,
            ..TpeSampler::default()
        })
        .storage(Arc::new(JournalStorage::open(path).unwrap()))
        .seed(11)
        .build()
        .unwrap()
}

fn objective(delay: Duration) -> impl Fn(&TrialHandle) -> Result<f64, TrialError> {
    move |t: &TrialHandle| {
        let x = t.suggest_float("x")?;
        let n = t.suggest_int("n")? as f64;
        for step in 0..3 {
            std::thread::sleep(delay);
            t.report(step, x * x + step as f64)?;
        }
        Ok(x * x + (n.ln() - 2.0).powi(2))
    }
}

#[test]
fn killed_study_resumes_without_losing_trials() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        // Child: run "forever" until killed.
        let s = study(std::path::Path::new(&path));
        let _ = s.optimize(
            Arc::new(objective(Duration::from_millis(15))),
            &OptimizeOptions::trials(10_000),
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("study.jsonl");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "killed_study_resumes_without_losing_trials",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_ENV, &path)
        .spawn()
        .unwrap();
    let reader = JournalStorage::open(&path).unwrap();
    let t0 = Instant::now();
    loop {
        let done = reader
            .trials()
            .unwrap()
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .count();
        if done >= 8 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_mins(1),
            "child made no progress"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Kill mid-trial (each takes ~45 ms, we poll every 10 ms).
    std::thread::sleep(Duration::from_millis(20));
    child.kill().unwrap();
    child.wait().unwrap();

    let before = JournalStorage::open(&path).unwrap().trials().unwrap();
    let complete_before: Vec<_> = before
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .cloned()
        .collect();
    let running: Vec<_> = before
        .iter()
        .filter(|t| t.state == TrialState::Running)
        .cloned()
        .collect();
    assert!(complete_before.len() >= 8);

    let s = study(&path);
    let stale = s.recover_stale(Duration::ZERO).unwrap();
    assert_eq!(stale, running.iter().map(|t| t.number).collect::<Vec<_>>());
    let remaining = TOTAL - complete_before.len();
    s.optimize(
        Arc::new(objective(Duration::ZERO)),
        &OptimizeOptions::trials(remaining),
    )
    .unwrap();

    let after = s.trials().unwrap();
    // Every trial completed before the kill is still there, unchanged.
    for t in &complete_before {
        assert_eq!(&after[t.number as usize], t);
    }
    let complete = after
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .count();
    assert_eq!(complete, TOTAL);
    // The interrupted trial failed as stale and was re-run with the same parameters.
    for r in &running {
        assert_eq!(after[r.number as usize].state, TrialState::Failed);
        let retry = after
            .iter()
            .find(|t| t.retry_of == Some(r.number))
            .expect("a retry");
        assert_eq!(retry.params, r.params);
        assert_eq!(retry.state, TrialState::Complete);
    }
    // A fresh reader sees exactly the same trials.
    let fresh = JournalStorage::open(&path).unwrap().trials().unwrap();
    assert_eq!(fresh, after);
}

#[test]
fn torn_final_line_is_skipped_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.jsonl");
    let s = study(&path);
    let obj = objective(Duration::ZERO);
    s.optimize(Arc::new(obj), &OptimizeOptions::trials(3))
        .unwrap();
    drop(s);
    // Simulate a writer killed mid-line.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(br#"{"op":"report","number":2,"st"#).unwrap();
    drop(f);
    let j = JournalStorage::open(&path).unwrap();
    assert_eq!(j.trials().unwrap().len(), 3);
    let s = study(&path);
    s.optimize(
        Arc::new(objective(Duration::ZERO)),
        &OptimizeOptions::trials(2),
    )
    .unwrap();
    let j = JournalStorage::open(&path).unwrap();
    assert_eq!(j.trials().unwrap().len(), 5);
    assert_eq!(j.torn_lines(), 1);
    // Garbage that is not JSON at all in the middle is tolerated the same way, but a valid op
    // that breaks the state machine is reported with its line.
    std::fs::write(
        &path,
        "{\"op\":\"report\",\"number\":7,\"step\":0,\"value\":1.0}\n",
    )
    .unwrap();
    let e = JournalStorage::open(&path).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("line 1") && text.contains("unknown trial 7"),
        "{text}"
    );
    // The cause is the op's own error, kept as the source (not flattened to text).
    let source = std::error::Error::source(&e).expect("a source");
    assert!(
        matches!(
            source.downcast_ref::<autoresearch::Error>(),
            Some(autoresearch::Error::UnknownTrial(7))
        ),
        "{source:?}"
    );
}
