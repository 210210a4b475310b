//! The default sampler: GP and TPE compete inside the study, and the one whose recent
//! proposals turned out better proposes, decided again at every trial from the study's own
//! records.
//!
//! Both model families win somewhere (docs/autoresearch.md): the GP is in another class on
//! smooth landscapes, the TPE on heavy-tailed, multimodal and deceptive ones, and the two
//! kinds share search spaces, so no rule by space type can choose. The evidence is the
//! outcome of each sampler's own proposals, which every trial records (user attribute
//! `sampler`): after the startup, `alternate` trials go to the GP and the TPE in turn; from
//! then on each proposal goes to the sampler whose last `window` proposals have the better
//! mean rank among all complete trials (rank 0 = best), except every `explore`-th trial,
//! which goes to the other one so its evidence stays current. Both samplers always model
//! every trial, whoever proposed it. A GP fit that attributes more than
//! `max_noise_fraction` of the variance to noise (rugged landscapes) sends the proposal to
//! the TPE outright.
//!
//! Static exceptions that stay with the TPE: multi-objective studies, spaces with more than
//! `max_categorical` categorical parameters (a Hamming kernel learns little from few trials
//! over many categories) and studies past `max_gp_trials` complete trials (the GP's cost
//! grows with the cube of the trials). Every decision is recorded in the trial's user
//! attribute `sampler` (`{"sampler": "gp"|"tpe", "reason": …}`).
//!
//! The sampler keeps no state between proposals: its decision is a function of the stored
//! trials (their values and recorded choices), so a resumed study decides and proposes
//! exactly as an uninterrupted one.

use serde_json::{Value, json};

use super::{GpSampler, SampleContext, Sampler, TpeSampler};
use crate::error::Result;
use crate::space::Params;
use crate::trial::TrialState;

/// GP where the study's evidence says the landscape is smooth, TPE elsewhere.
#[derive(Debug, Clone)]
pub struct AutoSampler {
    /// The GP.
    pub gp: GpSampler,
    /// The TPE.
    pub tpe: TpeSampler,
    /// More categorical parameters than this: TPE throughout.
    pub max_categorical: usize,
    /// From this many complete trials on: TPE.
    pub max_gp_trials: usize,
    /// Above this fitted noise fraction the TPE proposes.
    pub max_noise_fraction: f64,
    /// Trials after the startup that alternate between the two samplers.
    pub alternate: usize,
    /// Recent proposals per sampler whose ranks are compared.
    pub window: usize,
    /// Every `explore`-th trial goes to the sampler that is behind.
    pub explore: u64,
    /// The last decision (written by `sample`; the study stores it with the trial).
    pub decision: Option<Value>,
}

impl Default for AutoSampler {
    fn default() -> Self {
        Self {
            gp: GpSampler::default(),
            tpe: TpeSampler::default(),
            max_categorical: 3,
            max_gp_trials: 400,
            max_noise_fraction: 0.1,
            alternate: 20,
            window: 10,
            explore: 5,
            decision: None,
        }
    }
}

impl AutoSampler {
    /// The default rule (see the module docs).
    pub fn new() -> Self {
        Self::default()
    }
}

/// Mean of the last `k` values.
fn recent_mean(xs: &[f64], k: usize) -> Option<f64> {
    let tail = &xs[xs.len().saturating_sub(k)..];
    (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64)
}

