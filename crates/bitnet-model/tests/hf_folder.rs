//! Hugging Face folders: fixtures generated here (config.json, tokenizer.json, safetensors
//! in HF names: packed 2-bit uint8 + weight_scale, BF16 latent weights in two shards with an
//! index, plain F32) load into the same model as the weights they encode; and, when
//! `MAGNET_TORCH_PYTHON` names a python with torch + transformers 5.x, transformers'
//! own next-token logits for a random `BitNetForCausalLM` are matched
//! (`examples/genkidama/scripts/hf_logits.py`; numbers in docs/gguf.md).

use bitnet_model::config::{Activation, ModelConfig, WeightKind};
use bitnet_model::data::tokenizer::TextTokenizer;
use bitnet_model::export::latent_from_ternary;
use bitnet_model::hf::{HfWeights, load_hf};
use bitnet_model::runtime::{Logits, ReferenceModel, Threads, random_weights};
use bitnet_model::store::{ModelDir, ModelSource};
use bitnet_model::weights::WeightMap;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use ternary_core::{Granularity, quantize_absmean};

/// One safetensors entry: HF name, dtype, shape, bytes.
type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

fn tokenizer() -> TextTokenizer {
    let text = "The quick brown fox jumps over the lazy dog. パッケージ 패키지 1.58 bits ";
    let texts: Vec<String> = (0..20).map(|i| format!("{text} {i}")).collect();
    TextTokenizer::train(texts.iter().map(String::as_str), 300).unwrap()
}

fn config(vocab: usize, weights: WeightKind) -> ModelConfig {
    ModelConfig {
        vocab_size: vocab,
        hidden_size: 128,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 1,
        ffn_hidden_size: 256,
        context_length: 64,
        rope_theta: 500_000.0,
        norm_eps: 1e-5,
        activation: Activation::ReluSquared,
        tied_embeddings: true,
        weights,
    }
}

/// Our canonical name in HF's `BitNetForCausalLM` naming.
fn hf_name(ours: &str) -> String {
    match ours {
        "token_embd.weight" => return "model.embed_tokens.weight".into(),
        "output_norm.weight" => return "model.norm.weight".into(),
        "output.weight" => return "lm_head.weight".into(),
        _ => {}
    }
    let rest = ours.strip_prefix("blk.").unwrap();
    let (layer, tail) = rest.split_once('.').unwrap();
    let hf = match tail {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "attn_sub_norm.weight" => "self_attn.attn_sub_norm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "ffn_sub_norm.weight" => "mlp.ffn_sub_norm.weight",
        other => panic!("{other}"),
    };
    format!("model.layers.{layer}.{hf}")
}

fn bf16(values: &[f32]) -> (Vec<u8>, Vec<f32>) {
    let h: Vec<half::bf16> = values.iter().map(|&v| half::bf16::from_f32(v)).collect();
    (
        h.iter().flat_map(|v| v.to_le_bytes()).collect(),
        h.iter().map(|v| v.to_f32()).collect(),
    )
}

/// transformers' `pack_weights`: code + 1 of output row `i * rows/4 + r` in bits 2i of
/// packed row r.
fn pack(codes: &[i8], rows: usize, cols: usize) -> Vec<u8> {
    let rp = rows / 4;
    let mut out = vec![0u8; rp * cols];
    for i in 0..4 {
        for r in 0..rp {
            for c in 0..cols {
                out[r * cols + c] |= ((codes[(i * rp + r) * cols + c] + 1) as u8) << (2 * i);
            }
        }
    }
    out
}

