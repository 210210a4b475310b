//! The tokenizer as GGUF metadata (`tokenizer.ggml.*`) and back to a Hugging Face
//! tokenizer, with the pre-tokenizer the file names.
//!
//! `tokenizer.ggml.model` and `tokenizer.ggml.pre` decide how text is split, as in
//! llama.cpp's `llama-vocab.cpp`:
//!
//! | model | pre | what we build |
//! |---|---|---|
//! | `gpt2` | `gpt-2` | byte-level BPE, GPT-2 split pattern (what we export) |
//! | `gpt2` | `llama-bpe` / `llama3` | byte-level BPE, Llama 3's split pattern (digits in groups of at most 3, `Isolated`), as Llama 3's `tokenizer.json` |
//! | `llama` | any (`default`) | SentencePiece-style BPE: `▁` for spaces and a leading `▁` (unless `add_space_prefix` is false), merges ranked by the merged piece's score (llama.cpp's bigram rule), byte fallback through `<0xXX>` tokens |
//!
//! Any other `pre` (or a missing one for `gpt2`) is [`Error::Vocabulary`], never a silent
//! fallback: llama.cpp itself splits an unknown `pre` differently, and a wrong split
//! silently changes every token id.

use crate::data::tokenizer::TextTokenizer;
use crate::error::{Error, Result, VocabError};
use serde_json::{Value as Json, json};
use std::collections::HashMap;

/// llama.cpp `token_type` of an ordinary token.
pub const TOKEN_TYPE_NORMAL: i32 = 1;
/// llama.cpp `token_type` of an unknown token.
pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
/// llama.cpp `token_type` of a control (special) token.
pub const TOKEN_TYPE_CONTROL: i32 = 3;
/// llama.cpp `token_type` of a user-defined token.
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;
/// llama.cpp `token_type` of an unused (padding) token.
pub const TOKEN_TYPE_UNUSED: i32 = 5;
/// llama.cpp `token_type` of a byte-fallback token (`<0x41>`).
pub const TOKEN_TYPE_BYTE: i32 = 6;

/// Llama 3's split pattern (`tokenizer.json` of Meta-Llama-3, llama.cpp's
/// `LLAMA_VOCAB_PRE_TYPE_LLAMA3`).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How the vocabulary tokenizes (`tokenizer.ggml.model` + `tokenizer.ggml.pre`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTokenizer {
    /// `gpt2` + `gpt-2`: byte-level BPE with the GPT-2 split pattern.
    Gpt2,
    /// `gpt2` + `llama-bpe` (or `llama3`): byte-level BPE with Llama 3's split pattern.
    Llama3,
    /// `llama`: SentencePiece-style BPE over scores, byte fallback.
    SentencePiece,
}

impl PreTokenizer {
    /// Reads the kind from `tokenizer.ggml.model` and `tokenizer.ggml.pre`; an unknown
    /// combination is an error naming the value.
    pub fn from_gguf(model: &str, pre: Option<&str>) -> std::result::Result<Self, VocabError> {
        match (model, pre) {
            ("gpt2", Some("gpt-2")) => Ok(Self::Gpt2),
            ("gpt2", Some("llama-bpe" | "llama3")) => Ok(Self::Llama3),
            ("llama", _) => Ok(Self::SentencePiece),
            ("gpt2", Some(other)) => Err(VocabError::UnknownPre { pre: other.into() }),
            ("gpt2", None) => Err(VocabError::MissingPre),
            (other, _) => Err(VocabError::UnknownModel {
                model: other.into(),
            }),
        }
    }

    /// The `tokenizer.ggml.model` value.
    pub fn model(self) -> &'static str {
        match self {
            Self::Gpt2 | Self::Llama3 => "gpt2",
            Self::SentencePiece => "llama",
        }
    }

    /// The `tokenizer.ggml.pre` value.
    pub fn pre(self) -> &'static str {
        match self {
            Self::Gpt2 => "gpt-2",
            Self::Llama3 => "llama-bpe",
            Self::SentencePiece => "default",
        }
    }
}

