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
    /// A tensor holds NaN or an infinity, or a value the codec cannot carry finitely
    /// (an f32 above f16's range, a block scale that overflows). Encoding refuses it;
    /// decoding refuses a payload that carries one (the coordinator records the update
    /// as rejected with [`RejectReason::NonFinite`](crate::aggregate::RejectReason)).
    #[error("`{what}`: tensor `{tensor}` value {value} at index {index} is not finite{detail}")]
    NonFinite {
        /// Which payload (object key, or `encode`).
        what: String,
        /// Tensor name.
        tensor: String,
        /// Flat index of the first bad value (for a block scale: of the block's first value).
        index: usize,
        /// The value found (or, for an f16 overflow, the f32 that would overflow).
        value: f32,
        /// Extra context, e.g. ` (overflows f16)` or ` (block scale)`; may be empty.
        detail: &'static str,
    },
    /// A create-only write found the key already present.
    #[error("object `{key}` already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The exchange backend failed (object store, I/O), or an object is not what the
    /// protocol expects there.
    #[error("exchange `{key}`: {source}")]
    Exchange {
        /// The object key (or store URL) involved.
        key: String,
        /// The backend's error (object_store's, I/O), or what is wrong with the object.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Waiting for an object ran past its deadline.
    #[error("timed out after {waited_ms} ms waiting for `{key}`")]
    Timeout {
        /// The awaited key.
        key: String,
        /// How long we waited.
        waited_ms: u128,
    },
    /// A model config (a preset name or a TOML file) could not be read; the reader's or
    /// bitnet-model's error is kept as the source.
    #[error("model config `{spec}`: {source}")]
    ModelConfig {
        /// The preset name or file as given.
        spec: String,
        /// The I/O or config error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The local trainer (e.g. bitnet-model's) failed; its error is kept as the source.
    #[error("trainer{}", worker.map(|w| format!(" of worker {w}")).unwrap_or_default())]
    Trainer {
        /// Worker id, when the caller knows it.
        worker: Option<u32>,
        /// The trainer's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The coordinator's merge policy failed.
    #[error("merge policy, round {round}")]
    Policy {
        /// The round being merged.
        round: u64,
        /// The policy's error.
        #[source]
        source: crate::merge::PolicyError,
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
