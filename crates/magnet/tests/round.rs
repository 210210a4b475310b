//! The whole protocol in one process on a synthetic model (no burn): an operator, 4 honest
//! workers, every attacker of the threat model and 2 validators (one lying with minority
//! stake) as threads over the in-memory store. Every honest worker is paid every round, each
//! attacker is slashed with its reason or paid nothing, the merged model is the merge of the
//! honest updates, balances equal the emission schedule and the ledger verifies after
//! reopening. Then the operator is restarted on the same ledger and store: it replays every
//! round to the same model and pays nothing twice.

use diloco::codec::Codec;
use diloco::outer::{OuterOptimizer, OuterState};
use diloco::params::{self, NamedTensor as Tensor, ParamMap};
use diloco::trainer::LocalTrainer;
use incentive_ledger::ledger::{Ledger, verify_dir};
use incentive_ledger::merkle::Hash;
use magnet::heldout::HeldOut;
use magnet::operator::{Operator, params_hash};
use magnet::protocol::{CloseNotice, ProtocolConfig, RoundResult, keys, parse};
use magnet::roles::{self, Adversary, Party, WorkerOptions};
use magnet::store::Store;
use std::time::Duration;

const N: usize = 3000;
const ROUNDS: u64 = 3;

fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn map(v: Vec<f32>) -> ParamMap {
    let mut m = ParamMap::new();
    m.insert("w".into(), Tensor::new(vec![v.len()], v).unwrap());
    m
}

/// The optimum every shard shares, plus its own offset: honest updates share a common
/// direction and differ by their data.
fn target(shard: u64) -> Vec<f32> {
    let base = noise(7, N);
    let own = noise(100 + shard, N);
    base.iter().zip(&own).map(|(b, o)| b + 0.5 * o).collect()
}

/// Gradient descent towards the shard's optimum with per-step noise.
struct Quadratic {
    w: Vec<f32>,
    target: Vec<f32>,
    step: u64,
    seed: u64,
}

impl LocalTrainer for Quadratic {
    fn params(&self) -> diloco::Result<ParamMap> {
        Ok(map(self.w.clone()))
    }
    fn set_params(&mut self, p: &ParamMap) -> diloco::Result<()> {
        self.w.clone_from(&p["w"].data);
        Ok(())
    }
    fn train_step(&mut self) -> diloco::Result<f32> {
        self.step += 1;
        let nz = noise(self.seed * 1000 + self.step, N);
        for ((w, t), e) in self.w.iter_mut().zip(&self.target).zip(nz) {
            *w -= 0.1 * (*w - t) + 0.02 * e;
        }
        Ok(0.0)
    }
    fn tokens_per_step(&self) -> u64 {
        1
    }
    fn eval_loss(&mut self) -> diloco::Result<f32> {
        Ok(0.0)
    }
}

/// Held-out loss: squared distance to the shared optimum over the coordinates a seed picks.
struct Distance;

impl HeldOut for Distance {
    fn losses(&mut self, p: &ParamMap, seeds: &[Hash], windows: usize) -> magnet::Result<Vec<f64>> {
        let t = noise(7, N);
        Ok(seeds
            .iter()
            .map(|s| {
                let idx = incentive_ledger::rewards::heldout_batches(s, windows * 64, N as u64);
                idx.iter()
                    .map(|&i| f64::from(p["w"].data[i as usize] - t[i as usize]).powi(2))
                    .sum::<f64>()
                    / idx.len() as f64
                    + 0.1
            })
            .collect())
    }
    fn val_loss(&mut self, p: &ParamMap) -> magnet::Result<f64> {
        let t = noise(7, N);
        Ok(p["w"]
            .data
            .iter()
            .zip(&t)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / N as f64)
    }
}

