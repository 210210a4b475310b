//! int8 dot-product kernels with VNNI (`vpdpbusd`: unsigned byte × signed byte, four
//! products summed into each i32 lane, no saturation) for I2_S and TQ2_0, run on the bytes
//! exactly as the file stores them (no repacked copy).
//!
//! Two widths share one activation layout:
//! - [`KernelPath::Avx512Vnni`](super::KernelPath::Avx512Vnni): AVX-512 F/BW/VNNI, one
//!   64-byte load covers a whole 256-value unit (two I2_S blocks, or the 64 code bytes of a
//!   TQ2_0 block);
//! - [`KernelPath::AvxVnni`](super::KernelPath::AvxVnni): the 256-bit VEX form (Alder Lake,
//!   Zen 5 and others), two 32-byte halves per unit.
//!
//! In both formats code field `k` of code byte `m` of half `g` of a unit is element
//! `128g + 32k + m` (I2_S takes field `k` from bits `7-2k`, TQ2_0 from bits `2k`). The
//! activations of each token are therefore permuted once per call into [`Acts`]: for every
//! unit, field `k` occupies bytes `64k .. 64k+64` as `[x[32k..32k+32], x[128+32k..128+32k+32]]`,
//! so a field's 64 codes meet their activations in one register. Codes stay unsigned (0..=2);
//! the `-1` offset is the unit's activation sum, subtracted once per unit, so every unit's
//! integer sum is exact, and it is folded with [`super::combine`]'s expression in unit order:
//! results are bit-identical to [`super::scalar`] (tested for every path the CPU has).
//! TQ1_0 and Q8_0 run the AVX2 kernels under these paths.

use super::avx2::{fold4, hsum4_i32};
use super::tiled::{Line, Tiled16};
use crate::format::{BlockI2S, BlockTq2_0};
use crate::matrix::PackedData;
use crate::quant::QuantizedActivations;
use std::arch::x86_64::*;

/// Token activations permuted for the VNNI kernels (layout in the [module docs](self)).
pub(super) struct Acts {
    units: usize,
    /// `tokens * units * 256` permuted codes.
    q: Vec<i8>,
    /// Sum of each unit's 256 codes (`tokens * units`, padded with 4 zeros).
    sums: Vec<i32>,
    /// Scale of each unit (`tokens * units`, padded with 4 zeros).
    d: Vec<f32>,
}

impl Acts {
    pub(super) fn new(x: &QuantizedActivations) -> Acts {
        let units = x.blocks_per_row;
        let n = x.rows * units;
        let mut q = vec![0i8; n * 256];
        let mut sums = Vec::with_capacity(n + 4);
        let mut d = Vec::with_capacity(n + 4);
        for (b, out) in x.blocks.iter().zip(q.chunks_exact_mut(256)) {
            for k in 0..4 {
                out[64 * k..64 * k + 32].copy_from_slice(&b.qs[32 * k..32 * k + 32]);
                out[64 * k + 32..64 * k + 64].copy_from_slice(&b.qs[128 + 32 * k..160 + 32 * k]);
            }
            sums.push(b.sum());
            d.push(b.d);
        }
        sums.extend([0; 4]);
        d.extend([0.0; 4]);
        Acts { units, q, sums, d }
    }

    #[inline(always)]
    fn unit(&self, t: usize, u: usize) -> *const i8 {
        self.q[(t * self.units + u) * 256..].as_ptr()
    }
}

/// Whether these kernels cover a matrix (the others fall back to AVX2).
pub(super) fn covers(data: &PackedData) -> bool {
    matches!(data, PackedData::I2S { .. } | PackedData::Tq2_0(_))
}

/// A weight matrix seen as units of 64 code bytes.
#[derive(Clone, Copy)]
enum Weights<'a> {
    I2S {
        blocks: &'a [BlockI2S],
        /// Blocks per row (cols / 128).
        bpr: usize,
        scale: f32,
    },
    Tq2 {
        blocks: &'a [BlockTq2_0],
        /// Blocks per row (cols / 256).
        bpr: usize,
    },
}

impl<'a> Weights<'a> {
    fn new(data: &'a PackedData, cols: usize) -> Weights<'a> {
        match data {
            PackedData::I2S { blocks, scale } => Weights::I2S {
                blocks,
                bpr: cols / 128,
                scale: *scale,
            },
            PackedData::Tq2_0(blocks) => Weights::Tq2 {
                blocks,
                bpr: cols / 256,
            },
            _ => unreachable!("covers() is checked first"),
        }
    }

    fn tensor_scale(self) -> f32 {
        match self {
            Weights::I2S { scale, .. } => scale,
            Weights::Tq2 { .. } => 1.0,
        }
    }
}

/// Which VNNI width runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Width {
    /// AVX-512 VNNI (zmm).
    Zmm,
    /// AVX-VNNI (ymm, VEX).
    Ymm,
}

/// Rows `r0 .. r0 + out.len()` of `W · x` for token 0 of `acts`.
///
/// # Safety
/// The CPU must have the features of `width` (checked by `KernelPath::is_supported`).
pub(super) unsafe fn gemv(
    width: Width,
    data: &PackedData,
    cols: usize,
    acts: &Acts,
    r0: usize,
    out: &mut [f32],
) {
    let w = Weights::new(data, cols);
    // SAFETY: forwarded from the caller.
    unsafe {
        match width {
            Width::Zmm => rows_zmm(w, acts, r0, out),
            Width::Ymm => rows_ymm(w, acts, r0, out),
        }
    }
}

