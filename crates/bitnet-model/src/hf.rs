//! Hugging Face checkpoints: a folder with `config.json`, `tokenizer.json` and safetensors
//! shards, read into the same [`ModelConfig`] and canonical [`WeightMap`] as everything else.
//!
//! Accepted (transformers 5.x `models/bitnet` and `integrations/bitnet.py`; 1bitLLM's
//! `modeling_bitnet.py`):
//!
//! | `architectures` | graph | projections |
//! |---|---|---|
//! | `BitNetForCausalLM` with `quantization_config.quant_method = "bitnet"`, `linear_class = "bitlinear"` (the 2B4T deployment checkpoint) | ReLU² (`hidden_act`), SubLN, GQA | packed 2-bit `uint8` `[out/4, in]` + `weight_scale`: `W = code / weight_scale` (transformers' `BitLinear` divides its output by `weight_scale`) |
//! | `BitNetForCausalLM`, `linear_class = "autobitlinear"`, `quantization_mode = "online"` (the `-bf16` master weights) | same | latent BF16 / F16 / F32, absmean-ternarized per tensor |
//! | `BitNetForCausalLM` without `quantization_config` | same | transformers runs plain `nn.Linear`: imported as [`WeightKind::FullPrecision`] |
//! | `BitnetForCausalLM` (1bitLLM / HF1BitLLM; LLaMA-style, `inner_attn_ln` / `ffn_layernorm`) | SiLU by default | latent, ternarized (the model's own BitLinear) |
//!
//! Names map to ours: `model.embed_tokens` → `token_embd`, `model.layers.N.input_layernorm`
//! → `blk.N.attn_norm`, `self_attn.{q,k,v,o}_proj` → `attn_{q,k,v,output}`,
//! `self_attn.attn_sub_norm` (or `inner_attn_ln`) → `attn_sub_norm`,
//! `post_attention_layernorm` → `ffn_norm`, `mlp.{gate,up,down}_proj` → `ffn_{gate,up,down}`,
//! `mlp.ffn_sub_norm` (or `ffn_layernorm`) → `ffn_sub_norm`, `model.norm` → `output_norm`,
//! `lm_head` → `output` (untied only). HF's RoPE (`rotate_half` on unpermuted q/k) is the
//! NEOX rotation our runtime uses, so no permutation is needed.
//!
//! Every safetensors file is memory-mapped and parsed by the `safetensors` crate, which
//! checks the header length (≤ 100 MB), offsets and dtype sizes before any tensor is read;
//! each tensor's shape is checked against the config before it is converted.

use crate::config::{Activation, ModelConfig, WeightKind};
use crate::data::TextTokenizer;
use crate::error::{Error, Result};
use crate::export::import::{MAX_CONTEXT, latent_from_ternary};
use crate::weights::{NamedTensor, WeightMap, validate_weights};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Largest `config.json` / `tokenizer_config.json` / index read (they are a few KB).
const MAX_JSON: u64 = 16 << 20;

/// How the checkpoint stores its projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfWeights {
    /// Packed 2-bit codes with `weight_scale` (`W = code / weight_scale`).
    Packed,
    /// Latent weights that BitLinear ternarizes per tensor.
    Latent,
    /// Plain full-precision linear layers.
    FullPrecision,
}

/// A Hugging Face checkpoint read into our types.
#[derive(Debug, Clone)]
pub struct HfModel {
    /// The architecture (`architectures[0]` mapped).
    pub config: ModelConfig,
    /// Canonical weights.
    pub weights: WeightMap,
    /// `tokenizer.json`, when present.
    pub tokenizer: Option<TextTokenizer>,
    /// `bos_token_id` of config.json.
    pub bos_id: Option<u32>,
    /// `eos_token_id` of config.json (the first, when it is a list).
    pub eos_id: Option<u32>,
    /// Whether text starts with BOS (`add_bos_token` of tokenizer_config.json, else whether
    /// tokenizer.json's post-processor inserts the BOS token).
    pub add_bos: bool,
    /// How the projections were stored.
    pub stored: HfWeights,
}

