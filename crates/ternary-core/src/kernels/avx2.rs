//! AVX2 kernels (x86-64). Same integer sums and the same [`combine`] order as [`super::scalar`].
//!
//! Ternary codes stay unsigned (0..=2) so `maddubs(code, y)` is exact for every int8 `y`;
//! the `-1` offset is applied once per unit by subtracting the activation partial sums
//! (`bsums`), as ggml does. 16-bit lanes never overflow: at most 8 products of |3·128| pairs.
//! The functions are only reached through [`row_dot`], which `Engine` selects after
//! `is_x86_feature_detected!("avx2")`.

use super::{RowDot, combine};
use crate::format::{BlockI2S, BlockQ8_0, BlockTq1_0, BlockTq2_0};
use crate::matrix::PackedData;
use crate::quant::BlockQ8K;
use std::arch::x86_64::*;

/// Boxes the AVX2 dot product for one format.
pub(super) fn row_dot(data: &PackedData, bpr: usize) -> RowDot<'_> {
    assert!(
        std::is_x86_feature_detected!("avx2"),
        "avx2 kernels selected on a CPU without AVX2"
    );
    // SAFETY (all arms): AVX2 availability was asserted just above.
    match data {
        PackedData::Tq1_0(b) => {
            Box::new(move |r, x| unsafe { dot_tq1(&b[r * bpr..(r + 1) * bpr], x) })
        }
        PackedData::Tq2_0(b) => {
            Box::new(move |r, x| unsafe { dot_tq2(&b[r * bpr..(r + 1) * bpr], x) })
        }
        PackedData::Q8_0(b) => {
            Box::new(move |r, x| unsafe { dot_q8_0(&b[r * bpr..(r + 1) * bpr], x) })
        }
        PackedData::I2S { blocks, scale } => {
            let s = *scale;
            Box::new(move |r, x| unsafe { dot_i2s(&blocks[r * bpr..(r + 1) * bpr], s, x) })
        }
    }
}

#[inline(always)]
fn load256(p: &[u8]) -> __m256i {
    assert!(p.len() >= 32);
    // SAFETY: 32 readable bytes checked above; unaligned load.
    unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
}

#[inline(always)]
fn load256_i8(p: &[i8]) -> __m256i {
    assert!(p.len() >= 32);
    // SAFETY: as in `load256`.
    unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
}

#[inline(always)]
fn load128_i8(p: &[i8]) -> __m128i {
    assert!(p.len() >= 16);
    // SAFETY: 16 readable bytes checked above; unaligned load.
    unsafe { _mm_loadu_si128(p.as_ptr().cast()) }
}

#[inline(always)]
fn load128(p: &[u8]) -> __m128i {
    assert!(p.len() >= 16);
    // SAFETY: as in `load128_i8`.
    unsafe { _mm_loadu_si128(p.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Per-lane i32 sums of pairs of `bsums`: lanes 0..4 cover values 0..128, lanes 4..8 the rest.
#[target_feature(enable = "avx2")]
fn bsums_i32(a: &BlockQ8K) -> __m256i {
    let b: &[u8] = bytemuck::cast_slice(&a.bsums);
    _mm256_madd_epi16(load256(b), _mm256_set1_epi16(1))
}

/// TQ2_0 · Q8_K.
#[target_feature(enable = "avx2")]
pub(crate) fn dot_tq2(w: &[BlockTq2_0], x: &[BlockQ8K]) -> f32 {
    let mask = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut acc = 0.0f32;
    for (b, a) in w.iter().zip(x) {
        let mut s16 = _mm256_setzero_si256();
        for g in 0..2 {
            let q = load256(&b.qs[32 * g..]);
            let y = &a.qs[128 * g..];
            let c0 = _mm256_and_si256(q, mask);
            let c1 = _mm256_and_si256(_mm256_srli_epi16::<2>(q), mask);
            let c2 = _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask);
            let c3 = _mm256_and_si256(_mm256_srli_epi16::<6>(q), mask);
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(c0, load256_i8(y)));
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(c1, load256_i8(&y[32..])));
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(c2, load256_i8(&y[64..])));
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(c3, load256_i8(&y[96..])));
        }
        let s32 = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones), bsums_i32(a));
        acc = combine(acc, hsum_i32(s32), b.d.to_f32() * a.d);
    }
    acc
}