/// Rows `r0 .. r0 + nr` for all tokens of `acts`, written row-major into `out`
/// (`out[r * tokens + t]`), token tiles of `TILE` so a tile's activations stay in L2 while
/// one row's weights are read from memory once per tile.
///
/// # Safety
/// As [`gemv`].
pub(super) unsafe fn gemm_rows(
    width: Width,
    data: &PackedData,
    cols: usize,
    acts: &Acts,
    tokens: usize,
    r0: usize,
    out: &mut [f32],
) {
    const TILE: usize = 64;
    let w = Weights::new(data, cols);
    let nr = out.len() / tokens;
    let mut o4 = vec![[0f32; 4]; nr];
    for t0 in (0..tokens).step_by(TILE) {
        for tg in (t0..(t0 + TILE).min(tokens)).step_by(4) {
            let nt = (tokens - tg).min(4);
            // SAFETY: forwarded from the caller.
            unsafe {
                match width {
                    Width::Zmm => rows4_zmm(w, acts, r0, &mut o4, tg, nt),
                    Width::Ymm => rows4_ymm(w, acts, r0, &mut o4, tg, nt),
                }
            }
            for (r, o) in o4.iter().enumerate() {
                out[r * tokens + tg..r * tokens + tg + nt].copy_from_slice(&o[..nt]);
            }
        }
    }
}

// One unit's four code fields against one token's permuted activations, 512-bit.
macro_rules! unit_zmm {
    ($q:expr, $a:expr, $i2s:expr) => {{
        let m = _mm512_set1_epi8(3);
        let q = $q;
        let a: *const i8 = $a;
        let (c0, c1, c2, c3) = if $i2s {
            (
                _mm512_and_si512(_mm512_srli_epi16::<6>(q), m),
                _mm512_and_si512(_mm512_srli_epi16::<4>(q), m),
                _mm512_and_si512(_mm512_srli_epi16::<2>(q), m),
                _mm512_and_si512(q, m),
            )
        } else {
            (
                _mm512_and_si512(q, m),
                _mm512_and_si512(_mm512_srli_epi16::<2>(q), m),
                _mm512_and_si512(_mm512_srli_epi16::<4>(q), m),
                _mm512_and_si512(_mm512_srli_epi16::<6>(q), m),
            )
        };
        // SAFETY (caller): `a` points at 256 readable permuted activations.
        let (y0, y1, y2, y3) = unsafe {
            (
                _mm512_loadu_si512(a.cast()),
                _mm512_loadu_si512(a.add(64).cast()),
                _mm512_loadu_si512(a.add(128).cast()),
                _mm512_loadu_si512(a.add(192).cast()),
            )
        };
        let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c0, y0);
        let s = _mm512_dpbusd_epi32(s, c1, y1);
        let s = _mm512_dpbusd_epi32(s, c2, y2);
        let s = _mm512_dpbusd_epi32(s, c3, y3);
        _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s))
    }};
}

// One unit, 256-bit AVX-VNNI: two 32-byte halves.
macro_rules! unit_ymm {
    ($q0:expr, $q1:expr, $a:expr, $i2s:expr) => {{
        let m = _mm256_set1_epi8(3);
        let a: *const i8 = $a;
        let mut s = _mm256_setzero_si256();
        for (g, q) in [$q0, $q1].into_iter().enumerate() {
            let (c0, c1, c2, c3) = if $i2s {
                (
                    _mm256_and_si256(_mm256_srli_epi16::<6>(q), m),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q), m),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(q), m),
                    _mm256_and_si256(q, m),
                )
            } else {
                (
                    _mm256_and_si256(q, m),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(q), m),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q), m),
                    _mm256_and_si256(_mm256_srli_epi16::<6>(q), m),
                )
            };
            // SAFETY (caller): `a` points at 256 readable permuted activations.
            let (y0, y1, y2, y3) = unsafe {
                let a = a.add(32 * g);
                (
                    _mm256_loadu_si256(a.cast()),
                    _mm256_loadu_si256(a.add(64).cast()),
                    _mm256_loadu_si256(a.add(128).cast()),
                    _mm256_loadu_si256(a.add(192).cast()),
                )
            };
            s = _mm256_dpbusd_avx_epi32(s, c0, y0);
            s = _mm256_dpbusd_avx_epi32(s, c1, y1);
            s = _mm256_dpbusd_avx_epi32(s, c2, y2);
            s = _mm256_dpbusd_avx_epi32(s, c3, y3);
        }
        s
    }};
}

/// Codes 0b01 (value 0) for the missing second half of a row's last I2_S unit.
const ZERO_CODES: u8 = 0x55;

#[inline(always)]
fn prefetch(p: *const u8) {
    // SAFETY: a prefetch never faults; `wrapping_add` keeps the address arithmetic defined.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(512).cast()) }
}

/// The row loop of the GEMV, 512-bit: four rows at a time ([`quad_zmm`]), the rest of the
/// range ([`row_zmm`]) one by one.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
unsafe fn rows_zmm(w: Weights<'_>, acts: &Acts, r0: usize, out: &mut [f32]) {
    let quads = out.len() / 4;
    let (head, tail) = out.split_at_mut(4 * quads);
    for (i, o) in head.chunks_exact_mut(4).enumerate() {
        // SAFETY: forwarded from the caller; `o` has 4 values.
        unsafe { quad_zmm(w, acts, r0 + 4 * i, o) };
    }
    for (i, o) in tail.iter_mut().enumerate() {
        // SAFETY: forwarded from the caller.
        *o = unsafe { row_zmm(w, acts, r0 + 4 * quads + i) };
    }
}

