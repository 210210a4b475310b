//! `gguf-io`: a strict, zero-copy GGUF v3 reader and a streaming writer whose files load in
//! llama.cpp (`bitnet` architecture, TQ1_0 / TQ2_0) and bitnet.cpp (`bitnet-b1.58`, I2_S).
//!
//! ```
//! use gguf_io::{GgmlType, GgufBuilder, GgufFile};
//!
//! # fn main() -> gguf_io::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("tiny.gguf");
//!
//! // Declare metadata and tensors (dims in ggml order: row length first)...
//! let mut b = GgufBuilder::new();
//! b.add_metadata("general.architecture", "bitnet")?;
//! b.add_metadata("bitnet.context_length", 2048u32)?;
//! b.add_metadata("tokenizer.ggml.tokens", vec!["<s>", "</s>"])?;
//! b.add_tensor("output_norm.weight", &[4], GgmlType::F32)?;
//! b.add_tensor("token_embd.weight", &[4, 2], GgmlType::F16)?;
//! // ...then stream the data one tensor at a time, in the same order.
//! let mut w = b.create(&path)?;
//! w.write_tensor_f32("output_norm.weight", &[1.0, 1.0, 1.0, 1.0])?;
//! w.write_tensor_f32("token_embd.weight", &[0.5, -0.25, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0])?;
//! w.finish()?;
//!
//! // Reading validates everything and maps the tensor data without copying it.
//! let file = GgufFile::open(&path)?;
//! assert_eq!(file.metadata().get_str("general.architecture")?, "bitnet");
//! assert_eq!(file.metadata().get_u32("bitnet.context_length")?, 2048);
//! let embd = file.tensor("token_embd.weight")?;
//! assert_eq!(embd.dims(), [4, 2]);
//! assert_eq!(embd.to_f32()?[1], -0.25);
//! # Ok(())
//! # }
//! ```
//!
//! Modules:
//! - [`reader`]: [`GgufFile`] (memory map, validation), [`TensorInfo`], [`TensorView`].
//! - [`writer`]: [`GgufBuilder`] and the streaming [`GgufWriter`].
//! - [`value`]: the 13 metadata value types ([`Value`], [`Array`]) and [`Metadata`] with typed
//!   accessors.
//! - [`types`]: [`GgmlType`] ids, block sizes and byte sizes for every known ggml type.
//! - [`convert`]: f32 to and from F32, F16, BF16, Q8_0, TQ1_0, TQ2_0 and I2_S bytes, and
//!   from the legacy Q4_0 / Q4_1 / Q5_0 / Q5_1 and k-quant Q4_K / Q5_K / Q6_K blocks.
//! - [`dump`]: text and JSON summaries (the `gguf-dump` binary).
//! - [`error`]: [`Error`] and [`Malformed`].
//!
//! The format rules, the validation list and how llama.cpp and bitnet.cpp differ are in
//! `docs/gguf.md`.

pub mod convert;
pub mod dump;
pub mod error;
mod packed;
mod quants;
pub mod reader;
pub mod types;
pub mod value;
pub mod writer;

pub use error::{Error, Malformed, Result};
pub use reader::{GgufFile, TensorInfo, TensorView};
pub use types::GgmlType;
pub use value::{Array, Metadata, Value, ValueType};
pub use writer::{GgufBuilder, GgufWriter};

/// The four magic bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The version this crate writes.
pub const GGUF_VERSION: u32 = 3;
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key holding the alignment (a UINT32 power of two).
pub const KEY_ALIGNMENT: &str = "general.alignment";
/// Longest tensor name in bytes (ggml's `GGML_MAX_NAME` is 64 including the NUL).
pub const MAX_TENSOR_NAME_LEN: usize = 63;
/// Most tensor dimensions (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Deepest metadata array nesting accepted (an array of scalars has depth 1).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// `general.quantization_version` that files with quantized tensors should carry.
pub const QUANTIZATION_VERSION: u32 = 2;
