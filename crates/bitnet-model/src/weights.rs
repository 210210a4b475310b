//! Named full-precision tensors: the one exchange format between the burn model, the
//! packed CPU runtime, GGUF export / import and DiLoCo's merging.
//!
//! Names and row-major shapes are the canonical ones from
//! [`ModelConfig::tensor_shapes`](crate::config::ModelConfig::tensor_shapes)
//! (llama.cpp `bitnet` names; matrices are `[out, in]`).

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// One tensor (row-major f32 data and its shape) and all tensors of a model by canonical
/// name, in name order: ternary-core's types, shared with diloco (whose `ParamMap` is
/// this same `WeightMap`), so nothing converts between copies of one struct.
pub use ternary_core::tensor::{NamedTensor, WeightMap};

/// Checks that `weights` holds exactly the tensors `config` names, with the right shapes
/// and finite values, naming the first tensor that is wrong.
pub fn validate_weights(config: &ModelConfig, weights: &WeightMap) -> Result<()> {
    let expected = config.tensor_shapes();
    for (name, shape) in &expected {
        let Some(t) = weights.get(name) else {
            return Err(Error::Weights {
                name: name.clone(),
                message: "missing".into(),
            });
        };
        if &t.shape != shape || t.data.len() != shape.iter().product::<usize>() {
            return Err(Error::Weights {
                name: name.clone(),
                message: format!(
                    "shape {:?} with {} values, expected {shape:?}",
                    t.shape,
                    t.data.len()
                ),
            });
        }
        if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::Weights {
                name: name.clone(),
                message: format!("non-finite value {} at index {i}", t.data[i]),
            });
        }
    }
    if let Some(extra) = weights
        .keys()
        .find(|k| !expected.iter().any(|(n, _)| n == *k))
    {
        return Err(Error::Weights {
            name: extra.clone(),
            message: "not a tensor of this architecture".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeros(config: &ModelConfig) -> WeightMap {
        config
            .tensor_shapes()
            .into_iter()
            .map(|(name, shape)| {
                let n = shape.iter().product();
                (
                    name,
                    NamedTensor {
                        shape,
                        data: vec![0.0; n],
                    },
                )
            })
            .collect()
    }

    #[test]
    fn validation_names_the_bad_tensor() {
        let config = ModelConfig::preset("tiny").unwrap();
        let mut w = zeros(&config);
        validate_weights(&config, &w).unwrap();
        w.get_mut("blk.1.attn_k.weight").unwrap().data[3] = f32::NAN;
        let err = validate_weights(&config, &w).unwrap_err().to_string();
        assert!(
            err.contains("blk.1.attn_k.weight") && err.contains("index 3"),
            "{err}"
        );
        w.remove("blk.1.attn_k.weight");
        let err = validate_weights(&config, &w).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
