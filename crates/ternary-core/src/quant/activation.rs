//! Absmax int8 activation quantization: per token (BitNet) and per 256-block (ggml Q8_K).
//!
//! The kernels consume [`QuantizedActivations`]: every token row cut into [`BlockQ8K`] blocks
//! (f32 scale, 256 int8 values, 16 partial sums), zero-padded to a multiple of 256. A
//! per-token quantization becomes blocks that all share the token's scale.

use crate::error::{Error, Result, check_finite, check_len};

/// Per-token int8 activations: `q = clamp(round(x * s), -128, 127)` with
/// `s = 127 / max(max|x|, 1e-5)` per row; `x ≈ q / s`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationsI8 {
    /// Tokens.
    pub rows: usize,
    /// Features per token.
    pub cols: usize,
    /// Row-major codes.
    pub q: Vec<i8>,
    /// `s` per row (multiply x by it to get q).
    pub scales: Vec<f32>,
}

impl ActivationsI8 {
    /// `q / s` for every value, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        self.q
            .chunks_exact(self.cols.max(1))
            .zip(&self.scales)
            .flat_map(|(r, &s)| r.iter().map(move |&q| q as f32 / s))
            .collect()
    }
}

fn check_matrix(what: &'static str, x: &[f32], rows: usize, cols: usize) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(Error::Empty { what, rows, cols });
    }
    let n = rows
        .checked_mul(cols)
        .ok_or(Error::Overflow { what, rows, cols })?;
    check_len(what, x.len(), n, "elements")?;
    check_finite(what, x)
}

/// `clamp(round_ties_even(y), -128, 127)` as an int8, exactly, in arithmetic the compiler
/// vectorizes: `f32::round_ties_even` is a libm call (`rintf`) on x86-64 without SSE4.1,
/// and it was 5 % of a forward pass. Clamping first changes nothing (rounding is monotone
/// and the bounds are integers), and for `|y| <= 128` adding and subtracting `1.5 * 2^23`
/// rounds to the nearest integer, ties to even, in the default rounding mode.
#[inline(always)]
fn round_clamped(y: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    ((y.clamp(-128.0, 127.0) + MAGIC) - MAGIC) as i8
}

/// BitNet per-token absmax quantization of a row-major `rows x cols` matrix.
pub fn quantize_per_token(x: &[f32], rows: usize, cols: usize) -> Result<ActivationsI8> {
    check_matrix("activations", x, rows, cols)?;
    let mut q = Vec::with_capacity(x.len());
    let mut scales = Vec::with_capacity(rows);
    for row in x.chunks_exact(cols) {
        let s = 127.0 / crate::format::amax(row).max(1e-5);
        scales.push(s);
        q.extend(row.iter().map(|&v| round_clamped(v * s)));
    }
    Ok(ActivationsI8 {
        rows,
        cols,
        q,
        scales,
    })
}

/// 256 int8 activations with an f32 scale and 16 partial sums (ggml `block_q8_K`, 292 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8K {
    /// Scale: value = `d * q` (ggml's quantizer makes it negative when the largest-magnitude
    /// value is positive).
    pub d: f32,
    /// Codes.
    pub qs: [i8; 256],
    /// `bsums[j] = sum(qs[16j .. 16j + 16])`.
    pub bsums: [i16; 16],
}

impl BlockQ8K {
    /// Builds a block from codes and a scale, computing the partial sums.
    pub fn new(d: f32, qs: [i8; 256]) -> Self {
        let mut bsums = [0i16; 16];
        for (s, c) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
            *s = c.iter().map(|&v| v as i16).sum();
        }
        BlockQ8K { d, qs, bsums }
    }

    /// Sum of all 256 codes.
    #[inline]
    pub fn sum(&self) -> i32 {
        self.bsums.iter().map(|&s| s as i32).sum()
    }
}

/// ggml's `quantize_row_q8_K_ref`, bit-exact: per 256 values, the largest-magnitude value `m`
/// (sign kept) gives `iscale = -127/m`, `q = min(127, round_half_even(iscale*x))`, `d = 1/iscale`.
pub fn quantize_row_q8k(x: &[f32], out: &mut [BlockQ8K]) -> Result<()> {
    if !x.len().is_multiple_of(256) {
        return Err(Error::NotBlockMultiple {
            what: "row length",
            format: "q8_k",
            len: x.len(),
            block: 256,
        });
    }
    check_len("q8_k output", out.len(), x.len() / 256, "blocks")?;
    check_finite("q8_k input", x)?;
    for (xb, ob) in x.chunks_exact(256).zip(out.iter_mut()) {
        *ob = q8k_block(xb);
    }
    Ok(())
}

/// One ggml Q8_K block from up to 256 values (missing values count as zero).
fn q8k_block(xb: &[f32]) -> BlockQ8K {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in xb {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        return BlockQ8K::new(0.0, [0; 256]);
    }
    let iscale = -127.0 / max;
    let mut qs = [0i8; 256];
    for (q, &v) in qs.iter_mut().zip(xb) {
        *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
    }
    BlockQ8K::new(1.0 / iscale, qs)
}

/// How [`QuantizedActivations::quantize`] scales activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActQuant {
    /// One absmax scale per token (BitNet b1.58 training recipe, bitnet.cpp).
    #[default]
    PerToken,
    /// One absmax scale per 256 values (ggml Q8_K, what llama.cpp uses for TQ1_0/TQ2_0).
    PerBlock,
}

