//! The crate's error type.

use crate::types::GgmlType;
use crate::value::ValueType;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong reading, writing or converting GGUF data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file when there is one.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file violates the GGUF format; `offset` is where the offending field starts.
    #[error("{}: malformed GGUF at byte {offset}: {kind}", path.display())]
    Malformed {
        /// The file (`<memory>` for in-memory data).
        path: PathBuf,
        /// Byte offset of the offending field.
        offset: u64,
        /// What is wrong.
        kind: Malformed,
    },
    /// A metadata key is absent.
    #[error("metadata key `{key}` is missing")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value has another type than the accessor expects.
    #[error("metadata key `{key}` has type {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What the accessor wanted.
        expected: &'static str,
        /// What the file holds.
        found: String,
    },
    /// A metadata integer does not fit the requested type.
    #[error("metadata key `{key}` = {value} does not fit {target}")]
    OutOfRange {
        /// The key.
        key: String,
        /// The stored value.
        value: String,
        /// The requested type.
        target: &'static str,
    },
    /// A metadata key was added twice to a builder or table.
    #[error("metadata key `{key}` is already present")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// A tensor name is absent.
    #[error("no tensor named `{name}`")]
    MissingTensor {
        /// The name.
        name: String,
    },
    /// A value, key or tensor given to the writer would produce a file that the reader (or
    /// llama.cpp) rejects.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The key, tensor or field concerned.
        what: String,
        /// Why it is refused.
        reason: String,
    },
    /// Conversion to or from f32 is not implemented for this type.
    #[error("tensor `{name}`: conversion between {ty} and f32 is not supported")]
    Unsupported {
        /// Tensor name (or `<data>` for free-standing conversions).
        name: String,
        /// The type.
        ty: GgmlType,
    },
    /// Data length does not match what the tensor's type and shape require.
    #[error("tensor `{name}`: {what} has length {found}, expected {expected}")]
    SizeMismatch {
        /// Tensor name.
        name: String,
        /// `bytes` or `f32 values`.
        what: &'static str,
        /// Given length.
        found: u64,
        /// Required length.
        expected: u64,
    },
    /// Tensor data was written in another order than the tensor infos (llama.cpp requires the
    /// same order).
    #[error("tensor data written out of order: got `{found}`, expected `{expected}`")]
    OutOfOrder {
        /// Name of the tensor whose data is due next.
        expected: String,
        /// Name given.
        found: String,
    },
    /// `finish` was called before every tensor's data was written.
    #[error("GGUF writer finished with {missing} tensor(s) unwritten, next is `{next}`")]
    Unfinished {
        /// How many tensors lack data.
        missing: usize,
        /// The first of them.
        next: String,
    },
    /// `ternary-core` rejected packed data or values (non-finite input, a length that is
    /// not a whole number of blocks, a code outside -1..=1, ...).
    #[error("tensor `{name}`: {source}")]
    Ternary {
        /// Tensor name (or `<data>` for free-standing conversions).
        name: String,
        /// The error from `ternary-core`.
        #[source]
        source: ternary_core::Error,
    },
}

impl From<ternary_core::Error> for Error {
    fn from(source: ternary_core::Error) -> Self {
        Error::Ternary {
            name: "<data>".into(),
            source,
        }
    }
}

