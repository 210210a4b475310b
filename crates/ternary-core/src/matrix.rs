//! [`PackedMatrix`]: a whole weight matrix in any packed format, with byte (de)serialisation
//! matching GGUF tensor data.

use crate::error::{Error, Result, check_finite, check_len};
use crate::format::{
    BlockI2S, BlockQ8_0, BlockTq1_0, BlockTq2_0, Format, PackedFormat, Q8_0, Tq1_0, Tq2_0, i2_s,
};
use crate::kernels::lut::LutMatrix;
#[cfg(target_arch = "x86_64")]
use crate::kernels::tiled::Tiled16;
use crate::quant::{Granularity, TernaryWeights};
use std::sync::OnceLock;

/// The blocks of a packed matrix, row-major (row `r` is blocks `r*cols/B .. (r+1)*cols/B`).
#[derive(Debug, Clone, PartialEq)]
pub enum PackedData {
    /// TQ1_0 blocks.
    Tq1_0(Vec<BlockTq1_0>),
    /// TQ2_0 blocks.
    Tq2_0(Vec<BlockTq2_0>),
    /// Q8_0 blocks.
    Q8_0(Vec<BlockQ8_0>),
    /// I2_S blocks of the flattened tensor and the per-tensor scale.
    I2S {
        /// 128-value blocks.
        blocks: Vec<BlockI2S>,
        /// Tensor scale.
        scale: f32,
    },
}

/// A `rows x cols` weight matrix (rows = output features) in a packed format.
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    rows: usize,
    cols: usize,
    data: PackedData,
    /// The lookup-table repacking, built on first use by the `Lut` kernel path.
    lut: OnceLock<LutMatrix>,
    /// The 16-row interleaved copy, built on first use by the AVX-512 VNNI path (`None`
    /// inside when the matrix has no such copy).
    #[cfg(target_arch = "x86_64")]
    tiled: OnceLock<Option<Tiled16>>,
}

impl PartialEq for PackedMatrix {
    /// Equal shape and data; whether a lookup-table copy was built does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.rows == other.rows && self.cols == other.cols && self.data == other.data
    }
}

fn check_shape(format: Format, rows: usize, cols: usize) -> Result<usize> {
    if rows == 0 || cols == 0 {
        return Err(Error::Empty {
            what: "packed matrix",
            rows,
            cols,
        });
    }
    // Kernels address rows by whole blocks, so every format needs block-aligned rows.
    format.row_bytes(cols)?;
    rows.checked_mul(cols).ok_or(Error::Overflow {
        what: "packed matrix",
        rows,
        cols,
    })
}

fn quantize_rows<F: PackedFormat>(w: &[f32], cols: usize) -> Result<Vec<F::Block>> {
    let mut out = vec![<F::Block as bytemuck::Zeroable>::zeroed(); w.len() / F::BLOCK_ELEMS];
    let bpr = cols / F::BLOCK_ELEMS;
    for (row, ob) in w.chunks_exact(cols).zip(out.chunks_exact_mut(bpr)) {
        F::quantize_row(row, ob)?;
    }
    Ok(out)
}

fn pack_rows<F: PackedFormat>(t: &TernaryWeights) -> Result<Vec<F::Block>> {
    let g = t.group_len();
    if !g.is_multiple_of(F::BLOCK_ELEMS) {
        return Err(Error::NotBlockMultiple {
            what: "ternary scale group",
            format: F::FORMAT.name(),
            len: g,
            block: F::BLOCK_ELEMS,
        });
    }
    let mut out = vec![<F::Block as bytemuck::Zeroable>::zeroed(); t.codes.len() / F::BLOCK_ELEMS];
    let bpg = g / F::BLOCK_ELEMS;
    for (i, (codes, ob)) in t
        .codes
        .chunks_exact(g)
        .zip(out.chunks_exact_mut(bpg))
        .enumerate()
    {
        crate::format::check_scale("ternary scale", i, t.scales[i])?;
        F::pack_codes(codes, t.scales[i], ob)?;
    }
    Ok(out)
}

