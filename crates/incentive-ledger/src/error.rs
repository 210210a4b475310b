//! One error type for the crate, plus [`Rejection`]: the typed reason a message is refused.

use std::path::PathBuf;
use std::sync::Arc;

/// A lower layer's error kept whole and shared: a poisoned store or log returns the same
/// first failure, as the source of [`Error::Poisoned`], from every later call.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Crate result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a signed message was refused by the ledger. Every attack in the threat model maps to
/// exactly one variant, so callers (and tests) can tell *why* without parsing strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The signature does not verify under `verify_strict` for the claimed signer.
    #[error("signature does not verify (strict) for signer {signer}")]
    BadSignature {
        /// Hex of the claimed signer key.
        signer: String,
    },
    /// The key is not a valid curve point, is of small order or has a torsion component.
    #[error("weak or malformed public key {key}")]
    WeakKey {
        /// Hex of the key.
        key: String,
    },
    /// The signer is not registered (or not with the role this message needs).
    #[error("signer {signer} is not registered with a role allowed to send {kind}")]
    NotAuthorized {
        /// Hex of the signer.
        signer: String,
        /// Message kind.
        kind: &'static str,
    },
    /// The same canonical message (by hash) is already in the log.
    #[error("message {hash} is already in the log")]
    Replay {
        /// Hex of the message hash.
        hash: String,
    },
    /// The per-signer sequence number does not increase.
    #[error("sequence number {got} for signer {signer} is not above the last accepted {last}")]
    StaleSequence {
        /// Hex of the signer.
        signer: String,
        /// Last accepted sequence number.
        last: u64,
        /// Sequence number in the message.
        got: u64,
    },
    /// The message is bound to another ledger (origin).
    #[error("message is for ledger `{got}`, this ledger is `{expected}`")]
    WrongOrigin {
        /// This ledger's origin.
        expected: String,
        /// Origin in the message.
        got: String,
    },
    /// The message names a round other than the open one.
    #[error("message is for round {got}, the open round is {expected}")]
    WrongRound {
        /// Open round.
        expected: u64,
        /// Round in the message.
        got: u64,
    },
    /// The contribution's parent model is not the round's base model.
    #[error("contribution builds on model {got}, round {round} is based on {expected}")]
    WrongParent {
        /// Round.
        round: u64,
        /// Expected parent hash (hex).
        expected: String,
        /// Parent hash in the message (hex).
        got: String,
    },
    /// The worker already contributed in this round.
    #[error("signer {signer} already contributed in round {round}")]
    DuplicateContribution {
        /// Hex of the signer.
        signer: String,
        /// Round.
        round: u64,
    },
    /// The validator already evaluated this contribution.
    #[error("validator {validator} already evaluated contribution {contribution}")]
    DuplicateEvaluation {
        /// Hex of the validator.
        validator: String,
        /// Hex of the contribution id.
        contribution: String,
    },
    /// An evaluation or slash names a contribution the ledger does not know in this round.
    #[error("unknown contribution {contribution}")]
    UnknownContribution {
        /// Hex of the id.
        contribution: String,
    },
    /// The evaluation's held-out seed is not the one derived after the commit.
    #[error("held-out seed does not match the derivation for beacon size {beacon_size}")]
    BadHeldOutSeed {
        /// Tree size whose root seeds the held-out batches.
        beacon_size: u64,
    },
    /// A settlement or slash differs from what the log's records imply.
    #[error("{kind} for round {round} differs from the recomputation: {detail}")]
    Mismatch {
        /// Record kind.
        kind: &'static str,
        /// Round.
        round: u64,
        /// What differs.
        detail: String,
    },
    /// A contribution is too similar to an earlier one in the same round.
    #[error("contribution {later} copies {earlier} (overlap {overlap_ppm} ppm)")]
    CopiedUpdate {
        /// The earlier (kept) contribution.
        earlier: String,
        /// The later (penalised) contribution.
        later: String,
        /// Sketch overlap in parts per million.
        overlap_ppm: u64,
    },
    /// A contribution arrived after the operator closed the round's commit phase.
    #[error("round {round} is closed: no more contributions")]
    RoundClosed {
        /// Round.
        round: u64,
    },
    /// The bytes do not decode as a canonical message.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Errors of the crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A message was refused; see [`Rejection`].
    #[error("rejected: {0}")]
    Rejected(#[from] Rejection),
    /// Decoding failed at a byte offset.
    #[error("decode error at byte {offset}: {what}")]
    Decode {
        /// Byte offset in the input.
        offset: usize,
        /// What was wrong.
        what: String,
    },
    /// File system error with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The embedded database reported an error.
    #[error("database {path}: {source}")]
    Db {
        /// Database path.
        path: PathBuf,
        /// redb's error.
        source: Box<redb::Error>,
    },
    /// A durable write failed earlier; the store refuses all further writes (fsyncgate: after a
    /// failed fsync the kernel may have dropped the dirty pages, so retrying could lie).
    #[error("store {path} is poisoned after a failed durable write: {source}")]
    Poisoned {
        /// Store path.
        path: PathBuf,
        /// The first failure, handed to every later call.
        source: Cause,
    },
    /// Stored data does not match what was signed: tampering, truncation or rollback.
    #[error("integrity failure: {0}")]
    Integrity(String),
    /// A key file problem.
    #[error("key file {path}: {what}")]
    Key {
        /// Path.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
    /// A Merkle proof request or check failed.
    #[error("proof: {0}")]
    Proof(String),
    /// Invalid argument from the caller.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn decode(offset: usize, what: impl Into<String>) -> Self {
        Error::Decode {
            offset,
            what: what.into(),
        }
    }
}
