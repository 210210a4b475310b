//! Writer -> reader round trips, the exact data layout llama.cpp requires, writer-side
//! validation, and a proptest over random metadata and tensors.

use gguf_io::{Array, Error, GgmlType, GgufBuilder, GgufFile, Value};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn every_value_type() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(255)),
        ("t.i8", Value::I8(-128)),
        ("t.u16", Value::U16(65535)),
        ("t.i16", Value::I16(-32768)),
        ("t.u32", Value::U32(u32::MAX)),
        ("t.i32", Value::I32(i32::MIN)),
        ("t.f32", Value::F32(-0.15625)),
        ("t.bool", Value::Bool(true)),
        ("t.string", Value::from("héllo, 세계 \u{1F600}")),
        ("t.empty_string", Value::from("")),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("a.u8", Value::from(vec![0u8, 1, 255])),
        ("a.i8", Value::from(vec![-1i8, 0, 1])),
        ("a.u16", Value::from(vec![1u16, 65535])),
        ("a.i16", Value::from(vec![-2i16, 2])),
        ("a.u32", Value::from(vec![3u32])),
        ("a.i32", Value::from(vec![-4i32, 1, 3])),
        ("a.f32", Value::from(vec![0.5f32, -1e-30, f32::MAX])),
        ("a.bool", Value::from(vec![true, false, true])),
        ("a.string", Value::from(vec!["a", "", "ü"])),
        ("a.u64", Value::from(vec![u64::MAX, 0])),
        ("a.i64", Value::from(vec![i64::MIN])),
        ("a.f64", Value::from(vec![1e300f64, -0.0])),
        ("a.empty", Value::from(Vec::<u32>::new())),
        (
            "a.nested",
            Value::from(vec![
                Array::I32(vec![1, 2, 3]),
                Array::String(vec!["x".into()]),
                Array::Array(vec![Array::F64(vec![0.25]), Array::U8(vec![])]),
            ]),
        ),
        ("a.nested_empty", Value::from(Vec::<Array>::new())),
    ]
}

#[test]
fn all_value_types_round_trip() {
    let mut b = GgufBuilder::new();
    for (k, v) in every_value_type() {
        b.add_metadata(k, v).unwrap();
    }
    let bytes = b.write_to(Vec::new()).unwrap().finish().unwrap();
    let f = GgufFile::from_bytes(bytes).unwrap();
    let read: Vec<(&str, &Value)> = f.metadata().iter().collect();
    let expected = every_value_type();
    assert_eq!(read.len(), expected.len());
    for ((rk, rv), (ek, ev)) in read.iter().zip(&expected) {
        assert_eq!(rk, ek);
        assert_eq!(*rv, ev, "{ek}");
    }
    let m = f.metadata();
    assert_eq!(m.get_u64("t.u64").unwrap(), u64::MAX);
    assert_eq!(m.get_str("t.string").unwrap(), "héllo, 세계 \u{1F600}");
    assert_eq!(m.get_str_array("a.string").unwrap(), ["a", "", "ü"]);
    assert_eq!(m.get_bool_array("a.bool").unwrap(), [true, false, true]);
    assert_eq!(m.get_array("a.nested").unwrap().depth(), 3);
    assert_eq!(m.get_float("t.f32").unwrap(), -0.15625);
    assert_eq!(m.get_uint("t.u8").unwrap(), 255);
    assert_eq!(f.tensors().len(), 0);
    assert_eq!(f.data_offset() % 32, 0);
}

#[test]
fn nan_payloads_survive_bit_for_bit() {
    let nan = f32::from_bits(0x7fc0_1234);
    let mut b = GgufBuilder::new();
    b.add_metadata("nan", nan).unwrap();
    b.add_metadata("nans", vec![nan, -nan]).unwrap();
    b.add_tensor("t", &[2], GgmlType::F32).unwrap();
    let mut w = b.write_to(Vec::new()).unwrap();
    w.write_tensor_f32("t", &[nan, -nan]).unwrap();
    let bytes = w.finish().unwrap();
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(
        f.metadata().get_f32("nan").unwrap().to_bits(),
        nan.to_bits()
    );
    assert_eq!(
        f.metadata().get_f32_array("nans").unwrap()[1].to_bits(),
        (-nan).to_bits()
    );
    assert_eq!(
        f.tensor("t").unwrap().to_f32().unwrap()[0].to_bits(),
        nan.to_bits()
    );
}