/// Trit (0..=2) of every byte of `p`: `(p*3) >> 8` = `[p >= 86] + [p >= 171]`.
#[target_feature(enable = "avx2")]
fn trits256(p: __m256i) -> __m256i {
    let k1 = _mm256_set1_epi8(86);
    let k2 = _mm256_set1_epi8(171u8 as i8);
    let m1 = _mm256_cmpeq_epi8(_mm256_max_epu8(p, k1), p);
    let m2 = _mm256_cmpeq_epi8(_mm256_max_epu8(p, k2), p);
    _mm256_sub_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), m1), m2)
}

#[target_feature(enable = "avx2")]
fn trits128(p: __m128i) -> __m128i {
    let k1 = _mm_set1_epi8(86);
    let k2 = _mm_set1_epi8(171u8 as i8);
    let m1 = _mm_cmpeq_epi8(_mm_max_epu8(p, k1), p);
    let m2 = _mm_cmpeq_epi8(_mm_max_epu8(p, k2), p);
    _mm_sub_epi8(_mm_sub_epi8(_mm_setzero_si128(), m1), m2)
}

#[target_feature(enable = "avx2")]
fn x3_256(p: __m256i) -> __m256i {
    _mm256_add_epi8(_mm256_add_epi8(p, p), p)
}

#[target_feature(enable = "avx2")]
fn x3_128(p: __m128i) -> __m128i {
    _mm_add_epi8(_mm_add_epi8(p, p), p)
}

/// TQ1_0 · Q8_K.
#[target_feature(enable = "avx2")]
pub(crate) fn dot_tq1(w: &[BlockTq1_0], x: &[BlockQ8K]) -> f32 {
    let ones = _mm256_set1_epi16(1);
    let ones128 = _mm_set1_epi16(1);
    let mut acc = 0.0f32;
    for (b, a) in w.iter().zip(x) {
        let y = &a.qs;
        // Elements 0..160: qs[0..32], trit n -> values 32n..32n+32.
        let mut p = load256(&b.qs);
        let mut s16 = _mm256_maddubs_epi16(trits256(p), load256_i8(y));
        for n in 1..5 {
            p = x3_256(p);
            s16 = _mm256_add_epi16(
                s16,
                _mm256_maddubs_epi16(trits256(p), load256_i8(&y[32 * n..])),
            );
        }
        // Elements 160..240: qs[32..48], trit n -> values 160+16n..160+16n+16.
        let mut p = load128(&b.qs[32..]);
        let mut t16 = _mm_maddubs_epi16(trits128(p), load128_i8(&y[160..]));
        for n in 1..5 {
            p = x3_128(p);
            t16 = _mm_add_epi16(
                t16,
                _mm_maddubs_epi16(trits128(p), load128_i8(&y[160 + 16 * n..])),
            );
        }
        // Elements 240..256: qh[j] trit n -> value 240+4n+j, i.e. 32-bit lane n of a broadcast
        // of qh multiplied by 3^n.
        let h1 = _mm_set1_epi32(i32::from_le_bytes(b.qh));
        let h3 = x3_128(h1);
        let h9 = x3_128(h3);
        let h27 = x3_128(h9);
        let hp = _mm_blend_epi32::<0b1100>(
            _mm_blend_epi32::<0b0010>(h1, h3),
            _mm_blend_epi32::<0b1000>(h9, h27),
        );
        t16 = _mm_add_epi16(t16, _mm_maddubs_epi16(trits128(hp), load128_i8(&y[240..])));
        let s32 = _mm256_madd_epi16(s16, ones);
        let t32 = _mm_madd_epi16(t16, ones128);
        let s32 = _mm256_add_epi32(s32, _mm256_zextsi128_si256(t32));
        let s32 = _mm256_sub_epi32(s32, bsums_i32(a));
        acc = combine(acc, hsum_i32(s32), b.d.to_f32() * a.d);
    }
    acc
}

