//! Outer optimizers: turn the aggregated pseudo-gradient into a step on the global
//! weights.

use crate::params::{NamedTensor, ParamMap};
use serde::{Deserialize, Serialize};

/// The outer optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OuterOptimizer {
    /// SGD with Nesterov momentum (PyTorch form), DiLoCo's default: lr 0.7, momentum 0.9.
    Nesterov {
        /// Outer learning rate.
        lr: f32,
        /// Momentum.
        momentum: f32,
    },
    /// Plain SGD (lr 1 is FedAvg).
    Sgd {
        /// Outer learning rate.
        lr: f32,
    },
    /// The new global is the (aggregated) mean of the workers' weights: SGD with lr 1.
    Average,
}

impl Default for OuterOptimizer {
    fn default() -> Self {
        OuterOptimizer::Nesterov {
            lr: 0.7,
            momentum: 0.9,
        }
    }
}

impl std::str::FromStr for OuterOptimizer {
    type Err = crate::Error;
    /// `nesterov[:lr[:momentum]]`, `sgd[:lr]`, `average`.
    fn from_str(s: &str) -> crate::Result<Self> {
        let mut parts = s.split(':');
        let kind = parts.next().unwrap_or_default();
        let mut num = |d: f32| -> crate::Result<f32> {
            parts.next().map_or(Ok(d), |a| {
                a.parse().map_err(|e| crate::Error::Config {
                    field: "outer".into(),
                    message: format!("`{a}`: {e}"),
                })
            })
        };
        Ok(match kind {
            "nesterov" => OuterOptimizer::Nesterov {
                lr: num(0.7)?,
                momentum: num(0.9)?,
            },
            "sgd" => OuterOptimizer::Sgd { lr: num(1.0)? },
            "average" | "avg" => OuterOptimizer::Average,
            other => {
                return Err(crate::Error::Config {
                    field: "outer".into(),
                    message: format!("unknown outer optimizer `{other}` (nesterov, sgd, average)"),
                });
            }
        })
    }
}

impl OuterOptimizer {
    /// The learning rate the contribution score uses to apply one update alone.
    pub fn lr(&self) -> f32 {
        match *self {
            OuterOptimizer::Nesterov { lr, .. } | OuterOptimizer::Sgd { lr } => lr,
            OuterOptimizer::Average => 1.0,
        }
    }
}

/// An outer optimizer with its momentum buffers (by tensor name, so streaming
/// fragments each keep their own).
#[derive(Debug, Clone)]
pub struct OuterState {
    /// The rule.
    pub optimizer: OuterOptimizer,
    momentum: ParamMap,
}

impl OuterState {
    /// Fresh state (zero momentum).
    pub fn new(optimizer: OuterOptimizer) -> Self {
        Self {
            optimizer,
            momentum: ParamMap::new(),
        }
    }

    /// State restored from [`momentum`](Self::momentum) (a resumed coordinator).
    pub fn with_momentum(optimizer: OuterOptimizer, momentum: ParamMap) -> Self {
        Self {
            optimizer,
            momentum,
        }
    }

    /// The momentum buffers by tensor name (empty before the first step, and always for
    /// stateless optimizers).
    pub fn momentum(&self) -> &ParamMap {
        &self.momentum
    }

    /// Whether the optimizer carries state between steps (Nesterov's momentum).
    pub fn is_stateful(&self) -> bool {
        matches!(self.optimizer, OuterOptimizer::Nesterov { .. })
    }

    /// The step to add to the global weights for the aggregated pseudo-gradient `delta`
    /// (global minus local, so the step points against it).
    pub fn step(&mut self, delta: &ParamMap) -> ParamMap {
        delta
            .iter()
            .map(|(name, d)| {
                let data = match self.optimizer {
                    OuterOptimizer::Average => d.data.iter().map(|x| -x).collect(),
                    OuterOptimizer::Sgd { lr } => d.data.iter().map(|x| -lr * x).collect(),
                    OuterOptimizer::Nesterov { lr, momentum } => {
                        let buf = self
                            .momentum
                            .entry(name.clone())
                            .or_insert_with(|| NamedTensor::zeros(d.shape.clone()));
                        buf.data
                            .iter_mut()
                            .zip(&d.data)
                            .map(|(b, &g)| {
                                *b = momentum * *b + g;
                                -lr * (g + momentum * *b)
                            })
                            .collect()
                    }
                };
                (
                    name.clone(),
                    NamedTensor {
                        shape: d.shape.clone(),
                        data,
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: f32) -> ParamMap {
        let mut m = ParamMap::new();
        m.insert(
            "w".into(),
            NamedTensor {
                shape: vec![1],
                data: vec![v],
            },
        );
        m
    }

    #[test]
    fn nesterov_matches_the_pytorch_recurrence() {
        let mut s = OuterState::new(OuterOptimizer::default());
        // buf1 = 1, step = -0.7 (1 + 0.9) ; buf2 = 0.9 + 2 = 2.9, step = -0.7 (2 + 0.9*2.9)
        assert!((s.step(&one(1.0))["w"].data[0] + 0.7 * 1.9).abs() < 1e-6);
        assert!((s.step(&one(2.0))["w"].data[0] + 0.7 * (2.0 + 0.9 * 2.9)).abs() < 1e-6);
        let mut avg = OuterState::new(OuterOptimizer::Average);
        assert_eq!(avg.step(&one(0.25))["w"].data[0], -0.25);
        assert_eq!(
            "sgd:0.5".parse::<OuterOptimizer>().unwrap(),
            OuterOptimizer::Sgd { lr: 0.5 }
        );
        assert!("adam".parse::<OuterOptimizer>().is_err());
    }
}