/// Rows `r .. r + 4` of the GEMV, 512-bit. A single row spent most of its time on the
/// per-row reductions and on the dependency chain of its one accumulator (the kernel ran at
/// a fraction of read bandwidth even from L3); four rows share each unit's activation
/// loads, one horizontal sum reduces the four rows' unit sums at once, and the four
/// accumulators are the lanes of one vector, each folding its row's units in unit order
/// with [`super::combine`]'s expression, so every row's result is the single-row kernel's
/// bit for bit. The four rows are contiguous in memory: still one sequential stream.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
unsafe fn quad_zmm(w: Weights<'_>, acts: &Acts, r: usize, out: &mut [f32]) {
    let units = acts.units;
    let mut acc = _mm_setzero_ps();
    for u in 0..units {
        let a = acts.unit(0, u);
        let mut s = [_mm256_setzero_si256(); 4];
        let dw = match w {
            Weights::I2S { blocks, bpr, .. } => {
                let nb = (bpr - 2 * u).min(2);
                for (j, sj) in s.iter_mut().enumerate() {
                    let first = (r + j) * bpr + 2 * u;
                    let p: *const u8 = blocks[first..first + nb].as_ptr().cast();
                    prefetch(p);
                    // SAFETY: as in `row_zmm`.
                    let q = unsafe {
                        if nb == 2 {
                            _mm512_loadu_si512(p.cast())
                        } else {
                            _mm512_mask_loadu_epi8(
                                _mm512_set1_epi8(ZERO_CODES as i8),
                                0xFFFF_FFFF,
                                p.cast(),
                            )
                        }
                    };
                    *sj = unit_zmm!(q, a, true);
                }
                _mm_set1_ps(1.0)
            }
            Weights::Tq2 { blocks, bpr } => {
                let mut h = [0i16; 4];
                for (j, sj) in s.iter_mut().enumerate() {
                    let b = &blocks[(r + j) * bpr + u];
                    prefetch(b.qs.as_ptr());
                    // SAFETY: `qs` has 64 bytes.
                    let q = unsafe { _mm512_loadu_si512(b.qs.as_ptr().cast()) };
                    *sj = unit_zmm!(q, a, false);
                    h[j] = b.d.to_bits() as i16;
                }
                // The exact f16 -> f32 conversion `f16::to_f32` does, four scales at once.
                _mm_cvtph_ps(_mm_setr_epi16(h[0], h[1], h[2], h[3], 0, 0, 0, 0))
            }
        };
        acc = fold_rows(acc, s, acts, u, dw);
    }
    let y = _mm_mul_ps(acc, _mm_set1_ps(w.tensor_scale()));
    // SAFETY: `out` has 4 writable f32 (the caller's chunk).
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), y) };
}

/// One unit's sums of four rows (`s[j]` for row `j`, weight scales `dw`) folded into the
/// four row accumulators in `acc`: per lane `acc + (sumi - sum_x) as f32 * (dw * dx)`,
/// the expression [`finish4`] and [`super::combine`] compute for one row.
#[inline]
#[target_feature(enable = "avx2")]
fn fold_rows(acc: __m128, s: [__m256i; 4], acts: &Acts, u: usize, dw: __m128) -> __m128 {
    let sumi = hsum4_i32(s[0], s[1], s[2], s[3]);
    let sums = _mm_set1_epi32(acts.sums[u]);
    let d = _mm_mul_ps(dw, _mm_set1_ps(acts.d[u]));
    _mm_add_ps(
        acc,
        _mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(sumi, sums)), d),
    )
}

/// One row of the GEMV, 512-bit: one sequential stream; unit sums are reduced four at a
/// time.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
unsafe fn row_zmm(w: Weights<'_>, acts: &Acts, r: usize) -> f32 {
    let t = 0;
    let units = acts.units;
    let mut acc = 0.0f32;
    for u0 in (0..units).step_by(4) {
        let n = (units - u0).min(4);
        let mut s = [_mm256_setzero_si256(); 4];
        let mut dw = [0f32; 4];
        for (k, sk) in s.iter_mut().enumerate().take(n) {
            let u = u0 + k;
            let a = acts.unit(t, u);
            match w {
                Weights::I2S { blocks, bpr, .. } => {
                    let first = r * bpr + 2 * u;
                    let nb = (bpr - 2 * u).min(2);
                    let p: *const u8 = blocks[first..first + nb].as_ptr().cast();
                    prefetch(p);
                    // SAFETY: `nb` blocks of 32 bytes are readable at `p`; a masked load
                    // reads only the first 32 bytes of a half unit.
                    let q = unsafe {
                        if nb == 2 {
                            _mm512_loadu_si512(p.cast())
                        } else {
                            _mm512_mask_loadu_epi8(
                                _mm512_set1_epi8(ZERO_CODES as i8),
                                0xFFFF_FFFF,
                                p.cast(),
                            )
                        }
                    };
                    *sk = unit_zmm!(q, a, true);
                    dw[k] = 1.0;
                }
                Weights::Tq2 { blocks, bpr } => {
                    let b = &blocks[r * bpr + u];
                    prefetch(b.qs.as_ptr());
                    // SAFETY: `qs` has 64 bytes.
                    let q = unsafe { _mm512_loadu_si512(b.qs.as_ptr().cast()) };
                    *sk = unit_zmm!(q, a, false);
                    dw[k] = b.d.to_f32();
                }
            }
        }
        acc = finish4(acc, s, acts, t, u0, n, dw);
    }
    acc * w.tensor_scale()
}

/// Subtracts the activation sums from four unit sums, scales them and folds them into `acc`
/// in unit order, as four [`super::combine`] calls would.
#[inline]
#[target_feature(enable = "avx2")]
fn finish4(
    acc: f32,
    s: [__m256i; 4],
    acts: &Acts,
    t: usize,
    u0: usize,
    n: usize,
    dw: [f32; 4],
) -> f32 {
    let i = t * acts.units + u0;
    let sumi = hsum4_i32(s[0], s[1], s[2], s[3]);
    let sums = _mm_setr_epi32(
        acts.sums[i],
        acts.sums[i + 1],
        acts.sums[i + 2],
        acts.sums[i + 3],
    );
    let dx = |k: usize| if k < n { acts.d[i + k] } else { 0.0 };
    let d = _mm_mul_ps(
        _mm_setr_ps(dw[0], dw[1], dw[2], dw[3]),
        _mm_setr_ps(dx(0), dx(1), dx(2), dx(3)),
    );
    let p = _mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(sumi, sums)), d);
    fold4(acc, p, n)
}

