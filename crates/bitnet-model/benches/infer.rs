//! `cargo xtask bench infer`: prompt (prefill) and generation tokens/s of the packed CPU
//! model, with the unpacked f32 reference (dequantized ternary weights, fake-quantized
//! activations, the same graph) measured in the same run as the baseline. Random weights,
//! `tiny` and one larger preset. Writes `$MAGNET_BENCH_OUT/infer.json`.
//!
//! Environment: `MAGNET_BENCH_LARGE` (default `genkidama-363m`; `none` skips it),
//! `MAGNET_BENCH_THREADS` (default: all cores), `MAGNET_BENCH_REPEATS` (default 3).

use bitnet_model::ModelConfig;
use bitnet_model::runtime::{
    Format, GenerateOptions, PackOptions, PackedModel, Projection, ReferenceModel, SamplingConfig,
    Threads, Transformer, random_weights,
};
use std::time::Instant;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median prompt and generation tokens/s over `repeats` greedy runs.
fn measure<P: Projection>(
    model: &Transformer<P>,
    prompt_len: usize,
    gen_len: usize,
    repeats: usize,
) -> (f64, f64) {
    let vocab = model.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..prompt_len as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    let options = GenerateOptions {
        max_new_tokens: gen_len,
        sampling: SamplingConfig::greedy(),
        stop_tokens: vec![],
    };
    let mut prompt_tps = Vec::new();
    let mut gen_tps = Vec::new();
    for _ in 0..repeats {
        let g = model
            .generate_tokens(&prompt, &options, |_| true)
            .expect("generation");
        prompt_tps.push(g.prompt_tokens_per_s());
        // The first token comes from the prefill logits; the rest are decode steps.
        gen_tps.push((g.tokens.len() - 1) as f64 / g.gen_s.max(1e-9));
    }
    (median(prompt_tps), median(gen_tps))
}

fn main() {
    let out = std::env::var("MAGNET_BENCH_OUT").unwrap_or_else(|_| "target/bench".into());
    let threads = env_usize(
        "MAGNET_BENCH_THREADS",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
    );
    let repeats = env_usize("MAGNET_BENCH_REPEATS", 3).max(1);
    let large = std::env::var("MAGNET_BENCH_LARGE").unwrap_or_else(|_| "genkidama-363m".into());
    let mut presets = vec![("tiny".to_string(), 64, 32)];
    if large != "none" {
        presets.push((large, 32, 16));
    }
    let mut results = Vec::new();
    for (preset, prompt_len, gen_len) in presets {
        let config = ModelConfig::preset(&preset).expect("preset");
        let t = Instant::now();
        let weights = random_weights(&config, 1);
        eprintln!(
            "{preset}: random weights in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        let mut row = serde_json::json!({
            "preset": preset,
            "params": config.param_count(),
            "prompt_tokens": prompt_len,
            "gen_tokens": gen_len,
        });
        let reference = ReferenceModel::from_weights(&config, &weights, Threads(threads))
            .expect("reference model");
        let (rp, rg) = measure(&reference, prompt_len, gen_len, repeats);
        drop(reference);
        eprintln!("{preset} f32 reference: prompt {rp:.1} tok/s, generation {rg:.1} tok/s");
        row["reference"] = serde_json::json!({"prompt_tokens_per_s": rp, "gen_tokens_per_s": rg});
        for format in [Format::I2S, Format::Tq2_0] {
            let options = PackOptions {
                format,
                threads: Threads(threads),
            };
            let packed = PackedModel::from_weights(&config, &weights, options).expect("packed");
            let (pp, pg) = measure(&packed, prompt_len, gen_len, repeats);
            eprintln!(
                "{preset} packed {format}: prompt {pp:.1} tok/s ({:.2}x), generation {pg:.1} tok/s ({:.2}x), {} MB packed",
                pp / rp,
                pg / rg,
                packed.packed_bytes() / 1_000_000
            );
            row[format.name()] = serde_json::json!({
                "prompt_tokens_per_s": pp,
                "gen_tokens_per_s": pg,
                "prompt_speedup_vs_reference": pp / rp,
                "gen_speedup_vs_reference": pg / rg,
                "packed_projection_bytes": packed.packed_bytes(),
            });
        }
        results.push(row);
    }
    let report = serde_json::json!({
        "area": "infer",
        "threads": threads,
        "repeats": repeats,
        "baseline": "f32 reference: dequantized ternary weights, fake-quantized int8 activations, same graph and threads",
        "results": results,
    });
    std::fs::create_dir_all(&out).expect("bench output dir");
    let path = std::path::Path::new(&out).join("infer.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json")).expect("write");
    eprintln!("wrote {}", path.display());
}