/// Writes an HF folder for `w` in `mode`; returns the weights it encodes.
fn write_folder(
    dir: &Path,
    c: &ModelConfig,
    w: &WeightMap,
    tok: &TextTokenizer,
    mode: HfWeights,
) -> WeightMap {
    std::fs::create_dir_all(dir).unwrap();
    let mut encoded = w.clone();
    let mut tensors: Vec<Entry> = Vec::new();
    for (name, shape) in c.tensor_shapes() {
        let t = &w[&name];
        let hf = hf_name(&name);
        if ModelConfig::is_ternary_tensor(&name) && mode == HfWeights::Packed {
            let q = quantize_absmean(&t.data, shape[0], shape[1], Granularity::PerTensor, 1e-5)
                .unwrap();
            let (scale_bytes, scale) = bf16(&[1.0 / q.scales[0]]);
            tensors.push((
                hf.clone(),
                Dtype::U8,
                vec![shape[0] / 4, shape[1]],
                pack(&q.codes, shape[0], shape[1]),
            ));
            tensors.push((
                hf.replace(".weight", ".weight_scale"),
                Dtype::BF16,
                vec![1],
                scale_bytes,
            ));
            encoded.get_mut(&name).unwrap().data = latent_from_ternary(&q.codes, 1.0 / scale[0]);
        } else if mode == HfWeights::FullPrecision {
            let bytes = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((hf, Dtype::F32, shape.clone(), bytes));
        } else {
            let (bytes, rounded) = bf16(&t.data);
            encoded.get_mut(&name).unwrap().data = rounded;
            tensors.push((hf, Dtype::BF16, shape.clone(), bytes));
        }
    }
    let quantization = match mode {
        HfWeights::Packed => {
            json!({"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"})
        }
        HfWeights::Latent => {
            json!({"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"})
        }
        HfWeights::FullPrecision => serde_json::Value::Null,
    };
    let config = json!({
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet",
        "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
        "intermediate_size": c.ffn_hidden_size, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
        "max_position_embeddings": c.context_length, "rms_norm_eps": c.norm_eps,
        "hidden_act": "relu2", "tie_word_embeddings": true,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "bos_token_id": tok.eos_id(), "eos_token_id": [tok.eos_id()],
        "quantization_config": quantization,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    tok.save(&dir.join("tokenizer.json")).unwrap();
    // Latent weights go to two shards with an index, the others to one file.
    let shards: Vec<Vec<&Entry>> = if mode == HfWeights::Latent {
        let (a, b): (Vec<_>, Vec<_>) = tensors
            .iter()
            .partition(|t| t.0.contains("layers.0") || t.0.contains("embed"));
        vec![a, b]
    } else {
        vec![tensors.iter().collect()]
    };
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = if shards.len() == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, shards.len())
        };
        let views: Vec<(String, TensorView<'_>)> = shard
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        for (n, _) in &views {
            weight_map.insert(n.clone(), json!(file));
        }
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
    }
    if shards.len() > 1 {
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            json!({"metadata": {}, "weight_map": weight_map}).to_string(),
        )
        .unwrap();
    }
    encoded
}

fn logits(c: &ModelConfig, w: &WeightMap, ids: &[u32]) -> Vec<f32> {
    let m = ReferenceModel::from_weights(c, w, Threads(1)).unwrap();
    m.forward(&mut m.new_cache(), ids, Logits::All).unwrap()
}

#[test]
fn generated_hf_folders_load_as_the_weights_they_encode() {
    let root = tempfile::tempdir().unwrap();
    let tok = tokenizer();
    for mode in [
        HfWeights::Packed,
        HfWeights::Latent,
        HfWeights::FullPrecision,
    ] {
        let kind = if mode == HfWeights::FullPrecision {
            WeightKind::FullPrecision
        } else {
            WeightKind::Ternary
        };
        let c = config(tok.vocab_size(), kind);
        let w = random_weights(&c, 21);
        let dir = root.path().join(format!("{mode:?}"));
        let encoded = write_folder(&dir, &c, &w, &tok, mode);
        let hf = load_hf(&dir).unwrap();
        assert_eq!(hf.stored, mode);
        assert_eq!(hf.config, c, "{mode:?}");
        let ids: Vec<u32> = (0..32).map(|i| (i * 31 % c.vocab_size) as u32).collect();
        let (a, b) = (logits(&c, &encoded, &ids), logits(&c, &hf.weights, &ids));
        let range = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(diff <= 1e-4 * range.max(1.0), "{mode:?}: {diff} of {range}");
        let m = ModelDir::open(&dir).unwrap();
        assert_eq!(m.source, ModelSource::HuggingFace);
        assert_eq!(m.eos_id, tok.eos_id());
        assert_eq!(
            m.encode("fox").unwrap(),
            tok.encode("fox").unwrap(),
            "no BOS: none asked for"
        );
    }
}

