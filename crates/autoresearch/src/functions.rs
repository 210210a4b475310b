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
    /// Hartmann 3-d on `[0,1]^3` (smooth), f* = −3.86278.
    Hartmann3,
    /// Michalewicz, d = 5 on `[0,π]^5` (steep ridges, m = 10), f* ≈ −4.687658.
    Michalewicz5,
    /// Ackley, d = 5 on `[−32.768, 32.768]^5` (multimodal), f* = 0.
    Ackley5,
    /// Schwefel, d = 4 on `[−500, 500]^4` (deceptive: the optimum is far from the next best
    /// basins), f* ≈ 0.
    Schwefel4,
    /// Shifted axis-aligned ellipsoid, d = 6 on `[−5,5]^6`, condition number 10⁶
    /// (ill-conditioned, smooth), f* = 0.
    Ellipsoid6,
    /// A training-run-like landscape: log-scaled learning rate and width, integer depth,
    /// stepped dropout and a categorical optimiser that moves the best learning rate, f* = 0.
    HpoLike,
}

impl TestFunction {
    /// All functions of the benchmark.
    pub const ALL: [Self; 12] = [
        Self::Branin,
        Self::Hartmann6,
        Self::Rosenbrock10,
        Self::Levy6,
        Self::StyblinskiTang6,
        Self::Mixed,
        Self::Hartmann3,
        Self::Michalewicz5,
        Self::Ackley5,
        Self::Schwefel4,
        Self::Ellipsoid6,
        Self::HpoLike,
    ];

    /// Whether the function is smooth and continuous (where a GP should excel).
    pub fn is_smooth(self) -> bool {
        matches!(
            self,
            Self::Branin | Self::Hartmann6 | Self::Hartmann3 | Self::Ellipsoid6
        )
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Branin => "branin",
            Self::Hartmann6 => "hartmann6",
            Self::Rosenbrock10 => "rosenbrock10",
            Self::Levy6 => "levy6",
            Self::StyblinskiTang6 => "styblinski_tang6",
            Self::Mixed => "mixed",
            Self::Hartmann3 => "hartmann3",
            Self::Michalewicz5 => "michalewicz5",
            Self::Ackley5 => "ackley5",
            Self::Schwefel4 => "schwefel4",
            Self::Ellipsoid6 => "ellipsoid6",
            Self::HpoLike => "hpo_like",
        }
    }

    /// Known minimum.
    pub fn optimum(self) -> f64 {
        match self {
            Self::Branin => 0.397_887,
            Self::Hartmann6 => -3.322_37,
            Self::Rosenbrock10
            | Self::Levy6
            | Self::Mixed
            | Self::Ackley5
            | Self::Ellipsoid6
            | Self::HpoLike => 0.0,
            Self::StyblinskiTang6 => -39.166_17 * 6.0,
            Self::Hartmann3 => -3.862_78,
            Self::Michalewicz5 => -4.687_658,
            Self::Schwefel4 => 418.9829 * 4.0 - 4.0 * 420.968_7 * 420.968_7_f64.sqrt().sin(),
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
            Self::StyblinskiTang6 | Self::Ellipsoid6 => box_space(6, -5.0, 5.0),
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
            Self::Hartmann3 => box_space(3, 0.0, 1.0),
            Self::Michalewicz5 => box_space(5, 0.0, std::f64::consts::PI),
            Self::Ackley5 => box_space(5, -32.768, 32.768),
            Self::Schwefel4 => box_space(4, -500.0, 500.0),
            Self::HpoLike => {
                let mut s = SearchSpace::new()
                    .float("lr", 1e-5, 1.0, true)
                    .int("width", 8, 1024, 1, true)
                    .int("layers", 1, 8, 1, false);
                s.params.push(crate::space::Param {
                    name: "dropout".into(),
                    dist: crate::space::Distribution::Float {
                        low: 0.0,
                        high: 0.5,
                        log: false,
                        step: Some(0.05),
                    },
                    default: None,
                    condition: None,
                });
                s.categorical(
                    "optimizer",
                    ["sgd", "adam", "adamw"]
                        .into_iter()
                        .map(|c| ParamValue::Str(c.into()))
                        .collect(),
                )
            }
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
            Self::Hartmann3 => hartmann3(&x),
            Self::Michalewicz5 => michalewicz(&x),
            Self::Ackley5 => ackley(&x),
            Self::Schwefel4 => schwefel(&x),
            Self::Ellipsoid6 => ellipsoid(&x),
            Self::HpoLike => {
                let num = |k: &str| p.get(k).and_then(ParamValue::as_f64).unwrap_or(0.0);
                let (lr_star, pen) = match p.get("optimizer") {
                    Some(ParamValue::Str(s)) if s == "sgd" => (-1.5, 0.3),
                    Some(ParamValue::Str(s)) if s == "adam" => (-3.0, 0.0),
                    _ => (-3.3, 0.1),
                };
                let a = num("lr").log10() - lr_star;
                let b = num("width").log2() - 8.0;
                a * a
                    + 0.25 * b * b
                    + 0.2 * a * b
                    + 0.1 * (num("layers") - 3.0).powi(2)
                    + 2.0 * (num("dropout") - 0.15).powi(2)
                    + pen
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

/// Hartmann 3-d.
pub fn hartmann3(x: &[f64]) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 3]; 4] = [
        [3.0, 10.0, 30.0],
        [0.1, 10.0, 35.0],
        [3.0, 10.0, 30.0],
        [0.1, 10.0, 35.0],
    ];
    const P: [[f64; 3]; 4] = [
        [3689.0, 1170.0, 2673.0],
        [4699.0, 4387.0, 7470.0],
        [1091.0, 8732.0, 5547.0],
        [381.0, 5743.0, 8828.0],
    ];
    -(0..4)
        .map(|i| {
            let s: f64 = (0..3)
                .map(|j| A[i][j] * (x[j] - P[i][j] * 1e-4).powi(2))
                .sum();
            ALPHA[i] * (-s).exp()
        })
        .sum::<f64>()
}