/// Loads the 64 code bytes of unit `u` of row `r` (512-bit) and its weight scale.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,f16c")]
fn load_unit_zmm(w: Weights<'_>, r: usize, u: usize) -> (__m512i, f32) {
    match w {
        Weights::I2S { blocks, bpr, .. } => {
            let first = r * bpr + 2 * u;
            let nb = (bpr - 2 * u).min(2);
            let p: *const u8 = blocks[first..first + nb].as_ptr().cast();
            // SAFETY: as in `rows_zmm`.
            let q = unsafe {
                if nb == 2 {
                    _mm512_loadu_si512(p.cast())
                } else {
                    _mm512_mask_loadu_epi8(
                        _mm512_set1_epi8(ZERO_CODES as i8),
                        0xFFFF_FFFF,
                        p.cast(),
                    )
                }
            };
            (q, 1.0)
        }
        Weights::Tq2 { blocks, bpr } => {
            let b = &blocks[r * bpr + u];
            // SAFETY: `qs` has 64 bytes.
            (
                unsafe { _mm512_loadu_si512(b.qs.as_ptr().cast()) },
                b.d.to_f32(),
            )
        }
    }
}

/// Loads the two 32-byte code halves of unit `u` of row `r` and its weight scale.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn load_unit_ymm(w: Weights<'_>, r: usize, u: usize) -> (__m256i, __m256i, f32) {
    match w {
        Weights::I2S { blocks, bpr, .. } => {
            let first = r * bpr + 2 * u;
            let nb = (bpr - 2 * u).min(2);
            let b = &blocks[first..first + nb];
            // SAFETY: each block has 32 bytes.
            let q0 = unsafe { _mm256_loadu_si256(b[0].qs.as_ptr().cast()) };
            let q1 = if nb == 2 {
                // SAFETY: as above.
                unsafe { _mm256_loadu_si256(b[1].qs.as_ptr().cast()) }
            } else {
                _mm256_set1_epi8(ZERO_CODES as i8)
            };
            (q0, q1, 1.0)
        }
        Weights::Tq2 { blocks, bpr } => {
            let b = &blocks[r * bpr + u];
            // SAFETY: `qs` has 64 bytes.
            unsafe {
                (
                    _mm256_loadu_si256(b.qs.as_ptr().cast()),
                    _mm256_loadu_si256(b.qs.as_ptr().add(32).cast()),
                    b.d.to_f32(),
                )
            }
        }
    }
}

/// The GEMV row loop, 256-bit AVX-VNNI: four rows at a time as in [`rows_zmm`].
#[target_feature(enable = "avxvnni,avx2,f16c")]
unsafe fn rows_ymm(w: Weights<'_>, acts: &Acts, r0: usize, out: &mut [f32]) {
    let quads = out.len() / 4;
    let (head, tail) = out.split_at_mut(4 * quads);
    for (i, o) in head.chunks_exact_mut(4).enumerate() {
        // SAFETY: forwarded from the caller; `o` has 4 values.
        unsafe { quad_ymm(w, acts, r0 + 4 * i, o) };
    }
    for (i, o) in tail.iter_mut().enumerate() {
        // SAFETY: forwarded from the caller.
        *o = unsafe { row_ymm(w, acts, r0 + 4 * quads + i) };
    }
}

/// Rows `r .. r + 4` of the GEMV, 256-bit AVX-VNNI (the reasons and the fold as in
/// [`quad_zmm`]). Half `g` of the unit at a time: its four activation registers are loaded
/// once and meet the four rows' code halves (sixteen ymm registers leave no room for the
/// whole unit's activations and four rows).
#[inline]
#[target_feature(enable = "avxvnni,avx2,f16c")]
unsafe fn quad_ymm(w: Weights<'_>, acts: &Acts, r: usize, out: &mut [f32]) {
    let units = acts.units;
    let m = _mm256_set1_epi8(3);
    let mut acc = _mm_setzero_ps();
    for u in 0..units {
        let a = acts.unit(0, u);
        let mut s = [_mm256_setzero_si256(); 4];
        for g in 0..2 {
            // SAFETY: `a` points at the unit's 256 permuted activations.
            let y = unsafe {
                let a = a.add(32 * g);
                [
                    _mm256_loadu_si256(a.cast()),
                    _mm256_loadu_si256(a.add(64).cast()),
                    _mm256_loadu_si256(a.add(128).cast()),
                    _mm256_loadu_si256(a.add(192).cast()),
                ]
            };
            for (j, sj) in s.iter_mut().enumerate() {
                let (q, i2s) = match w {
                    Weights::I2S { blocks, bpr, .. } => {
                        let b = 2 * u + g;
                        let q = if b < bpr {
                            let p = blocks[(r + j) * bpr + b].qs.as_ptr();
                            prefetch(p);
                            // SAFETY: a block has 32 bytes.
                            unsafe { _mm256_loadu_si256(p.cast()) }
                        } else {
                            _mm256_set1_epi8(ZERO_CODES as i8)
                        };
                        (q, true)
                    }
                    Weights::Tq2 { blocks, bpr } => {
                        let p = blocks[(r + j) * bpr + u].qs.as_ptr();
                        prefetch(p);
                        // SAFETY: `qs` has 64 bytes.
                        (unsafe { _mm256_loadu_si256(p.add(32 * g).cast()) }, false)
                    }
                };
                let c = if i2s {
                    [
                        _mm256_and_si256(_mm256_srli_epi16::<6>(q), m),
                        _mm256_and_si256(_mm256_srli_epi16::<4>(q), m),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(q), m),
                        _mm256_and_si256(q, m),
                    ]
                } else {
                    [
                        _mm256_and_si256(q, m),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(q), m),
                        _mm256_and_si256(_mm256_srli_epi16::<4>(q), m),
                        _mm256_and_si256(_mm256_srli_epi16::<6>(q), m),
                    ]
                };
                // Same products, same order of i32 additions as `unit_ymm!` (integer sums
                // are exact in any order anyway).
                let mut t = *sj;
                for k in 0..4 {
                    t = _mm256_dpbusd_avx_epi32(t, c[k], y[k]);
                }
                *sj = t;
            }
        }
        let dw = match w {
            Weights::I2S { .. } => _mm_set1_ps(1.0),
            Weights::Tq2 { blocks, bpr } => {
                let h = |j: usize| blocks[(r + j) * bpr + u].d.to_bits() as i16;
                // The exact f16 -> f32 conversion `f16::to_f32` does, four scales at once.
                _mm_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), 0, 0, 0, 0))
            }
        };
        acc = fold_rows(acc, s, acts, u, dw);
    }
    let y = _mm_mul_ps(acc, _mm_set1_ps(w.tensor_scale()));
    // SAFETY: `out` has 4 writable f32 (the caller's chunk).
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), y) };
}

