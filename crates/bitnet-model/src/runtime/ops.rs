//! The element-wise and per-row pieces of the BitNet graph, shared by the packed model
//! and the f32 reference so that the two differ only in how projections multiply.

use half::f16;

/// Epsilon of the absmean weight scale and the activation absmax (the BitNet FAQ's 1e-5).
pub const QUANT_EPS: f32 = 1e-5;

/// RMSNorm of each `gamma.len()`-wide row of `x` into `out`:
/// `x / sqrt(mean(x^2) + eps) * gamma`.
pub fn rms_norm(x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
    let d = gamma.len();
    for (row, out_row) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (mean_sq + eps).sqrt();
        for ((o, v), g) in out_row.iter_mut().zip(row).zip(gamma) {
            *o = v * inv * g;
        }
    }
}

/// `silu(x) = x * sigmoid(x)`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `relu(x)^2`.
pub fn relu_squared(x: f32) -> f32 {
    let r = x.max(0.0);
    r * r
}

/// Dot product with several accumulators so the compiler vectorizes it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f32; LANES];
    let (ac, ar) = a.split_at(a.len() / LANES * LANES);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(LANES).zip(bc.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// [`dot`] of f32 values with f16 ones (converted exactly), in the same order, so it
/// equals `dot(a, b as f32)` bit for bit.
pub fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f32; LANES];
    let (ac, ar) = a.split_at(a.len() / LANES * LANES);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(LANES).zip(bc.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i].to_f32();
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y.to_f32()).sum();
    acc.iter().sum::<f32>() + tail
}

/// `out += w * v` with f16 `v` (converted exactly).
pub fn axpy_f16(w: f32, v: &[f16], out: &mut [f32]) {
    out.iter_mut()
        .zip(v)
        .for_each(|(o, v)| *o += w * v.to_f32());
}

/// Whether [`dot_f16_f16c`] and [`axpy_f16_f16c`] can run (AVX2 and F16C, detected once).
#[cfg(target_arch = "x86_64")]
pub fn f16c_available() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c"))
}

/// [`dot_f16`] with F16C conversions: the eight lanes of one ymm register are the eight
/// accumulators, each a multiply then an add as there (no FMA), summed in the same order.
///
/// # Safety
/// The CPU must have AVX2 and F16C ([`f16c_available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[inline]
pub unsafe fn dot_f16_f16c(a: &[f32], b: &[f16]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let whole = n / 8 * 8;
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < whole {
        // SAFETY: i + 8 <= n, within both slices; unaligned loads.
        unsafe {
            let x = _mm256_loadu_ps(a.as_ptr().add(i));
            let y = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i).cast()));
            acc = _mm256_add_ps(acc, _mm256_mul_ps(x, y));
        }
        i += 8;
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds eight floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    let tail: f32 = a[whole..n]
        .iter()
        .zip(&b[whole..n])
        .map(|(x, y)| x * y.to_f32())
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// [`axpy_f16`] with F16C conversions (a multiply then an add per element, as there).
///
/// # Safety
/// The CPU must have AVX2 and F16C ([`f16c_available`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
#[inline]
pub unsafe fn axpy_f16_f16c(w: f32, v: &[f16], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = v.len().min(out.len());
    let whole = n / 8 * 8;
    let wv = _mm256_set1_ps(w);
    let mut i = 0;
    while i < whole {
        // SAFETY: i + 8 <= n, within both slices; unaligned loads and stores.
        unsafe {
            let y = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i).cast()));
            let o = out.as_mut_ptr().add(i);
            _mm256_storeu_ps(o, _mm256_add_ps(_mm256_loadu_ps(o), _mm256_mul_ps(wv, y)));
        }
        i += 8;
    }
    for (o, y) in out[whole..n].iter_mut().zip(&v[whole..n]) {
        *o += w * y.to_f32();
    }
}

/// Precomputed NEOX rotary tables: the head is split into halves and element `i` rotates
/// with element `i + head_dim / 2` (llama.cpp's `LLAMA_ROPE_TYPE_NEOX`, used by `bitnet`).
#[derive(Debug, Clone)]
pub struct Rope {
    half: usize,
    head_dim: usize,
    theta: f32,
    tabled: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    /// Positions with precomputed tables; later ones are computed when used, with the same
    /// formula (so a file's huge context length does not size a table).
    pub const TABLE_POSITIONS: usize = 4096;

