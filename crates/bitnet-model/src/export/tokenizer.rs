//! The tokenizer as GGUF metadata (`tokenizer.ggml.*`, gpt2-style byte-level BPE) and back
//! to a Hugging Face `tokenizer.json`.

use crate::data::tokenizer::TextTokenizer;
use serde_json::{Value as Json, json};

/// llama.cpp `token_type` of an ordinary token.
pub const TOKEN_TYPE_NORMAL: i32 = 1;
/// llama.cpp `token_type` of a control (special) token.
pub const TOKEN_TYPE_CONTROL: i32 = 3;
/// llama.cpp `token_type` of an unused (padding) token.
pub const TOKEN_TYPE_UNUSED: i32 = 5;

/// A byte-level BPE vocabulary in the form GGUF stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufVocab {
    /// Token strings by id (byte-level alphabet, as in `tokenizer.json`).
    pub tokens: Vec<String>,
    /// `TOKEN_TYPE_*` by id.
    pub token_types: Vec<i32>,
    /// Merges in rank order, each written `"left right"`.
    pub merges: Vec<String>,
    /// The end-of-text id (also BOS: documents are separated by it).
    pub eos_id: u32,
}

impl GgufVocab {
    /// Extracts the vocabulary, merges and special tokens of a byte-level BPE tokenizer.
    pub fn from_tokenizer(tokenizer: &TextTokenizer) -> Result<Self, String> {
        let json: Json = serde_json::from_str(
            &tokenizer
                .inner
                .to_string(false)
                .map_err(|e| format!("cannot serialise the tokenizer: {e}"))?,
        )
        .map_err(|e| format!("tokenizer JSON: {e}"))?;
        let model = &json["model"];
        if model["type"] != "BPE" {
            return Err(format!("tokenizer model is {}, not BPE", model["type"]));
        }
        let n = tokenizer.vocab_size();
        let mut tokens = vec![None; n];
        let mut token_types = vec![TOKEN_TYPE_NORMAL; n];
        let mut put = |token: &str, id: u64, special: bool| -> Result<(), String> {
            let slot = tokens.get_mut(id as usize).ok_or_else(|| {
                format!("token `{token}` has id {id} outside the vocabulary of {n}")
            })?;
            *slot = Some(token.to_string());
            if special {
                token_types[id as usize] = TOKEN_TYPE_CONTROL;
            }
            Ok(())
        };
        for (token, id) in model["vocab"]
            .as_object()
            .ok_or("tokenizer has no BPE vocab")?
        {
            put(token, id.as_u64().ok_or("non-integer token id")?, false)?;
        }
        for added in json["added_tokens"].as_array().into_iter().flatten() {
            let token = added["content"]
                .as_str()
                .ok_or("added token without content")?;
            let id = added["id"].as_u64().ok_or("added token without id")?;
            put(token, id, added["special"].as_bool().unwrap_or(false))?;
        }
        let tokens = tokens
            .into_iter()
            .enumerate()
            .map(|(id, t)| t.ok_or_else(|| format!("no token has id {id}")))
            .collect::<Result<Vec<_>, _>>()?;
        let merges = model["merges"]
            .as_array()
            .ok_or("tokenizer has no BPE merges")?
            .iter()
            .map(|m| match m {
                // tokenizers writes [left, right] pairs; older files "left right" strings.
                Json::String(s) => Ok(s.clone()),
                Json::Array(pair) if pair.len() == 2 => Ok(format!(
                    "{} {}",
                    pair[0].as_str().unwrap_or_default(),
                    pair[1].as_str().unwrap_or_default()
                )),
                other => Err(format!("unreadable merge {other}")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            tokens,
            token_types,
            merges,
            eos_id: tokenizer.eos_id(),
        })
    }

    /// Appends `[PAD{id}]` tokens of type unused up to `n` tokens (the embedding rows), as
    /// llama.cpp's converter does; no merge produces them, so tokenization is unchanged.
    pub fn pad_to(&mut self, n: usize) {
        for id in self.tokens.len()..n {
            self.tokens.push(format!("[PAD{id}]"));
            self.token_types.push(TOKEN_TYPE_UNUSED);
        }
    }

    /// A `tokenizer.json` equivalent to the one exported: byte-level BPE, GPT-2 split
    /// pattern, no prefix space, control tokens as special added tokens.
    pub fn to_tokenizer_json(&self) -> Result<String, String> {
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        for (id, (token, ty)) in self.tokens.iter().zip(&self.token_types).enumerate() {
            if *ty == TOKEN_TYPE_CONTROL {
                added.push(json!({
                    "id": id, "content": token, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true
                }));
            }
            vocab.insert(token.clone(), json!(id));
        }
        let merges = self
            .merges
            .iter()
            .map(|m| {
                let (a, b) = m
                    .split_once(' ')
                    .ok_or_else(|| format!("merge `{m}` is not `left right`"))?;
                Ok(json!([a, b]))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let byte_level = json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
        });
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": byte_level,
            "post_processor": null,
            "decoder": byte_level,
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges
            }
        });
        serde_json::to_string(&doc).map_err(|e| e.to_string())
    }
}
