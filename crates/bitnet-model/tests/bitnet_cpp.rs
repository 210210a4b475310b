//! bitnet.cpp (microsoft/BitNet, built beside the project by
//! `examples/genkidama/scripts/build_bitnet_cpp.sh`) as the oracle for the I2_S files its own
//! quantizer writes, and for our exports:
//! - `llama-quantize --allow-requantize IN OUT I2_S 1` (one thread, as bitnet.cpp's
//!   `setup_env.py` runs it; more threads write a broken tensor, docs/gguf.md) from our TQ2_0
//!   export and from F32 / F16 files holding the same ternarized weights: each import here
//!   holds exactly the ternary matrices we started from, and scores like bitnet.cpp's own
//!   `llama-perplexity` on the same text;
//! - our own I2_S and TQ2_0 exports load and score in bitnet.cpp like here.
//!
//! Needs `MAGNET_BITNET_CPP` = bitnet.cpp's build folder (with `bin/llama-quantize` and
//! `bin/llama-perplexity`); without it the test says so and skips. The numbers are in
//! docs/gguf.md.

use bitnet_model::config::{Activation, ModelConfig, WeightKind};
use bitnet_model::data::tokenizer::TextTokenizer;
use bitnet_model::export::{ExportOptions, export_gguf};
use bitnet_model::runtime::{Logits, PackOptions, PackedModel, random_weights};
use bitnet_model::store::ModelDir;
use gguf_io::{GgmlType, GgufBuilder, GgufFile};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Context of one perplexity chunk, and chunks scored.
const N_CTX: usize = 128;
const N_CHUNKS: usize = 6;

fn bitnet_cpp() -> Option<PathBuf> {
    let dir = std::env::var_os("MAGNET_BITNET_CPP");
    if dir.is_none() {
        eprintln!(
            "skipping the bitnet.cpp cross-check: MAGNET_BITNET_CPP (bitnet.cpp's build \
             folder) is not set; build it with examples/genkidama/scripts/build_bitnet_cpp.sh"
        );
    }
    dir.map(PathBuf::from)
}

fn corpus_lines(lang: &str) -> Vec<String> {
    let dir = magnet_corpus::shipped_dir().unwrap();
    std::fs::read_to_string(dir.join(lang).join("gn.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn run(bin: &Path, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{text}",
        bin.display()
    );
    text
}

/// bitnet.cpp's `llama-perplexity` on `text`, chunks of N_CTX, one sequence per batch.
fn their_ppl(build: &Path, gguf: &Path, text: &Path) -> f64 {
    let n_ctx = N_CTX.to_string();
    let chunks = N_CHUNKS.to_string();
    let out = run(
        &build.join("bin/llama-perplexity"),
        &[
            "-m".as_ref(),
            gguf.as_os_str(),
            "-f".as_ref(),
            text.as_os_str(),
            "-c".as_ref(),
            n_ctx.as_ref(),
            "-b".as_ref(),
            n_ctx.as_ref(),
            "--chunks".as_ref(),
            chunks.as_ref(),
            "-t".as_ref(),
            "2".as_ref(),
        ],
    );
    let line = out
        .lines()
        .find(|l| l.contains("Final estimate: PPL ="))
        .unwrap_or_else(|| panic!("no final estimate in llama-perplexity's output:\n{out}"));
    line.split("PPL =")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Our perplexity computed as `llama-perplexity` does: chunk i is tokens
/// `[i·n_ctx, (i+1)·n_ctx)` with the first replaced by BOS when the file asks for BOS, and
/// the tokens of the second half are scored from the positions before them.
fn our_ppl(gguf: &Path, text: &str) -> f64 {
    let m = ModelDir::open(gguf).unwrap();
    let model = PackedModel::from_weights(&m.config, &m.weights, PackOptions::default()).unwrap();
    let tokens = m.encode(text).unwrap();
    assert!(tokens.len() >= N_CTX * N_CHUNKS, "{} tokens", tokens.len());
    let v = m.config.vocab_size;
    let first = N_CTX / 2;
    let (mut nll, mut count) = (0.0f64, 0usize);
    for c in 0..N_CHUNKS {
        let mut chunk = tokens[c * N_CTX..(c + 1) * N_CTX].to_vec();
        if m.add_bos {
            chunk[0] = m.bos_id.expect("add_bos without a BOS id");
        }
        let logits = model
            .forward(&mut model.new_cache(), &chunk, Logits::All)
            .unwrap();
        for p in first..N_CTX - 1 {
            let row = &logits[p * v..(p + 1) * v];
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)) as f64;
            let lse = row
                .iter()
                .map(|&x| (x as f64 - max).exp())
                .sum::<f64>()
                .ln()
                + max;
            nll += lse - row[chunk[p + 1] as usize] as f64;
            count += 1;
        }
    }
    (nll / count as f64).exp()
}

/// The file with every ternary projection stored as `ty` (F32 / F16) values: what
/// bitnet.cpp's converter writes before its quantizer runs.
fn unquantized_copy(src: &Path, dst: &Path, ty: GgmlType) {
    let file = GgufFile::open(src).unwrap();
    let mut b = GgufBuilder::new();
    for (key, value) in file.metadata().iter() {
        if key != "general.file_type" && key != "general.alignment" {
            b.add_metadata(key, value.clone()).unwrap();
        }
    }
    let file_type = u32::from(ty != GgmlType::F32);
    b.add_metadata("general.file_type", file_type).unwrap();
    let mut data = Vec::new();
    for view in file.views() {
        let (ty, bytes) = if view.ty().is_quantized() {
            let values = view.to_f32().unwrap();
            (ty, gguf_io::convert::quantize(ty, &values).unwrap())
        } else {
            (view.ty(), view.data().to_vec())
        };
        b.add_tensor(view.name(), view.dims(), ty).unwrap();
        data.push((view.name().to_owned(), bytes));
    }
    let mut w = b.create(dst).unwrap();
    for (name, bytes) in &data {
        w.write_tensor(name, bytes).unwrap();
    }
    w.finish().unwrap();
}

