//! What every party agrees on: the round's parameters ([`ProtocolConfig`], published once by
//! the operator as `magnet/protocol.json`), the object keys, and the documents the parties
//! exchange.
//!
//! A round `r`, after the operator published model version `r - 1` (diloco's
//! `globals/{r-1}.bin`) and `magnet/rounds/{r}/open.json`:
//! 1. **commit**: each worker trains, encodes its update (the artifact: diloco's update
//!    object, header + codec payload), signs a contribution record (round, parent model hash,
//!    SHA-256 and size of the artifact) and writes the record, never the artifact, to
//!    `commits/{sha256(record)}.bin`;
//! 2. **close**: once every member committed (or a quorum plus the grace window, or the
//!    deadline) the operator ingests the records into the ledger, records the ledger's
//!    `Close` and publishes `close.json`: the contributions in log order and the beacon (the
//!    tree size right after the close and its root). Only now do honest workers reveal, so no
//!    update of the round is readable before every commit is in: a copy within the round is
//!    impossible, and a copy of an earlier round's update is caught by the validators;
//! 3. **reveal**: each worker writes its artifact to `artifacts/{sha256(artifact)}.bin`
//!    (content-addressed: nobody can squat another party's key with other bytes);
//! 4. **evaluate**: validators read the close, the artifacts and the previous rounds', check
//!    and measure each contribution on held-out windows seeded by
//!    `heldout_seed(contribution, validator, beacon root)`, and write their signed evaluations
//!    to `evals/{sha256(batch)}.bin`;
//! 5. **settle and merge**: the operator ingests the evaluations, records the slashes the
//!    ledger derives, merges the contributions the ledger's verdicts accept through diloco's
//!    coordinator (publishing version `r`), settles, and writes `result.json`.
//!
//! Every object is read with the size limit of its kind ([`Limits`]).

use crate::error::{Error, Result};
use diloco::codec::Codec;
use diloco::outer::OuterOptimizer;
use incentive_ledger::codec::hex;
use incentive_ledger::merkle::Hash;
use serde::{Deserialize, Serialize};

/// Size limits of the objects read from the store, checked before reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// An artifact (encoded update).
    pub artifact: u64,
    /// A signed record (contribution).
    pub record: u64,
    /// A validator's batch of evaluations.
    pub evaluations: u64,
    /// A JSON document (protocol, join, close, result, manifest).
    pub document: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            artifact: 256 << 20,
            record: incentive_ledger::record::MAX_ENTRY as u64,
            evaluations: 4 << 20,
            document: 16 << 20,
        }
    }
}

/// The parameters of a run, fixed by the operator before round 1 and read by every party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtocolConfig {
    /// Ledger origin (every signed message names it).
    pub origin: String,
    /// Outer rounds.
    pub rounds: u64,
    /// Inner steps per round (H).
    pub inner_steps: u64,
    /// The codec honest workers use (validators decode any codec).
    pub codec: Codec,
    /// Outer optimizer of the merge.
    pub outer: OuterOptimizer,
    /// The declared aggregation weight an update header must carry: the protocol weighs
    /// every accepted update equally, so any other value is refused as invalid.
    pub update_weight: f32,
    /// Registered workers the operator waits for before opening round 1.
    pub min_workers: usize,
    /// Registered validators the operator waits for before opening round 1.
    pub min_validators: usize,
    /// Commits after which a round closes once the grace window has passed (or at once when
    /// every member committed).
    pub quorum: usize,
    /// Grace window for stragglers, from the moment the quorum is reached (ms).
    pub grace_ms: u64,
    /// Hard deadline of the commit phase (ms, from the round's open).
    pub commit_deadline_ms: u64,
    /// How long validators and the operator wait for the reveals after the close (ms).
    pub reveal_deadline_ms: u64,
    /// How long the operator waits for the validators' evaluations after the close (ms).
    pub eval_deadline_ms: u64,
    /// Copy check: cosine of the residuals from which an update is a copy.
    pub copy_cosine: f64,
    /// Copy check: cosine with a previous merged step from which an update is a
    /// resubmitted step.
    pub step_cosine: f64,
    /// Free rider: an update whose L2 norm is below this fraction of the round's median.
    pub free_rider_ratio: f64,
    /// Copy check: residual cosine with the same worker's earlier update from which an
    /// update is a replay of it.
    #[serde(default = "default_replay_cosine")]
    pub replay_cosine: f64,
    /// Earlier rounds whose updates the copy check compares against.
    pub history_rounds: u64,
    /// Held-out windows per (validator, contribution) measurement.
    pub heldout_windows: usize,
    /// Learning rate of the validators' merge measurement (`global - lr * mean`).
    pub eval_lr: f32,
    /// Share of each round's emission split equally among the accepted contributions (ppm).
    pub participation_ppm: u32,
    /// A consensus score below minus this (ppm) is slashed as poisoned and not merged.
    pub poison_tolerance_ppm: u32,
    /// Units minted in round 1.
    pub emission: u64,
    /// Rounds per emission halving.
    pub halving_rounds: u64,
    /// Object size limits.
    pub limits: Limits,
    /// Poll interval of every wait (ms).
    pub poll_ms: u64,
}