impl AutoSampler {
    /// Whether the GP proposes this trial, why, and the two samplers' recent mean ranks.
    fn choose(&self, ctx: &SampleContext<'_>) -> (bool, &'static str, (Option<f64>, Option<f64>)) {
        let dir = ctx.directions[0];
        let mut complete: Vec<&crate::trial::Trial> = ctx
            .trials
            .iter()
            .filter(|t| t.state == TrialState::Complete && t.value().is_some_and(f64::is_finite))
            .collect();
        complete.sort_by(|a, b| {
            dir.loss(a.value().unwrap_or(f64::NAN))
                .total_cmp(&dir.loss(b.value().unwrap_or(f64::NAN)))
                .then(a.number.cmp(&b.number))
        });
        let denom = (complete.len().max(2) - 1) as f64;
        let mut rank_of: Vec<(u64, f64)> = complete
            .iter()
            .enumerate()
            .map(|(i, t)| (t.number, i as f64 / denom))
            .collect();
        rank_of.sort_by_key(|r| r.0);
        let (mut gp, mut tpe) = (Vec::new(), Vec::new());
        // Trials in number order: the proposals each sampler made after the startup.
        for t in ctx.trials {
            let Some(choice) = t.user_attrs.get("sampler") else {
                continue;
            };
            if choice["reason"] == "startup" {
                continue;
            }
            let Ok(i) = rank_of.binary_search_by_key(&t.number, |r| r.0) else {
                continue;
            };
            match choice["sampler"].as_str() {
                Some("gp") => gp.push(rank_of[i].1),
                Some("tpe") => tpe.push(rank_of[i].1),
                _ => {}
            }
        }
        let ranks = (
            recent_mean(&gp, self.window),
            recent_mean(&tpe, self.window),
        );
        let proposed = (gp.len() + tpe.len()) as u64;
        if proposed < self.alternate as u64 {
            return (ctx.number.is_multiple_of(2), "alternate", ranks);
        }
        let gp_leads = match ranks {
            (Some(g), Some(t)) => g <= t,
            (Some(_), None) => true,
            _ => false,
        };
        if ctx.number.is_multiple_of(self.explore.max(2)) {
            (!gp_leads, "explore", ranks)
        } else {
            (gp_leads, "evidence", ranks)
        }
    }
}

impl Sampler for AutoSampler {
    fn sample(&mut self, ctx: &mut SampleContext<'_>) -> Result<Params> {
        let complete = ctx
            .trials
            .iter()
            .filter(|t| t.state == TrialState::Complete)
            .count();
        let n_cat = ctx
            .space
            .params
            .iter()
            .filter(|p| p.dist.is_categorical())
            .count();
        let tpe = |this: &mut Self, ctx: &mut SampleContext<'_>, reason: &str| {
            this.decision = Some(json!({"sampler": "tpe", "reason": reason}));
            this.tpe.sample(ctx)
        };
        if ctx.directions.len() > 1 {
            return tpe(self, ctx, "multi-objective");
        }
        if n_cat > self.max_categorical {
            return tpe(self, ctx, "many categorical parameters");
        }
        if complete >= self.max_gp_trials {
            return tpe(self, ctx, "large budget");
        }
        if complete < self.gp.n_startup_trials.max(self.tpe.n_startup_trials) {
            return tpe(self, ctx, "startup");
        }
        let (use_gp, reason, ranks) = self.choose(ctx);
        if !use_gp {
            return tpe(self, ctx, reason);
        }
        let Some(model) = self.gp.fit_study(ctx.space, ctx.trials, ctx.directions) else {
            return tpe(self, ctx, "no GP fit");
        };
        let noise = model.noise_fraction();
        if noise > self.max_noise_fraction {
            self.decision =
                Some(json!({"sampler": "tpe", "reason": "noisy GP fit", "noise_fraction": noise}));
            return self.tpe.sample(ctx);
        }
        // The fitted kernel is recorded too: the GP's next fit starts from it.
        self.decision = Some(json!({
            "sampler": "gp", "reason": reason, "noise_fraction": noise,
            "mean_rank_gp": ranks.0, "mean_rank_tpe": ranks.1,
            "gp_kernel": model.raw_kernel(),
        }));
        self.gp.sample_with_model(ctx, Some(model))
    }

    fn name(&self) -> String {
        "auto".into()
    }

    fn last_decision(&self) -> Option<Value> {
        self.decision.clone()
    }
}
