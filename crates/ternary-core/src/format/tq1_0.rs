//! ggml TQ1_0: 256 ternary values in 54 bytes (5 trits per byte, base 3).
//!
//! A byte holding trits `t0..t4` (t0 most significant) stores `ceil(v * 256 / 243)` with
//! `v = sum t_k * 3^(4-k)`, so trit `k` is recovered as `((q * 3^k) mod 256) * 3 >> 8`.
//! Elements 0..160 live in `qs[0..32]` (element `32n + m` is trit n of `qs[m]`), elements
//! 160..240 in `qs[32..48]` (element `160 + 16n + m` is trit n of `qs[32 + m]`) and elements
//! 240..256 in `qh[0..4]` (element `240 + 4n + j` is trit n of `qh[j]`, only 4 trits used).

use super::PackedFormat;
use super::ternary256::{self, Ternary256};
use crate::error::Result;
use half::f16;

/// One TQ1_0 block (ggml `block_tq1_0`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockTq1_0 {
    /// Five trits per byte (elements 0..240).
    pub qs: [u8; 48],
    /// Four trits per byte (elements 240..256).
    pub qh: [u8; 4],
    /// Block scale.
    pub d: f16,
}

/// Marker type implementing [`PackedFormat`] for TQ1_0.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tq1_0;

const POW3: [u16; 6] = [1, 3, 9, 27, 81, 243];

/// Packs up to 5 trits (0..=2, most significant first) into one fixed-point byte.
fn pack_trits(trits: impl Iterator<Item = u8>, count: usize) -> u8 {
    let mut v: u16 = 0;
    for t in trits {
        v = v * 3 + t as u16;
    }
    // Shift short groups so the first trit is the most significant of 5.
    for _ in count..5 {
        v *= 3;
    }
    ((v * 256 + 242) / 243) as u8
}

/// Trit `k` (0 = most significant) of a stored byte.
#[inline]
pub(crate) fn trit(q: u8, k: usize) -> u8 {
    let p = (q as u16 * POW3[k]) as u8;
    ((p as u16 * 3) >> 8) as u8
}

impl Ternary256 for BlockTq1_0 {
    const INPUT: &'static str = "tq1_0 input";
    const OUTPUT: &'static str = "tq1_0 output";
    const BLOCKS: &'static str = "tq1_0 blocks";
    const CODES: &'static str = "tq1_0 codes";
    const SCALE: &'static str = "tq1_0 scale";

    /// Packs 256 codes in 0..=2 (value + 1) with a scale.
    fn from_codes(c: &[u8; 256], d: f16) -> Self {
        let mut qs = [0u8; 48];
        let mut qh = [0u8; 4];
        for m in 0..32 {
            qs[m] = pack_trits((0..5).map(|n| c[32 * n + m]), 5);
        }
        for m in 0..16 {
            qs[32 + m] = pack_trits((0..5).map(|n| c[160 + 16 * n + m]), 5);
        }
        for (j, q) in qh.iter_mut().enumerate() {
            *q = pack_trits((0..4).map(|n| c[240 + 4 * n + j]), 4);
        }
        BlockTq1_0 { qs, qh, d }
    }

    /// The 256 stored codes (0..=2), in element order.
    fn codes(&self) -> [u8; 256] {
        let mut out = [0u8; 256];
        for n in 0..5 {
            for m in 0..32 {
                out[32 * n + m] = trit(self.qs[m], n);
            }
            for m in 0..16 {
                out[160 + 16 * n + m] = trit(self.qs[32 + m], n);
            }
        }
        for n in 0..4 {
            for j in 0..4 {
                out[240 + 4 * n + j] = trit(self.qh[j], n);
            }
        }
        out
    }

    fn scale(&self) -> f16 {
        self.d
    }
}

impl PackedFormat for Tq1_0 {
    type Block = BlockTq1_0;
    const FORMAT: super::Format = super::Format::Tq1_0;
    const BLOCK_ELEMS: usize = 256;
    const BLOCK_BYTES: usize = 54;
    const GGML_TYPE: u32 = 34;

    fn quantize_row(x: &[f32], out: &mut [BlockTq1_0]) -> Result<()> {
        ternary256::quantize_row::<Self, _>(x, out)
    }

    fn dequantize_row(blocks: &[BlockTq1_0], out: &mut [f32]) -> Result<()> {
        ternary256::dequantize_row::<Self, _>(blocks, out)
    }

    fn pack_codes(codes: &[i8], scale: f32, out: &mut [BlockTq1_0]) -> Result<()> {
        ternary256::pack_codes::<Self, _>(codes, scale, out)
    }

    fn unpack_codes(blocks: &[BlockTq1_0], out: &mut [i8]) -> Result<()> {
        ternary256::unpack_codes::<Self, _>(blocks, out)
    }

    fn block_scale(block: &BlockTq1_0) -> f32 {
        block.d.to_f32()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_value_round_trips() {
        // All 243 five-trit groups decode to themselves (exhaustive, as in the reference).
        for v in 0u16..243 {
            let digits: Vec<u8> = (0..5).map(|k| ((v / POW3[4 - k]) % 3) as u8).collect();
            let q = pack_trits(digits.iter().copied(), 5);
            for (k, &dg) in digits.iter().enumerate() {
                assert_eq!(trit(q, k), dg, "v={v} k={k}");
            }
        }
    }
}
