//! Attack catalogue: every attack is refused with a typed reason (or, for copying and lying,
//! neutralised by slashing and the stake-weighted median).

use incentive_ledger::identity::{Keypair, PublicKey};
use incentive_ledger::ledger::Ledger;
use incentive_ledger::merkle::Hash;
use incentive_ledger::record::{
    Body, Contribution, Evaluation, Genesis, Message, Role, Settlement, SignedMessage, SlashReason,
    Verdict,
};
use incentive_ledger::rewards::{EvalScore, heldout_seed};
use incentive_ledger::{Error, Rejection};

struct World {
    _dir: tempfile::TempDir,
    l: Ledger,
    workers: Vec<Keypair>,
    validators: Vec<Keypair>,
}

const BASE: Hash = [7; 32];

fn world(stakes: &[u64]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let op = Keypair::from_seed([1; 32]);
    let mut l = Ledger::create(
        &dir.path().join("l"),
        "attack-test",
        op,
        Genesis {
            base_model: BASE,
            initial_emission: 1_000_000,
            halving_rounds: 10,
            cap: 100_000_000,
            copy_threshold_ppm: 500_000,
        },
    )
    .unwrap();
    let workers: Vec<Keypair> = (0..4).map(|i| Keypair::from_seed([10 + i; 32])).collect();
    let validators: Vec<Keypair> = (0..stakes.len() as u8)
        .map(|i| Keypair::from_seed([20 + i; 32]))
        .collect();
    for w in &workers {
        l.register(w.public(), Role::Worker, 0).unwrap();
    }
    for (v, &s) in validators.iter().zip(stakes) {
        l.register(v.public(), Role::Validator, s).unwrap();
    }
    World {
        _dir: dir,
        l,
        workers,
        validators,
    }
}

fn contribution(l: &Ledger, k: &Keypair, artifact: u8, sketch: Vec<u32>) -> SignedMessage {
    Message {
        origin: l.origin().to_string(),
        signer: k.public(),
        seq: l.next_seq(&k.public()),
        round: l.state().round,
        body: Body::Contribution(Contribution {
            parent_model: l.state().base,
            artifact: [artifact; 32],
            artifact_size: 1000,
            metrics: vec![],
            sketch,
        }),
    }
    .sign(k)
}

fn evaluation(
    l: &Ledger,
    v: &Keypair,
    contribution: Hash,
    before: u64,
    after: u64,
) -> SignedMessage {
    let beacon_size = l.log().len();
    let root = l.log().tree().root_at(beacon_size).unwrap();
    Message {
        origin: l.origin().to_string(),
        signer: v.public(),
        seq: l.next_seq(&v.public()),
        round: l.state().round,
        body: Body::Evaluation(Evaluation {
            contribution,
            beacon_size,
            heldout_seed: heldout_seed(&contribution, &v.public().0, &root),
            verdict: Verdict::Measured,
            loss_before: before,
            loss_after: after,
        }),
    }
    .sign(v)
}

