//! f32 <-> stored bytes for every convertible type, through files and free-standing.

use gguf_io::convert::{dequantize, pack_ternary, quantize};
use gguf_io::{Error, GgmlType, GgufBuilder, GgufFile};
use half::f16;
use proptest::prelude::*;

/// Ternary values times a scale, with some exact zeros: the data BitNet exports.
fn ternary(n: usize, scale: f32, seed: u64) -> (Vec<i8>, Vec<f32>) {
    let mut s = seed;
    let codes: Vec<i8> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % 3) as i8 - 1
        })
        .collect();
    let values = codes.iter().map(|&c| f32::from(c) * scale).collect();
    (codes, values)
}

#[test]
fn ternary_weights_survive_every_ternary_format() {
    let (codes, values) = ternary(512 * 3, 0.0371, 7);
    let d = f16::from_f32(0.0371).to_f32();
    for ty in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
        let bytes = quantize(ty, &values).unwrap();
        assert_eq!(bytes.len() as u64, ty.n_bytes(&[512, 3]).unwrap());
        let back = dequantize(ty, &bytes, values.len() as u64).unwrap();
        // The only error is the fp16 rounding of the block scale.
        for ((b, &c), v) in back.iter().zip(&codes).zip(&values) {
            assert_eq!(*b, f32::from(c) * d, "{ty} value {v}");
        }
        assert_eq!(pack_ternary(ty, &codes, 0.0371).unwrap(), bytes, "{ty}");
    }
    let bytes = quantize(GgmlType::I2_S, &values).unwrap();
    assert_eq!(bytes.len(), values.len() / 4 + 32);
    assert_eq!(
        dequantize(GgmlType::I2_S, &bytes, values.len() as u64).unwrap(),
        values
    );
    assert_eq!(pack_ternary(GgmlType::I2_S, &codes, 0.0371).unwrap(), bytes);
}

#[test]
fn q8_0_is_within_half_a_step() {
    let values: Vec<f32> = (0..96)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173)
        .collect();
    let bytes = quantize(GgmlType::Q8_0, &values).unwrap();
    assert_eq!(bytes.len(), 3 * 34);
    let back = dequantize(GgmlType::Q8_0, &bytes, 96).unwrap();
    for (block, (v, b)) in values.chunks(32).zip(back.chunks(32)).enumerate() {
        let amax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (x, y) in v.iter().zip(b) {
            assert!(
                (x - y).abs() <= amax / 127.0 * 0.51 + 1e-3,
                "block {block}: {x} vs {y}"
            );
        }
    }
}

#[test]
fn conversion_errors_are_typed_and_name_the_tensor() {
    assert!(matches!(
        quantize(GgmlType::TQ2_0, &[0.0; 100]),
        Err(Error::Ternary { .. })
    ));
    assert!(matches!(
        quantize(GgmlType::Q8_0, &[f32::NAN; 32]),
        Err(Error::Ternary { .. })
    ));
    assert!(matches!(
        quantize(GgmlType::I2_S, &[0.0; 64]),
        Err(Error::Ternary { .. })
    ));
    assert!(matches!(
        quantize(GgmlType::Q4_K, &[0.0; 256]),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        pack_ternary(GgmlType::TQ1_0, &[2; 256], 1.0),
        Err(Error::Ternary { .. })
    ));
    assert!(matches!(
        pack_ternary(GgmlType::Q8_0, &[0; 32], 1.0),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        pack_ternary(GgmlType::I2_S, &[0; 128], f32::NAN),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        dequantize(GgmlType::TQ2_0, &[0; 65], 256),
        Err(Error::SizeMismatch { .. })
    ));
    assert!(matches!(
        dequantize(GgmlType::TQ2_0, &[0; 66], 255),
        Err(Error::Invalid { .. })
    ));
    // I2_S with an element count that is not a multiple of 128 is readable as raw bytes
    // (bitnet.cpp's size formula) but not convertible.
    let mut b = GgufBuilder::new();
    b.add_tensor("odd", &[64], GgmlType::I2_S).unwrap();
    b.add_tensor("nan", &[32], GgmlType::F32).unwrap();
    let mut w = b.write_to(Vec::new()).unwrap();
    w.write_tensor("odd", &[0; 48]).unwrap();
    let e = w.write_tensor_f32("nan", &[0.0; 31]).unwrap_err();
    assert!(
        matches!(e, Error::SizeMismatch { ref name, .. } if name == "nan"),
        "{e}"
    );
    w.write_tensor_f32("nan", &[f32::NAN; 32]).unwrap();
    let f = GgufFile::from_bytes(w.finish().unwrap()).unwrap();
    let e = f.tensor("odd").unwrap().to_f32().unwrap_err();
    assert!(
        matches!(e, Error::Ternary { ref name, .. } if name == "odd"),
        "{e}"
    );
    assert!(e.to_string().contains("odd"));
    assert!(f.tensor("nan").unwrap().to_f32().unwrap()[0].is_nan());
}

