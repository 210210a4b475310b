//! Training hyper-parameters and the BitNet two-stage schedule.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Training configuration (serde: TOML / JSON; missing fields take the defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed for initialisation and batch sampling.
    pub seed: u64,
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Tokens per sequence (at most the model's context length).
    pub seq_len: usize,
    /// Micro-batches accumulated per optimizer step.
    pub grad_accum: usize,
    /// Linear warm-up steps from 0 to `lr`.
    pub warmup_steps: usize,
    /// Stage-1 peak learning rate.
    pub lr: f64,
    /// Learning rate reached at the end of stage 1 (linear decay from `lr`).
    pub lr_stage1_end: f64,
    /// Stage-2 peak: the rate drops to this at half way, then decays linearly...
    pub lr_stage2: f64,
    /// ...to this at the last step.
    pub lr_final: f64,
    /// Decoupled weight decay in stage 1 (0 in stage 2, as in the BitNet FAQ).
    pub weight_decay: f64,
    /// AdamW beta 1.
    pub beta1: f32,
    /// AdamW beta 2.
    pub beta2: f32,
    /// Clip the global gradient norm to this (0 disables clipping).
    pub grad_clip: f64,
    /// Validate every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Validation windows of `seq_len` tokens per evaluation.
    pub eval_windows: usize,
    /// Checkpoint every this many steps (0: never).
    pub checkpoint_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 1234,
            steps: 1000,
            batch_size: 8,
            seq_len: 256,
            grad_accum: 1,
            warmup_steps: 50,
            lr: 3e-3,
            lr_stage1_end: 2e-3,
            lr_stage2: 1e-3,
            lr_final: 1e-4,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            grad_clip: 1.0,
            eval_every: 100,
            eval_windows: 32,
            checkpoint_every: 0,
        }
    }
}

impl TrainConfig {
    /// Checks every field (and `seq_len` against the model's context), naming the first
    /// one that is wrong.
    pub fn validate(&self, context_length: usize) -> Result<()> {
        let fail = |field: &str, message: String| {
            Err(Error::Config {
                field: field.into(),
                message,
            })
        };
        for (field, v) in [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("seq_len", self.seq_len),
            ("grad_accum", self.grad_accum),
            ("eval_windows", self.eval_windows),
        ] {
            if v == 0 {
                return fail(field, "must be at least 1".into());
            }
        }
        if self.seq_len > context_length {
            return fail(
                "seq_len",
                format!(
                    "{} exceeds the model's context_length {context_length}",
                    self.seq_len
                ),
            );
        }
        for (field, v) in [
            ("lr", self.lr),
            ("lr_stage1_end", self.lr_stage1_end),
            ("lr_stage2", self.lr_stage2),
            ("lr_final", self.lr_final),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return fail(field, format!("must be in [0, 1], got {v}"));
            }
        }
        if self.lr <= 0.0 {
            return fail("lr", "must be positive".into());
        }
        if !(self.weight_decay.is_finite() && (0.0..1.0).contains(&self.weight_decay)) {
            return fail(
                "weight_decay",
                format!("must be in [0, 1), got {}", self.weight_decay),
            );
        }
        for (field, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(b.is_finite() && (0.0..1.0).contains(&b)) {
                return fail(field, format!("must be in [0, 1), got {b}"));
            }
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return fail(
                "grad_clip",
                format!("must be a non-negative number, got {}", self.grad_clip),
            );
        }
        Ok(())
    }

    /// Parses TOML, filling missing fields with defaults (validated against
    /// `context_length`).
    pub fn from_toml(text: &str, context_length: usize) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| Error::Toml {
            what: "training config".into(),
            source: e,
        })?;
        config.validate(context_length)?;
        Ok(config)
    }

    /// Tokens consumed per optimizer step.
    pub fn tokens_per_step(&self) -> usize {
        self.batch_size * self.seq_len * self.grad_accum
    }

    /// First step of stage 2.
    pub fn stage2_start(&self) -> usize {
        self.steps / 2
    }

    /// Learning rate for 0-based `step`: linear warm-up, stage 1 linear from `lr` to
    /// `lr_stage1_end`, a drop at half way to `lr_stage2`, then linear to `lr_final`.
    pub fn lr_at(&self, step: usize) -> f64 {
        let half = self.stage2_start();
        if step < self.warmup_steps.min(half) {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let lerp = |a: f64, b: f64, i: usize, n: usize| {
            if n <= 1 {
                a
            } else {
                a + (b - a) * i as f64 / (n - 1) as f64
            }
        };
        if step < half {
            let start = self.warmup_steps.min(half);
            lerp(self.lr, self.lr_stage1_end, step - start, half - start)
        } else {
            lerp(
                self.lr_stage2,
                self.lr_final,
                step - half,
                self.steps.saturating_sub(half),
            )
        }
    }

    /// Weight decay for `step`: `weight_decay` in stage 1, 0 in stage 2.
    pub fn weight_decay_at(&self, step: usize) -> f64 {
        if step < self.stage2_start() {
            self.weight_decay
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_stage_schedule_has_its_shape() {
        let c = TrainConfig {
            steps: 100,
            warmup_steps: 10,
            ..TrainConfig::default()
        };
        assert!((c.lr_at(0) - c.lr / 10.0).abs() < 1e-12);
        assert!((c.lr_at(9) - c.lr).abs() < 1e-12);
        assert!((c.lr_at(10) - c.lr).abs() < 1e-12);
        assert!((c.lr_at(49) - c.lr_stage1_end).abs() < 1e-12);
        assert!((c.lr_at(50) - c.lr_stage2).abs() < 1e-12);
        assert!((c.lr_at(99) - c.lr_final).abs() < 1e-12);
        assert_eq!(c.weight_decay_at(49), 0.1);
        assert_eq!(c.weight_decay_at(50), 0.0);
        for s in 10..49 {
            assert!(c.lr_at(s + 1) <= c.lr_at(s));
        }
    }

    #[test]
    fn invalid_values_name_their_field() {
        let c = TrainConfig {
            seq_len: 512,
            ..TrainConfig::default()
        };
        let err = c.validate(256).unwrap_err().to_string();
        assert!(err.contains("seq_len") && err.contains("256"), "{err}");
        let c = TrainConfig {
            lr: f64::NAN,
            ..TrainConfig::default()
        };
        assert!(c.validate(256).unwrap_err().to_string().contains("`lr`"));
        let err = TrainConfig::from_toml("stepz = 3", 256)
            .unwrap_err()
            .to_string();
        assert!(err.contains("stepz"), "{err}");
        let c = TrainConfig::from_toml("steps = 7\nbeta2 = 0.95", 256).unwrap();
        assert_eq!(c.steps, 7);
    }
}
