//! Loading a [`PackedModel`] straight from a GGUF file: ternary projections (TQ1_0, TQ2_0,
//! I2_S) are taken as stored (their bytes copied out of `gguf-io`'s memory map into the
//! kernels' block arrays, no f32 round trip and no re-quantization), embeddings, head and
//! norms dequantized once from whatever type `gguf-io` reads (F32, F16, BF16, Q8_0,
//! K-quants...). Projections stored in a float type are ternarized as the training forward
//! pass does (values that are already `{-s, 0, +s}` keep exactly their codes and `s`).
//!
//! A hostile header cannot make the loader allocate without bound: every tensor's shape
//! must equal what the metadata implies before its data is touched (and `gguf-io` has
//! already checked that the data lies inside the file), the layer count must fit the
//! tensor count, the context length is capped ([`MAX_CONTEXT`]) and the KV cache and RoPE
//! tables grow with the positions actually used, not with the declared context.

use super::model::{KvPrecision, Threads, Transformer};
use super::ops::QUANT_EPS;
use super::packed::{PackedModel, PackedProjection, engine_for};
use crate::error::{Error, Result};
pub use crate::export::import::gguf_config;
use crate::export::import::ternary_with_one_scale;
use gguf_io::{GgmlType, GgufFile, TensorView};
use std::path::Path;
use ternary_core::{Format, Granularity, PackedMatrix, TernaryWeights, quantize_absmean};

pub use crate::export::import::MAX_CONTEXT;

/// What [`PackedModel::from_gguf`] read besides the model.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufLoad {
    /// `general.architecture`.
    pub architecture: String,
    /// Projections per storage type name (e.g. `[("i2_s", 168)]`).
    pub projection_types: Vec<(String, usize)>,
    /// Bytes of packed projection weights taken from the file.
    pub packed_bytes: usize,
}

/// Errors naming the file.
struct Keys<'a> {
    path: &'a Path,
}

impl Keys<'_> {
    fn fail(&self, message: String) -> Error {
        Error::Import {
            path: self.path.display().to_string(),
            message,
        }
    }

    fn gguf(&self, source: gguf_io::Error) -> Error {
        Error::Gguf {
            path: self.path.display().to_string(),
            source,
        }
    }
}

