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

/// The order of the 2-bit codes in an I2_S tensor's `n/4` code bytes, which depends on the
/// bitnet.cpp build that wrote the file (its `quantize_i2_s` in `src/ggml-bitnet-mad.cpp`,
/// microsoft/BitNet `16da220`). Every layout is followed by the same f32 scale and 28 zero
/// bytes. The file does not say which build wrote it, and every layout is a permutation of
/// the same 2-bit fields, so bytes from one read as another give a valid but different
/// ternary matrix: the reader must be told (x86 is what bitnet.cpp's default build and its
/// published GGUF files use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum I2sLayout {
    /// x86 (`ACT_PARALLEL`, the default): the flattened tensor in 128-value blocks of 32
    /// bytes; value `32k + j` of a block in bits `7-2k .. 6-2k` of byte `j`.
    #[default]
    X86,
    /// ARM NEON builds (`QK_I2_S = 64`): 64-value blocks of 16 bytes; value `16k + j` in
    /// bits `7-2k .. 6-2k` of byte `j`.
    Arm,
    /// x86 builds without `ACT_PARALLEL` ("1x4"): rows in groups of four, byte
    /// `g·cols + c` holding column `c` of rows `4g, 4g+1, 4g+2, 4g+3` in bits 7-6, 5-4, 3-2,
    /// 1-0. Needs a multiple of 4 rows.
    Rows1x4,
}

impl I2sLayout {
    /// Every layout, default first.
    pub const ALL: [I2sLayout; 3] = [I2sLayout::X86, I2sLayout::Arm, I2sLayout::Rows1x4];

    /// The name used on command lines: `x86`, `arm`, `1x4`.
    pub fn name(self) -> &'static str {
        match self {
            I2sLayout::X86 => "x86",
            I2sLayout::Arm => "arm",
            I2sLayout::Rows1x4 => "1x4",
        }
    }

    /// The layout named `name` (see [`I2sLayout::name`]), or `None`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }

    /// Checks that a `rows x cols` tensor can be stored in this layout.
    fn check_shape(self, rows: usize, cols: usize) -> Result<usize> {
        let n = rows.checked_mul(cols).ok_or(Error::Overflow {
            what: "i2_s tensor",
            rows,
            cols,
        })?;
        let (what, len, block) = match self {
            I2sLayout::X86 => ("i2_s element count", n, I2S_BLOCK_ELEMS),
            I2sLayout::Arm => ("i2_s (arm) element count", n, 64),
            I2sLayout::Rows1x4 => ("i2_s (1x4) rows", rows, 4),
        };
        if !len.is_multiple_of(block) {
            return Err(Error::NotBlockMultiple {
                what,
                format: "i2_s",
                len,
                block,
            });
        }
        Ok(n)
    }

    /// Byte index and bit shift of the code of element `(r, c)`.
    fn locate(self, cols: usize, r: usize, c: usize) -> (usize, u32) {
        match self {
            I2sLayout::X86 | I2sLayout::Arm => {
                let block = if self == I2sLayout::X86 { 128 } else { 64 };
                let group = block / 4;
                let i = r * cols + c;
                let (b, j) = (i / block, i % block);
                (b * group + j % group, (6 - 2 * (j / group)) as u32)
            }
            I2sLayout::Rows1x4 => ((r / 4) * cols + c, (6 - 2 * (r % 4)) as u32),
        }
    }
}

/// The raw 2-bit codes (0..=3; code = value + 1) of a `rows x cols` tensor, row-major, from
/// its code bytes (at least `rows·cols/4`; the scale after them is not read) in `layout`.
pub fn codes_from_layout(
    bytes: &[u8],
    rows: usize,
    cols: usize,
    layout: I2sLayout,
) -> Result<Vec<u8>> {
    let n = layout.check_shape(rows, cols)?;
    if bytes.len() < n / 4 {
        return Err(Error::BufferLength {
            what: "i2_s code bytes",
            expected: n / 4,
            actual: bytes.len(),
            unit: "bytes",
        });
    }
    let mut out = Vec::with_capacity(n);
    for r in 0..rows {
        for c in 0..cols {
            let (at, shift) = layout.locate(cols, r, c);
            out.push((bytes[at] >> shift) & 3);
        }
    }
    Ok(out)
}

/// A whole I2_S tensor (codes in `layout`, then the f32 scale and 28 zero bytes) of the
/// ternary `codes` (-1..=1, row-major `rows x cols`): what bitnet.cpp's build of that layout
/// writes.
pub fn pack_layout(
    codes: &[i8],
    rows: usize,
    cols: usize,
    scale: f32,
    layout: I2sLayout,
) -> Result<Vec<u8>> {
    let n = layout.check_shape(rows, cols)?;
    check_len("i2_s codes", codes.len(), n, "elements")?;
    check_ternary("i2_s codes", codes)?;
    let mut out = vec![0u8; n / 4 + I2S_TAIL_BYTES];
    for r in 0..rows {
        for c in 0..cols {
            let (at, shift) = layout.locate(cols, r, c);
            out[at] |= ((codes[r * cols + c] + 1) as u8) << shift;
        }
    }
    out[n / 4..n / 4 + 4].copy_from_slice(&scale.to_le_bytes());
    Ok(out)
}

/// Rewrites a whole I2_S tensor (`rows·cols/4` code bytes, scale, padding) stored in
/// `layout` into the x86 layout every other reader here uses; the scale and padding are
/// kept, and any code 3 stays a code 3 (so the caller's validity check still sees it).
pub fn to_x86_layout(bytes: &[u8], rows: usize, cols: usize, layout: I2sLayout) -> Result<Vec<u8>> {
    let n = I2sLayout::X86.check_shape(rows, cols)?;
    let codes = codes_from_layout(bytes, rows, cols, layout)?;
    let mut out = bytes.to_vec();
    out[..n / 4].fill(0);
    for (i, &code) in codes.iter().enumerate() {
        let (at, shift) = I2sLayout::X86.locate(cols, i / cols, i % cols);
        out[at] |= code << shift;
    }
    Ok(out)
}