/// Whether `path` looks like a Hugging Face folder (has `config.json`).
pub fn is_hf_folder(path: &Path) -> bool {
    path.join("config.json").is_file()
}

fn fail(dir: &Path, message: impl Into<String>) -> Error {
    Error::Import {
        path: dir.display().to_string(),
        message: message.into(),
    }
}

fn read_json(path: &Path) -> Result<Json> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > MAX_JSON {
        return Err(Error::data(
            path.display().to_string(),
            format!("{len} bytes, more than the {MAX_JSON} accepted for a JSON file"),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        what: path.display().to_string(),
        source,
    })
}

fn usize_field(cfg: &Json, dir: &Path, key: &str, default: Option<usize>) -> Result<usize> {
    match cfg.get(key) {
        Some(v) => v
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| fail(dir, format!("config.json `{key}` = {v} is not a count"))),
        None => default.ok_or_else(|| fail(dir, format!("config.json has no `{key}`"))),
    }
}

fn f64_field(cfg: &Json, key: &str) -> Option<f64> {
    cfg.get(key).and_then(Json::as_f64)
}

fn first_id(v: Option<&Json>) -> Option<u32> {
    match v? {
        Json::Number(n) => n.as_u64().and_then(|x| u32::try_from(x).ok()),
        Json::Array(a) => first_id(a.first()),
        _ => None,
    }
}