/// Which byte-level split a `tokenizer.json` pre-tokenizer is: GPT-2's (`ByteLevel` with its
/// regex) or Llama 3's (`Split` on [`LLAMA3_PATTERN`] then `ByteLevel` without regex).
fn byte_level_kind(pre: &Json) -> std::result::Result<PreTokenizer, VocabError> {
    let is_byte_level = |p: &Json, regex: bool| {
        p["type"] == "ByteLevel"
            && p["use_regex"].as_bool().unwrap_or(true) == regex
            && !p["add_prefix_space"].as_bool().unwrap_or(false)
    };
    if is_byte_level(pre, true) {
        return Ok(PreTokenizer::Gpt2);
    }
    if pre["type"] == "Sequence"
        && let Some([split, byte]) = pre["pretokenizers"].as_array().map(Vec::as_slice)
        && split["type"] == "Split"
        && split["pattern"]["Regex"] == LLAMA3_PATTERN
        && split["behavior"] == "Isolated"
        && is_byte_level(byte, false)
    {
        return Ok(PreTokenizer::Llama3);
    }
    Err(VocabError::UnsupportedSplit {
        found: pre.to_string(),
    })
}

/// A vocabulary in the form GGUF stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufVocab {
    /// How text is split and merged.
    pub kind: PreTokenizer,
    /// Token strings by id (byte-level alphabet for BPE, `▁` pieces for SentencePiece).
    pub tokens: Vec<String>,
    /// `TOKEN_TYPE_*` by id.
    pub token_types: Vec<i32>,
    /// SentencePiece scores by id (empty for BPE).
    pub scores: Vec<f32>,
    /// BPE merges in rank order, each written `"left right"` (empty for SentencePiece).
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// The end-of-text id (`tokenizer.ggml.eos_token_id`).
    pub eos_id: u32,
    /// `tokenizer.ggml.add_bos_token` (llama.cpp's default: true for SentencePiece, false
    /// for BPE when the key is absent).
    pub add_bos: bool,
    /// `tokenizer.ggml.add_space_prefix` (SentencePiece only; default true).
    pub add_space_prefix: bool,
}

fn bad(message: impl Into<String>) -> VocabError {
    VocabError::Inconsistent(message.into())
}

impl GgufVocab {
    /// Extracts the vocabulary, merges and special tokens of our byte-level BPE tokenizer.
    pub fn from_tokenizer(tokenizer: &TextTokenizer) -> std::result::Result<Self, VocabError> {
        let json: Json = serde_json::from_str(
            &tokenizer
                .inner
                .to_string(false)
                .map_err(VocabError::Serialise)?,
        )
        .map_err(VocabError::Json)?;
        let model = &json["model"];
        if model["type"] != "BPE" {
            return Err(bad(format!(
                "tokenizer model is {}, not BPE",
                model["type"]
            )));
        }
        let kind = byte_level_kind(&json["pre_tokenizer"])?;
        let n = tokenizer.vocab_size();
        let mut tokens = vec![None; n];
        let mut token_types = vec![TOKEN_TYPE_NORMAL; n];
        let mut put =
            |token: &str, id: u64, special: bool| -> std::result::Result<(), VocabError> {
                let slot = tokens.get_mut(id as usize).ok_or_else(|| {
                    bad(format!(
                        "token `{token}` has id {id} outside the vocabulary of {n}"
                    ))
                })?;
                *slot = Some(token.to_string());
                if special {
                    token_types[id as usize] = TOKEN_TYPE_CONTROL;
                }
                Ok(())
            };
        for (token, id) in model["vocab"]
            .as_object()
            .ok_or_else(|| bad("tokenizer has no BPE vocab"))?
        {
            let id = id.as_u64().ok_or_else(|| bad("non-integer token id"))?;
            put(token, id, false)?;
        }
        for added in json["added_tokens"].as_array().into_iter().flatten() {
            let token = added["content"]
                .as_str()
                .ok_or_else(|| bad("added token without content"))?;
            let id = added["id"]
                .as_u64()
                .ok_or_else(|| bad("added token without id"))?;
            put(token, id, added["special"].as_bool().unwrap_or(false))?;
        }
        let tokens = tokens
            .into_iter()
            .enumerate()
            .map(|(id, t)| t.ok_or_else(|| bad(format!("no token has id {id}"))))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let merges = model["merges"]
            .as_array()
            .ok_or_else(|| bad("tokenizer has no BPE merges"))?
            .iter()
            .map(|m| match m {
                // tokenizers writes [left, right] pairs; older files "left right" strings.
                Json::String(s) => Ok(s.clone()),
                Json::Array(pair) if pair.len() == 2 => Ok(format!(
                    "{} {}",
                    pair[0].as_str().unwrap_or_default(),
                    pair[1].as_str().unwrap_or_default()
                )),
                other => Err(bad(format!("unreadable merge {other}"))),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            kind,
            tokens,
            token_types,
            scores: Vec::new(),
            merges,
            bos_id: Some(tokenizer.eos_id()),
            eos_id: tokenizer.eos_id(),
            add_bos: false,
            add_space_prefix: false,
        })
    }

