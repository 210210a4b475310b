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
//! Reading goes through the `safetensors` crate (memory-mapped, every float dtype); the
//! names are ours rather than burn's module-tree names because every consumer (runtime,
//! GGUF, DiLoCo) wants the canonical ones. [`ModelDir::open`] also opens GGUF files and
//! Hugging Face folders into the same type.

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

/// Decodes safetensors bytes (any float dtype: F32, F16, BF16, F64, converted to f32) with
/// the `safetensors` crate, which validates the header (length ≤ 100 MB, offsets, dtype
/// sizes) before any tensor is touched; `what` names the source in errors.
pub fn decode_safetensors(
    bytes: &[u8],
    what: &str,
) -> Result<(WeightMap, BTreeMap<String, String>)> {
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|source| Error::Safetensors {
            path: what.to_string(),
            source,
        })?;
    let metadata: BTreeMap<String, String> = meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|source| Error::Safetensors {
        path: what.to_string(),
        source,
    })?;
    let mut weights = WeightMap::new();
    for (name, view) in st.iter() {
        let data = crate::hf::tensor_to_f32(&view, name).map_err(|e| match e {
            Error::Weights { name, message } => Error::Weights {
                name,
                message: format!("{what}: {message}"),
            },
            other => other,
        })?;
        weights.insert(
            name.to_string(),
            NamedTensor {
                shape: view.shape().to_vec(),
                data,
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

/// Reads a safetensors file of float tensors (memory-mapped, converted to f32).
pub fn load_safetensors(path: &Path) -> Result<(WeightMap, BTreeMap<String, String>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map; as with any map the file must not change while open.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    decode_safetensors(&map, &path.display().to_string())
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
    /// Token prepended to every text when [`ModelDir::add_bos`] (GGUF
    /// `tokenizer.ggml.bos_token_id`, HF `bos_token_id`).
    pub bos_id: Option<u32>,
    /// End-of-text token (generation stops there).
    pub eos_id: u32,
    /// Whether texts start with BOS (GGUF `tokenizer.ggml.add_bos_token`, HF
    /// `add_bos_token`; our own directories: no).
    pub add_bos: bool,
    /// What was loaded.
    pub source: ModelSource,
}

/// The kind of model a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSource {
    /// Our model directory (`config.toml`, `model.safetensors`, `tokenizer.json`).
    Directory,
    /// A GGUF file.
    Gguf,
    /// A Hugging Face folder (`config.json`, safetensors shards, `tokenizer.json`).
    HuggingFace,
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
        let eos_id = tokenizer.eos_id();
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer,
            bos_id: None,
            eos_id,
            add_bos: false,
            source: ModelSource::Directory,
        })
    }

    /// Opens any model path: our model directory, a `.gguf` file (any producer, see
    /// [`crate::export::import`]) or a Hugging Face folder (see [`crate::hf`]).
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &crate::export::ImportOptions::default())
    }

    /// [`ModelDir::open`] with the choices a GGUF file cannot make itself (the I2_S code
    /// layout); they do not apply to the other kinds of path.
    pub fn open_with(path: &Path, options: &crate::export::ImportOptions) -> Result<Self> {
        if path.is_file() {
            let imported = crate::export::import_gguf_with(path, options)?;
            let vocab = imported.vocab.ok_or_else(|| Error::Import {
                path: path.display().to_string(),
                message: "the file has no tokenizer (tokenizer.ggml.model)".into(),
            })?;
            let tokenizer = vocab.to_text_tokenizer()?;
            return Ok(Self {
                dir: path.to_path_buf(),
                config: imported.config,
                weights: imported.weights,
                tokenizer,
                bos_id: vocab.bos_id,
                eos_id: vocab.eos_id,
                add_bos: vocab.add_bos && vocab.bos_id.is_some(),
                source: ModelSource::Gguf,
            });
        }
        if path.join(CONFIG_FILE).is_file() {
            return Self::load(path);
        }
        if crate::hf::is_hf_folder(path) {
            let hf = crate::hf::load_hf(path)?;
            let tokenizer = hf.tokenizer.ok_or_else(|| Error::Import {
                path: path.display().to_string(),
                message: "the folder has no tokenizer.json".into(),
            })?;
            let eos_id = hf.eos_id.unwrap_or_else(|| tokenizer.eos_id());
            return Ok(Self {
                dir: path.to_path_buf(),
                config: hf.config,
                weights: hf.weights,
                tokenizer,
                bos_id: hf.bos_id,
                eos_id,
                add_bos: hf.add_bos && hf.bos_id.is_some(),
                source: ModelSource::HuggingFace,
            });
        }
        Err(Error::Import {
            path: path.display().to_string(),
            message: format!(
                "not a model: expected a .gguf file, a directory with {CONFIG_FILE} or a Hugging \
                 Face folder with config.json"
            ),
        })
    }

    /// Token ids of `text` as the model expects them: BOS first when [`ModelDir::add_bos`].
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if self.add_bos
            && let Some(b) = self.bos_id
        {
            ids.push(b);
        }
        ids.extend(self.tokenizer.encode(text)?);
        Ok(ids)
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
    fn bf16_tensors_read_and_integer_ones_are_named() {
        let header =
            br#"{"blk.0.attn_norm.weight":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&half::bf16::from_f32(1.5).to_le_bytes());
        let (w, _) = decode_safetensors(&bytes, "x.safetensors").unwrap();
        assert_eq!(w["blk.0.attn_norm.weight"].data, [1.5]);
        let header = br#"{"blk.0.attn_q.weight":{"dtype":"I16","shape":[1],"data_offsets":[0,2]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0, 0]);
        let err = decode_safetensors(&bytes, "x.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("blk.0.attn_q.weight") && err.contains("I16"),
            "{err}"
        );
    }
}