/// Reads `config.json` into a [`ModelConfig`] and the storage kind.
pub fn read_config(dir: &Path) -> Result<(ModelConfig, HfWeights, Json)> {
    let cfg = read_json(&dir.join("config.json"))?;
    let arch = cfg
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    let modern = match arch.as_str() {
        "BitNetForCausalLM" => true,
        "BitnetForCausalLM" => false,
        other => {
            return Err(fail(
                dir,
                format!(
                    "config.json architectures[0] = `{other}`; supported: BitNetForCausalLM, BitnetForCausalLM"
                ),
            ));
        }
    };
    let hidden = usize_field(&cfg, dir, "hidden_size", None)?;
    let n_heads = usize_field(&cfg, dir, "num_attention_heads", None)?;
    let context_length = usize_field(&cfg, dir, "max_position_embeddings", Some(2048))?;
    if context_length > MAX_CONTEXT {
        return Err(fail(
            dir,
            format!(
                "max_position_embeddings = {context_length} exceeds the supported {MAX_CONTEXT}"
            ),
        ));
    }
    let act = cfg
        .get("hidden_act")
        .and_then(Json::as_str)
        .unwrap_or(if modern { "relu2" } else { "silu" });
    let activation = match act {
        "silu" | "swish" => Activation::Silu,
        "relu2" | "relu_squared" => Activation::ReluSquared,
        other => {
            return Err(fail(
                dir,
                format!("hidden_act `{other}` is not silu or relu2"),
            ));
        }
    };
    let rope_theta = f64_field(&cfg, "rope_theta")
        .or_else(|| {
            cfg.get("rope_parameters")
                .and_then(|p| f64_field(p, "rope_theta"))
        })
        .unwrap_or(if modern { 500_000.0 } else { 10_000.0 });
    let rope_type = cfg
        .get("rope_parameters")
        .and_then(|p| p.get("rope_type"))
        .and_then(Json::as_str);
    let scaled = cfg.get("rope_scaling").is_some_and(|s| !s.is_null());
    if scaled || rope_type.is_some_and(|t| t != "default") {
        return Err(fail(
            dir,
            "RoPE scaling (rope_scaling / rope_type) is not supported",
        ));
    }
    if cfg.get("attention_bias").and_then(Json::as_bool) == Some(true) {
        return Err(fail(dir, "attention_bias = true: biases are not supported"));
    }
    let stored = match cfg.get("quantization_config") {
        Some(q) if !q.is_null() => {
            let s = |k: &str| q.get(k).and_then(Json::as_str).unwrap_or_default();
            if s("quant_method") != "bitnet" {
                return Err(fail(
                    dir,
                    format!(
                        "quantization_config.quant_method `{}` is not bitnet",
                        s("quant_method")
                    ),
                ));
            }
            if q.get("use_rms_norm").and_then(Json::as_bool) == Some(true) {
                return Err(fail(
                    dir,
                    "quantization_config.use_rms_norm = true (an RMSNorm inside every BitLinear) is not supported",
                ));
            }
            match (s("linear_class"), s("quantization_mode")) {
                ("bitlinear" | "", _) => HfWeights::Packed,
                ("autobitlinear", "online") => HfWeights::Latent,
                (class, mode) => {
                    return Err(fail(
                        dir,
                        format!(
                            "quantization_config linear_class `{class}` / quantization_mode `{mode}` is not supported"
                        ),
                    ));
                }
            }
        }
        _ if modern => HfWeights::FullPrecision,
        _ => HfWeights::Latent,
    };
    let config = ModelConfig {
        vocab_size: usize_field(&cfg, dir, "vocab_size", None)?,
        hidden_size: hidden,
        n_layers: usize_field(&cfg, dir, "num_hidden_layers", None)?,
        n_heads,
        n_kv_heads: usize_field(&cfg, dir, "num_key_value_heads", Some(n_heads))?,
        ffn_hidden_size: usize_field(&cfg, dir, "intermediate_size", None)?,
        context_length,
        rope_theta: rope_theta as f32,
        norm_eps: f64_field(&cfg, "rms_norm_eps").unwrap_or(1e-6) as f32,
        activation,
        tied_embeddings: cfg
            .get("tie_word_embeddings")
            .and_then(Json::as_bool)
            .unwrap_or(false),
        weights: if stored == HfWeights::FullPrecision {
            WeightKind::FullPrecision
        } else {
            WeightKind::Ternary
        },
    };
    config.validate()?;
    if let Some(head_dim) = cfg.get("head_dim").and_then(Json::as_u64)
        && head_dim as usize != config.head_dim()
    {
        return Err(fail(
            dir,
            format!(
                "head_dim = {head_dim}, but hidden_size / num_attention_heads = {}",
                config.head_dim()
            ),
        ));
    }
    Ok((config, stored, cfg))
}

/// The safetensors files of a checkpoint: the shards named by
/// `model.safetensors.index.json`, else `model.safetensors`.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let json = read_json(&index)?;
        let map = json
            .get("weight_map")
            .and_then(Json::as_object)
            .ok_or_else(|| fail(dir, "model.safetensors.index.json has no weight_map"))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for f in map.values() {
            let name = f
                .as_str()
                .filter(|n| !n.contains('/') && !n.contains('\\') && !n.starts_with('.'))
                .ok_or_else(|| {
                    fail(
                        dir,
                        format!("weight_map entry {f} is not a file name in the folder"),
                    )
                })?;
            let p = dir.join(name);
            if !files.contains(&p) {
                files.push(p);
            }
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(fail(
        dir,
        "no model.safetensors or model.safetensors.index.json",
    ))
}

/// Memory maps of the shards.
struct Shards {
    maps: Vec<(PathBuf, memmap2::Mmap)>,
}

impl Shards {
    fn open(files: Vec<PathBuf>) -> Result<Self> {
        let mut maps = Vec::new();
        for path in files {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: read-only map; as with any map the file must not change while open.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            maps.push((path, map));
        }
        Ok(Self { maps })
    }

