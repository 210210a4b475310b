//! bitnet.cpp's three I2_S code layouts (x86 ACT_PARALLEL, ARM 64-value blocks, x86 "1x4"):
//! packing to each and reading back, against a literal transcription of the loops in
//! microsoft/BitNet `16da220`'s `quantize_i2_s` (src/ggml-bitnet-mad.cpp).

use proptest::prelude::*;
use ternary_core::Error;
use ternary_core::format::i2_s::{self, I2sLayout};

/// bitnet.cpp's `quantize_i2_s` loops for each build, on codes 0..=2 (value + 1), without
/// the scale tail.
fn reference_bytes(q8: &[u8], rows: usize, cols: usize, layout: I2sLayout) -> Vec<u8> {
    let n = rows * cols;
    let mut out = vec![0u8; n / 4];
    match layout {
        I2sLayout::X86 | I2sLayout::Arm => {
            let (qk, group) = if layout == I2sLayout::X86 {
                (128, 32)
            } else {
                (64, 16)
            };
            for i in 0..n / qk {
                for j in 0..qk {
                    let (group_idx, group_pos) = (j / group, j % group);
                    out[i * group + group_pos] |= q8[i * qk + j] << (6 - 2 * group_idx);
                }
            }
        }
        I2sLayout::Rows1x4 => {
            for rg in 0..rows / 4 {
                for col in 0..cols {
                    let q = |k: usize| q8[(rg * 4 + k) * cols + col];
                    out[rg * cols + col] = (q(0) << 6) | (q(1) << 4) | (q(2) << 2) | q(3);
                }
            }
        }
    }
    out
}

/// A shape every layout accepts: rows a multiple of 4, columns of 128.
fn shape_and_codes() -> impl Strategy<Value = (usize, usize, Vec<i8>)> {
    (1usize..4, 1usize..3).prop_flat_map(|(r4, c128)| {
        let (rows, cols) = (4 * r4, 128 * c128);
        (
            Just(rows),
            Just(cols),
            proptest::collection::vec(-1i8..=1, rows * cols),
        )
    })
}

proptest! {
    #[test]
    fn every_layout_packs_as_bitnet_cpp_and_reads_back((rows, cols, codes) in shape_and_codes(), scale in 0.0f32..4.0) {
        let q8: Vec<u8> = codes.iter().map(|&c| (c + 1) as u8).collect();
        let x86 = i2_s::pack_layout(&codes, rows, cols, scale, I2sLayout::X86).unwrap();
        for layout in I2sLayout::ALL {
            let bytes = i2_s::pack_layout(&codes, rows, cols, scale, layout).unwrap();
            let n = rows * cols;
            prop_assert_eq!(bytes.len(), n / 4 + i2_s::I2S_TAIL_BYTES);
            prop_assert_eq!(&bytes[..n / 4], &reference_bytes(&q8, rows, cols, layout)[..], "{:?}", layout);
            prop_assert_eq!(&bytes[n / 4..n / 4 + 4], &scale.to_le_bytes()[..]);
            prop_assert_eq!(i2_s::codes_from_layout(&bytes, rows, cols, layout).unwrap(), q8.clone());
            // Transcoded to x86, the tensor is the one the x86 build writes, and the
            // existing reader gives back the codes and the scale.
            let moved = i2_s::to_x86_layout(&bytes, rows, cols, layout).unwrap();
            prop_assert_eq!(&moved, &x86);
            let (blocks, s) = i2_s::from_bytes(&moved, n).unwrap();
            prop_assert_eq!(s, scale);
            let mut back = vec![0i8; n];
            i2_s::unpack_codes(&blocks, &mut back).unwrap();
            prop_assert_eq!(&back, &codes);
        }
    }

    #[test]
    fn a_code_3_survives_transcoding((rows, cols, codes) in shape_and_codes(), at in 0usize..512) {
        let at = at % (rows * cols / 4);
        for layout in I2sLayout::ALL {
            let mut bytes = i2_s::pack_layout(&codes, rows, cols, 1.0, layout).unwrap();
            bytes[at] |= 0b11;
            let moved = i2_s::to_x86_layout(&bytes, rows, cols, layout).unwrap();
            let threes = |b: &[u8]| b[..rows * cols / 4].iter().map(|&x| (0..4).filter(|k| (x >> (2 * k)) & 3 == 3).count()).sum::<usize>();
            prop_assert_eq!(threes(&moved), threes(&bytes));
        }
    }
}

#[test]
fn layouts_differ_and_the_reader_must_be_told() {
    // Row r holds code (r + c) % 3 - 1: reading the ARM or 1x4 bytes as x86 gives another
    // valid ternary matrix, which is why the layout is an explicit choice.
    let (rows, cols) = (8, 128);
    let codes: Vec<i8> = (0..rows * cols)
        .map(|i| ((i / cols + i % cols) % 3) as i8 - 1)
        .collect();
    for layout in [I2sLayout::Arm, I2sLayout::Rows1x4] {
        let bytes = i2_s::pack_layout(&codes, rows, cols, 1.0, layout).unwrap();
        let as_x86 = i2_s::codes_from_layout(&bytes, rows, cols, I2sLayout::X86).unwrap();
        assert!(as_x86.iter().all(|&c| c < 3));
        let as_x86: Vec<i8> = as_x86.iter().map(|&c| c as i8 - 1).collect();
        assert_ne!(as_x86, codes, "{layout:?}");
    }
    for l in I2sLayout::ALL {
        assert_eq!(I2sLayout::from_name(l.name()), Some(l));
    }
    assert_eq!(I2sLayout::from_name("neon"), None);
    assert_eq!(I2sLayout::default(), I2sLayout::X86);
}

#[test]
fn shapes_and_buffers_each_layout_cannot_hold_are_refused() {
    let codes = vec![0i8; 6 * 128];
    assert!(matches!(
        i2_s::pack_layout(&codes, 6, 128, 1.0, I2sLayout::Rows1x4),
        Err(Error::NotBlockMultiple {
            len: 6,
            block: 4,
            ..
        })
    ));
    assert!(matches!(
        i2_s::pack_layout(&[0i8; 96], 1, 96, 1.0, I2sLayout::Arm),
        Err(Error::NotBlockMultiple {
            len: 96,
            block: 64,
            ..
        })
    ));
    // ARM accepts 64-value tensors, but the x86 layout every reader here uses does not.
    let arm = i2_s::pack_layout(&[1i8; 64], 1, 64, 1.0, I2sLayout::Arm).unwrap();
    assert!(matches!(
        i2_s::to_x86_layout(&arm, 1, 64, I2sLayout::Arm),
        Err(Error::NotBlockMultiple { block: 128, .. })
    ));
    assert!(matches!(
        i2_s::codes_from_layout(&[0u8; 10], 4, 128, I2sLayout::Rows1x4),
        Err(Error::BufferLength {
            expected: 128,
            actual: 10,
            ..
        })
    ));
    assert!(matches!(
        i2_s::codes_from_layout(&[0u8; 10], usize::MAX, 2, I2sLayout::X86),
        Err(Error::Overflow { .. })
    ));
}
