//! `BitLinear`: a bias-free linear layer whose forward pass uses absmean ternary weights and
//! per-token absmax int8 activations, with straight-through estimators so that the latent
//! full-precision weights receive the identity gradient.
//!
//! The quantizers run fused: the STE's constant `q(v) - v` is computed in one pass over
//! the plain (non-autodiff) values, split across the rayon pool, and added to the tracked
//! tensor by one autodiff op. The plain burn compositions ([`ternary_ste_reference`],
//! [`act_quant_ste_reference`]) take about ten single-threaded element-wise passes and as
//! many autodiff nodes for the same values; the tests check that both give the same bits.

use burn::module::{Param, ParamId};
use burn::prelude::*;
use burn::tensor::TensorData;
use rayon::prelude::*;

/// Smallest scale either quantizer divides by (the BitNet FAQ's clamp).
pub const QUANT_EPS: f64 = 1e-5;

/// About this many elements go to one rayon task in the fused quantizers.
const QUANT_TASK_ELEMS: usize = 1 << 15;

/// `round_ties_even(v / scale)` clamped to `[lo, hi]`, times `scale`, minus `v`: the STE's
/// `q(v) - v` with the same float operations, in the same order, as the burn composition.
#[inline(always)]
fn quant_delta(v: f32, scale: f32, lo: f32, hi: f32) -> f32 {
    round_ties_even(v / scale).clamp(lo, hi) * scale - v
}

/// `f32::round_ties_even` without the libm call (`rintf`) that the x86-64 baseline makes
/// of it, so the quantizer loops vectorize: below 2^23 adding and subtracting 2^23 rounds
/// to the nearest even integer; from 2^23 on every f32 is an integer; NaN stays NaN.
#[inline(always)]
fn round_ties_even(y: f32) -> f32 {
    const TWO_23: f32 = 8_388_608.0;
    let a = y.abs();
    if a < TWO_23 {
        ((a + TWO_23) - TWO_23).copysign(y)
    } else {
        y
    }
}

/// `max(v, QUANT_EPS)` letting NaN through, as burn's `clamp_min` does.
#[inline(always)]
fn clamp_eps(v: f32) -> f32 {
    let eps = QUANT_EPS as f32;
    if v.is_nan() || v > eps { v } else { eps }
}

/// The plain values of `x` (a copy; `x` itself keeps its autodiff graph).
pub(crate) fn plain_values<const D: usize>(x: &Tensor<D>) -> Vec<f32> {
    x.clone()
        .inner()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 after convert")
}

/// `x + c` where `c` holds `values` (untracked, so the gradient to `x` is the identity).
fn add_constant<const D: usize>(x: Tensor<D>, values: Vec<f32>) -> Tensor<D> {
    let device = x.device().inner();
    let c = Tensor::<D>::from_data(TensorData::new(values, x.dims()), &device);
    x + c
}

/// Absmean ternary quantization with a straight-through estimator.
///
/// Forward: `round_clip(w / mean|w|, -1, 1) * mean|w|`; backward: identity. Bit for bit
/// the values of [`ternary_ste_reference`].
pub fn ternary_ste(w: Tensor<2>) -> Tensor<2> {
    // The scale stays burn's reduction (its summation order decides the last bit).
    let scale = clamp_eps(w.clone().inner().abs().mean().into_scalar::<f32>());
    let mut values = plain_values(&w);
    values.par_chunks_mut(QUANT_TASK_ELEMS).for_each(|chunk| {
        for v in chunk {
            *v = quant_delta(*v, scale, -1.0, 1.0);
        }
    });
    add_constant(w, values)
}

/// Per-token (last dimension) absmax int8 activation quantization with a
/// straight-through estimator. Bit for bit the values of [`act_quant_ste_reference`].
pub fn act_quant_ste<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let n = x.dims()[D - 1].max(1);
    let mut values = plain_values(&x);
    let rows_per_task = (QUANT_TASK_ELEMS / n).max(1);
    values.par_chunks_mut(n * rows_per_task).for_each(|rows| {
        for row in rows.chunks_mut(n) {
            // NaN-propagating absmax: once NaN, `a > m` stays false.
            let m = row.iter().fold(0f32, |m, &v| {
                let a = v.abs();
                if a > m || a.is_nan() { a } else { m }
            });
            let scale = clamp_eps(m) / 127.0;
            for v in row {
                *v = quant_delta(*v, scale, -128.0, 127.0);
            }
        }
    });
    add_constant(x, values)
}

