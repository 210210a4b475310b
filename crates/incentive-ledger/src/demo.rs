//! A deterministic simulation that produces a real ledger: registrations, workers submitting
//! updates to a small quadratic model, validators measuring them on held-out batches drawn
//! after the commit (one validator lies), a copied update, a non-finite update, slashes and
//! settlements. Same seed, same log entries and balances.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::identity::{Keypair, PublicKey};
use crate::ledger::Ledger;
use crate::merkle::Hash;
use crate::record::{Body, Contribution, Evaluation, Genesis, Message, Metric, Role};
use crate::rewards::{Measurement, heldout_batches, heldout_seed};

const DIM: usize = 256;
const BATCH: usize = 32;
const SKETCH_K: usize = 24;

/// What the demo did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSummary {
    /// Rounds settled.
    pub rounds: u64,
    /// Entries in the log.
    pub entries: u64,
    /// Slashes recorded.
    pub slashes: u64,
    /// Final balances by key.
    pub balances: Vec<(PublicKey, u64)>,
}

fn seeded(seed: u64, name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seed.to_be_bytes());
    h.update(name.as_bytes());
    h.finalize().into()
}

/// Tiny deterministic generator (SplitMix64) for the simulated numbers.
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

fn model_hash(w: &[f64]) -> Hash {
    let mut h = Sha256::new();
    for x in w {
        h.update(x.to_le_bytes());
    }
    h.finalize().into()
}

/// Mean squared distance to the target over the coordinates picked by `batches`.
fn loss(w: &[f64], target: &[f64], batches: &[u64]) -> f64 {
    batches
        .iter()
        .map(|&i| {
            let d = w[i as usize] - target[i as usize];
            d * d
        })
        .sum::<f64>()
        / batches.len() as f64
}

fn sketch(update: &[f64]) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..update.len() as u32).collect();
    idx.sort_by(|&a, &b| {
        update[b as usize]
            .abs()
            .total_cmp(&update[a as usize].abs())
            .then(a.cmp(&b))
    });
    let mut top: Vec<u32> = idx[..SKETCH_K].to_vec();
    top.sort_unstable();
    top
}

/// Runs `rounds` simulated rounds into a new ledger in `dir`.
pub fn run_demo(dir: &Path, seed: u64, rounds: u64) -> Result<DemoSummary> {
    let op = Keypair::from_seed(seeded(seed, "operator"));
    let workers: Vec<Keypair> = (0..4)
        .map(|i| Keypair::from_seed(seeded(seed, &format!("worker{i}"))))
        .collect();
    let validators: Vec<Keypair> = (0..3)
        .map(|i| Keypair::from_seed(seeded(seed, &format!("validator{i}"))))
        .collect();
    let stakes = [400u64, 350, 250]; // validator 2 lies, holding a minority of stake
    let mut rng = Mix(seed);
    let target: Vec<f64> = (0..DIM).map(|_| rng.unit()).collect();
    let mut w = vec![0.0f64; DIM];
    let genesis = Genesis {
        base_model: model_hash(&w),
        initial_emission: 1_000_000,
        halving_rounds: 2,
        cap: 10_000_000,
        copy_threshold_ppm: 600_000,
    };
    let mut l = Ledger::create(dir, "magnet-demo", op, genesis)?;
    for wk in &workers {
        l.register(wk.public(), Role::Worker, 0)?;
    }
    for (v, s) in validators.iter().zip(stakes) {
        l.register(v.public(), Role::Validator, s)?;
    }
    let mut slashes = 0;
    for round in 1..=rounds {
        let base = model_hash(&w);
        let mut updates: Vec<(Hash, Vec<f64>)> = Vec::new();
        for (i, wk) in workers.iter().enumerate() {
            let quality = 0.1 + 0.1 * i as f64;
            // Each worker trains on its own data shard, which moves its own quarter of the
            // coordinates (so honest top-k sketches differ between workers).
            let mut upd: Vec<f64> = (0..DIM)
                .map(|j| {
                    let own = if j % 4 == i { 1.0 } else { 0.05 };
                    own * quality * (target[j] - w[j]) + 0.001 * rng.unit()
                })
                .collect();
            // Round 1: worker 3 copies worker 0 (plus a little noise). Round 2: worker 2 diverges.
            if round == 1 && i == 3 {
                upd = updates[0].1.iter().map(|x| x + 1e-6 * rng.unit()).collect();
            }
            if round == 2 && i == 2 {
                upd.fill(f64::NAN); // diverged training run
            }
            let bytes: Vec<u8> = upd.iter().flat_map(|x| x.to_le_bytes()).collect();
            let artifact: Hash = Sha256::digest(&bytes).into();
            let m = Message {
                origin: l.origin().to_string(),
                signer: wk.public(),
                seq: l.next_seq(&wk.public()),
                round,
                body: Body::Contribution(Contribution {
                    parent_model: base,
                    artifact,
                    artifact_size: bytes.len() as u64,
                    metrics: vec![Metric {
                        name: "train_loss".into(),
                        micro: 1_000_000 - (quality * 1e6) as i64,
                    }],
                    sketch: sketch(&upd),
                }),
            };
            let sm = m.sign(wk);
            l.submit(&sm)?;
            updates.push((sm.id, upd));
        }
        // Validators evaluate after every contribution is committed.
        let beacon_size = l.log().len();
        let beacon = l.log().tree().root_at(beacon_size)?;
        let mut batch = Vec::new();
        for (vi, v) in validators.iter().enumerate() {
            let first_seq = l.next_seq(&v.public());
            for (ci, (id, upd)) in updates.iter().enumerate() {
                let seq = first_seq + ci as u64;
                let seed = heldout_seed(id, &v.public().0, &beacon);
                let idx = heldout_batches(&seed, BATCH, DIM as u64);
                let after: Vec<f64> = w.iter().zip(upd).map(|(a, b)| a + b).collect();
                let mut meas = Measurement {
                    loss_before: loss(&w, &target, &idx),
                    loss_after: loss(&after, &target, &idx),
                };
                if vi == 2 {
                    // The lying minority validator inflates worker 0 and trashes the rest.
                    meas.loss_after = if ci == 0 { 0.0 } else { meas.loss_before * 3.0 };
                }
                let (verdict, lb, la) = meas.to_fixed();
                let m = Message {
                    origin: l.origin().to_string(),
                    signer: v.public(),
                    seq,
                    round,
                    body: Body::Evaluation(Evaluation {
                        contribution: *id,
                        beacon_size,
                        heldout_seed: seed,
                        verdict,
                        loss_before: lb,
                        loss_after: la,
                    }),
                };
                batch.push(m.sign(v));
            }
        }
        for r in l.submit_batch(&batch)? {
            r?;
        }
        slashes += l.record_slashes()?.len() as u64;
        // Merge: average of the updates that were rewarded (never slashed ones).
        let (_, outcomes) = l.state().compute_settlement([0; 32]);
        let good: Vec<&Vec<f64>> = updates
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| o.slash.is_none() && o.reward > 0)
            .map(|((_, u), _)| u)
            .collect();
        if !good.is_empty() {
            for j in 0..DIM {
                w[j] += good.iter().map(|u| u[j]).sum::<f64>() / good.len() as f64;
            }
        }
        l.settle(model_hash(&w))?;
    }
    Ok(DemoSummary {
        rounds,
        entries: l.log().len(),
        slashes,
        balances: l.state().balances.iter().map(|(k, v)| (*k, *v)).collect(),
    })
}
