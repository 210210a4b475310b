//! The durable ledger: verified ingest of signed messages into the checkpointed log, replay on
//! open, operator actions (registration, slashes, settlement) and full verification.

use std::path::Path;

use crate::error::{Error, Rejection, Result};
use crate::identity::{
    KeyCache, Keypair, PublicKey, SigItem, recheck_many, verify_many, verify_strict,
};
use crate::log::Log;
use crate::merkle::Hash;
use crate::record::{
    Body, Close, Genesis, MAX_ENTRY, Message, Protocol, Registration, Role, Settlement,
    SignedMessage,
};
use crate::state::State;

/// A ledger directory opened for reading or (with the operator key) writing.
#[derive(Debug)]
pub struct Ledger {
    log: Log,
    state: State,
    key: Option<Keypair>,
    keys: KeyCache,
    poisoned: bool,
}

/// What [`verify_dir`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries replayed.
    pub entries: u64,
    /// Signatures checked with `verify_strict`.
    pub signatures: u64,
    /// Size covered by the signed checkpoint.
    pub checkpoint_size: u64,
    /// Settlements replayed.
    pub settlements: u64,
    /// Sum of all balances after replay.
    pub total_balance: u64,
}

fn replay(
    log: &Log,
    entries: &[Vec<u8>],
    strict_each: bool,
    keys: &mut KeyCache,
) -> Result<(State, u64)> {
    let mut state = State::default();
    let parsed: Vec<SignedMessage> = entries
        .iter()
        .enumerate()
        .map(|(i, b)| {
            SignedMessage::from_bytes(b).map_err(|e| Error::Integrity(format!("entry {i}: {e}")))
        })
        .collect::<Result<_>>()?;
    let sig_ok: Vec<std::result::Result<(), Rejection>> = if strict_each {
        parsed
            .iter()
            .map(|m| verify_strict(&m.msg.signer, &m.signed, &m.sig))
            .collect()
    } else {
        let items: Vec<SigItem<'_>> = parsed
            .iter()
            .map(|m| SigItem {
                key: &m.msg.signer,
                msg: &m.signed,
                sig: &m.sig,
                hint: None,
            })
            .collect();
        recheck_many(&items, keys)
    };
    for (i, (m, ok)) in parsed.iter().zip(sig_ok).enumerate() {
        let at = |e: Rejection| {
            Error::Integrity(format!(
                "entry {i} ({} {}): {e}",
                m.msg.body.kind(),
                m.short_id()
            ))
        };
        ok.map_err(at)?;
        state.apply(m, i as u64, log.tree()).map_err(at)?;
    }
    if let Some(op) = state.operator
        && op != log.operator()
    {
        return Err(Error::Integrity(format!(
            "genesis operator {op} differs from the checkpoint signer {}",
            log.operator()
        )));
    }
    Ok((state, parsed.len() as u64))
}

impl Ledger {
    /// Creates a ledger in `dir` whose entry 0 is the operator-signed genesis.
    pub fn create(dir: &Path, origin: &str, operator: Keypair, genesis: Genesis) -> Result<Self> {
        let op = operator.public();
        PublicKey::parse(op.0)?;
        let key_copy = operator.clone();
        let log = Log::create(dir, origin, operator)?;
        let mut l = Self {
            log,
            state: State::default(),
            key: Some(key_copy),
            keys: KeyCache::default(),
            poisoned: false,
        };
        let g = Message {
            origin: origin.to_string(),
            signer: op,
            seq: 1,
            round: 1,
            body: Body::Genesis(genesis),
        };
        l.operator_submit(g)?;
        Ok(l)
    }

    /// Opens `dir`, checks it against the checkpoint and replays every entry (signatures via
    /// batch verification with strict fallback). `trusted` pins the operator key; `key` (the
    /// operator secret) enables operator actions.
    pub fn open(dir: &Path, trusted: Option<&PublicKey>, key: Option<Keypair>) -> Result<Self> {
        let mut entries = Vec::new();
        let log_key = key.clone();
        let log = Log::open(dir, trusted, log_key, &mut |_, b| {
            entries.push(b.to_vec());
            Ok(())
        })?;
        let mut keys = KeyCache::default();
        let (state, _) = replay(&log, &entries, false, &mut keys)?;
        Ok(Self {
            log,
            state,
            key,
            keys,
            poisoned: false,
        })
    }

    /// The replayed state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Mutable log (tamper tests).
    #[doc(hidden)]
    pub fn log_mut(&mut self) -> &mut Log {
        &mut self.log
    }

    /// Ledger name.
    pub fn origin(&self) -> &str {
        self.log.origin()
    }

    /// Next sequence number `key` should use.
    pub fn next_seq(&self, key: &PublicKey) -> u64 {
        self.state.last_seq(key) + 1
    }

    fn check_writable(&self) -> Result<()> {
        if self.poisoned {
            return Err(Error::Invalid(
                "ledger is poisoned after a failed write; reopen it".into(),
            ));
        }
        Ok(())
    }

    /// Verifies (strictly), admits and durably appends one signed message; returns its index.
    pub fn submit(&mut self, sm: &SignedMessage) -> Result<u64> {
        self.check_writable()?;
        if sm.signed.len() + 64 > MAX_ENTRY {
            return Err(Rejection::Malformed(format!(
                "entry of {} bytes exceeds {MAX_ENTRY}",
                sm.signed.len() + 64
            ))
            .into());
        }
        verify_strict(&sm.msg.signer, &sm.signed, &sm.sig)?;
        let index = self.log.len();
        self.state.apply(sm, index, self.log.tree())?;
        self.remember_key(sm);
        self.commit(&[&sm.to_bytes()])
    }

