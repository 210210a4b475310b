//! `cargo xtask bench peer-infer -- [options]`: our packed runtime and llama.cpp (through
//! llama-cpp-python in the project's venv) on the same seeded random `bitnet` TQ2_0 GGUF,
//! written by the Python `gguf` package, at 1 and 2 threads, alternating, N repeats, with
//! the machine's read bandwidth measured in the same run. Writes
//! `target/bench/peer-infer.json` (medians, best-of, ratios ours/peer and ours/bandwidth
//! limit, CPU model, flags and load average). Outside CI: it needs llama-cpp-python (it
//! installs `llama-cpp-python==0.3.36` into .venv when missing, a ~20 minute build).
//!
//! With `--bitnet-cpp DIR` (bitnet.cpp's build folder, made by
//! `examples/genkidama/scripts/build_bitnet_cpp.sh`) it also re-quantizes the file to I2_S with
//! bitnet.cpp's own `llama-quantize` (one thread: more write a broken tensor, docs/gguf.md)
//! and times bitnet.cpp's `llama-bench` on it, alternated with the other two.

use crate::python;
use crate::util::{cargo, root, run as run_cmd};
use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};
use std::process::Command;

/// Options after `--` of `cargo xtask bench peer-infer`.
#[derive(Parser, Debug)]
#[command(name = "peer-infer")]
struct PeerArgs {
    /// Hidden size.
    #[arg(long, default_value_t = 1536)]
    hidden: usize,
    /// FFN size.
    #[arg(long, default_value_t = 4096)]
    ffn: usize,
    /// Layers.
    #[arg(long, default_value_t = 24)]
    layers: usize,
    /// Attention heads (no GQA).
    #[arg(long, default_value_t = 24)]
    heads: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 512)]
    vocab: usize,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Alternated repeats per engine and thread count.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Prompt tokens (prefill).
    #[arg(long, default_value_t = 256)]
    prompt: usize,
    /// Decode steps.
    #[arg(long = "gen", default_value_t = 32)]
    decode_steps: usize,
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Cargo profile our runner is built with. `dev` reuses a workspace test build's
    /// dependencies (already at opt-level 3) and compiles our own crates on the runner's
    /// path at opt-level 3 without debug assertions or overflow checks (see
    /// [`OPTIMISED_IN_DEV`]), so the kernels run as in a release build.
    #[arg(long, default_value = "bench")]
    cargo_profile: String,
    /// bitnet.cpp's build folder (with `bin/llama-quantize` and `bin/llama-bench`): adds
    /// bitnet.cpp on the same weights in I2_S as a third engine.
    #[arg(long)]
    bitnet_cpp: Option<std::path::PathBuf>,
}

