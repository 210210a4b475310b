//! The data pipeline: corpus look-up, lenient reading, the held-out split, the byte-level
//! BPE tokenizer, the 38 / 28 / 33 language mix and memory-mapped token shards.
//!
//! [`prepare_dataset`] turns a corpus directory into a dataset directory:
//!
//! | file | content |
//! |---|---|
//! | `tokenizer.json` | the trained byte-level BPE |
//! | `train.bin`, `val.bin` | little-endian `u32` token ids (lines joined, each ending in `\n`) |
//! | `dataset.json` | [`DatasetInfo`]: token and byte counts per language, keep fractions, fingerprint |

pub mod shards;
pub mod text;
pub mod tokenizer;

pub use shards::{TokenStream, write_tokens};
pub use text::{CorpusLocation, LenientText, TextFile, decode_lenient, find_corpus, read_lenient};
pub use tokenizer::TextTokenizer;

use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The Genkidama language mix (en 38 %, ko 28 %, ja 33 %), as token shares.
pub const TARGET_MIX: &[(&str, f64)] = &[("en", 0.38), ("ko", 0.28), ("ja", 0.33)];

/// Token data for training: a training stream, a validation stream and the byte length
/// of every token id (for bits per byte).
#[derive(Debug, Clone)]
pub struct TokenData {
    /// Training tokens.
    pub train: TokenStream,
    /// Held-out validation tokens.
    pub val: TokenStream,
    /// UTF-8 bytes per token id.
    pub token_bytes: Arc<Vec<u32>>,
}

impl TokenData {
    /// Opens a dataset directory written by [`prepare_dataset`].
    pub fn open(dir: &Path) -> Result<Self> {
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"))?;
        Ok(Self {
            train: TokenStream::open(&dir.join("train.bin"))?,
            val: TokenStream::open(&dir.join("val.bin"))?,
            token_bytes: Arc::new(
                (0..tokenizer.vocab_size() as u32)
                    .map(|i| tokenizer.token_bytes(i))
                    .collect(),
            ),
        })
    }
}

/// Per-language counts in a prepared dataset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LanguageStats {
    /// Training tokens before mixing.
    pub train_tokens_available: u64,
    /// Fraction of lines kept to reach the target mix.
    pub keep_fraction: f64,
    /// Training tokens kept.
    pub train_tokens: u64,
    /// Validation tokens kept.
    pub val_tokens: u64,
    /// Validation bytes kept.
    pub val_bytes: u64,
}

/// What [`prepare_dataset`] wrote (`dataset.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Corpus directory it came from.
    pub corpus: String,
    /// Files and sizes it was built from (a change rebuilds the dataset).
    pub fingerprint: Vec<(String, u64)>,
    /// Text fingerprint of the corpus (`magnet_corpus::Manifest::fingerprint`): an edit
    /// that keeps every file's size still rebuilds the dataset.
    #[serde(default)]
    pub text_sha256: String,
    /// Tokenizer vocabulary size asked for.
    pub vocab_size: usize,
    /// Seed for the language-mix sampling.
    pub seed: u64,
    /// Invalid UTF-8 sequences replaced while reading, per file with any.
    pub replaced_utf8: BTreeMap<String, usize>,
    /// Per-language statistics.
    pub languages: BTreeMap<String, LanguageStats>,
    /// Total training tokens.
    pub train_tokens: u64,
    /// Total validation tokens.
    pub val_tokens: u64,
}

fn fingerprint(corpus: &Path) -> Result<Vec<(String, u64)>> {
    text::list_text_files(corpus)?
        .into_iter()
        .map(|f| {
            let size = std::fs::metadata(&f.path)
                .map_err(|e| Error::io(&f.path, e))?
                .len();
            let rel = f.path.strip_prefix(corpus).unwrap_or(&f.path);
            Ok((rel.display().to_string(), size))
        })
        .collect()
}

