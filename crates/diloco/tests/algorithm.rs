//! Algorithm-level checks of the in-process DiLoCo loop on the linear-regression toy.

use diloco::aggregate::Aggregator;
use diloco::codec::{self, Codec};
use diloco::exchange::{Exchange, InProcess};
use diloco::outer::OuterOptimizer;
use diloco::params::{self, ParamMap};
use diloco::protocol::{self, Coordinator, CoordinatorConfig, WorkerClient};
use diloco::runner::{DilocoConfig, RunReport, run_in_process};
use diloco::toy::{LinearEvaluator, LinearTrainer, RegressionData};
use diloco::trainer::{LocalTrainer, LossEvaluator};
use std::collections::BTreeSet;
use std::time::Duration;

fn data() -> (RegressionData, RegressionData) {
    RegressionData::generate(1000, 12, 3).split(800)
}

fn workers(k: usize) -> Vec<LinearTrainer> {
    let (train, held) = data();
    (0..k)
        .map(|w| LinearTrainer::new(train.shard(w, k), held.clone(), 0.05, 8, 100 + w as u64))
        .collect()
}

fn run(k: usize, cfg: &DilocoConfig) -> (RunReport, Vec<LinearTrainer>) {
    let mut ws = workers(k);
    let report =
        run_in_process(&mut ws, cfg, &InProcess::new(), None, &mut |_, _, _| Ok(())).unwrap();
    (report, ws)
}

fn held_loss(p: &ParamMap) -> f32 {
    LinearEvaluator(data().1).loss(p).unwrap()
}

#[test]
fn one_worker_with_outer_sgd_lr1_is_plain_training() {
    for h in [1, 5] {
        let cfg = DilocoConfig {
            inner_steps: h,
            total_steps: 40,
            outer: OuterOptimizer::Sgd { lr: 1.0 },
            ..DilocoConfig::default()
        };
        let (report, _) = run(1, &cfg);
        let mut plain = workers(1).remove(0);
        for _ in 0..40 {
            plain.train_step().unwrap();
        }
        let want = plain.params().unwrap();
        // global - (global - local) equals local up to f32 rounding of the subtraction.
        for (name, t) in &want {
            for (a, b) in t.data.iter().zip(&report.global[name].data) {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + a.abs()),
                    "H={h} {name}: {a} vs {b}"
                );
            }
        }
    }
}

#[test]
fn diloco_trains_and_is_deterministic() {
    let cfg = DilocoConfig {
        inner_steps: 10,
        total_steps: 100,
        ..DilocoConfig::default()
    };
    let (a, _) = run(4, &cfg);
    let (b, _) = run(4, &cfg);
    assert_eq!(a.global, b.global, "same seed, same result");
    assert_eq!(a.bytes_sent, b.bytes_sent);
    let init = held_loss(&workers(1)[0].params().unwrap());
    let fin = held_loss(&a.global);
    assert!(fin < 0.05 * init, "loss {init} -> {fin}");
    assert_eq!(a.rounds.len(), 10);
    // 4 workers x 10 rounds of 13 f32 values in one update object each.
    assert_eq!(
        a.bytes_sent,
        a.rounds
            .iter()
            .map(|r| r
                .manifest
                .accepted
                .iter()
                .map(|x| x.bytes as u64)
                .sum::<u64>())
            .sum::<u64>()
    );
}

