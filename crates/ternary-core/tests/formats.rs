//! Pack / unpack / dequantize round trips and byte round trips for every format.

use half::f16;
use proptest::prelude::*;
use ternary_core::format::i2_s;
use ternary_core::{
    BlockTq2_0, Error, Format, Granularity, PackedFormat, PackedMatrix, Q8_0, Tq1_0, Tq2_0,
    quantize_absmean,
};

fn codes_strategy(len: usize) -> impl Strategy<Value = Vec<i8>> {
    proptest::collection::vec(-1i8..=1, len)
}

fn round_trip<F: PackedFormat>(codes: &[i8], scale: f32) -> Result<(), TestCaseError> {
    let mut blocks = vec![bytemuck::Zeroable::zeroed(); codes.len() / F::BLOCK_ELEMS];
    F::pack_codes(codes, scale, &mut blocks).unwrap();
    prop_assert_eq!(
        bytemuck::cast_slice::<_, u8>(&blocks).len(),
        F::FORMAT.row_bytes(codes.len()).unwrap()
    );
    let mut back = vec![0i8; codes.len()];
    F::unpack_codes(&blocks, &mut back).unwrap();
    prop_assert_eq!(&back, codes);
    let mut deq = vec![0f32; codes.len()];
    F::dequantize_row(&blocks, &mut deq).unwrap();
    let d = f16::from_f32(scale).to_f32();
    for (&c, &v) in codes.iter().zip(&deq) {
        prop_assert_eq!(v, c as f32 * d);
    }
    // Re-quantizing the dequantized row reproduces the codes (scale = block max, fp16 exact).
    let re = F::quantize_row_vec(&deq).unwrap();
    let mut back2 = vec![0i8; codes.len()];
    F::unpack_codes(&re, &mut back2).unwrap();
    for (blk, (a, b)) in codes
        .chunks(F::BLOCK_ELEMS)
        .zip(back2.chunks(F::BLOCK_ELEMS))
        .enumerate()
    {
        if a.iter().any(|&c| c != 0) || d == 0.0 {
            prop_assert_eq!(a, b, "block {}", blk);
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn tq1_0_round_trip(nb in 1usize..4, codes in codes_strategy(1024), scale in 0.0f32..4.0) {
        round_trip::<Tq1_0>(&codes[..nb * 256], scale)?;
    }

    #[test]
    fn tq2_0_round_trip(nb in 1usize..4, codes in codes_strategy(1024), scale in 0.0f32..4.0) {
        round_trip::<Tq2_0>(&codes[..nb * 256], scale)?;
    }

    #[test]
    fn q8_0_round_trip(nb in 1usize..9, codes in proptest::collection::vec(-127i8..=127, 256), scale in 0.0f32..4.0) {
        let mut blocks = vec![bytemuck::Zeroable::zeroed(); nb];
        Q8_0::pack_codes(&codes[..nb * 32], scale, &mut blocks).unwrap();
        let mut back = vec![0i8; nb * 32];
        Q8_0::unpack_codes(&blocks, &mut back).unwrap();
        prop_assert_eq!(&back[..], &codes[..nb * 32]);
        let mut deq = vec![0f32; nb * 32];
        Q8_0::dequantize_row(&blocks, &mut deq).unwrap();
        let d = f16::from_f32(scale).to_f32();
        for (&c, &v) in codes.iter().zip(&deq) {
            prop_assert_eq!(v, c as f32 * d);
        }
    }

    #[test]
    fn i2_s_round_trip(nb in 1usize..5, codes in codes_strategy(640), scale in 0.0f32..4.0) {
        let codes = &codes[..nb * 128];
        let blocks = i2_s::pack_codes(codes).unwrap();
        let mut back = vec![0i8; codes.len()];
        i2_s::unpack_codes(&blocks, &mut back).unwrap();
        prop_assert_eq!(&back[..], codes);
        let bytes = i2_s::to_bytes(&blocks, scale);
        prop_assert_eq!(bytes.len(), Format::I2S.tensor_bytes(1, codes.len()).unwrap());
        prop_assert!(bytes[codes.len() / 4 + 4..].iter().all(|&b| b == 0));
        let (b2, s2) = i2_s::from_bytes(&bytes, codes.len()).unwrap();
        prop_assert_eq!(&b2, &blocks);
        prop_assert_eq!(s2, scale);
        let mut deq = vec![0f32; codes.len()];
        i2_s::dequantize(&blocks, scale, &mut deq).unwrap();
        // bitnet.cpp's quantizer on ternary * scale data gives back the same codes and scale.
        let (b3, s3) = i2_s::quantize(&deq).unwrap();
        prop_assert_eq!(&b3, &blocks);
        if codes.iter().any(|&c| c != 0) {
            prop_assert_eq!(s3, scale);
        }
    }

    #[test]
    fn packed_matrix_bytes_round_trip(
        rows in 1usize..5, k in 1usize..3, fmt in 0usize..4, seed in any::<u32>()
    ) {
        let format = Format::ALL[fmt];
        let cols = 256 * k;
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1001) as f32 / 500.0 - 1.0)
            .collect();
        let t = quantize_absmean(&w, rows, cols, Granularity::PerTensor, 1e-5).unwrap();
        let m = PackedMatrix::from_ternary(format, &t).unwrap();
        prop_assert_eq!(m.unpack_codes(), t.codes.clone());
        let bytes = m.to_bytes();
        prop_assert_eq!(bytes.len(), format.tensor_bytes(rows, cols).unwrap());
        prop_assert_eq!(bytes.len(), m.byte_len());
        let back = PackedMatrix::from_bytes(format, rows, cols, &bytes).unwrap();
        prop_assert_eq!(&back, &m);
        // Dequantized values are code * scale, with the scale rounded to fp16 for block formats.
        let s = match format {
            Format::I2S => t.scales[0],
            _ => f16::from_f32(t.scales[0]).to_f32(),
        };
        for (&c, &v) in t.codes.iter().zip(&m.dequantize()) {
            prop_assert_eq!(v, c as f32 * s);
        }
        // Reference quantizers accept the same weights.
        let q = PackedMatrix::quantize(format, &w, rows, cols).unwrap();
        prop_assert_eq!(q.format(), format);
    }
}

