//! Representation drift: linear CKA (Kornblith et al. 2019) between two sets of
//! features computed on the same probe inputs.

use crate::error::{Error, Result};

/// Features of `rows` probe inputs, `cols` values each, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Number of probe inputs (e.g. tokens).
    pub rows: usize,
    /// Feature width.
    pub cols: usize,
    /// `rows * cols` values.
    pub data: Vec<f32>,
}

fn centered_gram(f: &Features) -> Vec<f64> {
    let (n, d) = (f.rows, f.cols);
    let mut means = vec![0.0f64; d];
    for r in f.data.chunks_exact(d) {
        for (m, &x) in means.iter_mut().zip(r) {
            *m += f64::from(x);
        }
    }
    for m in &mut means {
        *m /= n as f64;
    }
    let centered: Vec<f64> = f
        .data
        .chunks_exact(d)
        .flat_map(|r| r.iter().zip(&means).map(|(&x, m)| f64::from(x) - m))
        .collect();
    let mut gram = vec![0.0f64; n * n];
    for i in 0..n {
        for j in i..n {
            let dot: f64 = centered[i * d..(i + 1) * d]
                .iter()
                .zip(&centered[j * d..(j + 1) * d])
                .map(|(a, b)| a * b)
                .sum();
            gram[i * n + j] = dot;
            gram[j * n + i] = dot;
        }
    }
    gram
}

/// Linear CKA in [0, 1]: 1 for features equal up to rotation and isotropic scale.
/// Uses n x n Gram matrices, so keep the probe to a few hundred rows.
pub fn linear_cka(x: &Features, y: &Features) -> Result<f64> {
    if x.rows != y.rows || x.rows < 2 {
        return Err(Error::Config {
            field: "cka".into(),
            message: format!(
                "need the same number (>= 2) of rows, got {} and {}",
                x.rows, y.rows
            ),
        });
    }
    for f in [x, y] {
        if f.cols == 0 || f.data.len() != f.rows * f.cols {
            return Err(Error::Config {
                field: "cka".into(),
                message: format!(
                    "{} x {} features with {} values",
                    f.rows,
                    f.cols,
                    f.data.len()
                ),
            });
        }
    }
    let (k, l) = (centered_gram(x), centered_gram(y));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let denom = (dot(&k, &k) * dot(&l, &l)).sqrt();
    Ok(if denom > 0.0 {
        dot(&k, &l) / denom
    } else {
        0.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f32) -> Features {
        Features {
            rows,
            cols,
            data: (0..rows * cols).map(|i| f(i / cols, i % cols)).collect(),
        }
    }

    #[test]
    fn cka_invariances() {
        let x = feats(20, 3, |r, c| ((r * 7 + c * 3) as f32).sin());
        // Orthogonal transform (swap + sign flip) and isotropic scale keep CKA at 1.
        let y = feats(20, 3, |r, c| {
            let src = [1, 0, 2][c];
            let s = if c == 2 { -2.5 } else { 2.5 };
            s * ((r * 7 + src * 3) as f32).sin()
        });
        assert!((linear_cka(&x, &y).unwrap() - 1.0).abs() < 1e-9);
        let z = feats(20, 3, |r, c| ((r * r * 13 + c * 5) as f32).cos());
        let c = linear_cka(&x, &z).unwrap();
        assert!((0.0..0.9).contains(&c), "{c}");
        assert!(linear_cka(&x, &feats(19, 3, |_, _| 0.0)).is_err());
    }
}