#[test]
fn streaming_and_compressed_runs_converge() {
    let init = held_loss(&workers(1)[0].params().unwrap());
    let streaming = DilocoConfig {
        inner_steps: 10,
        total_steps: 100,
        fragments: 2,
        delay: 2,
        mix: 0.5,
        ..DilocoConfig::default()
    };
    let (s, _) = run(
        4,
        &DilocoConfig {
            probe_drift: true,
            ..streaming
        },
    );
    let cka: Vec<f64> = s.rounds.iter().map(|r| r.worker_cka.unwrap()).collect();
    // Workers drift apart early (different shards, far from the optimum), then agree.
    assert!(
        cka.iter().all(|c| (0.0..=1.0 + 1e-9).contains(c)),
        "{cka:?}"
    );
    assert!(cka[0] < 0.95 && *cka.last().unwrap() > 0.99, "{cka:?}");
    assert_eq!(s.rounds.len(), 20, "two fragments, each every 10 steps");
    assert_eq!(s.rounds[0].manifest.fragment, Some(0));
    assert!(
        s.rounds
            .iter()
            .all(|r| r.manifest.rejected.is_empty() && r.manifest.missing.is_empty())
    );
    assert!(held_loss(&s.global) < 0.1 * init);

    let q4 = DilocoConfig {
        inner_steps: 10,
        total_steps: 100,
        codec: Codec::Q4 { block: 16 },
        step_codec: Codec::Q4 { block: 16 },
        error_feedback: true,
        ..DilocoConfig::default()
    };
    let (c, _) = run(4, &q4);
    let (f, _) = run(
        4,
        &DilocoConfig {
            inner_steps: 10,
            total_steps: 100,
            ..DilocoConfig::default()
        },
    );
    assert!(held_loss(&c.global) < 0.1 * init);
    // 13 values per update: headers dominate, so only check the direction here (codec
    // sizes are tested in the codec module).
    assert!(
        c.bytes_sent < f.bytes_sent,
        "{} vs {}",
        c.bytes_sent,
        f.bytes_sent
    );
}

#[test]
fn robust_aggregators_run() {
    for agg in [
        Aggregator::Median,
        Aggregator::TrimmedMean { trim: 0.25 },
        Aggregator::NormClip { multiple: 1.5 },
    ] {
        let cfg = DilocoConfig {
            inner_steps: 10,
            total_steps: 60,
            aggregator: agg,
            ..DilocoConfig::default()
        };
        let (r, _) = run(5, &cfg);
        assert!(
            held_loss(&r.global) < 0.2 * held_loss(&workers(1)[0].params().unwrap()),
            "{agg:?}"
        );
    }
}

