//! The whole loop, in process: DiLoCo workers train on their shards; each round every
//! worker's encoded pseudo-gradient is an artifact whose SHA-256 the worker signs into the
//! ledger as a contribution; validators measure each contribution's loss improvement on
//! held-out windows drawn from the log root *after* every contribution is committed, and
//! sign their evaluations; the ledger records slashes (copies, invalid or non-finite
//! updates) and settles (stake-weighted median scores, emission split); the updates the
//! ledger paid are screened, averaged and applied with the outer Nesterov step.

use crate::report::{LedgerSummary, Report, RoundReport, Slashed, WorkerRound};
use anyhow::{Context, Result, bail};
use bitnet_model::ModelConfig;
use bitnet_model::data::{TextTokenizer, TokenData, find_corpus, prepare_dataset};
use bitnet_model::export::{EmbeddingType, ExportOptions, Target, TernaryType, export_gguf};
use bitnet_model::model::Model;
use bitnet_model::store::ModelDir;
use bitnet_model::train::{TrainConfig, Trainer, evaluate_tokens};
use burn::tensor::Device;
use diloco::aggregate::{Aggregator, ScreenConfig, Update, screen};
use diloco::bitnet::BitnetWorker;
use diloco::codec::{self, Codec};
use diloco::outer::{OuterOptimizer, OuterState};
use diloco::params::{self, ParamMap};
use diloco::trainer::LocalTrainer;
use incentive_ledger::codec::hex;
use incentive_ledger::identity::{Keypair, PublicKey};
use incentive_ledger::ledger::{Ledger, verify_dir};
use incentive_ledger::merkle::Hash;
use incentive_ledger::record::{
    Body, Contribution, Evaluation, Genesis, Message, Metric, Role, SignedMessage,
};
use incentive_ledger::rewards::{
    EvalScore, Measurement, heldout_batches, heldout_seed, sketch_overlap_ppm,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Ledger origin (every signed message names it).
pub const ORIGIN: &str = "magnet-loop";
/// Coordinates in a contribution's copy-detection sketch.
const SKETCH_K: usize = 256;

/// Which contributions the outer step merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Merge {
    /// Only those the ledger paid (positive consensus score, not slashed).
    Paid,
    /// Every contribution that was not slashed and has a consensus score, paid or not
    /// (pay by score, merge like plain DiLoCo).
    Unslashed,
}

/// What a validator's loss before / after compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Score {
    /// The contribution alone: the global model vs the global model minus the
    /// pseudo-gradient (the contributor's local weights).
    Alone,
    /// Its marginal value to the merge: the outer step on the mean of every other original
    /// (non-copied) contribution vs the outer step on all of them (leave-one-out). Copies
    /// are measured alone (they are slashed anyway).
    Marginal,
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Architecture.
    pub model: ModelConfig,
    /// How `--model` was given (for the report).
    pub model_name: String,
    /// Honest DiLoCo workers.
    pub workers: usize,
    /// Validators (equal stake).
    pub validators: usize,
    /// Outer rounds.
    pub rounds: u64,
    /// Inner steps per round (H).
    pub inner_steps: u64,
    /// Uplink codec of the pseudo-gradients.
    pub codec: Codec,
    /// Corpus directory (else `find_corpus`'s search).
    pub corpus: Option<PathBuf>,
    /// Seed of keys, initialisation and data order.
    pub seed: u64,
    /// Add a worker that resubmits a copy of worker 0's update.
    pub copycat: bool,
    /// Inner batch size.
    pub batch_size: usize,
    /// Inner sequence length (clipped to the model's context).
    pub seq_len: usize,
    /// Inner peak learning rate.
    pub lr: f64,
    /// Outer Nesterov learning rate and momentum.
    pub outer_lr: f32,
    /// Outer momentum.
    pub outer_momentum: f32,
    /// Held-out windows per (validator, contribution) measurement.
    pub heldout_windows: usize,
    /// Validation windows for the per-round val loss (the start of the val stream; the
    /// validators draw from the rest).
    pub eval_windows: usize,
    /// Sketch overlap (ppm) from which a later contribution counts as a copy.
    pub copy_threshold_ppm: u32,
    /// Emission of round 1.
    pub emission: u64,
    /// Rounds per emission halving.
    pub halving_rounds: u64,
    /// Which contributions are merged.
    pub merge: Merge,
    /// What validators measure.
    pub score: Score,
    /// Output directory.
    pub out: PathBuf,
}