/// One row of the GEMV, 256-bit AVX-VNNI.
#[target_feature(enable = "avxvnni,avx2,f16c")]
unsafe fn row_ymm(w: Weights<'_>, acts: &Acts, r: usize) -> f32 {
    let t = 0;
    let units = acts.units;
    let i2s = matches!(w, Weights::I2S { .. });
    let mut acc = 0.0f32;
    for u0 in (0..units).step_by(4) {
        let n = (units - u0).min(4);
        let mut s = [_mm256_setzero_si256(); 4];
        let mut dw = [0f32; 4];
        for (k, sk) in s.iter_mut().enumerate().take(n) {
            let (q0, q1, d) = load_unit_ymm(w, r, u0 + k);
            let a = acts.unit(t, u0 + k);
            *sk = if i2s {
                unit_ymm!(q0, q1, a, true)
            } else {
                unit_ymm!(q0, q1, a, false)
            };
            dw[k] = d;
        }
        acc = finish4(acc, s, acts, t, u0, n, dw);
    }
    acc * w.tensor_scale()
}

/// Four tokens `tg .. tg + nt` at once for rows `r0 ..` (GEMM), 512-bit: each unit's codes
/// are loaded once for the four tokens; per token the units fold in order.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
unsafe fn rows4_zmm(
    w: Weights<'_>,
    acts: &Acts,
    r0: usize,
    out: &mut [[f32; 4]],
    tg: usize,
    nt: usize,
) {
    let units = acts.units;
    let i2s = matches!(w, Weights::I2S { .. });
    for (i, o) in out.iter_mut().enumerate() {
        let r = r0 + i;
        let mut acc = [0f32; 4];
        for u in 0..units {
            let (q, dw) = load_unit_zmm(w, r, u);
            let mut s = [_mm256_setzero_si256(); 4];
            for (j, sj) in s.iter_mut().enumerate().take(nt) {
                let a = acts.unit(tg + j, u);
                *sj = if i2s {
                    unit_zmm!(q, a, true)
                } else {
                    unit_zmm!(q, a, false)
                };
            }
            fold_tokens(&mut acc, s, acts, tg, u, nt, dw);
        }
        for (oj, aj) in o.iter_mut().zip(acc) {
            *oj = aj * w.tensor_scale();
        }
    }
}

/// As [`rows4_zmm`], 256-bit AVX-VNNI.
#[target_feature(enable = "avxvnni,avx2,f16c")]
unsafe fn rows4_ymm(
    w: Weights<'_>,
    acts: &Acts,
    r0: usize,
    out: &mut [[f32; 4]],
    tg: usize,
    nt: usize,
) {
    let units = acts.units;
    let i2s = matches!(w, Weights::I2S { .. });
    for (i, o) in out.iter_mut().enumerate() {
        let r = r0 + i;
        let mut acc = [0f32; 4];
        for u in 0..units {
            let (q0, q1, dw) = load_unit_ymm(w, r, u);
            let mut s = [_mm256_setzero_si256(); 4];
            for (j, sj) in s.iter_mut().enumerate().take(nt) {
                let a = acts.unit(tg + j, u);
                *sj = if i2s {
                    unit_ymm!(q0, q1, a, true)
                } else {
                    unit_ymm!(q0, q1, a, false)
                };
            }
            fold_tokens(&mut acc, s, acts, tg, u, nt, dw);
        }
        for (oj, aj) in o.iter_mut().zip(acc) {
            *oj = aj * w.tensor_scale();
        }
    }
}

/// One unit's sums for up to four tokens, each folded into its own accumulator.
#[inline]
#[target_feature(enable = "avx2")]
fn fold_tokens(
    acc: &mut [f32; 4],
    s: [__m256i; 4],
    acts: &Acts,
    tg: usize,
    u: usize,
    nt: usize,
    dw: f32,
) {
    let sumi = hsum4_i32(s[0], s[1], s[2], s[3]);
    let idx = |j: usize| (tg + j) * acts.units + u;
    let sum = |j: usize| if j < nt { acts.sums[idx(j)] } else { 0 };
    let dx = |j: usize| if j < nt { acts.d[idx(j)] } else { 0.0 };
    let sums = _mm_setr_epi32(sum(0), sum(1), sum(2), sum(3));
    let d = _mm_mul_ps(_mm_set1_ps(dw), _mm_setr_ps(dx(0), dx(1), dx(2), dx(3)));
    let p = _mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(sumi, sums)), d);
    let mut v = [0f32; 4];
    // SAFETY: `v` has 4 writable f32.
    unsafe { _mm_storeu_ps(v.as_mut_ptr(), p) };
    for j in 0..nt {
        acc[j] += v[j];
    }
}

/// Activation sums and scales of every (token, unit) for the [`Tiled16`] kernels, which
/// read the codes straight from the activation blocks (no permuted copy).
pub(super) struct TileActs<'a> {
    x: &'a QuantizedActivations,
    /// `tokens * units` unit sums.
    sums: Vec<i32>,
    /// `tokens * units` unit scales.
    d: Vec<f32>,
}

