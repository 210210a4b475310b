//! Standard test functions with their search spaces, for tests and the Optuna benchmark.

use crate::space::{ParamValue, Params, SearchSpace};

/// A named test function over a search space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestFunction {
    /// Branin, 2-d, f* = 0.397887.
    Branin,
    /// Hartmann6 on `[0,1]^6`, f* = −3.32237.
    Hartmann6,
    /// Rosenbrock, d = 10 on `[−5,10]^10`, f* = 0.
    Rosenbrock10,
    /// Levy, d = 6 on `[−10,10]^6`, f* = 0.
    Levy6,
    /// Styblinski–Tang, d = 6 on `[−5,5]^6`, f* = −39.16617·6.
    StyblinskiTang6,
    /// Mixed: 3 floats, one integer and one categorical with shifted optima, f* = 0.
    Mixed,
}

impl TestFunction {
    /// All functions of the benchmark.
    pub const ALL: [Self; 6] = [
        Self::Branin,
        Self::Hartmann6,
        Self::Rosenbrock10,
        Self::Levy6,
        Self::StyblinskiTang6,
        Self::Mixed,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Branin => "branin",
            Self::Hartmann6 => "hartmann6",
            Self::Rosenbrock10 => "rosenbrock10",
            Self::Levy6 => "levy6",
            Self::StyblinskiTang6 => "styblinski_tang6",
            Self::Mixed => "mixed",
        }
    }

    /// Known minimum.
    pub fn optimum(self) -> f64 {
        match self {
            Self::Branin => 0.397_887,
            Self::Hartmann6 => -3.322_37,
            Self::Rosenbrock10 | Self::Levy6 | Self::Mixed => 0.0,
            Self::StyblinskiTang6 => -39.166_17 * 6.0,
        }
    }

    /// The search space (parameters `x0`, `x1`, ...; Mixed adds `k` and `c`).
    pub fn space(self) -> SearchSpace {
        let box_space = |d: usize, lo: f64, hi: f64| {
            (0..d).fold(SearchSpace::new(), |s, i| {
                s.float(&format!("x{i}"), lo, hi, false)
            })
        };
        match self {
            Self::Branin => SearchSpace::new()
                .float("x0", -5.0, 10.0, false)
                .float("x1", 0.0, 15.0, false),
            Self::Hartmann6 => box_space(6, 0.0, 1.0),
            Self::Rosenbrock10 => box_space(10, -5.0, 10.0),
            Self::Levy6 => box_space(6, -10.0, 10.0),
            Self::StyblinskiTang6 => box_space(6, -5.0, 5.0),
            Self::Mixed => box_space(3, -5.0, 5.0)
                .int("k", 0, 10, 1, false)
                .categorical(
                    "c",
                    vec![
                        ParamValue::Str("a".into()),
                        ParamValue::Str("b".into()),
                        ParamValue::Str("c".into()),
                    ],
                ),
        }
    }

    /// Evaluates the function on a parameter assignment from [`Self::space`].
    pub fn eval(self, p: &Params) -> f64 {
        let x: Vec<f64> = (0..)
            .map_while(|i| p.get(&format!("x{i}")).and_then(ParamValue::as_f64))
            .collect();
        match self {
            Self::Branin => branin(x[0], x[1]),
            Self::Hartmann6 => hartmann6(&x),
            Self::Rosenbrock10 => rosenbrock(&x),
            Self::Levy6 => levy(&x),
            Self::StyblinskiTang6 => styblinski_tang(&x),
            Self::Mixed => {
                let k = p.get("k").and_then(ParamValue::as_f64).unwrap_or(0.0);
                let (shift, offset) = match p.get("c") {
                    Some(ParamValue::Str(s)) if s == "a" => (1.0, 1.0),
                    Some(ParamValue::Str(s)) if s == "b" => (-2.0, 0.0),
                    _ => (3.0, 2.0),
                };
                x.iter().map(|v| (v - shift).powi(2)).sum::<f64>()
                    + 0.5 * (k - 7.0).powi(2)
                    + offset
            }
        }
    }
}

/// Branin–Hoo.
pub fn branin(x1: f64, x2: f64) -> f64 {
    use std::f64::consts::PI;
    let b = 5.1 / (4.0 * PI * PI);
    let c = 5.0 / PI;
    let t = 1.0 / (8.0 * PI);
    (x2 - b * x1 * x1 + c * x1 - 6.0).powi(2) + 10.0 * (1.0 - t) * x1.cos() + 10.0
}

/// Hartmann 6-d.
pub fn hartmann6(x: &[f64]) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [1312.0, 1696.0, 5569.0, 124.0, 8283.0, 5886.0],
        [2329.0, 4135.0, 8307.0, 3736.0, 1004.0, 9991.0],
        [2348.0, 1451.0, 3522.0, 2883.0, 3047.0, 6650.0],
        [4047.0, 8828.0, 8732.0, 5743.0, 1091.0, 381.0],
    ];
    -(0..4)
        .map(|i| {
            let s: f64 = (0..6)
                .map(|j| A[i][j] * (x[j] - P[i][j] * 1e-4).powi(2))
                .sum();
            ALPHA[i] * (-s).exp()
        })
        .sum::<f64>()
}

/// Rosenbrock.
pub fn rosenbrock(x: &[f64]) -> f64 {
    x.windows(2)
        .map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2))
        .sum()
}

/// Levy.
pub fn levy(x: &[f64]) -> f64 {
    use std::f64::consts::PI;
    let w: Vec<f64> = x.iter().map(|v| 1.0 + (v - 1.0) / 4.0).collect();
    let d = w.len();
    let mut s = (PI * w[0]).sin().powi(2);
    for wi in &w[..d - 1] {
        s += (wi - 1.0).powi(2) * (1.0 + 10.0 * (PI * wi + 1.0).sin().powi(2));
    }
    s + (w[d - 1] - 1.0).powi(2) * (1.0 + (2.0 * PI * w[d - 1]).sin().powi(2))
}

/// Styblinski–Tang.
pub fn styblinski_tang(x: &[f64]) -> f64 {
    0.5 * x
        .iter()
        .map(|v| v.powi(4) - 16.0 * v * v + 5.0 * v)
        .sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_optima() {
        assert!((branin(-std::f64::consts::PI, 12.275) - 0.397_887).abs() < 1e-5);
        let h = hartmann6(&[0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]);
        assert!((h + 3.32237).abs() < 1e-4, "{h}");
        assert_eq!(rosenbrock(&[1.0; 10]), 0.0);
        assert!(levy(&[1.0; 6]).abs() < 1e-12);
        assert!((styblinski_tang(&[-2.903534; 6]) + 39.16617 * 6.0).abs() < 1e-3);
        let mut p = Params::new();
        for i in 0..3 {
            p.insert(format!("x{i}"), ParamValue::Float(-2.0));
        }
        p.insert("k".into(), ParamValue::Int(7));
        p.insert("c".into(), ParamValue::Str("b".into()));
        assert_eq!(TestFunction::Mixed.eval(&p), 0.0);
    }
}
