//! `BitnetWorker` on a real bitnet-model trainer (micro ternary transformer, structured
//! token stream): inner training lowers the loss, one DiLoCo round with outer SGD at lr 1
//! lands exactly on the mean of the workers' local weights, fragments merge, the drift
//! probe sees workers diverge. Needs feature `bitnet` (on in `cargo test --workspace`,
//! where diloco-experiment enables it).

use bitnet_model::ModelConfig;
use bitnet_model::data::{TokenData, TokenStream};
use bitnet_model::train::{TrainConfig, Trainer};
use burn::tensor::Device;
use diloco::bitnet::{BitnetWorker, WorkerSpec};
use diloco::drift::linear_cka;
use diloco::exchange::InProcess;
use diloco::outer::OuterOptimizer;
use diloco::params::{self, ParamMap};
use diloco::runner::{DilocoConfig, run_in_process};
use diloco::trainer::LocalTrainer;
use std::sync::Arc;

fn micro() -> ModelConfig {
    ModelConfig::from_toml(toml_of_micro()).unwrap()
}

/// A learnable stream: short repeating phrases with a seeded choice between them.
fn data() -> TokenData {
    let phrases: [&[u32]; 3] = [&[1, 5, 9, 13, 2], &[3, 7, 11, 2], &[4, 8, 12, 16, 20, 2]];
    let mut state = 7u64;
    let mut tokens = Vec::new();
    while tokens.len() < 6000 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        tokens.extend_from_slice(phrases[(state >> 33) as usize % 3]);
    }
    let val = tokens.split_off(5000);
    TokenData {
        train: TokenStream::from_vec(tokens),
        val: TokenStream::from_vec(val),
        token_bytes: Arc::new(vec![1; 32]),
    }
}

fn worker(seed: u64, steps: usize, shard: Option<(usize, usize)>) -> BitnetWorker {
    let mut d = data();
    if let Some((i, n)) = shard {
        d.train = d.train.shard(i, n);
    }
    // Two probe sequences of 16 tokens: 32 hidden-state rows.
    let probe = d.val.tokens()[..32].to_vec();
    let cfg = TrainConfig {
        seed,
        steps,
        batch_size: 4,
        seq_len: 16,
        warmup_steps: 2,
        eval_windows: 8,
        ..TrainConfig::default()
    };
    BitnetWorker {
        trainer: Trainer::new(micro(), cfg, d, &Device::flex()).unwrap(),
        probe,
        probe_batch: 2,
    }
}

/// `WorkerSpec`, the one recipe the binary, diloco-experiment and magnet use, builds
/// exactly the worker the hand-written trainer above is: same shard, same batches, same
/// steps, bitwise; its learning-rate scaling keeps the schedule's shape.
#[test]
fn worker_spec_builds_the_shard_worker() {
    let d = data();
    let probe = d.val.tokens()[..32].to_vec();
    let mut by_spec = WorkerSpec::new(micro(), 1, 2, 10, 4, 16, 5)
        .warmup(2)
        .eval_windows(8)
        .probe(probe, 2)
        .build(&d, &Device::flex())
        .unwrap();
    let mut by_hand = worker(5, 10, Some((1, 2)));
    by_spec.set_params(&by_hand.params().unwrap()).unwrap();
    for _ in 0..3 {
        assert_eq!(by_spec.train_step().unwrap(), by_hand.train_step().unwrap());
    }
    assert_eq!(by_spec.params().unwrap(), by_hand.params().unwrap());
    assert_eq!(by_spec.trainer.train_config().eval_every, 0);
    let scaled = WorkerSpec::new(micro(), 0, 1, 10, 4, 16, 5).peak_lr(6e-3);
    assert!((scaled.train.lr_final / scaled.train.lr - 1.0 / 30.0).abs() < 1e-12);
    assert!((scaled.train.lr - 6e-3).abs() < 1e-15);
}