impl<'a> TileActs<'a> {
    pub(super) fn new(x: &'a QuantizedActivations) -> TileActs<'a> {
        TileActs {
            x,
            sums: x.blocks.iter().map(crate::quant::BlockQ8K::sum).collect(),
            d: x.blocks.iter().map(|b| b.d).collect(),
        }
    }

    /// The codes of unit `u` of token `t`.
    #[inline(always)]
    fn codes(&self, t: usize, u: usize) -> *const u8 {
        self.x.blocks[t * self.x.blocks_per_row + u]
            .qs
            .as_ptr()
            .cast()
    }
}

/// The activation dword `koff .. koff + 4` of a unit's codes, broadcast to 16 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
///
/// # Safety
/// `p` points at a unit's 256 codes and `koff + 4 <= 256`.
unsafe fn bcast(p: *const u8, koff: usize) -> __m512i {
    // SAFETY: from the caller.
    _mm512_set1_epi32(unsafe { p.add(koff).cast::<i32>().read_unaligned() })
}

/// Per code shift (0, 2, 4, 6): the code field it extracts (TQ2_0 field `k` sits in bits
/// `2k`, I2_S field `k` in bits `6 - 2k`).
#[inline(always)]
const fn field(shift: u32, i2s: bool) -> usize {
    if i2s {
        3 - (shift / 2) as usize
    } else {
        (shift / 2) as usize
    }
}

/// Adds unit `u`'s exact sums (`s`, 16 rows) into the 16 row accumulators of one token:
/// per lane `acc + (s - sum_x) as f32 * (dw * dx)`, [`super::combine`]'s expression.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn fold16(acc: __m512, s: __m512i, sum_x: i32, dw: __m512, dx: f32) -> __m512 {
    let sumi = _mm512_sub_epi32(s, _mm512_set1_epi32(sum_x));
    let d = _mm512_mul_ps(dw, _mm512_set1_ps(dx));
    _mm512_add_ps(acc, _mm512_mul_ps(_mm512_cvtepi32_ps(sumi), d))
}

/// The weight scales of group `g`'s unit `u` (16 rows; ones for I2_S).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn scales16(tl: &Tiled16, g: usize, u: usize) -> __m512 {
    if tl.i2s {
        _mm512_set1_ps(1.0)
    } else {
        // SAFETY: `scales` holds 16 values for every (group, unit).
        unsafe { _mm512_loadu_ps(tl.scales[(g * tl.units + u) * 16..][..16].as_ptr()) }
    }
}

/// Rows `16g .. 16g + 16` for token `t` (GEMV), into `out[0..16]`. Four accumulators (one
/// per code field) keep four `vpdpbusd` chains in flight; their sum is the unit's exact sum.
///
/// # Safety
/// AVX-512 F/BW/VNNI; `out` has 16 writable values.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_gemv_zmm<const I2S: bool>(
    tl: &Tiled16,
    acts: &TileActs<'_>,
    g: usize,
    t: usize,
    out: *mut f32,
) {
    let units = tl.units;
    let m3 = _mm512_set1_epi8(3);
    let mut acc = _mm512_setzero_ps();
    for u in 0..units {
        let lines = &tl.lines[(g * units + u) * 16..][..16];
        let x = acts.codes(t, u);
        let mut s = [_mm512_setzero_si512(); 4];
        for (c, line) in lines.iter().enumerate() {
            let p: *const u8 = std::ptr::from_ref::<Line>(line).cast();
            prefetch(p.wrapping_add(512));
            // SAFETY: a line is 64 aligned bytes.
            let q = unsafe { _mm512_load_si512(p.cast()) };
            let off = 128 * (c / 8) + 4 * (c % 8);
            macro_rules! step {
                ($i:expr, $sh:literal) => {{
                    let code = _mm512_and_si512(_mm512_srli_epi16::<$sh>(q), m3);
                    // SAFETY: `off + 32 * field + 4 <= 256`.
                    let a = unsafe { bcast(x, off + 32 * field($sh, I2S)) };
                    s[$i] = _mm512_dpbusd_epi32(s[$i], code, a);
                }};
            }
            step!(0, 0);
            step!(1, 2);
            step!(2, 4);
            step!(3, 6);
        }
        let sum = _mm512_add_epi32(_mm512_add_epi32(s[0], s[1]), _mm512_add_epi32(s[2], s[3]));
        let i = t * units + u;
        acc = fold16(acc, sum, acts.sums[i], scales16(tl, g, u), acts.d[i]);
    }
    let y = _mm512_mul_ps(acc, _mm512_set1_ps(tl.tensor_scale));
    // SAFETY: from the caller.
    unsafe { _mm512_storeu_ps(out, y) };
}

