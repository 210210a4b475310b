//! Autoregressive generation with a KV cache: token-level with a per-token callback, and
//! text-level with streamed UTF-8 pieces.

use super::model::{KvCache, Logits, Projection, Transformer};
use super::sampling::{Sampler, SamplingConfig};
use crate::data::tokenizer::TextTokenizer;
use crate::error::{Error, Result};
use std::time::Instant;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most new tokens (generation also stops when the context is full).
    pub max_new_tokens: usize,
    /// Sampling rule and seed.
    pub sampling: SamplingConfig,
    /// Tokens that end generation (not emitted), e.g. the end-of-text id.
    pub stop_tokens: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            sampling: SamplingConfig::default(),
            stop_tokens: Vec::new(),
        }
    }
}

/// The outcome of one generation, with timings.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Prompt tokens fed (after cutting to the context).
    pub prompt_tokens: usize,
    /// Generated token ids (stop token excluded).
    pub tokens: Vec<u32>,
    /// Decoded text of `tokens` (empty for token-level generation).
    pub text: String,
    /// Seconds spent on the prompt (prefill).
    pub prompt_s: f64,
    /// Seconds spent generating (one forward step per token after the first).
    pub gen_s: f64,
}

impl Generation {
    /// Prefill throughput.
    pub fn prompt_tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_s.max(1e-9)
    }

    /// Decode throughput.
    pub fn gen_tokens_per_s(&self) -> f64 {
        self.tokens.len() as f64 / self.gen_s.max(1e-9)
    }
}

impl<P: Projection> Transformer<P> {
    /// Generates up to `options.max_new_tokens` tokens after `prompt`, calling `on_token`
    /// with each one; returning `false` from it stops early. A prompt longer than the
    /// context keeps its last tokens, leaving room for at least one new token.
    pub fn generate_tokens(
        &self,
        prompt: &[u32],
        options: &GenerateOptions,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<Generation> {
        if prompt.is_empty() {
            return Err(Error::Inference {
                message: "generation needs a prompt of at least one token".into(),
            });
        }
        let ctx = self.config().context_length;
        let prompt = &prompt[prompt.len().saturating_sub(ctx.saturating_sub(1).max(1))..];
        let mut cache: KvCache = self.new_cache();
        let mut sampler = Sampler::new(options.sampling.clone());
        let start = Instant::now();
        let mut logits = self.forward(&mut cache, prompt, Logits::Last)?;
        let prompt_s = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut tokens = Vec::new();
        while tokens.len() < options.max_new_tokens {
            let next = sampler.sample(&logits);
            if options.stop_tokens.contains(&next) {
                break;
            }
            tokens.push(next);
            if !on_token(next) || cache.len() >= cache.capacity() {
                break;
            }
            if tokens.len() < options.max_new_tokens {
                logits = self.forward(&mut cache, &[next], Logits::Last)?;
            }
        }
        Ok(Generation {
            prompt_tokens: prompt.len(),
            tokens,
            text: String::new(),
            prompt_s,
            gen_s: start.elapsed().as_secs_f64(),
        })
    }

    /// Generates text after `prompt`, streaming it through `on_text` in complete UTF-8
    /// pieces (a character split across byte-level tokens is held back until whole).
    /// The tokenizer's end-of-text token always stops generation.
    pub fn generate_text(
        &self,
        tokenizer: &TextTokenizer,
        prompt: &str,
        options: &GenerateOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        let mut ids = tokenizer.encode(prompt)?;
        if ids.is_empty() {
            // An empty prompt starts a new document.
            ids.push(tokenizer.eos_id());
        }
        let mut options = options.clone();
        options.stop_tokens.push(tokenizer.eos_id());
        let mut stream = TextStream::default();
        let mut failure = None;
        let mut generation =
            self.generate_tokens(&ids, &options, |id| match stream.push(tokenizer, id) {
                Ok(piece) => {
                    if !piece.is_empty() {
                        on_text(&piece);
                    }
                    true
                }
                Err(e) => {
                    failure = Some(e);
                    false
                }
            })?;
        if let Some(e) = failure {
            return Err(e);
        }
        let rest = stream.finish(tokenizer)?;
        if !rest.is_empty() {
            on_text(&rest);
        }
        generation.text = tokenizer.decode(&generation.tokens)?;
        Ok(generation)
    }
}

/// Incremental detokenizer: emits only text that will not change when more tokens come.
#[derive(Debug, Default, Clone)]
pub struct TextStream {
    ids: Vec<u32>,
    emitted: usize,
}

impl TextStream {
    /// Adds a token and returns the newly completed text (possibly empty).
    pub fn push(&mut self, tokenizer: &TextTokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tokenizer.decode(&self.ids)?;
        // A trailing U+FFFD is most likely a character whose remaining bytes are still to
        // come; hold it back.
        let stable = text.trim_end_matches('\u{FFFD}');
        if stable.len() <= self.emitted || !stable.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let piece = stable[self.emitted..].to_string();
        self.emitted = stable.len();
        Ok(piece)
    }

    /// Whatever is left, replacement characters included.
    pub fn finish(&mut self, tokenizer: &TextTokenizer) -> Result<String> {
        let text = tokenizer.decode(&self.ids)?;
        let piece = text.get(self.emitted..).unwrap_or_default().to_string();
        self.emitted = text.len();
        Ok(piece)
    }
}
