//! bitnet.cpp I2_S (x86 / ACT_PARALLEL layout): 2-bit codes with one f32 scale per tensor.
//!
//! The tensor is flattened row-major and cut into 128-value blocks of 32 bytes. In a block,
//! byte `j` holds value `32k + j` in bits `7-2k .. 6-2k` (k = 0 in the two most significant
//! bits: the reverse of TQ2_0's field order). Code = value + 1. After the `n/4` code bytes come
//! the f32 scale (little-endian) and 28 zero bytes, so a tensor takes `n/4 + 32` bytes.

use super::{amax, check_ternary};
use crate::error::{Error, Result, check_finite, check_len};

/// Bytes after the codes of an I2_S tensor: the f32 scale and 28 zero bytes.
pub const I2S_TAIL_BYTES: usize = 32;

/// Values per I2_S block.
pub const I2S_BLOCK_ELEMS: usize = 128;

/// 32 bytes holding 128 two-bit codes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockI2S {
    /// Four codes per byte, group 0 in the high bits.
    pub qs: [u8; 32],
}

impl BlockI2S {
    /// Packs 128 codes in 0..=3.
    pub(crate) fn from_codes(c: &[u8]) -> Self {
        let mut qs = [0u8; 32];
        for (j, q) in qs.iter_mut().enumerate() {
            for k in 0..4 {
                *q |= (c[32 * k + j] & 3) << (6 - 2 * k);
            }
        }
        BlockI2S { qs }
    }

    /// The stored codes (0..=3) in element order.
    pub(crate) fn codes(&self) -> [u8; 128] {
        let mut out = [0u8; 128];
        for (j, &q) in self.qs.iter().enumerate() {
            for k in 0..4 {
                out[32 * k + j] = (q >> (6 - 2 * k)) & 3;
            }
        }
        out
    }
}

fn blocks_of(n: usize) -> Result<usize> {
    if !n.is_multiple_of(I2S_BLOCK_ELEMS) {
        return Err(Error::NotBlockMultiple {
            what: "i2_s element count",
            format: "i2_s",
            len: n,
            block: I2S_BLOCK_ELEMS,
        });
    }
    Ok(n / I2S_BLOCK_ELEMS)
}

/// bitnet.cpp's `quantize_i2_s`: scale = max|w| over the whole tensor; code 1 where
/// `|w| < 1e-6`, else 2 for positive and 0 for negative values. Meant for weights that are
/// already ternary times one scale (for raw weights use [`crate::quantize_absmean`] first).
pub fn quantize(w: &[f32]) -> Result<(Vec<BlockI2S>, f32)> {
    let nb = blocks_of(w.len())?;
    check_finite("i2_s input", w)?;
    let scale = amax(w);
    let codes: Vec<u8> = w
        .iter()
        .map(|&v| {
            if (v as f64).abs() < 1e-6 {
                1
            } else if v > 0.0 {
                2
            } else {
                0
            }
        })
        .collect();
    let blocks = (0..nb)
        .map(|b| BlockI2S::from_codes(&codes[b * 128..(b + 1) * 128]))
        .collect();
    Ok((blocks, scale))
}

/// Packs ternary codes (-1..=1), flattened row-major, into I2_S blocks.
pub fn pack_codes(codes: &[i8]) -> Result<Vec<BlockI2S>> {
    let nb = blocks_of(codes.len())?;
    check_ternary("i2_s codes", codes)?;
    let mut c = [0u8; 128];
    Ok((0..nb)
        .map(|b| {
            for (dst, &src) in c.iter_mut().zip(&codes[b * 128..(b + 1) * 128]) {
                *dst = (src + 1) as u8;
            }
            BlockI2S::from_codes(&c)
        })
        .collect())
}

/// Unpacks codes (code - 1; a never-written bit pattern 3 reads as +2).
pub fn unpack_codes(blocks: &[BlockI2S], out: &mut [i8]) -> Result<()> {
    check_len("i2_s output", out.len(), blocks.len() * 128, "elements")?;
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(128)) {
        for (o, c) in ob.iter_mut().zip(b.codes()) {
            *o = c as i8 - 1;
        }
    }
    Ok(())
}

/// Dequantizes: `scale * (code - 1)`.
pub fn dequantize(blocks: &[BlockI2S], scale: f32, out: &mut [f32]) -> Result<()> {
    check_len("i2_s output", out.len(), blocks.len() * 128, "elements")?;
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(128)) {
        for (o, c) in ob.iter_mut().zip(b.codes()) {
            *o = (c as i32 - 1) as f32 * scale;
        }
    }
    Ok(())
}

/// The tensor's bytes as stored in GGUF: codes, f32 scale, 28 zero bytes.
pub fn to_bytes(blocks: &[BlockI2S], scale: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.len() * 32 + I2S_TAIL_BYTES);
    out.extend_from_slice(bytemuck::cast_slice(blocks));
    out.extend_from_slice(&scale.to_le_bytes());
    out.resize(blocks.len() * 32 + I2S_TAIL_BYTES, 0);
    out
}

/// Parses a tensor of `n` values from its stored bytes (exactly `n/4 + 32` bytes). The 28
/// padding bytes are not checked: bitnet.cpp never reads them.
pub fn from_bytes(bytes: &[u8], n: usize) -> Result<(Vec<BlockI2S>, f32)> {
    let nb = blocks_of(n)?;
    check_len(
        "i2_s tensor data",
        bytes.len(),
        nb * 32 + I2S_TAIL_BYTES,
        "bytes",
    )?;
    let blocks: Vec<BlockI2S> = bytes[..nb * 32]
        .chunks_exact(32)
        .map(|c| BlockI2S {
            qs: c.try_into().expect("chunks_exact(32)"),
        })
        .collect();
    let scale = f32::from_le_bytes(bytes[nb * 32..nb * 32 + 4].try_into().expect("4 bytes"));
    if !scale.is_finite() {
        return Err(Error::InvalidScale {
            what: "i2_s tensor scale",
            index: 0,
            value: scale,
        });
    }
    Ok((blocks, scale))
}
