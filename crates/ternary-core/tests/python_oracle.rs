//! Byte-for-byte agreement with the Python `gguf` package (gguf==0.19.0, numpy quantizers) for
//! TQ1_0, TQ2_0 and Q8_0, both directions: our bytes equal gguf-py's, and gguf-py dequantizes
//! our bytes to exactly our values.
//!
//! Needs `MAGNET_PYTHON` (a python with gguf==0.19.0 and numpy; `cargo xtask python-env`).
//! Without it the test is skipped, unless `MAGNET_REQUIRE_ORACLES=1`, in which case it fails.

use std::path::PathBuf;
use std::process::Command;
use ternary_core::{Format, PackedMatrix};

const SCRIPT: &str = r#"
import sys, numpy as np, gguf
from gguf import quants, GGMLQuantizationType as T
import importlib.metadata
assert importlib.metadata.version("gguf") == "0.19.0", importlib.metadata.version("gguf")
d = sys.argv[1]
x = np.fromfile(d + "/x.f32", dtype=np.float32).reshape(int(sys.argv[2]), int(sys.argv[3]))
for name, t in (("tq1_0", T.TQ1_0), ("tq2_0", T.TQ2_0), ("q8_0", T.Q8_0)):
    quants.quantize(x, t).tofile(d + "/py_" + name + ".bin")
    ours = np.fromfile(d + "/rs_" + name + ".bin", dtype=np.uint8).reshape(x.shape[0], -1)
    quants.dequantize(ours, t).astype(np.float32).tofile(d + "/pydq_" + name + ".f32")
print("ok")
"#;

fn python() -> Option<String> {
    match std::env::var("MAGNET_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var("MAGNET_REQUIRE_ORACLES").as_deref() != Ok("1"),
                "MAGNET_REQUIRE_ORACLES=1 but MAGNET_PYTHON is not set"
            );
            eprintln!("skipping python_oracle: MAGNET_PYTHON is not set");
            None
        }
    }
}

/// Test data: Gaussian-like rows, exact ternary x 0.37 rows, all-zero blocks, exact rounding ties
/// and a single-large-value block.
fn data(rows: usize, cols: usize) -> Vec<f32> {
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut x = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            let v = match r % 5 {
                0 => {
                    // Box-Muller
                    let (u, v) = (next().max(1e-12), next());
                    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
                }
                1 => ((next() * 3.0) as i32 - 1) as f32 * 0.37,
                2 if c < 256 => 0.0,
                2 => [-1.0f32, -0.5, 0.0, 0.5, 1.0, 0.25, -0.75][c % 7] * 3.0,
                3 => (next() as f32 - 0.5) * 1e-3,
                _ => {
                    if c % 97 == 0 {
                        50.0
                    } else {
                        (next() as f32 - 0.5) * 2.0
                    }
                }
            };
            x.push(v);
        }
    }
    x
}

#[test]
fn agrees_with_gguf_py_byte_for_byte() {
    let Some(py) = python() else { return };
    let (rows, cols) = (25, 768);
    let x = data(rows, cols);
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "ternary-core-oracle-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x.f32"), bytemuck::cast_slice::<f32, u8>(&x)).unwrap();
    let formats = [Format::Tq1_0, Format::Tq2_0, Format::Q8_0];
    let mut ours = Vec::new();
    for f in formats {
        let m = PackedMatrix::quantize(f, &x, rows, cols).unwrap();
        std::fs::write(dir.join(format!("rs_{}.bin", f.name())), m.to_bytes()).unwrap();
        ours.push(m);
    }
    let out = Command::new(&py)
        .arg("-c")
        .arg(SCRIPT)
        .arg(&dir)
        .arg(rows.to_string())
        .arg(cols.to_string())
        .output()
        .expect("failed to run MAGNET_PYTHON");
    assert!(
        out.status.success(),
        "python oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (f, m) in formats.iter().zip(&ours) {
        let theirs = std::fs::read(dir.join(format!("py_{}.bin", f.name()))).unwrap();
        let mine = m.to_bytes();
        assert_eq!(theirs.len(), mine.len(), "{f}: byte length");
        if let Some(i) = theirs.iter().zip(&mine).position(|(a, b)| a != b) {
            panic!(
                "{f}: first differing byte at offset {i} (row {}): gguf-py {} vs ours {}",
                i / f.row_bytes(cols).unwrap(),
                theirs[i],
                mine[i]
            );
        }
        let dq: Vec<f32> = bytemuck::pod_collect_to_vec(
            &std::fs::read(dir.join(format!("pydq_{}.f32", f.name()))).unwrap(),
        );
        let ours_dq = m.dequantize();
        assert_eq!(dq.len(), ours_dq.len());
        for (i, (a, b)) in dq.iter().zip(&ours_dq).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{f}: dequantized element {i}: {a} vs {b}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