/// Michalewicz with m = 10.
pub fn michalewicz(x: &[f64]) -> f64 {
    use std::f64::consts::PI;
    -x.iter()
        .enumerate()
        .map(|(i, v)| v.sin() * ((i as f64 + 1.0) * v * v / PI).sin().powi(20))
        .sum::<f64>()
}

/// Ackley (a = 20, b = 0.2, c = 2π).
pub fn ackley(x: &[f64]) -> f64 {
    use std::f64::consts::{E, PI};
    let d = x.len() as f64;
    let s1 = x.iter().map(|v| v * v).sum::<f64>() / d;
    let s2 = x.iter().map(|v| (2.0 * PI * v).cos()).sum::<f64>() / d;
    -20.0 * (-0.2 * s1.sqrt()).exp() - s2.exp() + 20.0 + E
}

/// Schwefel.
pub fn schwefel(x: &[f64]) -> f64 {
    418.9829 * x.len() as f64 - x.iter().map(|v| v * v.abs().sqrt().sin()).sum::<f64>()
}

/// Ellipsoid `Σ 10^{6 i / (d − 1)} (x_i − 1)²`.
pub fn ellipsoid(x: &[f64]) -> f64 {
    let d = x.len();
    x.iter()
        .enumerate()
        .map(|(i, v)| 10f64.powf(6.0 * i as f64 / (d as f64 - 1.0)) * (v - 1.0).powi(2))
        .sum()
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
        assert!((hartmann3(&[0.114_614, 0.555_649, 0.852_547]) + 3.862_78).abs() < 1e-4);
        assert!(ackley(&[0.0; 5]).abs() < 1e-12);
        assert!(schwefel(&[420.968_7; 4]).abs() < 1e-3);
        assert_eq!(ellipsoid(&[1.0; 6]), 0.0);
        let m = michalewicz(&[
            2.202_906,
            std::f64::consts::FRAC_PI_2,
            1.284_992,
            1.923_058,
            1.720_470,
        ]);
        assert!((m + 4.687_658).abs() < 1e-3, "{m}");
        let mut q = Params::new();
        q.insert("lr".into(), ParamValue::Float(1e-3));
        q.insert("width".into(), ParamValue::Int(256));
        q.insert("layers".into(), ParamValue::Int(3));
        q.insert("dropout".into(), ParamValue::Float(0.15));
        q.insert("optimizer".into(), ParamValue::Str("adam".into()));
        assert!(TestFunction::HpoLike.eval(&q).abs() < 1e-12);
    }
}
