//! The straightforward f32 model: ternary projections dequantized to `code * scale` and
//! activations fake-quantized to int8 per token (`q / s`), the training graph's forward
//! pass computed with f32 matrix products. It is the correctness reference and the speed
//! baseline of the packed model; with a full-precision config it runs the plain f32 twin.

use super::model::{Projection, Threads, Transformer};
use super::ops::{self, QUANT_EPS};
use crate::config::{ModelConfig, WeightKind};
use crate::error::{Error, Result};
use crate::weights::WeightMap;
use rayon::prelude::*;
use ternary_core::{Granularity, quantize_absmean, quantize_per_token};

/// Maps a ternary-core error to this crate's, naming what was being done.
pub(crate) fn kernel_error(what: &str, e: ternary_core::Error) -> Error {
    Error::Kernel {
        what: what.into(),
        source: e,
    }
}

/// An f32 `[out, in]` matrix, optionally with int8 fake-quantized inputs.
#[derive(Debug, Clone)]
pub struct DenseProjection {
    weights: Vec<f32>,
    out_features: usize,
    in_features: usize,
    quantize_inputs: bool,
}

impl DenseProjection {
    /// The per-tensor absmean ternarization of `w`, dequantized (`code * scale`).
    pub fn ternary(name: &str, w: &[f32], out_features: usize, in_features: usize) -> Result<Self> {
        let t = quantize_absmean(
            w,
            out_features,
            in_features,
            Granularity::PerTensor,
            QUANT_EPS,
        )
        .map_err(|e| kernel_error(name, e))?;
        Ok(Self {
            weights: t.dequantize(),
            out_features,
            in_features,
            quantize_inputs: true,
        })
    }

    /// The matrix as is, with full-precision inputs.
    pub fn full_precision(w: &[f32], out_features: usize, in_features: usize) -> Self {
        Self {
            weights: w.to_vec(),
            out_features,
            in_features,
            quantize_inputs: false,
        }
    }
}

impl Projection for DenseProjection {
    type Input = Vec<f32>;

    fn in_features(&self) -> usize {
        self.in_features
    }

    fn out_features(&self) -> usize {
        self.out_features
    }

    fn prepare(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        if self.quantize_inputs {
            Ok(quantize_per_token(x, rows, self.in_features)
                .map_err(|e| kernel_error("activations", e))?
                .dequantize())
        } else {
            Ok(x.to_vec())
        }
    }

    fn apply(&self, input: &Vec<f32>, rows: usize, out: &mut [f32]) -> Result<()> {
        let (k, m) = (self.in_features, self.out_features);
        for r in 0..rows {
            let x = &input[r * k..(r + 1) * k];
            out[r * m..(r + 1) * m]
                .par_chunks_mut(64)
                .enumerate()
                .for_each(|(chunk, o)| {
                    for (j, v) in o.iter_mut().enumerate() {
                        let row = chunk * 64 + j;
                        *v = ops::dot(x, &self.weights[row * k..(row + 1) * k]);
                    }
                });
        }
        Ok(())
    }

    fn row_granule(&self) -> Option<usize> {
        Some(1)
    }

    fn apply_rows(&self, input: &Vec<f32>, r0: usize, out: &mut [f32]) -> Result<()> {
        let k = self.in_features;
        if input.len() < k || r0 + out.len() > self.out_features {
            return Err(Error::Inference {
                message: format!(
                    "rows {r0}..{} of a {}-row projection for {} inputs",
                    r0 + out.len(),
                    self.out_features,
                    input.len()
                ),
            });
        }
        let x = &input[..k];
        for (j, v) in out.iter_mut().enumerate() {
            let row = r0 + j;
            *v = ops::dot(x, &self.weights[row * k..(row + 1) * k]);
        }
        Ok(())
    }
}

/// The f32 reference model.
pub type ReferenceModel = Transformer<DenseProjection>;

impl ReferenceModel {
    /// Dequantized ternary projections for a ternary config, plain f32 for a
    /// full-precision one.
    pub fn from_weights(
        config: &ModelConfig,
        weights: &WeightMap,
        threads: Threads,
    ) -> Result<Self> {
        let ternary = config.weights == WeightKind::Ternary;
        Transformer::build(config, weights, threads, |name, t| {
            let (out, inp) = (t.shape[0], t.shape[1]);
            if ternary {
                DenseProjection::ternary(name, &t.data, out, inp)
            } else {
                Ok(DenseProjection::full_precision(&t.data, out, inp))
            }
        })
    }
}
