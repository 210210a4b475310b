//! Packed formats (Q8_0, TQ1_0, TQ2_0, I2_S) through `ternary-core`, which owns their byte
//! layouts; this module only adapts between GGUF tensor bytes and its block types.

use crate::error::{Error, Result};
use crate::types::GgmlType;
use std::borrow::Cow;
use ternary_core::format::{PackedFormat, Q8_0, Tq1_0, Tq2_0, i2_s};

pub(crate) fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    match ty {
        GgmlType::Q8_0 => dequantize_blocks::<Q8_0>(bytes, n),
        GgmlType::TQ1_0 => dequantize_blocks::<Tq1_0>(bytes, n),
        GgmlType::TQ2_0 => dequantize_blocks::<Tq2_0>(bytes, n),
        GgmlType::I2_S => {
            let (blocks, scale) = i2_s::from_bytes(bytes, n)?;
            let mut out = vec![0.0; n];
            i2_s::dequantize(&blocks, scale, &mut out)?;
            Ok(out)
        }
        _ => Err(unsupported(ty)),
    }
}

pub(crate) fn quantize(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    match ty {
        GgmlType::Q8_0 => quantize_blocks::<Q8_0>(values),
        GgmlType::TQ1_0 => quantize_blocks::<Tq1_0>(values),
        GgmlType::TQ2_0 => quantize_blocks::<Tq2_0>(values),
        GgmlType::I2_S => {
            let (blocks, scale) = i2_s::quantize(values)?;
            Ok(i2_s::to_bytes(&blocks, scale))
        }
        _ => Err(unsupported(ty)),
    }
}

pub(crate) fn pack_ternary(ty: GgmlType, codes: &[i8], scale: f32) -> Result<Vec<u8>> {
    match ty {
        GgmlType::TQ1_0 => pack_blocks::<Tq1_0>(codes, scale),
        GgmlType::TQ2_0 => pack_blocks::<Tq2_0>(codes, scale),
        GgmlType::I2_S => {
            if !scale.is_finite() || scale < 0.0 {
                return Err(Error::Invalid {
                    what: "<data>".into(),
                    reason: format!("I2_S scale {scale} must be finite and non-negative"),
                });
            }
            Ok(i2_s::to_bytes(&i2_s::pack_codes(codes)?, scale))
        }
        _ => Err(unsupported(ty)),
    }
}

fn unsupported(ty: GgmlType) -> Error {
    Error::Unsupported {
        name: "<data>".into(),
        ty,
    }
}

/// The bytes as blocks: borrowed when the memory happens to be aligned for the block type
/// (which holds an fp16), copied otherwise.
fn blocks<F: PackedFormat>(bytes: &[u8]) -> Cow<'_, [F::Block]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(b) => Cow::Borrowed(b),
        Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(bytes)),
    }
}

fn dequantize_blocks<F: PackedFormat>(bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let mut out = vec![0.0; n];
    // Blocks are independent, so the whole tensor dequantizes as one long row.
    F::dequantize_row(&blocks::<F>(bytes), &mut out)?;
    Ok(out)
}

fn quantize_blocks<F: PackedFormat>(values: &[f32]) -> Result<Vec<u8>> {
    Ok(bytemuck::cast_slice(&F::quantize_row_vec(values)?).to_vec())
}

fn pack_blocks<F: PackedFormat>(codes: &[i8], scale: f32) -> Result<Vec<u8>> {
    let n_blocks = codes.len() / F::BLOCK_ELEMS;
    let mut out = vec![<F::Block as bytemuck::Zeroable>::zeroed(); n_blocks];
    F::pack_codes(codes, scale, &mut out)?;
    Ok(bytemuck::cast_slice(&out).to_vec())
}
