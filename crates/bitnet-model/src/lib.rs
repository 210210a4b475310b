//! `bitnet-model`: BitNet b1.58 transformers in burn that train from scratch, resume
//! exactly, run fast on CPU and export to GGUF.
//!
//! ```
//! use bitnet_model::config::ModelConfig;
//! let tiny = ModelConfig::preset("tiny").unwrap();
//! assert!(tiny.param_count() < 5_000_000);
//! ```

pub mod config;
pub mod data;
pub mod error;
pub mod export;
pub mod model;
pub mod rng;
pub mod runtime;
pub mod store;
pub mod train;
pub mod weights;

pub use config::{Activation, ModelConfig, WeightKind};
pub use error::{Error, Result};
pub use weights::{NamedTensor, WeightMap};