    /// The ledger's one durable write, after admission already moved the state: a failure
    /// leaves only a reopen (replay from disk) trustworthy, so it poisons the ledger.
    fn commit(&mut self, entries: &[&[u8]]) -> Result<u64> {
        let r = self.log.append(entries);
        self.poisoned |= r.is_err();
        r
    }

    /// Parses untrusted bytes and submits them.
    pub fn submit_bytes(&mut self, bytes: &[u8]) -> Result<u64> {
        let sm =
            SignedMessage::from_bytes(bytes).map_err(|e| Rejection::Malformed(e.to_string()))?;
        self.submit(&sm)
    }

    /// Verified ingest of many messages: one batch signature check, admission in order, and a
    /// single durable append of everything admitted. Result `i` is message `i`'s index or the
    /// reason it was refused.
    pub fn submit_batch(
        &mut self,
        msgs: &[SignedMessage],
    ) -> Result<Vec<std::result::Result<u64, Rejection>>> {
        self.check_writable()?;
        let items: Vec<SigItem<'_>> = msgs
            .iter()
            .map(|m| SigItem {
                key: &m.msg.signer,
                msg: &m.signed,
                sig: &m.sig,
                hint: m.hint.as_ref(),
            })
            .collect();
        let sig = verify_many(&items, &mut self.keys);
        let mut out = Vec::with_capacity(msgs.len());
        let mut accepted: Vec<Vec<u8>> = Vec::new();
        let base = self.log.len();
        // Admission needs the tree as it will be; evaluations in this batch may only use beacon
        // sizes up to `base`, which the tree already holds.
        for (m, ok) in msgs.iter().zip(sig) {
            let index = base + accepted.len() as u64;
            let r = ok.and_then(|()| self.state.apply(m, index, self.log.tree()));
            match r {
                Ok(()) => {
                    self.remember_key(m);
                    out.push(Ok(index));
                    accepted.push(m.to_bytes());
                }
                Err(e) => out.push(Err(e)),
            }
        }
        let refs: Vec<&[u8]> = accepted.iter().map(Vec::as_slice).collect();
        self.commit(&refs)?;
        Ok(out)
    }

    /// A newly registered key is parsed (subgroup check: a full scalar multiplication) into the
    /// key cache now, once, instead of on the node's first batch-verified message.
    fn remember_key(&mut self, m: &SignedMessage) {
        if let Body::Registration(r) = &m.msg.body {
            // Admission already refused bad keys; the result is only being cached.
            let _ = self.keys.parse(&r.key);
        }
    }

    fn operator_key(&self) -> Result<&Keypair> {
        self.key
            .as_ref()
            .ok_or_else(|| Error::Invalid("operator key required".into()))
    }

    fn operator_submit(&mut self, m: Message) -> Result<u64> {
        let sm = m.sign(self.operator_key()?);
        self.submit(&sm)
    }

    fn operator_message(&self, body: Body) -> Result<Message> {
        let op = self.operator_key()?.public();
        Ok(Message {
            origin: self.origin().to_string(),
            signer: op,
            seq: self.next_seq(&op),
            round: self.state.round,
            body,
        })
    }

    /// Operator: registers `key` with `role` and `stake`.
    pub fn register(&mut self, key: PublicKey, role: Role, stake: u64) -> Result<u64> {
        let m = self.operator_message(Body::Registration(Registration { key, role, stake }))?;
        self.operator_submit(m)
    }

    /// Operator: records the networked round's protocol (once, in round 1, before any
    /// contribution).
    pub fn set_protocol(&mut self, protocol: Protocol) -> Result<u64> {
        let m = self.operator_message(Body::Protocol(protocol))?;
        self.operator_submit(m)
    }

    /// Operator: closes the open round's commit phase; returns the beacon size (the tree size
    /// whose root seeds every held-out batch of the round).
    pub fn close_round(&mut self) -> Result<u64> {
        let committed = self.state.open_contributions().len() as u64;
        let m = self.operator_message(Body::Close(Close { committed }))?;
        Ok(self.operator_submit(m)? + 1)
    }

    /// Operator: records every slash the log implies for the open round; returns their indices.
    pub fn record_slashes(&mut self) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        for s in self.state.pending_slashes() {
            let m = self.operator_message(Body::Slash(s))?;
            out.push(self.operator_submit(m)?);
        }
        Ok(out)
    }

    /// Operator: records pending slashes, then settles the open round; the next round builds on
    /// `next_base`.
    pub fn settle(&mut self, next_base: Hash) -> Result<Settlement> {
        self.record_slashes()?;
        let (s, _) = self.state.compute_settlement(next_base);
        let m = self.operator_message(Body::Settlement(s.clone()))?;
        self.operator_submit(m)?;
        Ok(s)
    }
}

/// Verifies a ledger directory from scratch: the checkpoint signature (pinned to `trusted` if
/// given), the Merkle root against it, every entry's signature with `verify_strict`, and a full
/// replay (every slash and settlement recomputed). Errors name the first thing that fails.
pub fn verify_dir(dir: &Path, trusted: Option<&PublicKey>) -> Result<VerifyReport> {
    let mut entries = Vec::new();
    let log = Log::open(dir, trusted, None, &mut |_, b| {
        entries.push(b.to_vec());
        Ok(())
    })?;
    let (state, n) = replay(&log, &entries, true, &mut KeyCache::default())?;
    Ok(VerifyReport {
        entries: n,
        signatures: n,
        checkpoint_size: log.checkpoint().size,
        settlements: state.history.len() as u64,
        total_balance: state.balances.values().sum(),
    })
}
