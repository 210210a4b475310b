//! The crate's error type.

/// Everything that can go wrong in `ternary-core`. Every message names the offending input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A length that must be a whole number of blocks is not.
    #[error("{what}: length {len} is not a multiple of the {format} block size {block}")]
    NotBlockMultiple {
        /// Which input (e.g. "row", "cols").
        what: &'static str,
        /// Format or quantizer name.
        format: &'static str,
        /// The offending length.
        len: usize,
        /// The required block size.
        block: usize,
    },
    /// A buffer has the wrong number of elements or bytes.
    #[error("{what}: buffer has {actual} {unit}, expected {expected}")]
    BufferLength {
        /// Which buffer.
        what: &'static str,
        /// Expected size.
        expected: usize,
        /// Actual size.
        actual: usize,
        /// "bytes", "elements" or "blocks".
        unit: &'static str,
    },
    /// A NaN or infinite input value.
    #[error("{what}: non-finite value {value} at element {index}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Flat element index.
        index: usize,
        /// The value found.
        value: f32,
    },
    /// A tensor with zero elements (or zero rows / columns) where data is required.
    #[error("{what}: empty tensor ({rows}x{cols})")]
    Empty {
        /// Which input.
        what: &'static str,
        /// Rows given.
        rows: usize,
        /// Columns given.
        cols: usize,
    },
    /// A ternary code outside -1..=1.
    #[error("{what}: code {code} at element {index} is not in -1..=1")]
    InvalidCode {
        /// Which input.
        what: &'static str,
        /// Flat element index.
        index: usize,
        /// The code found.
        code: i8,
    },
    /// A non-finite or negative scale.
    #[error("{what}: invalid scale {value} at index {index}")]
    InvalidScale {
        /// Which input.
        what: &'static str,
        /// Scale index.
        index: usize,
        /// The value found.
        value: f32,
    },
    /// Shapes that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A size computation overflowed `usize`.
    #[error("{what}: size {rows}x{cols} overflows")]
    Overflow {
        /// Which input.
        what: &'static str,
        /// Rows given.
        rows: usize,
        /// Columns given.
        cols: usize,
    },
    /// A format an operation does not handle.
    #[error("{what}: format {format} is not supported")]
    UnsupportedFormat {
        /// The operation.
        what: &'static str,
        /// The format's name.
        format: &'static str,
    },
    /// A kernel path that this CPU (or this build) cannot run.
    #[error("kernel path `{0}` is not supported on this CPU")]
    UnsupportedPath(&'static str),
    /// An unknown kernel path name (API or `TERNARY_KERNEL`).
    #[error("unknown kernel path `{0}` (expected auto, scalar, avx2, lut, neon)")]
    UnknownPath(String),
    /// A thread count of zero or a pool that could not be built.
    #[error("thread pool: {0}")]
    ThreadPool(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Returns the first non-finite value of `x` as an error.
pub(crate) fn check_finite(what: &'static str, x: &[f32]) -> Result<()> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(Error::NonFinite {
            what,
            index,
            value: x[index],
        }),
        None => Ok(()),
    }
}

/// Checks `actual == expected` for a buffer.
pub(crate) fn check_len(
    what: &'static str,
    actual: usize,
    expected: usize,
    unit: &'static str,
) -> Result<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(Error::BufferLength {
            what,
            expected,
            actual,
            unit,
        })
    }
}