/// Builds (or reuses, when `dataset.json` matches) a dataset from a corpus directory.
///
/// Steps: read every `*.txt` leniently; hold out every 50th non-empty line; train the
/// tokenizer on the training lines; encode each line followed by `\n`; keep all lines of
/// the scarcest language and a seeded random share of the others' lines so that token
/// shares follow [`TARGET_MIX`] (languages not in it, `other`, are kept whole); write the
/// shards. `log` receives human-readable progress (replaced UTF-8 is reported there too).
pub fn prepare_dataset(
    corpus: &Path,
    out: &Path,
    vocab_size: usize,
    seed: u64,
    log: &mut dyn FnMut(&str),
) -> Result<DatasetInfo> {
    let print = fingerprint(corpus)?;
    if print.is_empty() {
        return Err(Error::data(
            corpus.display().to_string(),
            "no *.txt files in the corpus directory",
        ));
    }
    let text_sha256 = magnet_corpus::Manifest::of_dir(corpus)?.fingerprint();
    let info_path = out.join("dataset.json");
    if let Ok(text) = std::fs::read_to_string(&info_path)
        && let Ok(info) = serde_json::from_str::<DatasetInfo>(&text)
        && info.fingerprint == print
        && info.text_sha256 == text_sha256
        && info.vocab_size == vocab_size
        && info.seed == seed
        && ["tokenizer.json", "train.bin", "val.bin"]
            .iter()
            .all(|f| out.join(f).is_file())
    {
        log(&format!("reusing dataset in {}", out.display()));
        return Ok(info);
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let files = text::list_text_files(corpus)?;
    let mut replaced_utf8 = BTreeMap::new();
    let mut texts = Vec::new();
    for f in &files {
        let t = read_lenient(&f.path)?;
        if t.replaced > 0 {
            log(&format!(
                "warning: {}: {} invalid UTF-8 sequence(s) replaced (first at byte {})",
                f.path.display(),
                t.replaced,
                t.first_bad_offset.unwrap_or(0)
            ));
            replaced_utf8.insert(f.path.display().to_string(), t.replaced);
        }
        texts.push(t.text);
    }
    let splits: Vec<(Vec<&str>, Vec<&str>)> = texts.iter().map(|t| text::split_lines(t)).collect();
    log(&format!(
        "training a {vocab_size}-token byte-level BPE on {} files",
        files.len()
    ));
    let tokenizer = TextTokenizer::train(
        splits.iter().flat_map(|(train, _)| train.iter().copied()),
        vocab_size,
    )?;
    tokenizer.save(&out.join("tokenizer.json"))?;

    let encode_lines = |lines: &[&str]| -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<String> = lines.iter().map(|l| format!("{l}\n")).collect();
        let encs = tokenizer
            .inner
            .encode_batch_fast(inputs, false)
            .map_err(|e| Error::Tokenizer {
                what: "encoding the corpus".into(),
                source: e,
            })?;
        Ok(encs.into_iter().map(|e| e.get_ids().to_vec()).collect())
    };
    let mut encoded = Vec::new();
    let mut available: BTreeMap<String, u64> = BTreeMap::new();
    for (f, (train, val)) in files.iter().zip(&splits) {
        let train_ids = encode_lines(train)?;
        let val_ids = encode_lines(val)?;
        *available.entry(f.language.clone()).or_default() +=
            train_ids.iter().map(|l| l.len() as u64).sum::<u64>();
        encoded.push((f.language.clone(), train_ids, val_ids));
    }
    let keep = mix_fractions(&available);
    let mut rng = SplitMix64::new(seed);
    let (mut train_out, mut val_out) = (Vec::new(), Vec::new());
    let mut languages: BTreeMap<String, LanguageStats> = BTreeMap::new();
    for (lang, train_ids, val_ids) in &encoded {
        let k = keep.get(lang).copied().unwrap_or(1.0);
        let stats = languages.entry(lang.clone()).or_default();
        stats.train_tokens_available = available[lang];
        stats.keep_fraction = k;
        for line in train_ids {
            if rng.next_f64() < k {
                stats.train_tokens += line.len() as u64;
                train_out.extend_from_slice(line);
            }
        }
        for line in val_ids {
            if rng.next_f64() < k {
                stats.val_tokens += line.len() as u64;
                stats.val_bytes += tokenizer.count_bytes(line);
                val_out.extend_from_slice(line);
            }
        }
    }
    write_tokens(&out.join("train.bin"), &train_out)?;
    write_tokens(&out.join("val.bin"), &val_out)?;
    let info = DatasetInfo {
        corpus: corpus.display().to_string(),
        fingerprint: print,
        text_sha256,
        vocab_size,
        seed,
        replaced_utf8,
        languages,
        train_tokens: train_out.len() as u64,
        val_tokens: val_out.len() as u64,
    };
    let json = serde_json::to_string_pretty(&info).expect("plain data serializes");
    std::fs::write(&info_path, json).map_err(|e| Error::io(&info_path, e))?;
    log(&format!(
        "dataset: {} train / {} val tokens in {}",
        info.train_tokens,
        info.val_tokens,
        out.display()
    ));
    Ok(info)
}

