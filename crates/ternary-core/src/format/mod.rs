//! Packed weight formats, byte-identical to ggml (TQ1_0, TQ2_0, Q8_0) and bitnet.cpp (I2_S).
//!
//! The block formats (TQ1_0, TQ2_0, Q8_0) carry one fp16 scale per block and implement
//! [`PackedFormat`]: generic code can quantize, pack, unpack and dequantize rows of any of them.
//! I2_S has one f32 scale for the whole tensor, so it lives in [`i2_s`] with tensor-level
//! functions. [`crate::PackedMatrix`] wraps all four behind one type with whole-tensor byte
//! (de)serialisation, and [`Format`] gives byte sizes without any data.

pub mod i2_s;
pub mod q8_0;
mod ternary256;
pub mod tq1_0;
pub mod tq2_0;

pub use i2_s::{BlockI2S, I2S_TAIL_BYTES, I2sLayout};
pub use q8_0::{BlockQ8_0, Q8_0};
pub use tq1_0::{BlockTq1_0, Tq1_0};
pub use tq2_0::{BlockTq2_0, Tq2_0};

use crate::error::{Error, Result};

/// The packed formats this crate reads, writes and multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// ggml TQ1_0: 256 ternary values in 54 bytes (base-3 packing, fp16 block scale).
    Tq1_0,
    /// ggml TQ2_0: 256 ternary values in 66 bytes (2-bit codes, fp16 block scale).
    Tq2_0,
    /// bitnet.cpp I2_S (x86 layout): 128 values per 32 bytes, one f32 scale per tensor.
    I2S,
    /// ggml Q8_0: 32 int8 values and an fp16 scale in 34 bytes.
    Q8_0,
}

impl Format {
    /// All formats, in a fixed order.
    pub const ALL: [Format; 4] = [Format::Tq1_0, Format::Tq2_0, Format::I2S, Format::Q8_0];

