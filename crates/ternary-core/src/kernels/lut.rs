//! Lookup-table (T-MAC / TL1 style) GEMV for ternary weights.
//!
//! Two ternary weights form a 4-bit index `c0 | c1 << 2` (codes `c = value + 1` in 0..=2).
//! For every pair of activations `(x0, x1)` the kernel first builds a 16-entry table of all
//! `(c0 - 1)·x0 + (c1 - 1)·x1` (once per input vector), then each weight pair costs one table
//! lookup instead of two multiplies. The sums reach ±256, so a table is stored as two byte
//! planes (low byte, signed high byte) and AVX2 looks both up with `pshufb`, 32 rows at a time,
//! re-forming exact int16 values with a byte interleave. Integer sums per 256-value unit are
//! exact, and [`super::combine`] folds them in the same order as the scalar kernels, so the
//! results are bit-identical to [`super::scalar`] for TQ1_0, TQ2_0 and I2_S.
//!
//! # The `LutMatrix` layout (plain data)
//! Rows are grouped in tiles of [`LutMatrix::TILE_ROWS`] = 32 (the last tile padded with
//! zero weights), columns padded with zero weights to a multiple of 256 (`units` = cols/256).
//! - `codes`: for tile `t`, unit `u`, quad `j` (columns `256u + 4j .. 256u + 4j + 4`) there are
//!   32 bytes at offset `((t · units + u) · 64 + j) · 32`; byte `i` belongs to row `32t + i`:
//!   its low nibble indexes the pair of columns `4j, 4j+1` and its high nibble `4j+2, 4j+3`
//!   (each nibble `c_even | c_odd << 2`). 2 bits per weight, like TQ2_0.
//! - `scales`: f32, for tile `t`, unit `u`, 32 entries at `(t · units + u) · 32` (one per row):
//!   the weight scale of that 256-block (the fp16 block scale of TQ1_0 / TQ2_0, 1.0 for I2_S).
//! - `tensor_scale`: multiplies each finished row (I2_S's per-tensor scale; 1.0 otherwise).

use super::combine;
use crate::error::{Error, Result, check_len};
use crate::format::check_scale;
use crate::matrix::{PackedData, PackedMatrix};
use crate::quant::BlockQ8K;

/// Weights repacked for the lookup-table kernel (layout in the [module docs](self)).
#[derive(Debug, Clone, PartialEq)]
pub struct LutMatrix {
    rows: usize,
    cols: usize,
    units: usize,
    codes: Vec<u8>,
    scales: Vec<f32>,
    tensor_scale: f32,
}

/// How far ahead the AVX2 kernel prefetches its code stream.
#[cfg(target_arch = "x86_64")]
const LUT_PREFETCH: usize = 1024;

/// Bytes of one (tile, unit) code block: 64 quads of 32 rows.
const UNIT_BYTES: usize = 64 * 32;
/// Bytes of the tables for one unit: 128 pairs, 16 low bytes + 16 high bytes each.
const TABLE_UNIT_BYTES: usize = 128 * 32;

impl LutMatrix {
    /// Rows per tile (one byte lane each in a 256-bit register).
    pub const TILE_ROWS: usize = 32;

