//! Conversions between bitnet-model's [`WeightMap`] and [`ParamMap`] (moves the data,
//! no copy of the values).

use crate::params::{ParamMap, Tensor};
use bitnet_model::{NamedTensor, WeightMap};

/// Moves a bitnet-model weight map into a [`ParamMap`].
pub fn from_weights(w: WeightMap) -> ParamMap {
    w.into_iter()
        .map(|(n, t)| {
            (
                n,
                Tensor {
                    shape: t.shape,
                    data: t.data,
                },
            )
        })
        .collect()
}

/// Moves a [`ParamMap`] into a bitnet-model weight map.
pub fn to_weights(p: ParamMap) -> WeightMap {
    p.into_iter()
        .map(|(n, t)| {
            (
                n,
                NamedTensor {
                    shape: t.shape,
                    data: t.data,
                },
            )
        })
        .collect()
}
