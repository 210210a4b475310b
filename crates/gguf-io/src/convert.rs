//! Conversions between f32 values and stored tensor bytes.
//!
//! F32, F16 and BF16 are handled here; the packed formats (Q8_0, TQ1_0, TQ2_0, I2_S) go
//! through `ternary-core`, which owns their byte layouts. Data is always in file element
//! order (row-major with `dims[0]` fastest), and rows never straddle blocks because the row
//! length is a multiple of the block size.

use crate::error::{Error, Result};
use crate::types::GgmlType;
use half::{bf16, f16};

const DATA: &str = "<data>";

/// Dequantizes `n_elements` values of type `ty` stored in `bytes` to f32.
///
/// Supported: F32, F16, BF16, Q8_0, TQ1_0, TQ2_0, I2_S, and (read only) Q4_0, Q4_1, Q5_0,
/// Q5_1, Q4_K, Q5_K, Q6_K, bit-identical to ggml's `dequantize_row_*`. `bytes.len()` must
/// equal the type's size for `n_elements` values.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: u64) -> Result<Vec<f32>> {
    let expected = expected_bytes(ty, n_elements, GgmlType::is_dequantizable)?;
    if bytes.len() as u64 != expected {
        return Err(Error::SizeMismatch {
            name: DATA.into(),
            what: "bytes",
            found: bytes.len() as u64,
            expected,
        });
    }
    let n = usize::try_from(n_elements).map_err(|_| Error::Invalid {
        what: DATA.into(),
        reason: format!("{n_elements} elements do not fit in memory"),
    })?;
    Ok(match ty {
        GgmlType::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4-byte chunk")))
            .collect(),
        GgmlType::F16 => bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        GgmlType::BF16 => bytes
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        _ => match crate::quants::dequantize(ty, bytes, n) {
            Some(values) => values,
            None => crate::packed::dequantize(ty, bytes, n)?,
        },
    })
}

/// Converts f32 values into the stored bytes of type `ty`, with the ggml reference rounding
/// (so the bytes match what llama.cpp's and gguf-py's converters produce):
///
/// - F16: round to nearest even; BF16: round to nearest even, NaN kept quiet.
/// - Q8_0, TQ1_0, TQ2_0: per-block scales as in `quantize_row_*_ref`; `values.len()` must be a
///   multiple of the block size (32 / 256) and the values finite.
/// - I2_S: bitnet.cpp's `quantize_i2_s` (scale = max |w| over the tensor; codes by sign). It
///   is meant for weights that are already ternary times one scale; the element count must
///   be a multiple of 128.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    Ok(match ty {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => crate::packed::quantize(ty, values)?,
    })
}

/// Packs ternary codes (-1, 0, +1; file element order) with one scale into TQ1_0, TQ2_0
/// (the scale, rounded to fp16, is stored in every 256-block) or I2_S (the f32 scale is stored
/// once). This is the exact path for weights that are already ternary, e.g. absmean-quantized
/// BitNet weights: `value = code * scale`. Unlike [`quantize`], an all-zero TQ block keeps
/// `d = scale` instead of 0; both dequantize to zeros.
pub fn pack_ternary(ty: GgmlType, codes: &[i8], scale: f32) -> Result<Vec<u8>> {
    crate::packed::pack_ternary(ty, codes, scale)
}

fn expected_bytes(ty: GgmlType, n_elements: u64, supported: fn(GgmlType) -> bool) -> Result<u64> {
    if !supported(ty) {
        return Err(Error::Unsupported {
            name: DATA.into(),
            ty,
        });
    }
    // The block size divides a valid tensor's row length, hence its element count; data
    // passed in from elsewhere is checked the same way.
    let dims = [n_elements];
    ty.n_bytes(&dims).ok_or_else(|| Error::Invalid {
        what: DATA.into(),
        reason: format!(
            "{n_elements} values are not a whole number of {ty} blocks ({})",
            ty.block_size()
        ),
    })
}

impl Error {
    /// Replaces the `<data>` placeholder in conversion errors with a tensor name.
    pub(crate) fn with_tensor_name(self, tensor: &str) -> Self {
        match self {
            Error::Unsupported { ty, .. } => Error::Unsupported {
                name: tensor.to_owned(),
                ty,
            },
            Error::SizeMismatch {
                what,
                found,
                expected,
                ..
            } => Error::SizeMismatch {
                name: tensor.to_owned(),
                what,
                found,
                expected,
            },
            Error::Ternary { source, .. } => Error::Ternary {
                name: tensor.to_owned(),
                source,
            },
            Error::Invalid { reason, .. } => Error::Invalid {
                what: format!("tensor `{tensor}`"),
                reason,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_round_trips() {
        let x = [0.0f32, -1.5, 3.25, 1024.0, 1e-8, f32::INFINITY];
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            let bytes = quantize(ty, &x).unwrap();
            assert_eq!(bytes.len() as u64, ty.n_bytes(&[x.len() as u64]).unwrap());
            let back = dequantize(ty, &bytes, x.len() as u64).unwrap();
            assert_eq!(back[..4], x[..4], "{ty}");
            assert_eq!(back[5], f32::INFINITY);
        }
        // Round to nearest even at the f16 and bf16 halfway points.
        let f16_tie = 1.0 + 2f32.powi(-11);
        assert_eq!(
            dequantize(
                GgmlType::F16,
                &quantize(GgmlType::F16, &[f16_tie]).unwrap(),
                1
            )
            .unwrap()[0],
            1.0
        );
        let bf16_tie = 1.0 + 2f32.powi(-8);
        assert_eq!(
            dequantize(
                GgmlType::BF16,
                &quantize(GgmlType::BF16, &[bf16_tie]).unwrap(),
                1
            )
            .unwrap()[0],
            1.0
        );
    }

    #[test]
    fn sizes_and_types_are_checked() {
        assert!(matches!(
            dequantize(GgmlType::F16, &[0; 3], 2),
            Err(Error::SizeMismatch { expected: 4, .. })
        ));
        assert!(matches!(
            dequantize(GgmlType::Q2_K, &[0; 84], 256),
            Err(Error::Unsupported { .. })
        ));
    }
}
