//! The crate's one error type.

use thiserror::Error;

/// Errors from configuration, data, training, inference and export.
#[derive(Debug, Error)]
pub enum Error {
    /// A configuration field is missing or out of range.
    #[error("invalid config field `{field}`: {message}")]
    Config {
        /// The offending field (or `toml` for a parse error).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A named weight tensor is missing, misshapen or non-finite.
    #[error("weight tensor `{name}`: {message}")]
    Weights {
        /// Canonical tensor name.
        name: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
