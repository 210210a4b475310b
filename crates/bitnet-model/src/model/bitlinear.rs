//! `BitLinear`: a bias-free linear layer whose forward pass uses absmean ternary weights and
//! per-token absmax int8 activations, with straight-through estimators so that the latent
//! full-precision weights receive the identity gradient.

use burn::module::{Param, ParamId};
use burn::prelude::*;
use burn::tensor::TensorData;

/// Smallest scale either quantizer divides by (the BitNet FAQ's clamp).
pub const QUANT_EPS: f64 = 1e-5;

/// Absmean ternary quantization with a straight-through estimator.
///
/// Forward: `round_clip(w / mean|w|, -1, 1) * mean|w|`; backward: identity.
pub fn ternary_ste(w: Tensor<2>) -> Tensor<2> {
    let scale = w.clone().abs().mean().clamp_min(QUANT_EPS).unsqueeze::<2>();
    let wq = (w.clone() / scale.clone()).round().clamp(-1.0, 1.0) * scale;
    w.clone() + (wq - w).detach()
}

/// Per-token (last dimension) absmax int8 activation quantization with a
/// straight-through estimator.
pub fn act_quant_ste<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let scale = x.clone().abs().max_dim(D - 1).clamp_min(QUANT_EPS) / 127.0;
    let xq = (x.clone() / scale.clone()).round().clamp(-128.0, 127.0) * scale;
    x.clone() + (xq - x).detach()
}

/// A trainable parameter with a chosen id (gradients are tracked on autodiff devices).
pub fn param_with_id<const D: usize>(value: Tensor<D>, id: ParamId) -> Param<Tensor<D>> {
    let mut param = Param::from_tensor(value);
    param.id = id;
    param
}

/// A bias-free linear layer with weight `[d_out, d_in]` (PyTorch / GGUF row order).
///
/// With `quantize = true` it is BitNet b1.58's BitLinear; with `false` it is a plain
/// linear layer (the full-precision twin and the LM head use it).
///
/// ```
/// use bitnet_model::model::BitLinear;
/// use burn::prelude::*;
/// let device = Device::flex();
/// let layer = BitLinear::new(8, 4, true, 7, &device);
/// let y = layer.forward(Tensor::<3>::ones([1, 2, 8], &device));
/// assert_eq!(y.dims(), [1, 2, 4]);
/// ```
#[derive(Module, Debug)]
pub struct BitLinear {
    /// Latent full-precision weight, `[d_out, d_in]`.
    pub weight: Param<Tensor<2>>,
    /// Ternary weights and int8 activations in the forward pass.
    pub quantize: bool,
}

impl BitLinear {
    /// A layer with `N(0, 1/d_in)` weights drawn from `seed` (same seed, same weights on
    /// every device).
    pub fn new(d_in: usize, d_out: usize, quantize: bool, seed: u64, device: &Device) -> Self {
        let std = (1.0 / d_in as f64).sqrt() as f32;
        let data = crate::rng::SplitMix64::new(seed).normal_vec(d_in * d_out, std);
        Self::from_data(data, [d_out, d_in], quantize, ParamId::new(), device)
    }

    /// A layer from row-major `[d_out, d_in]` data with a given parameter id.
    pub fn from_data(
        data: Vec<f32>,
        shape: [usize; 2],
        quantize: bool,
        id: ParamId,
        device: &Device,
    ) -> Self {
        let w = Tensor::<2>::from_data(TensorData::new(data, shape), device);
        Self {
            weight: param_with_id(w, id),
            quantize,
        }
    }

    /// `[.., d_in] -> [.., d_out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let w = self.weight.val();
        if self.quantize {
            burn::tensor::module::linear(act_quant_ste(x), ternary_ste(w).transpose(), None)
        } else {
            burn::tensor::module::linear(x, w.transpose(), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn ternary_forward_and_identity_gradient() {
        let device = Device::flex().autodiff();
        let w = Tensor::<2>::from_data(
            TensorData::new(vec![0.3f32, -0.9, 0.05, 1.2, -0.2, 0.6], [2, 3]),
            &device,
        )
        .require_grad();
        let q = ternary_ste(w.clone());
        let s = 3.25f32 / 6.0;
        let got = values(q.clone().detach());
        let want = [s, -s, 0.0, s, 0.0, s];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]),
            &device,
        );
        let loss = x.matmul(q).sum();
        let grads = loss.backward();
        let g = values(w.grad(&grads).unwrap());
        assert_eq!(g, vec![4.0, 4.0, 4.0, 6.0, 6.0, 6.0]);
    }

    #[test]
    fn activation_quant_is_per_token_int8() {
        let device = Device::flex();
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, -0.5, 0.25, 100.0, 1.0, -3.0], [2, 3]),
            &device,
        );
        let got = values(act_quant_ste(x));
        // Row 0: scale 1/127 keeps 1, -0.5 and 0.25 within one step.
        assert!((got[1] + 0.5).abs() <= 0.5 / 127.0 + 1e-6);
        // Row 1: scale 100/127, so 1.0 rounds to one step of 0.787.
        assert!((got[4] - 100.0 / 127.0).abs() < 1e-4, "{got:?}");
        assert!((got[3] - 100.0).abs() < 1e-4);
    }

    #[test]
    fn full_precision_layer_is_plain_matmul() {
        let device = Device::flex();
        let layer = BitLinear::from_data(
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            [2, 3],
            false,
            ParamId::new(),
            &device,
        );
        let x =
            Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 0.0, -1.0], [1, 1, 3]), &device);
        let y = layer.forward(x).into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(y, vec![-2.0, -2.0]);
    }
}
