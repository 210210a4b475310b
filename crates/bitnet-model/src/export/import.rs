//! GGUF import from any producer: our exports, llama.cpp's `convert_hf_to_gguf.py` and
//! `llama-quantize` (`bitnet`), bitnet.cpp's converter and quantizer (`bitnet-b1.58`,
//! `bitnet-25`), back into a [`ModelConfig`], latent weights and the tokenizer.
//!
//! What is read, and from where (llama.cpp `src/llama-model.cpp` / `llama-arch.cpp`,
//! bitnet.cpp `utils/convert-hf-to-gguf-bitnet.py`):
//!
//! - Architecture: `bitnet` is computed with a SiLU-gated FFN (llama.cpp's graph ignores
//!   `bitnet.hidden_activation`), `bitnet-b1.58` / `bitnet-25` with ReLU² (bitnet.cpp's
//!   `build_bitnet_158`).
//! - Hyper-parameters `<arch>.context_length`, `embedding_length`, `block_count`,
//!   `feed_forward_length`, `attention.head_count`, `attention.head_count_kv` (default: no
//!   GQA), `rope.freq_base` (default 10000), `attention.layer_norm_rms_epsilon`; checked
//!   when present: `rope.dimension_count` and `attention.key_length` / `value_length` must
//!   be the head width (no partial rotary), `rope.scaling.type` none or linear with factor 1,
//!   `vocab_size` the embedding's row count.
//! - Projections in TQ1_0, TQ2_0 or I2_S (per-tensor ternary, imported exactly; I2_S in the
//!   code layout [`ImportOptions::i2s_layout`] names, x86 by default), or in a
//!   float / Q8_0 type: values that are already `{-s, 0, +s}` (converters bake the absmean
//!   scale in) are imported exactly as ternary, other values are taken as latent weights
//!   (BitLinear ternarizes them as in training). llama.cpp's optional `blk.N.*.scale`
//!   tensors multiply the projection.
//! - Embedding and untied `output.weight` in any type gguf-io dequantizes (F32, F16, BF16,
//!   Q8_0, Q4_0/1, Q5_0/1, Q4_K, Q5_K, Q6_K).
//! - The tokenizer as [`GgufVocab`] (`tokenizer.ggml.model` / `pre`, BOS / EOS,
//!   `add_bos_token`).
//!
//! Hostile headers are refused before anything is sized from them: the layer count must
//! fit the tensor count, the context length is at most [`MAX_CONTEXT`], and every tensor's
//! shape must equal what the metadata implies before its data is read.

use super::tokenizer::{GgufVocab, PreTokenizer, TOKEN_TYPE_NORMAL};
use crate::config::{Activation, ModelConfig, WeightKind};
use crate::error::{Error, Result, VocabError};
use crate::runtime::ops::QUANT_EPS;
use crate::weights::{NamedTensor, WeightMap, validate_weights};
use gguf_io::{GgmlType, GgufFile, Metadata};
use std::path::Path;
use ternary_core::format::i2_s::{self, I2sLayout};
use ternary_core::{Format, PackedMatrix};

/// Choices the file cannot make for the importer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportOptions {
    /// The code layout of I2_S projections. A GGUF file does not record which bitnet.cpp
    /// build wrote it, and the layouts are permutations of one another (a file read in the
    /// wrong layout imports as a different valid ternary matrix), so this is the user's
    /// choice: x86 (the default) for files from bitnet.cpp's default x86 build and its
    /// published models.
    pub i2s_layout: I2sLayout,
}

/// Longest context accepted from a file (a KV cache is sized from it).
pub const MAX_CONTEXT: usize = 1 << 20;

/// A model read from GGUF.
#[derive(Debug, Clone)]
pub struct ImportedModel {
    /// `general.architecture`.
    pub architecture: String,
    /// The architecture, rebuilt from the `<arch>.*` keys and the tensor list.
    pub config: ModelConfig,
    /// Latent weights whose per-tensor absmean ternarization gives back exactly the
    /// file's ternary values (see [`latent_from_ternary`]).
    pub weights: WeightMap,
    /// The embedded tokenizer, when the file has one.
    pub vocab: Option<GgufVocab>,
    /// Projections whose values were not ternary and were imported as latent weights.
    pub latent_projections: Vec<String>,
}

impl ImportedModel {
    /// The embedded tokenizer as `tokenizer.json` text.
    pub fn tokenizer_json(&self) -> Option<std::result::Result<String, VocabError>> {
        self.vocab.as_ref().map(GgufVocab::to_tokenizer_json)
    }
}

