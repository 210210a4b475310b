//! aarch64 NEON kernels. Same integer sums and [`combine`] order as [`super::scalar`].
//!
//! Codes become signed weights (code - 1) and are multiplied exactly with `vmull_s8` /
//! `vmlal_s8` into 16-bit lanes (at most 32 products of |2·128| per lane for ternary blocks),
//! or widened to 32 bits with `vpadalq_s16` for Q8_0.
//!
//! These kernels are type-checked (`cargo check --target aarch64-unknown-linux-gnu`) but were
//! not executed on ARM hardware when written, so [`super::KernelPath::best`] never picks them:
//! they run only when forced (`TERNARY_KERNEL=neon`), e.g. to verify them with the kernel
//! equality tests on an ARM machine.

use super::{RowDot, combine};
use crate::format::{BlockI2S, BlockQ8_0, BlockTq1_0, BlockTq2_0};
use crate::matrix::PackedData;
use crate::quant::BlockQ8K;
use std::arch::aarch64::*;

/// Boxes the NEON dot product for one format.
pub(super) fn row_dot(data: &PackedData, bpr: usize) -> RowDot<'_> {
    assert!(
        std::arch::is_aarch64_feature_detected!("neon"),
        "neon kernels selected on a CPU without NEON"
    );
    // SAFETY (all arms): NEON availability was asserted just above.
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
fn ld_u8(p: &[u8]) -> uint8x16_t {
    assert!(p.len() >= 16);
    // SAFETY: 16 readable bytes checked above.
    unsafe { vld1q_u8(p.as_ptr()) }
}

#[inline(always)]
fn ld_s8(p: &[i8]) -> int8x16_t {
    assert!(p.len() >= 16);
    // SAFETY: 16 readable bytes checked above.
    unsafe { vld1q_s8(p.as_ptr()) }
}

/// acc += w * y over 16 lanes (exact in i16 for ternary weights).
#[target_feature(enable = "neon")]
fn mla16(acc: int16x8_t, w: int8x16_t, y: int8x16_t) -> int16x8_t {
    let acc = vmlal_s8(acc, vget_low_s8(w), vget_low_s8(y));
    vmlal_high_s8(acc, w, y)
}

/// Signed weight (code - 1) from a 2-bit field already shifted down.
#[target_feature(enable = "neon")]
fn w2(q: uint8x16_t) -> int8x16_t {
    vsubq_s8(
        vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(3))),
        vdupq_n_s8(1),
    )
}

/// Signed weight (trit - 1) of bytes already multiplied by 3^n: trit = [p >= 86] + [p >= 171].
#[target_feature(enable = "neon")]
fn w3(p: uint8x16_t) -> int8x16_t {
    let m1 = vreinterpretq_s8_u8(vcgeq_u8(p, vdupq_n_u8(86)));
    let m2 = vreinterpretq_s8_u8(vcgeq_u8(p, vdupq_n_u8(171)));
    // masks are -1 where set: trit - 1 = -m1 - m2 - 1
    vsubq_s8(vsubq_s8(vsubq_s8(vdupq_n_s8(0), m1), m2), vdupq_n_s8(1))
}

/// TQ2_0 · Q8_K.
#[target_feature(enable = "neon")]
pub(crate) fn dot_tq2(w: &[BlockTq2_0], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    for (b, a) in w.iter().zip(x) {
        let mut s = vdupq_n_s16(0);
        for g in 0..2 {
            for h in 0..2 {
                let q = ld_u8(&b.qs[32 * g + 16 * h..]);
                let y = &a.qs[128 * g + 16 * h..];
                s = mla16(s, w2(q), ld_s8(y));
                s = mla16(s, w2(vshrq_n_u8::<2>(q)), ld_s8(&y[32..]));
                s = mla16(s, w2(vshrq_n_u8::<4>(q)), ld_s8(&y[64..]));
                s = mla16(s, w2(vshrq_n_u8::<6>(q)), ld_s8(&y[96..]));
            }
        }
        acc = combine(acc, vaddlvq_s16(s), b.d.to_f32() * a.d);
    }
    acc
}

/// TQ1_0 · Q8_K.
#[target_feature(enable = "neon")]
pub(crate) fn dot_tq1(w: &[BlockTq1_0], x: &[BlockQ8K]) -> f32 {
    const POW: [u8; 5] = [1, 3, 9, 27, 81];
    const QH_POW: [u8; 16] = [1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27];
    let mut acc = 0.0f32;
    for (b, a) in w.iter().zip(x) {
        let y = &a.qs;
        let mut s = vdupq_n_s16(0);
        let q0 = ld_u8(&b.qs);
        let q1 = ld_u8(&b.qs[16..]);
        let q2 = ld_u8(&b.qs[32..]);
        for (n, &p) in POW.iter().enumerate() {
            let k = vdupq_n_u8(p);
            s = mla16(s, w3(vmulq_u8(q0, k)), ld_s8(&y[32 * n..]));
            s = mla16(s, w3(vmulq_u8(q1, k)), ld_s8(&y[32 * n + 16..]));
            s = mla16(s, w3(vmulq_u8(q2, k)), ld_s8(&y[160 + 16 * n..]));
        }
        let qh = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes(b.qh)));
        s = mla16(s, w3(vmulq_u8(qh, ld_u8(&QH_POW))), ld_s8(&y[240..]));
        acc = combine(acc, vaddlvq_s16(s), b.d.to_f32() * a.d);
    }
    acc
}

/// Q8_0 · Q8_K (products widened to 32 bits).
#[target_feature(enable = "neon")]
pub(crate) fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    for (j, b) in w.iter().enumerate() {
        let a = &x[j / 8];
        let y = &a.qs[(j % 8) * 32..];
        let mut s = vdupq_n_s32(0);
        for h in 0..2 {
            let wv = ld_s8(&b.qs[16 * h..]);
            let yv = ld_s8(&y[16 * h..]);
            s = vpadalq_s16(s, vmull_s8(vget_low_s8(wv), vget_low_s8(yv)));
            s = vpadalq_s16(s, vmull_high_s8(wv, yv));
        }
        acc = combine(acc, vaddvq_s32(s), b.d.to_f32() * a.d);
    }
    acc
}

/// I2_S · Q8_K.
#[target_feature(enable = "neon")]
pub(crate) fn dot_i2s(w: &[BlockI2S], scale: f32, x: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    for (pair, a) in w.chunks(2).zip(x) {
        let mut s = vdupq_n_s16(0);
        for (h, b) in pair.iter().enumerate() {
            for half in 0..2 {
                let q = ld_u8(&b.qs[16 * half..]);
                let y = &a.qs[128 * h + 16 * half..];
                s = mla16(s, w2(vshrq_n_u8::<6>(q)), ld_s8(y));
                s = mla16(s, w2(vshrq_n_u8::<4>(q)), ld_s8(&y[32..]));
                s = mla16(s, w2(vshrq_n_u8::<2>(q)), ld_s8(&y[64..]));
                s = mla16(s, w2(q), ld_s8(&y[96..]));
            }
        }
        acc = combine(acc, vaddlvq_s16(s), a.d);
    }
    acc * scale
}