/// Builds a file with tensors of several types, from raw bytes and from f32.
/// (name, dims, type, stored bytes)
type Written = (String, Vec<u64>, GgmlType, Vec<u8>);

fn mixed_file(alignment: Option<u32>) -> (Vec<u8>, Vec<Written>) {
    let tensors: Vec<(String, Vec<u64>, GgmlType)> = vec![
        ("token_embd.weight".into(), vec![8, 3], GgmlType::F16),
        ("output_norm.weight".into(), vec![5], GgmlType::F32),
        ("blk.0.attn_q.weight".into(), vec![256, 2], GgmlType::Q4_K),
        (
            "blk.0.ffn_up.weight".into(),
            vec![32, 1, 2, 1],
            GgmlType::Q8_0,
        ),
        ("scalar".into(), vec![], GgmlType::I32),
        ("bf".into(), vec![3, 1, 1], GgmlType::BF16),
        ("empty".into(), vec![0, 4], GgmlType::F32),
        ("i2s".into(), vec![128, 2], GgmlType::I2_S),
    ];
    let mut b = GgufBuilder::new();
    if let Some(a) = alignment {
        b.set_alignment(a).unwrap();
    }
    b.add_metadata("general.architecture", "test").unwrap();
    for (name, dims, ty) in &tensors {
        b.add_tensor(name.clone(), dims, *ty).unwrap();
    }
    let mut w = b.write_to(Vec::new()).unwrap();
    let mut out = Vec::new();
    for (i, (name, dims, ty)) in tensors.into_iter().enumerate() {
        let n = ty.n_bytes(&dims).unwrap() as usize;
        let data: Vec<u8> = (0..n).map(|j| (j * 7 + i * 13) as u8).collect();
        assert_eq!(w.next_tensor().unwrap().name(), name);
        w.write_tensor(&name, &data).unwrap();
        out.push((name, dims, ty, data));
    }
    assert!(w.next_tensor().is_none());
    (w.finish().unwrap(), out)
}

#[test]
fn data_is_contiguous_padded_and_in_info_order() {
    for alignment in [None, Some(1), Some(64), Some(4096)] {
        let (bytes, tensors) = mixed_file(alignment);
        let a = u64::from(alignment.unwrap_or(32));
        let f = GgufFile::from_bytes(bytes.clone()).unwrap();
        assert_eq!(f.alignment(), a);
        assert_eq!(f.data_offset() % a, 0);
        // llama.cpp's rule: offset_i == Σ_{j<i} PAD(n_bytes_j, A), data padded to A at the end.
        let mut expected_offset = 0;
        for (info, (name, dims, ty, data)) in f.tensors().iter().zip(&tensors) {
            assert_eq!(info.name(), name);
            assert_eq!(info.dims(), dims.as_slice());
            assert_eq!(info.ty(), *ty);
            assert_eq!(info.offset(), expected_offset);
            assert_eq!(f.tensor(name).unwrap().data(), data.as_slice());
            expected_offset += info.n_bytes().next_multiple_of(a);
        }
        assert_eq!(bytes.len() as u64, f.data_offset() + expected_offset);
    }
}

#[test]
fn mmap_views_borrow_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut b = GgufBuilder::new();
    b.add_tensor("w", &[4, 2], GgmlType::F32).unwrap();
    b.add_tensor("h", &[4], GgmlType::F16).unwrap();
    let mut w = b.create(&path).unwrap();
    let values = [1.0f32, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0];
    w.write_tensor_f32("w", &values).unwrap();
    w.write_tensor_f32("h", &[0.5, 1.5, 2.5, 65504.0]).unwrap();
    w.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.path(), path);
    let view = f.tensor("w").unwrap();
    assert_eq!(view.as_f32().unwrap(), values);
    assert_eq!(view.data().as_ptr(), view.as_f32().unwrap().as_ptr().cast());
    assert_eq!(
        f.tensor("h").unwrap().to_f32().unwrap(),
        [0.5, 1.5, 2.5, 65504.0]
    );
    assert!(f.tensor("h").unwrap().as_f32().is_none());
    assert_eq!(f.views().map(|v| v.name()).collect::<Vec<_>>(), ["w", "h"]);
    assert!(matches!(f.tensor("nope"), Err(Error::MissingTensor { .. })));
    let raw = f.tensor_info("w").unwrap();
    assert_eq!((raw.n_elements(), raw.n_bytes()), (8, 32));
}