/// Ternary codes and scale of a latent matrix ternarized per tensor (absmax of a ternary
/// matrix times its scale is the scale).
fn codes(w: &[f32]) -> (Vec<i8>, f32) {
    let s = w.iter().fold(0.0f32, |a, x| a.max(x.abs()));
    (w.iter().map(|x| (x / s).round() as i8).collect(), s)
}

#[test]
fn bitnet_cpp_quantizer_files_import_and_score_alike() {
    let Some(build) = bitnet_cpp() else { return };
    let dir = tempfile::tempdir().unwrap();
    let lines = corpus_lines("en");
    let train: Vec<&str> = lines[..300].iter().map(String::as_str).collect();
    let tok = TextTokenizer::train(train.iter().copied(), 512).unwrap();
    let text: String = lines[300..]
        .iter()
        .step_by(3)
        .take(120)
        .fold(String::new(), |t, l| t + l + "\n");
    let text_path = dir.path().join("text.txt");
    std::fs::write(&text_path, &text).unwrap();

    // SiLU and tied: the only graph the fork at 406a5036 has (`bitnet`); it has no
    // `bitnet-b1.58` (ReLU²) architecture.
    let config = ModelConfig {
        vocab_size: 512,
        hidden_size: 256,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn_hidden_size: 512,
        context_length: N_CTX,
        rope_theta: 10_000.0,
        norm_eps: 1e-5,
        activation: Activation::Silu,
        tied_embeddings: true,
        weights: WeightKind::Ternary,
    };
    let w = random_weights(&config, 14);
    let ours_tq2 = dir.path().join("ours-tq2_0.gguf");
    let ours_i2s = dir.path().join("ours-i2_s.gguf");
    export_gguf(&ours_tq2, &config, &w, &tok, &ExportOptions::llama_cpp()).unwrap();
    export_gguf(&ours_i2s, &config, &w, &tok, &ExportOptions::bitnet_cpp()).unwrap();
    let f32_file = dir.path().join("f32.gguf");
    let f16_file = dir.path().join("f16.gguf");
    unquantized_copy(&ours_tq2, &f32_file, GgmlType::F32);
    unquantized_copy(&ours_tq2, &f16_file, GgmlType::F16);

    let quantize = build.join("bin/llama-quantize");
    let mut theirs = Vec::new();
    for (what, src) in [("TQ2_0", &ours_tq2), ("F32", &f32_file), ("F16", &f16_file)] {
        let out = dir.path().join(format!("bitnet-cpp-i2_s-from-{what}.gguf"));
        run(
            &quantize,
            &[
                "--allow-requantize".as_ref(),
                src.as_os_str(),
                out.as_os_str(),
                "I2_S".as_ref(),
                "1".as_ref(),
            ],
        );
        theirs.push((format!("bitnet.cpp's I2_S from {what}"), out));
    }

    // The imports hold the ternary matrices we exported (codes exactly, scales to f16
    // rounding for the F16 source).
    let reference = ModelDir::open(&ours_tq2).unwrap();
    for (what, path) in &theirs {
        let m = ModelDir::open(path).unwrap();
        assert_eq!(m.config, reference.config, "{what}");
        for (name, t) in &reference.weights {
            if !ModelConfig::is_ternary_tensor(name) {
                continue;
            }
            let (c_ref, s_ref) = codes(&t.data);
            let (c, s) = codes(&m.weights[name].data);
            assert!(c == c_ref, "{what}: {name} codes differ");
            assert!(
                (s - s_ref).abs() <= 1e-3 * s_ref,
                "{what}: {name} scale {s} vs {s_ref}"
            );
        }
    }

    let mut rows = vec![
        ("our TQ2_0 export".to_owned(), ours_tq2.clone()),
        ("our I2_S export".to_owned(), ours_i2s.clone()),
    ];
    rows.extend(theirs);
    let tokens = reference.encode(&text).unwrap().len();
    eprintln!(
        "{tokens} tokens, {N_CHUNKS} chunks of {N_CTX} ({} scored), vocabulary {}",
        N_CHUNKS * (N_CTX - N_CTX / 2 - 1),
        config.vocab_size
    );
    for (what, path) in &rows {
        let theirs = their_ppl(&build, path, &text_path);
        let ours = our_ppl(path, &text);
        eprintln!("{what}: PPL bitnet.cpp {theirs:.4}, ours {ours:.4}");
        // bitnet.cpp quantizes activations per tensor to int8 (I2_S) or to Q8_K per 256
        // values (TQ2_0) and keeps K / V in f16; we quantize per token and keep f32. Those
        // roundings move a random model's PPL by well under 1 %; a wrong layout, norm or
        // RoPE by far more.
        assert!(
            (ours - theirs).abs() < 0.01 * theirs,
            "{what}: PPL ours {ours} vs bitnet.cpp {theirs}"
        );
    }
}
