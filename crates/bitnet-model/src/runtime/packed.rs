//! The packed CPU model: every projection is a ternary-core [`PackedMatrix`] (I2_S by
//! default, TQ2_0 / TQ1_0 on request) multiplied by per-token int8 activations with
//! integer accumulation; embedding, norms and head stay f32.

use super::model::{Projection, Threads, Transformer};
use super::ops::QUANT_EPS;
use super::reference::kernel_error;
use crate::config::{ModelConfig, WeightKind};
use crate::error::{Error, Result};
use crate::weights::WeightMap;
use std::sync::Arc;
use ternary_core::{
    Engine, Format, Granularity, PackedMatrix, QuantizedActivations, quantize_absmean,
    quantize_per_token,
};

/// How to pack and run a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackOptions {
    /// Weight format of the projections. I2_S keeps the f32 per-tensor scale (exactly the
    /// training forward pass); TQ2_0 / TQ1_0 round it to fp16 in every block.
    pub format: Format,
    /// CPU threads (0 = one per core).
    pub threads: Threads,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            format: Format::I2S,
            threads: Threads(0),
        }
    }
}

/// A packed ternary projection sharing the model's kernel engine.
#[derive(Debug, Clone)]
pub struct PackedProjection {
    matrix: PackedMatrix,
    engine: Arc<Engine>,
}

impl PackedProjection {
    /// Absmean-ternarizes `w` (`[out, in]`, per-tensor scale) and packs it.
    pub fn quantize(
        name: &str,
        w: &[f32],
        out_features: usize,
        in_features: usize,
        format: Format,
        engine: Arc<Engine>,
    ) -> Result<Self> {
        if format == Format::Q8_0 {
            return Err(Error::Inference {
                message: format!("{name}: q8_0 is not a ternary format"),
            });
        }
        let t = quantize_absmean(
            w,
            out_features,
            in_features,
            Granularity::PerTensor,
            QUANT_EPS,
        )
        .map_err(|e| kernel_error(name, e))?;
        let matrix = PackedMatrix::from_ternary(format, &t).map_err(|e| kernel_error(name, e))?;
        Ok(Self { matrix, engine })
    }

    /// The packed matrix.
    pub fn matrix(&self) -> &PackedMatrix {
        &self.matrix
    }
}

impl Projection for PackedProjection {
    type Input = QuantizedActivations;

    fn in_features(&self) -> usize {
        self.matrix.cols()
    }

    fn out_features(&self) -> usize {
        self.matrix.rows()
    }

    fn prepare(&self, x: &[f32], rows: usize) -> Result<QuantizedActivations> {
        let a = quantize_per_token(x, rows, self.matrix.cols())
            .map_err(|e| kernel_error("activations", e))?;
        Ok(QuantizedActivations::from_per_token(&a))
    }

    fn apply(&self, input: &QuantizedActivations, _rows: usize, out: &mut [f32]) -> Result<()> {
        self.engine
            .gemm_quantized(&self.matrix, input, out)
            .map_err(|e| kernel_error("packed projection", e))
    }
}

/// The packed ternary model.
pub type PackedModel = Transformer<PackedProjection>;

impl PackedModel {
    /// Packs a ternary model's latent weights. Full-precision configs are refused (run
    /// them with [`ReferenceModel`](super::ReferenceModel)).
    pub fn from_weights(
        config: &ModelConfig,
        weights: &WeightMap,
        options: PackOptions,
    ) -> Result<Self> {
        if config.weights != WeightKind::Ternary {
            return Err(Error::Inference {
                message: "the packed runtime needs ternary weights; this config is full precision \
                          (use ReferenceModel)"
                    .into(),
            });
        }
        let threads = if options.threads.0 == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        } else {
            options.threads.0
        };
        let engine = Arc::new(Engine::new(threads).map_err(|e| kernel_error("kernel engine", e))?);
        Transformer::build(config, weights, Threads(threads), |name, t| {
            PackedProjection::quantize(
                name,
                &t.data,
                t.shape[0],
                t.shape[1],
                options.format,
                engine.clone(),
            )
        })
    }

    /// Bytes of packed projection weights (what a decode step streams from memory, besides
    /// the f32 embedding and head).
    pub fn packed_bytes(&self) -> usize {
        self.projections().map(|p| p.matrix.byte_len()).sum()
    }
}
