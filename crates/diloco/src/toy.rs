//! A small deterministic trainer (linear regression with minibatch SGD) for tests, the
//! protocol demo binaries and examples that must not need a neural network.

use crate::drift::Features;
use crate::error::{Error, Result};
use crate::params::{NamedTensor, ParamMap};
use crate::trainer::{LocalTrainer, LossEvaluator};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Fixed regression data `y = X w* + b* + noise`, generated from a seed.
#[derive(Debug, Clone)]
pub struct RegressionData {
    /// Input width.
    pub dim: usize,
    /// Inputs, `n x dim` row-major.
    pub x: Vec<f32>,
    /// Targets.
    pub y: Vec<f32>,
}

impl RegressionData {
    /// `n` examples of width `dim`, generated deterministically from `seed`.
    pub fn generate(n: usize, dim: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let w: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let mut x = Vec::with_capacity(n * dim);
        let mut y = Vec::with_capacity(n);
        for _ in 0..n {
            let row: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let t = row.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>()
                + 0.5
                + 0.05 * rng.random_range(-1.0f32..1.0);
            x.extend(row);
            y.push(t);
        }
        Self { dim, x, y }
    }

    /// The first `n` examples and the rest (train / held-out of one problem).
    pub fn split(&self, n: usize) -> (Self, Self) {
        let n = n.min(self.y.len());
        let part = |a: usize, b: usize| Self {
            dim: self.dim,
            x: self.x[a * self.dim..b * self.dim].to_vec(),
            y: self.y[a..b].to_vec(),
        };
        (part(0, n), part(n, self.y.len()))
    }

    /// Examples `i` with `i % parts == part` (a worker's shard).
    pub fn shard(&self, part: usize, parts: usize) -> Self {
        let mut out = Self {
            dim: self.dim,
            x: Vec::new(),
            y: Vec::new(),
        };
        for i in (part..self.y.len()).step_by(parts.max(1)) {
            out.x
                .extend_from_slice(&self.x[i * self.dim..(i + 1) * self.dim]);
            out.y.push(self.y[i]);
        }
        out
    }

    /// Mean squared error of weights `w`, bias `b`.
    pub fn mse(&self, w: &[f32], b: f32) -> f32 {
        let n = self.y.len().max(1);
        (self
            .x
            .chunks_exact(self.dim)
            .zip(&self.y)
            .map(|(r, &t)| {
                let e = f64::from(r.iter().zip(w).map(|(a, c)| a * c).sum::<f32>() + b - t);
                e * e
            })
            .sum::<f64>()
            / n as f64) as f32
    }
}

/// Linear regression trained by minibatch SGD over a deterministic batch order.
#[derive(Debug)]
pub struct LinearTrainer {
    train: RegressionData,
    held_out: RegressionData,
    w: Vec<f32>,
    b: f32,
    lr: f32,
    batch: usize,
    rng: StdRng,
}

impl LinearTrainer {
    /// A trainer on `train` (evaluated on `held_out`) with zero initial weights.
    pub fn new(
        train: RegressionData,
        held_out: RegressionData,
        lr: f32,
        batch: usize,
        seed: u64,
    ) -> Self {
        Self {
            w: vec![0.0; train.dim],
            b: 0.0,
            train,
            held_out,
            lr,
            batch: batch.max(1),
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl LocalTrainer for LinearTrainer {
    fn params(&self) -> Result<ParamMap> {
        let mut m = ParamMap::new();
        m.insert(
            "blk.0.weight".into(),
            NamedTensor {
                shape: vec![self.w.len()],
                data: self.w.clone(),
            },
        );
        m.insert(
            "bias".into(),
            NamedTensor {
                shape: vec![1],
                data: vec![self.b],
            },
        );
        Ok(m)
    }

    fn set_params(&mut self, params: &ParamMap) -> Result<()> {
        for (name, t) in params {
            match name.as_str() {
                "blk.0.weight" if t.data.len() == self.w.len() => self.w.clone_from(&t.data),
                "bias" if t.data.len() == 1 => self.b = t.data[0],
                _ => {
                    return Err(Error::Tensor {
                        name: name.clone(),
                        message: format!("not a tensor of this model (shape {:?})", t.shape),
                    });
                }
            }
        }
        Ok(())
    }

    fn train_step(&mut self) -> Result<f32> {
        let n = self.train.y.len();
        if n == 0 {
            return Err(Error::Config {
                field: "shard".into(),
                message: "the toy trainer's shard holds no examples".into(),
            });
        }
        let d = self.train.dim;
        let mut gw = vec![0.0f32; d];
        let mut gb = 0.0f32;
        let mut loss = 0.0f32;
        for _ in 0..self.batch {
            let i = self.rng.random_range(0..n);
            let row = &self.train.x[i * d..(i + 1) * d];
            let e =
                row.iter().zip(&self.w).map(|(a, c)| a * c).sum::<f32>() + self.b - self.train.y[i];
            loss += e * e;
            for (g, &a) in gw.iter_mut().zip(row) {
                *g += 2.0 * e * a;
            }
            gb += 2.0 * e;
        }
        let s = self.lr / self.batch as f32;
        for (w, g) in self.w.iter_mut().zip(gw) {
            *w -= s * g;
        }
        self.b -= s * gb;
        Ok(loss / self.batch as f32)
    }

    fn tokens_per_step(&self) -> u64 {
        self.batch as u64
    }

    fn eval_loss(&mut self) -> Result<f32> {
        Ok(self.held_out.mse(&self.w, self.b))
    }

    fn probe_features(&mut self) -> Result<Option<Features>> {
        // Per-input contributions x_j * w_j: a "hidden layer" whose geometry moves with w.
        let rows = self.held_out.y.len().min(64);
        let d = self.held_out.dim;
        let data = self.held_out.x[..rows * d]
            .chunks_exact(d)
            .flat_map(|r| {
                r.iter()
                    .zip(&self.w)
                    .map(|(a, w)| a * w)
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(Some(Features {
            rows,
            cols: d,
            data,
        }))
    }
}

/// Held-out MSE of any linear-regression weights: the toy [`LossEvaluator`].
#[derive(Debug, Clone)]
pub struct LinearEvaluator(pub RegressionData);

impl LossEvaluator for LinearEvaluator {
    fn loss(&mut self, params: &ParamMap) -> Result<f32> {
        let get = |n: &str| {
            params.get(n).ok_or_else(|| Error::Tensor {
                name: n.into(),
                message: "missing".into(),
            })
        };
        Ok(self.0.mse(&get("blk.0.weight")?.data, get("bias")?.data[0]))
    }
}
