//! Cross-checks against an independent implementation, the Python `gguf` package (gguf-py
//! 0.19.0): files we write are read by gguf-py with identical metadata and dequantized values,
//! and files gguf-py writes are read by us identically (and our quantizers reproduce its bytes).
//!
//! Needs `MAGNET_PYTHON` (a python with gguf==0.19.0 and numpy, see `cargo xtask python-env`);
//! without it the tests are skipped, unless `MAGNET_REQUIRE_ORACLES=1`.

use gguf_io::{Array, GgmlType, GgufBuilder, GgufFile, Value, convert};
use serde_json::{Value as J, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MAGNET_PYTHON") {
        return Some(p.into());
    }
    assert!(
        std::env::var("MAGNET_REQUIRE_ORACLES").as_deref() != Ok("1"),
        "MAGNET_REQUIRE_ORACLES=1 but MAGNET_PYTHON is not set"
    );
    eprintln!("skipping the gguf-py cross-check: MAGNET_PYTHON is not set");
    None
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

fn run_python(python: &Path, script_name: &str, arg: &Path) -> String {
    let out = Command::new(python)
        .arg(script(script_name))
        .arg(arg)
        .output()
        .expect("running MAGNET_PYTHON");
    assert!(
        out.status.success(),
        "{script_name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// How gguf-py's reader reports a value: its type chain (`["ARRAY", "ARRAY", "INT32"]`,
/// following first elements) and its leaves flattened, floats as bit patterns.
fn py_view(v: &Value) -> (Vec<&'static str>, J) {
    fn chain(a: &Array, out: &mut Vec<&'static str>) {
        out.push("ARRAY");
        match a {
            Array::Array(inner) => {
                if let Some(first) = inner.first() {
                    chain(first, out);
                }
            }
            // gguf-py records element types from the first element only.
            other if !other.is_empty() => out.push(other.element_type().name()),
            _ => {}
        }
    }
    fn leaves(a: &Array, out: &mut Vec<J>) {
        match a {
            Array::Array(inner) => inner.iter().for_each(|i| leaves(i, out)),
            Array::F32(v) => out.extend(v.iter().map(|x| J::from(x.to_bits()))),
            Array::F64(v) => out.extend(v.iter().map(|x| J::from(x.to_bits()))),
            other => {
                let J::Array(items) = other.to_json() else {
                    unreachable!("arrays render as JSON arrays")
                };
                out.extend(items);
            }
        }
    }
    match v {
        Value::Array(a) => {
            let mut c = Vec::new();
            chain(a, &mut c);
            let mut l = Vec::new();
            leaves(a, &mut l);
            (c, J::Array(l))
        }
        Value::F32(x) => (vec!["FLOAT32"], J::from(x.to_bits())),
        Value::F64(x) => (vec!["FLOAT64"], J::from(x.to_bits())),
        other => (vec![other.value_type().name()], other.to_json()),
    }
}

fn f32_bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

fn json_u32s(v: &J) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

#[test]
fn files_we_write_read_identically_in_gguf_py() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let smooth: Vec<f32> = (0..1024).map(|i| (i as f32 * 0.731).sin() * 2.5).collect();
    let ternary: Vec<f32> = (0..1024)
        .map(|i| f32::from(((i * 7 + i / 3) % 3) as i8 - 1) * 0.0371)
        .collect();
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", "bitnet".into()),
        ("general.quantization_version", 2u32.into()),
        ("m.u8", 255u8.into()),
        ("m.i8", (-128i8).into()),
        ("m.u16", 65535u16.into()),
        ("m.i16", (-32768i16).into()),
        ("m.u32", u32::MAX.into()),
        ("m.i32", i32::MIN.into()),
        ("m.f32", 0.1f32.into()),
        ("m.bool", false.into()),
        ("m.string", "héllo, 세계 \u{1F600}".into()),
        ("m.u64", u64::MAX.into()),
        ("m.i64", i64::MIN.into()),
        ("m.f64", std::f64::consts::E.into()),
        ("m.tokens", vec!["<s>", "</s>", " the", ""].into()),
        ("m.scores", vec![0.0f32, -1.5, 1e-30].into()),
        ("m.types", vec![1i32, 3, 1].into()),
        ("m.u8s", vec![0u8, 7, 255].into()),
        ("m.i8s", vec![-1i8, 1].into()),
        ("m.u16s", vec![9u16].into()),
        ("m.i16s", vec![-9i16].into()),
        ("m.u32s", vec![1u32, 2].into()),
        ("m.u64s", vec![u64::MAX].into()),
        ("m.i64s", vec![i64::MIN, 5].into()),
        ("m.f64s", vec![1e300f64, -0.5].into()),
        ("m.bools", vec![true, false, true].into()),
        ("m.empty", Vec::<u32>::new().into()),
        (
            "m.nested",
            vec![Array::I32(vec![1, 2]), Array::I32(vec![3])].into(),
        ),
        (
            "m.nested3",
            vec![Array::Array(vec![Array::String(vec![
                "x".into(),
                "y".into(),
            ])])]
            .into(),
        ),
    ];
    let tensors: Vec<(&str, GgmlType, Vec<u64>, &[f32])> = vec![
        ("t.f32", GgmlType::F32, vec![512, 2], &smooth),
        ("t.f16", GgmlType::F16, vec![256, 4], &smooth),
        ("t.bf16", GgmlType::BF16, vec![1024], &smooth),
        ("t.q8_0", GgmlType::Q8_0, vec![64, 4, 2, 2], &smooth),
        ("t.tq1_0", GgmlType::TQ1_0, vec![512, 2], &ternary),
        ("t.tq2_0", GgmlType::TQ2_0, vec![256, 4], &ternary),
        ("t.tq2_0_smooth", GgmlType::TQ2_0, vec![512, 2], &smooth),
        ("t.q6_k_zero", GgmlType::Q6_K, vec![256, 4], &[]),
    ];
    for alignment in [32u32, 64] {
        let path = dir.path().join(format!("ours-{alignment}.gguf"));
        let mut b = GgufBuilder::new();
        for (k, v) in &metadata {
            b.add_metadata(*k, v.clone()).unwrap();
        }
        if alignment != 32 {
            b.set_alignment(alignment).unwrap();
        }
        for (name, ty, dims, _) in &tensors {
            b.add_tensor(*name, dims, *ty).unwrap();
        }
        let mut w = b.create(&path).unwrap();
        for (name, ty, dims, values) in &tensors {
            if values.is_empty() {
                w.write_tensor(name, &vec![0; ty.n_bytes(dims).unwrap() as usize])
                    .unwrap();
            } else {
                w.write_tensor_f32(name, values).unwrap();
            }
        }
        w.finish().unwrap();

        let ours = GgufFile::open(&path).unwrap();
        let py: J = serde_json::from_str(&run_python(&python, "read_gguf.py", &path)).unwrap();
        assert_eq!(py["alignment"], json!(alignment));
        assert_eq!(py["data_offset"], json!(ours.data_offset()));
        let py_meta = py["metadata"].as_object().unwrap();
        assert_eq!(py_meta.len(), ours.metadata().len());
        for (key, value) in ours.metadata().iter() {
            let (types, leaves) = py_view(value);
            let seen = &py_meta[key];
            assert_eq!(seen["types"], json!(types), "types of {key}");
            assert_eq!(seen["value"], leaves, "value of {key}");
        }
        let py_tensors = py["tensors"].as_array().unwrap();
        assert_eq!(py_tensors.len(), tensors.len());
        for (t, seen) in ours.tensors().iter().zip(py_tensors) {
            assert_eq!(seen["name"], json!(t.name()));
            assert_eq!(seen["type"], json!(t.ty().name()));
            assert_eq!(seen["shape"], json!(t.dims()));
            assert_eq!(seen["n_bytes"], json!(t.n_bytes()));
            assert_eq!(seen["data_offset"], json!(ours.data_offset() + t.offset()));
            let py_bits = json_u32s(&seen["bits"]);
            if t.ty() == GgmlType::Q6_K {
                assert!(py_bits.iter().all(|&b| f32::from_bits(b) == 0.0));
            } else {
                let mine = ours.tensor(t.name()).unwrap().to_f32().unwrap();
                assert_eq!(py_bits, f32_bits(&mine), "dequantized {}", t.name());
            }
        }
    }
}