#[test]
fn unaligned_packed_bytes_dequantize_the_same() {
    let (_, values) = ternary(256 * 2, 0.5, 3);
    let bytes = quantize(GgmlType::TQ2_0, &values).unwrap();
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(&bytes);
    assert_eq!(
        dequantize(GgmlType::TQ2_0, &shifted[1..], 512).unwrap(),
        dequantize(GgmlType::TQ2_0, &bytes, 512).unwrap()
    );
}

#[test]
fn every_convertible_type_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.gguf");
    let (_, tern) = ternary(512 * 2, 0.25, 11);
    let smooth: Vec<f32> = (0..1024).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let types = [
        (GgmlType::F32, &smooth),
        (GgmlType::F16, &smooth),
        (GgmlType::BF16, &smooth),
        (GgmlType::Q8_0, &smooth),
        (GgmlType::TQ1_0, &tern),
        (GgmlType::TQ2_0, &tern),
        (GgmlType::I2_S, &tern),
    ];
    let mut b = GgufBuilder::new();
    b.add_metadata("general.architecture", "bitnet").unwrap();
    b.add_metadata(
        "general.quantization_version",
        gguf_io::QUANTIZATION_VERSION,
    )
    .unwrap();
    for (ty, _) in &types {
        b.add_tensor(ty.name(), &[512, 2], *ty).unwrap();
    }
    let mut w = b.create(&path).unwrap();
    for (ty, values) in &types {
        w.write_tensor_f32(ty.name(), values).unwrap();
    }
    w.finish().unwrap();
    let f = GgufFile::open(&path).unwrap();
    for (ty, values) in &types {
        let v = f.tensor(ty.name()).unwrap();
        assert_eq!(v.data(), quantize(*ty, values).unwrap());
        assert_eq!(
            v.to_f32().unwrap(),
            dequantize(*ty, v.data(), 1024).unwrap()
        );
    }
    assert_eq!(f.tensor("F32").unwrap().to_f32().unwrap(), smooth);
    assert_eq!(f.tensor("I2_S").unwrap().to_f32().unwrap(), tern);
}

proptest! {
    #[test]
    fn quantize_then_dequantize_is_stable(
        blocks in 1usize..4,
        seed in any::<u64>(),
        scale in 1e-3f32..10.0,
        t in 0usize..6,
    ) {
        let ty = [GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::TQ1_0, GgmlType::TQ2_0, GgmlType::I2_S][t];
        let n = blocks * 256;
        let (_, values) = ternary(n, scale, seed);
        let bytes = quantize(ty, &values).unwrap();
        prop_assert_eq!(bytes.len() as u64, ty.n_bytes(&[n as u64]).unwrap());
        let once = dequantize(ty, &bytes, n as u64).unwrap();
        // Quantizing what was dequantized reproduces it exactly (the formats are idempotent
        // on their own grid), and for ternary input the error is only the scale rounding.
        let twice = dequantize(ty, &quantize(ty, &once).unwrap(), n as u64).unwrap();
        prop_assert_eq!(&once, &twice);
        for (a, b) in values.iter().zip(&once) {
            prop_assert!((a - b).abs() <= scale * 4e-3, "{} vs {} ({})", a, b, ty);
        }
    }
}
