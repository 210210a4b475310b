//! Named full-precision tensors: the one value type that every layer above exchanges
//! (the burn model's latent weights, the packed runtime's inputs, GGUF export / import,
//! DiLoCo's pseudo-gradients and outer steps). It lives here, below both bitnet-model
//! and diloco, so that diloco's burn-free build and bitnet-model share one type and no
//! layer converts between copies of the same struct.
//!
//! ```
//! use ternary_core::tensor::{NamedTensor, WeightMap};
//!
//! let mut w = WeightMap::new();
//! w.insert("blk.0.attn_q.weight".into(), NamedTensor::new(vec![2, 3], vec![0.5; 6])?);
//! w.insert("output_norm.weight".into(), NamedTensor::zeros(vec![3]));
//! assert_eq!(w["blk.0.attn_q.weight"].numel(), 6);
//! assert!(NamedTensor::new(vec![2, 2], vec![0.0; 3]).is_err());
//! # Ok::<(), ternary_core::Error>(())
//! ```

use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// One tensor: row-major f32 values and their shape (`[out, in]` for matrices). Its name
/// is the key it is stored under in a [`WeightMap`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NamedTensor {
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

impl NamedTensor {
    /// A tensor from its shape and values, checking that they agree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::BufferLength {
                what: "tensor values for its shape",
                expected: n,
                actual: data.len(),
                unit: "elements",
            });
        }
        Ok(Self { shape, data })
    }

    /// All zeros.
    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            data: vec![0.0; n],
        }
    }

    /// Number of values.
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// Tensors by name, in name order (so iteration, and every reduction over it, is
/// deterministic).
pub type WeightMap = BTreeMap<String, NamedTensor>;