/// Deterministic 32-byte seed for a named key.
fn seeded(seed: u64, name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"magnet-loop/v1/key\n");
    h.update(seed.to_be_bytes());
    h.update(name.as_bytes());
    h.finalize().into()
}

/// SHA-256 of named tensors (names, shapes and little-endian f32 values, in name order):
/// the model hash a contribution's parent and a settlement's next base refer to.
pub fn params_hash(p: &ParamMap) -> Hash {
    let mut h = Sha256::new();
    for (name, t) in p {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((t.shape.len() as u64).to_le_bytes());
        for &d in &t.shape {
            h.update((d as u64).to_le_bytes());
        }
        for x in &t.data {
            h.update(x.to_le_bytes());
        }
    }
    h.finalize().into()
}

/// Copy-detection sketch: strictly increasing flat indices of the `SKETCH_K`
/// largest-magnitude coordinates of the update's residual after removing its projection on
/// `common`, the previous round's merged update (public: every node can derive it from the
/// two global models). Honest workers starting from the same weights share the large
/// coordinates of that common direction (top-k of the raw update overlapped by up to ~80 %
/// between honest workers in the micro test), while their residuals come from their own
/// data; a copy keeps the residual of the update it copied.
fn sketch(update: &ParamMap, common: Option<&ParamMap>) -> Vec<u32> {
    let mut flat: Vec<f32> = update
        .values()
        .flat_map(|t| t.data.iter().copied())
        .collect();
    if let Some(c) = common.filter(|c| params::check_same_layout(c, update).is_ok()) {
        let dir: Vec<f32> = c.values().flat_map(|t| t.data.iter().copied()).collect();
        let dot: f64 = flat
            .iter()
            .zip(&dir)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let norm2: f64 = dir.iter().map(|b| f64::from(*b).powi(2)).sum();
        if norm2 > 0.0 && dot.is_finite() {
            let alpha = (dot / norm2) as f32;
            for (a, b) in flat.iter_mut().zip(&dir) {
                *a -= alpha * b;
            }
        }
    }
    let mut idx: Vec<u32> = (0..u32::try_from(flat.len()).unwrap_or(u32::MAX)).collect();
    let k = SKETCH_K.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    let by_mag = |a: &u32, b: &u32| {
        flat[*b as usize]
            .abs()
            .total_cmp(&flat[*a as usize].abs())
            .then(a.cmp(b))
    };
    idx.select_nth_unstable_by(k - 1, by_mag);
    let mut top = idx[..k].to_vec();
    top.sort_unstable();
    top
}

/// A contributor of one round: its key, what it sent and what it signed.
struct Submitted {
    name: String,
    key: PublicKey,
    bytes: u64,
    delta: ParamMap,
    msg: SignedMessage,
}

/// The validators' measuring instrument: held-out windows of the val stream and a plain
/// (no autodiff) device.
struct Heldout {
    model: ModelConfig,
    device: Device,
    val: Vec<u32>,
    token_bytes: std::sync::Arc<Vec<u32>>,
    window: usize,
    eval_windows: usize,
    batch: usize,
}

impl Heldout {
    /// Windows available to validators (after the fixed val-loss windows).
    fn pool(&self) -> u64 {
        (self.val.len() / self.window).saturating_sub(self.eval_windows) as u64
    }

    fn model(&self, p: &ParamMap) -> Result<Model> {
        Ok(Model::from_weight_map(&self.model, p, &self.device)?)
    }

    fn loss(&self, model: &Model, tokens: &[u32]) -> Result<f64> {
        Ok(evaluate_tokens(
            model,
            tokens,
            self.window,
            self.batch,
            &self.token_bytes,
            &self.device,
        )?
        .loss)
    }

    /// Tokens of the held-out windows `idx` (indices into the validators' pool), back to back.
    fn windows(&self, idx: &[u64]) -> Vec<u32> {
        idx.iter()
            .flat_map(|&i| {
                let start = (self.eval_windows + i as usize) * self.window;
                self.val[start..start + self.window].iter().copied()
            })
            .collect()
    }

