//! `cargo xtask bench train`: training tokens/s and peak memory of our burn trainer against
//! the peer a user would pick instead, PyTorch eager on the same CPU and thread count
//! (`benches/train_torch.py`, the same graph written plainly), in the same run, alternating
//! the two, for ternary BitLinear and the full-precision twin. Shapes: the `tiny` preset and
//! a mid-size shape (`mid`: hidden 1024, 8 layers, FFN 2816, vocabulary 32,000, context
//! 512). Writes `$MAGNET_BENCH_OUT/train.json` with the medians over repeats, the ratio ours
//! / PyTorch per shape and weight kind, and the CPU model and features.
//!
//! Both sides start from the same weights (ours writes them as safetensors, the script
//! loads them) and score the same check batch before training, so the report can show that
//! they train the same architecture: equal parameter counts and initial losses.
//!
//! Environment: `MAGNET_BENCH_STEPS` (timed steps per case, default 5),
//! `MAGNET_BENCH_REPEATS` (alternated rounds, default 3), `MAGNET_BENCH_THREADS` (default:
//! all cores), `MAGNET_BENCH_SHAPES` (comma list of `tiny`, `mid` or a preset name; default
//! `tiny,mid`), `MAGNET_PYTHON` (a python with torch; unset or `none` measures ours alone).
//!
//! Each case runs in its own child process (this binary re-executed with
//! `MAGNET_BENCH_CASE=<json>`, or the Python script), so the thread count and the peak
//! resident set size are that case's own and no allocator state carries over.

use bitnet_model::ModelConfig;
use bitnet_model::data::{TokenData, TokenStream};
use bitnet_model::rng::SplitMix64;
use bitnet_model::train::{TrainConfig, Trainer};
use burn::module::Module;
use burn::tensor::Device;
use std::path::{Path, PathBuf};
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

/// One measured configuration; serialized into the child's environment.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Case {
    shape: String,
    ternary: bool,
    batch: usize,
    seq: usize,
    steps: usize,
    threads: usize,
    /// Where ours writes the initial weights and the check batch for the peer.
    init_dir: PathBuf,
}

impl Case {
    fn model(&self) -> ModelConfig {
        let model = shape_config(&self.shape);
        if self.ternary {
            model
        } else {
            model.full_precision_twin()
        }
    }

    fn kind(&self) -> &'static str {
        if self.ternary {
            "ternary"
        } else {
            "full_precision"
        }
    }

    fn train_config(&self) -> TrainConfig {
        TrainConfig {
            steps: self.steps + 1,
            batch_size: self.batch,
            seq_len: self.seq,
            warmup_steps: 1,
            ..TrainConfig::default()
        }
    }
}

/// A preset name (`tiny`, `mid`, ...).
fn shape_config(name: &str) -> ModelConfig {
    ModelConfig::preset(name).unwrap_or_else(|e| panic!("MAGNET_BENCH_SHAPES: {e}"))
}

/// The batch of each shape: the main job's 8 x 128 for tiny, one 512-token sequence x 2
/// for the mid-size shape (its step is ~50x more work).
fn shape_batch(name: &str) -> (usize, usize) {
    match name {
        "tiny" => (8, 128),
        "mid" => (2, 512),
        _ => (1, 64),
    }
}

const CHECK_TOKENS: &str = "check_tokens.u32";
const INIT_WEIGHTS: &str = "init.safetensors";