    /// Packs a `rows x cols` matrix of ternary codes (-1..=1, row-major) with one weight scale
    /// per row and 256-column unit (`rows * ceil(cols / 256)` of them, row-major) and a scale
    /// applied to every finished row.
    pub fn from_codes(
        rows: usize,
        cols: usize,
        codes: &[i8],
        unit_scales: &[f32],
        tensor_scale: f32,
    ) -> Result<LutMatrix> {
        if rows == 0 || cols == 0 {
            return Err(Error::Empty {
                what: "lut matrix",
                rows,
                cols,
            });
        }
        let n = rows.checked_mul(cols).ok_or(Error::Overflow {
            what: "lut matrix",
            rows,
            cols,
        })?;
        check_len("lut matrix codes", codes.len(), n, "elements")?;
        let units = cols.div_ceil(256);
        check_len(
            "lut matrix unit scales",
            unit_scales.len(),
            rows * units,
            "scales",
        )?;
        if !tensor_scale.is_finite() {
            return Err(Error::InvalidScale {
                what: "lut matrix tensor scale",
                index: 0,
                value: tensor_scale,
            });
        }
        for (i, &s) in unit_scales.iter().enumerate() {
            if !s.is_finite() {
                return Err(Error::InvalidScale {
                    what: "lut matrix unit scale",
                    index: i,
                    value: s,
                });
            }
        }
        if let Some((i, &c)) = codes
            .iter()
            .enumerate()
            .find(|(_, c)| !(-1..=1).contains(*c))
        {
            return Err(Error::InvalidCode {
                what: "lut matrix codes",
                index: i,
                code: c,
            });
        }
        let tiles = rows.div_ceil(Self::TILE_ROWS);
        let mut out = vec![0u8; tiles * units * UNIT_BYTES];
        let mut scales = vec![0f32; tiles * units * Self::TILE_ROWS];
        // Padding (rows past the end, columns past `cols`) keeps code 1, i.e. weight 0:
        // pad bytes are 0b0101_0101.
        out.fill(0x55);
        let mut padded = vec![1u8; units * 256];
        for r in 0..rows {
            let (t, i) = (r / Self::TILE_ROWS, r % Self::TILE_ROWS);
            for (p, &c) in padded.iter_mut().zip(&codes[r * cols..(r + 1) * cols]) {
                *p = (c + 1) as u8;
            }
            for u in 0..units {
                let base = (t * units + u) * UNIT_BYTES + i;
                for (j, q) in padded[256 * u..256 * (u + 1)].chunks_exact(4).enumerate() {
                    out[base + 32 * j] = q[0] | q[1] << 2 | q[2] << 4 | q[3] << 6;
                }
                scales[(t * units + u) * Self::TILE_ROWS + i] = unit_scales[r * units + u];
            }
        }
        Ok(LutMatrix {
            rows,
            cols,
            units,
            codes: out,
            scales,
            tensor_scale,
        })
    }

    /// Repacks a TQ1_0, TQ2_0 or I2_S matrix; its kernel results equal the scalar kernels' on
    /// `m` bit for bit. Q8_0 is not ternary and is refused.
    pub fn from_packed(m: &PackedMatrix) -> Result<LutMatrix> {
        let (rows, cols) = (m.rows(), m.cols());
        let units = cols.div_ceil(256);
        let (unit_scales, tensor_scale) = match m.data() {
            PackedData::Tq1_0(b) => (b.iter().map(|b| b.d.to_f32()).collect(), 1.0),
            PackedData::Tq2_0(b) => (b.iter().map(|b| b.d.to_f32()).collect(), 1.0),
            PackedData::I2S { scale, .. } => {
                check_scale("i2_s tensor scale", 0, *scale)?;
                (vec![1.0; rows * units], *scale)
            }
            PackedData::Q8_0(_) => {
                return Err(Error::UnsupportedFormat {
                    what: "lookup-table kernel",
                    format: "q8_0",
                });
            }
        };
        LutMatrix::from_codes(rows, cols, &m.unpack_codes(), &unit_scales, tensor_scale)
    }

    /// Rows (output features).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (input features).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The packed code bytes (layout in the [module docs](self)).
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }

    /// The per-tile, per-unit row scales (layout in the [module docs](self)).
    pub fn tile_scales(&self) -> &[f32] {
        &self.scales
    }

    /// The scale applied to every finished row.
    pub fn tensor_scale(&self) -> f32 {
        self.tensor_scale
    }

    /// Bytes streamed per GEMV (codes and scales).
    pub fn byte_len(&self) -> usize {
        self.codes.len() + 4 * self.scales.len()
    }

    /// The ternary codes back, `rows x cols` row-major.
    pub fn unpack_codes(&self) -> Vec<i8> {
        let mut out = vec![0i8; self.rows * self.cols];
        for r in 0..self.rows {
            let (t, i) = (r / Self::TILE_ROWS, r % Self::TILE_ROWS);
            for c in 0..self.cols {
                let (u, j, k) = (c / 256, (c % 256) / 4, c % 4);
                let b = self.codes[(t * self.units + u) * UNIT_BYTES + 32 * j + i];
                out[r * self.cols + c] = ((b >> (2 * k)) & 3) as i8 - 1;
            }
        }
        out
    }

    /// The unit scales back, `rows x ceil(cols / 256)` row-major.
    pub fn unit_scales(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.units);
        for r in 0..self.rows {
            let (t, i) = (r / Self::TILE_ROWS, r % Self::TILE_ROWS);
            for u in 0..self.units {
                out.push(self.scales[(t * self.units + u) * Self::TILE_ROWS + i]);
            }
        }
        out
    }

    pub(super) fn tiles(&self) -> usize {
        self.rows.div_ceil(Self::TILE_ROWS)
    }
}

