//! Safetensors files of canonical named tensors, and the model directory layout.
//!
//! A **model directory** (what `genkidama train` / `run` write and `eval --model`, the
//! packed runtime and GGUF export read) holds:
//!
//! | file | content |
//! |---|---|
//! | `config.toml` | the [`ModelConfig`] |
//! | `model.safetensors` | latent f32 weights under canonical llama.cpp names, `[out, in]` matrices |
//! | `tokenizer.json` | the byte-level BPE (Hugging Face format) |
//!
//! The safetensors codec is written here (about 100 lines) rather than taken from burn's
//! store, because burn's names follow the module tree while every other consumer
//! (runtime, GGUF, DiLoCo) wants the canonical names.

use crate::config::ModelConfig;
use crate::data::TextTokenizer;
use crate::error::{Error, Result};
use crate::weights::{NamedTensor, WeightMap, validate_weights};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `config.toml` in a model directory.
pub const CONFIG_FILE: &str = "config.toml";
/// `model.safetensors` in a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// `tokenizer.json` in a model directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Largest safetensors header accepted (bounds the allocation for hostile files).
const MAX_HEADER: u64 = 64 << 20;

/// Encodes tensors (all f32) and string metadata as safetensors bytes.
pub fn encode_safetensors(weights: &WeightMap, metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(metadata));
    }
    let mut offset = 0usize;
    for (name, t) in weights {
        let end = offset + t.data.len() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).expect("json");
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for t in weights.values() {
        for v in &t.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Decodes safetensors bytes holding f32 tensors; `what` names the source in errors.
pub fn decode_safetensors(
    bytes: &[u8],
    what: &str,
) -> Result<(WeightMap, BTreeMap<String, String>)> {
    let bad = |m: String| Error::data(what, m);
    if bytes.len() < 8 {
        return Err(bad(format!(
            "{} bytes, too short for a header",
            bytes.len()
        )));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER || 8 + n > bytes.len() as u64 {
        return Err(bad(format!(
            "header length {n} exceeds the file ({} bytes)",
            bytes.len()
        )));
    }
    let data = &bytes[8 + n as usize..];
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n as usize])
            .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
    let mut weights = WeightMap::new();
    let mut metadata = BTreeMap::new();
    for (name, entry) in header {
        if name == "__metadata__" {
            if let Some(obj) = entry.as_object() {
                for (k, v) in obj {
                    metadata.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                }
            }
            continue;
        }
        let tensor_err = |m: &str| Error::Weights {
            name: name.clone(),
            message: format!("{what}: {m}"),
        };
        let dtype = entry.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
        if dtype != "F32" {
            return Err(tensor_err(&format!(
                "dtype `{dtype}`, only F32 is supported"
            )));
        }
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .ok_or_else(|| tensor_err("missing or invalid shape"))?;
        let offsets: [usize; 2] = entry
            .get("data_offsets")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .ok_or_else(|| tensor_err("missing or invalid data_offsets"))?;
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| tensor_err("shape overflows"))?;
        let [a, b] = offsets;
        if a > b || b > data.len() || b - a != count.saturating_mul(4) {
            return Err(tensor_err(&format!(
                "data_offsets [{a}, {b}] do not fit shape {shape:?} in {} data bytes",
                data.len()
            )));
        }
        let values = data[a..b]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        weights.insert(
            name,
            NamedTensor {
                shape,
                data: values,
            },
        );
    }
    Ok((weights, metadata))
}

/// Writes a safetensors file.
pub fn save_safetensors(
    path: &Path,
    weights: &WeightMap,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    write_atomic(path, &encode_safetensors(weights, metadata))
}

/// Reads a safetensors file of f32 tensors.
pub fn load_safetensors(path: &Path) -> Result<(WeightMap, BTreeMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_safetensors(&bytes, &path.display().to_string())
}

/// Writes through a temporary file and a rename, so a crash never leaves a torn file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// A loaded model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// Architecture.
    pub config: ModelConfig,
    /// Latent weights (validated against `config`).
    pub weights: WeightMap,
    /// Tokenizer.
    pub tokenizer: TextTokenizer,
}

impl ModelDir {
    /// Loads and validates `config.toml`, `model.safetensors` and `tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config = ModelConfig::from_toml(&text).map_err(|e| match e {
            Error::Config { field, message } => Error::Config {
                field,
                message: format!("{message} (in {})", config_path.display()),
            },
            other => other,
        })?;
        let (weights, _) = load_safetensors(&dir.join(WEIGHTS_FILE))?;
        validate_weights(&config, &weights)?;
        let tokenizer = TextTokenizer::load(&dir.join(TOKENIZER_FILE))?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::Config {
                field: "vocab_size".into(),
                message: format!(
                    "{} is smaller than the tokenizer's {} tokens",
                    config.vocab_size,
                    tokenizer.vocab_size()
                ),
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer,
        })
    }

    /// Writes a model directory (creating it).
    pub fn save(
        dir: &Path,
        config: &ModelConfig,
        weights: &WeightMap,
        tokenizer: &TextTokenizer,
    ) -> Result<()> {
        validate_weights(config, weights)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let toml = toml::to_string(config).expect("config serializes");
        write_atomic(&dir.join(CONFIG_FILE), toml.as_bytes())?;
        let meta = BTreeMap::from([("format".to_string(), "bitnet-model".to_string())]);
        save_safetensors(&dir.join(WEIGHTS_FILE), weights, &meta)?;
        tokenizer.save(&dir.join(TOKENIZER_FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map_strategy() -> impl Strategy<Value = WeightMap> {
        proptest::collection::btree_map(
            "[a-z]{1,6}(\\.[a-z0-9]{1,4}){0,2}",
            (1usize..4, 1usize..5).prop_flat_map(|(r, c)| {
                proptest::collection::vec(-1e6f32..1e6, r * c).prop_map(move |data| NamedTensor {
                    shape: vec![r, c],
                    data,
                })
            }),
            0..6,
        )
    }

    proptest! {
        #[test]
        fn safetensors_round_trip(map in map_strategy()) {
            let meta = BTreeMap::from([("k".to_string(), "v".to_string())]);
            let bytes = encode_safetensors(&map, &meta);
            let (back, m) = decode_safetensors(&bytes, "mem").unwrap();
            prop_assert_eq!(back, map);
            prop_assert_eq!(m, meta);
        }

        #[test]
        fn corrupted_files_error_instead_of_panicking(map in map_strategy(), cut in 0usize..400, flip in 0usize..400) {
            let mut bytes = encode_safetensors(&map, &BTreeMap::new());
            if !bytes.is_empty() {
                let i = flip % bytes.len();
                bytes[i] ^= 0x5A;
            }
            bytes.truncate(cut.min(bytes.len()));
            let _ = decode_safetensors(&bytes, "mem");
        }
    }

    #[test]
    fn wrong_dtype_names_the_tensor() {
        let header =
            br#"{"blk.0.attn_q.weight":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0, 0]);
        let err = decode_safetensors(&bytes, "x.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blk.0.attn_q.weight") && err.contains("BF16"),
            "{err}"
        );
    }
}