/// Ours, in this (child) process: writes the initial weights and the check batch for the
/// peer, then times `steps` optimizer steps after one warm-up step.
fn measure_ours(case: &Case) -> serde_json::Value {
    let model = case.model();
    let train = case.train_config();
    let data = random_data(model.vocab_size, 200_000);
    let check: Vec<u32> = data.val.tokens()[..case.batch * (case.seq + 1)].to_vec();
    let token_bytes = data.token_bytes.clone();
    let device = Device::flex();
    let mut trainer = Trainer::new(model.clone(), train.clone(), data, &device).expect("trainer");
    std::fs::create_dir_all(&case.init_dir).expect("init dir");
    let weights = trainer.weights();
    let bytes =
        bitnet_model::store::encode_safetensors(&weights, &std::collections::BTreeMap::default());
    std::fs::write(case.init_dir.join(INIT_WEIGHTS), bytes).expect("write init weights");
    let raw: Vec<u8> = check.iter().flat_map(|t| t.to_le_bytes()).collect();
    std::fs::write(case.init_dir.join(CHECK_TOKENS), raw).expect("write check tokens");
    let initial = bitnet_model::train::evaluate_tokens(
        &trainer.model().valid(),
        &check,
        case.seq + 1,
        case.batch,
        &token_bytes,
        &device,
    )
    .expect("initial loss")
    .loss;
    trainer.step().expect("warm-up step");
    let mut times = Vec::new();
    for _ in 0..case.steps {
        let t0 = Instant::now();
        trainer.step().expect("step");
        times.push(t0.elapsed().as_secs_f64());
    }
    let median = median(&mut times.clone());
    serde_json::json!({
        "params": model.param_count(),
        "initial_loss": initial,
        "median_step_s": median,
        "step_s": times,
        "tokens_per_s": train.tokens_per_step() as f64 / median,
        "peak_rss_bytes": peak_rss(),
    })
}

/// PyTorch, in a Python child process, from the weights ours wrote for the same case.
fn measure_torch(case: &Case, python: &Path) -> Result<serde_json::Value, String> {
    let train = case.train_config();
    let spec = serde_json::json!({
        "model": case.model(),
        "batch_size": case.batch,
        "seq_len": case.seq,
        "steps": case.steps,
        "threads": case.threads,
        "lr": train.lr,
        "weight_decay": train.weight_decay,
        "beta1": train.beta1,
        "beta2": train.beta2,
        "grad_clip": train.grad_clip,
        "seed": train.seed,
        "vocab_tokens": 200_000,
        "init": case.init_dir.join(INIT_WEIGHTS),
        "check_tokens": case.init_dir.join(CHECK_TOKENS),
    });
    let spec_path = case.init_dir.join("torch_case.json");
    std::fs::write(&spec_path, spec.to_string()).map_err(|e| e.to_string())?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/train_torch.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(&spec_path)
        .env("OMP_NUM_THREADS", case.threads.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!("{} exited with {}", script.display(), out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("peer output `{line}`: {e}"))
}

fn run_ours_child(case: &Case) -> serde_json::Value {
    let exe = std::env::current_exe().expect("path of this bench binary");
    let out = std::process::Command::new(&exe)
        .env(
            "MAGNET_BENCH_CASE",
            serde_json::to_string(case).expect("case json"),
        )
        .env("RAYON_NUM_THREADS", case.threads.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run a bench case");
    assert!(
        out.status.success(),
        "bench case {case:?} failed: {}",
        out.status
    );
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).expect("bench case prints one JSON line")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU model and the SIMD features that change which kernels run.
fn cpu_info() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".to_string(), |s| s.trim().to_string());
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    let wanted = [
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
    ];
    serde_json::json!({
        "model": model,
        "features": wanted.iter().filter(|f| flags.contains(f)).collect::<Vec<_>>(),
        "load_average": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_string()),
    })
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
        .max(1)
}

