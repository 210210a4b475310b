//! Signed ledger records and their one canonical binary encoding (format version 1).
//!
//! Signed bytes (`Message::encode`):
//! `tag ‖ origin ‖ signer[32] ‖ seq u64 ‖ round u64 ‖ body`, where `tag` is a length-prefixed
//! ASCII string such as `magnet-ledger/v1/contribution` (one per kind: domain separation, so a
//! signature over one kind can never be read as another), `origin` names the ledger (a message
//! for one ledger is refused by every other), `seq` strictly increases per signer and `round`
//! must be the ledger's open round. A stored entry is `signed bytes ‖ signature[64]`; its id is
//! `SHA-256(signed bytes)` (never the signature: signatures are not unique).

use sha2::{Digest, Sha256};

use crate::codec::{Reader, Writer, hex};
use crate::error::{Error, Result};
use crate::identity::{Keypair, PublicKey};
use crate::merkle::Hash;

/// Largest encoded entry accepted from outside.
pub const MAX_ENTRY: usize = 1 << 20;
const MAX_ORIGIN: usize = 64;
const MAX_METRICS: usize = 32;
const MAX_NAME: usize = 64;
/// Largest copy-detection sketch (coordinate indices).
pub const MAX_SKETCH: usize = 4096;
const MAX_ALLOCATIONS: usize = 100_000;

/// Role of a registered node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Submits model updates (DiLoCo pseudo-gradients).
    Worker,
    /// Measures contributions.
    Validator,
    /// Submits model improvements from automated research.
    Researcher,
}

impl Role {
    fn code(self) -> u8 {
        match self {
            Role::Worker => 1,
            Role::Validator => 2,
            Role::Researcher => 3,
        }
    }
    fn from_code(c: u8, at: usize) -> Result<Self> {
        Ok(match c {
            1 => Role::Worker,
            2 => Role::Validator,
            3 => Role::Researcher,
            _ => return Err(Error::decode(at, format!("unknown role {c}"))),
        })
    }
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Validator => "validator",
            Role::Researcher => "researcher",
        }
    }
}

/// Ledger parameters fixed at genesis (entry 0, signed by the operator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    /// Base model of round 1.
    pub base_model: Hash,
    /// Emission of round 1 in integer units.
    pub initial_emission: u64,
    /// The per-round emission halves every this many rounds.
    pub halving_rounds: u64,
    /// Total emission never exceeds this.
    pub cap: u64,
    /// Sketch overlap (parts per million) from which a later contribution counts as a copy.
    pub copy_threshold_ppm: u32,
}

/// Operator-signed registration of a node key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Registered key (checked: canonical, prime order).
    pub key: PublicKey,
    /// Role.
    pub role: Role,
    /// Stake in integer units (validator vote weight).
    pub stake: u64,
}

/// A claimed metric in integer micro-units (no floats in signed data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// Metric name.
    pub name: String,
    /// Value × 10^6.
    pub micro: i64,
}

/// A worker's signed contribution for the open round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// Model the update applies to (must equal the round's base model).
    pub parent_model: Hash,
    /// SHA-256 of the artifact (the update itself lives outside the ledger).
    pub artifact: Hash,
    /// Artifact size in bytes.
    pub artifact_size: u64,
    /// Metrics the worker claims (informational; scores come from validators).
    pub metrics: Vec<Metric>,
    /// Strictly increasing coordinate indices of the update's top-k entries, for copy detection.
    pub sketch: Vec<u32>,
}

/// What a validator's measurement found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Both losses were finite and are given in micro-units.
    Measured,
    /// The update produced NaN or infinite losses.
    NonFinite,
    /// The artifact was missing, malformed or did not match its hash.
    Invalid,
    /// The validator's copy check, recomputed from the decoded artifacts, found the update
    /// to copy the model update recorded by this earlier message: a contribution of this or
    /// an earlier round, or a settlement (whose merged step was resubmitted).
    Copied(Hash),
    /// The update carries no work of its own (zero, or negligible against the round).
    FreeRider,
}