    fn parsed(&self) -> Result<Vec<(&Path, SafeTensors<'_>)>> {
        self.maps
            .iter()
            .map(|(p, m)| {
                SafeTensors::deserialize(m)
                    .map(|s| (p.as_path(), s))
                    .map_err(|source| Error::Safetensors {
                        path: p.display().to_string(),
                        source,
                    })
            })
            .collect()
    }
}

/// Converts a float tensor of any safetensors float dtype to f32.
pub fn tensor_to_f32(view: &safetensors::tensor::TensorView<'_>, name: &str) -> Result<Vec<f32>> {
    let d = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::F64 => d
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        other => {
            return Err(Error::Weights {
                name: name.into(),
                message: format!("dtype {other:?} is not a float type"),
            });
        }
    })
}

/// The HF names that may hold canonical tensor `ours` (first match wins).
fn hf_names(ours: &str) -> Vec<String> {
    match ours {
        "token_embd.weight" => return vec!["model.embed_tokens.weight".into()],
        "output_norm.weight" => return vec!["model.norm.weight".into()],
        "output.weight" => return vec!["lm_head.weight".into()],
        _ => {}
    }
    let Some(rest) = ours.strip_prefix("blk.") else {
        return vec![];
    };
    let Some((layer, tail)) = rest.split_once('.') else {
        return vec![];
    };
    let p = format!("model.layers.{layer}.");
    let names: &[&str] = match tail {
        "attn_norm.weight" => &["input_layernorm.weight"],
        "attn_q.weight" => &["self_attn.q_proj.weight"],
        "attn_k.weight" => &["self_attn.k_proj.weight"],
        "attn_v.weight" => &["self_attn.v_proj.weight"],
        "attn_output.weight" => &["self_attn.o_proj.weight"],
        "attn_sub_norm.weight" => &[
            "self_attn.attn_sub_norm.weight",
            "self_attn.inner_attn_ln.weight",
        ],
        "ffn_norm.weight" => &["post_attention_layernorm.weight"],
        "ffn_gate.weight" => &["mlp.gate_proj.weight"],
        "ffn_up.weight" => &["mlp.up_proj.weight"],
        "ffn_down.weight" => &["mlp.down_proj.weight"],
        "ffn_sub_norm.weight" => &["mlp.ffn_sub_norm.weight", "mlp.ffn_layernorm.weight"],
        _ => &[],
    };
    names.iter().map(|n| format!("{p}{n}")).collect()
}

/// Unpacks transformers' 2-bit packing: value `i` (bits `2i..2i+2`) of packed row `r` is
/// output row `i * packed_rows + r`; code `c` stands for `c - 1`.
pub fn unpack_2bit(
    packed: &[u8],
    packed_rows: usize,
    cols: usize,
) -> std::result::Result<Vec<i8>, String> {
    let rows = packed_rows * 4;
    let mut codes = vec![0i8; rows * cols];
    for r in 0..packed_rows {
        for c in 0..cols {
            let byte = packed[r * cols + c];
            for i in 0..4 {
                let q = (byte >> (2 * i)) & 3;
                if q == 3 {
                    return Err(format!(
                        "packed row {r}, column {c} holds the invalid code 3"
                    ));
                }
                codes[(i * packed_rows + r) * cols + c] = q as i8 - 1;
            }
        }
    }
    Ok(codes)
}

