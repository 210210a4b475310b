//! `magnet`: the MAGNET round as a library. An **operator** (the incentive ledger and
//! diloco's coordinator), **workers** (BitNet DiLoCo trainers) and **validators** meet only
//! through an object store ([`store::Store`]: `file://`, S3, or memory), and every defence
//! recomputes what it checks from the artifacts rather than trusting what a party reports:
//!
//! - contributions are signed records bound to their artifact (SHA-256 and size of the
//!   encoded update, parent model hash, round), committed before any update of the round is
//!   readable (commit–reveal, [`protocol`]);
//! - validators check every artifact against its commit and the protocol (header, declared
//!   weight, layout, finite values: [`artifact`]), look for copies in the decoded updates
//!   (residual cosines against the round and the previous rounds, merged steps, free riders:
//!   [`copy`]) and measure each update's value to the merge on held-out windows seeded by the
//!   ledger's beacon at the round's close ([`validator`], [`heldout`]);
//! - the ledger (with its networked-round protocol) turns the validators' signed verdicts
//!   into slashes (copied, free rider, poisoned, invalid, non-finite) and payments, and the
//!   operator merges exactly what the verdicts accept through diloco's coordinator
//!   ([`operator`]); a restarted operator replays the ledger and the store.
//!
//! The same code runs as separate processes (`magnet operator|worker|validator`) and in one
//! process ([`run::in_process`]).
//!
//! ```
//! use magnet::copy::{detect, CopyRule, Finding, Flat};
//!
//! // Two independent updates and a rescaled copy of the first: the copy is caught, the
//! // earlier (committed first) one kept.
//! let a: Vec<f32> = (0..512).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
//! let b: Vec<f32> = (0..512).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
//! let copy: Vec<f32> = a.iter().map(|x| 3.0 * x).collect();
//! let round = [
//!     Flat { id: [1; 32], owner: Some([1; 32]), data: a },
//!     Flat { id: [2; 32], owner: Some([2; 32]), data: b },
//!     Flat { id: [3; 32], owner: Some([3; 32]), data: copy },
//! ];
//! let found = detect(&round, &[], &[], None, &CopyRule::default());
//! assert!(matches!(found[0], Finding::Original { .. }));
//! assert!(matches!(found[1], Finding::Original { .. }));
//! assert!(matches!(found[2], Finding::Copied { earlier, .. } if earlier == [1; 32]));
//! ```
//!
//! Design, threat model and measurements: `docs/magnet.md`, `docs/ledger.md`.

pub mod artifact;
#[cfg(feature = "bitnet")]
pub mod bitnet;
pub mod copy;
pub mod error;
pub mod heldout;
pub mod operator;
pub mod protocol;
pub mod roles;
#[cfg(feature = "bitnet")]
pub mod run;
#[cfg(feature = "bitnet")]
pub mod search;
pub mod store;
#[cfg(feature = "bitnet")]
pub mod training;
pub mod validator;

pub use error::{Error, Result};
