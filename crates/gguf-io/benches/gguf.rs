//! `cargo xtask bench gguf`: open + index a generated ~1.2 GB GGUF file (BitNet b1.58
//! 2B-4T geometry: 128256-token vocabulary with merges, 30 layers of TQ2_0 weights, F16
//! embeddings, 332 tensors) and read every tensor header, against gguf-py's GGUFReader on the
//! same file in the same run. Writes `$MAGNET_BENCH_OUT/gguf.json`.

use gguf_io::{GgmlType, GgufBuilder, GgufFile};
use serde_json::json;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const VOCAB: usize = 128_256;
const MERGES: usize = 100_000;
const EMBD: u64 = 2560;
const FF: u64 = 6912;
const KV: u64 = 640;
const LAYERS: usize = 30;
const OUR_REPS: usize = 21;
const PY_REPS: usize = 3;

fn tensors() -> Vec<(String, Vec<u64>, GgmlType)> {
    let mut t = vec![
        (
            "token_embd.weight".to_owned(),
            vec![EMBD, VOCAB as u64],
            GgmlType::F16,
        ),
        ("output_norm.weight".to_owned(), vec![EMBD], GgmlType::F32),
    ];
    for l in 0..LAYERS {
        let b = |s: &str| format!("blk.{l}.{s}.weight");
        t.push((b("attn_norm"), vec![EMBD], GgmlType::F32));
        t.push((b("attn_q"), vec![EMBD, EMBD], GgmlType::TQ2_0));
        t.push((b("attn_k"), vec![EMBD, KV], GgmlType::TQ2_0));
        t.push((b("attn_v"), vec![EMBD, KV], GgmlType::TQ2_0));
        t.push((b("attn_output"), vec![EMBD, EMBD], GgmlType::TQ2_0));
        t.push((b("attn_sub_norm"), vec![EMBD], GgmlType::F32));
        t.push((b("ffn_norm"), vec![EMBD], GgmlType::F32));
        t.push((b("ffn_gate"), vec![EMBD, FF], GgmlType::TQ2_0));
        t.push((b("ffn_up"), vec![EMBD, FF], GgmlType::TQ2_0));
        t.push((b("ffn_down"), vec![FF, EMBD], GgmlType::TQ2_0));
        t.push((b("ffn_sub_norm"), vec![FF], GgmlType::F32));
    }
    t
}

