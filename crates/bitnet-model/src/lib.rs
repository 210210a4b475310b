//! `bitnet-model`: BitNet b1.58 transformers in burn that train from scratch, resume
//! exactly, run fast on CPU and export to GGUF.
//!
//! ```
//! use bitnet_model::data::{TokenData, TokenStream};
//! use bitnet_model::train::{TrainConfig, Trainer};
//! use bitnet_model::{ModelConfig, WeightKind};
//! use burn::tensor::Device;
//! use std::sync::Arc;
//!
//! // A micro ternary model on a toy token stream (real data: `data::prepare_dataset`).
//! let model = ModelConfig::from_toml(
//!     "vocab_size = 32\nhidden_size = 16\nn_layers = 1\nn_heads = 2\n\
//!      n_kv_heads = 1\nffn_hidden_size = 32\ncontext_length = 8",
//! )?;
//! assert_eq!(model.weights, WeightKind::Ternary);
//! let tokens: Vec<u32> = (0..400).map(|i| (i * 7 % 32) as u32).collect();
//! let data = TokenData {
//!     train: TokenStream::from_vec(tokens.clone()),
//!     val: TokenStream::from_vec(tokens),
//!     token_bytes: Arc::new(vec![1; 32]),
//! };
//! let train = TrainConfig { steps: 2, batch_size: 2, seq_len: 8, eval_windows: 2, ..TrainConfig::default() };
//! let mut trainer = Trainer::new(model, train, data, &Device::flex())?;
//! let stats = trainer.step()?;
//! assert!(stats.loss.is_finite());
//! let weights = trainer.weights(); // canonical llama.cpp names, `[out, in]`
//! assert!(weights.contains_key("blk.0.attn_q.weight"));
//! # Ok::<(), bitnet_model::Error>(())
//! ```
//!
//! Modules: [`config`] (architecture + presets), [`model`] (BitLinear, transformer),
//! [`data`] (corpus, tokenizer, language mix, shards), [`train`] (trainer, schedule,
//! checkpoints, loop), [`store`] (safetensors, model directory), [`weights`] (the named
//! tensor exchange format), [`runtime`] (packed CPU inference), [`export`] (GGUF),
//! [`hf`] (Hugging Face checkpoints),
//! `plot` (feature `plot`: PNG line charts for loss curves).

pub mod config;
pub mod data;
pub mod error;
pub mod export;
pub mod hf;
pub mod model;
#[cfg(feature = "plot")]
pub mod plot;
pub mod rng;
pub mod runtime;
pub mod store;
pub mod train;
pub mod weights;

pub use config::{Activation, ModelConfig, Preset, WeightKind};
pub use error::{Error, Result, VocabError};
pub use weights::{NamedTensor, WeightMap};