/// [`ternary_ste`] as the plain burn composition (the reference the fused version is
/// checked against).
pub fn ternary_ste_reference(w: Tensor<2>) -> Tensor<2> {
    let scale = w.clone().abs().mean().clamp_min(QUANT_EPS).unsqueeze::<2>();
    let wq = (w.clone() / scale.clone()).round().clamp(-1.0, 1.0) * scale;
    w.clone() + (wq - w).detach()
}

/// [`act_quant_ste`] as the plain burn composition (the reference the fused version is
/// checked against).
pub fn act_quant_ste_reference<const D: usize>(x: Tensor<D>) -> Tensor<D> {
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
        self.forward_input(self.input(x))
    }

    /// The input as the forward pass reads it: [`act_quant_ste`] when quantizing,
    /// unchanged otherwise. Layers that read the same input (q, k, v; gate, up) share one
    /// quantized copy through [`BitLinear::forward_input`].
    pub fn input<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match (self.quantize, super::fused::fused_ops_enabled()) {
            (false, _) => x,
            (true, true) => act_quant_ste(x),
            (true, false) => act_quant_ste_reference(x),
        }
    }

    /// [`BitLinear::forward`] of an input already passed through [`BitLinear::input`] (of
    /// a layer with the same `quantize`).
    pub fn forward_input<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let w = self.weight.val();
        let w = match (self.quantize, super::fused::fused_ops_enabled()) {
            (false, _) => w,
            (true, true) => ternary_ste(w),
            (true, false) => ternary_ste_reference(w),
        };
        burn::tensor::module::linear(x, w.transpose(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_f32_round_ties_even() {
        let specials = [
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            126.5,
            127.5,
            -128.5,
            8_388_607.5,
            8_388_608.0,
            16_777_217.0,
            1e30,
            -1e-30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN_POSITIVE,
            0.49999997,
            -0.50000006,
        ];
        let mut rng = crate::rng::SplitMix64::new(5);
        let randoms = rng.normal_vec(20_000, 300.0);
        for v in specials.into_iter().chain(randoms) {
            assert_eq!(
                round_ties_even(v).to_bits(),
                v.round_ties_even().to_bits(),
                "{v}"
            );
        }
        assert!(round_ties_even(f32::NAN).is_nan());
    }

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

    fn grad_of(x: &Tensor<2>, grads: &burn::tensor::Gradients) -> Vec<u32> {
        values(x.grad(grads).expect("gradient"))
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    fn random(rows: usize, cols: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut v = crate::rng::SplitMix64::new(seed).normal_vec(rows * cols, scale);
        // Exact zeros, ties and a zero row exercise the rounding and the scale clamp.
        if let Some(x) = v.first_mut() {
            *x = 0.0;
        }
        if rows > 1 {
            for x in &mut v[cols..2 * cols] {
                *x = 0.0;
            }
        }
        v
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// The fused quantizers give the plain burn compositions' values bit for bit, and
        /// the same (identity) gradients, on an autodiff device and a plain one.
        #[test]
        fn fused_quantizers_match_the_burn_composition(
            rows in 1usize..40,
            cols in 1usize..300,
            seed in 0u64..1000,
            magnitude in proptest::sample::select(vec![1e-7f32, 0.02, 1.0, 300.0]),
        ) {
            let device = Device::flex().autodiff();
            let data = random(rows, cols, seed, magnitude);
            let leaf = || {
                Tensor::<2>::from_data(TensorData::new(data.clone(), [rows, cols]), &device)
                    .require_grad()
            };
            let weight = crate::rng::SplitMix64::new(seed ^ 9).normal_vec(rows * cols, 1.0);
            let weight = Tensor::<2>::from_data(TensorData::new(weight, [rows, cols]), &device);
            type Quant = fn(Tensor<2>) -> Tensor<2>;
            let pairs: [(Quant, Quant); 2] = [
                (act_quant_ste::<2>, act_quant_ste_reference::<2>),
                (ternary_ste, ternary_ste_reference),
            ];
            for (fast, reference) in pairs {
                let (a, b) = (leaf(), leaf());
                let (qa, qb) = (fast(a.clone()), reference(b.clone()));
                let bits = |t: &Tensor<2>| -> Vec<u32> {
                    values(t.clone().detach()).iter().map(|v| v.to_bits()).collect()
                };
                proptest::prop_assert_eq!(bits(&qa), bits(&qb));
                let ga = (qa * weight.clone()).sum().backward();
                let gb = (qb * weight.clone()).sum().backward();
                proptest::prop_assert_eq!(grad_of(&a, &ga), grad_of(&b, &gb));
                // Without autodiff too (evaluation, the runtime's reference paths).
                let plain = Tensor::<2>::from_data(
                    TensorData::new(data.clone(), [rows, cols]),
                    &Device::flex(),
                );
                proptest::prop_assert_eq!(bits(&fast(plain.clone())), bits(&reference(plain)));
            }
        }

        /// A layer's forward and its gradients (weight and input) equal the plain burn
        /// path's, for both weight kinds, with the input quantized once and shared.
        #[test]
        fn layer_matches_the_plain_burn_path(
            rows in 1usize..24,
            d_in in 1usize..96,
            d_out in 1usize..64,
            seed in 0u64..1000,
            quantize in proptest::bool::ANY,
        ) {
            let device = Device::flex().autodiff();
            let x = random(rows, d_in, seed, 1.5);
            let x = Tensor::<2>::from_data(TensorData::new(x, [rows, d_in]), &device).require_grad();
            let w = crate::rng::SplitMix64::new(seed + 1).normal_vec(d_out * d_in, 0.3);
            let layer = BitLinear::from_data(w, [d_out, d_in], quantize, ParamId::new(), &device);
            let probe = crate::rng::SplitMix64::new(seed + 2).normal_vec(rows * d_out, 1.0);
            let probe = Tensor::<2>::from_data(TensorData::new(probe, [rows, d_out]), &device);
            let fast = layer.forward(x.clone());
            let shared = layer.input(x.clone());
            let twice = layer.forward_input(shared.clone()) + layer.forward_input(shared);
            let wv = layer.weight.val();
            let plain = if quantize {
                burn::tensor::module::linear(
                    act_quant_ste_reference(x.clone()),
                    ternary_ste_reference(wv).transpose(),
                    None,
                )
            } else {
                burn::tensor::module::linear(x.clone(), wv.transpose(), None)
            };
            let bits = |t: &Tensor<2>| -> Vec<u32> {
                values(t.clone().detach()).iter().map(|v| v.to_bits()).collect()
            };
            proptest::prop_assert_eq!(bits(&fast), bits(&plain));
            let g_fast = (fast * probe.clone()).sum().backward();
            let g_plain = (plain.clone() * probe.clone()).sum().backward();
            proptest::prop_assert_eq!(grad_of(&x, &g_fast), grad_of(&x, &g_plain));
            let gw = |g: &burn::tensor::Gradients| grad_of(&layer.weight.val(), g);
            proptest::prop_assert_eq!(gw(&g_fast), gw(&g_plain));
            // Two reads of one shared quantized input: twice the values and gradients
            // (exactly: doubling is exact in floating point).
            let g_twice = (twice.clone() * probe).sum().backward();
            let doubled: Vec<u32> = values(plain.detach())
                .iter()
                .map(|v| (2.0 * v).to_bits())
                .collect();
            proptest::prop_assert_eq!(bits(&twice), doubled);
            let x2: Vec<u32> = values(x.grad(&g_plain).unwrap())
                .iter()
                .map(|v| (2.0 * v).to_bits())
                .collect();
            proptest::prop_assert_eq!(grad_of(&x, &g_twice), x2);
        }
    }
}