fn generate(path: &Path) -> (u64, usize, usize) {
    let mut b = GgufBuilder::new();
    let meta: Vec<(&str, gguf_io::Value)> = vec![
        ("general.architecture", "bitnet".into()),
        ("general.name", "gguf-io bench".into()),
        ("general.quantization_version", 2u32.into()),
        ("general.file_type", 37u32.into()),
        ("bitnet.context_length", 4096u32.into()),
        ("bitnet.embedding_length", (EMBD as u32).into()),
        ("bitnet.feed_forward_length", (FF as u32).into()),
        ("bitnet.block_count", (LAYERS as u32).into()),
        ("bitnet.attention.head_count", 20u32.into()),
        ("bitnet.attention.head_count_kv", 5u32.into()),
        ("bitnet.rope.freq_base", 500000f32.into()),
        ("bitnet.attention.layer_norm_rms_epsilon", 1e-5f32.into()),
        ("tokenizer.ggml.model", "gpt2".into()),
        ("tokenizer.ggml.pre", "gpt-2".into()),
        (
            "tokenizer.ggml.tokens",
            (0..VOCAB)
                .map(|i| format!("tok{i}"))
                .collect::<Vec<String>>()
                .into(),
        ),
        ("tokenizer.ggml.token_type", vec![1i32; VOCAB].into()),
        (
            "tokenizer.ggml.merges",
            (0..MERGES)
                .map(|i| format!("t{} k{}", i % 977, i))
                .collect::<Vec<String>>()
                .into(),
        ),
        ("tokenizer.ggml.bos_token_id", 128000u32.into()),
        ("tokenizer.ggml.eos_token_id", 128001u32.into()),
    ];
    let n_kv = meta.len();
    for (k, v) in meta {
        b.add_metadata(k, v).unwrap();
    }
    let ts = tensors();
    for (name, dims, ty) in &ts {
        b.add_tensor(name.clone(), dims, *ty).unwrap();
    }
    let mut w = b.create(path).unwrap();
    let max = ts
        .iter()
        .map(|(_, d, t)| t.n_bytes(d).unwrap())
        .max()
        .unwrap() as usize;
    let zeros = vec![0x55u8; max];
    for (name, dims, ty) in &ts {
        w.write_tensor(name, &zeros[..ty.n_bytes(dims).unwrap() as usize])
            .unwrap();
    }
    w.finish().unwrap();
    (std::fs::metadata(path).unwrap().len(), ts.len(), n_kv)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn open_index(path: &Path) -> u64 {
    let f = GgufFile::open(path).unwrap();
    let mut acc = 0u64;
    for v in f.views() {
        acc += v.name().len() as u64
            + v.dims().len() as u64
            + u64::from(v.ty().id())
            + v.data().len() as u64
            + v.info().offset();
    }
    acc
}

fn main() {
    let out_dir = std::env::var("MAGNET_BENCH_OUT").unwrap_or_else(|_| "target/bench".into());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.gguf");
    let t = Instant::now();
    let (file_bytes, n_tensors, n_kv) = generate(&path);
    let write_s = t.elapsed().as_secs_f64();
    eprintln!("generated {file_bytes} bytes, {n_tensors} tensors in {write_s:.2} s");

    black_box(open_index(&path)); // warm the page cache for both readers
    let mut ours: Vec<f64> = (0..OUR_REPS)
        .map(|_| {
            let t = Instant::now();
            black_box(open_index(&path));
            t.elapsed().as_secs_f64()
        })
        .collect();
    let ours_median = median(&mut ours);
    eprintln!("gguf-io open+index: median {ours_median:.4} s");

    let py = std::env::var_os("MAGNET_PYTHON").map(|python| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ggufpy_open_index.py");
        let out = Command::new(python)
            .arg(script)
            .arg(&path)
            .arg(PY_REPS.to_string())
            .output()
            .expect("running MAGNET_PYTHON");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["n_tensors"], json!(n_tensors));
        let mut samples: Vec<f64> = v["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_f64().unwrap())
            .collect();
        let m = median(&mut samples);
        eprintln!("gguf-py GGUFReader open+index: median {m:.4} s");
        (m, samples)
    });
    if py.is_none() {
        eprintln!(
            "MAGNET_PYTHON is unset: no gguf-py baseline (run through `cargo xtask bench gguf`)"
        );
    }
    let summary = json!({
        "open_index_s": ours_median,
        "ggufpy_open_index_s": py.as_ref().map(|p| p.0),
        "speedup": py.as_ref().map(|p| p.0 / ours_median),
    });
    let report = json!({
        "area": "gguf",
        "file": {
            "bytes": file_bytes,
            "tensors": n_tensors,
            "metadata_entries": n_kv,
            "vocab_tokens": VOCAB,
            "merges": MERGES,
            "write_s": write_s,
        },
        "notes": "open_index = open (mmap) + parse/validate header, metadata and tensor infos + visit every tensor (name, dims, type, data view), warm page cache, median of repetitions. gguf-py: GGUFReader(path) + the same visit over reader.tensors, timed inside Python (interpreter start-up and imports excluded).",
        "records": {
            "gguf_io_samples_s": ours,
            "ggufpy_samples_s": py.as_ref().map(|p| p.1.clone()),
        },
        "summary": summary,
    });
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = Path::new(&out_dir).join("gguf.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    eprintln!("wrote {}", out.display());
    eprintln!(
        "summary: {}",
        serde_json::to_string_pretty(&report["summary"]).unwrap()
    );
}
