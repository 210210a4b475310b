//! Quantizers: absmean ternary weights and absmax int8 activations.

pub mod activation;
pub mod ternary;

pub use activation::{
    ActQuant, ActivationsI8, BlockQ8K, QuantizedActivations, quantize_per_token, quantize_row_q8k,
};
pub use ternary::{Granularity, TernaryWeights, quantize_absmean};