fn rejection(r: incentive_ledger::Result<u64>) -> Rejection {
    match r {
        Err(Error::Rejected(x)) => x,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn forged_signature_is_rejected() {
    let mut w = world(&[100]);
    let mut sm = contribution(&w.l, &w.workers[0], 1, vec![1, 2, 3]);
    // Signed by someone else but claiming worker 0.
    sm.sig = w.workers[1].sign(&sm.signed);
    assert!(matches!(
        rejection(w.l.submit(&sm)),
        Rejection::BadSignature { .. }
    ));
    // A bit flip in the signed bytes, re-parsed from the wire.
    let mut bytes = contribution(&w.l, &w.workers[0], 1, vec![1]).to_bytes();
    let body_byte = bytes.len() - 64 - 20; // inside the artifact size field
    bytes[body_byte] ^= 1;
    let r = rejection(w.l.submit_bytes(&bytes));
    assert!(
        matches!(r, Rejection::BadSignature { .. } | Rejection::Malformed(_)),
        "{r:?}"
    );
}

#[test]
fn weak_key_is_rejected_at_registration_and_as_signer() {
    let mut w = world(&[100]);
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let r = rejection(w.l.register(PublicKey(identity), Role::Worker, 0));
    assert!(matches!(r, Rejection::WeakKey { .. }), "{r:?}");
    // The universal forgery (R = identity, s = 0) under the identity key.
    let m = Message {
        origin: w.l.origin().to_string(),
        signer: PublicKey(identity),
        seq: 1,
        round: 1,
        body: Body::Contribution(Contribution {
            parent_model: BASE,
            artifact: [1; 32],
            artifact_size: 1,
            metrics: vec![],
            sketch: vec![],
        }),
    };
    let signed = m.encode();
    let mut sig = [0u8; 64];
    sig[0] = 1;
    let mut bytes = signed.clone();
    bytes.extend_from_slice(&sig);
    let r = rejection(w.l.submit_bytes(&bytes));
    assert!(matches!(r, Rejection::WeakKey { .. }), "{r:?}");
}

#[test]
fn malleated_signature_is_rejected() {
    let mut w = world(&[100]);
    let sm = contribution(&w.l, &w.workers[0], 1, vec![1, 2]);
    // s + L: the classic malleation; same (R, s mod L), different bytes.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut mal = sm.clone();
    let mut carry = 0u16;
    for (s_byte, l_byte) in mal.sig[32..].iter_mut().zip(L) {
        let v = u16::from(*s_byte) + u16::from(l_byte) + carry;
        *s_byte = v as u8;
        carry = v >> 8;
    }
    assert!(matches!(
        rejection(w.l.submit(&mal)),
        Rejection::BadSignature { .. }
    ));
    // The original still goes through, exactly once.
    w.l.submit(&sm).unwrap();
}

#[test]
fn replayed_message_is_rejected() {
    let mut w = world(&[100]);
    let sm = contribution(&w.l, &w.workers[0], 1, vec![1, 2]);
    w.l.submit(&sm).unwrap();
    assert!(matches!(
        rejection(w.l.submit(&sm)),
        Rejection::Replay { .. }
    ));
    // Same content, fresh signature (signatures are not unique): still the same message hash.
    let again = sm.msg.clone().sign(&w.workers[0]);
    assert!(matches!(
        rejection(w.l.submit(&again)),
        Rejection::Replay { .. }
    ));
    // Old sequence number on a new message.
    let mut m = contribution(&w.l, &w.workers[0], 2, vec![3]).msg;
    m.seq = 1;
    assert!(matches!(
        rejection(w.l.submit(&m.sign(&w.workers[0]))),
        Rejection::StaleSequence {
            last: 1,
            got: 1,
            ..
        }
    ));
    // The same message aimed at another ledger.
    let mut m = contribution(&w.l, &w.workers[1], 3, vec![4]).msg;
    m.origin = "other-ledger".into();
    assert!(matches!(
        rejection(w.l.submit(&m.sign(&w.workers[1]))),
        Rejection::WrongOrigin { .. }
    ));
}

#[test]
fn wrong_round_and_wrong_parent_are_rejected() {
    let mut w = world(&[100]);
    let mut m = contribution(&w.l, &w.workers[0], 1, vec![]).msg;
    m.round = 2;
    assert!(matches!(
        rejection(w.l.submit(&m.sign(&w.workers[0]))),
        Rejection::WrongRound {
            expected: 1,
            got: 2
        }
    ));
    let mut m = contribution(&w.l, &w.workers[0], 1, vec![]).msg;
    if let Body::Contribution(c) = &mut m.body {
        c.parent_model = [9; 32];
    }
    assert!(matches!(
        rejection(w.l.submit(&m.sign(&w.workers[0]))),
        Rejection::WrongParent { .. }
    ));
    // After settlement, a round-1 message is stale.
    let old = contribution(&w.l, &w.workers[1], 5, vec![]);
    w.l.settle([8; 32]).unwrap();
    assert!(matches!(
        rejection(w.l.submit(&old)),
        Rejection::WrongRound {
            expected: 2,
            got: 1
        }
    ));
}

#[test]
fn duplicate_contribution_and_evaluation_are_rejected() {
    let mut w = world(&[100]);
    let a = contribution(&w.l, &w.workers[0], 1, vec![1]);
    w.l.submit(&a).unwrap();
    let b = contribution(&w.l, &w.workers[0], 2, vec![2]);
    assert!(matches!(
        rejection(w.l.submit(&b)),
        Rejection::DuplicateContribution { round: 1, .. }
    ));
    let e = evaluation(&w.l, &w.validators[0], a.id, 2_000_000, 1_000_000);
    w.l.submit(&e).unwrap();
    let e2 = evaluation(&w.l, &w.validators[0], a.id, 2_000_000, 1_500_000);
    assert!(matches!(
        rejection(w.l.submit(&e2)),
        Rejection::DuplicateEvaluation { .. }
    ));
    // Workers cannot evaluate; validators cannot contribute.
    let e3 = evaluation(&w.l, &w.workers[1], a.id, 2, 1);
    assert!(matches!(
        rejection(w.l.submit(&e3)),
        Rejection::NotAuthorized { .. }
    ));
}

#[test]
fn heldout_seed_chosen_before_commit_is_rejected() {
    let mut w = world(&[100]);
    let a = contribution(&w.l, &w.workers[0], 1, vec![1]);
    let before = w.l.log().len();
    w.l.submit(&a).unwrap();
    let mut e = evaluation(&w.l, &w.validators[0], a.id, 2, 1).msg;
    if let Body::Evaluation(ev) = &mut e.body {
        // A beacon from before the contribution existed: batches knowable in advance.
        let root = w.l.log().tree().root_at(before).unwrap();
        ev.beacon_size = before;
        ev.heldout_seed = heldout_seed(&a.id, &w.validators[0].public().0, &root);
    }
    assert!(matches!(
        rejection(w.l.submit(&e.sign(&w.validators[0]))),
        Rejection::BadHeldOutSeed { .. }
    ));
}

#[test]
fn copied_update_is_slashed_and_the_earlier_kept() {
    let mut w = world(&[100]);
    let orig = contribution(&w.l, &w.workers[0], 1, (0..20).collect());
    w.l.submit(&orig).unwrap();
    // Different artifact bytes, same top-k coordinates (70% overlap).
    let copy = contribution(&w.l, &w.workers[1], 2, (6..26).collect());
    w.l.submit(&copy).unwrap();
    let honest = contribution(&w.l, &w.workers[2], 3, (100..120).collect());
    w.l.submit(&honest).unwrap();
    let r = w.l.state().check_copy(&copy.id).unwrap_err();
    assert!(
        matches!(
            r,
            Rejection::CopiedUpdate {
                overlap_ppm: 700_000,
                ..
            }
        ),
        "{r:?}"
    );
    w.l.state().check_copy(&orig.id).unwrap();
    for c in [&orig, &copy, &honest] {
        let e = evaluation(&w.l, &w.validators[0], c.id, 2_000_000, 1_000_000);
        w.l.submit(&e).unwrap();
    }
    // Settling while ignoring the copy is refused.
    let (s, _) = w.l.state().compute_settlement([0; 32]);
    let op = Keypair::from_seed([1; 32]);
    let m = Message {
        origin: w.l.origin().to_string(),
        signer: op.public(),
        seq: w.l.next_seq(&op.public()),
        round: 1,
        body: Body::Settlement(s),
    };
    assert!(matches!(
        rejection(w.l.submit(&m.sign(&op))),
        Rejection::Mismatch {
            kind: "settlement",
            ..
        }
    ));
    let settled = w.l.settle([0; 32]).unwrap();
    let out = &w.l.state().history[0].outcomes;
    assert_eq!(out[1].slash, Some(SlashReason::Copied(orig.id)));
    assert_eq!(out[1].reward, 0);
    assert_eq!(out[0].reward, 500_000);
    assert_eq!(out[2].reward, 500_000);
    assert_eq!(settled.emission, 1_000_000);
}

#[test]
fn non_finite_and_invalid_are_slashed() {
    let mut w = world(&[60, 40]);
    let a = contribution(&w.l, &w.workers[0], 1, vec![1]);
    w.l.submit(&a).unwrap();
    let b = contribution(&w.l, &w.workers[1], 2, vec![2]);
    w.l.submit(&b).unwrap();
    for v in &w.validators {
        let mut e = evaluation(&w.l, v, a.id, 0, 0).msg;
        if let Body::Evaluation(ev) = &mut e.body {
            ev.verdict = Verdict::NonFinite;
        }
        w.l.submit(&e.sign(v)).unwrap();
        let e = evaluation(&w.l, v, b.id, 1_000_000, 900_000);
        w.l.submit(&e).unwrap();
    }
    w.l.settle([0; 32]).unwrap();
    let out = &w.l.state().history[0].outcomes;
    assert_eq!(out[0].slash, Some(SlashReason::NonFinite));
    assert_eq!(out[0].consensus, Some(EvalScore::NonFinite));
    assert_eq!(out[1].reward, 1_000_000);
}

/// Runs one round where validator stakes are `stakes` and validator 2 (if present) lies.
fn rewards_with(stakes: &[u64], liar: bool) -> Vec<u64> {
    let mut w = world(stakes);
    let improvements = [100_000u64, 200_000, 300_000, 400_000];
    let mut ids = Vec::new();
    for (i, k) in w.workers.iter().enumerate() {
        let c = contribution(&w.l, k, i as u8 + 1, vec![i as u32 * 100]);
        w.l.submit(&c).unwrap();
        ids.push(c.id);
    }
    for (vi, v) in w.validators.iter().enumerate() {
        for (ci, id) in ids.iter().enumerate() {
            // Honest validators measure the same; the liar boosts worker 0 and sinks the others.
            let after = if liar && vi == 2 {
                if ci == 0 { 0 } else { 3_000_000 }
            } else {
                1_000_000 - improvements[ci]
            };
            let e = evaluation(&w.l, v, *id, 1_000_000, after);
            w.l.submit(&e).unwrap();
        }
    }
    w.l.settle([0; 32]).unwrap();
    w.l.state().history[0]
        .outcomes
        .iter()
        .map(|o| o.reward)
        .collect()
}

#[test]
fn lying_validator_minority_cannot_move_scores() {
    let honest = rewards_with(&[40, 35, 25], false);
    let lied = rewards_with(&[40, 35, 25], true);
    assert_eq!(honest, lied, "a 25% liar changed the rewards");
    assert!(honest.windows(2).all(|w| w[0] < w[1]), "{honest:?}");
    // With a liar majority the result does change: the median is only as honest as > 1/2 stake.
    let captured = rewards_with(&[20, 20, 60], true);
    assert_ne!(captured, honest);
}

#[test]
fn forged_settlement_is_rejected() {
    let mut w = world(&[100]);
    let a = contribution(&w.l, &w.workers[0], 1, vec![1]);
    w.l.submit(&a).unwrap();
    w.l.submit(&evaluation(
        &w.l,
        &w.validators[0],
        a.id,
        2_000_000,
        1_000_000,
    ))
    .unwrap();
    let op = Keypair::from_seed([1; 32]);
    let m = Message {
        origin: w.l.origin().to_string(),
        signer: op.public(),
        seq: w.l.next_seq(&op.public()),
        round: 1,
        body: Body::Settlement(Settlement {
            emission: 1_000_000,
            allocations: vec![(w.workers[1].public(), 1_000_000)],
            next_base: [0; 32],
        }),
    };
    assert!(matches!(
        rejection(w.l.submit(&m.sign(&op))),
        Rejection::Mismatch { .. }
    ));
    // A worker cannot settle at all.
    let m = Message {
        origin: w.l.origin().to_string(),
        signer: w.workers[0].public(),
        seq: w.l.next_seq(&w.workers[0].public()),
        round: 1,
        body: Body::Settlement(Settlement {
            emission: 0,
            allocations: vec![],
            next_base: [0; 32],
        }),
    };
    assert!(matches!(
        rejection(w.l.submit(&m.sign(&w.workers[0]))),
        Rejection::NotAuthorized { .. }
    ));
}
