//! The `gguf-dump` binary: text and `--json` output, exit status on malformed input.

use gguf_io::{Array, GgmlType, GgufBuilder};
use serde_json::json;
use std::process::Command;

fn dump(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gguf-dump"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn json_and_text_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut b = GgufBuilder::new();
    b.add_metadata("general.architecture", "bitnet").unwrap();
    b.add_metadata("bitnet.block_count", 2u32).unwrap();
    b.add_metadata("bitnet.attention.layer_norm_rms_epsilon", 0.5f32)
        .unwrap();
    b.add_metadata("tokenizer.ggml.tokens", vec!["a", "b"])
        .unwrap();
    b.add_metadata(
        "x.nested",
        vec![Array::I64(vec![-1]), Array::Bool(vec![true])],
    )
    .unwrap();
    b.add_tensor("token_embd.weight", &[256, 2], GgmlType::F16)
        .unwrap();
    b.add_tensor("blk.0.attn_q.weight", &[256, 256], GgmlType::TQ2_0)
        .unwrap();
    let mut w = b.create(&path).unwrap();
    w.write_tensor_f32("token_embd.weight", &[0.0; 512])
        .unwrap();
    w.write_tensor_f32("blk.0.attn_q.weight", &[0.0; 65536])
        .unwrap();
    w.finish().unwrap();

    let out = dump(&["--json".as_ref(), path.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = json!({
        "version": 3,
        "alignment": 32,
        "metadata": {
            "general.architecture": "bitnet",
            "bitnet.block_count": 2,
            "bitnet.attention.layer_norm_rms_epsilon": 0.5,
            "tokenizer.ggml.tokens": ["a", "b"],
            "x.nested": [[-1], [true]],
        },
        "tensors": [
            {"name": "token_embd.weight", "type": "F16", "dims": [256, 2], "offset": 0},
            {"name": "blk.0.attn_q.weight", "type": "TQ2_0", "dims": [256, 256], "offset": 1024},
        ],
    });
    assert_eq!(got, expected);

    let out = dump(&[path.as_os_str()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("[STRING]   |        2 | tokenizer.ggml.tokens = [\"a\", \"b\"]"),
        "{text}"
    );
    assert!(
        text.contains("65536 |   256,   256,     1,     1 | TQ2_0   | blk.0.attn_q.weight"),
        "{text}"
    );
}

#[test]
fn malformed_files_exit_1_with_the_error_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    std::fs::write(
        &path,
        b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff",
    )
    .unwrap();
    for args in [
        vec!["--json".as_ref(), path.as_os_str()],
        vec![path.as_os_str()],
    ] {
        let out = dump(&args);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("bad.gguf") && err.contains("malformed GGUF at byte"),
            "{err}"
        );
    }
    let out = dump(&[dir.path().join("missing.gguf").as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(dump(&[]).status.code(), Some(2));
    assert_eq!(dump(&["--bogus".as_ref()]).status.code(), Some(2));
}