/// Q8_0 · Q8_K, with exact 16-bit widening (no sign tricks, so -128 is fine).
#[target_feature(enable = "avx2")]
pub(crate) fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    for (j, b) in w.iter().enumerate() {
        let a = &x[j / 8];
        let y = &a.qs[(j % 8) * 32..];
        let wl = _mm256_cvtepi8_epi16(load128_i8(&b.qs));
        let wh = _mm256_cvtepi8_epi16(load128_i8(&b.qs[16..]));
        let yl = _mm256_cvtepi8_epi16(load128_i8(y));
        let yh = _mm256_cvtepi8_epi16(load128_i8(&y[16..]));
        let s = _mm256_add_epi32(_mm256_madd_epi16(wl, yl), _mm256_madd_epi16(wh, yh));
        acc = combine(acc, hsum_i32(s), b.d.to_f32() * a.d);
    }
    acc
}

/// I2_S · Q8_K.
#[target_feature(enable = "avx2")]
pub(crate) fn dot_i2s(w: &[BlockI2S], scale: f32, x: &[BlockQ8K]) -> f32 {
    let mask = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut acc = 0.0f32;
    for (pair, a) in w.chunks(2).zip(x) {
        let mut s16 = _mm256_setzero_si256();
        for (h, b) in pair.iter().enumerate() {
            let q = load256(&b.qs);
            let y = &a.qs[128 * h..];
            let c0 = _mm256_and_si256(_mm256_srli_epi16::<6>(q), mask);
            let c1 = _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask);
            let c2 = _mm256_and_si256(_mm256_srli_epi16::<2>(q), mask);
            let c3 = _mm256_and_si256(q, mask);
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(c0, load256_i8(y)));
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(c1, load256_i8(&y[32..])));
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(c2, load256_i8(&y[64..])));
            s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(c3, load256_i8(&y[96..])));
        }
        let mut bs = bsums_i32(a);
        if pair.len() == 1 {
            // Half block at the end of a row: only the first 128 activations take part.
            bs = _mm256_zextsi128_si256(_mm256_castsi256_si128(bs));
        }
        let s32 = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones), bs);
        acc = combine(acc, hsum_i32(s32), a.d);
    }
    acc * scale
}

/// Decodes one weight row of a ternary format into unsigned codes (0..=3) in element order,
/// padded with code 1 (value 0) to a multiple of 256, plus one weight scale per 256-unit
/// (the fp16 block scale; 1.0 for I2_S, whose tensor scale is applied at the end).
/// Returns `None` for Q8_0, which needs no decoding.
pub(super) fn decode_row(
    data: &PackedData,
    bpr: usize,
    r: usize,
    codes: &mut Vec<u8>,
    scales: &mut Vec<f32>,
) -> Option<()> {
    codes.clear();
    scales.clear();
    // SAFETY: callers reach this module only after AVX2 detection (see `row_dot`).
    unsafe {
        match data {
            PackedData::Tq2_0(b) => {
                for blk in &b[r * bpr..(r + 1) * bpr] {
                    decode_tq2(blk, codes);
                    scales.push(blk.d.to_f32());
                }
            }
            PackedData::Tq1_0(b) => {
                for blk in &b[r * bpr..(r + 1) * bpr] {
                    decode_tq1(blk, codes);
                    scales.push(blk.d.to_f32());
                }
            }
            PackedData::I2S { blocks, .. } => {
                for pair in blocks[r * bpr..(r + 1) * bpr].chunks(2) {
                    for blk in pair {
                        decode_i2s(blk, codes);
                    }
                    if pair.len() == 1 {
                        codes.extend(std::iter::repeat_n(1u8, 128));
                    }
                    scales.push(1.0);
                }
            }
            PackedData::Q8_0(_) => return None,
        }
    }
    Some(())
}

#[inline(always)]
fn store256(out: &mut Vec<u8>, v: __m256i) {
    let mut tmp = [0u8; 32];
    // SAFETY: `tmp` has 32 writable bytes; unaligned store.
    unsafe { _mm256_storeu_si256(tmp.as_mut_ptr().cast(), v) };
    out.extend_from_slice(&tmp);
}

