//! `cargo xtask bench train`: training tokens/s and peak memory, ternary BitLinear vs the
//! full-precision twin (the baseline, measured in the same run), for the `tiny` preset
//! and one larger preset. Writes `$MAGNET_BENCH_OUT/train.json`.
//!
//! Environment: `MAGNET_BENCH_STEPS` (timed steps per case, default 5),
//! `MAGNET_BENCH_LARGE` (the larger preset, default `genkidama-363m`; `none` skips it).
//!
//! Each case runs in its own child process (this binary re-executed with
//! `MAGNET_BENCH_CASE=<index>`), so the peak resident set size is that case's own and no
//! allocator state carries over from one case to the next.

use bitnet_model::data::{TokenData, TokenStream};
use bitnet_model::rng::SplitMix64;
use bitnet_model::train::{TrainConfig, Trainer};
use bitnet_model::{ModelConfig, WeightKind};
use burn::tensor::Device;
use std::sync::Arc;
use std::time::Instant;

/// Peak resident set size of this process in bytes (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn random_data(vocab: usize, n: usize) -> TokenData {
    let mut rng = SplitMix64::new(11);
    let mut draw =
        |n: usize| -> Vec<u32> { (0..n).map(|_| rng.below(vocab as u64) as u32).collect() };
    TokenData {
        train: TokenStream::from_vec(draw(n)),
        val: TokenStream::from_vec(draw(4096)),
        token_bytes: Arc::new(vec![3; vocab]),
    }
}

struct Case {
    preset: String,
    kind: WeightKind,
    batch: usize,
    seq: usize,
}

fn measure(case: &Case, steps: usize) -> serde_json::Value {
    let mut model = ModelConfig::preset(&case.preset).expect("preset");
    if case.kind == WeightKind::FullPrecision {
        model = model.full_precision_twin();
    }
    let train = TrainConfig {
        steps: steps + 1,
        batch_size: case.batch,
        seq_len: case.seq,
        warmup_steps: 1,
        ..TrainConfig::default()
    };
    let data = random_data(model.vocab_size, 200_000);
    let mut trainer =
        Trainer::new(model.clone(), train.clone(), data, &Device::flex()).expect("trainer");
    trainer.step().expect("warm-up step");
    let mut times = Vec::new();
    for _ in 0..steps {
        let t0 = Instant::now();
        trainer.step().expect("step");
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tokens_per_s = train.tokens_per_step() as f64 / median;
    let peak = peak_rss();
    eprintln!(
        "{} {:?}: batch {}x{}, median {:.3} s/step, {:.0} tokens/s, peak RSS {:.0} MiB",
        case.preset,
        case.kind,
        case.batch,
        case.seq,
        median,
        tokens_per_s,
        peak.unwrap_or(0) as f64 / 1048576.0
    );
    serde_json::json!({
        "preset": case.preset,
        "weights": format!("{:?}", case.kind),
        "params": model.param_count(),
        "batch_size": case.batch,
        "seq_len": case.seq,
        "steps_timed": steps,
        "median_step_s": median,
        "tokens_per_s": tokens_per_s,
        "peak_rss_bytes": peak,
    })
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let steps: usize = std::env::var("MAGNET_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let large = std::env::var("MAGNET_BENCH_LARGE").unwrap_or_else(|_| "genkidama-363m".into());
    let mut cases = Vec::new();
    for kind in [WeightKind::FullPrecision, WeightKind::Ternary] {
        cases.push(Case {
            preset: "tiny".into(),
            kind,
            batch: 8,
            seq: 128,
        });
    }
    if large != "none" {
        for kind in [WeightKind::FullPrecision, WeightKind::Ternary] {
            cases.push(Case {
                preset: large.clone(),
                kind,
                batch: 1,
                seq: 64,
            });
        }
    }
    if let Ok(index) = std::env::var("MAGNET_BENCH_CASE") {
        let case = index
            .parse::<usize>()
            .ok()
            .and_then(|i| cases.get(i))
            .expect("MAGNET_BENCH_CASE names a case");
        println!("{}", measure(case, steps));
        return;
    }
    let exe = std::env::current_exe().expect("path of this bench binary");
    let results: Vec<serde_json::Value> = (0..cases.len())
        .map(|i| {
            let out = std::process::Command::new(&exe)
                .env("MAGNET_BENCH_CASE", i.to_string())
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("run a bench case");
            assert!(
                out.status.success(),
                "bench case {i} failed: {}",
                out.status
            );
            let line = String::from_utf8_lossy(&out.stdout);
            serde_json::from_str(line.trim()).expect("bench case prints one JSON line")
        })
        .collect();
    let ratio = |preset: &str| {
        let tps = |w: &str| {
            results
                .iter()
                .find(|r| r["preset"] == preset && r["weights"] == w)
                .and_then(|r| r["tokens_per_s"].as_f64())
        };
        Some(tps("Ternary")? / tps("FullPrecision")?)
    };
    let report = serde_json::json!({
        "area": "train",
        "backend": "burn 0.22.1 flex (CPU), autodiff, f32",
        "threads": std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        "baseline": "full-precision twin (same architecture, plain linear layers)",
        "results": results,
        "ternary_over_fp_tokens_per_s": {
            "tiny": ratio("tiny"),
            "large": if large == "none" { None } else { ratio(&large) },
        },
    });
    let out = std::env::var("MAGNET_BENCH_OUT").unwrap_or_else(|_| "target/bench".into());
    std::fs::create_dir_all(&out).expect("bench output dir");
    let path = std::path::Path::new(&out).join("train.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json")).expect("write");
    eprintln!("wrote {}", path.display());
}
