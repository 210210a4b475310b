//! GGUF files as other producers write them, built here byte for byte from the producers'
//! source (llama.cpp `convert_hf_to_gguf.py` / `llama-quantize`, bitnet.cpp
//! `convert-hf-to-gguf-bitnet.py` / its fork's `ggml_quantize_chunk`), imported and run:
//! the logits equal those of the weights the file encodes. Plus the hostile headers and the
//! tokenizer splits each `tokenizer.ggml.pre` selects.

use bitnet_model::VocabError;
use bitnet_model::config::{Activation, ModelConfig, WeightKind};
use bitnet_model::data::tokenizer::TextTokenizer;
use bitnet_model::export::tokenizer::{
    GgufVocab, PreTokenizer, TOKEN_TYPE_BYTE, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL,
    TOKEN_TYPE_UNKNOWN,
};
use bitnet_model::export::{ImportOptions, import_gguf, import_gguf_with, latent_from_ternary};
use bitnet_model::runtime::{Logits, PackOptions, PackedModel, random_weights};
use bitnet_model::store::{ModelDir, ModelSource};
use bitnet_model::weights::WeightMap;
use gguf_io::{GgmlType, GgufBuilder, Value, convert};
use std::path::Path;
use ternary_core::format::i2_s::{self, I2sLayout};
use ternary_core::{Granularity, quantize_absmean};

const TEXT: &str = "The quick brown fox jumps over the lazy dog 12345 times. Packages install \
    files. パッケージはファイルをインストールします。패키지는 파일을 설치합니다. ";

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
        context_length: 64,
        rope_theta: 500_000.0,
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

fn assert_close(config: &ModelConfig, a: &WeightMap, b: &WeightMap, tokens: &[u32], what: &str) {
    let (x, y) = (logits(config, a, tokens), logits(config, b, tokens));
    let range = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = x
        .iter()
        .zip(&y)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max);
    // Only last-bit differences of the reconstructed scale, amplified by int8 near-ties.
    assert!(diff <= 0.03 * range, "{what}: diff {diff} vs range {range}");
}

/// Per-tensor absmean codes and scale of a latent projection (what every BitNet converter
/// computes).
fn ternary(w: &WeightMap, name: &str) -> (Vec<i8>, f32) {
    let t = &w[name];
    let q = quantize_absmean(
        &t.data,
        t.shape[0],
        t.shape[1],
        Granularity::PerTensor,
        bitnet_model::runtime::ops::QUANT_EPS,
    )
    .unwrap();
    (q.codes, q.scales[0])
}

