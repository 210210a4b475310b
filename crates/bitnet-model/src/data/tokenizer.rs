//! Byte-level BPE trained with Hugging Face `tokenizers`: the GPT-2 split pattern and
//! ByteLevel without a prefix space, so that llama.cpp with `tokenizer.ggml.pre = "gpt-2"`
//! tokenizes identically. All 256 byte symbols are in the vocabulary, so every input
//! (including U+FFFD from lenient reading) encodes without unknown tokens.

use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// The one special token (id 0): document separator, also BOS/EOS in GGUF.
pub const EOS_TOKEN: &str = "<|endoftext|>";

/// A trained tokenizer plus the byte length of every token (for bits per byte).
#[derive(Clone)]
pub struct TextTokenizer {
    /// The Hugging Face tokenizer.
    pub inner: Tokenizer,
    token_bytes: Vec<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish_non_exhaustive()
    }
}

fn tok_err(what: &str, source: tokenizers::Error) -> Error {
    Error::Tokenizer {
        what: what.to_string(),
        source,
    }
}

impl TextTokenizer {
    /// Trains a byte-level BPE of `vocab_size` tokens (at least 257: the special token and
    /// the 256 byte symbols) on `texts`. Deterministic for the same input.
    pub fn train<'a>(
        texts: impl Iterator<Item = &'a str> + Send,
        vocab_size: usize,
    ) -> Result<Self> {
        if vocab_size < 257 {
            return Err(Error::Config {
                field: "vocab_size".into(),
                message: format!("a byte-level BPE needs at least 257 tokens, got {vocab_size}"),
            });
        }
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            // tokenizers' own bar, only where someone watches (feature `progress`).
            .show_progress(
                cfg!(feature = "progress") && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            )
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(vec![AddedToken::from(EOS_TOKEN, true)])
            .build()
            .into();
        let mut tokenizer = Tokenizer::new(BPE::default());
        tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        tokenizer
            .train(&mut trainer, texts)
            .map_err(|e| tok_err("tokenizer training", e))?;
        Self::from_tokenizer(tokenizer)
    }

    /// Wraps a Hugging Face tokenizer (any model; byte lengths are counted for byte-level
    /// vocabularies).
    pub fn from_tokenizer(inner: Tokenizer) -> Result<Self> {
        let n = inner.get_vocab_size(true);
        let byte_level = ByteLevel::alphabet();
        let mut token_bytes = Vec::with_capacity(n);
        for id in 0..n as u32 {
            let token = inner
                .id_to_token(id)
                .ok_or_else(|| Error::data("tokenizer", format!("no token for id {id} of {n}")))?;
            // In a byte-level vocabulary each char stands for one byte; specials are 0 bytes.
            let bytes = if token.chars().all(|c| byte_level.contains(&c)) && token != EOS_TOKEN {
                token.chars().count() as u32
            } else {
                0
            };
            token_bytes.push(bytes);
        }
        Ok(Self { inner, token_bytes })
    }

    /// Loads `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let inner =
            Tokenizer::from_file(path).map_err(|e| tok_err(&path.display().to_string(), e))?;
        Self::from_tokenizer(inner)
    }

    /// Saves `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| tok_err(&path.display().to_string(), e))
    }

    /// Vocabulary size including the special token.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// Id of [`EOS_TOKEN`].
    pub fn eos_id(&self) -> u32 {
        self.inner.token_to_id(EOS_TOKEN).unwrap_or(0)
    }

    /// Token ids of `text`, without BOS or any other added token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| tok_err("encode", e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids` (invalid UTF-8 from partial tokens is replaced).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| tok_err("decode", e))
    }

    /// UTF-8 bytes that token `id` stands for (0 for specials and unknown ids).
    pub fn token_bytes(&self, id: u32) -> u32 {
        self.token_bytes.get(id as usize).copied().unwrap_or(0)
    }

    /// Bytes covered by a token sequence.
    pub fn count_bytes(&self, ids: &[u32]) -> u64 {
        ids.iter().map(|&i| u64::from(self.token_bytes(i))).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "The quick brown fox jumps over the lazy dog.\n\
        한국어 문서를 읽습니다. 설치 안내서입니다.\n\
        日本語の文書を読みます。インストールガイドです。\n";

    #[test]
    fn trains_round_trips_and_counts_bytes() {
        let texts: Vec<&str> = std::iter::repeat_n(SAMPLE, 20).collect();
        let tok = TextTokenizer::train(texts.iter().copied(), 400).unwrap();
        assert!(tok.vocab_size() > 257 && tok.vocab_size() <= 400);
        assert_eq!(tok.eos_id(), 0);
        let ids = tok.encode(SAMPLE).unwrap();
        assert!(ids.len() < SAMPLE.len());
        assert_eq!(tok.decode(&ids).unwrap(), SAMPLE);
        assert_eq!(tok.count_bytes(&ids), SAMPLE.len() as u64);
        // Unseen bytes still encode (all 256 byte symbols are in the vocabulary).
        let odd = "ÿ\u{1F600}\u{FFFD}";
        let ids = tok.encode(odd).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), odd);
        // No prefix space: a leading word is not given a space.
        let first = tok.encode("The").unwrap();
        assert_eq!(tok.decode(&first[..1]).unwrap().chars().next(), Some('T'));
        // Save and load give the same ids.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        let again = TextTokenizer::load(&path).unwrap();
        assert_eq!(again.encode(SAMPLE).unwrap(), tok.encode(SAMPLE).unwrap());
        let retrained = TextTokenizer::train(texts.iter().copied(), 400).unwrap();
        assert_eq!(
            retrained.encode(SAMPLE).unwrap(),
            tok.encode(SAMPLE).unwrap()
        );
    }
}
