//! GGUF export -> import round trips (llama.cpp TQ2_0 / TQ1_0, bitnet.cpp I2_S), refusals
//! for models a target cannot compute, and gguf-py reading our files.

use bitnet_model::config::{Activation, ModelConfig, WeightKind};
use bitnet_model::data::tokenizer::TextTokenizer;
use bitnet_model::export::{
    EmbeddingType, ExportOptions, Target, TernaryType, export_gguf, import_gguf,
};
use bitnet_model::runtime::{Logits, PackOptions, PackedModel, random_weights};
use bitnet_model::weights::WeightMap;
use std::path::Path;

const TEXT: &str = "The quick brown fox jumps over the lazy dog. Packages install files. \
    パッケージはファイルをインストールします。日本語の文書です。 \
    패키지는 파일을 설치합니다. 한국어 문서입니다. (see the manual: 1.58 bits) ";

fn tokenizer() -> TextTokenizer {
    let texts: Vec<String> = (0..20).map(|i| format!("{TEXT} {i}")).collect();
    TextTokenizer::train(texts.iter().map(String::as_str), 400).unwrap()
}

fn config(vocab: usize, activation: Activation, tied: bool) -> ModelConfig {
    ModelConfig {
        vocab_size: vocab,
        hidden_size: 256,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_hidden_size: 512,
        context_length: 32,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        activation,
        tied_embeddings: tied,
        weights: WeightKind::Ternary,
    }
}

fn logits(config: &ModelConfig, w: &WeightMap, tokens: &[u32]) -> Vec<f32> {
    let m = PackedModel::from_weights(config, w, PackOptions::default()).unwrap();
    m.forward(&mut m.new_cache(), tokens, Logits::All).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn round_trip(
    dir: &Path,
    config: &ModelConfig,
    tok: &TextTokenizer,
    options: &ExportOptions,
    tolerance: f32,
) -> String {
    let w = random_weights(config, 4);
    let path = dir.join("model.gguf");
    let summary = export_gguf(&path, config, &w, tok, options).unwrap();
    assert_eq!(summary.tensors, config.tensor_shapes().len());
    let imported = import_gguf(&path).unwrap();
    assert_eq!(imported.architecture, summary.architecture);
    assert_eq!(&imported.config, config);
    let ids = tok.encode(TEXT).unwrap();
    let ids = &ids[..ids.len().min(config.context_length)];
    let (a, b) = (
        logits(config, &w, ids),
        logits(config, &imported.weights, ids),
    );
    let range = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&a, &b);
    assert!(
        diff <= tolerance * range,
        "{options:?}: diff {diff} vs range {range}"
    );
    // The embedded tokenizer tokenizes and decodes exactly like the original.
    let json = imported.tokenizer_json().unwrap().unwrap();
    let tok_path = dir.join("tokenizer.json");
    std::fs::write(&tok_path, json).unwrap();
    let back = TextTokenizer::load(&tok_path).unwrap();
    for text in [TEXT, " leading space\n\ttabs", "<|endoftext|>after"] {
        assert_eq!(
            back.encode(text).unwrap(),
            tok.encode(text).unwrap(),
            "{text}"
        );
    }
    assert_eq!(back.eos_id(), tok.eos_id());
    assert_eq!(back.decode(ids).unwrap(), tok.decode(ids).unwrap());
    path.display().to_string()
}

#[test]
fn llama_cpp_tq2_0_and_tq1_0_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer();
    let c = config(tok.vocab_size(), Activation::Silu, true);
    for t in [TernaryType::Tq2_0, TernaryType::Tq1_0] {
        let options = ExportOptions {
            target: Target::LlamaCpp(t),
            embedding: EmbeddingType::F32,
            name: "test".into(),
        };
        // Only the fp16 rounding of the per-tensor scale (relative 2^-11) differs, but int8
        // activation rounding is discontinuous: a near-tie value can move one code by one
        // step (1/127 of its row's max), which reaches every later position through
        // attention. Tolerance: 3 % of the logit range.
        round_trip(dir.path(), &c, &tok, &options, 0.03);
    }
    // F16 embeddings add their own rounding.
    round_trip(dir.path(), &c, &tok, &ExportOptions::llama_cpp(), 0.05);
}

#[test]
fn bitnet_cpp_i2_s_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer();
    let options = ExportOptions {
        embedding: EmbeddingType::F32,
        ..ExportOptions::bitnet_cpp()
    };
    // I2_S keeps the f32 scale: only the last-bit rounding of the reconstructed scale, plus
    // the int8 near-tie effect described above.
    let c = config(tok.vocab_size(), Activation::ReluSquared, false);
    round_trip(dir.path(), &c, &tok, &options, 0.03);
    let c = config(tok.vocab_size(), Activation::Silu, true);
    round_trip(dir.path(), &c, &tok, &options, 0.03);
}

