//! The 16-row interleaved copy of a TQ2_0 or I2_S matrix that the VNNI kernels read
//! ([`Tiled16`]): the AVX-512 ones a 64-byte line per zmm register, the AVX-VNNI ones each
//! line as two ymm halves of 8 rows.
//!
//! The stored layouts put a row's 256-value unit in 64 consecutive code bytes; a kernel
//! that multiplies one row at a time against the activations must then reduce each unit's
//! 16 `i32` lanes to one sum (the per-unit scales need the exact sum of every unit before
//! it is folded into the row's float accumulator), and those horizontal reductions, not the
//! memory, bounded the row kernels. Here the code bytes of 16 consecutive rows are
//! interleaved four at a time: line `c` of a unit holds dword `c` (code bytes `4c .. 4c+4`)
//! of each of the 16 rows, so lane `i` of a 512-bit register is row `i`. Field `n` of those
//! four bytes (bits `2n`) are four consecutive weights, whose activations are four
//! consecutive bytes of the token's activation block (element `128g + 32k + m'` for code
//! byte `m = 32g + m'` and code field `k`, as in the stored layouts), so one `vpdpbusd`
//! with a broadcast activation dword adds four products to each of 16 rows, and at the end
//! of a unit the 16 lanes are the 16 rows' exact unit sums: no horizontal reduction at all.
//! Rows past the last whole group of 16 are left to the stored-layout kernels.
//!
//! Building the copy is a 16 x 16 dword transpose per unit; it costs about the packed size
//! again in memory (plus 64 bytes of f32 scales per 1,024 code bytes for TQ2_0).

use crate::matrix::{PackedData, PackedMatrix};
use rayon::prelude::*;

/// One 64-byte line: one code dword of each of 16 rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(64))]
pub(crate) struct Line(pub(crate) [u32; 16]);

/// The interleaved copy of the first `16 * groups` rows of a matrix (layout in the
/// [module docs](self)).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tiled16 {
    /// Whole groups of 16 rows.
    pub(crate) groups: usize,
    /// 256-value units per row.
    pub(crate) units: usize,
    /// `groups * units * 16` lines: line `(g * units + u) * 16 + c`.
    pub(crate) lines: Vec<Line>,
    /// TQ2_0: the f32 value of each row's block scale, `(g * units + u) * 16 + i`; empty
    /// for I2_S.
    pub(crate) scales: Vec<f32>,
    /// Whether the codes are I2_S (code field `k` in bits `6 - 2k`) rather than TQ2_0
    /// (field `k` in bits `2k`).
    pub(crate) i2s: bool,
    /// The I2_S tensor scale (1 for TQ2_0).
    pub(crate) tensor_scale: f32,
}

impl Tiled16 {
    /// The interleaved copy of `m`, or `None` when its format is not TQ2_0 or I2_S, its
    /// rows are not 256-value units (I2_S rows of an odd number of 128-blocks) or it has
    /// fewer than 16 rows. Uses the rayon pool it is called in.
    pub(crate) fn build(m: &PackedMatrix) -> Option<Tiled16> {
        let (rows, cols) = (m.rows(), m.cols());
        let groups = rows / 16;
        let covered = matches!(m.data(), PackedData::Tq2_0(_) | PackedData::I2S { .. });
        if groups == 0 || !cols.is_multiple_of(256) || !covered {
            return None;
        }
        let units = cols / 256;
        let mut lines = vec![Line::default(); groups * units * 16];
        // Unit `u` of group `g`: dword `c` of row `16g + i` into lane `i` of line `c`, from
        // the row's 64 code bytes of that unit (`codes(r, u)`).
        let mut transpose = |codes: &(dyn Fn(usize, usize) -> [u8; 64] + Sync)| {
            lines
                .par_chunks_mut(units * 16)
                .enumerate()
                .for_each(|(g, gl)| {
                    for (u, ul) in gl.chunks_exact_mut(16).enumerate() {
                        for i in 0..16 {
                            let q = codes(16 * g + i, u);
                            for (c, line) in ul.iter_mut().enumerate() {
                                line.0[i] = u32::from_le_bytes([
                                    q[4 * c],
                                    q[4 * c + 1],
                                    q[4 * c + 2],
                                    q[4 * c + 3],
                                ]);
                            }
                        }
                    }
                });
        };
        let (scales, i2s, tensor_scale) = match m.data() {
            PackedData::Tq2_0(blocks) => {
                transpose(&|r, u| blocks[r * units + u].qs);
                let mut scales = vec![0f32; groups * units * 16];
                for (j, s) in scales.iter_mut().enumerate() {
                    let (gu, i) = (j / 16, j % 16);
                    let (g, u) = (gu / units, gu % units);
                    *s = blocks[(16 * g + i) * units + u].d.to_f32();
                }
                (scales, false, 1.0)
            }
            PackedData::I2S { blocks, scale } => {
                // A unit is two 128-value blocks of 32 code bytes.
                transpose(&|r, u| {
                    let mut q = [0u8; 64];
                    q[..32].copy_from_slice(&blocks[r * 2 * units + 2 * u].qs);
                    q[32..].copy_from_slice(&blocks[r * 2 * units + 2 * u + 1].qs);
                    q
                });
                (Vec::new(), true, *scale)
            }
            _ => unreachable!("checked above"),
        };
        Some(Tiled16 {
            groups,
            units,
            lines,
            scales,
            i2s,
            tensor_scale,
        })
    }

    /// Rows covered (`16 * groups`).
    pub(crate) fn rows(&self) -> usize {
        16 * self.groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;

    #[test]
    fn lines_hold_one_dword_of_each_of_16_rows() {
        let (rows, cols) = (35, 512);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7 + i / 13) % 3) as f32 - 1.0)
            .collect();
        let m = PackedMatrix::quantize(Format::Tq2_0, &w, rows, cols).unwrap();
        let t = Tiled16::build(&m).unwrap();
        assert_eq!((t.groups, t.units, t.rows()), (2, 2, 32));
        let PackedData::Tq2_0(blocks) = m.data() else {
            unreachable!()
        };
        let (g, u, c, i) = (1, 1, 9, 5);
        let line = t.lines[(g * t.units + u) * 16 + c].0[i];
        let b = &blocks[(16 * g + i) * 2 + u];
        assert_eq!(line.to_le_bytes(), b.qs[4 * c..4 * c + 4]);
        assert_eq!(t.scales[(g * t.units + u) * 16 + i], b.d.to_f32());
        let small = PackedMatrix::quantize(Format::Tq2_0, &w[..15 * cols], 15, cols).unwrap();
        assert!(Tiled16::build(&small).is_none());
        let ragged = PackedMatrix::quantize(Format::I2S, &w[..16 * 384], 16, 384).unwrap();
        assert!(Tiled16::build(&ragged).is_none());
    }
}
