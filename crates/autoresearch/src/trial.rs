//! Trial records and states.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::space::Params;

/// Lifecycle state of a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    /// Queued with fixed parameters (enqueued or re-run after a crash), not started yet.
    Waiting,
    /// Being evaluated.
    Running,
    /// Finished with objective values.
    Complete,
    /// Stopped early by the pruner.
    Pruned,
    /// The objective returned an error, panicked, or its process died.
    Failed,
    /// The objective exceeded the per-trial time limit.
    TimedOut,
}

impl TrialState {
    /// Whether the trial will not change any more.
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Waiting | Self::Running)
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Complete => "complete",
            Self::Pruned => "pruned",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
        }
    }
}

/// Whether lower or higher objective values are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Lower is better.
    #[default]
    Minimize,
    /// Higher is better.
    Maximize,
}

impl Direction {
    /// The value as a loss (lower is better).
    pub fn loss(self, v: f64) -> f64 {
        match self {
            Self::Minimize => v,
            Self::Maximize => -v,
        }
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        self.loss(a) < self.loss(b)
    }
}

/// The stored record of one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Study-wide number, from 0.
    pub number: u64,
    /// Current state.
    pub state: TrialState,
    /// Active parameters.
    pub params: Params,
    /// Objective values (one per direction) when complete.
    #[serde(default)]
    pub values: Option<Vec<f64>>,
    /// Intermediate values by step.
    #[serde(default)]
    pub intermediate: BTreeMap<u64, f64>,
    /// Free-form attributes (memory use, description, test metric...).
    #[serde(default)]
    pub user_attrs: BTreeMap<String, serde_json::Value>,
    /// Unix time (seconds) the trial started.
    pub started_at: f64,
    /// Unix time it finished.
    #[serde(default)]
    pub finished_at: Option<f64>,
    /// Worker id that ran it.
    #[serde(default)]
    pub worker: String,
    /// Error or pruning message.
    #[serde(default)]
    pub message: Option<String>,
    /// Trial this one re-runs (after a crash or timeout of that one).
    #[serde(default)]
    pub retry_of: Option<u64>,
}

impl Trial {
    /// A new running trial.
    pub fn new(number: u64, params: Params, worker: &str) -> Self {
        Self {
            number,
            state: TrialState::Running,
            params,
            values: None,
            intermediate: BTreeMap::new(),
            user_attrs: BTreeMap::new(),
            started_at: now(),
            finished_at: None,
            worker: worker.to_string(),
            message: None,
            retry_of: None,
        }
    }

    /// First objective value, when complete.
    pub fn value(&self) -> Option<f64> {
        self.values.as_ref().and_then(|v| v.first().copied())
    }

    /// The last reported step and its value.
    pub fn last_intermediate(&self) -> Option<(u64, f64)> {
        self.intermediate.iter().next_back().map(|(s, v)| (*s, *v))
    }

    /// Seconds from start to finish (or to now while running).
    pub fn duration(&self) -> f64 {
        self.finished_at.unwrap_or_else(now) - self.started_at
    }
}

/// Current Unix time in seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How an objective ends a trial without a value.
#[derive(Debug, Clone, PartialEq)]
pub enum TrialError {
    /// The objective honoured `should_prune()`.
    Pruned,
    /// The objective failed, with a message.
    Failed(String),
}

impl<E: std::error::Error> From<E> for TrialError {
    fn from(e: E) -> Self {
        Self::Failed(e.to_string())
    }
}

/// Whether `a` dominates `b` (all losses <= and one <).
pub fn dominates(a: &[f64], b: &[f64], dirs: &[Direction]) -> bool {
    let mut strictly = false;
    for ((x, y), d) in a.iter().zip(b).zip(dirs) {
        let (x, y) = (d.loss(*x), d.loss(*y));
        if x > y {
            return false;
        }
        if x < y {
            strictly = true;
        }
    }
    strictly
}

/// Non-domination rank of each value vector (0 = Pareto front).
pub fn nondomination_ranks(values: &[&[f64]], dirs: &[Direction]) -> Vec<usize> {
    let n = values.len();
    let mut rank = vec![usize::MAX; n];
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut r = 0;
    while !remaining.is_empty() {
        let front: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|&i| {
                !remaining
                    .iter()
                    .any(|&j| j != i && dominates(values[j], values[i], dirs))
            })
            .collect();
        for &i in &front {
            rank[i] = r;
        }
        remaining.retain(|i| !front.contains(i));
        r += 1;
    }
    rank
}