fn cast_blocks<B: bytemuck::Pod>(bytes: &[u8]) -> Vec<B> {
    bytemuck::pod_collect_to_vec(bytes)
}

impl PackedMatrix {
    fn new(rows: usize, cols: usize, data: PackedData) -> Self {
        PackedMatrix {
            rows,
            cols,
            data,
            lut: OnceLock::new(),
            #[cfg(target_arch = "x86_64")]
            tiled: OnceLock::new(),
        }
    }

    /// The lookup-table repacking of this matrix ([`LutMatrix::from_packed`]), built on the
    /// first call and kept (it costs about as much memory as the packed data). Q8_0 errors.
    pub fn lut(&self) -> Result<&LutMatrix> {
        if let Some(l) = self.lut.get() {
            return Ok(l);
        }
        let l = LutMatrix::from_packed(self)?;
        Ok(self.lut.get_or_init(|| l))
    }

    /// The 16-row interleaved copy ([`Tiled16`]) of a TQ2_0 or I2_S matrix with 256-value
    /// rows and at least 16 rows, built on the first call (in the calling rayon pool) and
    /// kept; `None` for other matrices.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn tiled(&self) -> Option<&Tiled16> {
        self.tiled.get_or_init(|| Tiled16::build(self)).as_ref()
    }

    /// The 16-row interleaved copy if an earlier call built it (never builds it).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn tiled_if_built(&self) -> Option<&Tiled16> {
        self.tiled.get().and_then(Option::as_ref)
    }

    /// Quantizes f32 weights with the format's reference quantizer: ggml's for TQ1_0, TQ2_0 and
    /// Q8_0 (per-block max scale), bitnet.cpp's `quantize_i2_s` for I2_S (per-tensor max scale,
    /// sign of each weight; meant for already-ternary weights).
    pub fn quantize(format: Format, w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        let n = check_shape(format, rows, cols)?;
        check_len("packed matrix weights", w.len(), n, "elements")?;
        check_finite("packed matrix weights", w)?;
        let data = match format {
            Format::Tq1_0 => PackedData::Tq1_0(quantize_rows::<Tq1_0>(w, cols)?),
            Format::Tq2_0 => PackedData::Tq2_0(quantize_rows::<Tq2_0>(w, cols)?),
            Format::Q8_0 => PackedData::Q8_0(quantize_rows::<Q8_0>(w, cols)?),
            Format::I2S => {
                let (blocks, scale) = i2_s::quantize(w)?;
                PackedData::I2S { blocks, scale }
            }
        };
        Ok(PackedMatrix::new(rows, cols, data))
    }

    /// Packs absmean ternary codes exactly (no re-quantization). Block formats store each
    /// group's scale (rounded to fp16) in its blocks, so a group must be a whole number of
    /// blocks; I2_S needs one scale for the whole tensor.
    pub fn from_ternary(format: Format, t: &TernaryWeights) -> Result<Self> {
        let n = check_shape(format, t.rows, t.cols)?;
        check_len("ternary codes", t.codes.len(), n, "elements")?;
        let data = match format {
            Format::Tq1_0 => PackedData::Tq1_0(pack_rows::<Tq1_0>(t)?),
            Format::Tq2_0 => PackedData::Tq2_0(pack_rows::<Tq2_0>(t)?),
            Format::Q8_0 => PackedData::Q8_0(pack_rows::<Q8_0>(t)?),
            Format::I2S => {
                let first = t.scales.first().copied().unwrap_or(0.0);
                if t.granularity != Granularity::PerTensor && t.scales.iter().any(|&s| s != first) {
                    return Err(Error::Shape(
                        "i2_s stores one scale per tensor; got several different scales".into(),
                    ));
                }
                crate::format::check_scale("ternary scale", 0, first)?;
                PackedData::I2S {
                    blocks: i2_s::pack_codes(&t.codes)?,
                    scale: first,
                }
            }
        };
        Ok(PackedMatrix::new(t.rows, t.cols, data))
    }

    /// Wraps already-packed blocks after checking their count.
    pub fn from_data(rows: usize, cols: usize, data: PackedData) -> Result<Self> {
        let m = PackedMatrix::new(rows, cols, data);
        let n = check_shape(m.format(), rows, cols)?;
        check_len(
            "packed matrix blocks",
            m.block_count(),
            n / m.format().block_elems(),
            "blocks",
        )?;
        Ok(m)
    }

    /// Parses GGUF tensor data (`format.tensor_bytes(rows, cols)` bytes, copied).
    pub fn from_bytes(format: Format, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        let n = check_shape(format, rows, cols)?;
        check_len(
            "packed tensor data",
            bytes.len(),
            format.tensor_bytes(rows, cols)?,
            "bytes",
        )?;
        let data = match format {
            Format::Tq1_0 => PackedData::Tq1_0(cast_blocks(bytes)),
            Format::Tq2_0 => PackedData::Tq2_0(cast_blocks(bytes)),
            Format::Q8_0 => PackedData::Q8_0(cast_blocks(bytes)),
            Format::I2S => {
                let (blocks, scale) = i2_s::from_bytes(bytes, n)?;
                PackedData::I2S { blocks, scale }
            }
        };
        Ok(PackedMatrix::new(rows, cols, data))
    }

    /// The GGUF tensor data bytes (`format.tensor_bytes(rows, cols)` of them).
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.data {
            PackedData::Tq1_0(b) => bytemuck::cast_slice(b).to_vec(),
            PackedData::Tq2_0(b) => bytemuck::cast_slice(b).to_vec(),
            PackedData::Q8_0(b) => bytemuck::cast_slice(b).to_vec(),
            PackedData::I2S { blocks, scale } => i2_s::to_bytes(blocks, *scale),
        }
    }

    /// Size of [`PackedMatrix::to_bytes`].
    pub fn byte_len(&self) -> usize {
        match &self.data {
            PackedData::I2S { blocks, .. } => blocks.len() * 32 + crate::format::I2S_TAIL_BYTES,
            _ => self.block_count() * self.format().block_bytes(),
        }
    }

    fn block_count(&self) -> usize {
        match &self.data {
            PackedData::Tq1_0(b) => b.len(),
            PackedData::Tq2_0(b) => b.len(),
            PackedData::Q8_0(b) => b.len(),
            PackedData::I2S { blocks, .. } => blocks.len(),
        }
    }

    /// The format.
    pub fn format(&self) -> Format {
        match &self.data {
            PackedData::Tq1_0(_) => Format::Tq1_0,
            PackedData::Tq2_0(_) => Format::Tq2_0,
            PackedData::Q8_0(_) => Format::Q8_0,
            PackedData::I2S { .. } => Format::I2S,
        }
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The blocks.
    pub fn data(&self) -> &PackedData {
        &self.data
    }

    /// Integer codes, row-major (ternary formats: -1..=1; Q8_0: int8).
    pub fn unpack_codes(&self) -> Vec<i8> {
        let mut out = vec![0i8; self.rows * self.cols];
        // Lengths are consistent by construction, so the row functions cannot fail.
        let r = match &self.data {
            PackedData::Tq1_0(b) => Tq1_0::unpack_codes(b, &mut out),
            PackedData::Tq2_0(b) => Tq2_0::unpack_codes(b, &mut out),
            PackedData::Q8_0(b) => Q8_0::unpack_codes(b, &mut out),
            PackedData::I2S { blocks, .. } => i2_s::unpack_codes(blocks, &mut out),
        };
        debug_assert!(r.is_ok());
        out
    }

    /// The f32 values the packed data stands for, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        let r = match &self.data {
            PackedData::Tq1_0(b) => Tq1_0::dequantize_row(b, &mut out),
            PackedData::Tq2_0(b) => Tq2_0::dequantize_row(b, &mut out),
            PackedData::Q8_0(b) => Q8_0::dequantize_row(b, &mut out),
            PackedData::I2S { blocks, scale } => i2_s::dequantize(blocks, *scale, &mut out),
        };
        debug_assert!(r.is_ok());
        out
    }
}