#[inline(always)]
fn store128(out: &mut Vec<u8>, v: __m128i) {
    let mut tmp = [0u8; 16];
    // SAFETY: `tmp` has 16 writable bytes; unaligned store.
    unsafe { _mm_storeu_si128(tmp.as_mut_ptr().cast(), v) };
    out.extend_from_slice(&tmp);
}

#[target_feature(enable = "avx2")]
fn decode_tq2(b: &BlockTq2_0, out: &mut Vec<u8>) {
    let mask = _mm256_set1_epi8(3);
    for g in 0..2 {
        let q = load256(&b.qs[32 * g..]);
        store256(out, _mm256_and_si256(q, mask));
        store256(out, _mm256_and_si256(_mm256_srli_epi16::<2>(q), mask));
        store256(out, _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask));
        store256(out, _mm256_and_si256(_mm256_srli_epi16::<6>(q), mask));
    }
}

#[target_feature(enable = "avx2")]
fn decode_i2s(b: &BlockI2S, out: &mut Vec<u8>) {
    let mask = _mm256_set1_epi8(3);
    let q = load256(&b.qs);
    store256(out, _mm256_and_si256(_mm256_srli_epi16::<6>(q), mask));
    store256(out, _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask));
    store256(out, _mm256_and_si256(_mm256_srli_epi16::<2>(q), mask));
    store256(out, _mm256_and_si256(q, mask));
}

#[target_feature(enable = "avx2")]
fn decode_tq1(b: &BlockTq1_0, out: &mut Vec<u8>) {
    let mut p = load256(&b.qs);
    store256(out, trits256(p));
    for _ in 1..5 {
        p = x3_256(p);
        store256(out, trits256(p));
    }
    let mut p = load128(&b.qs[32..]);
    store128(out, trits128(p));
    for _ in 1..5 {
        p = x3_128(p);
        store128(out, trits128(p));
    }
    let h1 = _mm_set1_epi32(i32::from_le_bytes(b.qh));
    let h3 = x3_128(h1);
    let h9 = x3_128(h3);
    let h27 = x3_128(h9);
    let hp = _mm_blend_epi32::<0b1100>(
        _mm_blend_epi32::<0b0010>(h1, h3),
        _mm_blend_epi32::<0b1000>(h9, h27),
    );
    store128(out, trits128(hp));
}

/// Dot product of decoded codes (from [`decode_row`]) with up to 4 tokens at once, so each
/// code vector is loaded once per 4 tokens. Same unit sums and [`combine`] order as scalar.
#[target_feature(enable = "avx2")]
pub(super) fn dot_decoded4(
    codes: &[u8],
    scales: &[f32],
    tensor_scale: f32,
    xs: &[&[BlockQ8K]],
    out: &mut [f32],
) {
    let ones = _mm256_set1_epi16(1);
    let nt = xs.len().min(4);
    let mut acc = [0.0f32; 4];
    for (u, &dw) in scales.iter().enumerate() {
        let c = &codes[256 * u..256 * (u + 1)];
        let mut s16 = [_mm256_setzero_si256(); 4];
        for k in 0..8 {
            let cv = load256(&c[32 * k..]);
            for t in 0..nt {
                let y = load256_i8(&xs[t][u].qs[32 * k..]);
                s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(cv, y));
            }
        }
        for t in 0..nt {
            let a = &xs[t][u];
            let s32 = _mm256_sub_epi32(_mm256_madd_epi16(s16[t], ones), bsums_i32(a));
            acc[t] = combine(acc[t], hsum_i32(s32), dw * a.d);
        }
    }
    for t in 0..nt {
        out[t] = acc[t] * tensor_scale;
    }
}

/// How far ahead (bytes) the GEMV kernels prefetch their weight stream (512 measured a little
/// better than 0 and 1024 out of cache on this machine; the noise is large).
const PREFETCH_AHEAD: usize = 512;

#[inline(always)]
fn prefetch(p: &[u8]) {
    // SAFETY: prefetching is a hint that never faults; `wrapping_add` keeps the address
    // computation free of out-of-bounds pointer arithmetic.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.as_ptr().wrapping_add(PREFETCH_AHEAD).cast()) }
}