/// A validator's signed measurement of one contribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Id of the contribution.
    pub contribution: Hash,
    /// Tree size whose root seeds the held-out batches (must be after the contribution).
    pub beacon_size: u64,
    /// `heldout_seed(contribution, validator, root(beacon_size))`.
    pub heldout_seed: Hash,
    /// Verdict.
    pub verdict: Verdict,
    /// Loss before applying the update, × 10^6.
    pub loss_before: u64,
    /// Loss after applying the update, × 10^6.
    pub loss_after: u64,
}

/// Why a contribution's score was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlashReason {
    /// Validators holding the median stake found the artifact invalid.
    Invalid,
    /// Validators holding the median stake found non-finite losses.
    NonFinite,
    /// Too similar to the earlier contribution with this id in the same round, or (by the
    /// validators' consensus) a copy of the update recorded by this earlier message.
    Copied(Hash),
    /// Validators holding the median stake found no work of its own in the update.
    FreeRider,
    /// The consensus score is below the protocol's poison tolerance (it raised held-out loss).
    Poisoned,
}

impl std::fmt::Display for SlashReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlashReason::Invalid => f.write_str("invalid"),
            SlashReason::NonFinite => f.write_str("non-finite"),
            SlashReason::Copied(h) => write!(f, "copied from {}", hex(&h[..6])),
            SlashReason::FreeRider => f.write_str("free rider"),
            SlashReason::Poisoned => f.write_str("poisoned"),
        }
    }
}

/// Operator-signed score cut for one contribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slash {
    /// Contribution id.
    pub contribution: Hash,
    /// Reason.
    pub reason: SlashReason,
}

/// Operator-signed close of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// Units minted this round.
    pub emission: u64,
    /// `(key, units)` sorted by key, every amount > 0.
    pub allocations: Vec<(PublicKey, u64)>,
    /// Base model of the next round.
    pub next_base: Hash,
}

/// Operator-signed round protocol, at most once, in round 1 before any contribution. Its
/// presence switches the ledger to the networked round (`magnet`): every round is closed by
/// a [`Close`] before it is evaluated, held-out seeds come from the close (validators cannot
/// choose a beacon), sketches never decide a copy (only validators' verdicts and identical
/// artifacts do), a consensus score below `-poison_tolerance_ppm` (or below minus
/// [`crate::state::POISON_RELATIVE`] times the round's median score magnitude, when that is
/// smaller) is slashed as poisoned,
/// and `participation_ppm` of each round's emission is split equally among the unslashed
/// measured contributions (the rest by positive score).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol {
    /// Share of each round's emission split equally among eligible contributions (ppm).
    pub participation_ppm: u32,
    /// Consensus scores below minus this (ppm) are slashed as poisoned.
    pub poison_tolerance_ppm: u32,
    /// SHA-256 of the run's configuration document (protocol and training config; for a
    /// searched config, the best trial).
    pub config: Hash,
    /// SHA-256 of the search journal that chose the training config (zeros: given, no search).
    pub search: Hash,
}

/// Operator-signed end of a round's commit phase: no contribution is accepted after it, and
/// the log root right after it (size = its index + 1) seeds every held-out batch of the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// Contributions committed in the round (must equal the ledger's count).
    pub committed: u64,
}

/// The kind-specific part of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Ledger parameters.
    Genesis(Genesis),
    /// Node registration.
    Registration(Registration),
    /// Worker contribution.
    Contribution(Contribution),
    /// Validator evaluation.
    Evaluation(Evaluation),
    /// Score cut.
    Slash(Slash),
    /// Round settlement.
    Settlement(Settlement),
    /// Round protocol (networked rounds).
    Protocol(Protocol),
    /// End of a round's commit phase.
    Close(Close),
}

impl Body {
    /// Domain-separation tag, versioned.
    pub fn tag(&self) -> &'static str {
        match self {
            Body::Genesis(_) => "magnet-ledger/v1/genesis",
            Body::Registration(_) => "magnet-ledger/v1/registration",
            Body::Contribution(_) => "magnet-ledger/v1/contribution",
            Body::Evaluation(_) => "magnet-ledger/v1/evaluation",
            Body::Slash(_) => "magnet-ledger/v1/slash",
            Body::Settlement(_) => "magnet-ledger/v1/settlement",
            Body::Protocol(_) => "magnet-ledger/v1/protocol",
            Body::Close(_) => "magnet-ledger/v1/close",
        }
    }
    /// Short kind name.
    pub fn kind(&self) -> &'static str {
        &self.tag()["magnet-ledger/v1/".len()..]
    }
}