/// Keep fractions per language so that kept token counts follow [`TARGET_MIX`] among the
/// languages present: the scarcest language (relative to its share) is kept whole.
pub fn mix_fractions(available: &BTreeMap<String, u64>) -> BTreeMap<String, f64> {
    let present: Vec<(&str, f64, f64)> = TARGET_MIX
        .iter()
        .filter_map(|(lang, share)| {
            available
                .get(*lang)
                .filter(|n| **n > 0)
                .map(|n| (*lang, *share, *n as f64))
        })
        .collect();
    let total = present
        .iter()
        .map(|(_, share, n)| n / share)
        .fold(f64::INFINITY, f64::min);
    present
        .into_iter()
        .map(|(lang, share, n)| {
            let k = total * share / n;
            // The scarcest language lands at 1 up to rounding: keep it exactly whole.
            (lang.to_string(), if k > 1.0 - 1e-9 { 1.0 } else { k })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    #[test]
    fn mix_keeps_the_scarcest_language_whole() {
        let available: BTreeMap<String, u64> =
            [("en", 1_100_000), ("ja", 470_000), ("ko", 420_000)]
                .into_iter()
                .map(|(l, n)| (l.to_string(), n))
                .collect();
        let keep = mix_fractions(&available);
        // Japanese is scarcest relative to its share, so it is kept whole.
        assert_eq!(keep["ja"], 1.0);
        assert!(keep["ko"] > 0.9);
        let kept: BTreeMap<&str, f64> = keep
            .iter()
            .map(|(l, k)| (l.as_str(), k * available[l] as f64))
            .collect();
        let sum: f64 = kept.values().sum();
        assert!((kept["en"] / sum - 0.38 / 0.99).abs() < 1e-9);
        assert!((kept["ja"] / sum - 0.33 / 0.99).abs() < 1e-9);
        // The README's estimate: about half of the English lines.
        assert!((keep["en"] - 0.5).abs() < 0.06, "{}", keep["en"]);
    }

    #[test]
    fn prepares_a_small_trilingual_dataset_and_reuses_it() {
        let corpus = tempfile::tempdir().unwrap();
        let lines = [
            (
                "en",
                "The installation guide explains how to partition disks and set up users.",
            ),
            (
                "ko",
                "설치 안내서는 디스크를 나누고 사용자를 설정하는 방법을 설명합니다.",
            ),
            (
                "ja",
                "インストールガイドではディスクの分割とユーザーの設定方法を説明します。",
            ),
        ];
        for (lang, line) in lines {
            std::fs::create_dir_all(corpus.path().join(lang)).unwrap();
            let body: String = (0..120).fold(String::new(), |mut s, i| {
                writeln!(s, "{line} {i}").unwrap();
                s
            });
            let mut bytes = body.into_bytes();
            if lang == "ko" {
                bytes.push(0xEA); // a file cut mid-character
            }
            std::fs::write(corpus.path().join(lang).join("a.txt"), bytes).unwrap();
        }
        let out = tempfile::tempdir().unwrap();
        let mut messages = Vec::new();
        let info = prepare_dataset(corpus.path(), out.path(), 300, 7, &mut |m| {
            messages.push(m.to_string());
        })
        .unwrap();
        assert!(
            messages.iter().any(|m| m.contains("invalid UTF-8")),
            "{messages:?}"
        );
        assert_eq!(info.replaced_utf8.len(), 1);
        assert_eq!(info.languages.len(), 3);
        assert!(info.val_tokens > 0 && info.train_tokens > 10 * info.val_tokens);
        let data = TokenData::open(out.path()).unwrap();
        assert_eq!(data.train.len() as u64, info.train_tokens);
        assert!(data.train.tokens().iter().all(|&t| (t as usize) < 300));
        let mut again = Vec::new();
        let info2 = prepare_dataset(corpus.path(), out.path(), 300, 7, &mut |m| {
            again.push(m.to_string());
        })
        .unwrap();
        assert_eq!(info2, info);
        assert!(again[0].contains("reusing"));
    }
}
