//! Packed formats (Q8_0, TQ1_0, TQ2_0, I2_S) through `ternary-core`.

use crate::error::{Error, Result};
use crate::types::GgmlType;

pub(crate) fn dequantize(ty: GgmlType, _bytes: &[u8], _n: usize) -> Result<Vec<f32>> {
    Err(Error::Unsupported {
        name: "<data>".into(),
        ty,
    })
}

pub(crate) fn quantize(ty: GgmlType, _values: &[f32]) -> Result<Vec<u8>> {
    Err(Error::Unsupported {
        name: "<data>".into(),
        ty,
    })
}
