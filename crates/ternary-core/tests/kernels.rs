//! Every kernel path on this CPU gives bit-identical results to the scalar reference, for every
//! format, over random shapes (including I2_S rows that end in a half activation block), batch
//! sizes and thread counts; and the results match a float reference within quantization error.

use proptest::prelude::*;
use ternary_core::{
    ActQuant, Engine, Error, Format, Granularity, KernelPath, PackedMatrix, QuantizedActivations,
    quantize_absmean,
};

mod support;
use support::lcg;

fn matrix(format: Format, rows: usize, cols: usize, seed: u64, ternary: bool) -> PackedMatrix {
    let w = lcg(seed, rows * cols, 1.0);
    if ternary && format != Format::Q8_0 {
        let t = quantize_absmean(&w, rows, cols, Granularity::PerTensor, 1e-5).unwrap();
        PackedMatrix::from_ternary(format, &t).unwrap()
    } else {
        PackedMatrix::quantize(format, &w, rows, cols).unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn fast_paths_match_scalar_bit_for_bit(
        fmt in 0usize..4, rows in 1usize..40, k in 1usize..6, batch in 1usize..12,
        threads in 1usize..4, seed in any::<u64>(), per_block in any::<bool>(), ternary in any::<bool>()
    ) {
        let format = Format::ALL[fmt];
        // Ragged: I2_S rows of 128*k end in half an activation block when k is odd.
        let cols = format.block_elems().max(128) * k;
        let m = matrix(format, rows, cols, seed, ternary);
        let x = lcg(seed ^ 0x5555, batch * cols, 3.0);
        let mode = if per_block { ActQuant::PerBlock } else { ActQuant::PerToken };
        let q = QuantizedActivations::quantize(&x, batch, cols, mode).unwrap();
        let reference = {
            let e = Engine::new(1).unwrap().with_path(KernelPath::Scalar).unwrap();
            let mut y = vec![0f32; batch * rows];
            e.gemm_quantized(&m, &q, &mut y).unwrap();
            y
        };
        for path in KernelPath::supported() {
            let e = Engine::new(threads).unwrap().with_path(path).unwrap();
            let mut y = vec![f32::NAN; batch * rows];
            e.gemm_quantized(&m, &q, &mut y).unwrap();
            let a: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
            let b: Vec<u32> = reference.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(a, b, "path {} format {}", path.name(), format);
            // The first token alone, after the batch (which builds the 16-row interleaved
            // copy that single tokens use from then on).
            let q1 = QuantizedActivations::quantize(&x[..cols], 1, cols, mode).unwrap();
            let mut y1 = vec![f32::NAN; rows];
            e.gemm_quantized(&m, &q1, &mut y1).unwrap();
            let r1 = {
                let mut r1 = vec![0f32; rows];
                Engine::new(1).unwrap().with_path(KernelPath::Scalar).unwrap()
                    .gemm_quantized(&m, &q1, &mut r1).unwrap();
                r1
            };
            let a: Vec<u32> = y1.iter().map(|v| v.to_bits()).collect();
            let b: Vec<u32> = r1.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(a, b, "path {} format {} one token", path.name(), format);
        }
        // The scalar result is the integer dot product of the unpacked codes, scaled.
        let deq = m.dequantize();
        for t in 0..batch {
            let xr = &x[t * cols..(t + 1) * cols];
            for r in 0..rows {
                let exact: f64 = deq[r * cols..(r + 1) * cols].iter().zip(xr)
                    .map(|(&a, &b)| a as f64 * b as f64).sum();
                let mag: f64 = deq[r * cols..(r + 1) * cols].iter().zip(xr)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
                let got = reference[t * rows + r] as f64;
                // int8 activations: relative error per element <= 1/254 of the row's max.
                prop_assert!((got - exact).abs() <= mag * 0.02 + 1e-3,
                    "format {} t {} r {}: {} vs {}", format, t, r, got, exact);
            }
        }
    }
}

#[test]
fn high_level_gemv_and_gemm_agree() {
    let (rows, cols) = (37, 512);
    for format in Format::ALL {
        let m = matrix(format, rows, cols, 7, true);
        let x = lcg(11, 3 * cols, 2.0);
        let e = Engine::new(2).unwrap();
        let mut y = vec![0f32; 3 * rows];
        e.gemm(&m, &x, 3, &mut y).unwrap();
        for t in 0..3 {
            let mut yv = vec![0f32; rows];
            e.gemv(&m, &x[t * cols..(t + 1) * cols], &mut yv).unwrap();
            assert_eq!(&yv[..], &y[t * rows..(t + 1) * rows], "{format}");
        }
    }
}

#[test]
fn kernel_errors_are_typed() {
    let m = matrix(Format::Tq2_0, 4, 256, 1, true);
    let e = Engine::new(1).unwrap();
    let mut y = vec![0f32; 4];
    assert!(matches!(
        e.gemv(&m, &[0.0; 255], &mut y),
        Err(Error::BufferLength { .. })
    ));
    assert!(matches!(
        e.gemv(&m, &[0.0; 256], &mut y[..3]),
        Err(Error::BufferLength { .. })
    ));
    let mut x = vec![0.0f32; 256];
    x[3] = f32::NAN;
    assert!(matches!(
        e.gemv(&m, &x, &mut y),
        Err(Error::NonFinite { index: 3, .. })
    ));
    assert!(matches!(
        e.gemm(&m, &[], 0, &mut []),
        Err(Error::Empty { .. })
    ));
    let q = QuantizedActivations::quantize(&[0.5; 512], 1, 512, ActQuant::PerToken).unwrap();
    assert!(matches!(
        e.gemm_quantized(&m, &q, &mut y),
        Err(Error::Shape(_))
    ));
    assert!(matches!(Engine::new(0), Err(Error::ThreadPool(_))));
    assert!(matches!(
        KernelPath::parse("neon9"),
        Err(Error::UnknownPath(_))
    ));
    assert_eq!(KernelPath::parse("scalar").unwrap(), KernelPath::Scalar);
}

#[test]
fn large_batches_cross_token_tiles_bit_exactly() {
    // 70 tokens: more than one 64-token tile and a ragged group of 4 (and of 8); I2_S with
    // 384 columns ends in half an activation block, with 512 it has a 16-row interleaved
    // copy; 37 rows are two groups of 16 and a ragged tail.
    for (format, cols) in Format::ALL
        .into_iter()
        .map(|f| (f, if f == Format::I2S { 384 } else { 512 }))
        .chain([(Format::I2S, 512)])
    {
        let (rows, batch) = (37, 70);
        let m = matrix(format, rows, cols, 3, true);
        let x = lcg(5, batch * cols, 1.5);
        let q = QuantizedActivations::quantize(&x, batch, cols, ActQuant::PerBlock).unwrap();
        let mut reference = vec![0f32; batch * rows];
        Engine::new(1)
            .unwrap()
            .with_path(KernelPath::Scalar)
            .unwrap()
            .gemm_quantized(&m, &q, &mut reference)
            .unwrap();
        for path in KernelPath::supported() {
            for threads in [1, 2] {
                let mut y = vec![0f32; batch * rows];
                Engine::new(threads)
                    .unwrap()
                    .with_path(path)
                    .unwrap()
                    .gemm_quantized(&m, &q, &mut y)
                    .unwrap();
                let a: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
                let b: Vec<u32> = reference.iter().map(|v| v.to_bits()).collect();
                assert_eq!(a, b, "{format} {} t{threads}", path.name());
            }
        }
    }
}

#[test]
fn every_path_this_cpu_has_is_in_the_tested_set() {
    // The bit-exactness tests above loop over `KernelPath::supported()`: make sure the VNNI
    // paths are in it wherever the CPU has the features (so they cannot be skipped silently).
    #[cfg(target_arch = "x86_64")]
    {
        let s = KernelPath::supported();
        if std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512bw")
        {
            assert!(s.contains(&KernelPath::Avx512Vnni));
            assert_eq!(KernelPath::best(), KernelPath::Avx512Vnni);
        }
        if std::is_x86_feature_detected!("avxvnni") {
            assert!(s.contains(&KernelPath::AvxVnni));
        }
        assert_eq!(
            KernelPath::parse("avx512vnni").is_ok(),
            s.contains(&KernelPath::Avx512Vnni)
        );
    }
}

#[test]
fn vnni_extremes_and_fused_calls_match_scalar() {
    // All activations -128 against all +1 and all -1 weights (the largest unit sums), and
    // gemm_many over several matrices equal to separate scalar calls, batch 1 and 5.
    for (format, cols) in [
        (Format::I2S, 384),
        (Format::I2S, 512),
        (Format::Tq2_0, 512),
        (Format::Tq1_0, 512),
    ] {
        let mats: Vec<PackedMatrix> = [1.0f32, -1.0, 0.3]
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                // 5 rows (no 16-row group), 25 and 45 (groups and a ragged tail).
                let rows = 5 + 20 * i;
                let w: Vec<f32> = if v == 0.3 {
                    lcg(9, rows * cols, 1.0)
                } else {
                    vec![v; rows * cols]
                };
                let t = quantize_absmean(&w, rows, cols, Granularity::PerTensor, 1e-5).unwrap();
                PackedMatrix::from_ternary(format, &t).unwrap()
            })
            .collect();
        // 5 first: it builds the 16-row copy that batch 1 then uses.
        for batch in [5, 1] {
            let mut x = vec![-1.0f32; batch * cols];
            x[1] = 0.9; // per-token scale from |-1|: every other value quantizes to -128 or -127
            let q = QuantizedActivations::quantize(&x, batch, cols, ActQuant::PerToken).unwrap();
            let scalar = Engine::new(1)
                .unwrap()
                .with_path(KernelPath::Scalar)
                .unwrap();
            for path in KernelPath::supported() {
                for threads in [1, 2] {
                    let e = Engine::new(threads).unwrap().with_path(path).unwrap();
                    let mut outs: Vec<Vec<f32>> = mats
                        .iter()
                        .map(|m| vec![f32::NAN; batch * m.rows()])
                        .collect();
                    let mut jobs: Vec<(&PackedMatrix, &mut [f32])> = mats
                        .iter()
                        .zip(outs.iter_mut())
                        .map(|(m, o)| (m, &mut o[..]))
                        .collect();
                    e.gemm_many(&mut jobs, &q).unwrap();
                    for (m, o) in mats.iter().zip(&outs) {
                        let mut r = vec![0f32; batch * m.rows()];
                        scalar.gemm_quantized(m, &q, &mut r).unwrap();
                        let a: Vec<u32> = o.iter().map(|v| v.to_bits()).collect();
                        let b: Vec<u32> = r.iter().map(|v| v.to_bits()).collect();
                        assert_eq!(a, b, "{format} {} batch {batch} t{threads}", path.name());
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    /// `gemv_rows` over any split of the rows into whole 16-row groups equals the whole
    /// product on every path, with and without the 16-row copy built by a prompt.
    #[test]
    fn gemv_rows_over_any_split_equals_the_whole_product(
        fmt in 0usize..4, groups in 1usize..6, ragged in 0usize..16, k in 1usize..5,
        cuts in proptest::collection::vec(0usize..6, 0..4), prompt_first in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let format = Format::ALL[fmt];
        let rows = 16 * groups + ragged;
        let cols = format.block_elems().max(128) * k;
        let m = matrix(format, rows, cols, seed, true);
        let x = lcg(seed ^ 0xa5a5, 3 * cols, 2.0);
        let q1 = QuantizedActivations::quantize(&x[..cols], 1, cols, ActQuant::PerToken).unwrap();
        let q3 = QuantizedActivations::quantize(&x, 3, cols, ActQuant::PerToken).unwrap();
        // Range ends: group boundaries from `cuts`, then the last row.
        let mut ends: Vec<usize> = cuts.iter().map(|&c| (16 * c).min(rows)).collect();
        ends.push(rows);
        ends.sort_unstable();
        for path in KernelPath::supported() {
            let e = Engine::new(1).unwrap().with_path(path).unwrap();
            if !e.supports_gemv_rows(&m) {
                prop_assert_eq!(path, KernelPath::Lut);
                continue;
            }
            if prompt_first {
                let mut y3 = vec![0f32; 3 * rows];
                e.gemm_quantized(&m, &q3, &mut y3).unwrap();
            }
            let mut whole = vec![f32::NAN; rows];
            e.gemm_quantized(&m, &q1, &mut whole).unwrap();
            let mut parts = vec![f32::NAN; rows];
            let mut r0 = 0;
            for &end in &ends {
                e.gemv_rows(&m, &q1, r0, &mut parts[r0..end]).unwrap();
                r0 = end;
            }
            let a: Vec<u32> = parts.iter().map(|v| v.to_bits()).collect();
            let b: Vec<u32> = whole.iter().map(|v| v.to_bits()).collect();
            prop_assert_eq!(a, b, "path {} format {}", path.name(), format);
        }
    }
}

#[test]
fn gemv_rows_refuses_ranges_it_cannot_run() {
    let m = matrix(Format::Tq2_0, 40, 256, 3, true);
    let x = lcg(5, 2 * 256, 1.0);
    let q1 = QuantizedActivations::quantize(&x[..256], 1, 256, ActQuant::PerToken).unwrap();
    let q2 = QuantizedActivations::quantize(&x, 2, 256, ActQuant::PerToken).unwrap();
    let e = Engine::new(1)
        .unwrap()
        .with_path(KernelPath::Scalar)
        .unwrap();
    let mut y = [0f32; 40];
    // Not a group start, a group-unaligned end before the last row, past the end, two tokens.
    assert!(matches!(
        e.gemv_rows(&m, &q1, 8, &mut y[..8]),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        e.gemv_rows(&m, &q1, 0, &mut y[..20]),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        e.gemv_rows(&m, &q1, 32, &mut y[..16]),
        Err(Error::Shape(_))
    ));
    assert!(matches!(
        e.gemv_rows(&m, &q2, 0, &mut y[..16]),
        Err(Error::Shape(_))
    ));
    e.gemv_rows(&m, &q1, 32, &mut y[..8]).unwrap();
}