#[test]
fn i2_s_is_tq2_0_with_reversed_fields() {
    // Reference [I]: a TQ2_0 block = two I2_S groups with each byte's 2-bit fields reversed.
    let codes: Vec<i8> = (0..256).map(|i| ((i * 7 + i / 3) % 3) as i8 - 1).collect();
    let mut tq = [BlockTq2_0 {
        qs: [0; 64],
        d: f16::ONE,
    }];
    Tq2_0::pack_codes(&codes, 1.0, &mut tq).unwrap();
    let i2 = i2_s::pack_codes(&codes).unwrap();
    let rev = |b: u8| (b >> 6) | ((b >> 2) & 0x0c) | ((b << 2) & 0x30) | (b << 6);
    for (g, blk) in i2.iter().enumerate() {
        for (j, &b) in blk.qs.iter().enumerate() {
            assert_eq!(tq[0].qs[32 * g + j], rev(b));
        }
    }
}

#[test]
fn bad_input_gives_typed_errors() {
    let mut out = vec![bytemuck::Zeroable::zeroed(); 1];
    assert!(matches!(
        Tq2_0::quantize_row(&[0.0; 100], &mut out),
        Err(Error::NotBlockMultiple {
            len: 100,
            block: 256,
            ..
        })
    ));
    assert!(matches!(
        Tq2_0::quantize_row(&[0.0; 512], &mut out),
        Err(Error::BufferLength {
            expected: 2,
            actual: 1,
            ..
        })
    ));
    let mut x = vec![0.5f32; 256];
    x[17] = f32::NAN;
    assert!(matches!(
        Tq1_0::quantize_row_vec(&x),
        Err(Error::NonFinite { index: 17, .. })
    ));
    x[17] = f32::NEG_INFINITY;
    assert!(matches!(
        PackedMatrix::quantize(Format::Q8_0, &x, 1, 256),
        Err(Error::NonFinite { index: 17, .. })
    ));
    let mut codes = vec![0i8; 256];
    codes[5] = 2;
    assert!(matches!(
        Tq2_0::pack_codes(&codes, 1.0, &mut out),
        Err(Error::InvalidCode {
            index: 5,
            code: 2,
            ..
        })
    ));
    codes[5] = 0;
    assert!(matches!(
        Tq2_0::pack_codes(&codes, f32::NAN, &mut out),
        Err(Error::InvalidScale { .. })
    ));
    assert!(matches!(
        PackedMatrix::quantize(Format::Tq2_0, &[], 0, 256),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        PackedMatrix::quantize(Format::Tq2_0, &[0.0; 256], 1, 128),
        Err(Error::NotBlockMultiple { .. })
    ));
    assert!(matches!(
        PackedMatrix::from_bytes(Format::Tq1_0, 2, 256, &[0u8; 107]),
        Err(Error::BufferLength {
            expected: 108,
            actual: 107,
            ..
        })
    ));
    assert!(matches!(
        PackedMatrix::from_bytes(Format::I2S, 1, 128, &[0u8; 32]),
        Err(Error::BufferLength { expected: 64, .. })
    ));
    let mut bad = vec![0u8; 64];
    bad[32..36].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(matches!(
        PackedMatrix::from_bytes(Format::I2S, 1, 128, &bad),
        Err(Error::InvalidScale { .. })
    ));
    // Per-row scales cannot go into I2_S (one scale per tensor).
    let w: Vec<f32> = (0..512).map(|i| if i < 256 { 1.0 } else { 3.0 }).collect();
    let t = quantize_absmean(&w, 2, 256, Granularity::PerRow, 1e-5).unwrap();
    assert!(matches!(
        PackedMatrix::from_ternary(Format::I2S, &t),
        Err(Error::Shape(_))
    ));
    // Per-group scales smaller than a block cannot go into TQ2_0.
    let t = quantize_absmean(&w, 2, 256, Granularity::PerGroup(128), 1e-5).unwrap();
    assert!(matches!(
        PackedMatrix::from_ternary(Format::Tq2_0, &t),
        Err(Error::NotBlockMultiple { .. })
    ));
    // ...but they can go into Q8_0 blocks.
    assert!(PackedMatrix::from_ternary(Format::Q8_0, &t).is_ok());
}
