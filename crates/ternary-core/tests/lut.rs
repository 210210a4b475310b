//! The lookup-table kernel: its packed layout round-trips, and its results equal the scalar
//! kernels bit for bit across tiles, threads and ragged shapes.

use proptest::prelude::*;
use ternary_core::{
    ActQuant, Engine, Error, Format, Granularity, KernelPath, LutMatrix, PackedMatrix,
    QuantizedActivations, quantize_absmean,
};

mod support;
use support::lcg;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn lut_layout_round_trips(
        rows in 1usize..70, cols in 1usize..600, seed in any::<u64>(), ts in -4.0f32..4.0
    ) {
        let codes: Vec<i8> = lcg(seed, rows * cols, 1.49).iter().map(|v| v.round() as i8).collect();
        let units = cols.div_ceil(256);
        let scales = lcg(seed ^ 9, rows * units, 2.0);
        let m = LutMatrix::from_codes(rows, cols, &codes, &scales, ts).unwrap();
        prop_assert_eq!(m.unpack_codes(), codes);
        prop_assert_eq!(m.unit_scales(), scales);
        prop_assert_eq!(m.tensor_scale(), ts);
        let tiles = rows.div_ceil(LutMatrix::TILE_ROWS);
        prop_assert_eq!(m.codes().len(), tiles * units * 2048);
        prop_assert_eq!(m.tile_scales().len(), tiles * units * 32);
    }

    #[test]
    fn lut_matches_scalar_across_tiles(
        fmt in 0usize..3, rows in 1usize..100, k in 1usize..4, batch in 1usize..7,
        threads in 1usize..4, seed in any::<u64>(), per_block in any::<bool>()
    ) {
        let format = [Format::Tq1_0, Format::Tq2_0, Format::I2S][fmt];
        // I2_S rows of 128 * odd end in half an activation block.
        let cols = if format == Format::I2S { 128 * (2 * k - 1) } else { 256 * k };
        let w = lcg(seed, rows * cols, 1.0);
        let t = quantize_absmean(&w, rows, cols, Granularity::PerTensor, 1e-5).unwrap();
        let m = PackedMatrix::from_ternary(format, &t).unwrap();
        let x = lcg(seed ^ 0x77, batch * cols, 5.0);
        let mode = if per_block { ActQuant::PerBlock } else { ActQuant::PerToken };
        let q = QuantizedActivations::quantize(&x, batch, cols, mode).unwrap();
        let run = |path: KernelPath, threads: usize| {
            let mut y = vec![f32::NAN; batch * rows];
            Engine::new(threads).unwrap().with_path(path).unwrap()
                .gemm_quantized(&m, &q, &mut y).unwrap();
            y.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
        };
        prop_assert_eq!(run(KernelPath::Lut, threads), run(KernelPath::Scalar, 1), "{}", format);
    }
}

#[test]
fn lut_handles_extreme_activations_exactly() {
    // All activations -128 and all weights -1: every table entry is +256, the int16 worst case.
    let (rows, cols) = (33, 512);
    let t = quantize_absmean(
        &vec![-1.0; rows * cols],
        rows,
        cols,
        Granularity::PerTensor,
        0.0,
    )
    .unwrap();
    let m = PackedMatrix::from_ternary(Format::Tq2_0, &t).unwrap();
    let mut q =
        QuantizedActivations::quantize(&vec![1.0; cols], 1, cols, ActQuant::PerToken).unwrap();
    for b in &mut q.blocks {
        *b = ternary_core::BlockQ8K::new(1.0, [-128; 256]);
    }
    let mut y = vec![0f32; rows];
    Engine::new(2)
        .unwrap()
        .with_path(KernelPath::Lut)
        .unwrap()
        .gemm_quantized(&m, &q, &mut y)
        .unwrap();
    let scale = t.scales[0];
    let d = half::f16::from_f32(scale).to_f32();
    // Two units of sum 256 * 128 = 32768, each folded as sumi * (d * 1.0).
    let expect = 32768.0 * d + 32768.0 * d;
    assert!(y.iter().all(|&v| v == expect), "{y:?} vs {expect}");
}

#[test]
fn lut_errors_are_typed() {
    let w = lcg(1, 4 * 32, 1.0);
    let q8 = PackedMatrix::quantize(Format::Q8_0, &w, 4, 32).unwrap();
    assert!(matches!(
        LutMatrix::from_packed(&q8),
        Err(Error::UnsupportedFormat { .. })
    ));
    assert!(matches!(
        LutMatrix::from_codes(2, 2, &[0, 1, 2, 0], &[1.0, 1.0], 1.0),
        Err(Error::InvalidCode { index: 2, .. })
    ));
    assert!(matches!(
        LutMatrix::from_codes(2, 2, &[0; 4], &[1.0], 1.0),
        Err(Error::BufferLength { .. })
    ));
    assert!(matches!(
        LutMatrix::from_codes(1, 2, &[0; 2], &[f32::NAN], 1.0),
        Err(Error::InvalidScale { .. })
    ));
    assert!(matches!(
        LutMatrix::from_codes(0, 2, &[], &[], 1.0),
        Err(Error::Empty { .. })
    ));
    // Q8_0 on the Lut path falls back to a dot-product kernel and still matches scalar.
    let x = lcg(3, 32, 1.0);
    let (mut a, mut b) = (vec![0f32; 4], vec![0f32; 4]);
    Engine::new(1)
        .unwrap()
        .with_path(KernelPath::Lut)
        .unwrap()
        .gemv(&q8, &x, &mut a)
        .unwrap();
    Engine::new(1)
        .unwrap()
        .with_path(KernelPath::Scalar)
        .unwrap()
        .gemv(&q8, &x, &mut b)
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(KernelPath::parse("lut").unwrap(), KernelPath::Lut);
}