/// Builds the lookup tables for one token (`units` Q8_K blocks): for pair `p` of unit `u`,
/// 32 bytes at `(u * 128 + p) * 32`: the low bytes of the 16 sums, then their high bytes.
pub(super) fn build_tables(x: &[BlockQ8K], units: usize, out: &mut Vec<u8>) {
    out.clear();
    out.resize(units * TABLE_UNIT_BYTES, 0);
    for (u, a) in x.iter().enumerate().take(units) {
        for p in 0..128 {
            let (x0, x1) = (i16::from(a.qs[2 * p]), i16::from(a.qs[2 * p + 1]));
            let t = &mut out[(u * 128 + p) * 32..(u * 128 + p + 1) * 32];
            for idx in 0..16usize {
                let (c0, c1) = (idx & 3, idx >> 2);
                // Index 3 never occurs in valid codes; its entries stay 0.
                let v = if c0 == 3 || c1 == 3 {
                    0
                } else {
                    (c0 as i16 - 1) * x0 + (c1 as i16 - 1) * x1
                };
                let [lo, hi] = v.to_le_bytes();
                t[idx] = lo;
                t[16 + idx] = hi;
            }
        }
    }
}

/// Portable lookup-table GEMV of tile `t` (writes `out.len() <= 32` rows).
pub(super) fn gemv_tile_portable(
    m: &LutMatrix,
    t: usize,
    tables: &[u8],
    x: &[BlockQ8K],
    out: &mut [f32],
) {
    let look = |p: usize, idx: u8| -> i32 {
        let tb = &tables[p * 32..];
        i32::from(i16::from_le_bytes([
            tb[usize::from(idx)],
            tb[16 + usize::from(idx)],
        ]))
    };
    for (i, o) in out.iter_mut().enumerate() {
        let mut acc = 0.0f32;
        for (u, a) in x.iter().enumerate().take(m.units) {
            let base = (t * m.units + u) * UNIT_BYTES;
            let mut sumi = 0i32;
            for j in 0..64 {
                let b = m.codes[base + 32 * j + i];
                sumi += look(u * 128 + 2 * j, b & 15) + look(u * 128 + 2 * j + 1, b >> 4);
            }
            let dw = m.scales[(t * m.units + u) * LutMatrix::TILE_ROWS + i];
            acc = combine(acc, sumi, dw * a.d);
        }
        *o = acc * m.tensor_scale;
    }
}

/// AVX2 lookup-table GEMV of tile `t` (writes `out.len() <= 32` rows).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) fn gemv_tile_avx2(
    m: &LutMatrix,
    t: usize,
    tables: &[u8],
    x: &[BlockQ8K],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let load256 = |p: &[u8]| -> __m256i {
        assert!(p.len() >= 32);
        // SAFETY: 32 readable bytes checked above; unaligned load.
        unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
    };
    let bcast = |p: &[u8]| -> __m256i {
        assert!(p.len() >= 16);
        // SAFETY: 16 readable bytes checked above; unaligned load.
        _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(p.as_ptr().cast()) })
    };
    let m4 = _mm256_set1_epi8(0x0F);
    let mut accf = [_mm256_setzero_ps(); 4];
    for (u, a) in x.iter().enumerate().take(m.units) {
        let codes = &m.codes[(t * m.units + u) * UNIT_BYTES..][..UNIT_BYTES];
        let tab = &tables[u * TABLE_UNIT_BYTES..][..TABLE_UNIT_BYTES];
        let mut acc32 = [_mm256_setzero_si256(); 4];
        // Two halves of 32 quads: at most 64 lookups of |v| <= 256 per row fit in int16.
        for half in 0..2 {
            // a16: rows 0..8 and 16..24; b16: rows 8..16 and 24..32 (byte interleave order).
            let mut a16 = _mm256_setzero_si256();
            let mut b16 = _mm256_setzero_si256();
            for j in 32 * half..32 * (half + 1) {
                let w = load256(&codes[32 * j..]);
                if j % 2 == 0 {
                    // One prefetch per 64-byte line, LUT_PREFETCH bytes ahead (a hint: never
                    // faults; `wrapping_add` keeps the address arithmetic defined).
                    _mm_prefetch::<_MM_HINT_T0>(
                        codes.as_ptr().wrapping_add(32 * j + LUT_PREFETCH).cast(),
                    );
                }
                let tp = &tab[64 * j..];
                let i0 = _mm256_and_si256(w, m4);
                let i1 = _mm256_and_si256(_mm256_srli_epi16::<4>(w), m4);
                let l0 = _mm256_shuffle_epi8(bcast(tp), i0);
                let h0 = _mm256_shuffle_epi8(bcast(&tp[16..]), i0);
                let l1 = _mm256_shuffle_epi8(bcast(&tp[32..]), i1);
                let h1 = _mm256_shuffle_epi8(bcast(&tp[48..]), i1);
                a16 = _mm256_add_epi16(
                    a16,
                    _mm256_add_epi16(_mm256_unpacklo_epi8(l0, h0), _mm256_unpacklo_epi8(l1, h1)),
                );
                b16 = _mm256_add_epi16(
                    b16,
                    _mm256_add_epi16(_mm256_unpackhi_epi8(l0, h0), _mm256_unpackhi_epi8(l1, h1)),
                );
            }
            let parts = [
                _mm256_castsi256_si128(a16),
                _mm256_castsi256_si128(b16),
                _mm256_extracti128_si256::<1>(a16),
                _mm256_extracti128_si256::<1>(b16),
            ];
            for (acc, p) in acc32.iter_mut().zip(parts) {
                *acc = _mm256_add_epi32(*acc, _mm256_cvtepi16_epi32(p));
            }
        }
        let sc = &m.scales[(t * m.units + u) * LutMatrix::TILE_ROWS..][..LutMatrix::TILE_ROWS];
        let dx = _mm256_set1_ps(a.d);
        for (k, (af, s)) in accf.iter_mut().zip(acc32).enumerate() {
            // SAFETY: `sc` has 32 f32, so 8 readable at 8k.
            let dw = unsafe { _mm256_loadu_ps(sc.as_ptr().add(8 * k)) };
            // Lane-wise `acc + sumi as f32 * (d_w * d_x)`: the scalar combine, rounded alike.
            *af = _mm256_add_ps(
                *af,
                _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, dx)),
            );
        }
    }
    let mut res = [0f32; 32];
    let ts = _mm256_set1_ps(m.tensor_scale);
    for (k, af) in accf.iter().enumerate() {
        // SAFETY: `res` has 32 writable f32, so 8 at 8k.
        unsafe { _mm256_storeu_ps(res.as_mut_ptr().add(8 * k), _mm256_mul_ps(*af, ts)) };
    }
    out.copy_from_slice(&res[..out.len()]);
}

