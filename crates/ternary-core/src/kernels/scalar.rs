//! The scalar reference kernels: plain loops, obviously correct, the ground truth that every
//! fast path must match bit for bit.
//!
//! Each kernel computes integer sums per "combine unit" and folds them into an f32 accumulator
//! with exactly the expression used by every other path (see [`super::combine`]), so equal
//! integer sums imply equal f32 results.

use super::combine;
use crate::format::{BlockI2S, BlockQ8_0, BlockTq1_0, BlockTq2_0, tq1_0::trit};
use crate::quant::BlockQ8K;

/// TQ2_0 row · Q8_K row. Unit: one 256-block.
pub fn dot_tq2(w: &[BlockTq2_0], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    for (b, a) in w.iter().zip(x) {
        let mut sumi = 0i32;
        for g in 0..2 {
            for n in 0..4 {
                for m in 0..32 {
                    let c = ((b.qs[32 * g + m] >> (2 * n)) & 3) as i32 - 1;
                    sumi += c * a.qs[128 * g + 32 * n + m] as i32;
                }
            }
        }
        acc = combine(acc, sumi, b.d.to_f32() * a.d);
    }
    acc
}

/// TQ1_0 row · Q8_K row. Unit: one 256-block.
pub fn dot_tq1(w: &[BlockTq1_0], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    for (b, a) in w.iter().zip(x) {
        let mut sumi = 0i32;
        for n in 0..5 {
            for m in 0..32 {
                sumi += (trit(b.qs[m], n) as i32 - 1) * a.qs[32 * n + m] as i32;
            }
            for m in 0..16 {
                sumi += (trit(b.qs[32 + m], n) as i32 - 1) * a.qs[160 + 16 * n + m] as i32;
            }
        }
        for n in 0..4 {
            for j in 0..4 {
                sumi += (trit(b.qh[j], n) as i32 - 1) * a.qs[240 + 4 * n + j] as i32;
            }
        }
        acc = combine(acc, sumi, b.d.to_f32() * a.d);
    }
    acc
}

/// Q8_0 row · Q8_K row. Unit: one 32-block.
pub fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    for (j, b) in w.iter().enumerate() {
        let a = &x[j / 8];
        let off = (j % 8) * 32;
        let mut sumi = 0i32;
        for m in 0..32 {
            sumi += b.qs[m] as i32 * a.qs[off + m] as i32;
        }
        acc = combine(acc, sumi, b.d.to_f32() * a.d);
    }
    acc
}

/// I2_S row · Q8_K row. Unit: one 256-activation block (two 128-weight blocks, or one for a
/// final half block); the tensor scale multiplies the total.
pub fn dot_i2s(w: &[BlockI2S], scale: f32, x: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    for (pair, a) in w.chunks(2).zip(x) {
        let mut sumi = 0i32;
        for (h, b) in pair.iter().enumerate() {
            for k in 0..4 {
                for j in 0..32 {
                    let c = ((b.qs[j] >> (6 - 2 * k)) & 3) as i32 - 1;
                    sumi += c * a.qs[128 * h + 32 * k + j] as i32;
                }
            }
        }
        acc = combine(acc, sumi, a.d);
    }
    acc * scale
}
