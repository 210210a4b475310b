//! The burn model: [`BitLinear`] on its own, and the BitNet transformer (with its
//! full-precision twin selected by [`ModelConfig::weights`](crate::ModelConfig)).

pub mod bitlinear;
pub mod fused;
pub mod transformer;

pub use bitlinear::{
    BitLinear, act_quant_ste, act_quant_ste_reference, ternary_ste, ternary_ste_reference,
};
pub use transformer::{Block, Model, RmsNorm, rope_tables, token_tensor};
