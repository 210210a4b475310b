//! Fused training ops that burn would otherwise run as chains of element-wise passes.
//!
//! [`cross_entropy`] is the LM loss: the plain burn composition (`log_softmax`, `gather`,
//! `mean`) takes about ten passes over the `[tokens, vocabulary]` logits forward and as many
//! backward, each a separate autodiff node, with libm's scalar `expf` twice per logit. Here
//! one rayon pass over the plain logits computes each row's log-sum-exp, its loss and its
//! gradient `(softmax - onehot) / N` (the gradient of a mean cross-entropy is known in
//! closed form), and the loss enters the graph as its first-order surrogate
//! `s - detach(s) + loss` with `s = sum(logits * G)`: the forward value is the loss
//! (`s - detach(s)` is exactly zero), and the backward pass is one multiplication by the
//! constant `G`, which is the exact gradient. [`cross_entropy_reference`] is the burn
//! composition it is checked against.
//!
//! [`causal_softmax`] is attention's `softmax(scale * S + causal mask)` under autodiff,
//! where burn runs its decomposed fallback (scale, mask fill, max, subtract, `expf`, sum,
//! divide: nine tracked ops and their backward nodes per layer). One pass over the plain
//! scores computes the probabilities `P`; the graph gets the linear surrogate
//! `L = S * A - P * rowsum(S * A)` with `A = scale * P`, whose Jacobian is the softmax's
//! (`scale * (diag P - P Pᵀ)`), entered as `L - detach(L) + P` so that the forward value is
//! exactly `P`. [`causal_softmax_reference`] is burn's composition.

use super::bitlinear::plain_values;
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::log_softmax;
use rayon::prelude::*;
use std::cell::Cell;

thread_local! {
    static PLAIN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the model's plain burn compositions instead of the fused ops (the loss,
/// attention's softmax and BitLinear's quantizers), on this thread: the reference a fused
/// training run is checked against, and a way to tell a fused op from the rest when
/// debugging. Nesting and panics restore the previous setting.
pub fn with_plain_burn_ops<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            PLAIN.set(self.0);
        }
    }
    let _restore = Restore(PLAIN.replace(true));
    f()
}

/// Whether the model runs its fused ops on this thread (see [`with_plain_burn_ops`]).
pub fn fused_ops_enabled() -> bool {
    !PLAIN.get()
}

/// About this many logits go to one rayon task.
const TASK_ELEMS: usize = 1 << 15;

/// `e^x` in f32 without a libm call, so that the loops around it vectorize. Cephes' `expf`
/// polynomial after the reduction `x = n ln 2 + r`, `|r| <= ln 2 / 2`; within 2 ulp of the
/// correctly rounded value over the normal range (property-tested). Below `-87.34` the
/// result is the smallest normal float's neighbourhood instead of a subnormal or zero, which
/// is below any sum it enters here; above `88.37` (where `2^n` would leave the exponent
/// range) it saturates at `e^88.37`, about `2.4e38`; NaN stays
/// NaN. Written with separate multiplies and adds (no FMA contraction in Rust), so every
/// instruction set gives the same bits.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to the nearest integer (ties to even) in the low
    // mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_55, 88.376_26);
    let shifted = x * LOG2E + SHIFT;
    let n = shifted - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    // The integer n sits in the low bits of `shifted`; 2^n by building the exponent field.
    let k = (shifted.to_bits() as i32).wrapping_sub(SHIFT.to_bits() as i32);
    let scale = f32::from_bits((k.wrapping_add(127) as u32) << 23);
    if x.is_nan() { x } else { y * scale }
}

/// Accumulator lanes of the row reductions: independent partial results that the compiler
/// keeps in one vector register (or two, or four, by instruction set), summed in a fixed
/// order at the end, so every instruction set gives the same bits. (A single running sum
/// is a dependency chain the compiler may not reorder, and stays scalar.)
const LANES: usize = 16;

/// `max(scale * x)` over `xs` (NaN entries are skipped, as burn's `max_dim` comparison
/// does; a NaN row is caught by the caller through the NaN sum).
#[inline(always)]
fn lane_max(xs: &[f32], scale: f32) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            let v = x * scale;
            *a = if v > *a { v } else { *a };
        }
    }
    for (a, &x) in acc.iter_mut().zip(chunks.remainder()) {
        let v = x * scale;
        *a = if v > *a { v } else { *a };
    }
    acc.iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// Replaces each `x` by `exp(scale * x - shift)` and returns their sum.
