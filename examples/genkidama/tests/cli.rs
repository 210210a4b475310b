//! End-to-end CLI check on a micro model: `train` writes a loadable model directory and
//! `eval --json` prints the documented JSON line.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

fn genkidama(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_genkidama"))
        .args(args)
        .env_remove("MAGNET_CORPUS")
        .output()
        .expect("run genkidama");
    assert!(
        out.status.success(),
        "genkidama {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn train_then_eval_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut en = String::new();
    let mut ko = String::new();
    for i in 0..150 {
        writeln!(
            en,
            "The manual explains how to configure printer number {i}."
        )
        .unwrap();
        writeln!(ko, "설명서는 {i}번 프린터를 설정하는 방법을 알려 줍니다.").unwrap();
    }
    write(&root.join("corpus/en/a.txt"), &en);
    write(&root.join("corpus/ko/a.txt"), &ko);
    write(
        &root.join("model.toml"),
        "vocab_size = 320\nhidden_size = 32\nn_layers = 1\nn_heads = 2\nn_kv_heads = 1\n\
         ffn_hidden_size = 64\ncontext_length = 16\n",
    );
    let s = |p: &Path| p.to_str().unwrap().to_string();
    genkidama(&[
        "train",
        "--model-config",
        &s(&root.join("model.toml")),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--eval-every",
        "2",
        "--corpus",
        &s(&root.join("corpus")),
        "--data-dir",
        &s(&root.join("data")),
        "--out",
        &s(&root.join("out")),
    ]);
    let model = root.join("out/model");
    for f in ["config.toml", "model.safetensors", "tokenizer.json"] {
        assert!(model.join(f).is_file(), "{f}");
    }
    assert!(root.join("out/loss.png").is_file());
    assert!(root.join("out/metrics.jsonl").is_file());
    write(&root.join("text.txt"), &en[..2000]);
    let out = genkidama(&[
        "eval",
        "--model",
        &s(&model),
        "--text",
        &s(&root.join("text.txt")),
        "--max-tokens",
        "40",
        "--json",
    ]);
    let line = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    // 40 tokens in windows of 16: 15 + 15 + 7 predictions.
    assert_eq!(v["tokens"], 37);
    assert!(v["loss"].as_f64().unwrap() > 0.0 && v["bpb"].as_f64().unwrap() > 0.0);
}