/// Horizontal sums of four i32x8 vectors: `[Σa, Σb, Σc, Σd]`.
#[target_feature(enable = "avx2")]
pub(super) fn hsum4_i32(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m128i {
    let ab = _mm256_hadd_epi32(a, b);
    let cd = _mm256_hadd_epi32(c, d);
    let abcd = _mm256_hadd_epi32(ab, cd);
    _mm_add_epi32(
        _mm256_castsi256_si128(abcd),
        _mm256_extracti128_si256::<1>(abcd),
    )
}

/// Adds four unit products to a row accumulator in unit order, exactly as four successive
/// [`combine`] calls would (`p` holds `sumi as f32 * scale` per unit, rounded per lane).
#[inline(always)]
pub(super) fn fold4(mut acc: f32, p: __m128, n: usize) -> f32 {
    let mut v = [0f32; 4];
    // SAFETY: `v` has 4 writable f32; unaligned store.
    unsafe { _mm_storeu_ps(v.as_mut_ptr(), p) };
    for &x in &v[..n] {
        acc += x;
    }
    acc
}

/// GEMV over I2_S rows `r0 .. r0 + out.len()`. Each row is one sequential stream (several
/// interleaved row streams measured slower out of cache); the per-unit horizontal sums are
/// batched four units at a time. Same unit sums and combine order as
/// [`super::scalar::dot_i2s`].
#[target_feature(enable = "avx2")]
pub(super) fn gemv_i2s(
    blocks: &[BlockI2S],
    bpr: usize,
    scale: f32,
    x: &[BlockQ8K],
    r0: usize,
    out: &mut [f32],
) {
    let mask = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let units = bpr.div_ceil(2);
    for (i, o) in out.iter_mut().enumerate() {
        let w = &blocks[(r0 + i) * bpr..(r0 + i + 1) * bpr];
        let mut acc = 0.0f32;
        for u0 in (0..units).step_by(4) {
            let n = (units - u0).min(4);
            let mut s32 = [_mm256_setzero_si256(); 4];
            for (k, s) in s32.iter_mut().enumerate().take(n) {
                let u = u0 + k;
                let a = &x[u];
                let nb = (bpr - 2 * u).min(2);
                let pair = &w[2 * u..2 * u + nb];
                // The pair's blocks are contiguous 32-byte code arrays; raw loads from checked
                // slices keep bounds checks out of the inner loop.
                let wp: &[u8] = bytemuck::cast_slice(pair);
                prefetch(wp);
                let yp = a.qs.as_ptr();
                let mut s16 = _mm256_setzero_si256();
                for h in 0..nb {
                    // SAFETY: `wp` has 32 * nb bytes and `a.qs` 256, so offsets 32h and
                    // 128h + 96 (+32) are in bounds for h < nb <= 2; unaligned loads.
                    let (q, y0, y1, y2, y3) = unsafe {
                        let yh = yp.add(128 * h);
                        (
                            _mm256_loadu_si256(wp.as_ptr().add(32 * h).cast()),
                            _mm256_loadu_si256(yh.cast()),
                            _mm256_loadu_si256(yh.add(32).cast()),
                            _mm256_loadu_si256(yh.add(64).cast()),
                            _mm256_loadu_si256(yh.add(96).cast()),
                        )
                    };
                    let c0 = _mm256_and_si256(_mm256_srli_epi16::<6>(q), mask);
                    let c1 = _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask);
                    let c2 = _mm256_and_si256(_mm256_srli_epi16::<2>(q), mask);
                    let c3 = _mm256_and_si256(q, mask);
                    let p01 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(c0, y0),
                        _mm256_maddubs_epi16(c1, y1),
                    );
                    let p23 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(c2, y2),
                        _mm256_maddubs_epi16(c3, y3),
                    );
                    s16 = _mm256_add_epi16(s16, _mm256_add_epi16(p01, p23));
                }
                let mut bs = bsums_i32(a);
                if nb == 1 {
                    bs = _mm256_zextsi128_si256(_mm256_castsi256_si128(bs));
                }
                *s = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones), bs);
            }
            let sumi = hsum4_i32(s32[0], s32[1], s32[2], s32[3]);
            let d = |k: usize| if k < n { x[u0 + k].d } else { 0.0 };
            let p = _mm_mul_ps(_mm_cvtepi32_ps(sumi), _mm_setr_ps(d(0), d(1), d(2), d(3)));
            acc = fold4(acc, p, n);
        }
        *o = acc * scale;
    }
}

