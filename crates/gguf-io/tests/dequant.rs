//! Dequantizers of the block types other producers write (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! Q4_K, Q5_K, Q6_K, F16, BF16): bit-identical to gguf-py 0.19.0's `gguf.quants.dequantize`
//! on random blocks (needs `MAGNET_PYTHON`, skipped without it unless
//! `MAGNET_REQUIRE_ORACLES=1`), plus properties that hold for any bytes.

use gguf_io::{GgmlType, convert};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;

const READ_ONLY: [GgmlType; 7] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MAGNET_PYTHON") {
        return Some(p.into());
    }
    assert!(
        std::env::var("MAGNET_REQUIRE_ORACLES").as_deref() != Ok("1"),
        "MAGNET_REQUIRE_ORACLES=1 but MAGNET_PYTHON is not set"
    );
    eprintln!("skipping the gguf-py dequantizer cross-check: MAGNET_PYTHON is not set");
    None
}

fn block(ty: GgmlType) -> (usize, usize) {
    let elems = ty.block_size();
    (
        elems as usize,
        ty.n_bytes(&[elems]).expect("one block") as usize,
    )
}

#[test]
fn dequantized_values_are_gguf_py_s_bit_for_bit() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/dequant_blocks.py");
    let out = Command::new(python)
        .arg(script)
        .arg(dir.path())
        .output()
        .expect("running MAGNET_PYTHON");
    assert!(
        out.status.success(),
        "dequant_blocks.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut checked = 0;
    for ty in READ_ONLY
        .into_iter()
        .chain([GgmlType::Q8_0, GgmlType::F16, GgmlType::BF16])
    {
        let raw = std::fs::read(dir.path().join(format!("{ty}.bin"))).unwrap();
        let theirs: Vec<u32> = std::fs::read(dir.path().join(format!("{ty}.f32")))
            .unwrap()
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let ours = convert::dequantize(ty, &raw, theirs.len() as u64).unwrap();
        let mismatches = ours
            .iter()
            .zip(&theirs)
            .filter(|(a, b)| a.to_bits() != **b)
            .count();
        assert_eq!(
            mismatches,
            0,
            "{ty}: {mismatches} of {} values differ",
            theirs.len()
        );
        checked += theirs.len();
    }
    assert!(checked > 90_000, "{checked}");
}

fn typed_blocks() -> impl Strategy<Value = (GgmlType, Vec<u8>)> {
    (0..READ_ONLY.len(), 1usize..5).prop_flat_map(|(t, n)| {
        let ty = READ_ONLY[t];
        let (_, size) = block(ty);
        proptest::collection::vec(any::<u8>(), n * size).prop_map(move |b| (ty, b))
    })
}

/// Byte ranges of the fp16 scale fields of one block.
fn scale_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => unreachable!(),
    }
}

proptest! {
    #[test]
    fn blocks_dequantize_independently((ty, bytes) in typed_blocks()) {
        let (elems, size) = block(ty);
        let n = (bytes.len() / size * elems) as u64;
        let whole = convert::dequantize(ty, &bytes, n).unwrap();
        prop_assert_eq!(whole.len() as u64, n);
        for (i, b) in bytes.chunks_exact(size).enumerate() {
            let one = convert::dequantize(ty, b, elems as u64).unwrap();
            let (a, c): (Vec<u32>, Vec<u32>) = (
                whole[i * elems..(i + 1) * elems].iter().map(|v| v.to_bits()).collect(),
                one.iter().map(|v| v.to_bits()).collect(),
            );
            prop_assert_eq!(a, c);
        }
        // A wrong length is refused, never read past.
        prop_assert!(convert::dequantize(ty, &bytes[1..], n).is_err());
    }

    #[test]
    fn zero_scales_give_zeros_and_finite_scales_finite_values((ty, mut bytes) in typed_blocks()) {
        let (elems, size) = block(ty);
        let n = (bytes.len() / size * elems) as u64;
        for b in bytes.chunks_exact_mut(size) {
            for &at in scale_fields(ty) {
                b[at..at + 2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
            }
        }
        prop_assert!(convert::dequantize(ty, &bytes, n).unwrap().iter().all(|v| v.is_finite()));
        for b in bytes.chunks_exact_mut(size) {
            for &at in scale_fields(ty) {
                b[at..at + 2].fill(0);
            }
        }
        prop_assert!(convert::dequantize(ty, &bytes, n).unwrap().iter().all(|&v| v == 0.0));
    }

    #[test]
    fn symmetric_types_scale_linearly_with_d((ty, mut bytes) in typed_blocks()) {
        // Q4_0, Q5_0 and Q6_K are `d * integer`: doubling d (exact in fp16) doubles every value.
        prop_assume!(matches!(ty, GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q6_K));
        let (elems, size) = block(ty);
        let n = (bytes.len() / size * elems) as u64;
        let at = scale_fields(ty)[0];
        for b in bytes.chunks_exact_mut(size) {
            b[at..at + 2].copy_from_slice(&half::f16::from_f32(0.125).to_le_bytes());
        }
        let one = convert::dequantize(ty, &bytes, n).unwrap();
        for b in bytes.chunks_exact_mut(size) {
            b[at..at + 2].copy_from_slice(&half::f16::from_f32(0.25).to_le_bytes());
        }
        let two = convert::dequantize(ty, &bytes, n).unwrap();
        for (a, b) in one.iter().zip(&two) {
            prop_assert_eq!(2.0 * a, *b);
        }
    }
}

#[test]
fn unsupported_types_are_named() {
    let err = convert::dequantize(GgmlType::Q2_K, &[0; 84], 256).unwrap_err();
    assert!(err.to_string().contains("Q2_K"), "{err}");
    assert!(!GgmlType::Q4_K.is_convertible() && GgmlType::Q4_K.is_dequantizable());
    // Reading is not writing: no k-quant quantizer.
    assert!(convert::quantize(GgmlType::Q6_K, &[0.0; 256]).is_err());
}