#[test]
fn writer_refuses_what_readers_would_reject() {
    let mut b = GgufBuilder::new();
    b.add_metadata("k", 1u32).unwrap();
    assert!(matches!(
        b.add_metadata("k", 2u32),
        Err(Error::DuplicateKey { .. })
    ));
    // The format allows an empty key and an empty tensor name; the writer accepts what the
    // reader accepts, so every file read can be written back.
    b.add_metadata("", 2u32).unwrap();
    assert!(matches!(
        b.add_metadata("general.alignment", 64u64),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        b.add_metadata("general.alignment", 48u32),
        Err(Error::Invalid { .. })
    ));
    let mut deep = Array::U8(vec![]);
    for _ in 0..8 {
        deep = Array::Array(vec![deep]);
    }
    assert!(matches!(
        b.add_metadata("deep", deep),
        Err(Error::Invalid { .. })
    ));
    b.add_metadata("general.alignment", 64u32).unwrap();
    let invalid =
        |r: gguf_io::Result<()>| assert!(matches!(r, Err(Error::Invalid { .. })), "{r:?}");
    invalid(b.add_tensor("x".repeat(64), &[4], GgmlType::F32));
    GgufBuilder::new()
        .add_tensor("", &[4], GgmlType::F32)
        .unwrap();
    invalid(b.add_tensor("five", &[1, 1, 1, 1, 1], GgmlType::F32));
    invalid(b.add_tensor("q", &[100], GgmlType::TQ2_0));
    invalid(b.add_tensor("q", &[1 << 62, 4], GgmlType::F32));
    b.add_tensor("a", &[32], GgmlType::Q8_0).unwrap();
    invalid(b.add_tensor("a", &[32], GgmlType::F32));
    invalid(b.set_alignment(128));
    b.add_tensor("b", &[2], GgmlType::F32).unwrap();

    let mut w = b.clone().write_to(Vec::new()).unwrap();
    assert!(matches!(
        w.write_tensor("b", &[0; 8]),
        Err(Error::OutOfOrder { .. })
    ));
    assert!(matches!(
        w.write_tensor("a", &[0; 33]),
        Err(Error::SizeMismatch { .. })
    ));
    assert!(matches!(
        w.write_tensor_f32("a", &[0.0; 31]),
        Err(Error::SizeMismatch { .. })
    ));
    w.write_tensor("a", &[0; 34]).unwrap();
    let w_err = w.finish().unwrap_err();
    assert!(
        matches!(w_err, Error::Unfinished { missing: 1, .. }),
        "{w_err}"
    );

    let mut w = b.write_to(Vec::new()).unwrap();
    w.write_tensor("a", &[0; 34]).unwrap();
    w.write_tensor_f32("b", &[1.0, 2.0]).unwrap();
    assert!(matches!(
        w.write_tensor("b", &[0; 8]),
        Err(Error::OutOfOrder { .. })
    ));
    let bytes = w.finish().unwrap();
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.tensor("b").unwrap().to_f32().unwrap(), [1.0, 2.0]);
}

#[test]
fn rewriting_a_read_file_reproduces_it_byte_for_byte() {
    let (bytes, _) = mixed_file(Some(64));
    assert_eq!(rewrite(&bytes), bytes);
}

/// Reads a file and writes it again through the builder.
fn rewrite(bytes: &[u8]) -> Vec<u8> {
    let f = GgufFile::from_bytes(bytes.to_vec()).unwrap();
    let mut b = GgufBuilder::new();
    for (k, v) in f.metadata().iter() {
        b.add_metadata(k, v.clone()).unwrap();
    }
    for t in f.tensors() {
        b.add_tensor(t.name(), t.dims(), t.ty()).unwrap();
    }
    let mut w = b.write_to(Vec::new()).unwrap();
    for v in f.views() {
        w.write_tensor(v.name(), v.data()).unwrap();
    }
    w.finish().unwrap()
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        (-1e30f32..1e30).prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        ".{0,12}".prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        (-1e300f64..1e300).prop_map(Value::F64),
    ]
}

