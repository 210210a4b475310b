//! Where trials live: the [`Storage`] trait, an in-memory store, an append-only journal and
//! (feature `postgres`) a PostgreSQL database.
//!
//! Every store is a log of [`Op`]s; replaying the log rebuilds the trials, so the in-memory
//! store, the journal file and the database store share one state machine ([`apply`]).

mod journal;
#[cfg(feature = "postgres")]
mod postgres;

pub use journal::JournalStorage;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStorage, is_postgres_url};

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::space::{Params, SearchSpace};
use crate::trial::{Direction, Trial, TrialState, now};

/// What identifies a study in a storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyMeta {
    /// Study name.
    pub name: String,
    /// One direction per objective.
    pub directions: Vec<Direction>,
    /// The search space.
    pub space: SearchSpace,
    /// Free-form study attributes (command line, metric regex...).
    #[serde(default)]
    pub attrs: BTreeMap<String, serde_json::Value>,
}

/// One entry of a study log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Study creation (first entry).
    Study {
        /// The study.
        meta: StudyMeta,
    },
    /// A new running trial.
    Create {
        /// Trial number.
        number: u64,
        /// Parameters.
        params: Params,
        /// Worker id.
        worker: String,
        /// Unix time.
        time: f64,
    },
    /// A queued trial with fixed parameters.
    Enqueue {
        /// Trial number.
        number: u64,
        /// Parameters.
        params: Params,
        /// Trial it re-runs.
        retry_of: Option<u64>,
        /// Unix time.
        time: f64,
    },
    /// A worker takes a waiting trial.
    Claim {
        /// Trial number.
        number: u64,
        /// Worker id.
        worker: String,
        /// Unix time.
        time: f64,
    },
    /// An intermediate value.
    Report {
        /// Trial number.
        number: u64,
        /// Step.
        step: u64,
        /// Value.
        value: f64,
    },
    /// A user attribute.
    Attr {
        /// Trial number.
        number: u64,
        /// Key.
        key: String,
        /// Value.
        value: serde_json::Value,
    },
    /// The end of a trial.
    Finish {
        /// Trial number.
        number: u64,
        /// Final state.
        state: TrialState,
        /// Objective values.
        values: Option<Vec<f64>>,
        /// Message.
        message: Option<String>,
        /// Unix time.
        time: f64,
    },
}

/// Applies one op to a trial list (the shared state machine of all stores).
pub fn apply(meta: &mut Option<StudyMeta>, trials: &mut Vec<Trial>, op: Op) -> Result<()> {
    let get = |trials: &mut Vec<Trial>, n: u64| -> Result<usize> {
        let i = n as usize;
        if i < trials.len() {
            Ok(i)
        } else {
            Err(Error::UnknownTrial(n))
        }
    };
    match op {
        Op::Study { meta: m } => {
            if meta.is_none() {
                *meta = Some(m);
            }
        }
        Op::Create {
            number,
            params,
            worker,
            time,
        } => {
            if number as usize != trials.len() {
                return Err(Error::Config(format!(
                    "trial number {number} out of sequence (expected {})",
                    trials.len()
                )));
            }
            let mut t = Trial::new(number, params, &worker);
            t.started_at = time;
            trials.push(t);
        }
        Op::Enqueue {
            number,
            params,
            retry_of,
            time,
        } => {
            if number as usize != trials.len() {
                return Err(Error::Config(format!(
                    "trial number {number} out of sequence (expected {})",
                    trials.len()
                )));
            }
            let mut t = Trial::new(number, params, "");
            t.state = TrialState::Waiting;
            t.retry_of = retry_of;
            t.started_at = time;
            trials.push(t);
        }
        Op::Claim {
            number,
            worker,
            time,
        } => {
            let i = get(trials, number)?;
            let t = &mut trials[i];
            t.state = TrialState::Running;
            t.worker = worker;
            t.started_at = time;
        }
        Op::Report {
            number,
            step,
            value,
        } => {
            let i = get(trials, number)?;
            trials[i].intermediate.insert(step, value);
        }
        Op::Attr { number, key, value } => {
            let i = get(trials, number)?;
            trials[i].user_attrs.insert(key, value);
        }
        Op::Finish {
            number,
            state,
            values,
            message,
            time,
        } => {
            let i = get(trials, number)?;
            let t = &mut trials[i];
            // A trial already finished (e.g. declared stale, then finishing late) keeps its
            // first outcome, so every reader agrees.
            if !t.state.is_finished() {
                t.state = state;
                t.values = values;
                t.message = message;
                t.finished_at = Some(time);
            }
        }
    }
    Ok(())
}