/// Rows `16g .. 16g + 16` for tokens `t0 .. t0 + T` (GEMM): each line's codes are
/// unpacked once for the `T` tokens. Token `t0 + j`'s 16 values go to `out + j * ld`.
///
/// # Safety
/// AVX-512 F/BW/VNNI; `out + j * ld` has 16 writable values for every `j < T`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_gemm_zmm<const T: usize, const I2S: bool>(
    tl: &Tiled16,
    acts: &TileActs<'_>,
    g: usize,
    t0: usize,
    out: *mut f32,
    ld: usize,
) {
    let units = tl.units;
    let m3 = _mm512_set1_epi8(3);
    let mut acc = [_mm512_setzero_ps(); T];
    for u in 0..units {
        let lines = &tl.lines[(g * units + u) * 16..][..16];
        let x: [*const u8; T] = std::array::from_fn(|j| acts.codes(t0 + j, u));
        let mut s = [_mm512_setzero_si512(); T];
        for (c, line) in lines.iter().enumerate() {
            let p: *const u8 = std::ptr::from_ref::<Line>(line).cast();
            // SAFETY: a line is 64 aligned bytes.
            let q = unsafe { _mm512_load_si512(p.cast()) };
            let off = 128 * (c / 8) + 4 * (c % 8);
            macro_rules! step {
                ($sh:literal) => {{
                    let code = _mm512_and_si512(_mm512_srli_epi16::<$sh>(q), m3);
                    let koff = off + 32 * field($sh, I2S);
                    for j in 0..T {
                        // SAFETY: `koff + 4 <= 256`.
                        let a = unsafe { bcast(x[j], koff) };
                        s[j] = _mm512_dpbusd_epi32(s[j], code, a);
                    }
                }};
            }
            step!(0);
            step!(2);
            step!(4);
            step!(6);
        }
        let dw = scales16(tl, g, u);
        for j in 0..T {
            let i = (t0 + j) * units + u;
            acc[j] = fold16(acc[j], s[j], acts.sums[i], dw, acts.d[i]);
        }
    }
    let ts = _mm512_set1_ps(tl.tensor_scale);
    for (j, a) in acc.iter().enumerate() {
        // SAFETY: from the caller.
        unsafe { _mm512_storeu_ps(out.add(j * ld), _mm512_mul_ps(*a, ts)) };
    }
}

/// The 256-bit (AVX-VNNI) form of [`fold16`] for 8 rows.
#[inline]
#[target_feature(enable = "avxvnni,avx2")]
fn fold8(acc: __m256, s: __m256i, sum_x: i32, dw: __m256, dx: f32) -> __m256 {
    let sumi = _mm256_sub_epi32(s, _mm256_set1_epi32(sum_x));
    let d = _mm256_mul_ps(dw, _mm256_set1_ps(dx));
    _mm256_add_ps(acc, _mm256_mul_ps(_mm256_cvtepi32_ps(sumi), d))
}

/// The weight scales of rows `8h .. 8h + 8` of group `g`'s unit `u` (ones for I2_S).
#[inline]
#[target_feature(enable = "avxvnni,avx2")]
fn scales8(tl: &Tiled16, g: usize, u: usize, h: usize) -> __m256 {
    if tl.i2s {
        _mm256_set1_ps(1.0)
    } else {
        // SAFETY: `scales` holds 16 values for every (group, unit).
        unsafe { _mm256_loadu_ps(tl.scales[(g * tl.units + u) * 16 + 8 * h..][..8].as_ptr()) }
    }
}

/// [`tile_gemv_zmm`] on 256-bit registers: each 64-byte line is two halves of 8 rows
/// (lanes 0-7 and 8-15 of the same [`Tiled16`] copy), each half its own `vpdpbusd`
/// chains; per lane the same exact unit sums and the same fold, so the same bits.
///
/// # Safety
/// AVX2 and AVX-VNNI; `out` has 16 writable values.
#[target_feature(enable = "avxvnni,avx2")]
unsafe fn tile_gemv_ymm<const I2S: bool>(
    tl: &Tiled16,
    acts: &TileActs<'_>,
    g: usize,
    t: usize,
    out: *mut f32,
) {
    let units = tl.units;
    let m3 = _mm256_set1_epi8(3);
    let mut acc = [_mm256_setzero_ps(); 2];
    for u in 0..units {
        let lines = &tl.lines[(g * units + u) * 16..][..16];
        let x = acts.codes(t, u);
        // Per half, two chains (even and odd code fields) in flight.
        let mut s = [_mm256_setzero_si256(); 4];
        for (c, line) in lines.iter().enumerate() {
            let p: *const u8 = std::ptr::from_ref::<Line>(line).cast();
            prefetch(p.wrapping_add(512));
            // SAFETY: a line is 64 aligned bytes.
            let (q0, q1) = unsafe {
                (
                    _mm256_load_si256(p.cast()),
                    _mm256_load_si256(p.add(32).cast()),
                )
            };
            let off = 128 * (c / 8) + 4 * (c % 8);
            macro_rules! step {
                ($i:expr, $sh:literal) => {{
                    // SAFETY: `off + 32 * field + 4 <= 256`.
                    let a = _mm256_set1_epi32(unsafe {
                        x.add(off + 32 * field($sh, I2S))
                            .cast::<i32>()
                            .read_unaligned()
                    });
                    let c0 = _mm256_and_si256(_mm256_srli_epi16::<$sh>(q0), m3);
                    let c1 = _mm256_and_si256(_mm256_srli_epi16::<$sh>(q1), m3);
                    s[$i] = _mm256_dpbusd_avx_epi32(s[$i], c0, a);
                    s[2 + $i] = _mm256_dpbusd_avx_epi32(s[2 + $i], c1, a);
                }};
            }
            step!(0, 0);
            step!(1, 2);
            step!(0, 4);
            step!(1, 6);
        }
        let i = t * units + u;
        for h in 0..2 {
            let sum = _mm256_add_epi32(s[2 * h], s[2 * h + 1]);
            acc[h] = fold8(acc[h], sum, acts.sums[i], scales8(tl, g, u, h), acts.d[i]);
        }
    }
    let ts = _mm256_set1_ps(tl.tensor_scale);
    // SAFETY: from the caller.
    unsafe {
        _mm256_storeu_ps(out, _mm256_mul_ps(acc[0], ts));
        _mm256_storeu_ps(out.add(8), _mm256_mul_ps(acc[1], ts));
    }
}