fn flat_array() -> impl Strategy<Value = Array> {
    use proptest::collection::vec as v;
    prop_oneof![
        v(any::<u8>(), 0..6).prop_map(Array::U8),
        v(any::<i16>(), 0..6).prop_map(Array::I16),
        v(any::<u32>(), 0..6).prop_map(Array::U32),
        v(any::<i32>(), 0..6).prop_map(Array::I32),
        v(-1e30f32..1e30, 0..6).prop_map(Array::F32),
        v(any::<bool>(), 0..6).prop_map(Array::Bool),
        v(".{0,6}", 0..6).prop_map(Array::String),
        v(any::<u64>(), 0..6).prop_map(Array::U64),
        v(any::<i64>(), 0..6).prop_map(Array::I64),
        v(-1e300f64..1e300, 0..6).prop_map(Array::F64),
    ]
}

fn array() -> impl Strategy<Value = Array> {
    flat_array().prop_recursive(3, 24, 4, |inner| {
        proptest::collection::vec(inner, 0..4).prop_map(Array::Array)
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![3 => scalar(), 1 => array().prop_map(Value::Array)]
}

const TYPES: [GgmlType; 9] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::Q6_K,
    GgmlType::I8,
    GgmlType::I2_S,
];

fn tensor() -> impl Strategy<Value = (GgmlType, Vec<u64>, u64)> {
    (
        0..TYPES.len(),
        1u64..3,
        proptest::collection::vec(0u64..4, 0..4),
        any::<u64>(),
    )
        .prop_map(|(t, row_blocks, rest, seed)| {
            let ty = TYPES[t];
            let row = if ty == GgmlType::I2_S {
                128 * row_blocks
            } else {
                ty.block_size() * row_blocks
            };
            let mut dims = vec![row];
            dims.extend(rest);
            (ty, dims, seed)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_files_round_trip(
        metadata in proptest::collection::btree_map("[a-z_.]{1,16}", value(), 0..8),
        tensors in proptest::collection::vec(tensor(), 0..6),
        align_log2 in 0u32..8,
    ) {
        let metadata: BTreeMap<String, Value> = metadata;
        let mut b = GgufBuilder::new();
        b.set_alignment(1 << align_log2).unwrap();
        for (k, v) in &metadata {
            if k != "general.alignment" {
                b.add_metadata(k.clone(), v.clone()).unwrap();
            }
        }
        let mut data = Vec::new();
        for (i, (ty, dims, seed)) in tensors.iter().enumerate() {
            b.add_tensor(format!("t{i}"), dims, *ty).unwrap();
            let n = ty.n_bytes(dims).unwrap() as usize;
            data.push((0..n).map(|j| (seed.wrapping_mul(j as u64 + 1) >> 7) as u8).collect::<Vec<u8>>());
        }
        let mut w = b.write_to(Vec::new()).unwrap();
        for (i, d) in data.iter().enumerate() {
            w.write_tensor(&format!("t{i}"), d).unwrap();
        }
        let bytes = w.finish().unwrap();
        let f = GgufFile::from_bytes(bytes.clone()).unwrap();
        prop_assert_eq!(f.alignment(), 1u64 << align_log2);
        for (k, v) in &metadata {
            if k != "general.alignment" {
                prop_assert_eq!(f.metadata().get(k), Some(v));
            }
        }
        prop_assert_eq!(f.tensors().len(), tensors.len());
        for (i, ((ty, dims, _), d)) in tensors.iter().zip(&data).enumerate() {
            let v = f.tensor(&format!("t{i}")).unwrap();
            prop_assert_eq!(v.ty(), *ty);
            prop_assert_eq!(v.dims(), dims.as_slice());
            prop_assert_eq!(v.data(), d.as_slice());
        }
        prop_assert_eq!(rewrite(&bytes), bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut with_magic = b"GGUF\x03\x00\x00\x00".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = GgufFile::from_bytes(bytes);
        let _ = GgufFile::from_bytes(with_magic);
    }
}