/// Persistence of one study's trials, shared by all workers of the study.
pub trait Storage: Send + Sync {
    /// Creates the study if the storage is empty, otherwise returns the stored one.
    fn open_study(&self, meta: &StudyMeta) -> Result<StudyMeta>;
    /// Atomically numbers and records a new running trial. A waiting (enqueued) trial is
    /// claimed first; otherwise `propose(number, trials)` gives the parameters.
    fn create_trial(
        &self,
        worker: &str,
        propose: &mut dyn FnMut(u64, &[Trial]) -> Result<Params>,
    ) -> Result<Trial>;
    /// Queues a trial with fixed parameters.
    fn enqueue(&self, params: &Params, retry_of: Option<u64>) -> Result<u64>;
    /// Records an intermediate value.
    fn report(&self, number: u64, step: u64, value: f64) -> Result<()>;
    /// Records a user attribute.
    fn set_user_attr(&self, number: u64, key: &str, value: &serde_json::Value) -> Result<()>;
    /// Finishes a trial.
    fn finish(
        &self,
        number: u64,
        state: TrialState,
        values: Option<&[f64]>,
        message: Option<&str>,
    ) -> Result<()>;
    /// All trials, by number.
    fn trials(&self) -> Result<Vec<Trial>>;
}

/// A store that lives in this process only.
#[derive(Debug, Default)]
pub struct InMemoryStorage {
    state: Mutex<(Option<StudyMeta>, Vec<Trial>)>,
}

impl InMemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Option<StudyMeta>, &mut Vec<Trial>) -> Result<T>,
    ) -> Result<T> {
        let mut g = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (m, t) = &mut *g;
        f(m, t)
    }
}

pub(crate) fn check_meta(stored: &StudyMeta, wanted: &StudyMeta) -> Result<()> {
    if stored.directions != wanted.directions {
        return Err(Error::Study {
            study: stored.name.clone(),
            msg: format!(
                "stored directions {:?} differ from requested {:?}",
                stored.directions, wanted.directions
            ),
        });
    }
    Ok(())
}

/// Builds the op for a new trial, claiming the oldest waiting one if any.
pub(crate) fn next_trial_op(
    trials: &[Trial],
    worker: &str,
    propose: &mut dyn FnMut(u64, &[Trial]) -> Result<Params>,
) -> Result<Op> {
    if let Some(w) = trials.iter().find(|t| t.state == TrialState::Waiting) {
        return Ok(Op::Claim {
            number: w.number,
            worker: worker.to_string(),
            time: now(),
        });
    }
    let number = trials.len() as u64;
    let params = propose(number, trials)?;
    Ok(Op::Create {
        number,
        params,
        worker: worker.to_string(),
        time: now(),
    })
}

impl Storage for InMemoryStorage {
    fn open_study(&self, meta: &StudyMeta) -> Result<StudyMeta> {
        self.with(|m, _| {
            if let Some(stored) = m {
                check_meta(stored, meta)?;
                return Ok(stored.clone());
            }
            *m = Some(meta.clone());
            Ok(meta.clone())
        })
    }

    fn create_trial(
        &self,
        worker: &str,
        propose: &mut dyn FnMut(u64, &[Trial]) -> Result<Params>,
    ) -> Result<Trial> {
        self.with(|m, t| {
            let op = next_trial_op(t, worker, propose)?;
            let n = match &op {
                Op::Claim { number, .. } | Op::Create { number, .. } => *number,
                _ => unreachable!("next_trial_op returns create or claim"),
            };
            apply(m, t, op)?;
            Ok(t[n as usize].clone())
        })
    }

    fn enqueue(&self, params: &Params, retry_of: Option<u64>) -> Result<u64> {
        self.with(|m, t| {
            let number = t.len() as u64;
            apply(
                m,
                t,
                Op::Enqueue {
                    number,
                    params: params.clone(),
                    retry_of,
                    time: now(),
                },
            )?;
            Ok(number)
        })
    }

    fn report(&self, number: u64, step: u64, value: f64) -> Result<()> {
        self.with(|m, t| {
            apply(
                m,
                t,
                Op::Report {
                    number,
                    step,
                    value,
                },
            )
        })
    }

    fn set_user_attr(&self, number: u64, key: &str, value: &serde_json::Value) -> Result<()> {
        self.with(|m, t| {
            apply(
                m,
                t,
                Op::Attr {
                    number,
                    key: key.into(),
                    value: value.clone(),
                },
            )
        })
    }

    fn finish(
        &self,
        number: u64,
        state: TrialState,
        values: Option<&[f64]>,
        message: Option<&str>,
    ) -> Result<()> {
        self.with(|m, t| {
            apply(
                m,
                t,
                Op::Finish {
                    number,
                    state,
                    values: values.map(<[f64]>::to_vec),
                    message: message.map(str::to_string),
                    time: now(),
                },
            )
        })
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        self.with(|_, t| Ok(t.clone()))
    }
}