fn default_replay_cosine() -> f64 {
    0.99
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self {
            origin: "magnet".into(),
            rounds: 4,
            inner_steps: 20,
            codec: Codec::F32,
            outer: OuterOptimizer::default(),
            update_weight: 1.0,
            min_workers: 1,
            min_validators: 1,
            quorum: 1,
            grace_ms: 20_000,
            commit_deadline_ms: 600_000,
            reveal_deadline_ms: 60_000,
            eval_deadline_ms: 300_000,
            copy_cosine: 0.9,
            step_cosine: 0.95,
            free_rider_ratio: 1e-3,
            replay_cosine: default_replay_cosine(),
            history_rounds: 2,
            heldout_windows: 8,
            eval_lr: 0.7,
            participation_ppm: 500_000,
            poison_tolerance_ppm: 10_000,
            emission: 1_000_000,
            halving_rounds: 4,
            limits: Limits::default(),
            poll_ms: 20,
        }
    }
}

impl ProtocolConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, m: &str| Err(Error::config(f, m));
        if self.origin.is_empty() || self.origin.len() > 64 {
            return bad("origin", "1 to 64 bytes");
        }
        if self.rounds == 0 || self.inner_steps == 0 || self.heldout_windows == 0 {
            return bad(
                "rounds",
                "rounds, inner_steps and heldout_windows must be at least 1",
            );
        }
        if self.quorum == 0 {
            return bad("quorum", "at least 1");
        }
        if !(self.update_weight.is_finite() && self.update_weight > 0.0) {
            return bad("update_weight", "a finite positive number");
        }
        for (f, v) in [
            ("copy_cosine", self.copy_cosine),
            ("step_cosine", self.step_cosine),
            ("replay_cosine", self.replay_cosine),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return bad(f, "in (0, 1]");
            }
        }
        if !(self.free_rider_ratio >= 0.0 && self.free_rider_ratio < 1.0) {
            return bad("free_rider_ratio", "in [0, 1)");
        }
        if !(self.eval_lr.is_finite() && self.eval_lr > 0.0) {
            return bad("eval_lr", "a finite positive number");
        }
        if self.participation_ppm > 1_000_000 || self.poison_tolerance_ppm > 1_000_000 {
            return bad("participation_ppm", "ppm values are at most 1e6");
        }
        if self.halving_rounds == 0 {
            return bad("halving_rounds", "at least 1");
        }
        self.codec.validate()?;
        Ok(())
    }

    /// SHA-256 of the canonical JSON: the protocol a run used, for reports and records.
    pub fn hash(&self) -> Hash {
        use sha2::Digest;
        sha2::Sha256::digest(serde_json::to_vec(self).expect("serializable")).into()
    }
}

/// Parses a JSON document read from the store.
pub fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::json(what, e))
}

/// Serializes a document for the store.
pub fn to_json<T: Serialize>(doc: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(doc).expect("documents serialize")
}

/// Object keys.
pub mod keys {
    /// The run's protocol.
    pub const PROTOCOL: &str = "magnet/protocol.json";
    /// The run's configuration document (model, training config, search record).
    pub const RUN: &str = "magnet/run.json";
    /// Join requests.
    pub const JOIN: &str = "magnet/join/";
    /// Registered members.
    pub const MEMBERS: &str = "magnet/members/";

    /// A join request of `key_hex`.
    pub fn join(key_hex: &str) -> String {
        format!("{JOIN}{key_hex}.json")
    }
    /// The membership of `key_hex` (written by the operator).
    pub fn member(key_hex: &str) -> String {
        format!("{MEMBERS}{key_hex}.json")
    }
    fn round(r: u64) -> String {
        format!("magnet/rounds/{r:08}/")
    }
    /// Round `r` is open.
    pub fn open(r: u64) -> String {
        format!("{}open.json", round(r))
    }
    /// Prefix of round `r`'s commits.
    pub fn commits(r: u64) -> String {
        format!("{}commits/", round(r))
    }
    /// A commit (by the SHA-256 of the record bytes).
    pub fn commit(r: u64, sha_hex: &str) -> String {
        format!("{}{sha_hex}.bin", commits(r))
    }
    /// Round `r`'s close.
    pub fn close(r: u64) -> String {
        format!("{}close.json", round(r))
    }
    /// An artifact (by its SHA-256).
    pub fn artifact(r: u64, sha_hex: &str) -> String {
        format!("{}artifacts/{sha_hex}.bin", round(r))
    }
    /// Prefix of round `r`'s evaluation batches.
    pub fn evals(r: u64) -> String {
        format!("{}evals/", round(r))
    }
    /// An evaluation batch (by its SHA-256).
    pub fn eval(r: u64, sha_hex: &str) -> String {
        format!("{}{sha_hex}.bin", evals(r))
    }
    /// Round `r`'s result.
    pub fn result(r: u64) -> String {
        format!("{}result.json", round(r))
    }
}

