//! GGUF export for llama.cpp (`bitnet`, TQ2_0 / TQ1_0) and bitnet.cpp (I2_S), with the
//! tokenizer embedded as BPE metadata (`gpt-2` or `llama-bpe` split), and import of GGUF
//! files from any producer back into a model.
//!
//! Targets refuse models they would compute differently: llama.cpp's `bitnet` graph always
//! uses a SiLU-gated FFN and `token_embd` as the head
//! (`shared/reference/gguf-and-kernels.md` §3.1), so squared-ReLU or untied models fail
//! with an error naming the reason instead of producing a file that computes something
//! else.

pub mod import;
pub mod tokenizer;
pub mod writer;

pub use import::{
    ImportOptions, ImportedModel, import_gguf, import_gguf_with, latent_from_ternary,
};
/// The I2_S code layouts [`ImportOptions`] chooses between.
pub use ternary_core::format::i2_s::I2sLayout;
pub use tokenizer::{GgufVocab, PreTokenizer};
pub use writer::{
    EmbeddingType, ExportOptions, ExportSummary, Target, TernaryType, export_gguf,
    export_gguf_with_vocab, plan,
};