#[inline(always)]
fn exp_and_sum(xs: &mut [f32], scale: f32, shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (a, x) in acc.iter_mut().zip(chunk.iter_mut()) {
            let e = exp_f32(*x * scale - shift);
            *x = e;
            *a += e;
        }
    }
    for (a, x) in acc.iter_mut().zip(chunks.into_remainder()) {
        let e = exp_f32(*x * scale - shift);
        *x = e;
        *a += e;
    }
    acc.iter().sum()
}

/// One row of logits `row` (overwritten with its gradient `(softmax - onehot(target)) *
/// inv_n`), returning the row's negative log-likelihood. A target outside the row gives
/// NaN (and a zero gradient row), so a bad token id poisons the loss instead of reading
/// out of bounds.
#[inline(always)]
fn row_kernel(row: &mut [f32], target: usize, inv_n: f32) -> f32 {
    let Some(&picked) = row.get(target) else {
        row.fill(0.0);
        return f32::NAN;
    };
    let m = lane_max(row, 1.0);
    // A row of NaN (or +inf) logits: the burn composition's result is NaN too.
    if !m.is_finite() {
        row.fill(f32::NAN);
        return f32::NAN;
    }
    let sum = exp_and_sum(row, 1.0, m);
    let lse = m + sum.ln();
    let scale = inv_n / sum;
    for v in row.iter_mut() {
        *v *= scale;
    }
    row[target] -= inv_n;
    lse - picked
}

/// The rows of one task, for one instruction set.
#[inline(always)]
fn rows_kernel(rows: &mut [f32], targets: &[i64], v: usize, inv_n: f32, nll: &mut [f32]) {
    for ((row, &t), out) in rows.chunks_mut(v).zip(targets).zip(nll) {
        let t = usize::try_from(t).unwrap_or(usize::MAX);
        *out = row_kernel(row, t, inv_n);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512(rows: &mut [f32], targets: &[i64], v: usize, inv_n: f32, nll: &mut [f32]) {
    rows_kernel(rows, targets, v, inv_n, nll);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2(rows: &mut [f32], targets: &[i64], v: usize, inv_n: f32, nll: &mut [f32]) {
    rows_kernel(rows, targets, v, inv_n, nll);
}

/// Which loop [`loss_and_grad`] runs (every one gives the same bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The baseline instruction set's loop.
    Portable,
    /// The same loop compiled for AVX2.
    Avx2,
    /// The same loop compiled for AVX-512F.
    Avx512,
}

impl Path {
    /// The widest path this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Path::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Path::Avx2;
            }
        }
        Path::Portable
    }

    /// Every path this CPU can run.
    pub fn supported() -> Vec<Self> {
        let mut out = vec![Path::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                out.push(Path::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                out.push(Path::Avx512);
            }
        }
        out
    }

    fn run(self, rows: &mut [f32], targets: &[i64], v: usize, inv_n: f32, nll: &mut [f32]) {
        match self {
            // SAFETY: `supported`/`detect` only return these paths where the CPU has the
            // feature; `loss_and_grad` checks a caller-chosen path against `supported`.
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => unsafe { rows_avx512(rows, targets, v, inv_n, nll) },
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => unsafe { rows_avx2(rows, targets, v, inv_n, nll) },
            _ => rows_kernel(rows, targets, v, inv_n, nll),
        }
    }
}

/// Mean cross-entropy of `logits` (`[n, v]`, row-major) against `targets` (`n` ids), and
/// its gradient with respect to the logits, written over `logits`. The mean is summed in
/// f64 in row order, so it does not depend on the thread count.
///
/// # Panics
/// If `logits.len() != targets.len() * v` or `path` is not supported by this CPU.
pub fn loss_and_grad(logits: &mut [f32], targets: &[i64], v: usize, path: Path) -> f64 {
    assert_eq!(logits.len(), targets.len() * v, "logits are [n, v]");
    assert!(
        Path::supported().contains(&path),
        "{path:?} is not supported here"
    );
    let n = targets.len();
    if n == 0 || v == 0 {
        return f64::NAN;
    }
    let inv_n = 1.0 / n as f32;
    let mut nll = vec![0f32; n];
    let rows_per_task = (TASK_ELEMS / v).max(1);
    logits
        .par_chunks_mut(rows_per_task * v)
        .zip(targets.par_chunks(rows_per_task))
        .zip(nll.par_chunks_mut(rows_per_task))
        .for_each(|((rows, t), out)| path.run(rows, t, v, inv_n, out));
    nll.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64
}