/// A message before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Ledger name this message is bound to.
    pub origin: String,
    /// Signer.
    pub signer: PublicKey,
    /// Per-signer sequence number (strictly increasing).
    pub seq: u64,
    /// Round the message is bound to.
    pub round: u64,
    /// Kind-specific fields.
    pub body: Body,
}

impl Message {
    /// Canonical signed bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.str(self.body.tag())
            .str(&self.origin)
            .fixed(&self.signer.0)
            .u64(self.seq)
            .u64(self.round);
        match &self.body {
            Body::Genesis(g) => {
                w.fixed(&g.base_model)
                    .u64(g.initial_emission)
                    .u64(g.halving_rounds)
                    .u64(g.cap)
                    .u32(g.copy_threshold_ppm);
            }
            Body::Registration(r) => {
                w.fixed(&r.key.0).u8(r.role.code()).u64(r.stake);
            }
            Body::Contribution(c) => {
                w.fixed(&c.parent_model)
                    .fixed(&c.artifact)
                    .u64(c.artifact_size)
                    .u32(c.metrics.len() as u32);
                for m in &c.metrics {
                    w.str(&m.name).i64(m.micro);
                }
                w.u32(c.sketch.len() as u32);
                for &i in &c.sketch {
                    w.u32(i);
                }
            }
            Body::Evaluation(e) => {
                w.fixed(&e.contribution)
                    .u64(e.beacon_size)
                    .fixed(&e.heldout_seed)
                    .u8(match e.verdict {
                        Verdict::Measured => 1,
                        Verdict::NonFinite => 2,
                        Verdict::Invalid => 3,
                        Verdict::Copied(_) => 4,
                        Verdict::FreeRider => 5,
                    });
                if let Verdict::Copied(h) = e.verdict {
                    w.fixed(&h);
                }
                w.u64(e.loss_before).u64(e.loss_after);
            }
            Body::Slash(s) => {
                w.fixed(&s.contribution);
                match s.reason {
                    SlashReason::Invalid => {
                        w.u8(1);
                    }
                    SlashReason::NonFinite => {
                        w.u8(2);
                    }
                    SlashReason::Copied(h) => {
                        w.u8(3).fixed(&h);
                    }
                    SlashReason::FreeRider => {
                        w.u8(4);
                    }
                    SlashReason::Poisoned => {
                        w.u8(5);
                    }
                }
            }
            Body::Settlement(s) => {
                w.u64(s.emission).u32(s.allocations.len() as u32);
                for (k, a) in &s.allocations {
                    w.fixed(&k.0).u64(*a);
                }
                w.fixed(&s.next_base);
            }
            Body::Protocol(p) => {
                w.u32(p.participation_ppm)
                    .u32(p.poison_tolerance_ppm)
                    .fixed(&p.config)
                    .fixed(&p.search);
            }
            Body::Close(c) => {
                w.u64(c.committed);
            }
        }
        w.finish()
    }

    /// Decodes signed bytes; rejects anything that would not re-encode to the same bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let tag_at = r.offset();
        let tag = r.str(64, "tag")?;
        let origin = r.str(MAX_ORIGIN, "origin")?;
        let signer = PublicKey(r.array("signer")?);
        let seq = r.u64("seq")?;
        let round = r.u64("round")?;
        let body = match tag.as_str() {
            "magnet-ledger/v1/genesis" => Body::Genesis(Genesis {
                base_model: r.array("base_model")?,
                initial_emission: r.u64("initial_emission")?,
                halving_rounds: r.u64("halving_rounds")?,
                cap: r.u64("cap")?,
                copy_threshold_ppm: r.u32("copy_threshold_ppm")?,
            }),
            "magnet-ledger/v1/registration" => {
                let key = PublicKey(r.array("key")?);
                let at = r.offset();
                let role = Role::from_code(r.u8("role")?, at)?;
                Body::Registration(Registration {
                    key,
                    role,
                    stake: r.u64("stake")?,
                })
            }
            "magnet-ledger/v1/contribution" => {
                let parent_model = r.array("parent_model")?;
                let artifact = r.array("artifact")?;
                let artifact_size = r.u64("artifact_size")?;
                let n = r.count(MAX_METRICS, 12, "metrics")?;
                let mut metrics = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = r.str(MAX_NAME, "metric name")?;
                    metrics.push(Metric {
                        name,
                        micro: r.i64("metric value")?,
                    });
                }
                let n = r.count(MAX_SKETCH, 4, "sketch")?;
                let mut sketch = Vec::with_capacity(n);
                for _ in 0..n {
                    let at = r.offset();
                    let v = r.u32("sketch index")?;
                    if sketch.last().is_some_and(|&p| p >= v) {
                        return Err(Error::decode(at, "sketch indices must strictly increase"));
                    }
                    sketch.push(v);
                }
                Body::Contribution(Contribution {
                    parent_model,
                    artifact,
                    artifact_size,
                    metrics,
                    sketch,
                })
            }
            "magnet-ledger/v1/evaluation" => {
                let contribution = r.array("contribution")?;
                let beacon_size = r.u64("beacon_size")?;
                let heldout_seed = r.array("heldout_seed")?;
                let at = r.offset();
                let verdict = match r.u8("verdict")? {
                    1 => Verdict::Measured,
                    2 => Verdict::NonFinite,
                    3 => Verdict::Invalid,
                    4 => Verdict::Copied(r.array("earlier")?),
                    5 => Verdict::FreeRider,
                    v => return Err(Error::decode(at, format!("unknown verdict {v}"))),
                };
                let loss_before = r.u64("loss_before")?;
                let loss_after = r.u64("loss_after")?;
                if verdict != Verdict::Measured && (loss_before, loss_after) != (0, 0) {
                    return Err(Error::decode(at, "losses must be 0 unless measured"));
                }
                Body::Evaluation(Evaluation {
                    contribution,
                    beacon_size,
                    heldout_seed,
                    verdict,
                    loss_before,
                    loss_after,
                })
            }
            "magnet-ledger/v1/slash" => {
                let contribution = r.array("contribution")?;
                let at = r.offset();
                let reason = match r.u8("reason")? {
                    1 => SlashReason::Invalid,
                    2 => SlashReason::NonFinite,
                    3 => SlashReason::Copied(r.array("earlier")?),
                    4 => SlashReason::FreeRider,
                    5 => SlashReason::Poisoned,
                    v => return Err(Error::decode(at, format!("unknown slash reason {v}"))),
                };
                Body::Slash(Slash {
                    contribution,
                    reason,
                })
            }
            "magnet-ledger/v1/settlement" => {
                let emission = r.u64("emission")?;
                let n = r.count(MAX_ALLOCATIONS, 40, "allocations")?;
                let mut allocations: Vec<(PublicKey, u64)> = Vec::with_capacity(n);
                for _ in 0..n {
                    let at = r.offset();
                    let k = PublicKey(r.array("allocation key")?);
                    let a = r.u64("allocation amount")?;
                    if a == 0 || allocations.last().is_some_and(|(p, _)| *p >= k) {
                        return Err(Error::decode(
                            at,
                            "allocations must be non-zero and sorted by strictly increasing key",
                        ));
                    }
                    allocations.push((k, a));
                }
                Body::Settlement(Settlement {
                    emission,
                    allocations,
                    next_base: r.array("next_base")?,
                })
            }
            "magnet-ledger/v1/protocol" => {
                let at = r.offset();
                let participation_ppm = r.u32("participation_ppm")?;
                let poison_tolerance_ppm = r.u32("poison_tolerance_ppm")?;
                if participation_ppm > 1_000_000 || poison_tolerance_ppm > 1_000_000 {
                    return Err(Error::decode(at, "protocol shares must be at most 1e6 ppm"));
                }
                Body::Protocol(Protocol {
                    participation_ppm,
                    poison_tolerance_ppm,
                    config: r.array("config")?,
                    search: r.array("search")?,
                })
            }
            "magnet-ledger/v1/close" => Body::Close(Close {
                committed: r.u64("committed")?,
            }),
            other => {
                return Err(Error::decode(
                    tag_at,
                    format!("unknown message tag `{other}`"),
                ));
            }
        };
        r.finish("message")?;
        Ok(Message {
            origin,
            signer,
            seq,
            round,
            body,
        })
    }

    /// Signs the canonical bytes.
    pub fn sign(self, key: &Keypair) -> SignedMessage {
        debug_assert_eq!(key.public(), self.signer);
        let bytes = self.encode();
        let (sig, hint) = key.sign_with_hint(&bytes);
        SignedMessage {
            id: message_id(&bytes),
            msg: self,
            signed: bytes,
            sig,
            hint: Some(hint),
        }
    }
}

