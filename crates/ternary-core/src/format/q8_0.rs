//! ggml Q8_0: 32 int8 values and an fp16 scale (stored first) in 34 bytes.

use super::{PackedFormat, amax, check_row, check_scale};
use crate::error::{Error, Result, check_finite};
use half::f16;

/// One Q8_0 block (ggml `block_q8_0`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// Block scale.
    pub d: f16,
    /// Codes.
    pub qs: [i8; 32],
}

/// Marker type implementing [`PackedFormat`] for Q8_0.
#[derive(Debug, Clone, Copy, Default)]
pub struct Q8_0;

impl PackedFormat for Q8_0 {
    type Block = BlockQ8_0;
    const FORMAT: super::Format = super::Format::Q8_0;
    const BLOCK_ELEMS: usize = 32;
    const BLOCK_BYTES: usize = 34;
    const GGML_TYPE: u32 = 8;

    fn quantize_row(x: &[f32], out: &mut [BlockQ8_0]) -> Result<()> {
        check_row::<Self>(x.len(), out.len(), "q8_0 output")?;
        check_finite("q8_0 input", x)?;
        for (xb, ob) in x.chunks_exact(32).zip(out.iter_mut()) {
            // ggml: d = amax/127 in f32; the codes use the f32 d, storage rounds it to fp16.
            let d = amax(xb) / 127.0;
            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
            let mut qs = [0i8; 32];
            for (q, &v) in qs.iter_mut().zip(xb) {
                *q = (v * id).round() as i8;
            }
            *ob = BlockQ8_0 {
                d: f16::from_f32(d),
                qs,
            };
        }
        Ok(())
    }

    fn dequantize_row(blocks: &[BlockQ8_0], out: &mut [f32]) -> Result<()> {
        check_row::<Self>(out.len(), blocks.len(), "q8_0 blocks")?;
        for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            let d = b.d.to_f32();
            for (o, &q) in ob.iter_mut().zip(&b.qs) {
                *o = q as f32 * d;
            }
        }
        Ok(())
    }

    fn pack_codes(codes: &[i8], scale: f32, out: &mut [BlockQ8_0]) -> Result<()> {
        check_row::<Self>(codes.len(), out.len(), "q8_0 output")?;
        if let Some(index) = codes.iter().position(|&c| c == i8::MIN) {
            // -128 has no positive twin; ggml never writes it and the kernels assume |q| <= 127.
            return Err(Error::InvalidCode {
                what: "q8_0 codes",
                index,
                code: i8::MIN,
            });
        }
        check_scale("q8_0 scale", 0, scale)?;
        let d = f16::from_f32(scale);
        for (cb, ob) in codes.chunks_exact(32).zip(out.iter_mut()) {
            let mut qs = [0i8; 32];
            qs.copy_from_slice(cb);
            *ob = BlockQ8_0 { d, qs };
        }
        Ok(())
    }

    fn unpack_codes(blocks: &[BlockQ8_0], out: &mut [i8]) -> Result<()> {
        check_row::<Self>(out.len(), blocks.len(), "q8_0 blocks")?;
        for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            ob.copy_from_slice(&b.qs);
        }
        Ok(())
    }

    fn block_scale(block: &BlockQ8_0) -> f32 {
        block.d.to_f32()
    }
}