/// Latent weights for ternary codes with one scale `s`: `code * c` with `c` chosen so that
/// absmean ternarization (`scale = mean|W| + 1e-5`, codes `round(W / scale)`) returns the
/// same codes and exactly `s` again. (Storing `code * s` would not: its absmean is `s`
/// times the fraction of non-zero codes.)
pub fn latent_from_ternary(codes: &[i8], s: f32) -> Vec<f32> {
    let nonzero = codes.iter().filter(|&&c| c != 0).count();
    if nonzero == 0 {
        return vec![0.0; codes.len()];
    }
    let p = nonzero as f64 / codes.len() as f64;
    let c = ((f64::from(s) - f64::from(QUANT_EPS)) / p).max(0.0) as f32;
    codes.iter().map(|&q| f32::from(q) * c).collect()
}

struct Keys<'a> {
    m: &'a Metadata,
    arch: &'a str,
    path: &'a Path,
}

impl Keys<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }
    fn gguf(&self, source: gguf_io::Error) -> Error {
        Error::Gguf {
            path: self.path.display().to_string(),
            source,
        }
    }
    fn uint(&self, k: &str) -> Result<usize> {
        let key = self.key(k);
        let v = self.m.get_uint(&key).map_err(|e| self.gguf(e))?;
        usize::try_from(v).map_err(|_| self.fail(format!("{key} = {v} does not fit in memory")))
    }
    fn opt_uint(&self, k: &str) -> Result<Option<usize>> {
        if self.m.contains_key(&self.key(k)) {
            self.uint(k).map(Some)
        } else {
            Ok(None)
        }
    }
    fn opt_float(&self, k: &str) -> Result<Option<f64>> {
        let key = self.key(k);
        if self.m.contains_key(&key) {
            self.m.get_float(&key).map(Some).map_err(|e| self.gguf(e))
        } else {
            Ok(None)
        }
    }
    fn fail(&self, message: String) -> Error {
        Error::Import {
            path: self.path.display().to_string(),
            message,
        }
    }

    fn vocab(&self, source: VocabError) -> Error {
        Error::Vocabulary {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn kernel(&self, name: &str, source: ternary_core::Error) -> Error {
        Error::Kernel {
            what: format!("GGUF import of `{}`: tensor {name}", self.path.display()),
            source,
        }
    }
}

/// Reads a `bitnet` / `bitnet-b1.58` / `bitnet-25` GGUF file from any producer (see the
/// module docs for what is accepted).
pub fn import_gguf(path: &Path) -> Result<ImportedModel> {
    import_gguf_with(path, &ImportOptions::default())
}

/// [`import_gguf`] with explicit [`ImportOptions`].
pub fn import_gguf_with(path: &Path, options: &ImportOptions) -> Result<ImportedModel> {
    let gguf = |source| Error::Gguf {
        path: path.display().to_string(),
        source,
    };
    let file = GgufFile::open(path).map_err(gguf)?;
    let m = file.metadata();
    let (arch, config) = gguf_config(&file)?;
    let keys = Keys {
        m,
        arch: &arch,
        path,
    };
    let mut weights = WeightMap::new();
    let mut latent_projections = Vec::new();
    for (name, shape) in config.tensor_shapes() {
        let view = file.tensor(&name).map_err(gguf)?;
        let dims: Vec<usize> = view.dims().iter().rev().map(|&d| d as usize).collect();
        if dims != shape {
            return Err(keys.fail(format!(
                "tensor {name} has shape {dims:?}, the metadata implies {shape:?}"
            )));
        }
        let data = if ModelConfig::is_ternary_tensor(&name) {
            let extra = projection_scale(&file, &name, &keys)?;
            let (data, exact) = projection(&view, &name, &shape, extra, *options, &keys)?;
            if !exact {
                latent_projections.push(name.clone());
            }
            data
        } else {
            view.to_f32().map_err(gguf)?
        };
        weights.insert(name, NamedTensor { shape, data });
    }
    validate_weights(&config, &weights)?;
    let vocab = read_vocab(m, &keys)?;
    if let Some(v) = &vocab
        && v.tokens.len() > config.vocab_size
    {
        return Err(keys.fail(format!(
            "{} tokens but token_embd.weight has {} rows",
            v.tokens.len(),
            config.vocab_size
        )));
    }
    Ok(ImportedModel {
        architecture: arch,
        config,
        weights,
        vocab,
        latent_projections,
    })
}

/// The architecture (`general.architecture`) and the model config a `bitnet` /
/// `bitnet-b1.58` / `bitnet-25` GGUF file describes: the one reader of the hyper-parameters,
/// shared by [`import_gguf`] and the packed loader
/// ([`PackedModel::from_gguf`](crate::runtime::PackedModel::from_gguf)). Every count is
/// checked against what the file can hold before anything is sized from it.
pub fn gguf_config(file: &GgufFile) -> Result<(String, ModelConfig)> {
    let path = file.path();
    let m = file.metadata();
    let arch = m
        .get_str("general.architecture")
        .map_err(|source| Error::Gguf {
            path: path.display().to_string(),
            source,
        })?
        .to_string();
    let keys = Keys {
        m,
        arch: &arch,
        path,
    };
    let activation = match arch.as_str() {
        "bitnet" => Activation::Silu,
        "bitnet-b1.58" | "bitnet-25" => Activation::ReluSquared,
        other => {
            return Err(keys.fail(format!(
                "general.architecture `{other}` is not bitnet, bitnet-b1.58 or bitnet-25"
            )));
        }
    };
    let config = read_config(file, &keys, activation)?;
    Ok((arch, config))
}

fn read_config(file: &GgufFile, keys: &Keys<'_>, activation: Activation) -> Result<ModelConfig> {
    let embd = file
        .tensor_info("token_embd.weight")
        .ok_or_else(|| keys.fail("tensor token_embd.weight is missing".into()))?;
    if embd.dims().len() != 2 {
        return Err(keys.fail(format!("token_embd.weight has dims {:?}", embd.dims())));
    }
    let n_layers = keys.uint("block_count")?;
    // Eleven tensors per layer: a layer count the file cannot hold is refused before any
    // per-layer list is built from it.
    if n_layers.saturating_mul(11) > file.tensors().len() {
        return Err(keys.fail(format!(
            "{} = {n_layers} layers, but the file has only {} tensors",
            keys.key("block_count"),
            file.tensors().len()
        )));
    }
    let n_heads = keys.uint("attention.head_count")?;
    let context_length = keys.uint("context_length")?;
    if context_length > MAX_CONTEXT {
        return Err(keys.fail(format!(
            "{} = {context_length} exceeds the supported {MAX_CONTEXT}",
            keys.key("context_length")
        )));
    }
    let vocab_size = usize::try_from(embd.dims()[1])
        .map_err(|_| keys.fail("token_embd.weight is too large".into()))?;
    if let Some(v) = keys.opt_uint("vocab_size")?
        && v != vocab_size
    {
        return Err(keys.fail(format!(
            "{} = {v} but token_embd.weight has {vocab_size} rows",
            keys.key("vocab_size")
        )));
    }
    let config = ModelConfig {
        vocab_size,
        hidden_size: keys.uint("embedding_length")?,
        n_layers,
        n_heads,
        n_kv_heads: keys.opt_uint("attention.head_count_kv")?.unwrap_or(n_heads),
        ffn_hidden_size: keys.uint("feed_forward_length")?,
        context_length,
        rope_theta: keys.opt_float("rope.freq_base")?.unwrap_or(10_000.0) as f32,
        norm_eps: keys
            .m
            .get_float(&keys.key("attention.layer_norm_rms_epsilon"))
            .map_err(|e| keys.gguf(e))? as f32,
        activation,
        tied_embeddings: file.tensor_info("output.weight").is_none(),
        weights: WeightKind::Ternary,
    };
    config.validate()?;
    for k in [
        "rope.dimension_count",
        "attention.key_length",
        "attention.value_length",
    ] {
        if let Some(v) = keys.opt_uint(k)?
            && v != config.head_dim()
        {
            return Err(keys.fail(format!(
                "{} = {v}, but the head width is {} (partial or decoupled heads are not supported)",
                keys.key(k),
                config.head_dim()
            )));
        }
    }
    let scaling = keys.key("rope.scaling.type");
    if keys.m.contains_key(&scaling) {
        let ty = keys.m.get_str(&scaling).map_err(|e| keys.gguf(e))?;
        let factor = keys.opt_float("rope.scaling.factor")?.unwrap_or(1.0);
        if !(ty == "none" || (ty == "linear" && (factor - 1.0).abs() < 1e-9)) {
            return Err(keys.fail(format!(
                "{scaling} = `{ty}` with factor {factor}: RoPE scaling is not supported"
            )));
        }
    }
    Ok(config)
}

/// llama.cpp's optional per-projection `blk.N.<proj>.scale` (one value; the matmul output
/// is multiplied by it).
fn projection_scale(file: &GgufFile, name: &str, keys: &Keys<'_>) -> Result<f32> {
    let scale_name = name.replace(".weight", ".scale");
    if file.tensor_info(&scale_name).is_none() {
        return Ok(1.0);
    }
    let values = file
        .tensor(&scale_name)
        .and_then(|t| t.to_f32())
        .map_err(|e| keys.gguf(e))?;
    match values.as_slice() {
        [s] if s.is_finite() && *s >= 0.0 => Ok(*s),
        other => Err(keys.fail(format!(
            "tensor {scale_name} must hold one finite non-negative value, holds {other:?}"
        ))),
    }
}

/// One projection as latent weights; `true` when its ternary values were recovered exactly.
fn projection(
    view: &gguf_io::TensorView<'_>,
    name: &str,
    shape: &[usize],
    extra: f32,
    options: ImportOptions,
    keys: &Keys<'_>,
) -> Result<(Vec<f32>, bool)> {
    let (rows, cols) = (shape[0], shape[1]);
    let format = match view.ty() {
        GgmlType::TQ1_0 => Some(Format::Tq1_0),
        GgmlType::TQ2_0 => Some(Format::Tq2_0),
        GgmlType::I2_S => Some(Format::I2S),
        GgmlType::TL1 => {
            return Err(keys.fail(format!(
                "tensor {name} is bitnet.cpp's TL1, a kernel layout specific to one model \
                 shape; convert the model with --outtype i2_s instead"
            )));
        }
        _ => None,
    };
    let Some(format) = format else {
        let mut values = view.to_f32().map_err(|e| keys.gguf(e))?;
        if extra != 1.0 {
            for v in &mut values {
                *v *= extra;
            }
        }
        return Ok(match ternary_with_one_scale(&values) {
            Some((codes, s)) => (latent_from_ternary(&codes, s), true),
            None => (values, false),
        });
    };
    let mut bytes = std::borrow::Cow::Borrowed(view.data());
    if format == Format::I2S {
        let layout = options.i2s_layout;
        if layout != I2sLayout::X86 {
            // Everything below reads the x86 layout; a code 3 stays a code 3, so the check
            // after this still sees a damaged tensor.
            bytes = i2_s::to_x86_layout(&bytes, rows, cols, layout)
                .map_err(|e| keys.kernel(&format!("{name} ({} I2_S layout)", layout.name()), e))?
                .into();
        }
        check_i2s(&bytes, rows * cols, cols, name, keys)?;
    }
    let packed =
        PackedMatrix::from_bytes(format, rows, cols, &bytes).map_err(|e| keys.kernel(name, e))?;
    let codes = packed.unpack_codes();
    let values = packed.dequantize();
    let s = tensor_scale(&codes, &values).map_err(|m| keys.fail(format!("tensor {name}: {m}")))?;
    Ok((latent_from_ternary(&codes, s * extra), true))
}

/// Codes and the one scale of values that are all `0` or `±s` (what converters write after
/// baking absmean ternarization into float weights), or `None`. Also the packed loader's
/// test for float projections that already are ternary (`runtime::load`).
pub(crate) fn ternary_with_one_scale(values: &[f32]) -> Option<(Vec<i8>, f32)> {
    let mut scale = None;
    let mut codes = Vec::with_capacity(values.len());
    for &v in values {
        if v == 0.0 {
            codes.push(0);
            continue;
        }
        match scale {
            None => scale = Some(v.abs()),
            Some(s) if s == v.abs() => {}
            Some(_) => return None,
        }
        codes.push(if v > 0.0 { 1 } else { -1 });
    }
    Some((codes, scale.unwrap_or(0.0)))
}

/// I2_S data must hold codes 0..=2 and a finite non-negative scale after them. bitnet.cpp's
/// `llama-quantize` run with more than one thread writes something else: its
/// `ggml_quantize_chunk` puts chunk k (of `ceil(16384 / row)` rows) at byte offset
/// `first_row * row` instead of `first_row * row / 4`, and only the first `n/4 + 32 * chunks`
/// bytes reach the file, so most of the tensor is lost (bitnet.cpp's `setup_env.py` always
/// passes one thread). That layout is recognised and named.
fn check_i2s(bytes: &[u8], n: usize, row: usize, name: &str, keys: &Keys<'_>) -> Result<()> {
    let packed = n / 4;
    let code3 = bytes[..packed.min(bytes.len())]
        .iter()
        .position(|&b| (0..4).any(|k| (b >> (2 * k)) & 3 == 3));
    let scale_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let scale = scale_at(packed).unwrap_or(f32::NAN);
    if code3.is_none() && scale.is_finite() && scale >= 0.0 {
        return Ok(());
    }
    let chunk_rows = 16_384usize.div_ceil(row.max(1));
    let chunk_scale_at = chunk_rows * row / 4;
    let chunked = chunk_rows * row < n
        && scale_at(chunk_scale_at).is_some_and(|s| s.is_finite() && s > 0.0 && s < 1e3);
    let what = match code3 {
        Some(at) => format!("byte {at} holds the invalid 2-bit code 3"),
        None => format!("the scale after the codes (byte {packed}) is {scale}"),
    };
    let hint = if chunked {
        format!(
            "; byte {chunk_scale_at} holds a scale, the layout bitnet.cpp's llama-quantize \
             writes when run with more than one thread (chunks of {chunk_rows} rows at four \
             times their offset; most of the tensor is not in the file, and bitnet.cpp \
             computes it wrongly too): re-quantize with one thread, as bitnet.cpp's \
             setup_env.py does (`llama-quantize IN OUT I2_S 1`)"
        )
    } else {
        String::new()
    };
    Err(keys.fail(format!("tensor {name} is not valid I2_S: {what}{hint}")))
}

fn read_vocab(m: &Metadata, keys: &Keys<'_>) -> Result<Option<GgufVocab>> {
    let Ok(model) = m.get_str("tokenizer.ggml.model") else {
        return Ok(None);
    };
    let pre = m.get_str("tokenizer.ggml.pre").ok();
    let kind = PreTokenizer::from_gguf(model, pre).map_err(|e| keys.vocab(e))?;
    let gguf = |e| keys.gguf(e);
    let tokens = m
        .get_str_array("tokenizer.ggml.tokens")
        .map_err(gguf)?
        .to_vec();
    let token_types = if m.contains_key("tokenizer.ggml.token_type") {
        m.get_i32_array("tokenizer.ggml.token_type")
            .map_err(gguf)?
            .to_vec()
    } else {
        vec![TOKEN_TYPE_NORMAL; tokens.len()]
    };
    let (scores, merges) = match kind {
        PreTokenizer::SentencePiece => (
            m.get_f32_array("tokenizer.ggml.scores")
                .map_err(gguf)?
                .to_vec(),
            Vec::new(),
        ),
        _ => (
            Vec::new(),
            m.get_str_array("tokenizer.ggml.merges")
                .map_err(gguf)?
                .to_vec(),
        ),
    };
    let id = |key: &str| -> Result<Option<u32>> {
        if !m.contains_key(key) {
            return Ok(None);
        }
        let v = m.get_uint(key).map_err(gguf)?;
        u32::try_from(v)
            .map(Some)
            .map_err(|_| keys.fail(format!("{key} = {v} is not a token id")))
    };
    let bool_key = |key: &str, default: bool| -> Result<bool> {
        if m.contains_key(key) {
            m.get_bool(key).map_err(gguf)
        } else {
            Ok(default)
        }
    };
    let eos_id = id("tokenizer.ggml.eos_token_id")?
        .ok_or_else(|| keys.fail("tokenizer.ggml.eos_token_id is missing".into()))?;
    // llama.cpp's defaults: SentencePiece and Llama 3 vocabularies add BOS, GPT-2 ones not.
    let add_bos_default = kind != PreTokenizer::Gpt2;
    let vocab = GgufVocab {
        kind,
        tokens,
        token_types,
        scores,
        merges,
        bos_id: id("tokenizer.ggml.bos_token_id")?,
        eos_id,
        add_bos: bool_key("tokenizer.ggml.add_bos_token", add_bos_default)?,
        add_space_prefix: bool_key("tokenizer.ggml.add_space_prefix", true)?,
    };
    vocab.validate().map_err(|e| keys.vocab(e))?;
    Ok(Some(vocab))
}

/// The one scale of a per-tensor ternary matrix: `|value|` of every non-zero code. Block
/// formats store it rounded to fp16 in each block; blocks that disagree mean the tensor was
/// not ternarized per tensor and cannot be represented exactly.
fn tensor_scale(codes: &[i8], values: &[f32]) -> std::result::Result<f32, String> {
    let mut scale = None;
    for (&c, &v) in codes.iter().zip(values) {
        if c == 0 {
            continue;
        }
        let s = v.abs();
        match scale {
            None => scale = Some(s),
            Some(first) if (s - first).abs() > 1e-6 * first => {
                return Err(format!(
                    "blocks have different scales ({first} and {s}); only per-tensor ternary \
                     weights import exactly"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(scale.unwrap_or(0.0))
}