/// bitnet.cpp's `llama-quantize ... I2_S N` with N > 1 threads: `ggml_quantize_chunk`
/// writes chunk k (`ceil(16384 / cols)` rows) at byte `first_row * cols` (4x its packed
/// offset), each chunk with its own scale after its codes; only the first `n / 4 + 32`
/// bytes are the tensor.
fn i2s_multithreaded(codes: &[i8], scale: f32, cols: usize) -> Vec<u8> {
    let n = codes.len();
    let rows_per_chunk = 16_384usize.div_ceil(cols);
    let mut buf = vec![0u8; n + 64];
    for first in (0..n / cols).step_by(rows_per_chunk) {
        let rows = rows_per_chunk.min(n / cols - first);
        let chunk = &codes[first * cols..(first + rows) * cols];
        let bytes = convert::pack_ternary(GgmlType::I2_S, chunk, scale).unwrap();
        let at = first * cols;
        buf[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    buf.truncate(n / 4 + 32);
    buf
}

/// How one producer stores a tensor.
#[derive(Clone, Copy)]
enum Store {
    F32,
    /// Ternary projection packed in this type with the tensor's one scale.
    Packed(GgmlType),
    /// bitnet.cpp's converter: `weight_quant` baked into F16 values `{-s, 0, s}`.
    BakedF16,
    /// Raw bytes given separately (Q6_K embeddings: we do not write k-quants).
    Q6K,
    Q8_0,
    F16,
    I2sMultithreaded,
    /// I2_S as the bitnet.cpp build with this code layout writes it.
    I2sIn(I2sLayout),
}

struct File<'a> {
    arch: &'a str,
    config: &'a ModelConfig,
    store: &'a dyn Fn(&str) -> Store,
    vocab: &'a GgufVocab,
    extra: Vec<(&'a str, Value)>,
    scales: Vec<(String, f32)>,
}

/// Writes `w` as the producer would, and returns the weights the file encodes (the
/// reference for the logits).
fn write(path: &Path, f: &File<'_>, w: &WeightMap) -> WeightMap {
    let c = f.config;
    let mut b = GgufBuilder::new();
    let k = |key: &str| format!("{}.{key}", f.arch);
    b.add_metadata("general.architecture", f.arch).unwrap();
    b.add_metadata("general.quantization_version", 2u32)
        .unwrap();
    for (key, v) in [
        ("context_length", c.context_length),
        ("embedding_length", c.hidden_size),
        ("block_count", c.n_layers),
        ("feed_forward_length", c.ffn_hidden_size),
        ("attention.head_count", c.n_heads),
        ("attention.head_count_kv", c.n_kv_heads),
        ("rope.dimension_count", c.head_dim()),
        ("vocab_size", c.vocab_size),
    ] {
        b.add_metadata(k(key), v as u32).unwrap();
    }
    b.add_metadata(k("rope.freq_base"), c.rope_theta).unwrap();
    b.add_metadata(k("attention.layer_norm_rms_epsilon"), c.norm_eps)
        .unwrap();
    for (key, v) in &f.extra {
        b.add_metadata(*key, v.clone()).unwrap();
    }
    let v = f.vocab;
    b.add_metadata("tokenizer.ggml.model", v.kind.model())
        .unwrap();
    b.add_metadata("tokenizer.ggml.pre", v.kind.pre()).unwrap();
    b.add_metadata("tokenizer.ggml.tokens", v.tokens.clone())
        .unwrap();
    b.add_metadata("tokenizer.ggml.token_type", v.token_types.clone())
        .unwrap();
    if v.kind == PreTokenizer::SentencePiece {
        b.add_metadata("tokenizer.ggml.scores", v.scores.clone())
            .unwrap();
    } else {
        b.add_metadata("tokenizer.ggml.merges", v.merges.clone())
            .unwrap();
    }
    b.add_metadata("tokenizer.ggml.bos_token_id", v.bos_id.unwrap())
        .unwrap();
    b.add_metadata("tokenizer.ggml.eos_token_id", v.eos_id)
        .unwrap();
    b.add_metadata("tokenizer.ggml.add_bos_token", v.add_bos)
        .unwrap();

    let mut encoded = w.clone();
    let mut data: Vec<(String, Vec<u8>)> = Vec::new();
    let mut q6_seed = 7u32;
    for (name, shape) in c.tensor_shapes() {
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let t = &w[&name];
        let (ty, bytes) = match (f.store)(&name) {
            Store::F32 => (
                GgmlType::F32,
                convert::quantize(GgmlType::F32, &t.data).unwrap(),
            ),
            Store::F16 => {
                let bytes = convert::quantize(GgmlType::F16, &t.data).unwrap();
                encoded.get_mut(&name).unwrap().data =
                    convert::dequantize(GgmlType::F16, &bytes, t.data.len() as u64).unwrap();
                (GgmlType::F16, bytes)
            }
            Store::Q8_0 => {
                let bytes = convert::quantize(GgmlType::Q8_0, &t.data).unwrap();
                encoded.get_mut(&name).unwrap().data =
                    convert::dequantize(GgmlType::Q8_0, &bytes, t.data.len() as u64).unwrap();
                (GgmlType::Q8_0, bytes)
            }
            Store::Q6K => {
                let n_blocks = t.data.len() / 256;
                let mut bytes = Vec::with_capacity(n_blocks * 210);
                for _ in 0..n_blocks {
                    for _ in 0..208 {
                        q6_seed = q6_seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        bytes.push((q6_seed >> 24) as u8);
                    }
                    // Small signed sub-block scales, d = 0.002: values of order 0.1.
                    let len = bytes.len();
                    for s in &mut bytes[len - 16..] {
                        *s = (*s % 32).wrapping_sub(16);
                    }
                    bytes.extend_from_slice(&half::f16::from_f32(0.002).to_le_bytes());
                }
                encoded.get_mut(&name).unwrap().data =
                    convert::dequantize(GgmlType::Q6_K, &bytes, t.data.len() as u64).unwrap();
                (GgmlType::Q6_K, bytes)
            }
            Store::Packed(ty) => {
                let (codes, s) = ternary(w, &name);
                (ty, convert::pack_ternary(ty, &codes, s).unwrap())
            }
            Store::BakedF16 => {
                let (codes, s) = ternary(w, &name);
                let baked: Vec<f32> = codes.iter().map(|&q| f32::from(q) * s).collect();
                let bytes = convert::quantize(GgmlType::F16, &baked).unwrap();
                let s16 = half::f16::from_f32(s).to_f32();
                encoded.get_mut(&name).unwrap().data = latent_from_ternary(&codes, s16);
                (GgmlType::F16, bytes)
            }
            Store::I2sMultithreaded => {
                let (codes, s) = ternary(w, &name);
                (GgmlType::I2_S, i2s_multithreaded(&codes, s, shape[1]))
            }
            Store::I2sIn(layout) => {
                let (codes, s) = ternary(w, &name);
                let bytes = i2_s::pack_layout(&codes, shape[0], shape[1], s, layout).unwrap();
                (GgmlType::I2_S, bytes)
            }
        };
        b.add_tensor(name.as_str(), &dims, ty).unwrap();
        data.push((name, bytes));
    }
    for (name, s) in &f.scales {
        b.add_tensor(name.as_str(), &[1], GgmlType::F32).unwrap();
        data.push((name.clone(), s.to_le_bytes().to_vec()));
        // llama.cpp multiplies the projection's output by the scale: the same as scaling W.
        let proj = name.replace(".scale", ".weight");
        let (codes, s0) = ternary(w, &proj);
        encoded.get_mut(&proj).unwrap().data = latent_from_ternary(&codes, s0 * s);
    }
    let mut out = b.create(path).unwrap();
    for (name, bytes) in &data {
        out.write_tensor(name, bytes).unwrap();
    }
    out.finish().unwrap();
    encoded
}

fn gpt2_vocab(tok: &TextTokenizer, kind: PreTokenizer, add_bos: bool) -> GgufVocab {
    let mut v = GgufVocab::from_tokenizer(tok).unwrap();
    v.kind = kind;
    v.add_bos = add_bos;
    v
}

#[test]
fn llama_cpp_bitnet_with_llama_bpe_q6_k_embeddings_and_untied_q8_0_head() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama.gguf");
    let tok = tokenizer();
    let c = config(tok.vocab_size(), Activation::Silu, false);
    let w = random_weights(&c, 11);
    let vocab = gpt2_vocab(&tok, PreTokenizer::Llama3, true);
    let store = |name: &str| match name {
        "token_embd.weight" => Store::Q6K,
        "output.weight" => Store::Q8_0,
        n if ModelConfig::is_ternary_tensor(n) => Store::Packed(GgmlType::TQ2_0),
        _ => Store::F32,
    };
    let f = File {
        arch: "bitnet",
        config: &c,
        store: &store,
        vocab: &vocab,
        extra: vec![
            ("bitnet.rope.scaling.type", "linear".into()),
            ("bitnet.rope.scaling.factor", 1.0f32.into()),
        ],
        scales: vec![("blk.1.ffn_down.scale".into(), 1.5)],
    };
    let encoded = write(&path, &f, &w);
    let m = import_gguf(&path).unwrap();
    assert_eq!(m.config, c);
    assert!(m.latent_projections.is_empty());
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 % c.vocab_size) as u32).collect();
    assert_close(
        &c,
        &encoded,
        &m.weights,
        &ids,
        "llama.cpp bitnet TQ2_0 + Q6_K",
    );
    // The embedding is the Q6_K file's values exactly.
    assert_eq!(m.weights["token_embd.weight"], encoded["token_embd.weight"]);

    // The tokenizer is Llama 3's split: digits in groups of three, and BOS first.
    let dir_model = ModelDir::open(&path).unwrap();
    assert_eq!(dir_model.source, ModelSource::Gguf);
    assert!(dir_model.add_bos);
    let ids = dir_model.encode("12345").unwrap();
    assert_eq!(ids[0], vocab.bos_id.unwrap());
    let pieces: Vec<String> = ids[1..]
        .iter()
        .map(|&i| dir_model.tokenizer.decode(&[i]).unwrap())
        .collect();
    assert!(
        pieces.concat() == "12345" && !pieces.iter().any(|p| p.len() > 3),
        "{pieces:?}"
    );
    // GPT-2's split keeps the digits together in one pre-token.
    let gpt2 = gpt2_vocab(&tok, PreTokenizer::Gpt2, false)
        .to_text_tokenizer()
        .unwrap();
    assert_eq!(gpt2.encode(TEXT).unwrap(), tok.encode(TEXT).unwrap());
}

