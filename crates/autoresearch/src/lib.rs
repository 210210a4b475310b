//! `autoresearch`: hyperparameter search for any objective — search spaces, samplers (grid,
//! random, QMC, TPE, CMA-ES, phased), pruners (median, ASHA, Hyperband), durable studies
//! (journal file, PostgreSQL) and honest evaluation.
//!
//! `TpeSampler::default()` is Optuna 5's TPE plus a local refinement of its acquisition;
//! `TpeSampler::optuna()` is Optuna's exactly. `GpSampler` is a Gaussian process after
//! Optuna's `GPSampler` (Matérn 5/2, marginal likelihood, log expected improvement).
//! A study's default sampler is `AutoSampler`, which lets the GP and the TPE compete on the
//! study's own evidence and records each choice with the trial (`docs/autoresearch.md`).
//! Feature `cli` (default) builds the `autoresearch` binary, `postgres` (opt-in) the
//! PostgreSQL storage, `plot` (default) the SVG plots.
//!
//! ```
//! use std::sync::Arc;
//! use autoresearch::{OptimizeOptions, SearchSpace, Study, TpeSampler, TrialError, TrialHandle};
//!
//! let space = SearchSpace::new().float("x", -5.0, 5.0, false).float("y", -5.0, 5.0, false);
//! let study = Study::builder(space).sampler(TpeSampler::default()).seed(7).build()?;
//! let objective = |t: &TrialHandle| -> Result<f64, TrialError> {
//!     let (x, y) = (t.suggest_float("x")?, t.suggest_float("y")?);
//!     Ok((x - 1.0).powi(2) + (y + 2.0).powi(2))
//! };
//! study.optimize(Arc::new(objective), &OptimizeOptions::trials(60))?;
//! let best = study.best_trial()?.expect("a complete trial");
//! assert!(best.value().unwrap() < 1.0);
//! # Ok::<(), autoresearch::Error>(())
//! ```

pub mod command;
pub mod error;
pub mod evaluation;
pub mod functions;
pub mod importance;
pub mod math;
#[cfg(feature = "plot")]
pub mod plot;
pub mod pruner;
pub mod report;
pub mod sampler;
pub mod space;
pub mod storage;
pub mod study;
pub mod trial;

pub use error::{Error, Result};
pub use pruner::{HyperbandPruner, MedianPruner, NopPruner, Pruner, SuccessiveHalvingPruner};
pub use sampler::{
    AutoSampler, CmaEsSampler, GpSampler, GridSampler, Phase, PhasedSampler, QmcSampler,
    RandomSampler, Sampler, TpeSampler,
};
pub use space::{Distribution, ParamValue, Params, SearchSpace};
pub use storage::{InMemoryStorage, JournalStorage, OpLog, Storage, StudyMeta};
#[cfg(feature = "postgres")]
pub use storage::{PostgresStorage, SslMode, TlsError};
pub use study::{MultiObjective, Objective, OptimizeOptions, OptimizeSummary, Study, TrialHandle};
pub use trial::{Direction, Trial, TrialError, TrialState};