/// Honest workers plus a NaN update, a huge update and a misshapen one: the round goes
/// on with the honest ones and the manifest says why each bad one was rejected; the
/// scorer shows honest contributions improve the held-out loss.
#[test]
fn poisoned_updates_are_rejected_with_reasons() {
    let ex = InProcess::new();
    let mut ws = workers(6);
    let init = ws[0].params().unwrap();
    let cfg = CoordinatorConfig {
        outer: OuterOptimizer::Sgd { lr: 1.0 },
        ..CoordinatorConfig::default()
    };
    let mut coord = Coordinator::start(&ex, init.clone(), cfg)
        .unwrap()
        .with_scorer(Box::new(LinearEvaluator(data().1)));
    let zero = Duration::ZERO;
    let mut clients: Vec<WorkerClient> = (0..6)
        .map(|w| WorkerClient::join(&ex, w, Codec::F32, 1, zero, zero).unwrap())
        .collect();
    for (c, t) in clients.iter_mut().zip(ws.iter_mut()).take(3) {
        for _ in 0..20 {
            t.train_step().unwrap();
        }
        c.submit(&ex, 1, 1.0, &t.params().unwrap()).unwrap();
    }
    // A NaN injector: the client refuses to encode NaN, so it writes the bytes itself.
    let nan = nan_update(&init, 3, 1);
    ex.put_new(&protocol::update_key(1, 3), &nan).unwrap();
    assert!(matches!(
        clients[3].submit(&ex, 2, 1.0, &{
            let mut p = init.clone();
            p.get_mut("bias").unwrap().data[0] = f32::NAN;
            p
        }),
        Err(diloco::Error::NonFinite { .. })
    ));
    let mut huge = init.clone();
    huge.get_mut("blk.0.weight")
        .unwrap()
        .data
        .iter_mut()
        .for_each(|x| *x = 1e4);
    clients[4].submit(&ex, 1, 1.0, &huge).unwrap();
    // Worker 5 sends a payload for a different architecture.
    let mut wrong = ParamMap::new();
    wrong.insert("blk.0.weight".into(), diloco::NamedTensor::zeros(vec![3]));
    wrong.insert("bias".into(), diloco::NamedTensor::zeros(vec![1]));
    let payload = codec::encode(&wrong, Codec::F32).unwrap();
    ex.put_new(
        &protocol::update_key(1, 5),
        &protocol::encode_update(5, 1, 0, 1.0, &payload),
    )
    .unwrap();

    let m = coord.run_round(&ex, 1, None, zero, zero).unwrap();
    assert_eq!(
        m.accepted.iter().map(|a| a.worker).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let reasons: Vec<(u32, String)> = m
        .rejected
        .iter()
        .map(|r| {
            (
                r.worker,
                serde_json::to_value(&r.reason).unwrap()["reason"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            (3, "non_finite".into()),
            (4, "norm_outlier".into()),
            (5, "shape".into())
        ]
    );
    for a in &m.accepted {
        let s = a.score.unwrap();
        assert!(s.after < s.before, "{s:?}");
    }
    assert!(params::l2_norm(coord.global()).is_finite());
    // The manifest is on the exchange and says the same.
    let stored: protocol::Manifest =
        serde_json::from_slice(&ex.get(&protocol::manifest_key(1)).unwrap().unwrap()).unwrap();
    assert_eq!(
        (stored.accepted.len(), &stored.rejected, &stored.missing),
        (3, &m.rejected, &m.missing)
    );
    // A member that never delivers is missing, not blocking.
    let members: BTreeSet<u32> = protocol::members_for(&ex, 2).unwrap();
    assert_eq!(members.len(), 6);
    let m2 = coord
        .run_round(
            &ex,
            2,
            None,
            Duration::from_millis(30),
            Duration::from_millis(5),
        )
        .unwrap();
    assert_eq!(m2.missing, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(m2.delta_norm, 0.0);
}

/// An update object for `worker` in `round` whose `bias[0]` is NaN, written as an
/// attacker would (bypassing the encoder's check).
fn nan_update(init: &ParamMap, worker: u32, round: u64) -> Vec<u8> {
    const MARK: f32 = 12345.678;
    let mut delta = init.clone();
    params::scale(&mut delta, 0.0);
    delta.get_mut("bias").unwrap().data[0] = MARK;
    let mut payload = codec::encode(&delta, Codec::F32).unwrap();
    let at = payload
        .windows(4)
        .position(|w| w == MARK.to_le_bytes())
        .unwrap();
    payload[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    protocol::encode_update(worker, round, round - 1, 1.0, &payload)
}

/// One merge path: the coordinator merges what an outside authority's verdicts select,
/// and the committed model is bitwise the merge of exactly the honest updates (as
/// `Coordinator::preview` computes it), over two rounds of outer Nesterov momentum.
/// The adversaries: a weight inflator (declares 1e30 for an update pointing the other
/// way), an exact copier, a NaN injector.
#[test]
fn merge_policy_merges_exactly_the_honest_updates() {
    use diloco::aggregate::{RejectReason, Weighting};
    use diloco::merge::{ExternalVerdicts, Verdict};
    let ex = InProcess::new();
    let mut ws = workers(4);
    let init = ws[0].params().unwrap();
    let mut coord = Coordinator::start(&ex, init.clone(), CoordinatorConfig::default()).unwrap();
    let zero = Duration::ZERO;
    let mut clients: Vec<WorkerClient> = (0..7)
        .map(|w| WorkerClient::join(&ex, w, Codec::Q4 { block: 16 }, 1, zero, zero).unwrap())
        .collect();
    for round in 1..=2u64 {
        for (c, t) in clients.iter_mut().zip(ws.iter_mut()) {
            t.set_params(c.anchor()).unwrap();
            for _ in 0..10 {
                t.train_step().unwrap();
            }
            c.submit(&ex, round, 64.0, &t.params().unwrap()).unwrap();
        }
        // Worker 4 inflates: the opposite of worker 0's update, weight 1e30.
        let honest0 = protocol::decode_update(
            &ex.get(&protocol::update_key(round, 0)).unwrap().unwrap(),
            "w0",
        )
        .unwrap()
        .4;
        let mut anti = honest0.clone();
        params::scale(&mut anti, -1.0);
        let payload = codec::encode(&anti, Codec::F32).unwrap();
        ex.put_new(
            &protocol::update_key(round, 4),
            &protocol::encode_update(4, round, round - 1, 1e30, &payload),
        )
        .unwrap();
        // Worker 5 copies worker 0's payload under its own header.
        let copied = ex.get(&protocol::update_key(round, 0)).unwrap().unwrap();
        let mut copy = protocol::encode_update(5, round, round - 1, 64.0, &[]);
        copy.extend_from_slice(&copied[28..]);
        ex.put_new(&protocol::update_key(round, 5), &copy).unwrap();
        ex.put_new(
            &protocol::update_key(round, 6),
            &nan_update(&init, 6, round),
        )
        .unwrap();

        let (members, objects) = coord.collect(&ex, round, zero, zero).unwrap();
        let screened = coord.screen_round(round, None, &objects);
        assert_eq!(
            screened
                .updates
                .iter()
                .map(|u| u.worker)
                .collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5],
            "{:?}",
            screened.rejected
        );
        assert_eq!(
            screened.rejected[0].reason,
            RejectReason::NonFinite {
                tensor: "bias".into(),
                index: 0
            }
        );
        assert_eq!(screened.declared[&4], 1e30);
        let honest: Vec<_> = screened
            .updates
            .iter()
            .filter(|u| u.worker < 4)
            .cloned()
            .collect();
        let expected = coord.preview(&honest).unwrap();
        let mut verdicts = ExternalVerdicts::new();
        for w in 0..4 {
            verdicts.insert(round, w, Verdict::Merge { weight: 1.0 });
        }
        verdicts.insert(
            round,
            5,
            Verdict::Exclude {
                reason: "copied worker 0".into(),
            },
        );
        // Worker 4 has no verdict: excluded by default.
        let m = coord
            .finish_round_with(&ex, round, None, &members, objects, &mut verdicts)
            .unwrap();
        assert_eq!(
            m.accepted.iter().map(|a| a.worker).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert!(
            m.accepted
                .iter()
                .all(|a| a.declared_weight == 64.0 && a.weight == 1.0)
        );
        assert_eq!(
            m.rejected.iter().map(|r| r.worker).collect::<Vec<_>>(),
            vec![4, 5, 6]
        );
        assert_eq!(
            m.rejected[1].reason,
            RejectReason::Excluded {
                message: "copied worker 0".into()
            }
        );
        assert_eq!(coord.global(), &expected.global, "round {round}");
        for c in &mut clients {
            let (_, fresh) = c.receive(&ex, round, zero, zero).unwrap();
            assert_eq!(&fresh, coord.global());
        }
    }

    // Declared weighting with the protocol's bounds refuses the inflator through the
    // coordinator too (default policy: merge everything screened).
    let ex = InProcess::new();
    let cfg = CoordinatorConfig {
        screen: diloco::aggregate::ScreenConfig {
            weighting: Weighting::Declared {
                min: 1.0,
                max: 64.0,
            },
            ..Default::default()
        },
        ..CoordinatorConfig::default()
    };
    let mut coord = Coordinator::start(&ex, init.clone(), cfg).unwrap();
    let mut inflated = init.clone();
    params::scale(&mut inflated, 0.0);
    let payload = codec::encode(&inflated, Codec::F32).unwrap();
    for (w, weight) in [(0u32, 64.0f32), (1, 1e30)] {
        ex.put_new(
            &protocol::update_key(1, w),
            &protocol::encode_update(w, 1, 0, weight, &payload),
        )
        .unwrap();
    }
    let m = coord.run_round(&ex, 1, None, zero, zero).unwrap();
    assert_eq!(m.accepted.len(), 1);
    assert_eq!(
        m.rejected[0].reason,
        RejectReason::WeightOutOfBounds {
            weight: 1e30,
            min: 1.0,
            max: 64.0
        }
    );
}

/// With a grace period a round no longer waits out the deadline for a dead member: it
/// closes `grace` after the first update arrived. Without updates the deadline still rules.
#[test]
fn grace_closes_a_round_soon_after_the_first_update() {
    let ex = InProcess::new();
    let (train, held) = RegressionData::generate(200, 4, 3).split(150);
    let mut t = LinearTrainer::new(train, held, 0.05, 4, 0);
    let init = t.params().unwrap();
    let coord = Coordinator::start(&ex, init, CoordinatorConfig::default()).unwrap();
    let now = Duration::ZERO;
    let mut alive = WorkerClient::join(&ex, 0, Codec::F32, 1, now, now).unwrap();
    // Worker 1 joins and never delivers.
    WorkerClient::join(&ex, 1, Codec::F32, 1, now, now).unwrap();
    t.set_params(alive.anchor()).unwrap();
    t.train_step().unwrap();
    alive.submit(&ex, 1, 1.0, &t.params().unwrap()).unwrap();
    let (deadline, grace, poll) = (
        Duration::from_mins(1),
        Duration::from_millis(50),
        Duration::from_millis(5),
    );
    let start = std::time::Instant::now();
    let (members, objects) = coord
        .collect_with_grace(&ex, 1, deadline, Some(grace), poll)
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(members.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(objects.len(), 1);
    // Round 2: nobody delivers; the deadline, not the grace, ends it.
    let start = std::time::Instant::now();
    let (_, objects) = coord
        .collect_with_grace(&ex, 2, Duration::from_millis(200), Some(grace), poll)
        .unwrap();
    assert!(objects.is_empty());
    assert!(start.elapsed() >= Duration::from_millis(200));
}

/// An exchange whose writes of one key fail: the coordinator "dies" right there.
struct CrashAt<'a> {
    inner: &'a InProcess,
    key: String,
}

impl Exchange for CrashAt<'_> {
    fn put_new(&self, key: &str, bytes: &[u8]) -> diloco::Result<()> {
        if key == self.key {
            return Err(diloco::Error::Exchange {
                key: key.into(),
                source: "killed".into(),
            });
        }
        self.inner.put_new(key, bytes)
    }
    fn get(&self, key: &str) -> diloco::Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> diloco::Result<Vec<String>> {
        self.inner.list(prefix)
    }
}

/// A coordinator that dies inside round 3 (input closed, checkpoint, step and momentum
/// written, no manifest) is resumed from the exchange: it rebuilds the global weights
/// (checkpoint + steps) and the outer momentum, re-merges exactly the closed input (an
/// update written after the close is ignored), and every object it publishes in rounds
/// 3 and 4 is bitwise what an uninterrupted coordinator published.
#[test]
fn a_coordinator_resumed_mid_round_publishes_the_same_versions() {
    let zero = Duration::ZERO;
    let cfg = CoordinatorConfig {
        checkpoint_every: 2,
        ..CoordinatorConfig::default()
    };
    let (a, c) = (InProcess::new(), InProcess::new());
    let mut ws = workers(3);
    let init = ws[0].params().unwrap();
    let mut ca = Coordinator::start(&a, init.clone(), cfg).unwrap();
    let mut cc = Some(Coordinator::start(&c, init, cfg).unwrap());
    let join = |ex: &InProcess, w| {
        WorkerClient::join(ex, w, Codec::Q4 { block: 8 }, 1, zero, zero).unwrap()
    };
    let mut clients: Vec<(WorkerClient, WorkerClient)> =
        (0..3).map(|w| (join(&a, w), join(&c, w))).collect();
    for round in 1..=4u64 {
        for ((c1, c2), t) in clients.iter_mut().zip(ws.iter_mut()) {
            t.set_params(c1.anchor()).unwrap();
            for _ in 0..5 {
                t.train_step().unwrap();
            }
            let p = t.params().unwrap();
            c1.submit(&a, round, 1.0, &p).unwrap();
            c2.submit(&c, round, 1.0, &p).unwrap();
        }
        ca.run_round(&a, round, None, zero, zero).unwrap();
        if round == 3 {
            let crash = CrashAt {
                inner: &c,
                key: protocol::manifest_key(3),
            };
            let mut doomed = cc.take().unwrap();
            assert!(doomed.run_round(&crash, round, None, zero, zero).is_err());
            drop(doomed);
            assert!(c.get(&protocol::close_key(3)).unwrap().is_some());
            // Written after the close (by a late worker): never merged.
            let late = c.get(&protocol::update_key(3, 0)).unwrap().unwrap();
            c.put_new(&protocol::update_key(3, 7), &late).unwrap();
            let (resumed, last) = Coordinator::resume(&c, cfg).unwrap();
            assert_eq!(last, 2);
            cc = Some(resumed);
        }
        let coord = cc.as_mut().unwrap();
        let m = coord.run_round(&c, round, None, zero, zero).unwrap();
        assert_eq!(m.accepted.len(), 3, "round {round}: {m:?}");
        assert_eq!(coord.global(), ca.global(), "round {round}");
        for k in [
            protocol::manifest_key(round),
            protocol::step_key(round),
            protocol::outer_key(round),
            protocol::global_key(round),
        ] {
            assert_eq!(a.get(&k).unwrap(), c.get(&k).unwrap(), "{k}");
        }
        for (c1, c2) in &mut clients {
            c1.receive(&a, round, zero, zero).unwrap();
            c2.receive(&c, round, zero, zero).unwrap();
        }
    }
    let (last, n) = Coordinator::resume(&c, cfg).unwrap();
    assert_eq!((n, last.global()), (4, ca.global()));
}