/// Loads a Hugging Face folder.
pub fn load_hf(dir: &Path) -> Result<HfModel> {
    let (config, stored, cfg) = read_config(dir)?;
    let shards = Shards::open(shard_files(dir)?)?;
    let parsed = shards.parsed()?;
    let find = |name: &str| {
        parsed
            .iter()
            .find_map(|(p, st)| st.tensor(name).ok().map(|v| (*p, v)))
    };
    let mut weights = WeightMap::new();
    for (ours, shape) in config.tensor_shapes() {
        let candidates = hf_names(&ours);
        let Some((hf_name, (_, view))) = candidates
            .iter()
            .find_map(|n| find(n).map(|v| (n.clone(), v)))
        else {
            return Err(fail(
                dir,
                format!("tensor {} (for {ours}) is missing", candidates.join(" / ")),
            ));
        };
        let is_proj = ModelConfig::is_ternary_tensor(&ours);
        let data = if is_proj && stored == HfWeights::Packed {
            if view.dtype() != Dtype::U8
                || view.shape() != [shape[0] / 4, shape[1]]
                || shape[0] % 4 != 0
            {
                return Err(Error::Weights {
                    name: hf_name,
                    message: format!(
                        "{:?} {:?}; a packed checkpoint stores U8 [{} / 4, {}]",
                        view.dtype(),
                        view.shape(),
                        shape[0],
                        shape[1]
                    ),
                });
            }
            let scale_name = hf_name.replace(".weight", ".weight_scale");
            let (_, scale_view) =
                find(&scale_name).ok_or_else(|| fail(dir, format!("{scale_name} is missing")))?;
            let scale = tensor_to_f32(&scale_view, &scale_name)?;
            let [ws] = scale.as_slice() else {
                return Err(Error::Weights {
                    name: scale_name,
                    message: format!("{} values, expected one", scale.len()),
                });
            };
            if !(ws.is_finite() && *ws > 0.0) {
                return Err(Error::Weights {
                    name: scale_name,
                    message: format!("weight_scale {ws} must be positive"),
                });
            }
            let codes =
                unpack_2bit(view.data(), shape[0] / 4, shape[1]).map_err(|m| Error::Weights {
                    name: hf_name.clone(),
                    message: m,
                })?;
            latent_from_ternary(&codes, 1.0 / ws)
        } else {
            if view.shape() != shape.as_slice() {
                return Err(Error::Weights {
                    name: hf_name,
                    message: format!("shape {:?}, config.json implies {shape:?}", view.shape()),
                });
            }
            tensor_to_f32(&view, &hf_name)?
        };
        weights.insert(ours, NamedTensor { shape, data });
    }
    validate_weights(&config, &weights)?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = if tokenizer_path.is_file() {
        Some(TextTokenizer::load(&tokenizer_path)?)
    } else {
        None
    };
    let bos_id = first_id(cfg.get("bos_token_id"));
    let add_bos = add_bos(dir, tokenizer.as_ref(), bos_id)?;
    Ok(HfModel {
        config,
        weights,
        tokenizer,
        bos_id,
        eos_id: first_id(cfg.get("eos_token_id")),
        add_bos,
        stored,
    })
}

/// `add_bos_token` of tokenizer_config.json, else whether tokenizer.json's post-processor
/// inserts the BOS token (Llama 3's `TemplateProcessing`).
fn add_bos(dir: &Path, tokenizer: Option<&TextTokenizer>, bos: Option<u32>) -> Result<bool> {
    let tc = dir.join("tokenizer_config.json");
    if tc.is_file()
        && let Some(b) = read_json(&tc)?.get("add_bos_token").and_then(Json::as_bool)
    {
        return Ok(b);
    }
    let (Some(t), Some(bos)) = (tokenizer, bos) else {
        return Ok(false);
    };
    let with = t
        .inner
        .encode_fast("a", true)
        .map_err(|source| Error::Tokenizer {
            what: "probing the post-processor".into(),
            source,
        })?;
    Ok(with.get_ids().first() == Some(&bos))
}

/// Names and dtypes of every tensor in a folder's shards (for diagnostics and tests).
pub fn list_tensors(dir: &Path) -> Result<BTreeMap<String, (String, Vec<usize>)>> {
    let shards = Shards::open(shard_files(dir)?)?;
    let mut out = BTreeMap::new();
    for (_, st) in shards.parsed()? {
        for (name, view) in st.iter() {
            out.insert(
                name.to_string(),
                (format!("{:?}", view.dtype()), view.shape().to_vec()),
            );
        }
    }
    Ok(out)
}