/// What is wrong with a malformed file (see [`Error::Malformed`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Malformed {
    /// The first four bytes are not `GGUF`.
    #[error("bad magic {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// The version reads as a byte-swapped small number: the file was written big-endian.
    #[error(
        "file is big-endian (version reads as {swapped_version} byte-swapped); only little-endian GGUF is supported, convert it with gguf-py's gguf-convert-endian"
    )]
    BigEndian {
        /// The version after byte-swapping.
        swapped_version: u32,
    },
    /// A version other than 2 or 3.
    #[error("unsupported GGUF version {version} (supported: 3, and 2 for reading)")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// The file ends inside a field.
    #[error("truncated: {what} needs {needed} bytes, {available} left")]
    Truncated {
        /// The field.
        what: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// A count cannot be right: even at the smallest encoding its items would not fit in the
    /// rest of the file.
    #[error("{what} count {count} exceeds what the remaining bytes can hold (at most {max})")]
    CountTooLarge {
        /// What is counted.
        what: String,
        /// The count read.
        count: u64,
        /// The largest count that could fit.
        max: u64,
    },
    /// A string's length runs past the end of the file.
    #[error("{what}: string length {len} exceeds the {available} bytes left")]
    StringTooLong {
        /// Which string.
        what: String,
        /// Length read.
        len: u64,
        /// Bytes left.
        available: u64,
    },
    /// A string is not valid UTF-8.
    #[error("{what}: string is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        what: String,
    },
    /// A metadata value type tag is unknown.
    #[error("key `{key}`: unknown value type {type_id}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The tag read.
        type_id: u32,
    },
    /// A BOOL byte other than 0 or 1.
    #[error("key `{key}`: bool byte {value} is neither 0 nor 1")]
    InvalidBool {
        /// The key.
        key: String,
        /// The byte.
        value: u8,
    },
    /// Arrays nested deeper than [`crate::MAX_ARRAY_DEPTH`].
    #[error("key `{key}`: arrays nested deeper than {max} levels")]
    ArrayTooDeep {
        /// The key.
        key: String,
        /// The limit.
        max: usize,
    },
    /// A metadata key appears twice.
    #[error("duplicate metadata key `{key}`")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// `general.alignment` is not a UINT32.
    #[error("general.alignment has type {found}, must be UINT32")]
    AlignmentType {
        /// The type found.
        found: ValueType,
    },
    /// `general.alignment` is zero or not a power of two.
    #[error("general.alignment = {value} is not a non-zero power of two")]
    AlignmentValue {
        /// The value found.
        value: u32,
    },
    /// A tensor name of 64 bytes or more (ggml's `GGML_MAX_NAME`).
    #[error("tensor name `{name}` is {len} bytes, the limit is 63")]
    TensorNameTooLong {
        /// The name (lossy UTF-8).
        name: String,
        /// Its length.
        len: u64,
    },
    /// Two tensors with the same name.
    #[error("duplicate tensor name `{name}`")]
    DuplicateTensor {
        /// The name.
        name: String,
    },
    /// More than 4 dimensions.
    #[error("tensor `{name}` has {n_dims} dimensions, the limit is 4")]
    TooManyDims {
        /// Tensor name.
        name: String,
        /// The count read.
        n_dims: u32,
    },
    /// The element count (or a dimension) exceeds `i64::MAX`.
    #[error("tensor `{name}`: dimensions {dims:?} overflow the element count")]
    DimsOverflow {
        /// Tensor name.
        name: String,
        /// Dimensions read.
        dims: Vec<u64>,
    },
    /// A ggml type id this crate does not know.
    #[error("tensor `{name}`: unknown ggml type id {type_id}")]
    UnknownTensorType {
        /// Tensor name.
        name: String,
        /// The id read.
        type_id: u32,
    },
    /// The row length is not a multiple of the type's block size.
    #[error("tensor `{name}`: row length {row} is not a multiple of {ty}'s block size {block}")]
    RowNotBlockMultiple {
        /// Tensor name.
        name: String,
        /// The type.
        ty: GgmlType,
        /// `dims[0]`.
        row: u64,
        /// The block size.
        block: u64,
    },
    /// A tensor offset that is not a multiple of the alignment.
    #[error("tensor `{name}`: offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        /// Tensor name.
        name: String,
        /// Offset relative to the data section.
        offset: u64,
        /// The alignment.
        alignment: u64,
    },
    /// Tensor data past the end of the file.
    #[error(
        "tensor `{name}`: data [{start}, {end}) extends past the end of the file ({file_len} bytes)"
    )]
    TensorOutOfBounds {
        /// Tensor name.
        name: String,
        /// Absolute start.
        start: u64,
        /// Absolute end (saturated).
        end: u64,
        /// File length.
        file_len: u64,
    },
    /// Two tensors' data ranges overlap.
    #[error("tensors `{first}` and `{second}` overlap")]
    OverlappingTensors {
        /// The tensor with the lower offset.
        first: String,
        /// The other.
        second: String,
    },
}