    /// Lower-case name as used by llama.cpp tools ("tq1_0", "tq2_0", "i2_s", "q8_0").
    pub fn name(self) -> &'static str {
        match self {
            Format::Tq1_0 => "tq1_0",
            Format::Tq2_0 => "tq2_0",
            Format::I2S => "i2_s",
            Format::Q8_0 => "q8_0",
        }
    }

    /// Parses [`Format::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The GGUF `ggml_type` id. I2_S's 36 is bitnet.cpp's fork id (dead in mainline ggml).
    pub fn ggml_type(self) -> u32 {
        match self {
            Format::Tq1_0 => 34,
            Format::Tq2_0 => 35,
            Format::I2S => 36,
            Format::Q8_0 => 8,
        }
    }

    /// Inverse of [`Format::ggml_type`].
    pub fn from_ggml_type(id: u32) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.ggml_type() == id)
    }

    /// Values per block (256, 256, 128, 32).
    pub fn block_elems(self) -> usize {
        match self {
            Format::Tq1_0 | Format::Tq2_0 => 256,
            Format::I2S => 128,
            Format::Q8_0 => 32,
        }
    }

    /// Bytes per block (54, 66, 32, 34). For I2_S the per-tensor tail is extra.
    pub fn block_bytes(self) -> usize {
        match self {
            Format::Tq1_0 => 54,
            Format::Tq2_0 => 66,
            Format::I2S => 32,
            Format::Q8_0 => 34,
        }
    }

    /// Bytes of one packed row of `n` values. `n` must be a multiple of the block size
    /// (for I2_S this is the row's share of the data, without the tensor tail).
    pub fn row_bytes(self, n: usize) -> Result<usize> {
        let block = self.block_elems();
        if !n.is_multiple_of(block) {
            return Err(Error::NotBlockMultiple {
                what: "row length",
                format: self.name(),
                len: n,
                block,
            });
        }
        Ok(n / block * self.block_bytes())
    }

    /// Bytes of a whole `rows x cols` tensor as stored in GGUF tensor data (before alignment
    /// padding). For block formats `cols` must be a multiple of the block; for I2_S the element
    /// count must be a multiple of 128 and the size is `n/4 + 32` (codes, f32 scale, 28 zeros).
    pub fn tensor_bytes(self, rows: usize, cols: usize) -> Result<usize> {
        let overflow = || Error::Overflow {
            what: "tensor",
            rows,
            cols,
        };
        match self {
            Format::I2S => {
                let n = rows.checked_mul(cols).ok_or_else(overflow)?;
                if n % 128 != 0 {
                    return Err(Error::NotBlockMultiple {
                        what: "tensor element count",
                        format: self.name(),
                        len: n,
                        block: 128,
                    });
                }
                (n / 4).checked_add(I2S_TAIL_BYTES).ok_or_else(overflow)
            }
            _ => rows.checked_mul(self.row_bytes(cols)?).ok_or_else(overflow),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A block format with one scale per block (TQ1_0, TQ2_0, Q8_0).
///
/// Rows are slices of `Self::Block`; a row of `n` values is `n / BLOCK_ELEMS` blocks. All
/// functions check lengths and return typed errors instead of panicking.
pub trait PackedFormat {
    /// The `#[repr(C)]` block, exactly `BLOCK_BYTES` bytes, castable with bytemuck.
    type Block: bytemuck::Pod + std::fmt::Debug + PartialEq;
    /// The runtime tag of this format.
    const FORMAT: Format;
    /// Values per block.
    const BLOCK_ELEMS: usize;
    /// Bytes per block.
    const BLOCK_BYTES: usize;
    /// GGUF `ggml_type` id.
    const GGML_TYPE: u32;

    /// The ggml reference quantizer (`quantize_row_*_ref`) for one row, bit-exact with ggml
    /// and gguf-py. `out.len()` must be `x.len() / BLOCK_ELEMS`; values must be finite.
    fn quantize_row(x: &[f32], out: &mut [Self::Block]) -> Result<()>;

    /// The values a block row stands for: `code * scale`, as ggml dequantizes them.
    fn dequantize_row(blocks: &[Self::Block], out: &mut [f32]) -> Result<()>;

    /// Packs integer codes with one shared `scale` (stored in every block, rounded to fp16).
    /// Ternary formats accept codes in -1..=1; Q8_0 accepts -127..=127.
    fn pack_codes(codes: &[i8], scale: f32, out: &mut [Self::Block]) -> Result<()>;

    /// Unpacks the integer codes of a block row (ternary formats give -1..=1, except that a
    /// TQ2_0 bit pattern 3, never produced by quantizers, reads as +2 like in ggml).
    fn unpack_codes(blocks: &[Self::Block], out: &mut [i8]) -> Result<()>;

    /// The scale of one block as f32.
    fn block_scale(block: &Self::Block) -> f32;

    /// Convenience: quantizes a row into a new vector.
    fn quantize_row_vec(x: &[f32]) -> Result<Vec<Self::Block>> {
        let n = blocks_for::<Self>(x.len())?;
        let mut out = vec![<Self::Block as bytemuck::Zeroable>::zeroed(); n];
        Self::quantize_row(x, &mut out)?;
        Ok(out)
    }
}

/// Number of blocks for `n` values of format `F`, or a typed error.
pub(crate) fn blocks_for<F: PackedFormat + ?Sized>(n: usize) -> Result<usize> {
    if !n.is_multiple_of(F::BLOCK_ELEMS) {
        return Err(Error::NotBlockMultiple {
            what: "row length",
            format: F::FORMAT.name(),
            len: n,
            block: F::BLOCK_ELEMS,
        });
    }
    Ok(n / F::BLOCK_ELEMS)
}

/// Checks that `values` and `blocks` describe the same row.
pub(crate) fn check_row<F: PackedFormat + ?Sized>(
    values: usize,
    blocks: usize,
    what: &'static str,
) -> Result<()> {
    let need = blocks_for::<F>(values)?;
    crate::error::check_len(what, blocks, need, "blocks")
}

/// Checks that every code is ternary.
pub(crate) fn check_ternary(what: &'static str, codes: &[i8]) -> Result<()> {
    match codes.iter().position(|c| !(-1..=1).contains(c)) {
        Some(index) => Err(Error::InvalidCode {
            what,
            index,
            code: codes[index],
        }),
        None => Ok(()),
    }
}

/// Checks a scale given by the caller.
pub(crate) fn check_scale(what: &'static str, index: usize, value: f32) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidScale { what, index, value })
    }
}

/// max |x| over a slice (0 for an empty slice).
pub(crate) fn amax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_ggml() {
        assert_eq!(std::mem::size_of::<BlockTq1_0>(), 54);
        assert_eq!(std::mem::size_of::<BlockTq2_0>(), 66);
        assert_eq!(std::mem::size_of::<BlockQ8_0>(), 34);
        assert_eq!(std::mem::size_of::<BlockI2S>(), 32);
        for f in Format::ALL {
            assert_eq!(Format::from_ggml_type(f.ggml_type()), Some(f));
            assert_eq!(Format::from_name(f.name()), Some(f));
        }
        assert_eq!(Format::Tq2_0.row_bytes(512).unwrap(), 132);
        assert_eq!(Format::Tq1_0.tensor_bytes(4, 512).unwrap(), 4 * 108);
        assert_eq!(
            Format::I2S.tensor_bytes(2560, 2560).unwrap(),
            2560 * 2560 / 4 + 32
        );
        assert!(matches!(
            Format::Tq2_0.row_bytes(100),
            Err(Error::NotBlockMultiple { len: 100, .. })
        ));
        assert!(matches!(
            Format::I2S.tensor_bytes(3, 3),
            Err(Error::NotBlockMultiple { len: 9, .. })
        ));
        assert!(matches!(
            Format::Q8_0.tensor_bytes(usize::MAX, 32),
            Err(Error::Overflow { .. })
        ));
    }
}
