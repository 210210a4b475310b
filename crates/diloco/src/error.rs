//! The crate's one error type.

use thiserror::Error;

/// Errors from configuration, decoding, the exchange protocol and training.
#[derive(Debug, Error)]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid config field `{field}`: {message}")]
    Config {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A named tensor is missing, misshapen or holds bad values.
    #[error("tensor `{name}`: {message}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// An encoded payload is truncated or malformed.
    #[error("decode `{what}` at byte {offset}: {message}")]
    Decode {
        /// Which payload (object key or kind).
        what: String,
        /// Byte offset of the problem.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// A create-only write found the key already present.
    #[error("object `{key}` already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The exchange backend failed (object store, I/O).
    #[error("exchange `{key}`: {message}")]
    Exchange {
        /// The object key (or store URL) involved.
        key: String,
        /// The backend's message.
        message: String,
    },
    /// Waiting for an object ran past its deadline.
    #[error("timed out after {waited_ms} ms waiting for `{key}`")]
    Timeout {
        /// The awaited key.
        key: String,
        /// How long we waited.
        waited_ms: u128,
    },
    /// The local trainer failed.
    #[error("trainer (worker {worker}): {message}")]
    Trainer {
        /// Worker id.
        worker: u32,
        /// The trainer's message.
        message: String,
    },
    /// A JSON manifest or membership record did not parse.
    #[error("json `{what}`: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