/// bitnet.cpp's `llama-bench` JSON (one entry per test: prefill `n_prompt > 0`, decode
/// `n_gen > 0`) as the same fields the other engines report.
fn bitnet_cpp_result(out: &std::process::Output, threads: usize) -> Result<Value> {
    if !out.status.success() {
        bail!(
            "bitnet.cpp's llama-bench failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tests: Vec<Value> = serde_json::from_slice(&out.stdout)
        .context("bitnet.cpp's llama-bench printed no JSON array")?;
    let rate = |field: &str| {
        tests
            .iter()
            .find(|t| t[field].as_u64().is_some_and(|n| n > 0))
            .and_then(|t| t["avg_ts"].as_f64())
            .with_context(|| format!("no llama-bench test with {field} > 0"))
    };
    Ok(json!({
        "threads": threads,
        "prefill_tokens_per_s": rate("n_prompt")?,
        "decode_tokens_per_s": rate("n_gen")?,
    }))
}

/// The Python side: writes the file (`write`) or measures llama.cpp on it (`llama`).
const PY: &str = r#"
import json, sys, time
import numpy as np

def write(path, hidden, ffn, layers, heads, vocab, seed):
    import gguf
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "bitnet")
    w.add_context_length(2048)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_TQ2_0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    toks = [bytes([i]).decode("latin-1") for i in range(256)] + [f"t{i}" for i in range(vocab - 256)]
    w.add_token_list(toks)
    w.add_token_types([1] * vocab)
    # llama.cpp refuses a gpt2 vocabulary without merges (the Python writer drops an empty
    # list); one merge of two byte tokens is enough, prompts are given as token ids.
    w.add_token_merges(["a b"])
    w.add_bos_token_id(0)
    w.add_eos_token_id(1)

    def tq2(rows, cols):
        # Random ternary codes (0, 1, 2 for -1, 0, +1) and one scale for the tensor, packed
        # as TQ2_0: element 128g + 32n + m of a block in bits 2n of byte 32g + m.
        s = np.float16(1.0 / np.sqrt(cols))
        c = rng.integers(0, 3, size=(rows, cols // 256, 2, 4, 32), dtype=np.uint8)
        qs = (c[:, :, :, 0] | (c[:, :, :, 1] << 2) | (c[:, :, :, 2] << 4) | (c[:, :, :, 3] << 6))
        qs = qs.reshape(rows, cols // 256, 64)
        d = np.full((rows, cols // 256, 1), s, dtype=np.float16).view(np.uint8)
        return np.concatenate([qs, d], axis=2).reshape(rows, cols // 256 * 66)

    T = gguf.GGMLQuantizationType
    w.add_tensor("token_embd.weight", (rng.standard_normal((vocab, hidden)) * 0.02).astype(np.float16))
    w.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    for i in range(layers):
        b = f"blk.{i}."
        for n, size in [("attn_norm", hidden), ("attn_sub_norm", hidden), ("ffn_norm", hidden), ("ffn_sub_norm", ffn)]:
            w.add_tensor(b + n + ".weight", (1.0 + 0.1 * rng.standard_normal(size)).astype(np.float32))
        for n, rows, cols in [("attn_q", hidden, hidden), ("attn_k", hidden, hidden), ("attn_v", hidden, hidden),
                              ("attn_output", hidden, hidden), ("ffn_gate", ffn, hidden), ("ffn_up", ffn, hidden),
                              ("ffn_down", hidden, ffn)]:
            w.add_tensor(b + n + ".weight", tq2(rows, cols), raw_dtype=T.TQ2_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

def llama(path, threads, prompt_len, gen_len):
    from llama_cpp import Llama
    t = time.perf_counter()
    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_batch=512,
                n_ctx=max(512, prompt_len + gen_len + 8), verbose=False)
    llm.eval([1])
    load = time.perf_counter() - t
    vocab = llm.n_vocab()
    prompt = [(i * 7919 + 13) % vocab for i in range(prompt_len)]
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt)
    prefill = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(gen_len):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        llm.eval([tok])
    decode = time.perf_counter() - t
    print("PEER_INFER_JSON " + json.dumps({
        "threads": threads, "load_to_first_token_s": load,
        "prefill_tokens_per_s": prompt_len / prefill, "decode_tokens_per_s": gen_len / decode}))

if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], *map(int, sys.argv[3:9]))
    else:
        llama(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
"#;

fn json_line(out: &std::process::Output, what: &str) -> Result<Value> {
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("PEER_INFER_JSON "))
        .with_context(|| format!("{what} printed no result line"))?;
    Ok(serde_json::from_str(line)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn cpu() -> Value {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |k: &str| {
        info.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let flags: Vec<String> = field("flags")
        .split_whitespace()
        .filter(|f| {
            f.contains("avx") || f.contains("fma") || f.contains("f16c") || f.contains("amx")
        })
        .map(String::from)
        .collect();
    json!({
        "model": field("model name"),
        "cores": std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        "flags": flags,
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Our crates on the runner's path, optimised like a release build under `--cargo-profile
/// dev` (the dev profile compiles them at opt-level 1 with debug assertions, which would
/// measure the build settings, not the runtime).
const OPTIMISED_IN_DEV: [&str; 3] = ["ternary-core", "gguf-io", "bitnet-model"];

/// Builds the infer bench and returns its executable. `--workspace` resolves features as
/// the workspace's test build does (`-p bitnet-model` alone would resolve the burn stack's
/// features differently and rebuild all of it).
fn build_runner(profile: &str) -> Result<std::path::PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "bench",
        "--locked",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ])
    .args(["--profile", profile, "--workspace", "--bench", "infer"]);
    if profile == "dev" {
        for krate in OPTIMISED_IN_DEV {
            for (key, value) in [
                ("opt-level", "3"),
                ("debug-assertions", "false"),
                ("overflow-checks", "false"),
                ("codegen-units", "16"),
            ] {
                cmd.arg("--config")
                    .arg(format!("profile.dev.package.{krate}.{key}={value}"));
            }
        }
    }
    if profile == "dev" {
        // Incremental compilation (the dev default for workspace members) splits our crates
        // into many small codegen units and inlines less across them; dependencies are never
        // built incrementally, so this changes nothing else.
        cmd.env("CARGO_INCREMENTAL", "0");
    }
    eprintln!("==> [build bench infer] {cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("could not start cargo")?;
    if !out.status.success() {
        bail!("building the infer bench failed ({})", out.status);
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "infer")
        .find_map(|v| v["executable"].as_str().map(std::path::PathBuf::from))
        .context("cargo built no infer bench executable")
}

/// Runs the benchmark; `args` are the words after `--`.
pub fn run(args: &[String]) -> Result<()> {
    let a = match PeerArgs::try_parse_from(
        std::iter::once("peer-infer".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help / --version: print and stop before any work.
            e.print()?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let root = root();
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let py = python::ensure(false)?;
    let has_llama = Command::new(&py)
        .args(["-c", "import llama_cpp"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_llama {
        eprintln!(
            "peer-infer: installing llama-cpp-python==0.3.36 into .venv (builds llama.cpp, ~20 min)"
        );
        run_cmd(
            "pip install llama-cpp-python",
            Command::new(&py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "llama-cpp-python==0.3.36",
                ])
                .env("CMAKE_ARGS", "-DGGML_NATIVE=ON"),
        )?;
    }
    let script = out_dir.join("peer_infer.py");
    std::fs::write(&script, PY)?;
    let model = out_dir.join(format!(
        "peer-infer-h{}-f{}-l{}-v{}-s{}.gguf",
        a.hidden, a.ffn, a.layers, a.vocab, a.seed
    ));
    if !model.exists() {
        eprintln!(
            "peer-infer: writing {} with the Python gguf package",
            model.display()
        );
        let status = Command::new(&py)
            .arg(&script)
            .arg("write")
            .arg(&model)
            .args([a.hidden, a.ffn, a.layers, a.heads, a.vocab].map(|v| v.to_string()))
            .arg(a.seed.to_string())
            .status()?;
        if !status.success() {
            bail!("writing the GGUF failed ({status})");
        }
    }
    // Build our runner (the infer bench in its GGUF mode) once, before timing anything, and
    // run its executable directly: a `cargo bench` per run would wait on the target
    // directory's lock whenever another build holds it, and time cargo's own checks.
    let runner = build_runner(&a.cargo_profile)?;
    let ours = |threads: usize| -> Result<Value> {
        let out = Command::new(&runner)
            .current_dir(&root)
            .env("MAGNET_BENCH_GGUF", &model)
            .env("MAGNET_BENCH_THREADS", threads.to_string())
            .env("MAGNET_BENCH_PROMPT", a.prompt.to_string())
            .env("MAGNET_BENCH_GEN", a.decode_steps.to_string())
            .output()?;
        json_line(&out, "our runtime")
    };
    let llama = |threads: usize| -> Result<Value> {
        let out = Command::new(&py)
            .arg(&script)
            .arg("llama")
            .arg(&model)
            .args([threads, a.prompt, a.decode_steps].map(|v| v.to_string()))
            .output()?;
        json_line(&out, "llama.cpp")
    };
    let bitnet = match &a.bitnet_cpp {
        None => None,
        Some(build) => {
            let build = std::fs::canonicalize(build)
                .with_context(|| format!("bitnet.cpp build folder {}", build.display()))?;
            let i2s = model.with_extension("i2_s.gguf");
            if !i2s.exists() {
                run_cmd(
                    "bitnet.cpp llama-quantize I2_S",
                    Command::new(build.join("bin/llama-quantize"))
                        .arg("--allow-requantize")
                        .arg(&model)
                        .arg(&i2s)
                        .args(["I2_S", "1"]),
                )?;
            }
            Some((build, i2s))
        }
    };
    let bitnet_run = |threads: usize| -> Result<Value> {
        let (build, i2s) = bitnet.as_ref().expect("only called with a build");
        // One repetition per call: the repeats alternate with the other engines instead.
        let out = Command::new(build.join("bin/llama-bench"))
            .arg("-m")
            .arg(i2s)
            .args([
                "-p",
                &a.prompt.to_string(),
                "-n",
                &a.decode_steps.to_string(),
            ])
            .args(["-t", &threads.to_string(), "-r", "1", "-o", "json"])
            .output()?;
        bitnet_cpp_result(&out, threads)
    };
    let engines: Vec<&str> = if bitnet.is_some() {
        vec!["ours", "llama.cpp", "bitnet.cpp"]
    } else {
        vec!["ours", "llama.cpp"]
    };
    let load_start = load_average();
    let mut runs: Vec<(String, usize, Value)> = Vec::new();
    for rep in 0..a.repeats {
        for &t in &a.threads {
            // Rotate which engine goes first, so drifts in machine load hit all of them.
            let mut order = engines.clone();
            order.rotate_left(rep % engines.len());
            for engine in order {
                let v = match engine {
                    "ours" => ours(t)?,
                    "llama.cpp" => llama(t)?,
                    _ => bitnet_run(t)?,
                };
                eprintln!("peer-infer rep {rep} threads {t} {engine}: {v}");
                runs.push((engine.to_string(), t, v));
            }
        }
    }
    let pick = |engine: &str, t: usize, key: &str| -> Vec<f64> {
        runs.iter()
            .filter(|(e, th, _)| e == engine && *th == t)
            .filter_map(|(_, _, v)| v[key].as_f64())
            .collect()
    };
    let packed_bytes = runs
        .iter()
        .find_map(|(e, _, v)| (e == "ours").then(|| v["packed_bytes"].as_f64()).flatten())
        .unwrap_or(0.0);
    let mut table = Vec::new();
    for &t in &a.threads {
        let mut row = json!({ "threads": t });
        for &engine in &engines {
            let mut e = json!({});
            for key in [
                "decode_tokens_per_s",
                "prefill_tokens_per_s",
                "load_to_first_token_s",
            ] {
                let v = pick(engine, t, key);
                if v.is_empty() {
                    continue;
                }
                let best = if key.ends_with("_s") && !key.ends_with("per_s") {
                    v.iter().copied().fold(f64::INFINITY, f64::min)
                } else {
                    v.iter().copied().fold(0.0, f64::max)
                };
                e[key] = json!({ "median": median(v.clone()), "best": best, "runs": v });
            }
            row[engine] = e;
        }
        let bw = median(pick("ours", t, "read_bandwidth_bytes_per_s"));
        let ours_decode = median(pick("ours", t, "decode_tokens_per_s"));
        let limit = if packed_bytes > 0.0 {
            bw / packed_bytes
        } else {
            0.0
        };
        row["read_bandwidth_gb_per_s"] = json!(bw / 1e9);
        row["decode_limit_tokens_per_s"] = json!(limit);
        row["ratios"] = json!({
            "decode_ours_over_llama_cpp": ours_decode / median(pick("llama.cpp", t, "decode_tokens_per_s")),
            "prefill_ours_over_llama_cpp": median(pick("ours", t, "prefill_tokens_per_s"))
                / median(pick("llama.cpp", t, "prefill_tokens_per_s")),
            "decode_ours_over_bandwidth_limit": ours_decode / limit,
        });
        if bitnet.is_some() {
            row["ratios"]["decode_ours_over_bitnet_cpp"] =
                json!(ours_decode / median(pick("bitnet.cpp", t, "decode_tokens_per_s")));
            row["ratios"]["prefill_ours_over_bitnet_cpp"] = json!(
                median(pick("ours", t, "prefill_tokens_per_s"))
                    / median(pick("bitnet.cpp", t, "prefill_tokens_per_s"))
            );
        }
        table.push(row);
    }
    let scaling = if a.threads.contains(&1) && a.threads.contains(&2) {
        json!(
            median(pick("ours", 2, "decode_tokens_per_s"))
                / median(pick("ours", 1, "decode_tokens_per_s"))
        )
    } else {
        Value::Null
    };
    let report = json!({
        "area": "peer-infer",
        "model": {
            "file": model.file_name().map(|f| f.to_string_lossy().to_string()),
            "hidden": a.hidden, "ffn": a.ffn, "layers": a.layers, "heads": a.heads,
            "vocab": a.vocab, "seed": a.seed, "weights": "tq2_0 (random ternary, Python gguf package)",
            "packed_projection_bytes": packed_bytes,
        },
        "prompt_tokens": a.prompt,
        "decode_tokens": a.decode_steps,
        "repeats": a.repeats,
        "cargo_profile": a.cargo_profile,
        "cpu": cpu(),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "results": table,
        "ours_decode_2_over_1_threads": scaling,
        "bitnet_cpp": match &bitnet {
            None => json!("not measured (no build given)"),
            Some((build, i2s)) => json!({
                "build": build.display().to_string(),
                "file": i2s.file_name().map(|f| f.to_string_lossy().to_string()),
                "file_bytes": std::fs::metadata(i2s).map(|m| m.len()).ok(),
                "timing": "llama-bench -r 1 per run: prefill = pp test, decode = tg test \
                           (from an empty context)",
            }),
        },
    });
    let path = out_dir.join("peer-infer.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    eprintln!("report: {}", path.display());
    Ok(())
}
