//! `--model` takes our directory, a .gguf file or a Hugging Face folder: a micro model is
//! trained, exported to GGUF, re-quantized with `convert`, and each file scores the text
//! like the directory (`eval --json` with perplexity); `generate` runs from a GGUF file.

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

fn eval(model: &Path, text: &Path) -> serde_json::Value {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = genkidama(&[
        "eval",
        "--model",
        &s(model),
        "--text",
        &s(text),
        "--max-tokens",
        "60",
        "--json",
    ]);
    serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
}

#[test]
fn gguf_files_and_conversions_score_like_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let mut en = String::new();
    for i in 0..150 {
        writeln!(
            en,
            "The manual explains how to configure printer number {i}."
        )
        .unwrap();
    }
    write(&root.join("corpus/en/a.txt"), &en);
    // Rows of 256 so that TQ2_0 (llama.cpp) and I2_S (bitnet.cpp) both apply.
    write(
        &root.join("model.toml"),
        "vocab_size = 320\nhidden_size = 256\nn_layers = 1\nn_heads = 4\nn_kv_heads = 2\n\
         ffn_hidden_size = 256\ncontext_length = 16\n",
    );
    genkidama(&[
        "train",
        "--model-config",
        &s(&root.join("model.toml")),
        "--steps",
        "2",
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
    let text = root.join("text.txt");
    write(&text, &en[..2000]);
    let base = eval(&model, &text);
    let loss = base["loss"].as_f64().unwrap();
    assert!((base["perplexity"].as_f64().unwrap() - loss.exp()).abs() < 1e-6 * loss.exp());

    let tq2 = root.join("m.tq2_0.gguf");
    genkidama(&[
        "export",
        "--model",
        &s(&model),
        "--out",
        &s(&tq2),
        "--embedding",
        "f32",
    ]);
    let i2s = root.join("m.i2_s.gguf");
    genkidama(&[
        "convert",
        "--model",
        &s(&tq2),
        "--out",
        &s(&i2s),
        "--format",
        "i2_s",
        "--embedding",
        "f32",
    ]);
    let tq1 = root.join("m.tq1_0.gguf");
    genkidama(&[
        "convert",
        "--model",
        &s(&i2s),
        "--out",
        &s(&tq1),
        "--format",
        "tq1_0",
        "--embedding",
        "f32",
    ]);
    for f in [&tq2, &i2s, &tq1] {
        let v = eval(f, &text);
        assert_eq!(v["tokens"], base["tokens"], "{}", f.display());
        let l = v["loss"].as_f64().unwrap();
        // The same ternary model up to the fp16 rounding of TQ scales.
        assert!(
            (l - loss).abs() < 0.02 * loss,
            "{}: {l} vs {loss}",
            f.display()
        );
    }
    let out = genkidama(&[
        "generate",
        "--model",
        &s(&i2s),
        "--prompt",
        "The manual",
        "--max-tokens",
        "8",
        "--temperature",
        "0",
    ]);
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("The manual")
    );
    // Not a model: the error names the path.
    let out = Command::new(env!("CARGO_BIN_EXE_genkidama"))
        .args(["eval", "--model", &s(&text), "--text", &s(&text)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("text.txt"));
}