/// `SHA-256(signed bytes)`: the identity of a message for dedup and references.
pub fn message_id(signed: &[u8]) -> Hash {
    Sha256::digest(signed).into()
}

/// A decoded message with its signature (not yet verified) and exact signed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedMessage {
    /// Decoded message.
    pub msg: Message,
    /// The exact bytes that were signed.
    pub signed: Vec<u8>,
    /// Ed25519 signature.
    pub sig: [u8; 64],
    /// `SHA-256(signed)`.
    pub id: Hash,
    /// Batch-verification hint sent along with the signature
    /// ([`crate::identity::r_hint`]). Never stored or signed; a missing or wrong hint only means
    /// the message is checked with `verify_strict` instead of in a batch.
    pub hint: Option<[u8; 32]>,
}

impl SignedMessage {
    /// Stored form: signed bytes then the signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.signed.len() + 64);
        v.extend_from_slice(&self.signed);
        v.extend_from_slice(&self.sig);
        v
    }

    /// Parses a stored entry from untrusted bytes (does not check the signature).
    pub fn from_bytes(entry: &[u8]) -> Result<Self> {
        if entry.len() > MAX_ENTRY {
            return Err(Error::decode(
                0,
                format!("entry of {} bytes exceeds {MAX_ENTRY}", entry.len()),
            ));
        }
        if entry.len() < 64 {
            return Err(Error::decode(0, "entry shorter than a signature"));
        }
        let (signed, sig) = entry.split_at(entry.len() - 64);
        let msg = Message::decode(signed)?;
        Ok(Self {
            msg,
            signed: signed.to_vec(),
            sig: sig.try_into().expect("64 bytes"),
            id: message_id(signed),
            hint: None,
        })
    }

    /// Short id for humans.
    pub fn short_id(&self) -> String {
        hex(&self.id[..6])
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_hash() -> impl Strategy<Value = Hash> {
        any::<[u8; 32]>()
    }

    fn arb_body() -> impl Strategy<Value = Body> {
        prop_oneof![
            (
                arb_hash(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u32>()
            )
                .prop_map(|(b, i, h, c, t)| Body::Genesis(Genesis {
                    base_model: b,
                    initial_emission: i,
                    halving_rounds: h,
                    cap: c,
                    copy_threshold_ppm: t
                })),
            (arb_hash(), 0u8..3, any::<u64>()).prop_map(|(k, r, s)| Body::Registration(
                Registration {
                    key: PublicKey(k),
                    role: [Role::Worker, Role::Validator, Role::Researcher][r as usize],
                    stake: s
                }
            )),
            (
                arb_hash(),
                arb_hash(),
                any::<u64>(),
                proptest::collection::vec(("[a-z_]{0,12}", any::<i64>()), 0..5),
                proptest::collection::btree_set(any::<u32>(), 0..50)
            )
                .prop_map(|(p, a, s, m, sk)| Body::Contribution(Contribution {
                    parent_model: p,
                    artifact: a,
                    artifact_size: s,
                    metrics: m
                        .into_iter()
                        .map(|(name, micro)| Metric { name, micro })
                        .collect(),
                    sketch: sk.into_iter().collect()
                })),
            (
                arb_hash(),
                any::<u64>(),
                arb_hash(),
                any::<u64>(),
                any::<u64>()
            )
                .prop_map(|(c, b, s, lb, la)| Body::Evaluation(Evaluation {
                    contribution: c,
                    beacon_size: b,
                    heldout_seed: s,
                    verdict: Verdict::Measured,
                    loss_before: lb,
                    loss_after: la
                })),
            (arb_hash(), arb_hash(), 0u8..5).prop_map(|(c, e, r)| Body::Slash(Slash {
                contribution: c,
                reason: match r {
                    0 => SlashReason::Invalid,
                    1 => SlashReason::NonFinite,
                    2 => SlashReason::FreeRider,
                    3 => SlashReason::Poisoned,
                    _ => SlashReason::Copied(e),
                }
            })),
            (0u32..=1_000_000, 0u32..=1_000_000, arb_hash(), arb_hash()).prop_map(
                |(p, t, c, s)| Body::Protocol(Protocol {
                    participation_ppm: p,
                    poison_tolerance_ppm: t,
                    config: c,
                    search: s,
                })
            ),
            any::<u64>().prop_map(|c| Body::Close(Close { committed: c })),
            (arb_hash(), arb_hash(), any::<u64>(), arb_hash(), 0u8..4).prop_map(
                |(c, e, b, s, v)| {
                    Body::Evaluation(Evaluation {
                        contribution: c,
                        beacon_size: b,
                        heldout_seed: s,
                        verdict: [
                            Verdict::NonFinite,
                            Verdict::Invalid,
                            Verdict::Copied(e),
                            Verdict::FreeRider,
                        ][v as usize],
                        loss_before: 0,
                        loss_after: 0,
                    })
                }
            ),
            (
                any::<u64>(),
                proptest::collection::btree_map(arb_hash(), 1u64.., 0..6),
                arb_hash()
            )
                .prop_map(|(e, a, n)| Body::Settlement(Settlement {
                    emission: e,
                    allocations: a.into_iter().map(|(k, v)| (PublicKey(k), v)).collect(),
                    next_base: n
                })),
        ]
    }

    proptest! {
        #[test]
        fn messages_round_trip(body in arb_body(), origin in "[a-z0-9-]{1,20}", seq in any::<u64>(), round in any::<u64>()) {
            let kp = Keypair::from_seed([1; 32]);
            let m = Message { origin, signer: kp.public(), seq, round, body };
            let sm = m.clone().sign(&kp);
            let bytes = sm.to_bytes();
            let back = SignedMessage::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&back, &SignedMessage { hint: None, ..sm.clone() });
            prop_assert_eq!(sm.hint, crate::identity::r_hint(&sm.sig));
            prop_assert_eq!(back.msg.encode(), sm.signed);
            crate::identity::verify_strict(&kp.public(), &back.signed, &back.sig).unwrap();
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = SignedMessage::from_bytes(&bytes);
        }

        #[test]
        fn truncations_and_flips_never_panic(body in arb_body(), cut in any::<usize>(), flip in any::<usize>()) {
            let kp = Keypair::from_seed([2; 32]);
            let m = Message { origin: "o".into(), signer: kp.public(), seq: 1, round: 1, body };
            let bytes = m.sign(&kp).to_bytes();
            let _ = SignedMessage::from_bytes(&bytes[..cut % bytes.len()]);
            let mut b = bytes.clone();
            let i = flip % b.len();
            b[i] ^= 0x5a;
            if let Ok(sm) = SignedMessage::from_bytes(&b) {
                // A flip that still decodes must change the id or the signature.
                prop_assert!(sm.to_bytes() == b);
            }
        }
    }

    #[test]
    fn each_kind_has_its_own_tag() {
        let kp = Keypair::from_seed([4; 32]);
        let m = Message {
            origin: "x".into(),
            signer: kp.public(),
            seq: 1,
            round: 1,
            body: Body::Slash(Slash {
                contribution: [0; 32],
                reason: SlashReason::Invalid,
            }),
        };
        let enc = m.encode();
        assert!(enc.windows(22).any(|w| w == b"magnet-ledger/v1/slash"));
        // Unsorted sketch is not canonical.
        let mut c = Message {
            body: Body::Contribution(Contribution {
                parent_model: [0; 32],
                artifact: [0; 32],
                artifact_size: 1,
                metrics: vec![],
                sketch: vec![5, 3],
            }),
            ..m
        }
        .encode();
        assert!(Message::decode(&c).is_err());
        c.push(0);
        assert!(Message::decode(&c).is_err());
    }
}
