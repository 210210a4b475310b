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
    /// The packed CPU runtime cannot run this model or input (bad token id, full KV
    /// cache, a config it cannot express, an unreadable tokenizer...).
    #[error("inference: {message}")]
    Inference {
        /// What went wrong, naming the tensor, token or file.
        message: String,
    },
    /// GGUF export refused the model or failed to write the file.
    #[error("GGUF export to `{path}`: {message}")]
    Export {
        /// The output file.
        path: String,
        /// What went wrong (the target that cannot express the model, the I/O error...).
        message: String,
    },
    /// A GGUF file could not be imported back into a model.
    #[error("GGUF import of `{path}`: {message}")]
    Import {
        /// The input file.
        path: String,
        /// What is missing or wrong, naming the key or tensor.
        message: String,
    },
    /// A GGUF vocabulary (or the tokenizer to export as one) is unusable.
    #[error("vocabulary of `{path}`: {source}")]
    Vocabulary {
        /// The GGUF file, or the tokenizer being exported.
        path: String,
        /// What is wrong with it.
        #[source]
        source: VocabError,
    },
    /// ternary-core refused a matrix (shape, packed length, codes) or a kernel input.
    #[error("{what}: {source}")]
    Kernel {
        /// What was being done, naming the file and tensor where there is one.
        what: String,
        /// ternary-core's error.
        #[source]
        source: ternary_core::Error,
    },
    /// The runtime's worker threads could not be started.
    #[error("cannot start {threads} inference threads: {source}")]
    ThreadPool {
        /// The requested thread count.
        threads: usize,
        /// rayon's error.
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
    /// gguf-io refused or failed on a GGUF file (its typed error kept as the source).
    #[error("GGUF `{path}`: {source}")]
    Gguf {
        /// The file.
        path: String,
        /// What gguf-io reported (names the key, tensor or byte offset).
        #[source]
        source: gguf_io::Error,
    },
    /// A safetensors file is malformed (the `safetensors` crate's error kept as the source).
    #[error("safetensors `{path}`: {source}")]
    Safetensors {
        /// The file.
        path: String,
        /// What the parser reported.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A tokenizer could not be built or run (the `tokenizers` error kept as the source).
    #[error("tokenizer {what}: {source}")]
    Tokenizer {
        /// The file or step.
        what: String,
        /// The underlying error.
        #[source]
        source: tokenizers::Error,
    },
    /// A JSON file (metrics log, checkpoint state) is malformed.
    #[error("{what}: {source}")]
    Json {
        /// The file (and line, for JSON lines).
        what: String,
        /// The parser's error (names line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A TOML config could not be parsed.
    #[error("{what}: {source}")]
    Toml {
        /// Which config.
        what: String,
        /// The parser's error (names the key and position).
        #[source]
        source: toml::de::Error,
    },
    /// burn could not save or load a record (the optimizer state of a checkpoint).
    #[error("{path}: {source}")]
    Record {
        /// The record file.
        path: String,
        /// burn's error.
        #[source]
        source: burn::store::RecordError,
    },
    /// The shipped corpus failed its SHA-256 check, or a corpus could not be fingerprinted.
    #[error("corpus: {0}")]
    Corpus(#[from] magnet_corpus::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Corpus, tokenizer or token-shard data is unusable.
    #[error("{what}: {message}")]
    Data {
        /// The file, directory or data item.
        what: String,
        /// What is wrong with it.
        message: String,
    },
    /// Training stopped (non-finite loss, bad checkpoint, backend failure).
    #[error("training: {0}")]
    Training(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// An [`Error::Data`].
    pub fn data(what: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Data {
            what: what.into(),
            message: message.into(),
        }
    }
}

/// What is wrong with a vocabulary as GGUF stores it (`tokenizer.ggml.*`), or with a
/// tokenizer that is to be written as one.
#[derive(Debug, Error)]
pub enum VocabError {
    /// `tokenizer.ggml.model` names a tokenizer family we do not implement.
    #[error("tokenizer.ggml.model `{model}` is not supported (known: gpt2, llama)")]
    UnknownModel {
        /// The value in the file.
        model: String,
    },
    /// `tokenizer.ggml.pre` names a split we do not implement: guessing one would tokenize
    /// differently from the model's training.
    #[error("tokenizer.ggml.pre `{pre}` is not supported (known: gpt-2, llama-bpe)")]
    UnknownPre {
        /// The value in the file.
        pre: String,
    },
    /// A `gpt2` vocabulary without `tokenizer.ggml.pre`.
    #[error("tokenizer.ggml.pre is missing: the split pattern of a gpt2 vocabulary is unknown")]
    MissingPre,
    /// A `tokenizer.json` pre-tokenizer that no `tokenizer.ggml.pre` value describes.
    #[error(
        "the tokenizer's pre-tokenizer {found} is neither GPT-2's nor Llama 3's byte-level \
         split; GGUF has no `tokenizer.ggml.pre` for it"
    )]
    UnsupportedSplit {
        /// The pre-tokenizer's JSON.
        found: String,
    },
    /// The arrays or ids disagree (names the array, id and vocabulary size).
    #[error("{0}")]
    Inconsistent(String),
    /// The tokenizer could not be serialised by the `tokenizers` crate.
    #[error("cannot serialise the tokenizer: {0}")]
    Serialise(#[source] tokenizers::Error),
    /// Its JSON could not be read or written.
    #[error("tokenizer JSON: {0}")]
    Json(#[source] serde_json::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