#[test]
fn bitnet_cpp_b158_i2_s_relu2_gqa_and_baked_f16() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer();
    let c = config(tok.vocab_size(), Activation::ReluSquared, true);
    let w = random_weights(&c, 12);
    let vocab = gpt2_vocab(&tok, PreTokenizer::Gpt2, false);
    let ids: Vec<u32> = (0..40).map(|i| (i * 13 % c.vocab_size) as u32).collect();
    for (arch, proj) in [
        ("bitnet-b1.58", Store::Packed(GgmlType::I2_S)),
        ("bitnet-25", Store::Packed(GgmlType::TQ1_0)),
        ("bitnet-b1.58", Store::BakedF16),
    ] {
        let path = dir.path().join("b.gguf");
        let store = move |name: &str| match name {
            "token_embd.weight" => Store::F16,
            n if ModelConfig::is_ternary_tensor(n) => proj,
            _ => Store::F32,
        };
        let f = File {
            arch,
            config: &c,
            store: &store,
            vocab: &vocab,
            extra: vec![("general.file_type", 40u32.into())],
            scales: vec![],
        };
        let encoded = write(&path, &f, &w);
        let m = import_gguf(&path).unwrap();
        assert_eq!(m.config, c, "{arch}");
        assert!(m.latent_projections.is_empty(), "{arch}");
        assert_close(&c, &encoded, &m.weights, &ids, arch);
    }
}