fn max_abs_diff(a: &ParamMap, b: &ParamMap) -> f32 {
    params::check_same_layout(a, b).unwrap();
    a.values()
        .zip(b.values())
        .flat_map(|(x, y)| x.data.iter().zip(&y.data).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn inner_training_lowers_the_loss() {
    let mut w = worker(1, 40, None);
    let before = w.eval_loss().unwrap();
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..40 {
        last = w.train_step().unwrap();
        first.get_or_insert(last);
    }
    let after = w.eval_loss().unwrap();
    assert!(
        after < before - 0.5,
        "val loss {before} -> {after} after 40 steps"
    );
    assert!(last < first.unwrap(), "train loss {first:?} -> {last}");
    assert_eq!(w.tokens_per_step(), 4 * 16);
}

#[test]
fn params_round_trip_and_fragments_merge() {
    let mut w = worker(1, 4, None);
    let p = w.params().unwrap();
    assert!(p.contains_key("blk.1.ffn_down.weight"));
    assert_eq!(
        params::numel(&p),
        micro().param_count(),
        "every parameter is exchanged"
    );
    // A fragment replaces only its tensors.
    let name = "blk.0.attn_q.weight".to_string();
    let mut frag = params::subset(&p, [&name]);
    for v in &mut frag.get_mut(&name).unwrap().data {
        *v += 0.25;
    }
    w.set_params(&frag).unwrap();
    let q = w.params().unwrap();
    for (n, t) in &q {
        let expect = if *n == name { &frag[n] } else { &p[n] };
        assert_eq!(t.data, expect.data, "tensor {n}");
    }
    // An unknown tensor is an error, not a silent no-op.
    let mut bad = ParamMap::new();
    bad.insert("blk.9.nope.weight".into(), frag[&name].clone());
    assert!(w.set_params(&bad).is_err());
}

#[test]
fn one_round_with_outer_sgd_lr1_is_the_mean_of_local_weights() {
    const H: u64 = 5;
    let k = 2;
    let cfg = DilocoConfig {
        inner_steps: H,
        total_steps: H,
        outer: OuterOptimizer::Sgd { lr: 1.0 },
        probe_drift: true,
        ..DilocoConfig::default()
    };
    let mut workers: Vec<BitnetWorker> = (0..k)
        .map(|w| worker(1 + w as u64, H as usize, Some((w, k))))
        .collect();
    let init = workers[0].params().unwrap();
    let mut seen = Vec::new();
    let report = run_in_process(
        &mut workers,
        &cfg,
        &InProcess::new(),
        None,
        &mut |log, global, trainers| {
            // After the sync every worker holds the global weights.
            for t in trainers.iter() {
                assert_eq!(max_abs_diff(&t.params()?, global), 0.0);
            }
            seen.push(log.worker_cka);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(seen.len(), 1);
    let cka = seen[0].expect("bitnet workers have a probe");
    assert!(
        cka > 0.0 && cka < 1.0,
        "workers on different shards drift apart: CKA {cka}"
    );

    // Replay the same workers alone: same seeds, shards and starting weights.
    let mut mean: Option<ParamMap> = None;
    for w in 0..k {
        let mut solo = worker(1 + w as u64, H as usize, Some((w, k)));
        solo.set_params(&init).unwrap();
        for _ in 0..H {
            solo.train_step().unwrap();
        }
        let local = solo.params().unwrap();
        assert!(max_abs_diff(&local, &init) > 1e-4, "inner steps moved it");
        match &mut mean {
            None => mean = Some(local),
            Some(m) => params::axpy(m, 1.0, &local).unwrap(),
        }
    }
    let mut mean = mean.unwrap();
    params::scale(&mut mean, 1.0 / k as f32);
    let diff = max_abs_diff(&report.global, &mean);
    assert!(diff < 1e-5, "global vs mean of local weights: {diff}");
    assert!(max_abs_diff(&report.global, &init) > 1e-4);
    assert_eq!(report.tokens, k as u64 * H * 4 * 16);
    // f32 pseudo-gradients up, f32 step down: at least 4 bytes per parameter each way.
    let n = micro().param_count() as u64;
    assert!(report.bytes_sent >= k as u64 * n * 4);
    assert!(report.bytes_received - report.initial_download >= k as u64 * n * 4);
}

#[test]
fn diloco_with_nesterov_trains_the_global_model() {
    let k = 2;
    let cfg = DilocoConfig {
        inner_steps: 10,
        total_steps: 30,
        ..DilocoConfig::default()
    };
    let mut workers: Vec<BitnetWorker> = (0..k)
        .map(|w| worker(1 + w as u64, 30, Some((w, k))))
        .collect();
    let mut eval = worker(1, 30, None);
    let before = eval.eval_loss().unwrap();
    let mut losses = Vec::new();
    let report = run_in_process(
        &mut workers,
        &cfg,
        &InProcess::new(),
        None,
        &mut |_, global, _| {
            eval.set_params(global)?;
            losses.push(eval.eval_loss()?);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(losses.len(), 3);
    assert!(
        *losses.last().unwrap() < before - 0.5,
        "global val loss {before} -> {losses:?}"
    );
    // The probe of the same weights is identical: CKA 1.
    eval.set_params(&report.global).unwrap();
    let a = eval.probe_features().unwrap().unwrap();
    let b = eval.probe_features().unwrap().unwrap();
    // Hidden states: one row per probe token (2 x 16), d_model = 32 columns.
    assert_eq!((a.rows, a.cols), (32, 32));
    assert!((linear_cka(&a, &b).unwrap() - 1.0).abs() < 1e-9);
}

#[test]
fn model_specs_resolve_presets_and_files() {
    let tiny = diloco::bitnet::model_config("tiny").unwrap();
    assert_eq!(tiny, ModelConfig::preset("tiny").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("micro.toml");
    std::fs::write(&path, toml_of_micro()).unwrap();
    let micro_cfg = diloco::bitnet::model_config(path.to_str().unwrap()).unwrap();
    assert_eq!(micro_cfg, micro());
    let err = diloco::bitnet::model_config("no-such-preset")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-preset"), "{err}");
    let missing = dir.path().join("absent.toml");
    let err = diloco::bitnet::model_config(missing.to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("absent.toml"), "{err}");
    // The cause is kept as a typed source, not flattened into the message.
    let source = std::error::Error::source(&err).expect("a source");
    assert!(
        source.downcast_ref::<std::io::Error>().is_some(),
        "{source:?}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "vocab_size = \"many\"").unwrap();
    let err = diloco::bitnet::model_config(bad.to_str().unwrap()).unwrap_err();
    let source = std::error::Error::source(&err).expect("a source");
    assert!(
        matches!(
            source.downcast_ref::<bitnet_model::Error>(),
            Some(bitnet_model::Error::Toml { .. })
        ),
        "{source:?}"
    );
}

fn toml_of_micro() -> &'static str {
    "vocab_size = 32\nhidden_size = 32\nn_layers = 2\nn_heads = 2\n\
     n_kv_heads = 1\nffn_hidden_size = 64\ncontext_length = 16"
}