fn main() {
    if let Ok(case) = std::env::var("MAGNET_BENCH_CASE") {
        let case: Case = serde_json::from_str(&case).expect("MAGNET_BENCH_CASE is a case");
        println!("{}", measure_ours(&case));
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let steps = env_usize("MAGNET_BENCH_STEPS", 5);
    let repeats = env_usize("MAGNET_BENCH_REPEATS", 3);
    let threads = env_usize(
        "MAGNET_BENCH_THREADS",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
    );
    let shapes = std::env::var("MAGNET_BENCH_SHAPES").unwrap_or_else(|_| "tiny,mid".into());
    let python = std::env::var_os("MAGNET_PYTHON")
        .filter(|p| p != "none")
        .map(PathBuf::from);
    let out = std::env::var("MAGNET_BENCH_OUT").unwrap_or_else(|_| "target/bench".into());
    let scratch = Path::new(&out).join("train-cases");

    let mut summary = Vec::new();
    let mut runs = Vec::new();
    for shape in shapes.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (batch, seq) = shape_batch(shape);
        for ternary in [true, false] {
            let case = Case {
                shape: shape.to_string(),
                ternary,
                batch,
                seq,
                steps,
                threads,
                init_dir: scratch.join(format!("{shape}-{}", if ternary { "t" } else { "fp" })),
            };
            let (mut ours_tps, mut torch_tps) = (Vec::new(), Vec::new());
            let mut check = serde_json::Value::Null;
            // Alternate the two sides so slow phases of a shared machine hit both.
            for round in 0..repeats {
                let ours = run_ours_child(&case);
                ours_tps.push(ours["tokens_per_s"].as_f64().unwrap_or(f64::NAN));
                let torch = python.as_deref().map(|p| measure_torch(&case, p));
                if let Some(Ok(t)) = &torch {
                    torch_tps.push(t["tokens_per_s"].as_f64().unwrap_or(f64::NAN));
                    if round == 0 {
                        let (a, b) = (ours["initial_loss"].as_f64(), t["initial_loss"].as_f64());
                        check = serde_json::json!({
                            "params_ours": ours["params"],
                            "params_torch": t["params"],
                            "initial_loss_ours": a,
                            "initial_loss_torch": b,
                            "same_architecture": ours["params"] == t["params"]
                                && matches!((a, b), (Some(a), Some(b)) if (a - b).abs() < 1e-3),
                        });
                    }
                }
                eprintln!(
                    "{shape} {} round {round}: ours {:.0} tokens/s{}",
                    case.kind(),
                    ours["tokens_per_s"].as_f64().unwrap_or(f64::NAN),
                    match &torch {
                        Some(Ok(t)) => format!(
                            ", PyTorch {:.0} tokens/s",
                            t["tokens_per_s"].as_f64().unwrap_or(f64::NAN)
                        ),
                        Some(Err(e)) => format!(", PyTorch failed: {e}"),
                        None => String::new(),
                    }
                );
                runs.push(serde_json::json!({
                    "shape": shape, "weights": case.kind(), "round": round,
                    "ours": ours,
                    "torch": match torch { Some(Ok(t)) => t, Some(Err(e)) => serde_json::json!({"error": e}), None => serde_json::Value::Null },
                }));
            }
            let ours_median = median(&mut ours_tps.clone());
            let ours_best = ours_tps.iter().copied().fold(f64::NAN, f64::max);
            let torch_median = (!torch_tps.is_empty()).then(|| median(&mut torch_tps.clone()));
            summary.push(serde_json::json!({
                "shape": shape,
                "weights": case.kind(),
                "params": case.model().param_count(),
                "batch_size": batch,
                "seq_len": seq,
                "ours_tokens_per_s_median": ours_median,
                "ours_tokens_per_s_best": ours_best,
                "torch_tokens_per_s_median": torch_median,
                "ours_over_torch": torch_median.map(|t| ours_median / t),
                "check": check,
            }));
        }
    }
    let ratio = |shape: &str, key: &str| {
        let get = |w: &str| {
            summary
                .iter()
                .find(|r| r["shape"] == shape && r["weights"] == w)
                .and_then(|r| r[key].as_f64())
        };
        Some(get("ternary")? / get("full_precision")?)
    };
    let shapes_done: Vec<String> = summary
        .iter()
        .filter_map(|r| r["shape"].as_str().map(String::from))
        .collect();
    let ternary_over_fp: serde_json::Map<String, serde_json::Value> = shapes_done
        .iter()
        .map(|s| {
            (
                s.clone(),
                serde_json::json!(ratio(s, "ours_tokens_per_s_median")),
            )
        })
        .collect();
    let report = serde_json::json!({
        "area": "train",
        "backend": "burn 0.22.1 flex (CPU), autodiff, f32",
        "peer": "PyTorch eager (benches/train_torch.py), same graph, same initial weights",
        "threads": threads,
        "steps_timed": steps,
        "repeats": repeats,
        "cpu": cpu_info(),
        "summary": summary,
        "ternary_over_fp_tokens_per_s": ternary_over_fp,
        "runs": runs,
    });
    std::fs::create_dir_all(&out).expect("bench output dir");
    let path = Path::new(&out).join("train.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json")).expect("write");
    eprintln!("wrote {}", path.display());
}