#[test]
fn files_gguf_py_writes_read_identically_here() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("theirs.gguf");
    run_python(&python, "write_gguf.py", &path);
    let side: J = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("theirs.gguf.json")).unwrap(),
    )
    .unwrap();
    let f = GgufFile::open(&path).unwrap();

    let expected: Vec<(&str, Value)> = vec![
        ("general.architecture", "bitnet".into()),
        ("m.u8", 200u8.into()),
        ("m.i8", (-100i8).into()),
        ("m.u16", 60000u16.into()),
        ("m.i16", (-30000i16).into()),
        ("m.u32", 4_000_000_000u32.into()),
        ("m.i32", (-2_000_000_000i32).into()),
        ("m.f32", 0.1f32.into()),
        ("m.bool", true.into()),
        ("m.string", "héllo 세계".into()),
        ("m.u64", 18_000_000_000_000_000_000u64.into()),
        ("m.i64", (-9_000_000_000_000_000_000i64).into()),
        ("m.f64", std::f64::consts::E.into()),
        ("m.arr_i32", vec![1i32, -2, 3].into()),
        ("m.arr_f32", vec![0.5f32, -1.25].into()),
        ("m.arr_str", vec!["a", "", "ü"].into()),
        ("m.arr_bool", vec![true, false].into()),
        ("m.arr_u8", vec![1u8, 2, 255].into()),
        ("m.arr_u64", vec![u64::MAX, 0].into()),
        ("m.arr_f64", vec![1e300f64, -0.5].into()),
        (
            "m.nested",
            vec![Array::I32(vec![1, 2]), Array::I32(vec![3])].into(),
        ),
        ("general.quantization_version", 2u32.into()),
        ("bitnet.context_length", 2048u32.into()),
    ];
    let read: Vec<(&str, &Value)> = f.metadata().iter().collect();
    assert_eq!(read.len(), expected.len());
    for ((rk, rv), (ek, ev)) in read.iter().zip(&expected) {
        assert_eq!((rk, *rv), (ek, ev));
    }
    assert_eq!(f.metadata().get_u32("bitnet.context_length").unwrap(), 2048);

    let side = side.as_object().unwrap();
    assert_eq!(f.tensors().len(), side.len());
    let mut expected_offset = 0;
    for t in f.tensors() {
        let s = &side[t.name()];
        assert_eq!(s["type"], json!(t.ty().name()), "{}", t.name());
        let rows = if t.name().contains("tq") { 2 } else { 3 };
        assert_eq!(t.dims(), [512, rows]);
        assert_eq!(
            t.offset(),
            expected_offset,
            "gguf-py's layout is llama.cpp's"
        );
        expected_offset += t.n_bytes().next_multiple_of(32);
        let view = f.tensor(t.name()).unwrap();
        let deq = view.to_f32().unwrap();
        assert_eq!(
            f32_bits(&deq),
            json_u32s(&s["dequantized_bits"]),
            "{}",
            t.name()
        );
        // Our quantizers are bit-exact with gguf-py's (and so with ggml's reference).
        let source: Vec<f32> = json_u32s(&s["source_bits"])
            .into_iter()
            .map(f32::from_bits)
            .collect();
        let ours = convert::quantize(t.ty(), &source).unwrap();
        assert!(
            ours == view.data(),
            "{}: our bytes differ from gguf-py's",
            t.name()
        );
    }
}