/// A party's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Trains and contributes updates.
    Worker,
    /// Checks and measures contributions.
    Validator,
}

/// A party asks to take part (signed with its key, so nobody registers another's key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// Ed25519 public key (hex).
    pub key: String,
    /// Role.
    pub role: Role,
    /// Stake (validators' vote weight; not custody: see docs/ledger.md).
    pub stake: u64,
    /// A name for reports.
    pub name: String,
    /// Signature (hex) over [`JoinRequest::signed_bytes`].
    pub signature: String,
}

impl JoinRequest {
    /// The bytes the key signs: domain tag, origin and the fields above.
    pub fn signed_bytes(&self, origin: &str) -> Vec<u8> {
        format!(
            "magnet/v1/join\n{origin}\n{}\n{:?}\n{}\n{}",
            self.key, self.role, self.stake, self.name
        )
        .into_bytes()
    }
}

/// The operator registered a party.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Public key (hex).
    pub key: String,
    /// Role.
    pub role: Role,
    /// Worker id in diloco's protocol (registration order among workers).
    pub worker_id: u32,
    /// Name.
    pub name: String,
    /// First round it may contribute to or evaluate.
    pub from_round: u64,
}

/// Round `r` is open for commits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundOpen {
    /// Round.
    pub round: u64,
    /// Model version the round trains from (`round - 1`).
    pub version: u64,
    /// Hash of that model (hex): every contribution's parent.
    pub parent: String,
}

/// One committed contribution, as the ledger admitted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    /// Ledger message id (hex).
    pub id: String,
    /// Worker key (hex).
    pub worker: String,
    /// diloco worker id.
    pub worker_id: u32,
    /// Artifact SHA-256 (hex).
    pub artifact: String,
    /// Artifact size.
    pub size: u64,
    /// Leaf index in the log.
    pub index: u64,
}

/// Round `r`'s commit phase is over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloseNotice {
    /// Round.
    pub round: u64,
    /// Contributions in log (commit) order.
    pub contributions: Vec<Committed>,
    /// Tree size right after the ledger's close.
    pub beacon_size: u64,
    /// Root at that size (hex): the seed of every held-out batch of the round.
    pub beacon_root: String,
    /// Commit objects refused, with the reason (malformed, unregistered signer, wrong
    /// round or parent, duplicate, over the size limit).
    pub refused: Vec<(String, String)>,
}

/// What a round decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundResult {
    /// Round.
    pub round: u64,
    /// Contribution ids (hex) merged into version `round`.
    pub merged: Vec<String>,
    /// diloco worker ids merged.
    pub merged_workers: Vec<u32>,
    /// `(contribution id hex, reason)` of every slash.
    pub slashed: Vec<(String, String)>,
    /// `(worker key hex, units)` paid.
    pub paid: Vec<(String, u64)>,
    /// Units minted.
    pub emission: u64,
    /// The settlement's ledger message id (hex).
    pub settlement: String,
    /// Hash of model version `round` (hex).
    pub model: String,
}

/// Hex of a hash.
pub fn hx(h: &Hash) -> String {
    hex(h)
}

/// Parses 64 hex digits.
pub fn unhex32(s: &str) -> Result<Hash> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return Err(Error::Protocol(format!("`{s}` is not 64 hex digits")));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let pair = std::str::from_utf8(&b[2 * i..2 * i + 2])
            .map_err(|_| Error::Protocol(format!("`{s}` is not hex")))?;
        *o = u8::from_str_radix(pair, 16)
            .map_err(|_| Error::Protocol(format!("`{s}` is not hex")))?;
    }
    Ok(out)
}

/// Parses 128 hex digits (a signature).
pub fn unhex64(s: &str) -> Result<[u8; 64]> {
    if s.len() != 128 {
        return Err(Error::Protocol("a signature is 128 hex digits".into()));
    }
    let a = unhex32(&s[..64])?;
    let b = unhex32(&s[64..])?;
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&a);
    out[32..].copy_from_slice(&b);
    Ok(out)
}
