//! Small numeric helpers: normal distribution functions, statistics, symmetric eigensolver.

// Index loops read like the textbook formulas they implement.
#![allow(clippy::needless_range_loop)]

use rand::RngExt;
use rand::rngs::StdRng;

const LN_HALF: f64 = -std::f64::consts::LN_2;

/// `ln erfc(z)` for `z >= 0` (Numerical Recipes Chebyshev fit, relative error < 1.2e-7, valid
/// deep into the tail because the exponent is kept in log form).
fn ln_erfc_pos(z: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t.ln() + poly
}

/// `ln Φ(x)` for the standard normal CDF.
pub fn ln_ndtr(x: f64) -> f64 {
    let z = x / std::f64::consts::SQRT_2;
    if x < 0.0 {
        LN_HALF + ln_erfc_pos(-z)
    } else {
        (-0.5 * ln_erfc_pos(z).exp()).ln_1p()
    }
}

/// Standard normal CDF.
pub fn ndtr(x: f64) -> f64 {
    ln_ndtr(x).exp()
}

/// `ln(exp(a) - exp(b))` for `a >= b`.
fn ln_diff_exp(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    a + (-(b - a).exp()).ln_1p()
}

/// `ln(Φ(b) - Φ(a))` for `a < b`, accurate in both tails.
pub fn ln_ndtr_diff(a: f64, b: f64) -> f64 {
    if a >= b {
        return f64::NEG_INFINITY;
    }
    if a >= 0.0 {
        ln_diff_exp(ln_ndtr(-a), ln_ndtr(-b))
    } else if b <= 0.0 {
        ln_diff_exp(ln_ndtr(b), ln_ndtr(a))
    } else {
        (-(ndtr(a) + ndtr(-b))).ln_1p()
    }
}

/// Inverse standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9).
pub fn ndtri(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let plow = 0.02425;
    if p < plow {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - plow {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -ndtri(1.0 - p)
    }
}

/// A standard normal draw (Box–Muller).
pub fn randn(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// `ln Σ exp(x_i)`.
pub fn logsumexp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Quantile with linear interpolation (`q` in `[0,1]`); `None` for no data.
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

/// Median.
pub fn median(xs: &[f64]) -> Option<f64> {
    quantile(xs, 0.5)
}

/// Mean and sample standard deviation.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (m, 0.0);
    }
    let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v.sqrt())
}

/// Two-sided Mann–Whitney U test: the p-value that `a` and `b` come from the same
/// distribution, by the normal approximation with tie and continuity corrections (scipy's
/// `mannwhitneyu(method="asymptotic")`). `None` when a sample is empty.
pub fn mann_whitney_p(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&x| (x, true))
        .chain(b.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let (mut rank_sum_a, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_a += rank * all[i..=j].iter().filter(|x| x.1).count() as f64;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        i = j + 1;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let mu = n1 * n2 / 2.0;
    let total = n1 + n2;
    let var = n1 * n2 / 12.0 * ((total + 1.0) - ties / (total * (total - 1.0)));
    if var <= 0.0 {
        return Some(1.0);
    }
    let z = ((u - mu).abs() - 0.5) / var.sqrt();
    Some((2.0 * ndtr(-z)).min(1.0))
}

/// Eigen-decomposition of a symmetric matrix (cyclic Jacobi): eigenvalues and column
/// eigenvectors (`vecs[i][k]` = component i of vector k).
pub fn sym_eigen(a: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut m: Vec<Vec<f64>> = a.to_vec();
    let mut v = vec![vec![0.0; n]; n];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i][j] * m[i][j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if m[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q][q] - m[p][p]) / (2.0 * m[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let mkp = m[k][p];
                    let mkq = m[k][q];
                    m[k][p] = c * mkp - s * mkq;
                    m[k][q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let mpk = m[p][k];
                    let mqk = m[q][k];
                    m[p][k] = c * mpk - s * mqk;
                    m[q][k] = s * mpk + c * mqk;
                }
                for row in &mut v {
                    let vkp = row[p];
                    let vkq = row[q];
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| m[i][i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_functions_match_known_values() {
        assert!((ndtr(0.0) - 0.5).abs() < 1e-7);
        assert!((ndtr(1.96) - 0.975_002_1).abs() < 1e-6);
        assert!((ln_ndtr(-30.0) - (-454.321_174_052_1)).abs() < 1e-3);
        for p in [1e-10, 0.01, 0.3, 0.5, 0.9, 0.999] {
            assert!((ndtr(ndtri(p)) - p).abs() < 1e-6 * p.max(1e-3), "{p}");
        }
        let d = ln_ndtr_diff(5.0, 6.0).exp();
        assert!((d - (2.866_515_7e-7 - 9.865_876e-10)).abs() < 1e-12, "{d}");
    }

    #[test]
    fn jacobi_diagonalises() {
        let a = vec![
            vec![4.0, 1.0, 0.5],
            vec![1.0, 3.0, 0.2],
            vec![0.5, 0.2, 1.0],
        ];
        let (e, v) = sym_eigen(&a);
        for k in 0..3 {
            for i in 0..3 {
                let av: f64 = (0..3).map(|j| a[i][j] * v[j][k]).sum();
                assert!((av - e[k] * v[i][k]).abs() < 1e-9);
            }
        }
    }

    /// Values from the same formula as scipy's asymptotic `mannwhitneyu` (two-sided).
    #[test]
    fn mann_whitney_matches_the_asymptotic_test() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [6.0, 7.0, 8.0, 9.0, 10.0];
        let p = mann_whitney_p(&a, &b).unwrap();
        assert!((p - 0.012_185_780_355_344_818).abs() < 1e-7, "{p}");
        assert_eq!(mann_whitney_p(&b, &a), Some(p));
        // Ties across the samples.
        let a = [1.0, 2.0, 2.0, 3.0, 5.0, 8.0];
        let b = [2.0, 3.0, 4.0, 4.0, 9.0, 10.0, 11.0];
        let p = mann_whitney_p(&a, &b).unwrap();
        assert!((p - 0.149_727_981_895_451_3).abs() < 1e-7, "{p}");
        assert_eq!(mann_whitney_p(&a, &a), Some(1.0));
        assert_eq!(mann_whitney_p(&[3.0; 4], &[3.0; 5]), Some(1.0));
        assert_eq!(mann_whitney_p(&[], &a), None);
    }
}