/// [`tile_gemm_zmm`] on 256-bit registers (see [`tile_gemv_ymm`]), for up to 4 tokens
/// (16 registers: 4 tokens x 2 halves of sums, the rest for codes and accumulators).
///
/// # Safety
/// AVX2 and AVX-VNNI; `out + j * ld` has 16 writable values for every `j < T`.
#[target_feature(enable = "avxvnni,avx2")]
unsafe fn tile_gemm_ymm<const T: usize, const I2S: bool>(
    tl: &Tiled16,
    acts: &TileActs<'_>,
    g: usize,
    t0: usize,
    out: *mut f32,
    ld: usize,
) {
    let units = tl.units;
    let m3 = _mm256_set1_epi8(3);
    let mut acc = [[_mm256_setzero_ps(); 2]; T];
    for u in 0..units {
        let lines = &tl.lines[(g * units + u) * 16..][..16];
        let x: [*const u8; T] = std::array::from_fn(|j| acts.codes(t0 + j, u));
        let mut s = [[_mm256_setzero_si256(); 2]; T];
        for (c, line) in lines.iter().enumerate() {
            let p: *const u8 = std::ptr::from_ref::<Line>(line).cast();
            // SAFETY: a line is 64 aligned bytes.
            let (q0, q1) = unsafe {
                (
                    _mm256_load_si256(p.cast()),
                    _mm256_load_si256(p.add(32).cast()),
                )
            };
            let off = 128 * (c / 8) + 4 * (c % 8);
            macro_rules! step {
                ($sh:literal) => {{
                    let c0 = _mm256_and_si256(_mm256_srli_epi16::<$sh>(q0), m3);
                    let c1 = _mm256_and_si256(_mm256_srli_epi16::<$sh>(q1), m3);
                    let koff = off + 32 * field($sh, I2S);
                    for j in 0..T {
                        // SAFETY: `koff + 4 <= 256`.
                        let a = _mm256_set1_epi32(unsafe {
                            x[j].add(koff).cast::<i32>().read_unaligned()
                        });
                        s[j][0] = _mm256_dpbusd_avx_epi32(s[j][0], c0, a);
                        s[j][1] = _mm256_dpbusd_avx_epi32(s[j][1], c1, a);
                    }
                }};
            }
            step!(0);
            step!(2);
            step!(4);
            step!(6);
        }
        for h in 0..2 {
            let dw = scales8(tl, g, u, h);
            for j in 0..T {
                let i = (t0 + j) * units + u;
                acc[j][h] = fold8(acc[j][h], s[j][h], acts.sums[i], dw, acts.d[i]);
            }
        }
    }
    let ts = _mm256_set1_ps(tl.tensor_scale);
    for (j, a) in acc.iter().enumerate() {
        // SAFETY: from the caller.
        unsafe {
            _mm256_storeu_ps(out.add(j * ld), _mm256_mul_ps(a[0], ts));
            _mm256_storeu_ps(out.add(j * ld + 8), _mm256_mul_ps(a[1], ts));
        }
    }
}

/// Groups `g0 .. g0 + out.len() / 16` of a [`Tiled16`] for one token (GEMV) into `out`.
///
/// # Safety
/// The CPU has the features of `width` (its `KernelPath` is supported); `out.len()` is a
/// multiple of 16 and the groups exist.
pub(super) unsafe fn tiled_gemv(
    width: Width,
    tl: &Tiled16,
    acts: &TileActs<'_>,
    g0: usize,
    out: &mut [f32],
) {
    for (k, o) in out.chunks_exact_mut(16).enumerate() {
        let o = o.as_mut_ptr();
        // SAFETY: from the caller; `o` has 16 values.
        unsafe {
            match (width, tl.i2s) {
                (Width::Zmm, true) => tile_gemv_zmm::<true>(tl, acts, g0 + k, 0, o),
                (Width::Zmm, false) => tile_gemv_zmm::<false>(tl, acts, g0 + k, 0, o),
                (Width::Ymm, true) => tile_gemv_ymm::<true>(tl, acts, g0 + k, 0, o),
                (Width::Ymm, false) => tile_gemv_ymm::<false>(tl, acts, g0 + k, 0, o),
            }
        }
    }
}

/// Every group of a [`Tiled16`] for tokens `t0 .. t0 + out.len() / ld` (GEMM), into `out`
/// (`out[(t - t0) * ld + r]`, `ld` = the matrix's rows), in token tiles of 64 so a tile's
/// activations stay in L2 while a group's codes (at most a few tens of KB) stay in L1
/// across the tile's blocks of 8 tokens.
///
/// On the 256-bit path blocks have 4 tokens (16 registers hold 4 tokens' sums).
///
/// # Safety
/// As [`tiled_gemv`]; `out.len()` is a multiple of `ld` and `ld >= tl.rows()`.
pub(super) unsafe fn tiled_gemm(
    width: Width,
    tl: &Tiled16,
    acts: &TileActs<'_>,
    t0: usize,
    ld: usize,
    out: &mut [f32],
) {
    const TILE: usize = 64;
    let tokens = out.len() / ld;
    let base = out.as_mut_ptr();
    for a in (0..tokens).step_by(TILE) {
        let b = (a + TILE).min(tokens);
        let block = if width == Width::Zmm { 8 } else { 4 };
        for g in 0..tl.groups {
            for j0 in (a..b).step_by(block) {
                let nt = (b - j0).min(block);
                // SAFETY: token `j0 + j < tokens` writes `out[(j0 + j) * ld + 16g ..][..16]`,
                // inside `out` since `16g + 16 <= tl.rows() <= ld`.
                unsafe {
                    let o = base.add(j0 * ld + 16 * g);
                    let t = t0 + j0;
                    macro_rules! run {
                        ($kernel:ident, $($n:literal)*) => {
                            match (nt, tl.i2s) {
                                $(($n, true) => $kernel::<$n, true>(tl, acts, g, t, o, ld),
                                  ($n, false) => $kernel::<$n, false>(tl, acts, g, t, o, ld),)*
                                _ => unreachable!("blocks have 1 to 8 tokens"),
                            }
                        };
                    }
                    match width {
                        Width::Zmm => run!(tile_gemm_zmm, 1 2 3 4 5 6 7 8),
                        Width::Ymm => run!(tile_gemm_ymm, 1 2 3 4),
                    }
                }
            }
        }
    }
}