#[test]
fn i2_s_files_of_each_bitnet_cpp_layout_import_as_the_matrix_they_encode() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer();
    let c = config(tok.vocab_size(), Activation::ReluSquared, true);
    let w = random_weights(&c, 15);
    let vocab = gpt2_vocab(&tok, PreTokenizer::Gpt2, false);
    for layout in I2sLayout::ALL {
        let path = dir.path().join(format!("{}.gguf", layout.name()));
        let store = move |name: &str| match name {
            "token_embd.weight" => Store::F16,
            n if ModelConfig::is_ternary_tensor(n) => Store::I2sIn(layout),
            _ => Store::F32,
        };
        let f = File {
            arch: "bitnet-b1.58",
            config: &c,
            store: &store,
            vocab: &vocab,
            extra: vec![],
            scales: vec![],
        };
        write(&path, &f, &w);
        let options = ImportOptions { i2s_layout: layout };
        let m = import_gguf_with(&path, &options).unwrap();
        assert_eq!(m.config, c, "{layout:?}");
        let x86 = import_gguf(&path).unwrap();
        let mut misread = 0;
        for name in w.keys().filter(|n| ModelConfig::is_ternary_tensor(n)) {
            let ((got, gs), (want, ws)) = (ternary(&m.weights, name), ternary(&w, name));
            assert!(got == want, "{layout:?} {name}: codes differ");
            assert!(
                (gs - ws).abs() <= 1e-6 * ws,
                "{layout:?} {name}: scale {gs} vs {ws}"
            );
            // Read in the default x86 layout, the other builds' files are other (valid)
            // matrices: the layout cannot be guessed from the bytes.
            misread += usize::from(ternary(&x86.weights, name).0 != want);
        }
        assert_eq!(misread > 0, layout != I2sLayout::X86, "{layout:?}");
    }
}

