//! Next-token sampling: greedy, temperature, top-k and top-p (nucleus) with a seeded RNG.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// How to pick the next token from the logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingConfig {
    /// 0 means greedy (argmax); otherwise logits are divided by it before softmax.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = no limit).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`
    /// (1.0 = no limit).
    pub top_p: f32,
    /// RNG seed: the same seed, prompt and model give the same text.
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            seed: 0,
        }
    }
}

impl SamplingConfig {
    /// Argmax decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// A sampler with its own RNG stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    rng: Xoshiro256PlusPlus,
}

impl Sampler {
    /// A sampler seeded from `config.seed`.
    pub fn new(config: SamplingConfig) -> Self {
        let rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
        Self { config, rng }
    }

    /// The configuration in use.
    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// Picks a token id from one row of logits. Non-finite logits are never picked
    /// unless every logit is non-finite (then id 0).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let c = &self.config;
        if c.temperature <= 0.0 || c.top_k == 1 {
            return argmax(logits);
        }
        let mut candidates: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| (i as u32, v / c.temperature))
            .collect();
        if candidates.is_empty() {
            return 0;
        }
        // Descending by logit, ties by id, so the order (and the draw) is deterministic.
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if c.top_k > 0 && c.top_k < candidates.len() {
            candidates.select_nth_unstable_by(c.top_k - 1, by_logit);
            candidates.truncate(c.top_k);
        }
        candidates.sort_by(by_logit);
        let max = candidates[0].1;
        let mut probs: Vec<f32> = candidates.iter().map(|(_, v)| (v - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        for p in &mut probs {
            *p /= total;
        }
        if c.top_p < 1.0 {
            let mut cumulative = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    cumulative += p;
                    cumulative >= c.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, p) in probs.iter().enumerate() {
            if r < *p {
                return candidates[i].0;
            }
            r -= p;
        }
        candidates[probs.len() - 1].0
    }
}

/// Index of the largest finite logit (the lowest index on ties; 0 if none is finite).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = (0u32, f32::NEG_INFINITY);
    for (i, &v) in logits.iter().enumerate() {
        if v.is_finite() && v > best.1 {
            best = (i as u32, v);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(SamplingConfig::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, f32::NAN, 2.9]), 1);
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let logits = [5.0, 4.9, 0.0, -1.0, 4.8];
        let mut s = Sampler::new(SamplingConfig {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            seed: 7,
        });
        for _ in 0..200 {
            assert!(matches!(s.sample(&logits), 0 | 1));
        }
        // One dominant token holds > 99.9 % of the mass: top-p 0.5 keeps only it.
        let mut s = Sampler::new(SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            seed: 7,
        });
        for _ in 0..200 {
            assert_eq!(s.sample(&[20.0, 1.0, 0.0, 2.0]), 0);
        }
    }

    #[test]
    fn temperature_sampling_follows_the_distribution() {
        // p = softmax([ln 1, ln 3]) = [0.25, 0.75].
        let logits = [0.0, 3f32.ln()];
        let mut s = Sampler::new(SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 1,
        });
        let ones = (0..20_000).filter(|_| s.sample(&logits) == 1).count();
        let frac = ones as f64 / 20_000.0;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }

    proptest! {
        #[test]
        fn same_seed_same_draws(
            logits in proptest::collection::vec(-5.0f32..5.0, 2..50),
            seed in any::<u64>(),
        ) {
            let config = SamplingConfig { seed, ..SamplingConfig::default() };
            let mut a = Sampler::new(config.clone());
            let mut b = Sampler::new(config);
            for _ in 0..5 {
                let (x, y) = (a.sample(&logits), b.sample(&logits));
                prop_assert_eq!(x, y);
                prop_assert!((x as usize) < logits.len());
            }
        }
    }
}