#[test]
fn targets_refuse_models_they_cannot_compute() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.gguf");
    let tok = tokenizer();
    let n = tok.vocab_size();
    let cases = [
        (
            config(n, Activation::ReluSquared, true),
            ExportOptions::llama_cpp(),
            "SiLU",
        ),
        (
            config(n, Activation::Silu, false),
            ExportOptions::llama_cpp(),
            "untied",
        ),
        (
            config(n, Activation::Silu, false),
            ExportOptions::bitnet_cpp(),
            "untied",
        ),
        (
            config(n, Activation::Silu, true).full_precision_twin(),
            ExportOptions::llama_cpp(),
            "full-precision",
        ),
        (
            ModelConfig {
                hidden_size: 384,
                n_heads: 6,
                n_kv_heads: 3,
                ..config(n, Activation::Silu, true)
            },
            ExportOptions::llama_cpp(),
            "multiples of 256",
        ),
    ];
    for (c, options, needle) in cases {
        let w = random_weights(&c, 1);
        let err = export_gguf(&path, &c, &w, &tok, &options)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(!path.exists(), "a refused export must not leave a file");
    }
    // A tokenizer larger than the model's vocabulary is caught too.
    let c = config(n - 1, Activation::Silu, true);
    let err = export_gguf(
        &path,
        &c,
        &random_weights(&c, 1),
        &tok,
        &ExportOptions::llama_cpp(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("tokens"), "{err}");
    // Import of a file that is not GGUF names the file.
    std::fs::write(&path, b"not a gguf file at all").unwrap();
    let err = import_gguf(&path).unwrap_err().to_string();
    assert!(err.contains("x.gguf"), "{err}");
}

/// gguf-py 0.19.0 (the llama.cpp project's reader) lists our metadata and tensors, and
/// dequantizes a TQ2_0 projection to our ternary values.
#[test]
fn gguf_py_reads_the_llama_cpp_export() {
    let Ok(python) = std::env::var("MAGNET_PYTHON") else {
        assert!(
            std::env::var("MAGNET_REQUIRE_ORACLES").as_deref() != Ok("1"),
            "MAGNET_PYTHON is required when MAGNET_REQUIRE_ORACLES=1"
        );
        eprintln!("skipping: MAGNET_PYTHON is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer();
    let c = config(tok.vocab_size(), Activation::Silu, true);
    let w = random_weights(&c, 8);
    let path = dir.path().join("m.gguf");
    export_gguf(&path, &c, &w, &tok, &ExportOptions::llama_cpp()).unwrap();
    let script = r#"
import json, sys
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
r = GGUFReader(sys.argv[1])
def val(f):
    v = f.contents()
    return v if not isinstance(v, list) or len(v) < 8 else len(v)
keys = {k: val(f) for k, f in r.fields.items() if not k.startswith("GGUF.")}
tensors = {t.name: [t.tensor_type.name, [int(d) for d in t.shape]] for t in r.tensors}
q = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight")
deq = dequantize(q.data, q.tensor_type).reshape(-1)
print(json.dumps({"keys": keys, "tensors": tensors, "q": deq.tolist()}))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = &v["keys"];
    assert_eq!(keys["general.architecture"], "bitnet");
    assert_eq!(keys["general.file_type"], 37);
    assert_eq!(keys["bitnet.block_count"], 2);
    assert_eq!(keys["bitnet.attention.head_count_kv"], 2);
    assert_eq!(keys["tokenizer.ggml.model"], "gpt2");
    assert_eq!(keys["tokenizer.ggml.pre"], "gpt-2");
    assert_eq!(keys["tokenizer.ggml.tokens"], tok.vocab_size());
    let tensors = v["tensors"].as_object().unwrap();
    assert_eq!(tensors.len(), c.tensor_shapes().len());
    assert_eq!(
        tensors["blk.1.ffn_down.weight"],
        serde_json::json!(["TQ2_0", [512, 256]])
    );
    assert_eq!(tensors["token_embd.weight"][0], "F16");
    assert_eq!(tensors["output_norm.weight"][0], "F32");
    // Dequantized by gguf-py: `code * fp16(absmean)` of our latent weights.
    let q = &w["blk.0.attn_q.weight"].data;
    let mean = q.iter().map(|x| x.abs()).sum::<f32>() / q.len() as f32 + 1e-5;
    let s = half::f16::from_f32(mean).to_f32();
    let deq: Vec<f32> = v["q"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    for (x, d) in q.iter().zip(&deq) {
        let code = (x / mean).round().clamp(-1.0, 1.0);
        assert!((code * s - d).abs() < 1e-6, "{x} -> {d}");
    }
}