#[test]
fn multithreaded_bitnet_cpp_i2_s_is_refused_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mt.gguf");
    let tok = tokenizer();
    let c = config(tok.vocab_size(), Activation::ReluSquared, true);
    let w = random_weights(&c, 13);
    let vocab = gpt2_vocab(&tok, PreTokenizer::Gpt2, false);
    let store = |name: &str| match name {
        "token_embd.weight" => Store::F16,
        n if ModelConfig::is_ternary_tensor(n) => Store::I2sMultithreaded,
        _ => Store::F32,
    };
    let f = File {
        arch: "bitnet-b1.58",
        config: &c,
        store: &store,
        vocab: &vocab,
        extra: vec![],
        scales: vec![],
    };
    write(&path, &f, &w);
    let err = import_gguf(&path).unwrap_err().to_string();
    assert!(
        err.contains("not valid I2_S") && err.contains("one thread") && err.contains("attn_q"),
        "{err}"
    );
}

#[test]
fn hostile_headers_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let tok = tokenizer();
    let base = config(tok.vocab_size(), Activation::Silu, true);
    let w = random_weights(&base, 14);
    type Case<'a> = (ModelConfig, Vec<(&'a str, Value)>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            ModelConfig {
                n_layers: 1 << 40,
                ..base.clone()
            },
            vec![],
            "block_count",
        ),
        (
            ModelConfig {
                context_length: 1 << 40,
                ..base.clone()
            },
            vec![],
            "context_length",
        ),
        (
            base.clone(),
            vec![
                ("bitnet.rope.scaling.factor", 4.0f32.into()),
                ("bitnet.rope.scaling.type", "linear".into()),
            ],
            "rope.scaling",
        ),
    ];
    for (c, extra, needle) in cases {
        let path = dir.path().join("h.gguf");
        // The tensors are the base model's: only the header lies.
        let mut b = GgufBuilder::new();
        b.add_metadata("general.architecture", "bitnet").unwrap();
        let k = |key: &str| format!("bitnet.{key}");
        for (key, v) in [
            ("context_length", c.context_length as u64),
            ("embedding_length", c.hidden_size as u64),
            ("block_count", c.n_layers as u64),
            ("feed_forward_length", c.ffn_hidden_size as u64),
            ("attention.head_count", c.n_heads as u64),
            ("attention.head_count_kv", c.n_kv_heads as u64),
        ] {
            b.add_metadata(k(key), v).unwrap();
        }
        b.add_metadata(k("attention.layer_norm_rms_epsilon"), 1e-5f32)
            .unwrap();
        for (key, v) in extra {
            b.add_metadata(key, v).unwrap();
        }
        for (name, shape) in base.tensor_shapes() {
            let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
            b.add_tensor(name.as_str(), &dims, GgmlType::F32).unwrap();
        }
        let mut out = b.create(&path).unwrap();
        for (name, _) in base.tensor_shapes() {
            out.write_tensor_f32(&name, &w[&name].data).unwrap();
        }
        out.finish().unwrap();
        let err = import_gguf(&path).unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // An unknown pre-tokenizer is a typed error, never a fallback.
    assert!(matches!(
        PreTokenizer::from_gguf("gpt2", Some("qwen2")),
        Err(VocabError::UnknownPre { pre }) if pre == "qwen2"
    ));
    assert!(matches!(
        PreTokenizer::from_gguf("gpt2", None),
        Err(VocabError::MissingPre)
    ));
    assert!(matches!(
        PreTokenizer::from_gguf("rwkv", Some("gpt-2")),
        Err(VocabError::UnknownModel { model }) if model == "rwkv"
    ));
    assert_eq!(
        PreTokenizer::from_gguf("gpt2", Some("llama-bpe")).unwrap(),
        PreTokenizer::Llama3
    );
}