impl PackedModel {
    /// Opens a GGUF file and builds the packed model from it (see the [module docs](self)).
    pub fn from_gguf(path: impl AsRef<Path>, threads: Threads) -> Result<(PackedModel, GgufLoad)> {
        let path = path.as_ref();
        let file = GgufFile::open(path).map_err(|source| Error::Gguf {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_gguf_file(&file, threads)
    }

    /// Builds the packed model from an open GGUF file.
    pub fn from_gguf_file(file: &GgufFile, threads: Threads) -> Result<(PackedModel, GgufLoad)> {
        let (architecture, config) = gguf_config(file)?;
        let keys = Keys { path: file.path() };
        let shapes = config.tensor_shapes();
        let view = |name: &str| -> Result<TensorView<'_>> {
            let shape = &shapes
                .iter()
                .find(|(n, _)| n == name)
                .expect("canonical names only")
                .1;
            let v = file.tensor(name).map_err(|e| keys.gguf(e))?;
            let dims: Vec<usize> = v.dims().iter().rev().map(|&d| d as usize).collect();
            if &dims != shape {
                return Err(keys.fail(format!(
                    "tensor {name} has shape {dims:?}, the metadata implies {shape:?}"
                )));
            }
            Ok(v)
        };
        let (_, engine) = engine_for(threads)?;
        let threads = Threads(engine.threads());
        let mut types: Vec<(String, usize)> = Vec::new();
        let mut packed_bytes = 0;
        let model = Transformer::assemble(
            &config,
            threads,
            |name| {
                let v = view(name)?;
                let data = v.to_f32().map_err(|e| keys.gguf(e))?;
                if let Some(i) = data.iter().position(|x| !x.is_finite()) {
                    return Err(
                        keys.fail(format!("tensor {name}: non-finite value at element {i}"))
                    );
                }
                Ok(data)
            },
            |name| {
                let v = view(name)?;
                let post_scale = projection_scale(file, name, &keys)?;
                let matrix = projection_matrix(&v, name, &keys)?;
                let ty = v.ty().name().to_ascii_lowercase();
                match types.iter_mut().find(|(t, _)| *t == ty) {
                    Some((_, n)) => *n += 1,
                    None => types.push((ty, 1)),
                }
                packed_bytes += matrix.byte_len();
                Ok(PackedProjection::from_matrix(
                    matrix,
                    engine.clone(),
                    post_scale,
                ))
            },
        )?
        .with_kv_precision(KvPrecision::F16);
        Ok((
            model,
            GgufLoad {
                architecture,
                projection_types: types,
                packed_bytes,
            },
        ))
    }
}

/// One projection's packed matrix: ternary types as stored, float types ternarized.
fn projection_matrix(v: &TensorView<'_>, name: &str, keys: &Keys<'_>) -> Result<PackedMatrix> {
    let dims = v.dims();
    let (rows, cols) = (dims[1] as usize, dims[0] as usize);
    let err = |source: ternary_core::Error| Error::Kernel {
        what: format!("GGUF `{}`: tensor {name}", keys.path.display()),
        source,
    };
    let format = match v.ty() {
        GgmlType::TQ1_0 => Some(Format::Tq1_0),
        GgmlType::TQ2_0 => Some(Format::Tq2_0),
        GgmlType::I2_S => Some(Format::I2S),
        _ => None,
    };
    if let Some(format) = format {
        if format == Format::I2S && !cols.is_multiple_of(128) {
            return Err(keys.fail(format!(
                "tensor {name}: I2_S rows of {cols} values are not whole 128-value blocks"
            )));
        }
        let m = PackedMatrix::from_bytes(format, rows, cols, v.data()).map_err(err)?;
        if let ternary_core::PackedData::I2S { scale, .. } = m.data()
            && !(scale.is_finite() && *scale >= 0.0)
        {
            return Err(keys.fail(format!(
                "tensor {name}: I2_S scale {scale} is not a finite non-negative number"
            )));
        }
        return Ok(m);
    }
    let values = v.to_f32().map_err(|e| keys.gguf(e))?;
    if let Some(i) = values.iter().position(|x| !x.is_finite()) {
        return Err(keys.fail(format!("tensor {name}: non-finite value at element {i}")));
    }
    let t = match ternary_with_one_scale(&values) {
        Some((codes, s)) => TernaryWeights {
            rows,
            cols,
            codes,
            scales: vec![s],
            granularity: Granularity::PerTensor,
        },
        None => {
            quantize_absmean(&values, rows, cols, Granularity::PerTensor, QUANT_EPS).map_err(err)?
        }
    };
    PackedMatrix::from_ternary(Format::I2S, &t).map_err(err)
}

/// llama.cpp's optional `blk.N.<proj>.scale` (one value multiplying the projection).
fn projection_scale(file: &GgufFile, name: &str, keys: &Keys<'_>) -> Result<f32> {
    let scale_name = name.replace(".weight", ".scale");
    if file.tensor_info(&scale_name).is_none() {
        return Ok(1.0);
    }
    let v = file.tensor(&scale_name).map_err(|e| keys.gguf(e))?;
    if v.info().n_elements() != 1 {
        return Err(keys.fail(format!("tensor {scale_name} must hold one value")));
    }
    match v.to_f32().map_err(|e| keys.gguf(e))?.as_slice() {
        [s] if s.is_finite() && *s >= 0.0 => Ok(*s),
        other => Err(keys.fail(format!(
            "tensor {scale_name} must hold one finite non-negative value, holds {other:?}"
        ))),
    }
}