/// Activations ready for the kernels: `rows` tokens of `cols` features, each token stored as
/// `blocks_per_row` [`BlockQ8K`] blocks (the last one zero-padded).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedActivations {
    /// Tokens.
    pub rows: usize,
    /// Features per token (before padding).
    pub cols: usize,
    /// `ceil(cols / 256)`.
    pub blocks_per_row: usize,
    /// `rows * blocks_per_row` blocks, token-major.
    pub blocks: Vec<BlockQ8K>,
}

impl QuantizedActivations {
    /// Quantizes a row-major `rows x cols` f32 matrix.
    pub fn quantize(x: &[f32], rows: usize, cols: usize, mode: ActQuant) -> Result<Self> {
        match mode {
            ActQuant::PerToken => Ok(Self::from_per_token(&quantize_per_token(x, rows, cols)?)),
            ActQuant::PerBlock => {
                check_matrix("activations", x, rows, cols)?;
                let bpr = cols.div_ceil(256);
                let mut blocks = Vec::with_capacity(rows * bpr);
                for row in x.chunks_exact(cols) {
                    blocks.extend(row.chunks(256).map(q8k_block));
                }
                Ok(QuantizedActivations {
                    rows,
                    cols,
                    blocks_per_row: bpr,
                    blocks,
                })
            }
        }
    }

    /// Re-blocks per-token activations; every block of a token gets `d = 1/s`.
    pub fn from_per_token(a: &ActivationsI8) -> Self {
        let bpr = a.cols.div_ceil(256);
        let mut blocks = Vec::with_capacity(a.rows * bpr);
        for (row, &s) in a.q.chunks_exact(a.cols.max(1)).zip(&a.scales) {
            for c in row.chunks(256) {
                let mut qs = [0i8; 256];
                qs[..c.len()].copy_from_slice(c);
                blocks.push(BlockQ8K::new(1.0 / s, qs));
            }
        }
        QuantizedActivations {
            rows: a.rows,
            cols: a.cols,
            blocks_per_row: bpr,
            blocks,
        }
    }

    /// The blocks of token `t`.
    #[inline]
    pub fn row(&self, t: usize) -> &[BlockQ8K] {
        &self.blocks[t * self.blocks_per_row..(t + 1) * self.blocks_per_row]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vectorizable_rounding_equals_round_ties_even_then_clamp() {
        let reference = |y: f32| y.round_ties_even().clamp(-128.0, 127.0) as i8;
        // Every quarter step over the int8 range and past it (ties included), the largest
        // magnitudes, the floats next to the ties and to the bounds.
        let mut ys: Vec<f32> = (-1200..=1200).map(|i| i as f32 * 0.25).collect();
        for t in (-130..130).map(|i| i as f32 + 0.5) {
            ys.extend([t.next_down(), t, t.next_up()]);
        }
        ys.extend([
            127.0f32.next_up(),
            (-128.0f32).next_down(),
            f32::MAX,
            f32::MIN,
            -0.0,
        ]);
        for y in ys {
            assert_eq!(round_clamped(y), reference(y), "{y}");
        }
    }

    #[test]
    fn q8k_sign_convention_matches_ggml() {
        let mut x = [0.0f32; 256];
        x[3] = 2.0;
        x[7] = -1.0;
        let mut b = [BlockQ8K::new(0.0, [0; 256])];
        quantize_row_q8k(&x, &mut b).unwrap();
        assert_eq!(b[0].qs[3], -127);
        assert_eq!(b[0].qs[7], 64); // -127/2 * -1 = 63.5 -> 64 (half to even)
        assert!(b[0].d < 0.0);
        assert_eq!(b[0].bsums[0], -127 + 64);
    }

    #[test]
    fn errors_are_typed() {
        assert!(matches!(
            quantize_per_token(&[], 0, 3),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            quantize_per_token(&[1.0, f32::INFINITY], 1, 2),
            Err(Error::NonFinite { index: 1, .. })
        ));
        let mut b = [BlockQ8K::new(0.0, [0; 256])];
        assert!(matches!(
            quantize_row_q8k(&[0.0; 100], &mut b),
            Err(Error::NotBlockMultiple { .. })
        ));
    }

    proptest! {
        #[test]
        fn per_token_error_is_half_a_step(
            rows in 1usize..4, cols in 1usize..600,
            vals in proptest::collection::vec(-50.0f32..50.0, 2400)
        ) {
            let x = &vals[..rows * cols];
            let a = quantize_per_token(x, rows, cols).unwrap();
            let d = a.dequantize();
            for (i, (&v, &w)) in x.iter().zip(&d).enumerate() {
                let s = a.scales[i / cols];
                prop_assert!((v - w).abs() <= 0.5 / s * 1.0001);
            }
            for mode in [ActQuant::PerToken, ActQuant::PerBlock] {
                let q = QuantizedActivations::quantize(x, rows, cols, mode).unwrap();
                prop_assert_eq!(q.blocks.len(), rows * cols.div_ceil(256));
                for t in 0..rows {
                    for (k, &v) in x[t * cols..(t + 1) * cols].iter().enumerate() {
                        let b = &q.row(t)[k / 256];
                        let back = b.d * b.qs[k % 256] as f32;
                        prop_assert!((v - back).abs() <= 0.5 * b.d.abs() * 1.0001 + 1e-6);
                    }
                    for b in q.row(t) {
                        prop_assert_eq!(b.sum(), b.qs.iter().map(|&v| v as i32).sum::<i32>());
                    }
                }
            }
        }
    }
}