/// llama.cpp's SentencePiece tokenizer (`llm_tokenizer_spm`): spaces become `▁`, a `▁` is
/// prepended, then the adjacent pair whose concatenation is the highest-scoring piece is
/// merged (leftmost on ties) until none is in the vocabulary; pieces left outside it fall
/// back to `<0xXX>` byte tokens.
fn llama_cpp_spm(v: &GgufVocab, text: &str) -> Vec<u32> {
    let ids: std::collections::HashMap<&str, usize> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let norm = format!("\u{2581}{}", text.replace(' ', "\u{2581}"));
    let mut syms: Vec<String> = norm.chars().map(String::from).collect();
    loop {
        let mut best: Option<(f32, usize)> = None;
        for i in 0..syms.len().saturating_sub(1) {
            let cat = format!("{}{}", syms[i], syms[i + 1]);
            if let Some(&id) = ids.get(cat.as_str())
                && v.token_types[id] == TOKEN_TYPE_NORMAL
                && best.is_none_or(|(s, _)| v.scores[id] > s)
            {
                best = Some((v.scores[id], i));
            }
        }
        let Some((_, i)) = best else { break };
        let right = syms.remove(i + 1);
        syms[i].push_str(&right);
    }
    let mut out = Vec::new();
    for s in syms {
        match ids.get(s.as_str()) {
            Some(&id) => out.push(id as u32),
            None => {
                for b in s.bytes() {
                    out.push(ids[format!("<0x{b:02X}>").as_str()] as u32);
                }
            }
        }
    }
    out
}

#[test]
fn sentencepiece_vocabularies_tokenize_like_llama_cpp() {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut token_types = vec![TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        token_types.push(TOKEN_TYPE_BYTE);
        scores.push(0.0);
    }
    let pieces = [
        "\u{2581}",
        "a",
        "b",
        "c",
        "ab",
        "bc",
        "abc",
        "\u{2581}a",
        "\u{2581}ab",
        "ca",
        "cab",
        "\u{2581}c",
        "\u{2581}abc",
        "bb",
        "한",
        "국",
        "한국",
    ];
    let mut seed = 5u64;
    for p in pieces {
        tokens.push(p.into());
        token_types.push(TOKEN_TYPE_NORMAL);
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        scores.push(-((seed >> 40) as f32) / 1e5);
    }
    let v = GgufVocab {
        kind: PreTokenizer::SentencePiece,
        tokens,
        token_types,
        scores,
        merges: vec![],
        bos_id: Some(1),
        eos_id: 2,
        add_bos: true,
        add_space_prefix: true,
    };
    let t = v.to_text_tokenizer().unwrap();
    let alphabet = ['a', 'b', 'c', ' ', '한', '국', 'é'];
    let mut rng = 9u64;
    for len in 1..40 {
        let text: String = (0..len)
            .map(|_| {
                rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(3);
                alphabet[(rng >> 33) as usize % alphabet.len()]
            })
            .collect();
        assert_eq!(
            t.encode(&text).unwrap(),
            llama_cpp_spm(&v, &text),
            "{text:?}"
        );
    }
}

/// llama.cpp tokenizes text without parsing special tokens (`parse_special = false`), so a
/// GGUF vocabulary's control tokens written in the text are characters; Hugging Face
/// tokenizers would emit the control id (found by `tests/llama_cpp.rs` against llama.cpp).
#[test]
fn special_token_text_is_text_as_in_llama_cpp() {
    let tok = tokenizer();
    let text = "files <|endoftext|> install";
    // Our own trained tokenizer (Hugging Face semantics) still matches the added token.
    assert!(tok.encode(text).unwrap().contains(&tok.eos_id()));
    for kind in [PreTokenizer::Gpt2, PreTokenizer::Llama3] {
        let t = gpt2_vocab(&tok, kind, false).to_text_tokenizer().unwrap();
        let ids = t.encode(text).unwrap();
        assert!(!ids.contains(&tok.eos_id()), "{kind:?}: {ids:?}");
        assert_eq!(t.decode(&ids).unwrap(), text, "{kind:?}");
    }
}
