//! The packed CPU model: every projection is a ternary-core [`PackedMatrix`] (I2_S by
//! default, TQ2_0 / TQ1_0 on request) multiplied by per-token int8 activations with
//! integer accumulation; embedding, norms and head stay f32.

use super::model::{KvPrecision, Projection, Threads, Transformer};
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
    /// Multiplies the output (llama.cpp's optional `blk.N.<proj>.scale`; 1 otherwise).
    post_scale: f32,
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
        Ok(Self::from_matrix(matrix, engine, 1.0))
    }

    /// Wraps an already-packed matrix (`[out, in]`), its output multiplied by `post_scale`.
    pub fn from_matrix(matrix: PackedMatrix, engine: Arc<Engine>, post_scale: f32) -> Self {
        Self {
            matrix,
            engine,
            post_scale,
        }
    }

    fn finish(&self, out: &mut [f32]) {
        if self.post_scale != 1.0 {
            for v in out.iter_mut() {
                *v *= self.post_scale;
            }
        }
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
            .map_err(|e| kernel_error("packed projection", e))?;
        self.finish(out);
        Ok(())
    }

    fn row_granule(&self) -> Option<usize> {
        self.engine
            .supports_gemv_rows(&self.matrix)
            .then_some(Engine::ROW_GRANULE)
    }

    fn apply_rows(&self, input: &QuantizedActivations, r0: usize, out: &mut [f32]) -> Result<()> {
        self.engine
            .gemv_rows(&self.matrix, input, r0, out)
            .map_err(|e| kernel_error("packed projection rows", e))?;
        self.finish(out);
        Ok(())
    }

    fn apply_many(
        parts: &mut [(&Self, &mut [f32])],
        input: &QuantizedActivations,
        _rows: usize,
    ) -> Result<()> {
        let Some(engine) = parts.first().map(|(p, _)| p.engine.clone()) else {
            return Ok(());
        };
        let mut jobs: Vec<(&PackedMatrix, &mut [f32])> = parts
            .iter_mut()
            .map(|(p, o)| (&p.matrix, &mut **o))
            .collect();
        engine
            .gemm_many(&mut jobs, input)
            .map_err(|e| kernel_error("packed projections", e))?;
        for (p, o) in parts.iter_mut() {
            p.finish(o);
        }
        Ok(())
    }
}

/// The packed ternary model.
pub type PackedModel = Transformer<PackedProjection>;

/// The thread count (0 = one per core) and a kernel engine that runs in the model's one
/// rayon pool (the model installs it once per forward pass).
pub(crate) fn engine_for(threads: Threads) -> Result<(usize, Arc<Engine>)> {
    let threads = if threads.0 == 0 {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    } else {
        threads.0
    };
    let engine = Engine::in_current_pool(threads).map_err(|e| kernel_error("kernel engine", e))?;
    Ok((threads, Arc::new(engine)))
}

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
        let (threads, engine) = engine_for(options.threads)?;
        Ok(
            Transformer::build(config, weights, Threads(threads), |name, t| {
                PackedProjection::quantize(
                    name,
                    &t.data,
                    t.shape[0],
                    t.shape[1],
                    options.format,
                    engine.clone(),
                )
            })?
            .with_kv_precision(KvPrecision::F16),
        )
    }

    /// Bytes of packed projection weights (what a decode step streams from memory, besides
    /// the f32 embedding and head).
    pub fn packed_bytes(&self) -> usize {
        self.projections().map(|p| p.matrix.byte_len()).sum()
    }
}
