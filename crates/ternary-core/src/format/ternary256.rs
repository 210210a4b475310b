//! The row functions TQ1_0 and TQ2_0 share.
//!
//! Both formats store 256 ternary values as codes 0..=2 (value + 1) with one fp16 scale, and
//! both quantize like ggml's reference (`d = max|x|`, `code = round(x / d) + 1`); they differ
//! only in how the 256 codes are laid out in the block's bytes. So each format implements
//! [`Ternary256`] (its layout) and forwards its [`super::PackedFormat`] functions here.

use super::{PackedFormat, amax, check_row, check_scale, check_ternary};
use crate::error::{Result, check_finite};
use half::f16;

/// A 256-value block's code layout, and the names its errors use.
pub(crate) trait Ternary256: Copy {
    /// Error labels: the input row, the output blocks, a block row, caller codes and scale.
    const INPUT: &'static str;
    const OUTPUT: &'static str;
    const BLOCKS: &'static str;
    const CODES: &'static str;
    const SCALE: &'static str;

    /// Packs 256 codes (value + 1) with a scale.
    fn from_codes(codes: &[u8; 256], d: f16) -> Self;
    /// The 256 stored codes, in element order.
    fn codes(&self) -> [u8; 256];
    /// The block's fp16 scale.
    fn scale(&self) -> f16;
}

pub(crate) fn quantize_row<F: PackedFormat<Block = B>, B: Ternary256>(
    x: &[f32],
    out: &mut [B],
) -> Result<()> {
    check_row::<F>(x.len(), out.len(), B::OUTPUT)?;
    check_finite(B::INPUT, x)?;
    for (xb, ob) in x.chunks_exact(256).zip(out.iter_mut()) {
        // ggml: d = max|x|, id = 1/d computed in f32, code = lroundf(x*id) + 1.
        let d = amax(xb);
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut codes = [0u8; 256];
        for (c, &v) in codes.iter_mut().zip(xb) {
            *c = ((v * id).round() as i32 + 1) as u8;
        }
        *ob = B::from_codes(&codes, f16::from_f32(d));
    }
    Ok(())
}

pub(crate) fn dequantize_row<F: PackedFormat<Block = B>, B: Ternary256>(
    blocks: &[B],
    out: &mut [f32],
) -> Result<()> {
    check_row::<F>(out.len(), blocks.len(), B::BLOCKS)?;
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(256)) {
        let d = b.scale().to_f32();
        for (o, c) in ob.iter_mut().zip(b.codes()) {
            *o = (i32::from(c) - 1) as f32 * d;
        }
    }
    Ok(())
}

pub(crate) fn pack_codes<F: PackedFormat<Block = B>, B: Ternary256>(
    codes: &[i8],
    scale: f32,
    out: &mut [B],
) -> Result<()> {
    check_row::<F>(codes.len(), out.len(), B::OUTPUT)?;
    check_ternary(B::CODES, codes)?;
    check_scale(B::SCALE, 0, scale)?;
    let d = f16::from_f32(scale);
    for (cb, ob) in codes.chunks_exact(256).zip(out.iter_mut()) {
        let mut c = [0u8; 256];
        for (dst, &src) in c.iter_mut().zip(cb) {
            *dst = (src + 1) as u8;
        }
        *ob = B::from_codes(&c, d);
    }
    Ok(())
}

pub(crate) fn unpack_codes<F: PackedFormat<Block = B>, B: Ternary256>(
    blocks: &[B],
    out: &mut [i8],
) -> Result<()> {
    check_row::<F>(out.len(), blocks.len(), B::BLOCKS)?;
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(256)) {
        for (o, c) in ob.iter_mut().zip(b.codes()) {
            *o = c as i8 - 1;
        }
    }
    Ok(())
}
