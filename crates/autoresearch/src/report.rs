//! Text reports: the autoresearch-style results table and CSV export.

use std::fmt::Write as _;

use crate::space::SearchSpace;
use crate::trial::{Direction, Trial, TrialState};

/// Tab-separated `trial metric memory_gb status description`, in trial order. Status is
/// `keep` for a complete trial that improved on every earlier one, `discard` for other
/// complete trials, and `pruned` / `crash` / `timeout` / `running` / `waiting` otherwise.
pub fn results_table(trials: &[Trial], dir: Direction) -> String {
    let mut out = String::from("trial\tmetric\tmemory_gb\tstatus\tdescription\n");
    let mut best: Option<f64> = None;
    let mut sorted: Vec<&Trial> = trials.iter().collect();
    sorted.sort_by(|a, b| {
        a.finished_at
            .unwrap_or(f64::INFINITY)
            .total_cmp(&b.finished_at.unwrap_or(f64::INFINITY))
            .then(a.number.cmp(&b.number))
    });
    let mut status = vec![""; trials.len()];
    for t in sorted {
        let s = match t.state {
            TrialState::Complete => {
                let v = t.value().unwrap_or(f64::NAN);
                if best.is_none_or(|b| dir.better(v, b)) {
                    best = Some(v);
                    "keep"
                } else {
                    "discard"
                }
            }
            TrialState::Pruned => "pruned",
            TrialState::Failed => "crash",
            TrialState::TimedOut => "timeout",
            TrialState::Running => "running",
            TrialState::Waiting => "waiting",
        };
        if let Some(slot) = status.get_mut(t.number as usize) {
            *slot = s;
        }
    }
    for t in trials {
        let metric = t
            .value()
            .map_or_else(|| "0.000000".into(), |v| format!("{v:.6}"));
        let mem = t
            .user_attrs
            .get("memory_gb")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0);
        let desc = t
            .user_attrs
            .get("description")
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| {
                t.params
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            });
        let st = status.get(t.number as usize).copied().unwrap_or("");
        let _ = writeln!(
            out,
            "{}\t{metric}\t{mem:.1}\t{st}\t{}",
            t.number,
            desc.replace(['\t', '\n'], " ")
        );
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// CSV with one column per parameter of the space (empty where inactive).
pub fn export_csv(trials: &[Trial], space: &SearchSpace) -> String {
    let n_values = trials
        .iter()
        .filter_map(|t| t.values.as_ref().map(Vec::len))
        .max()
        .unwrap_or(1);
    let mut head = vec!["number".to_string(), "state".into()];
    head.extend((0..n_values).map(|i| {
        if n_values == 1 {
            "value".to_string()
        } else {
            format!("value_{i}")
        }
    }));
    head.push("duration_s".into());
    head.extend(
        space
            .params
            .iter()
            .map(|p| csv_field(&format!("param_{}", p.name))),
    );
    head.push("message".into());
    let mut out = head.join(",");
    out.push('\n');
    for t in trials {
        let mut row = vec![t.number.to_string(), t.state.as_str().to_string()];
        for i in 0..n_values {
            row.push(
                t.values
                    .as_ref()
                    .and_then(|v| v.get(i))
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            );
        }
        row.push(format!("{:.3}", t.duration()));
        for p in &space.params {
            row.push(csv_field(
                &t.params
                    .get(&p.name)
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            ));
        }
        row.push(csv_field(t.message.as_deref().unwrap_or("")));
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}
