//! Ternary (BitNet b1.58) quantizers, ggml / bitnet.cpp packed formats and CPU kernels.
//!
//! ```
//! use ternary_core::{Engine, Format, Granularity, PackedMatrix, quantize_absmean};
//!
//! // A 4 x 256 weight matrix, ternarized per tensor with the absmean rule...
//! let (rows, cols) = (4, 256);
//! let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 11) as f32 - 5.0) / 10.0).collect();
//! let t = quantize_absmean(&w, rows, cols, Granularity::PerTensor, 1e-5)?;
//! // ...packed as TQ2_0 (the bytes llama.cpp reads)...
//! let m = PackedMatrix::from_ternary(Format::Tq2_0, &t)?;
//! assert_eq!(m.to_bytes().len(), Format::Tq2_0.tensor_bytes(rows, cols)?);
//! // ...and multiplied by an f32 vector (int8 activations, integer accumulation).
//! let x: Vec<f32> = (0..cols).map(|i| (i as f32).sin()).collect();
//! let mut y = vec![0.0; rows];
//! Engine::new(1)?.gemv(&m, &x, &mut y)?;
//! let exact: Vec<f32> = t.dequantize().chunks(cols)
//!     .map(|r| r.iter().zip(&x).map(|(a, b)| a * b).sum()).collect();
//! for (a, b) in y.iter().zip(&exact) {
//!     assert!((a - b).abs() < 0.05 * (1.0 + b.abs()));
//! }
//! # Ok::<(), ternary_core::Error>(())
//! ```
//!
//! Map of the crate:
//! - [`quant`]: absmean ternary weights ([`quantize_absmean`]), per-token int8 activations
//!   ([`quantize_per_token`]) and ggml's per-block Q8_K ([`quantize_row_q8k`]).
//! - [`format`]: byte-exact block types and the [`PackedFormat`] trait (TQ1_0, TQ2_0, Q8_0),
//!   the whole-tensor I2_S functions, and [`Format`] byte-size helpers.
//! - [`matrix`]: [`PackedMatrix`], a weight matrix in any format, to and from GGUF bytes.
//! - [`tensor`]: [`NamedTensor`](tensor::NamedTensor) and [`WeightMap`](tensor::WeightMap), the
//!   named f32 tensors the crates above exchange.
//! - [`kernels`]: scalar, AVX2 and lookup-table ([`LutMatrix`]) GEMV / GEMM with integer
//!   accumulation, threaded by [`Engine`]; `TERNARY_KERNEL` forces a path.
//!
//! Byte layouts and formulas: `docs/formats.md`.

pub mod error;
pub mod format;
pub mod kernels;
pub mod matrix;
pub mod quant;
pub mod tensor;

pub use error::{Error, Result};
pub use format::{
    BlockI2S, BlockQ8_0, BlockTq1_0, BlockTq2_0, Format, PackedFormat, Q8_0, Tq1_0, Tq2_0,
};
pub use kernels::lut::LutMatrix;
pub use kernels::{Engine, KernelPath};
pub use matrix::{PackedData, PackedMatrix};
pub use quant::{
    ActQuant, ActivationsI8, BlockQ8K, Granularity, QuantizedActivations, TernaryWeights,
    quantize_absmean, quantize_per_token, quantize_row_q8k,
};