/// GEMV of tiles `t0 ..` into `out` (rows `32 * t0 ..`, at most the matrix's rows).
pub(super) fn gemv_tiles(
    m: &LutMatrix,
    t0: usize,
    tables: &[u8],
    x: &[BlockQ8K],
    out: &mut [f32],
    simd: bool,
) {
    for (k, o) in out.chunks_mut(LutMatrix::TILE_ROWS).enumerate() {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is only set after AVX2 detection (see `Engine`).
            unsafe { gemv_tile_avx2(m, t0 + k, tables, x, o) };
            continue;
        }
        let _ = simd;
        gemv_tile_portable(m, t0 + k, tables, x, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;
    use crate::quant::{ActQuant, Granularity, QuantizedActivations, quantize_absmean};

    /// The portable kernel (the only one non-x86 machines run) equals the scalar TQ2_0 kernel,
    /// and on x86 the AVX2 one equals it too.
    #[test]
    fn portable_and_simd_tiles_match_scalar() {
        let (rows, cols) = (45, 768);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 13) as f32 - 6.0) / 4.0)
            .collect();
        let t = quantize_absmean(&w, rows, cols, Granularity::PerRow, 1e-5).unwrap();
        let m = PackedMatrix::from_ternary(Format::Tq2_0, &t).unwrap();
        let x: Vec<f32> = (0..cols)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.3)
            .collect();
        let q = QuantizedActivations::quantize(&x, 1, cols, ActQuant::PerBlock).unwrap();
        let PackedData::Tq2_0(blocks) = m.data() else {
            unreachable!()
        };
        let bpr = cols / 256;
        let expect: Vec<u32> = (0..rows)
            .map(|r| super::super::scalar::dot_tq2(&blocks[r * bpr..(r + 1) * bpr], q.row(0)))
            .map(f32::to_bits)
            .collect();
        let lm = LutMatrix::from_packed(&m).unwrap();
        let mut tables = Vec::new();
        build_tables(q.row(0), q.blocks_per_row, &mut tables);
        let mut simd_options = vec![false];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            simd_options.push(true);
        }
        for simd in simd_options {
            let mut y = vec![f32::NAN; rows];
            gemv_tiles(&lm, 0, &tables, q.row(0), &mut y, simd);
            let got: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, expect, "simd = {simd}");
        }
    }
}
