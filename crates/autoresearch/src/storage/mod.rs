//! Where trials live: the [`Storage`] trait, an in-memory store, an append-only journal and
//! (feature `postgres`) a PostgreSQL database.
//!
//! Every store is a log of [`Op`]s; replaying the log rebuilds the trials, so the in-memory
//! store, the journal file and the database store share one state machine ([`apply`]). A
//! backend implements only [`OpLog`] (open, read, append atomically); the blanket
//! [`Storage`] impl turns every call into ops once for all of them.

mod journal;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod tls;

pub use journal::JournalStorage;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStorage, is_postgres_url};
#[cfg(feature = "postgres")]
pub use tls::{SslMode, TlsError};

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

impl Op {
    /// The trial the op touches (`None` for the study header).
    pub fn trial_number(&self) -> Option<u64> {
        match self {
            Op::Study { .. } => None,
            Op::Create { number, .. }
            | Op::Enqueue { number, .. }
            | Op::Claim { number, .. }
            | Op::Report { number, .. }
            | Op::Attr { number, .. }
            | Op::Finish { number, .. } => Some(*number),
        }
    }
}

/// A new trial must take the next number.
fn next_in_sequence(trials: &[Trial], number: u64) -> Result<()> {
    if number as usize == trials.len() {
        return Ok(());
    }
    Err(Error::Config(format!(
        "trial number {number} out of sequence (expected {})",
        trials.len()
    )))
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
            next_in_sequence(trials, number)?;
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
            next_in_sequence(trials, number)?;
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

/// The backend half of a store: a study log that can be read, and appended to with other
/// writers excluded. Every `OpLog` is a [`Storage`] through the blanket impl below, so a new
/// backend supplies only its log and never re-implements the trial operations.
pub trait OpLog: Send + Sync {
    /// Creates the study if the log has none, otherwise checks and returns the stored one.
    fn open_log(&self, meta: &StudyMeta) -> Result<StudyMeta>;

    /// With other writers excluded and the trials up to date, `f` returns the ops to append;
    /// they are stored durably and applied, then `then` reads the updated trials (still
    /// excluding writers) and gives the result.
    fn transact<T, R>(
        &self,
        f: impl FnOnce(&[Trial]) -> Result<(Vec<Op>, T)>,
        then: impl FnOnce(&[Trial], T) -> Result<R>,
    ) -> Result<R>;

    /// Runs `f` on the trials, brought up to date with the log.
    fn read<R>(&self, f: impl FnOnce(&[Trial]) -> R) -> Result<R>;
}

impl<L: OpLog> Storage for L {
    fn open_study(&self, meta: &StudyMeta) -> Result<StudyMeta> {
        self.open_log(meta)
    }

    fn create_trial(
        &self,
        worker: &str,
        propose: &mut dyn FnMut(u64, &[Trial]) -> Result<Params>,
    ) -> Result<Trial> {
        self.transact(
            |trials| {
                let (op, number) = next_trial_op(trials, worker, propose)?;
                Ok((vec![op], number))
            },
            |trials, n| {
                trials
                    .get(usize::try_from(n).unwrap_or(usize::MAX))
                    .cloned()
                    .ok_or(Error::UnknownTrial(n))
            },
        )
    }

    fn enqueue(&self, params: &Params, retry_of: Option<u64>) -> Result<u64> {
        self.transact(
            |trials| {
                let number = trials.len() as u64;
                let op = Op::Enqueue {
                    number,
                    params: params.clone(),
                    retry_of,
                    time: now(),
                };
                Ok((vec![op], number))
            },
            |_, number| Ok(number),
        )
    }

    fn report(&self, number: u64, step: u64, value: f64) -> Result<()> {
        append(
            self,
            Op::Report {
                number,
                step,
                value,
            },
        )
    }

    fn set_user_attr(&self, number: u64, key: &str, value: &serde_json::Value) -> Result<()> {
        append(
            self,
            Op::Attr {
                number,
                key: key.into(),
                value: value.clone(),
            },
        )
    }

    fn finish(
        &self,
        number: u64,
        state: TrialState,
        values: Option<&[f64]>,
        message: Option<&str>,
    ) -> Result<()> {
        // Stamped while writers are excluded, so finish and create times follow the log
        // order (CMA-ES rebuilds its generations from them).
        self.transact(
            |_| {
                let op = Op::Finish {
                    number,
                    state,
                    values: values.map(<[f64]>::to_vec),
                    message: message.map(str::to_string),
                    time: now(),
                };
                Ok((vec![op], ()))
            },
            |_, ()| Ok(()),
        )
    }

    fn trials(&self) -> Result<Vec<Trial>> {
        self.read(<[Trial]>::to_vec)
    }
}

fn append(log: &impl OpLog, op: Op) -> Result<()> {
    log.transact(|_| Ok((vec![op], ())), |_, ()| Ok(()))
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

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<StudyMeta>, Vec<Trial>)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

/// Builds the op for a new trial, claiming the oldest waiting one if any, and gives the
/// trial's number.
pub(crate) fn next_trial_op(
    trials: &[Trial],
    worker: &str,
    propose: &mut dyn FnMut(u64, &[Trial]) -> Result<Params>,
) -> Result<(Op, u64)> {
    if let Some(w) = trials.iter().find(|t| t.state == TrialState::Waiting) {
        let op = Op::Claim {
            number: w.number,
            worker: worker.to_string(),
            time: now(),
        };
        return Ok((op, w.number));
    }
    let number = trials.len() as u64;
    let params = propose(number, trials)?;
    let op = Op::Create {
        number,
        params,
        worker: worker.to_string(),
        time: now(),
    };
    Ok((op, number))
}

impl OpLog for InMemoryStorage {
    fn open_log(&self, meta: &StudyMeta) -> Result<StudyMeta> {
        let mut g = self.lock();
        if let Some(stored) = &g.0 {
            check_meta(stored, meta)?;
            return Ok(stored.clone());
        }
        g.0 = Some(meta.clone());
        Ok(meta.clone())
    }

    fn transact<T, R>(
        &self,
        f: impl FnOnce(&[Trial]) -> Result<(Vec<Op>, T)>,
        then: impl FnOnce(&[Trial], T) -> Result<R>,
    ) -> Result<R> {
        let mut g = self.lock();
        let (meta, trials) = &mut *g;
        let (ops, out) = f(trials)?;
        for op in ops {
            apply(meta, trials, op)?;
        }
        then(trials, out)
    }

    fn read<R>(&self, f: impl FnOnce(&[Trial]) -> R) -> Result<R> {
        Ok(f(&self.lock().1))
    }
}
