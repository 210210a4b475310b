//! ggml TQ2_0: 256 ternary values in 66 bytes.
//!
//! Value `e = 128*g + 32*n + m` (g in 0..2, n in 0..4, m in 0..32) is the 2-bit field `n`
//! (field 0 = least significant bits) of byte `qs[32*g + m]`; code = value + 1; the fp16
//! scale `d` follows the 64 code bytes.

use super::{PackedFormat, amax, check_row, check_scale, check_ternary};
use crate::error::{Result, check_finite};
use half::f16;

/// One TQ2_0 block (ggml `block_tq2_0`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTq2_0 {
    /// Four 2-bit codes per byte.
    pub qs: [u8; 64],
    /// Block scale.
    pub d: f16,
}

/// Marker type implementing [`PackedFormat`] for TQ2_0.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tq2_0;

impl BlockTq2_0 {
    /// Packs 256 codes in 0..=3 (value + 1) with a scale.
    pub(crate) fn from_codes(codes: &[u8; 256], d: f16) -> Self {
        let mut qs = [0u8; 64];
        for g in 0..2 {
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    q |= (codes[128 * g + 32 * n + m] & 3) << (2 * n);
                }
                qs[32 * g + m] = q;
            }
        }
        BlockTq2_0 { qs, d }
    }

    /// The 256 stored codes (0..=3), in element order.
    pub(crate) fn codes(&self) -> [u8; 256] {
        let mut out = [0u8; 256];
        for g in 0..2 {
            for n in 0..4 {
                for m in 0..32 {
                    out[128 * g + 32 * n + m] = (self.qs[32 * g + m] >> (2 * n)) & 3;
                }
            }
        }
        out
    }
}

impl PackedFormat for Tq2_0 {
    type Block = BlockTq2_0;
    const FORMAT: super::Format = super::Format::Tq2_0;
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = 66;
    const GGML_TYPE: u32 = 35;

    fn quantize_row(x: &[f32], out: &mut [BlockTq2_0]) -> Result<()> {
        check_row::<Self>(x.len(), out.len(), "tq2_0 output")?;
        check_finite("tq2_0 input", x)?;
        for (xb, ob) in x.chunks_exact(256).zip(out.iter_mut()) {
            // ggml: d = max|x|, id = 1/d computed in f32, code = lroundf(x*id) + 1.
            let d = amax(xb);
            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
            let mut codes = [0u8; 256];
            for (c, &v) in codes.iter_mut().zip(xb) {
                *c = ((v * id).round() as i32 + 1) as u8;
            }
            *ob = BlockTq2_0::from_codes(&codes, f16::from_f32(d));
        }
        Ok(())
    }

    fn dequantize_row(blocks: &[BlockTq2_0], out: &mut [f32]) -> Result<()> {
        check_row::<Self>(out.len(), blocks.len(), "tq2_0 blocks")?;
        for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(256)) {
            let d = b.d.to_f32();
            for (o, c) in ob.iter_mut().zip(b.codes()) {
                *o = (c as i32 - 1) as f32 * d;
            }
        }
        Ok(())
    }

    fn pack_codes(codes: &[i8], scale: f32, out: &mut [BlockTq2_0]) -> Result<()> {
        check_row::<Self>(codes.len(), out.len(), "tq2_0 output")?;
        check_ternary("tq2_0 codes", codes)?;
        check_scale("tq2_0 scale", 0, scale)?;
        let d = f16::from_f32(scale);
        for (cb, ob) in codes.chunks_exact(256).zip(out.iter_mut()) {
            let mut c = [0u8; 256];
            for (dst, &src) in c.iter_mut().zip(cb) {
                *dst = (src + 1) as u8;
            }
            *ob = BlockTq2_0::from_codes(&c, d);
        }
        Ok(())
    }

    fn unpack_codes(blocks: &[BlockTq2_0], out: &mut [i8]) -> Result<()> {
        check_row::<Self>(out.len(), blocks.len(), "tq2_0 blocks")?;
        for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(256)) {
            for (o, c) in ob.iter_mut().zip(b.codes()) {
                *o = c as i8 - 1;
            }
        }
        Ok(())
    }

    fn block_scale(block: &BlockTq2_0) -> f32 {
        block.d.to_f32()
    }
}