    /// The fixed validation loss (first `eval_windows` windows).
    fn val_loss(&self, model: &Model) -> Result<f64> {
        let n = (self.eval_windows * self.window).min(self.val.len());
        self.loss(model, &self.val[..n])
    }
}

fn corpus_and_data(cfg: &RunConfig) -> Result<(PathBuf, TextTokenizer, TokenData)> {
    let corpus = match find_corpus(cfg.corpus.as_deref())? {
        Some(found) => found.dir,
        None => {
            bail!("no corpus found: pass --corpus DIR (UTF-8 *.txt files) or set MAGNET_CORPUS")
        }
    };
    let data_dir = cfg.out.join("data");
    prepare_dataset(
        &corpus,
        &data_dir,
        cfg.model.vocab_size,
        cfg.seed,
        &mut |m| eprintln!("{m}"),
    )
    .with_context(|| format!("preparing the dataset in {}", data_dir.display()))?;
    let tokenizer = TextTokenizer::load(&data_dir.join("tokenizer.json"))?;
    let data = TokenData::open(&data_dir)?;
    Ok((corpus, tokenizer, data))
}

/// Runs the whole loop and writes the ledger, the final model, the GGUF file and the
/// report under `cfg.out`.
#[allow(clippy::too_many_lines)]
pub fn run(cfg: &RunConfig) -> Result<Report> {
    if [
        cfg.workers,
        cfg.validators,
        cfg.heldout_windows,
        cfg.eval_windows,
        cfg.batch_size,
        cfg.seq_len,
    ]
    .contains(&0)
        || cfg.rounds == 0
        || cfg.inner_steps == 0
    {
        bail!(
            "--workers, --validators, --rounds, --inner-steps, --heldout-windows, \
             --eval-windows, --batch-size and --seq-len must all be at least 1"
        );
    }
    cfg.codec.validate()?;
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    let (corpus, tokenizer, data) = corpus_and_data(cfg)?;
    let seq_len = cfg.seq_len.min(cfg.model.context_length);
    let window = seq_len + 1;
    let heldout = Heldout {
        model: cfg.model.clone(),
        device: Device::flex(),
        val: data.val.tokens().to_vec(),
        token_bytes: data.token_bytes.clone(),
        window,
        eval_windows: cfg.eval_windows,
        batch: cfg.batch_size.max(1),
    };
    if heldout.pool() < cfg.heldout_windows as u64 {
        bail!(
            "the val stream has {} windows of {window} tokens: need {} for the val loss plus \
             at least {} for the validators (a bigger corpus or a shorter --seq-len)",
            heldout.val.len() / window,
            cfg.eval_windows,
            cfg.heldout_windows
        );
    }

    // Workers: one trainer each on its own shard, all starting from worker 0's weights.
    let total_steps = usize::try_from(cfg.rounds * cfg.inner_steps)?;
    let mut workers = Vec::with_capacity(cfg.workers);
    for i in 0..cfg.workers {
        let mut d = data.clone();
        d.train = d.train.shard(i, cfg.workers);
        let train = TrainConfig {
            seed: cfg.seed.wrapping_mul(1000).wrapping_add(i as u64 + 1),
            steps: total_steps,
            batch_size: cfg.batch_size,
            seq_len,
            warmup_steps: (total_steps / 10).clamp(1, 50),
            lr: cfg.lr,
            lr_stage1_end: cfg.lr * 2.0 / 3.0,
            lr_stage2: cfg.lr / 3.0,
            lr_final: cfg.lr / 30.0,
            eval_windows: cfg.eval_windows,
            ..TrainConfig::default()
        };
        let trainer = Trainer::new(cfg.model.clone(), train, d, &Device::flex())
            .with_context(|| format!("worker {i}: creating the trainer"))?;
        workers.push(BitnetWorker {
            trainer,
            probe: Vec::new(),
            probe_batch: 0,
        });
    }
    let mut global = workers[0].params()?;
    for w in &mut workers {
        w.set_params(&global)?;
    }

    // Ledger: genesis on the initial weights, deterministic keys from the seed.
    let ledger_dir = cfg.out.join("ledger");
    if ledger_dir.exists() {
        std::fs::remove_dir_all(&ledger_dir)
            .with_context(|| format!("removing the old {}", ledger_dir.display()))?;
    }
    let operator = Keypair::from_seed(seeded(cfg.seed, "operator"));
    let operator_pub = operator.public();
    let genesis = Genesis {
        base_model: params_hash(&global),
        initial_emission: cfg.emission,
        halving_rounds: cfg.halving_rounds,
        cap: cfg.emission.saturating_mul(2 * cfg.halving_rounds.max(1)),
        copy_threshold_ppm: cfg.copy_threshold_ppm,
    };
    let emission_total: u64 = (1..=cfg.rounds)
        .scan(0u64, |emitted, r| {
            let e = incentive_ledger::rewards::emission(
                genesis.initial_emission,
                genesis.halving_rounds,
                genesis.cap,
                r,
                *emitted,
            );
            *emitted += e;
            Some(e)
        })
        .sum();
    let mut ledger = Ledger::create(&ledger_dir, ORIGIN, operator, genesis)?;
    let mut names: Vec<String> = (0..cfg.workers).map(|i| format!("worker{i}")).collect();
    if cfg.copycat {
        names.push("copycat".into());
    }
    let worker_keys: Vec<Keypair> = names
        .iter()
        .map(|n| Keypair::from_seed(seeded(cfg.seed, n)))
        .collect();
    let validator_keys: Vec<Keypair> = (0..cfg.validators)
        .map(|i| Keypair::from_seed(seeded(cfg.seed, &format!("validator{i}"))))
        .collect();
    for k in &worker_keys {
        ledger.register(k.public(), Role::Worker, 0)?;
    }
    for k in &validator_keys {
        ledger.register(k.public(), Role::Validator, 100)?;
    }

    let mut outer = OuterState::new(OuterOptimizer::Nesterov {
        lr: cfg.outer_lr,
        momentum: cfg.outer_momentum,
    });
    let initial_val = heldout.val_loss(&heldout.model(&global)?)?;
    eprintln!("round 0: val loss {initial_val:.4}");
    let mut rounds = Vec::new();
    let mut slashes = Vec::new();
    // The previous round's merged update, the shared direction the copy sketch removes.
    let mut common: Option<ParamMap> = None;
    for round in 1..=cfg.rounds {
        let parent = params_hash(&global);
        // Inner training, then one signed contribution per worker.
        let mut submitted: Vec<Submitted> = Vec::new();
        let mut train_losses = Vec::new();
        for (i, w) in workers.iter_mut().enumerate() {
            let mut last = f32::NAN;
            for _ in 0..cfg.inner_steps {
                last = w.train_step()?;
            }
            train_losses.push(f64::from(last));
            let delta = params::sub(&global, &w.params()?)?;
            let bytes = codec::encode(&delta, cfg.codec)?;
            submitted.push(contribute(
                &mut ledger,
                common.as_ref(),
                &worker_keys[i],
                &names[i],
                round,
                parent,
                &bytes,
                Some(last),
            )?);
        }
        if cfg.copycat {
            // Resubmits worker 0's decoded update, scaled by 1 % so the artifact hash differs.
            let mut copy = submitted[0].delta.clone();
            params::scale(&mut copy, 1.01);
            let bytes = codec::encode(&copy, cfg.codec)?;
            submitted.push(contribute(
                &mut ledger,
                common.as_ref(),
                &worker_keys[cfg.workers],
                &names[cfg.workers],
                round,
                parent,
                &bytes,
                None,
            )?);
        }

        // Evaluation: the held-out seeds come from the log root after every contribution.
        let beacon_size = ledger.log().len();
        let beacon = ledger.log().tree().root_at(beacon_size)?;
        let pool = heldout.pool();
        let mut plan: Vec<Vec<(Hash, Vec<u32>)>> = Vec::new(); // [validator][contribution]
        for v in &validator_keys {
            plan.push(
                submitted
                    .iter()
                    .map(|s| {
                        let seed = heldout_seed(&s.msg.id, &v.public().0, &beacon);
                        let idx = heldout_batches(&seed, cfg.heldout_windows, pool);
                        (seed, heldout.windows(&idx))
                    })
                    .collect(),
            );
        }
        // The models each measurement compares, index 0 = the global model; per
        // contribution (model before, model after).
        let mut models: Vec<ParamMap> = vec![global.clone()];
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        // Contributions the ledger will not slash as copies (public once committed).
        let original: Vec<bool> = submitted
            .iter()
            .map(|s| ledger.state().check_copy(&s.msg.id).is_ok())
            .collect();
        for (ci, s) in submitted.iter().enumerate() {
            if cfg.score == Score::Marginal && original[ci] {
                if models.len() == 1 {
                    models.push(merged(&submitted, &original, None, &global, &outer, round)?);
                }
                models.push(merged(
                    &submitted,
                    &original,
                    Some(ci),
                    &global,
                    &outer,
                    round,
                )?);
                pairs.push((models.len() - 1, 1));
            } else {
                // Applying a pseudo-gradient alone gives the contributor's local weights.
                models.push(params::sub(&global, &s.delta)?);
                pairs.push((0, models.len() - 1));
            }
        }
        let mut measured = vec![vec![(0.0f64, 0.0f64); submitted.len()]; validator_keys.len()];
        for (mi, p) in models.iter().enumerate() {
            if !pairs.iter().any(|&(b, a)| b == mi || a == mi) {
                continue;
            }
            let model = heldout.model(p)?;
            for (ci, &(b, a)) in pairs.iter().enumerate() {
                for (vi, row) in plan.iter().enumerate() {
                    if b == mi {
                        measured[vi][ci].0 = heldout.loss(&model, &row[ci].1)?;
                    }
                    if a == mi {
                        measured[vi][ci].1 = heldout.loss(&model, &row[ci].1)?;
                    }
                }
            }
        }
        drop(models);
        let mut evals = Vec::new();
        for (vi, v) in validator_keys.iter().enumerate() {
            let first_seq = ledger.next_seq(&v.public());
            for (ci, s) in submitted.iter().enumerate() {
                let (lb, la) = measured[vi][ci];
                let (verdict, loss_before, loss_after) = Measurement {
                    loss_before: lb,
                    loss_after: la,
                }
                .to_fixed();
                let m = Message {
                    origin: ORIGIN.into(),
                    signer: v.public(),
                    seq: first_seq + ci as u64,
                    round,
                    body: Body::Evaluation(Evaluation {
                        contribution: s.msg.id,
                        beacon_size,
                        heldout_seed: plan[vi][ci].0,
                        verdict,
                        loss_before,
                        loss_after,
                    }),
                };
                evals.push(m.sign(v));
            }
        }
        for (i, r) in ledger.submit_batch(&evals)?.into_iter().enumerate() {
            r.with_context(|| format!("round {round}: evaluation {i} refused"))?;
        }

        // Slashes, then the outcomes the settlement will pay.
        ledger.record_slashes()?;
        let (_, outcomes) = ledger.state().compute_settlement([0; 32]);
        let mut to_merge = Vec::new();
        for (ci, (s, o)) in submitted.iter().zip(&outcomes).enumerate() {
            debug_assert_eq!(o.id, s.msg.id);
            if let Some(reason) = o.slash {
                slashes.push(Slashed {
                    round,
                    worker: s.name.clone(),
                    reason: reason.to_string(),
                    kind: match reason {
                        incentive_ledger::record::SlashReason::Copied(_) => "copied",
                        incentive_ledger::record::SlashReason::Invalid => "invalid",
                        incentive_ledger::record::SlashReason::NonFinite => "non-finite",
                        incentive_ledger::record::SlashReason::FreeRider => "free-rider",
                        incentive_ledger::record::SlashReason::Poisoned => "poisoned",
                    }
                    .into(),
                });
            } else if o.reward > 0 || (cfg.merge == Merge::Unslashed && o.consensus.is_some()) {
                to_merge.push(Update {
                    worker: ci as u32,
                    base_version: round - 1,
                    weight: 1.0,
                    delta: s.delta.clone(),
                });
            }
        }
        // Robust merge of what `--merge` selects: screening (non-finite, norm outliers),
        // mean, outer Nesterov step.
        let merged = to_merge.len();
        let (kept, rejected) = screen(to_merge, &global, round - 1, &ScreenConfig::default());
        let mut downlink = 0u64;
        if kept.is_empty() {
            common = None;
        } else {
            let mean = Aggregator::Mean.aggregate(&kept);
            let step = outer.step(&mean);
            downlink = codec::encode(&step, Codec::F32)?.len() as u64 * cfg.workers as u64;
            params::axpy(&mut global, 1.0, &step)?;
            common = Some(mean);
        }
        for w in &mut workers {
            w.set_params(&global)?;
        }
        let settlement = ledger.settle(params_hash(&global))?;
        let val_loss = heldout.val_loss(&heldout.model(&global)?)?;

        let uplink: u64 = submitted.iter().map(|s| s.bytes).sum();
        let state = ledger.state();
        let sketches: Vec<&[u32]> = submitted
            .iter()
            .map(|s| match &s.msg.msg.body {
                Body::Contribution(c) => c.sketch.as_slice(),
                _ => &[],
            })
            .collect();
        let per_worker = submitted
            .iter()
            .zip(&outcomes)
            .enumerate()
            .map(|(ci, (s, o))| WorkerRound {
                worker: s.name.clone(),
                key: s.key.short(),
                artifact: hex(&match &s.msg.msg.body {
                    Body::Contribution(c) => c.artifact,
                    _ => [0; 32],
                })[..16]
                    .to_string(),
                artifact_bytes: s.bytes,
                max_overlap_ppm: sketches[..ci]
                    .iter()
                    .map(|e| sketch_overlap_ppm(e, sketches[ci]))
                    .max()
                    .unwrap_or(0),
                score_ppm: match o.consensus {
                    Some(EvalScore::Ppm(p)) => Some(p),
                    _ => None,
                },
                slashed: o.slash.map(|r| r.to_string()),
                reward: o.reward,
                balance: state.balances.get(&s.key).copied().unwrap_or(0),
            })
            .collect();
        eprintln!(
            "round {round}: val loss {val_loss:.4}, {merged} to merge / {} kept, {} slashed, \
             emission {}, uplink {uplink} B",
            kept.len(),
            outcomes.iter().filter(|o| o.slash.is_some()).count(),
            settlement.emission
        );
        rounds.push(RoundReport {
            round,
            val_loss,
            train_loss: train_losses.iter().sum::<f64>() / train_losses.len() as f64,
            uplink_bytes: uplink,
            validator_download_bytes: uplink * cfg.validators as u64,
            downlink_bytes: downlink,
            evaluations: evals.len() as u64,
            emission: settlement.emission,
            merged: kept.len(),
            screened_out: rejected.iter().map(|r| r.reason.to_string()).collect(),
            workers: per_worker,
        });
    }

    // Final model, GGUF, and the ledger reopened and verified from its files.
    let model_dir = cfg.out.join("model");
    let weights = global.clone();
    ModelDir::save(&model_dir, &cfg.model, &weights, &tokenizer)?;
    let gguf_path = cfg.out.join("magnet-loop-tq2_0.gguf");
    let options = ExportOptions {
        target: Target::LlamaCpp(TernaryType::Tq2_0),
        embedding: EmbeddingType::F16,
        name: "magnet-loop".into(),
    };
    let (gguf, gguf_note) =
        match export_gguf(&gguf_path, &cfg.model, &weights, &tokenizer, &options) {
            Ok(s) => (
                Some(gguf_path.display().to_string()),
                format!("{} `{}`, {} bytes", s.weight_type, s.architecture, s.bytes),
            ),
            Err(e) => (None, format!("no TQ2_0 export for this config: {e}")),
        };
    let balances_live: Vec<(PublicKey, u64)> = ledger
        .state()
        .balances
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    drop(ledger); // the database is opened exclusively
    let reopened = Ledger::open(&ledger_dir, Some(&operator_pub), None)?;
    let balances_reopened: Vec<(PublicKey, u64)> = reopened
        .state()
        .balances
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    if balances_reopened != balances_live {
        bail!("balances after reopening the ledger differ from the live ones");
    }
    let entries = reopened.log().len();
    let root = reopened.log().tree().root();
    let emitted = reopened.state().emitted;
    drop(reopened);
    let verify = verify_dir(&ledger_dir, Some(&operator_pub))?;
    let final_balances = names
        .iter()
        .zip(&worker_keys)
        .map(|(n, k)| {
            (
                n.clone(),
                balances_live
                    .iter()
                    .find(|(key, _)| *key == k.public())
                    .map_or(0, |(_, b)| *b),
            )
        })
        .collect();
    Ok(Report {
        model: cfg.model_name.clone(),
        parameters: cfg.model.param_count() as u64,
        corpus: corpus.display().to_string(),
        workers: cfg.workers,
        validators: cfg.validators,
        copycat: cfg.copycat,
        rounds: cfg.rounds,
        inner_steps: cfg.inner_steps,
        codec: cfg.codec.to_string(),
        seed: cfg.seed,
        merge: format!("{:?}", cfg.merge).to_lowercase(),
        score: format!("{:?}", cfg.score).to_lowercase(),
        copy_threshold_ppm: cfg.copy_threshold_ppm,
        initial_val_loss: initial_val,
        per_round: rounds,
        slashes,
        final_balances,
        emission_scheduled: emission_total,
        ledger: LedgerSummary {
            dir: ledger_dir.display().to_string(),
            operator: operator_pub.to_string(),
            entries,
            root: hex(&root),
            emitted,
            verified_entries: verify.entries,
            verified_signatures: verify.signatures,
            checkpoint_size: verify.checkpoint_size,
            settlements: verify.settlements,
            total_balance: verify.total_balance,
        },
        model_dir: model_dir.display().to_string(),
        gguf,
        gguf_note,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The global model after the outer step on the mean of the original (non-copied)
/// contributions, leaving out `skip`: what a validator computes for the marginal score.
/// The outer optimizer state is cloned, so nothing advances.
fn merged(
    submitted: &[Submitted],
    original: &[bool],
    skip: Option<usize>,
    global: &ParamMap,
    outer: &OuterState,
    round: u64,
) -> Result<ParamMap> {
    let updates: Vec<Update> = submitted
        .iter()
        .enumerate()
        .filter(|&(i, _)| original[i] && Some(i) != skip)
        .map(|(i, s)| Update {
            worker: i as u32,
            base_version: round - 1,
            weight: 1.0,
            delta: s.delta.clone(),
        })
        .collect();
    let (kept, _) = screen(updates, global, round - 1, &ScreenConfig::default());
    let mut g = global.clone();
    if !kept.is_empty() {
        let step = outer.clone().step(&Aggregator::Mean.aggregate(&kept));
        params::axpy(&mut g, 1.0, &step)?;
    }
    Ok(g)
}

/// Hashes `bytes` (the artifact), signs and submits the worker's contribution.
#[allow(clippy::too_many_arguments)]
fn contribute(
    ledger: &mut Ledger,
    common: Option<&ParamMap>,
    key: &Keypair,
    name: &str,
    round: u64,
    parent: Hash,
    bytes: &[u8],
    train_loss: Option<f32>,
) -> Result<Submitted> {
    // What validators and the merge see is the decoded artifact, not the worker's floats.
    let (_, delta) = codec::decode(bytes, name)?;
    let artifact: Hash = Sha256::digest(bytes).into();
    let metrics = train_loss
        .filter(|l| l.is_finite())
        .map(|l| Metric {
            name: "train_loss".into(),
            micro: (f64::from(l) * 1e6).round() as i64,
        })
        .into_iter()
        .collect();
    let m = Message {
        origin: ORIGIN.into(),
        signer: key.public(),
        seq: ledger.next_seq(&key.public()),
        round,
        body: Body::Contribution(Contribution {
            parent_model: parent,
            artifact,
            artifact_size: bytes.len() as u64,
            metrics,
            sketch: sketch(&delta, common),
        }),
    };
    let msg = m.sign(key);
    ledger
        .submit(&msg)
        .with_context(|| format!("round {round}: {name}'s contribution refused"))?;
    Ok(Submitted {
        name: name.into(),
        key: key.public(),
        bytes: bytes.len() as u64,
        delta,
        msg,
    })
}

/// Where the report files go.
pub fn report_paths(out: &Path) -> (PathBuf, PathBuf) {
    (out.join("report.json"), out.join("report.md"))
}