#[test]
fn malformed_hf_folders_name_the_problem() {
    let root = tempfile::tempdir().unwrap();
    let tok = tokenizer();
    let c = config(tok.vocab_size(), WeightKind::Ternary);
    let w = random_weights(&c, 22);
    let dir = root.path().join("m");
    write_folder(&dir, &c, &w, &tok, HfWeights::Packed);
    // A hostile safetensors header: a length past the end of the file.
    let st = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    bytes[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&st, &bytes).unwrap();
    let err = load_hf(&dir).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the parser's error is kept"
    );
    // An unsupported architecture and a hostile context length.
    for (key, value, needle) in [
        (
            "architectures",
            json!(["LlamaForCausalLM"]),
            "LlamaForCausalLM",
        ),
        (
            "max_position_embeddings",
            json!(1u64 << 40),
            "max_position_embeddings",
        ),
        ("hidden_act", json!("gelu"), "gelu"),
    ] {
        let cfg_path = dir.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
        let saved = cfg[key].clone();
        cfg[key] = value;
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let err = load_hf(&dir).unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
        cfg[key] = saved;
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    }
}

/// transformers 5.x as the oracle (scripted: needs torch, not in CI).
#[test]
fn transformers_logits_match() {
    let Some(python) = std::env::var_os("MAGNET_TORCH_PYTHON").map(PathBuf::from) else {
        eprintln!("skipping the transformers cross-check: MAGNET_TORCH_PYTHON is not set");
        return;
    };
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/genkidama/scripts/hf_logits.py");
    let n = 256;
    let mut report = BTreeMap::new();
    for mode in ["fp", "online", "packed"] {
        let out = tempfile::tempdir().unwrap();
        let status = std::process::Command::new(&python)
            .env("TORCHDYNAMO_DISABLE", "1")
            .arg(&script)
            .arg(mode)
            .arg(out.path())
            .arg(n.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "hf_logits.py {mode}");
        let read = |f: &str| std::fs::read(out.path().join(f)).unwrap();
        let ids: Vec<u32> = read("tokens.u32")
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let theirs: Vec<f32> = read("logits.f32")
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let m = ModelDir::open(&out.path().join("model")).unwrap();
        let ours = logits(&m.config, &m.weights, &ids);
        assert_eq!(ours.len(), theirs.len());
        let v = m.config.vocab_size;
        let diff = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        let range = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let argmax = |x: &[f32]| {
            x.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0
        };
        let agree = ours
            .chunks(v)
            .zip(theirs.chunks(v))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count();
        eprintln!(
            "transformers {mode}: {n} positions, max |diff| {diff:.3e} (logit range {range:.3}), argmax agreement {agree}/{n}"
        );
        report.insert(mode, (diff, range, agree));
    }
    let (fp, _, fp_agree) = report["fp"];
    assert!(
        fp < 1e-3 && fp_agree == n,
        "full precision must match to float rounding"
    );
    // Packed: the same codes and scale on both sides; int8 activation rounding near ties
    // moves single values (measured 4.0e-2 of range 1.42, 251/256).
    let (diff, range, agree) = report["packed"];
    assert!(
        diff < 0.05 * range && agree * 100 >= n * 95,
        "packed: {diff} of {range}, {agree}/{n}"
    );
    // Online: transformers' WeightQuant scales by 1 / clamp(mean|W|, 1e-5), our BitLinear by
    // mean|W| + 1e-5, so codes near the rounding threshold differ as well (measured 0.115 of
    // range 1.39, 236/256 on this near-flat random model).
    let (diff, range, agree) = report["online"];
    assert!(
        diff < 0.1 * range && agree * 100 >= n * 90,
        "online: {diff} of {range}, {agree}/{n}"
    );
}
