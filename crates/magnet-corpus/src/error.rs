//! The crate's one error type.

use std::path::PathBuf;
use thiserror::Error;

/// What went wrong with the shipped corpus or a corpus directory.
#[derive(Debug, Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The embedded archive is not the one `SHA256SUMS` names (a corrupted checkout, or
    /// a Git LFS pointer instead of the file).
    #[error(
        "the shipped corpus archive has SHA-256 {actual}, SHA256SUMS expects {expected} \
         ({len} bytes embedded); rebuild it with `cargo xtask corpus --pack`"
    )]
    ArchiveMismatch {
        /// The fingerprint recorded in `SHA256SUMS`.
        expected: String,
        /// The fingerprint of the embedded bytes.
        actual: String,
        /// Embedded archive size.
        len: usize,
    },
    /// A text file of a corpus directory does not match its recorded SHA-256.
    #[error("{}: SHA-256 {actual}, the shipped corpus expects {expected}", path.display())]
    FileMismatch {
        /// The file.
        path: PathBuf,
        /// Recorded fingerprint.
        expected: String,
        /// Fingerprint of the file on disk.
        actual: String,
    },
    /// A file the manifest lists is missing, or the directory has files it does not list.
    #[error("{}: {message}", dir.display())]
    Contents {
        /// The corpus directory.
        dir: PathBuf,
        /// What differs from the manifest.
        message: String,
    },
    /// `SHA256SUMS` (or a manifest given to [`crate::Manifest::parse`]) is malformed.
    #[error("manifest line {line}: {message}")]
    Manifest {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The archive holds an entry that is not a plain relative `*.txt` file, or more data
    /// than the manifest allows.
    #[error("archive entry `{entry}`: {message}")]
    Entry {
        /// The entry's path as stored.
        entry: String,
        /// Why it was refused.
        message: String,
    },
    /// Decompressing or packing the archive failed.
    #[error("xz stream: {0}")]
    Xz(#[from] liblzma::stream::Error),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
