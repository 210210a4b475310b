//! The packed runtime against the f32 reference forward pass and the burn model, the KV
//! cache against full recomputation, and generation determinism.

use bitnet_model::config::{Activation, ModelConfig, WeightKind};
use bitnet_model::model::{Model, token_tensor};
use bitnet_model::runtime::{
    Format, GenerateOptions, KvPrecision, Logits, PackOptions, PackedModel, ReferenceModel,
    SamplingConfig, Threads, random_weights,
};
use burn::prelude::*;

/// Two layers, GQA 4/2, rows that fill TQ blocks: small enough for a debug test.
fn small(activation: Activation) -> ModelConfig {
    ModelConfig {
        vocab_size: 300,
        hidden_size: 256,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_hidden_size: 512,
        context_length: 32,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        activation,
        tied_embeddings: true,
        weights: WeightKind::Ternary,
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

const PROMPT: [u32; 12] = [5, 17, 299, 0, 42, 42, 7, 100, 250, 3, 9, 64];

fn options(format: Format) -> PackOptions {
    PackOptions {
        format,
        threads: Threads(2),
    }
}

#[test]
fn packed_logits_match_the_f32_reference() {
    for activation in [Activation::Silu, Activation::ReluSquared] {
        let mut config = small(activation);
        config.tied_embeddings = activation == Activation::Silu;
        let w = random_weights(&config, 11);
        let reference = ReferenceModel::from_weights(&config, &w, Threads(2)).unwrap();
        let mut cache = reference.new_cache();
        let expected = reference.forward(&mut cache, &PROMPT, Logits::All).unwrap();
        for format in [Format::I2S, Format::Tq2_0, Format::Tq1_0] {
            let packed = PackedModel::from_weights(&config, &w, options(format)).unwrap();
            let mut cache = packed.new_cache();
            let got = packed.forward(&mut cache, &PROMPT, Logits::All).unwrap();
            // Same int8 codes, exact integer sums instead of f32 ones; TQ formats also
            // round the scale to fp16 (relative 2^-11). Int8 rounding is discontinuous: a
            // value within float error of a rounding tie can move one code by one step
            // (1/127 of its row's max) and the change reaches every later position through
            // attention (measured up to ~2 % of the logit range on these weights), hence 3 %.
            let diff = max_abs_diff(&got, &expected);
            let tol = 0.03 * max_abs(&expected);
            assert!(diff <= tol, "{activation:?} {format}: diff {diff} > {tol}");
        }
    }
}

#[test]
fn kv_cache_decoding_matches_full_recomputation() {
    let config = small(Activation::Silu);
    let w = random_weights(&config, 3);
    let packed = PackedModel::from_weights(&config, &w, PackOptions::default()).unwrap();
    let vocab = config.vocab_size;
    let mut cache = packed.new_cache();
    let all = packed.forward(&mut cache, &PROMPT, Logits::All).unwrap();
    // Prefill 5 tokens, then one at a time.
    let mut cache = packed.new_cache();
    let mut rows = packed
        .forward(&mut cache, &PROMPT[..5], Logits::All)
        .unwrap();
    for &t in &PROMPT[5..] {
        rows.extend(packed.forward(&mut cache, &[t], Logits::Last).unwrap());
    }
    assert_eq!(cache.len(), PROMPT.len());
    assert_eq!(rows.len(), PROMPT.len() * vocab);
    let diff = max_abs_diff(&rows, &all);
    assert!(diff < 1e-4 * (1.0 + max_abs(&all)), "diff {diff}");
}

#[test]
fn f16_kv_cache_stays_close_to_the_f32_one() {
    // The packed model keeps K/V in f16 (relative rounding 2^-11 per stored value); the
    // same model with an f32 cache is the yardstick. The rounding moves attention outputs
    // by ~1e-3 relative, which can flip an int8 near-tie of the next projection's
    // activations (see above), so the bound is the same 3 % of the logit range.
    let config = small(Activation::Silu);
    let w = random_weights(&config, 7);
    let packed = PackedModel::from_weights(&config, &w, options(Format::I2S)).unwrap();
    assert_eq!(packed.kv_precision(), KvPrecision::F16);
    let run = |precision| {
        let mut cache = packed.new_cache_with(precision);
        let mut out = packed
            .forward(&mut cache, &PROMPT[..8], Logits::All)
            .unwrap();
        for &t in &PROMPT[8..] {
            out.extend(packed.forward(&mut cache, &[t], Logits::Last).unwrap());
        }
        assert_eq!(cache.precision(), precision);
        out
    };
    let (half, full) = (run(KvPrecision::F16), run(KvPrecision::F32));
    let diff = max_abs_diff(&half, &full);
    let tol = 0.03 * max_abs(&full);
    assert!(diff <= tol, "diff {diff} > {tol}");
    assert_ne!(half, full, "the f16 cache must actually round");
}

#[test]
fn runtime_matches_the_burn_forward_pass() {
    // Burn's BitLinear (fake-quant STE, f32) against the packed integer kernels on the
    // same latent weights. Differences: burn clamps the absmean at 1e-5 where
    // ternary-core adds 1e-5 (relative ~1e-3 on these weights), f32 summation order and
    // the int8 rounding flips those cause (see above). Tolerance: 6 % of the logit range
    // (measured: 4 %), and the same argmax on almost every position.
    let device = Device::flex();
    for activation in [Activation::Silu, Activation::ReluSquared] {
        let mut config = small(activation);
        config.tied_embeddings = activation == Activation::Silu;
        let model = Model::init(&config, 21, &device).unwrap();
        let w = model.to_weight_map();
        let tokens = token_tensor(&PROMPT, 1, PROMPT.len(), &device).unwrap();
        let burn_logits: Vec<f32> = model
            .forward(tokens)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        let packed = PackedModel::from_weights(&config, &w, options(Format::I2S)).unwrap();
        let mut cache = packed.new_cache();
        let got = packed.forward(&mut cache, &PROMPT, Logits::All).unwrap();
        let diff = max_abs_diff(&got, &burn_logits);
        let tol = 0.06 * max_abs(&burn_logits);
        assert!(diff <= tol, "{activation:?}: diff {diff} > {tol}");
        let vocab = config.vocab_size;
        let argmax = |r: &[f32]| bitnet_model::runtime::sampling::argmax(r);
        let same = got
            .chunks(vocab)
            .zip(burn_logits.chunks(vocab))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count();
        assert!(
            same + 1 >= PROMPT.len(),
            "argmax agrees on {same}/{}",
            PROMPT.len()
        );
    }
}

#[test]
fn full_precision_twin_runs_in_the_reference_only() {
    let config = small(Activation::Silu).full_precision_twin();
    let w = random_weights(&config, 5);
    let err = PackedModel::from_weights(&config, &w, PackOptions::default()).unwrap_err();
    assert!(err.to_string().contains("full precision"), "{err}");
    let device = Device::flex();
    let model = Model::from_weight_map(&config, &w, &device).unwrap();
    let tokens = token_tensor(&PROMPT, 1, PROMPT.len(), &device).unwrap();
    let burn_logits: Vec<f32> = model
        .forward(tokens)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    let reference = ReferenceModel::from_weights(&config, &w, Threads(1)).unwrap();
    let got = reference
        .forward(&mut reference.new_cache(), &PROMPT, Logits::All)
        .unwrap();
    let diff = max_abs_diff(&got, &burn_logits);
    assert!(diff < 1e-3 * (1.0 + max_abs(&burn_logits)), "diff {diff}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let config = small(Activation::Silu);
    let w = random_weights(&config, 1);
    let packed = PackedModel::from_weights(&config, &w, PackOptions::default()).unwrap();
    let mut cache = packed.new_cache();
    let err = packed
        .forward(&mut cache, &[1, 300], Logits::Last)
        .unwrap_err();
    assert!(err.to_string().contains("token id 300"), "{err}");
    assert!(packed.forward(&mut cache, &[], Logits::Last).is_err());
    let long = vec![1u32; 33];
    let err = packed.forward(&mut cache, &long, Logits::Last).unwrap_err();
    assert!(err.to_string().contains("context length 32"), "{err}");
    assert!(cache.is_empty());
    // Generation stops at the context end instead of failing.
    let g = packed
        .generate_tokens(
            &[1; 30],
            &GenerateOptions {
                max_new_tokens: 10,
                sampling: SamplingConfig::greedy(),
                stop_tokens: vec![],
            },
            |_| true,
        )
        .unwrap();
    assert_eq!(g.prompt_tokens + g.tokens.len(), 32 + 1);
    // Rows must fill the format's blocks.
    let mut odd = small(Activation::Silu);
    odd.hidden_size = 192;
    odd.n_heads = 3;
    odd.n_kv_heads = 3;
    let w = random_weights(&odd, 1);
    let err = PackedModel::from_weights(&odd, &w, options(Format::Tq2_0)).unwrap_err();
    assert!(err.to_string().contains("blk.0.attn_q.weight"), "{err}");
}

#[test]
fn same_seed_same_generation() {
    let config = small(Activation::Silu);
    let w = random_weights(&config, 9);
    let packed = PackedModel::from_weights(&config, &w, PackOptions::default()).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 8,
        sampling: SamplingConfig {
            temperature: 1.0,
            top_k: 50,
            top_p: 0.9,
            seed: 123,
        },
        stop_tokens: vec![],
    };
    let mut streamed = Vec::new();
    let a = packed
        .generate_tokens(&PROMPT, &opts, |t| {
            streamed.push(t);
            true
        })
        .unwrap();
    let b = packed.generate_tokens(&PROMPT, &opts, |_| true).unwrap();
    assert_eq!(a.tokens.len(), 8);
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.tokens, streamed);
    // Greedy generation equals the argmax of the reference model's logits step by step.
    let greedy = GenerateOptions {
        sampling: SamplingConfig::greedy(),
        ..opts
    };
    let g = packed.generate_tokens(&PROMPT, &greedy, |_| true).unwrap();
    let mut cache = packed.new_cache();
    let mut logits = packed.forward(&mut cache, &PROMPT, Logits::Last).unwrap();
    for &t in &g.tokens {
        assert_eq!(bitnet_model::runtime::sampling::argmax(&logits), t);
        logits = packed.forward(&mut cache, &[t], Logits::Last).unwrap();
    }
}

mod from_gguf {
    use super::*;
    use bitnet_model::data::tokenizer::TextTokenizer;
    use bitnet_model::export::{
        EmbeddingType, ExportOptions, Target, TernaryType, export_gguf, import_gguf,
    };
    use bitnet_model::runtime::load::MAX_CONTEXT;
    use gguf_io::{GgmlType, GgufBuilder, GgufFile, Value};
    use std::path::Path;

    fn tokenizer() -> TextTokenizer {
        let texts: Vec<String> = (0..20)
            .map(|i| format!("packed weights load straight from the file {i}"))
            .collect();
        TextTokenizer::train(texts.iter().map(String::as_str), 300).unwrap()
    }

    /// The shared prompt, inside a vocabulary of `vocab` tokens.
    fn prompt(vocab: usize) -> Vec<u32> {
        PROMPT.iter().map(|&t| t % vocab as u32).collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Copies `src` to `dst`, replacing metadata values and optionally one tensor's type.
    fn rewrite(src: &Path, dst: &Path, meta: &[(&str, Value)], retype: Option<(&str, GgmlType)>) {
        let f = GgufFile::open(src).unwrap();
        let mut b = GgufBuilder::new();
        for (k, v) in f.metadata().iter() {
            if k == "general.alignment" {
                continue;
            }
            let v = meta
                .iter()
                .find(|(m, _)| *m == k)
                .map_or(v.clone(), |(_, v)| v.clone());
            b.add_metadata(k, v).unwrap();
        }
        let mut datas = Vec::new();
        for t in f.views() {
            let (ty, data) = match retype {
                Some((n, ty)) if n == t.name() => {
                    let n_bytes = ty.n_bytes(t.dims()).unwrap() as usize;
                    (ty, vec![0u8; n_bytes])
                }
                _ => (t.ty(), t.data().to_vec()),
            };
            b.add_tensor(t.name(), t.dims(), ty).unwrap();
            datas.push((t.name().to_string(), data));
        }
        let mut w = b.create(dst).unwrap();
        for (n, d) in &datas {
            w.write_tensor(n, d).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn packed_tensors_load_as_stored_with_the_f32_detours_logits() {
        let dir = tempfile::tempdir().unwrap();
        let tok = tokenizer();
        let mut config = small(Activation::Silu);
        config.vocab_size = tok.vocab_size();
        let w = random_weights(&config, 21);
        for (target, format) in [
            (Target::LlamaCpp(TernaryType::Tq2_0), Format::Tq2_0),
            (Target::LlamaCpp(TernaryType::Tq1_0), Format::Tq1_0),
            (Target::BitnetCpp, Format::I2S),
        ] {
            let path = dir.path().join(format!("{format}.gguf"));
            let export = ExportOptions {
                target,
                embedding: EmbeddingType::F32,
                name: "t".into(),
            };
            export_gguf(&path, &config, &w, &tok, &export).unwrap();
            let p = prompt(config.vocab_size);
            let (direct, info) = PackedModel::from_gguf(&path, Threads(2)).unwrap();
            assert_eq!(info.projection_types, vec![(format.name().to_string(), 14)]);
            assert_eq!(info.packed_bytes, direct.packed_bytes());
            let got = direct
                .forward(&mut direct.new_cache(), &p, Logits::All)
                .unwrap();
            // The same packed matrices built from the latent weights: bit for bit.
            let packed = PackedModel::from_weights(&config, &w, options_for(format)).unwrap();
            let same = packed
                .forward(&mut packed.new_cache(), &p, Logits::All)
                .unwrap();
            assert_eq!(bits(&got), bits(&same), "{format}");
            // The f32 detour (import, then re-pack as I2_S): equal up to the rounding of the
            // reconstructed per-tensor scale and the int8 near-ties it can flip.
            let imported = import_gguf(&path).unwrap();
            let detour =
                PackedModel::from_weights(&config, &imported.weights, options(Format::I2S))
                    .unwrap();
            let slow = detour
                .forward(&mut detour.new_cache(), &p, Logits::All)
                .unwrap();
            let diff = max_abs_diff(&got, &slow);
            assert!(
                diff <= 0.03 * max_abs(&slow),
                "{format}: {diff} vs {}",
                max_abs(&slow)
            );
        }
    }

    fn options_for(format: Format) -> PackOptions {
        options(format)
    }

    #[test]
    fn hostile_headers_are_refused_before_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let tok = tokenizer();
        let mut config = small(Activation::Silu);
        config.vocab_size = tok.vocab_size();
        let w = random_weights(&config, 3);
        let good = dir.path().join("good.gguf");
        export_gguf(&good, &config, &w, &tok, &ExportOptions::llama_cpp()).unwrap();
        let bad = dir.path().join("bad.gguf");
        let err = |meta: &[(&str, Value)], retype: Option<(&str, GgmlType)>| {
            rewrite(&good, &bad, meta, retype);
            PackedModel::from_gguf(&bad, Threads(1))
                .unwrap_err()
                .to_string()
        };
        // A context of 2^40 positions (a KV cache sized from it would be petabytes).
        let e = err(&[("bitnet.context_length", Value::U64(1 << 40))], None);
        assert!(e.contains("exceeds the supported"), "{e}");
        // A layer count the file cannot hold.
        let e = err(&[("bitnet.block_count", Value::U32(1 << 30))], None);
        assert!(e.contains("layers, but the file has only"), "{e}");
        // A hidden size that disagrees with the tensors (nothing is sized from it): the
        // shared header reader refuses it against the declared RoPE width, or the tensor
        // shapes do.
        let e = err(&[("bitnet.embedding_length", Value::U32(1 << 31))], None);
        assert!(
            e.contains("metadata implies") || e.contains("hidden_size") || e.contains("head width"),
            "{e}"
        );
        // A projection type the runtime cannot read.
        let e = err(&[], Some(("blk.0.attn_q.weight", GgmlType::IQ2_XXS)));
        assert!(e.contains("blk.0.attn_q.weight"), "{e}");
        // The largest accepted context loads, and costs nothing until positions are fed.
        rewrite(
            &good,
            &bad,
            &[("bitnet.context_length", Value::U32(MAX_CONTEXT as u32))],
            None,
        );
        let (m, _) = PackedModel::from_gguf(&bad, Threads(1)).unwrap();
        let mut cache = m.new_cache();
        assert_eq!(cache.capacity(), MAX_CONTEXT);
        m.forward(&mut cache, &prompt(config.vocab_size), Logits::Last)
            .unwrap();
        assert_eq!(cache.len(), PROMPT.len());
    }
}