fn protocol() -> ProtocolConfig {
    ProtocolConfig {
        origin: "round-test".into(),
        rounds: ROUNDS,
        inner_steps: 5,
        codec: Codec::F32,
        outer: OuterOptimizer::Nesterov {
            lr: 0.7,
            momentum: 0.9,
        },
        min_workers: 11,
        min_validators: 2,
        // Round 1: the copiers have nothing to copy, so 9 commit; the grace window closes it.
        quorum: 8,
        grace_ms: 1_500,
        commit_deadline_ms: 60_000,
        reveal_deadline_ms: 30_000,
        eval_deadline_ms: 60_000,
        heldout_windows: 4,
        emission: 1_000,
        halving_rounds: 2,
        poll_ms: 5,
        ..ProtocolConfig::default()
    }
}

fn key(name: &str) -> incentive_ledger::identity::Keypair {
    magnet::roles::derived_key("test", name)
}

#[test]
fn every_attacker_is_caught_honest_workers_are_paid_and_a_restart_replays_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_dir = dir.path().join("ledger");
    let store = Store::memory();
    let init = map(vec![0.0; N]);
    let p = protocol();
    let adversaries = [
        Adversary::CopyExact,
        Adversary::CopyNoisy,
        Adversary::Inflate,
        Adversary::Nan,
        Adversary::FreeRider,
        Adversary::Poison,
        Adversary::Replay,
    ];
    let names: Vec<String> = (0..4)
        .map(|i| format!("honest{i}"))
        .chain(adversaries.iter().map(|a| format!("{a:?}")))
        .collect();
    let results: Vec<RoundResult> = std::thread::scope(|s| {
        let store = &store;
        let op = s.spawn(|| {
            let mut op = Operator::start(
                store,
                &ledger_dir,
                key("operator"),
                p.clone(),
                init.clone(),
                b"{}",
                [0; 32],
            )
            .unwrap();
            op.run().unwrap()
        });
        for (i, name) in names.iter().enumerate() {
            let adversary = adversaries
                .get(i.wrapping_sub(4))
                .copied()
                .filter(|_| i >= 4);
            s.spawn(move || {
                let mut t = Quadratic {
                    w: vec![0.0; N],
                    target: target(i as u64),
                    step: 0,
                    seed: i as u64,
                };
                let trains = adversary.is_none_or(Adversary::trains);
                roles::run_worker(
                    store,
                    &Party {
                        key: key(name),
                        name: name.clone(),
                        stake: 0,
                    },
                    WorkerOptions {
                        trainer: trains.then_some(&mut t as &mut dyn LocalTrainer),
                        adversary,
                        skip: Vec::new(),
                        leave_after: None,
                        late: Vec::new(),
                        timeout: Duration::from_mins(1),
                        seed: i as u64,
                        on_phase: None,
                    },
                )
                .unwrap();
            });
        }
        for (name, stake, liar) in [("honest-validator", 100, false), ("liar", 40, true)] {
            s.spawn(move || {
                roles::run_validator(
                    store,
                    &Party {
                        key: key(name),
                        name: name.into(),
                        stake,
                    },
                    &mut Distance,
                    liar,
                    Duration::from_mins(1),
                    None,
                )
                .unwrap();
            });
        }
        op.join().unwrap()
    });
    assert_eq!(results.len() as u64, ROUNDS);
    let worker_key = |name: &str| magnet::protocol::hx(&key(name).public().0);
    let mut global = init.clone();
    let mut outer = OuterState::new(p.outer);
    for r in &results {
        let close: CloseNotice = parse(
            &store
                .get_limited(&keys::close(r.round), 1 << 20)
                .unwrap()
                .unwrap(),
            "close",
        )
        .unwrap();
        // Every honest worker merged and paid, every round.
        for i in 0..4 {
            let k = worker_key(&format!("honest{i}"));
            let c = close
                .contributions
                .iter()
                .find(|c| c.worker == k)
                .expect("honest commit");
            assert!(
                r.merged.contains(&c.id),
                "round {}: honest{i} not merged: {r:?}",
                r.round
            );
            assert!(
                r.paid.iter().any(|(w, a)| *w == k && *a > 0),
                "round {}: honest{i} unpaid",
                r.round
            );
        }
        // Every attacker that sent something is slashed with its reason; none is paid (the
        // replayer works honestly in round 1: merged and paid then).
        for (a, name) in adversaries.iter().zip(&names[4..]) {
            let k = worker_key(name);
            if *a == Adversary::Replay && r.round == 1 {
                assert!(r.paid.iter().any(|(w, x)| *w == k && *x > 0), "{r:?}");
                continue;
            }
            assert!(
                !r.paid.iter().any(|(w, _)| *w == k),
                "round {}: {name} paid",
                r.round
            );
            let Some(c) = close.contributions.iter().find(|c| c.worker == k) else {
                // The copiers have nothing to copy in round 1 (commit–reveal).
                assert!(
                    r.round == 1 && matches!(a, Adversary::CopyExact | Adversary::CopyNoisy),
                    "{name} missing in round {}",
                    r.round
                );
                continue;
            };
            let reason = r
                .slashed
                .iter()
                .find(|(id, _)| *id == c.id)
                .map(|(_, why)| why.as_str());
            let want = match a {
                Adversary::FreeRider if r.round == 1 => "free rider",
                Adversary::CopyExact
                | Adversary::CopyNoisy
                | Adversary::FreeRider
                | Adversary::Replay => "copied",
                Adversary::Inflate => "invalid",
                Adversary::Nan => "non-finite",
                Adversary::Poison => "poisoned",
            };
            assert!(
                reason.is_some_and(|x| x.starts_with(want)),
                "round {}: {name} slashed {reason:?}, want {want}",
                r.round
            );
        }
        assert_eq!(
            r.merged.len(),
            if r.round == 1 { 5 } else { 4 },
            "round {}: only the honest updates merged",
            r.round
        );
        // The merged model is the outer step on the mean of the honest updates (diloco's
        // mean, in worker order, as the coordinator computes it).
        let mut honest: Vec<diloco::aggregate::Update> = Vec::new();
        for id in &r.merged {
            let c = close.contributions.iter().find(|c| c.id == *id).unwrap();
            let b = store
                .get_limited(&keys::artifact(r.round, &c.artifact), 1 << 30)
                .unwrap()
                .unwrap();
            honest.push(diloco::aggregate::Update {
                worker: c.worker_id,
                base_version: r.round - 1,
                weight: 1.0,
                delta: diloco::protocol::decode_update(&b, "a").unwrap().4,
            });
        }
        honest.sort_by_key(|u| u.worker);
        let mean = diloco::aggregate::Aggregator::Mean.aggregate(&honest);
        params::axpy(&mut global, 1.0, &outer.step(&mean)).unwrap();
        assert_eq!(
            magnet::protocol::hx(&params_hash(&global)),
            r.model,
            "round {}",
            r.round
        );
    }

    // Balances equal the emission schedule; the ledger verifies after reopening.
    let scheduled: u64 = [1_000u64, 1_000, 500].iter().sum();
    let v = verify_dir(&ledger_dir, None).unwrap();
    assert_eq!(v.settlements, ROUNDS);
    assert_eq!(v.total_balance, scheduled);
    let l = Ledger::open(&ledger_dir, None, None).unwrap();
    let honest_total: u64 = (0..4)
        .map(|i| format!("honest{i}"))
        .chain(["Replay".to_string()])
        .map(|name| {
            l.state()
                .balances
                .get(&key(&name).public())
                .copied()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(
        honest_total, scheduled,
        "honest work holds everything minted"
    );
    let before = l.log().len();
    drop(l);

    // A restarted operator replays every round to the same model and pays nothing twice.
    let op = Operator::start(
        &store,
        &ledger_dir,
        key("operator"),
        p.clone(),
        init,
        b"{}",
        [0; 32],
    )
    .unwrap();
    assert_eq!(params_hash(op.global()), params_hash(&global));
    assert_eq!(op.ledger().state().round, ROUNDS + 1);
    assert_eq!(op.ledger().log().len(), before);
    assert_eq!(op.ledger().state().emitted, scheduled);
}
