//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `autoresearch`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A search-space definition is invalid.
    #[error("search space: parameter `{param}`: {msg}")]
    Space {
        /// Parameter name.
        param: String,
        /// What is wrong.
        msg: String,
    },
    /// A space file could not be parsed or does not define a valid space.
    #[error("search space file {path}: {source}")]
    SpaceFile {
        /// File path (`<toml>` / `<json>` for text).
        path: PathBuf,
        /// The parser's error, or the validation's.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An objective asked for a parameter that is not in the space or not active.
    #[error("trial {trial}: parameter `{param}` {msg}")]
    Param {
        /// Trial number.
        trial: u64,
        /// Parameter name.
        param: String,
        /// What is wrong.
        msg: String,
    },
    /// A sampler has nothing more to propose (grid or phases exhausted).
    #[error("sampler {0} exhausted")]
    Exhausted(String),
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A journal line that cannot be applied to the study (or an op that cannot be
    /// encoded as one).
    #[error("journal {path} line {line}: {source}")]
    Journal {
        /// Journal path.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why: the op's own error, or the JSON codec's.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored study does not match the one being opened.
    #[error("study `{study}`: {msg}")]
    Study {
        /// Study name.
        study: String,
        /// What is wrong.
        msg: String,
    },
    /// A trial number the storage does not know.
    #[error("unknown trial {0}")]
    UnknownTrial(u64),
    /// A stored op of a study in the database that cannot be decoded or applied.
    #[error("database {what}: op {seq}: {source}")]
    StoredOp {
        /// The URL without its password, and the study.
        what: String,
        /// The op's sequence number in the study's log.
        seq: i64,
        /// Why: the JSON codec's error, or the op's own.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A study's record could not be encoded for the database.
    #[error("study `{study}`: encoding {what}: {source}")]
    Encode {
        /// Study name.
        study: String,
        /// What was being encoded (op, trial, study).
        what: &'static str,
        /// The JSON codec's error.
        source: serde_json::Error,
    },
    /// The PostgreSQL driver failed; `what` says where (URL without its password, study,
    /// operation).
    #[cfg(feature = "postgres")]
    #[error("database {what}: {source}")]
    Postgres {
        /// Where it failed.
        what: String,
        /// The driver's error.
        source: postgres::Error,
    },
    /// TLS to the PostgreSQL server could not be set up or failed (what failed is in
    /// `source`: handshake, certificate, host name, an option).
    #[cfg(feature = "postgres")]
    #[error("database {url}: {source}")]
    Tls {
        /// The URL without its password.
        url: String,
        /// What failed.
        source: crate::storage::TlsError,
    },
    /// Invalid configuration of a sampler, pruner or runner.
    #[error("config: {0}")]
    Config(String),
    /// A command-line objective failed to run.
    #[error("command `{cmd}`: {msg}")]
    Command {
        /// The command.
        cmd: String,
        /// What went wrong.
        msg: String,
    },
    /// A command-line objective could not be started (not found, not executable...).
    #[error("command `{cmd}`: cannot start: {source}")]
    Spawn {
        /// The program.
        cmd: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Writing a plot failed.
    #[error("plot {path}: {source}")]
    Plot {
        /// Output path.
        path: PathBuf,
        /// plotters' drawing error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Crate result alias.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