    /// Tables for positions `0..min(max_positions, TABLE_POSITIONS)`, frequencies
    /// `theta^(-2i / head_dim)`.
    pub fn new(head_dim: usize, max_positions: usize, theta: f32) -> Self {
        let half = head_dim / 2;
        let tabled = max_positions.min(Self::TABLE_POSITIONS);
        let mut cos = Vec::with_capacity(tabled * half);
        let mut sin = Vec::with_capacity(tabled * half);
        for pos in 0..tabled {
            let (c, s) = Self::angles(head_dim, theta, pos);
            cos.extend(c);
            sin.extend(s);
        }
        Self {
            half,
            head_dim,
            theta,
            tabled,
            cos,
            sin,
        }
    }

    fn angles(head_dim: usize, theta: f32, pos: usize) -> (Vec<f32>, Vec<f32>) {
        (0..head_dim / 2)
            .map(|i| {
                let freq = (theta as f64).powf(-2.0 * i as f64 / head_dim as f64);
                let angle = pos as f64 * freq;
                (angle.cos() as f32, angle.sin() as f32)
            })
            .unzip()
    }

    /// Rotates every `2 * half`-wide head of `x` in place for position `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let half = self.half;
        let computed;
        let (cos, sin) = if pos < self.tabled {
            (
                &self.cos[pos * half..(pos + 1) * half],
                &self.sin[pos * half..(pos + 1) * half],
            )
        } else {
            computed = Self::angles(self.head_dim, self.theta, pos);
            (&computed.0[..], &computed.1[..])
        };
        for head in x.chunks_exact_mut(2 * half) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x0, x1) = (a[i], b[i]);
                a[i] = x0 * cos[i] - x1 * sin[i];
                b[i] = x0 * sin[i] + x1 * cos[i];
            }
        }
    }
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rms_norm_gives_unit_rms() {
        let x = [3.0, -4.0, 0.0, 5.0];
        let mut out = [0.0; 4];
        rms_norm(&x, &[1.0; 4], 0.0, &mut out);
        let rms = (out.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rope_pairs_halves_and_keeps_norm() {
        let rope = Rope::new(4, 8, 10_000.0);
        let mut x = [1.0, 0.0, 0.0, 0.0];
        rope.apply(&mut x, 1);
        // Element 0 rotates with element 2 by angle 1 rad (frequency theta^0).
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[2] - 1f32.sin()).abs() < 1e-6);
        assert_eq!((x[1], x[3]), (0.0, 0.0));
        // Positions past the table are computed with the same formula.
        let short = Rope::new(4, 3, 10_000.0);
        let (mut a, mut b) = ([0.3, -1.2, 2.0, 0.7], [0.3, -1.2, 2.0, 0.7]);
        short.apply(&mut a, 7);
        rope.apply(&mut b, 7);
        assert_eq!(a, b);
        let mut y = [0.3, -1.2, 2.0, 0.7];
        let before: f32 = y.iter().map(|v| v * v).sum();
        rope.apply(&mut y, 5);
        let after: f32 = y.iter().map(|v| v * v).sum();
        assert!((before - after).abs() < 1e-5);
    }

    proptest! {
        #[test]
        fn softmax_is_a_distribution(x in proptest::collection::vec(-80.0f32..80.0, 1..64)) {
            let mut p = x.clone();
            softmax(&mut p);
            prop_assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
            let imax = x.iter().enumerate().fold(0, |b, (i, v)| if *v > x[b] { i } else { b });
            prop_assert!(p.iter().all(|v| *v <= p[imax]));
        }

        #[test]
        fn dot_matches_the_naive_sum(
            pairs in proptest::collection::vec((-4.0f32..4.0, -4.0f32..4.0), 0..100)
        ) {
            let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            prop_assert!((dot(&a, &b) - naive).abs() < 1e-3);
        }

        #[test]
        fn f16_helpers_equal_the_f32_ones_on_converted_values(
            pairs in proptest::collection::vec((-4.0f32..4.0, -60000.0f32..60000.0), 0..80),
            w in -3.0f32..3.0,
        ) {
            let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            let h: Vec<f16> = b.iter().map(|&v| f16::from_f32(v)).collect();
            let back: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
            prop_assert_eq!(dot_f16(&a, &h).to_bits(), dot(&a, &back).to_bits());
            let mut o1 = a.clone();
            axpy_f16(w, &h, &mut o1);
            let o2: Vec<f32> = a.iter().zip(&back).map(|(o, v)| o + w * v).collect();
            prop_assert_eq!(&o1, &o2);
            #[cfg(target_arch = "x86_64")]
            if f16c_available() {
                // SAFETY: detected above.
                let d = unsafe { dot_f16_f16c(&a, &h) };
                prop_assert_eq!(d.to_bits(), dot_f16(&a, &h).to_bits());
                let mut o3 = a.clone();
                unsafe { axpy_f16_f16c(w, &h, &mut o3) };
                prop_assert_eq!(
                    o3.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    o1.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }
}
