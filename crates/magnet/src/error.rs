//! The crate's one error type: every foreign error is kept as the source.

use thiserror::Error;

/// Errors of the MAGNET round.
#[derive(Debug, Error)]
pub enum Error {
    /// The DiLoCo layer (codec, exchange, coordinator, trainer) failed.
    #[error("diloco: {0}")]
    Diloco(#[from] diloco::Error),
    /// The incentive ledger refused or failed.
    #[error("ledger: {0}")]
    Ledger(#[from] incentive_ledger::Error),
    /// The object store failed.
    #[error("store `{key}`: {source}")]
    Store {
        /// The object key or store URL.
        key: String,
        /// The backend's error.
        #[source]
        source: object_store::Error,
    },
    /// An object in the store is larger than the protocol allows for its kind (refused
    /// before it is read).
    #[error("object `{key}` has {size} bytes, more than the {limit} allowed for it")]
    TooLarge {
        /// Object key.
        key: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A JSON document (protocol, round notice, join request) did not parse.
    #[error("json `{what}`: {source}")]
    Json {
        /// Which document.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid config `{field}`: {message}")]
    Config {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A document or record from another party is inconsistent with the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// Waiting for an object ran past its deadline.
    #[error("timed out after {waited_ms} ms waiting for `{key}`")]
    Timeout {
        /// The awaited key.
        key: String,
        /// How long.
        waited_ms: u128,
    },
    /// The BitNet model or data layer failed.
    #[cfg(feature = "bitnet")]
    #[error("bitnet: {0}")]
    Bitnet(#[from] bitnet_model::Error),
    /// The search (autoresearch) failed.
    #[cfg(feature = "bitnet")]
    #[error("search: {0}")]
    Search(#[from] autoresearch::Error),
    /// Local I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            what: what.into(),
            source,
        }
    }
    pub(crate) fn config(field: &str, message: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            message: message.into(),
        }
    }
    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_string(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
