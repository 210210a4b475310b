//! `incentive-ledger`: signed contributions, a tamper-evident Merkle log, measured scores and
//! integer rewards for MAGNET training, verifiable by anyone without a blockchain.
//!
//! ```
//! use incentive_ledger::identity::Keypair;
//! use incentive_ledger::ledger::{Ledger, verify_dir};
//! use incentive_ledger::record::{Body, Contribution, Genesis, Message, Role};
//!
//! let dir = tempfile::tempdir()?;
//! let operator = Keypair::from_seed([1; 32]);
//! let worker = Keypair::from_seed([2; 32]);
//! let genesis = Genesis {
//!     base_model: [0; 32],
//!     initial_emission: 1_000,
//!     halving_rounds: 10,
//!     cap: 1_000_000,
//!     copy_threshold_ppm: 600_000,
//! };
//! let mut ledger = Ledger::create(&dir.path().join("l"), "example", operator, genesis)?;
//! ledger.register(worker.public(), Role::Worker, 0)?;
//! let contribution = Message {
//!     origin: "example".into(),
//!     signer: worker.public(),
//!     seq: ledger.next_seq(&worker.public()),
//!     round: 1,
//!     body: Body::Contribution(Contribution {
//!         parent_model: [0; 32],
//!         artifact: [9; 32],
//!         artifact_size: 4096,
//!         metrics: vec![],
//!         sketch: vec![3, 17, 42],
//!     }),
//! }
//! .sign(&worker);
//! ledger.submit(&contribution)?;
//! // Replaying the same message is refused with a typed reason.
//! assert!(ledger.submit(&contribution).is_err());
//! ledger.settle([1; 32])?; // no evaluations yet: nothing minted
//! drop(ledger); // the database is opened exclusively
//! let report = verify_dir(&dir.path().join("l"), None)?;
//! assert_eq!(report.settlements, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Layers, bottom up: [`codec`] (canonical encoding) → [`identity`] (Ed25519, strict checks)
//! → [`record`] (signed message kinds) → [`merkle`] (RFC 6962 tree and proofs) → [`store`]
//! (durable [`store::Store`] on redb behind the write-ahead log [`wal`]) → [`checkpoint`] + [`log`] (checkpointed log) →
//! [`rewards`] (scorer, median, emission, split) → [`state`] (admission rules, replay) →
//! [`ledger`] (durable ingest, operator actions, verification). [`demo`] simulates rounds.
//! Threat model and formats: `docs/ledger.md`.

pub mod checkpoint;
pub mod codec;
pub mod demo;
pub mod error;
pub mod identity;
pub mod ledger;
pub mod log;
pub mod merkle;
pub mod record;
pub mod rewards;
pub mod state;
pub mod store;
pub mod wal;

pub use error::{Error, Rejection, Result};