    /// Appends `[PAD{id}]` tokens of type unused up to `n` tokens (the embedding rows), as
    /// llama.cpp's converter does; no merge produces them, so tokenization is unchanged.
    pub fn pad_to(&mut self, n: usize) {
        for id in self.tokens.len()..n {
            self.tokens.push(format!("[PAD{id}]"));
            self.token_types.push(TOKEN_TYPE_UNUSED);
            if !self.scores.is_empty() {
                self.scores.push(-1e9);
            }
        }
    }

    /// Checks the arrays agree and the special ids exist.
    pub fn validate(&self) -> std::result::Result<(), VocabError> {
        let n = self.tokens.len();
        if self.token_types.len() != n {
            return Err(bad(format!(
                "{} token types for {n} tokens",
                self.token_types.len()
            )));
        }
        if self.kind == PreTokenizer::SentencePiece && self.scores.len() != n {
            return Err(bad(format!("{} scores for {n} tokens", self.scores.len())));
        }
        for (what, id) in [("eos", Some(self.eos_id)), ("bos", self.bos_id)] {
            if let Some(id) = id
                && id as usize >= n
            {
                return Err(bad(format!(
                    "{what} token id {id} is outside the vocabulary of {n}"
                )));
            }
        }
        Ok(())
    }

    /// A `tokenizer.json` that tokenizes as llama.cpp does for this vocabulary.
    pub fn to_tokenizer_json(&self) -> std::result::Result<String, VocabError> {
        self.validate()?;
        let mut added = Vec::new();
        for (id, (token, ty)) in self.tokens.iter().zip(&self.token_types).enumerate() {
            if *ty == TOKEN_TYPE_CONTROL || *ty == TOKEN_TYPE_USER_DEFINED {
                added.push(json!({
                    "id": id, "content": token, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": *ty == TOKEN_TYPE_CONTROL
                }));
            }
        }
        let mut vocab = serde_json::Map::new();
        for (id, token) in self.tokens.iter().enumerate() {
            // A duplicate string keeps its first id, as llama.cpp's token-to-id map does.
            vocab.entry(token.clone()).or_insert(json!(id));
        }
        let doc = match self.kind {
            PreTokenizer::Gpt2 | PreTokenizer::Llama3 => {
                let merges = self
                    .merges
                    .iter()
                    .map(|m| {
                        let (a, b) = m
                            .split_once(' ')
                            .ok_or_else(|| bad(format!("merge `{m}` is not `left right`")))?;
                        Ok(json!([a, b]))
                    })
                    .collect::<std::result::Result<Vec<_>, VocabError>>()?;
                let pre = if self.kind == PreTokenizer::Gpt2 {
                    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
                } else {
                    json!({"type": "Sequence", "pretokenizers": [
                        {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN},
                         "behavior": "Isolated", "invert": false},
                        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
                    ]})
                };
                json!({
                    "version": "1.0", "truncation": null, "padding": null,
                    "added_tokens": added, "normalizer": null, "pre_tokenizer": pre,
                    "post_processor": null,
                    "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
                    "model": {
                        "type": "BPE", "dropout": null, "unk_token": null,
                        "continuing_subword_prefix": null, "end_of_word_suffix": null,
                        "fuse_unk": false, "byte_fallback": false,
                        // llama.cpp's LLAMA3 pre-type sets ignore_merges, as Llama 3's
                        // tokenizer.json does: a pre-token in the vocabulary is one token.
                        "ignore_merges": self.kind == PreTokenizer::Llama3,
                        "vocab": vocab, "merges": merges
                    }
                })
            }
            PreTokenizer::SentencePiece => {
                let merges = self.spm_merges();
                let unk = self
                    .token_types
                    .iter()
                    .position(|&t| t == TOKEN_TYPE_UNKNOWN)
                    .map(|i| self.tokens[i].clone());
                let mut normalizers = Vec::new();
                if self.add_space_prefix {
                    normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
                }
                normalizers.push(
                    json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
                );
                let mut decoders = vec![
                    json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
                    json!({"type": "ByteFallback"}),
                    json!({"type": "Fuse"}),
                ];
                if self.add_space_prefix {
                    decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
                }
                json!({
                    "version": "1.0", "truncation": null, "padding": null,
                    "added_tokens": added,
                    "normalizer": {"type": "Sequence", "normalizers": normalizers},
                    "pre_tokenizer": null, "post_processor": null,
                    "decoder": {"type": "Sequence", "decoders": decoders},
                    "model": {
                        "type": "BPE", "dropout": null, "unk_token": unk,
                        "continuing_subword_prefix": null, "end_of_word_suffix": null,
                        "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                        "vocab": vocab, "merges": merges
                    }
                })
            }
        };
        serde_json::to_string(&doc).map_err(VocabError::Json)
    }

    /// BPE merges equivalent to llama.cpp's SentencePiece bigram rule (repeatedly merge the
    /// adjacent pair whose concatenation is the highest-scoring piece, leftmost first): every
    /// split of a normal piece into two pieces of the vocabulary, ranked by the merged
    /// piece's score (then by id, so the order is deterministic).
    fn spm_merges(&self) -> Vec<Json> {
        let ids: HashMap<&str, usize> = self
            .tokens
            .iter()
            .enumerate()
            .rev()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
        for (id, piece) in self.tokens.iter().enumerate() {
            if self.token_types[id] != TOKEN_TYPE_NORMAL
                && self.token_types[id] != TOKEN_TYPE_USER_DEFINED
            {
                continue;
            }
            for (at, _) in piece.char_indices().skip(1) {
                let (l, r) = piece.split_at(at);
                if let (Some(&li), Some(&ri)) = (ids.get(l), ids.get(r)) {
                    merges.push((self.scores[id], id, li, ri));
                }
            }
        }
        merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        merges
            .into_iter()
            .map(|(_, _, l, r)| json!([self.tokens[l], self.tokens[r]]))
            .collect()
    }

    /// The tokenizer this vocabulary describes, tokenizing as llama.cpp does: control tokens
    /// written in the text are text (user-defined tokens are still matched).
    pub fn to_text_tokenizer(&self) -> Result<TextTokenizer> {
        let text = self
            .to_tokenizer_json()
            .map_err(|source| Error::Vocabulary {
                path: "GGUF metadata".into(),
                source,
            })?;
        let mut inner: tokenizers::Tokenizer = text.parse().map_err(|source| Error::Tokenizer {
            what: "from GGUF metadata".into(),
            source,
        })?;
        // llama.cpp tokenizes plain text without parsing special tokens (`llama_tokenize`
        // with `parse_special = false`): `<|endoftext|>` or `<s>` written in the text are
        // characters, not control ids. Hugging Face tokenizers match them by default.
        inner.set_encode_special_tokens(true);
        TextTokenizer::from_tokenizer(inner)
    }
}