/// Mean next-token cross-entropy (nats) of `logits` `[n, v]` against `targets` `[n]`, as one
/// fused pass (see the module docs). Value and gradient agree with
/// [`cross_entropy_reference`] to float rounding.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, v] = logits.dims();
    let mut grad = plain_values(&logits);
    let ids: Vec<i64> = targets
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("i64 after convert");
    let loss = loss_and_grad(&mut grad, &ids, v, Path::detect());
    let device = logits.device();
    let g = Tensor::<2>::from_data(TensorData::new(grad, [n, v]), &device.inner());
    let s = (logits * g).sum();
    s.clone() - s.detach() + loss as f32
}

/// Causal softmax of one row block: `rows` holds `n_rows` rows of `tk` scores whose first
/// row is query position `first` (the key positions it may see are `0..=first + offset`),
/// overwritten with the probabilities (zero where masked).
#[inline(always)]
fn softmax_rows_kernel(rows: &mut [f32], tk: usize, tq: usize, offset: isize, scale: f32) {
    for (r, row) in rows.chunks_mut(tk).enumerate() {
        let query = (r % tq) as isize;
        let visible = (query + offset + 1).clamp(0, tk as isize) as usize;
        let (seen, masked) = row.split_at_mut(visible);
        masked.fill(0.0);
        if seen.is_empty() {
            continue;
        }
        let m = lane_max(seen, scale);
        if !m.is_finite() {
            seen.fill(f32::NAN);
            continue;
        }
        let sum = exp_and_sum(seen, scale, m);
        let inv = 1.0 / sum;
        for v in seen.iter_mut() {
            *v *= inv;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_rows_avx512(rows: &mut [f32], tk: usize, tq: usize, offset: isize, scale: f32) {
    softmax_rows_kernel(rows, tk, tq, offset, scale);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn softmax_rows_avx2(rows: &mut [f32], tk: usize, tq: usize, offset: isize, scale: f32) {
    softmax_rows_kernel(rows, tk, tq, offset, scale);
}

/// Causal softmax over the last dimension of `scores` (`[.., tq, tk]` flattened, row-major),
/// in place: query `i` sees keys `0..=i + tk - tq` (the bottom-right alignment burn's
/// attention uses), masked entries become 0. Every path gives the same bits.
///
/// # Panics
/// If `scores.len()` is not a multiple of `tq * tk` or `path` is not supported here.
pub fn causal_softmax_in_place(scores: &mut [f32], tq: usize, tk: usize, scale: f32, path: Path) {
    assert!(
        Path::supported().contains(&path),
        "{path:?} is not supported here"
    );
    if tq == 0 || tk == 0 {
        return;
    }
    assert!(
        scores.len().is_multiple_of(tq * tk),
        "scores are [.., tq, tk]"
    );
    let offset = tk as isize - tq as isize;
    // Whole query blocks per task, so a row's position is its index modulo tq.
    let block = tq * tk;
    let blocks_per_task = (TASK_ELEMS / block).max(1);
    scores
        .par_chunks_mut(blocks_per_task * block)
        .for_each(|rows| match path {
            // SAFETY: checked against `Path::supported` above.
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => unsafe { softmax_rows_avx512(rows, tk, tq, offset, scale) },
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => unsafe { softmax_rows_avx2(rows, tk, tq, offset, scale) },
            _ => softmax_rows_kernel(rows, tk, tq, offset, scale),
        });
}

/// `softmax(scale * scores)` over the last dimension with the causal mask (query `i` sees
/// keys `0..=i + tk - tq`), as one fused pass and a linear surrogate for the gradient (see
/// the module docs). Values and gradients agree with [`causal_softmax_reference`] to float
/// rounding.
pub fn causal_softmax(scores: Tensor<4>, scale: f32) -> Tensor<4> {
    let dims = scores.dims();
    let [_, _, tq, tk] = dims;
    let mut p = plain_values(&scores);
    causal_softmax_in_place(&mut p, tq, tk, scale, Path::detect());
    let a: Vec<f32> = p.iter().map(|&v| v * scale).collect();
    let device = scores.device().inner();
    let p = Tensor::<4>::from_data(TensorData::new(p, dims), &device);
    let a = Tensor::<4>::from_data(TensorData::new(a, dims), &device);
    let sa = scores * a;
    let linear = sa.clone() - p.clone() * sa.sum_dim(3);
    linear.clone() - linear.detach() + p
}

/// [`causal_softmax`] as burn's composition (what its attention fallback computes).
pub fn causal_softmax_reference(scores: Tensor<4>, scale: f32) -> Tensor<4> {
    let [b, h, tq, tk] = scores.dims();
    let device = scores.device();
    let offset = tk as i64 - tq as i64;
    let rows = Tensor::<1, Int>::arange(0..tq as i64, &device).reshape([tq, 1]);
    let cols = Tensor::<1, Int>::arange(0..tk as i64, &device).reshape([1, tk]);
    let mask = (rows + offset)
        .lower(cols)
        .reshape([1, 1, tq, tk])
        .expand([b, h, tq, tk]);
    let s = scores.mul_scalar(scale).mask_fill(mask, f32::NEG_INFINITY);
    burn::tensor::activation::softmax(s, 3)
}

/// [`cross_entropy`] as the plain burn composition.
pub fn cross_entropy_reference(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    logp.gather(1, targets.reshape([n, 1])).mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i32)
            .wrapping_sub(b.to_bits() as i32)
            .unsigned_abs()
    }

    #[test]
    fn exp_is_within_two_ulp_over_the_normal_range() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.37 {
            let got = exp_f32(x);
            let want = f64::from(x).exp() as f32;
            worst = worst.max(ulps(got, want));
            x += 0.000_37;
        }
        assert!(worst <= 2, "worst {worst} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_f32(1000.0).is_finite() && exp_f32(1000.0) > 2e38);
    }

    proptest! {
        #[test]
        fn exp_matches_f64_exp(x in -87.0f32..88.0) {
            let want = f64::from(x).exp() as f32;
            prop_assert!(ulps(exp_f32(x), want) <= 2, "{x}: {} vs {want}", exp_f32(x));
        }

        #[test]
        fn every_path_gives_the_same_bits(n in 1usize..9, v in 1usize..300, seed in 0u64..1000) {
            let mut rng = crate::rng::SplitMix64::new(seed);
            let logits = rng.normal_vec(n * v, 4.0);
            let targets: Vec<i64> = (0..n).map(|_| rng.below(v as u64) as i64).collect();
            let mut want = logits.clone();
            let want_loss = loss_and_grad(&mut want, &targets, v, Path::Portable);
            for path in Path::supported() {
                let mut got = logits.clone();
                let loss = loss_and_grad(&mut got, &targets, v, path);
                prop_assert_eq!(loss.to_bits(), want_loss.to_bits());
                prop_assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }

        #[test]
        fn fused_loss_matches_the_burn_composition(
            n in 1usize..12,
            v in 2usize..200,
            scale in prop_oneof![Just(0.1f32), Just(3.0f32), Just(30.0f32)],
            seed in 0u64..1000,
        ) {
            let device = Device::flex().autodiff();
            let mut rng = crate::rng::SplitMix64::new(seed);
            let logits = rng.normal_vec(n * v, scale);
            let targets: Vec<i64> = (0..n).map(|_| rng.below(v as u64) as i64).collect();
            let run = |fused: bool| {
                let x = Tensor::<2>::from_data(TensorData::new(logits.clone(), [n, v]), &device)
                    .require_grad();
                let t = Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [n]), &device);
                let loss = if fused {
                    cross_entropy(x.clone(), t)
                } else {
                    cross_entropy_reference(x.clone(), t)
                };
                let value = loss.clone().into_scalar::<f32>();
                let grads = loss.backward();
                let g = x.grad(&grads).expect("logits gradient")
                    .into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
                (value, g)
            };
            let (lf, gf) = run(true);
            let (lr, gr) = run(false);
            prop_assert!((lf - lr).abs() <= 1e-5 * lr.abs().max(1.0), "loss {lf} vs {lr}");
            for (a, b) in gf.iter().zip(&gr) {
                prop_assert!((a - b).abs() <= 1e-6, "grad {a} vs {b}");
            }
        }
    }

    fn vec4(t: Tensor<4>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    proptest! {
        #[test]
        fn softmax_paths_give_the_same_bits(
            bh in 1usize..4, tq in 1usize..20, extra in 0usize..5, seed in 0u64..1000,
        ) {
            let tk = tq + extra;
            let mut rng = crate::rng::SplitMix64::new(seed);
            let scores = rng.normal_vec(bh * tq * tk, 3.0);
            let mut want = scores.clone();
            causal_softmax_in_place(&mut want, tq, tk, 0.3, Path::Portable);
            for path in Path::supported() {
                let mut got = scores.clone();
                causal_softmax_in_place(&mut got, tq, tk, 0.3, path);
                prop_assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }

        #[test]
        fn fused_attention_matches_burns(
            b in 1usize..3, h in 1usize..3, t in 1usize..17, hd in 1usize..9,
            scale in prop_oneof![Just(0.125f32), Just(1.0f32), Just(4.0f32)],
            seed in 0u64..1000,
        ) {
            let device = Device::flex().autodiff();
            let mut rng = crate::rng::SplitMix64::new(seed);
            let data: Vec<Vec<f32>> = (0..4).map(|_| rng.normal_vec(b * h * t * hd, 1.0)).collect();
            let run = |fused: bool| {
                let make = |v: &Vec<f32>| {
                    Tensor::<4>::from_data(TensorData::new(v.clone(), [b, h, t, hd]), &device)
                        .require_grad()
                };
                let (q, k, v) = (make(&data[0]), make(&data[1]), make(&data[2]));
                let scores = q.clone().matmul(k.clone().swap_dims(2, 3));
                let p = if fused {
                    causal_softmax(scores, scale)
                } else {
                    causal_softmax_reference(scores, scale)
                };
                let out = p.matmul(v.clone());
                let probe = Tensor::<4>::from_data(TensorData::new(data[3].clone(), [b, h, t, hd]), &device);
                let loss = (out.clone() * probe).sum();
                let grads = loss.backward();
                let g = |x: &Tensor<4>| vec4(x.grad(&grads).expect("gradient"));
                (vec4(out.inner()), g(&q), g(&k), g(&v))
            };
            let fused = run(true);
            let plain = run(false);
            let close = |a: &[f32], b: &[f32], what: &str| -> Result<(), TestCaseError> {
                for (x, y) in a.iter().zip(b) {
                    prop_assert!((x - y).abs() <= 2e-5 * (1.0 + y.abs()), "{what}: {x} vs {y}");
                }
                Ok(())
            };
            close(&fused.0, &plain.0, "output")?;
            close(&fused.1, &plain.1, "dq")?;
            close(&fused.2, &plain.2, "dk")?;
            close(&fused.3, &plain.3, "dv")?;
        }
    }

    #[test]
    fn the_reference_is_burns_attention() {
        let device = Device::flex();
        let mut rng = crate::rng::SplitMix64::new(5);
        let (b, h, t, hd) = (2, 3, 7, 4);
        let make = |rng: &mut crate::rng::SplitMix64| {
            Tensor::<4>::from_data(
                TensorData::new(rng.normal_vec(b * h * t * hd, 1.0), [b, h, t, hd]),
                &device,
            )
        };
        let (q, k, v) = (make(&mut rng), make(&mut rng), make(&mut rng));
        let options = burn::tensor::ops::AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: true,
        };
        let want = vec4(burn::tensor::module::attention(
            q.clone(),
            k.clone(),
            v.clone(),
            None,
            None,
            options,
        ));
        let scale = 1.0 / (hd as f32).sqrt();
        let got = vec4(causal_softmax_reference(q.matmul(k.swap_dims(2, 3)), scale).matmul(v));
        for (x, y) in got.iter().zip(&want) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn a_target_outside_the_vocabulary_gives_nan_not_a_panic() {
        let mut logits = vec![0.5f32; 8];
        let loss = loss_and_grad(&mut logits, &[1, 7], 4, Path::detect());
        assert!(loss.is_nan());
        let mut logits = vec![0.5f32; 8];
        assert!(loss_and_grad(&mut logits, &[1, -1], 4, Path::detect()).is_nan());
    }
}