/// GEMV over TQ2_0 rows `r0 .. r0 + out.len()`, one stream per row, horizontal sums batched
/// four units at a time (see [`gemv_i2s`]). Same unit sums and combine order as
/// [`super::scalar::dot_tq2`].
#[target_feature(enable = "avx2,f16c")]
pub(super) fn gemv_tq2(
    blocks: &[BlockTq2_0],
    bpr: usize,
    x: &[BlockQ8K],
    r0: usize,
    out: &mut [f32],
) {
    let mask = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    for (i, o) in out.iter_mut().enumerate() {
        let w = &blocks[(r0 + i) * bpr..(r0 + i + 1) * bpr];
        let mut acc = 0.0f32;
        for u0 in (0..bpr).step_by(4) {
            let n = (bpr - u0).min(4);
            let mut s32 = [_mm256_setzero_si256(); 4];
            let mut dbits = [0i16; 4];
            for (k, s) in s32.iter_mut().enumerate().take(n) {
                let (b, a) = (&w[u0 + k], &x[u0 + k]);
                dbits[k] = b.d.to_bits() as i16;
                prefetch(&b.qs);
                let mut s16 = _mm256_setzero_si256();
                for g in 0..2 {
                    let y = &a.qs[128 * g..];
                    let q = load256(&b.qs[32 * g..]);
                    let c0 = _mm256_and_si256(q, mask);
                    let c1 = _mm256_and_si256(_mm256_srli_epi16::<2>(q), mask);
                    let c2 = _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask);
                    let c3 = _mm256_and_si256(_mm256_srli_epi16::<6>(q), mask);
                    let p01 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(c0, load256_i8(y)),
                        _mm256_maddubs_epi16(c1, load256_i8(&y[32..])),
                    );
                    let p23 = _mm256_add_epi16(
                        _mm256_maddubs_epi16(c2, load256_i8(&y[64..])),
                        _mm256_maddubs_epi16(c3, load256_i8(&y[96..])),
                    );
                    s16 = _mm256_add_epi16(s16, _mm256_add_epi16(p01, p23));
                }
                *s = _mm256_sub_epi32(_mm256_madd_epi16(s16, ones), bsums_i32(a));
            }
            let sumi = hsum4_i32(s32[0], s32[1], s32[2], s32[3]);
            // F16C converts exactly, like `f16::to_f32`, without a call per scale; the scale
            // product `d_w * d_x` is rounded per lane exactly like the scalar one.
            let dw = _mm_cvtph_ps(_mm_setr_epi16(
                dbits[0], dbits[1], dbits[2], dbits[3], 0, 0, 0, 0,
            ));
            let d = |k: usize| if k < n { x[u0 + k].d } else { 0.0 };
            let dx = _mm_setr_ps(d(0), d(1), d(2), d(3));
            let p = _mm_mul_ps(_mm_cvtepi32_ps(sumi), _mm_mul_ps(dw, dx));
            acc = fold4(acc, p, n);
        }
        *o = acc;
    }
}

/// Fills `out` with rows `r0 ..` of `W · x` using the multi-row kernels where one exists.
/// Returns `false` (and writes nothing) for formats without one.
pub(super) fn gemv_rows(
    data: &PackedData,
    bpr: usize,
    x: &[BlockQ8K],
    r0: usize,
    out: &mut [f32],
) -> bool {
    // SAFETY: reached only through `Engine` with the Avx2 path, selectable only after AVX2
    // detection.
    unsafe {
        match data {
            PackedData::I2S { blocks, scale } => gemv_i2s(blocks, bpr, *scale, x, r0, out),
            PackedData::Tq2_0(b) => gemv_tq2(b, bpr, x, r0, out),
            _ => return false,
        }
    }
    true
}
