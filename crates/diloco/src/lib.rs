//! `diloco`: DiLoCo and Streaming DiLoCo on named f32 tensors: pseudo-gradient codecs,
//! screening and robust aggregation, outer optimizers, a create-only key/value
//! [`Exchange`](exchange::Exchange) (in-process, or object storage with the `store`
//! feature), the round protocol, and linear-CKA drift.
//!
//! ```
//! use diloco::exchange::InProcess;
//! use diloco::runner::{run_in_process, DilocoConfig};
//! use diloco::toy::{LinearTrainer, RegressionData};
//!
//! let (data, held_out) = RegressionData::generate(500, 8, 1).split(400);
//! let mut workers: Vec<LinearTrainer> = (0..4)
//!     .map(|w| LinearTrainer::new(data.shard(w, 4), held_out.clone(), 0.05, 8, w as u64))
//!     .collect();
//! let cfg = DilocoConfig { inner_steps: 10, total_steps: 100, ..DilocoConfig::default() };
//! let report = run_in_process(&mut workers, &cfg, &InProcess::new(), None, &mut |_, _, _| Ok(())).unwrap();
//! assert_eq!(report.rounds.len(), 10);
//! assert!(report.rounds.last().unwrap().manifest.rejected.is_empty());
//! ```
//!
//! Layout: [`params`] (named tensors) -> [`codec`] (wire formats) -> [`aggregate`]
//! (screening, aggregators) -> [`outer`] (outer optimizers) -> [`protocol`] (keys,
//! manifests, coordinator and worker sides) over [`exchange`]; [`runner`] drives
//! [`trainer::LocalTrainer`]s in process; [`fragment`] plans Streaming DiLoCo; [`drift`]
//! measures CKA; [`toy`] is a deterministic linear-regression trainer; `bitnet` (feature)
//! adapts bitnet-model.

pub mod aggregate;
pub mod codec;
pub mod drift;
pub mod error;
pub mod exchange;
pub mod fragment;
pub mod merge;
pub mod outer;
pub mod params;
pub mod protocol;
pub mod runner;
pub mod toy;
pub mod trainer;

#[cfg(feature = "bitnet")]
pub mod bitnet;

pub use error::{Error, Result};
pub use params::{NamedTensor, ParamMap};
