//! `cargo xtask bench infer`: prompt (prefill) and generation tokens/s of the packed CPU
//! model, with the unpacked f32 reference (dequantized ternary weights, fake-quantized
//! activations, the same graph) measured in the same run as the baseline. Random weights,
//! `tiny` and one larger preset. Writes `$MAGNET_BENCH_OUT/infer.json`.
//!
//! Environment: `MAGNET_BENCH_LARGE` (default `genkidama-363m`; `none` skips it),
//! `MAGNET_BENCH_THREADS` (default: all cores), `MAGNET_BENCH_REPEATS` (default 3).
//!
//! With `MAGNET_BENCH_GGUF=<file>` it instead measures one GGUF file once, the way
//! `cargo xtask bench peer-infer` alternates it with llama.cpp: load to first token
//! (`PackedModel::from_gguf` plus a one-token forward), prefill of `MAGNET_BENCH_PROMPT`
//! tokens (default 256), `MAGNET_BENCH_GEN` decode steps (default 32), and the machine's
//! read bandwidth at the same thread count; it prints one JSON line after `PEER_INFER_JSON `.
//! `MAGNET_BENCH_KV=f32` runs that mode with an f32 KV cache instead of the packed model's
//! f16 one (to measure the difference in one binary), and `MAGNET_BENCH_DECODE=per-op` runs
//! decode steps with one fork-join per operation instead of one parallel region per step.

use bitnet_model::ModelConfig;
use bitnet_model::runtime::{
    Format, GenerateOptions, KvPrecision, PackOptions, PackedModel, Projection, ReferenceModel,
    SamplingConfig, Threads, Transformer, random_weights,
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

/// Read bandwidth (bytes/s) with `threads` threads: the median of 5 passes of a u64 sum
/// over a 1 GiB buffer (each thread one contiguous part), the reference a decoder that
/// streams its weights once per token is limited by.
fn read_bandwidth(threads: usize) -> f64 {
    use rayon::prelude::*;
    let words = (1usize << 30) / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    let mut rates = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let s: u64 = pool.install(|| {
            buf.par_chunks(words.div_ceil(threads))
                .map(|c| {
                    // Eight independent lanes so the loop vectorizes and is not latency bound.
                    let mut acc = [0u64; 8];
                    for w in c.chunks_exact(8) {
                        for i in 0..8 {
                            acc[i] = acc[i].wrapping_add(w[i]);
                        }
                    }
                    acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
                })
                .reduce(|| 0, u64::wrapping_add)
        });
        std::hint::black_box(s);
        rates.push((words * 8) as f64 / t.elapsed().as_secs_f64());
    }
    median(rates)
}

/// One measurement of a GGUF file (see the module docs).
fn gguf_mode(path: &str) {
    let threads = env_usize("MAGNET_BENCH_THREADS", 1);
    let prompt_len = env_usize("MAGNET_BENCH_PROMPT", 256);
    let gen_len = env_usize("MAGNET_BENCH_GEN", 32);
    let t = Instant::now();
    let (model, info) = PackedModel::from_gguf(path, Threads(threads)).expect("load gguf");
    let model = match std::env::var("MAGNET_BENCH_KV").as_deref() {
        Ok("f32") => model.with_kv_precision(KvPrecision::F32),
        _ => model,
    };
    let model = match std::env::var("MAGNET_BENCH_DECODE").as_deref() {
        Ok("per-op") => model.with_decode_region(false),
        _ => model,
    };
    let mut cache = model.new_cache();
    model
        .forward(&mut cache, &[1], bitnet_model::runtime::Logits::Last)
        .expect("first token");
    let load_s = t.elapsed().as_secs_f64();
    let vocab = model.config().vocab_size as u32;
    let prompt: Vec<u32> = (0..prompt_len as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    let mut cache = model.new_cache();
    let t = Instant::now();
    let logits = model
        .forward(&mut cache, &prompt, bitnet_model::runtime::Logits::Last)
        .expect("prefill");
    let prefill_s = t.elapsed().as_secs_f64();
    let mut next = argmax(&logits);
    let t = Instant::now();
    for _ in 0..gen_len {
        let l = model
            .forward(&mut cache, &[next], bitnet_model::runtime::Logits::Last)
            .expect("decode");
        next = argmax(&l);
    }
    let decode_s = t.elapsed().as_secs_f64();
    let bw = read_bandwidth(threads);
    let row = serde_json::json!({
        "threads": threads,
        "load_to_first_token_s": load_s,
        "prefill_tokens": prompt_len,
        "prefill_tokens_per_s": prompt_len as f64 / prefill_s,
        "decode_tokens": gen_len,
        "decode_tokens_per_s": gen_len as f64 / decode_s,
        "packed_bytes": info.packed_bytes,
        "projection_types": info.projection_types,
        "kernel_path": ternary_core::KernelPath::from_env().map_or("?", ternary_core::KernelPath::name),
        "read_bandwidth_bytes_per_s": bw,
        "kv_cache": format!("{:?}", model.kv_precision()).to_lowercase(),
        "decode": std::env::var("MAGNET_BENCH_DECODE").unwrap_or_else(|_| "region".into()),
    });
    println!("PEER_INFER_JSON {row}");
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0 as u32
}

fn main() {
    if let Ok(path) = std::env::var("MAGNET_BENCH_GGUF") {
        gguf_mode(&path);
        return;
    }
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
