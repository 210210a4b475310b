//! ggml TQ2_0: 256 ternary values in 66 bytes.
//!
//! Value `e = 128*g + 32*n + m` (g in 0..2, n in 0..4, m in 0..32) is the 2-bit field `n`
//! (field 0 = least significant bits) of byte `qs[32*g + m]`; code = value + 1; the fp16
//! scale `d` follows the 64 code bytes.

use super::PackedFormat;
use super::ternary256::{self, Ternary256};
use crate::error::Result;
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

impl Ternary256 for BlockTq2_0 {
    const INPUT: &'static str = "tq2_0 input";
    const OUTPUT: &'static str = "tq2_0 output";
    const BLOCKS: &'static str = "tq2_0 blocks";
    const CODES: &'static str = "tq2_0 codes";
    const SCALE: &'static str = "tq2_0 scale";

    /// Packs 256 codes in 0..=3 (value + 1) with a scale.
    fn from_codes(codes: &[u8; 256], d: f16) -> Self {
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
    fn codes(&self) -> [u8; 256] {
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

    fn scale(&self) -> f16 {
        self.d
    }
}

impl PackedFormat for Tq2_0 {
    type Block = BlockTq2_0;
    const FORMAT: super::Format = super::Format::Tq2_0;
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = 66;
    const GGML_TYPE: u32 = 35;

    fn quantize_row(x: &[f32], out: &mut [BlockTq2_0]) -> Result<()> {
        ternary256::quantize_row::<Self, _>(x, out)
    }

    fn dequantize_row(blocks: &[BlockTq2_0], out: &mut [f32]) -> Result<()> {
        ternary256::dequantize_row::<Self, _>(blocks, out)
    }

    fn pack_codes(codes: &[i8], scale: f32, out: &mut [BlockTq2_0]) -> Result<()> {
        ternary256::pack_codes::<Self, _>(codes, scale, out)
    }

    fn unpack_codes(blocks: &[BlockTq2_0], out: &mut [i8]) -> Result<()> {
        ternary256::unpack_codes::<Self, _>(blocks, out)
    }

    fn block_scale(block: &BlockTq2_0) -> f32 {
        block.d.to_f32()
    }
}
