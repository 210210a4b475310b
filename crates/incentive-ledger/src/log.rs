//! The append-only log: a [`Store`] of entries, the RFC 6962 Merkle tree over them and the
//! operator-signed checkpoints that pin it.
//!
//! Layout of a ledger directory: `log.redb` (entries plus the latest signed checkpoint, written
//! in the same transaction), `log.redb-wal` (its write-ahead log, [`crate::wal`]) and
//! `checkpoint` (the side checkpoint: a copy of a recent signed checkpoint kept outside the
//! database). One append is one WAL frame, i.e. one durable point (one `fdatasync`); entries and
//! their checkpoint can never be durable without each other.
//!
//! Why two checkpoints: the one inside the database detects any edit of the entries (count and
//! root must equal what it signs), but a database restored from an older copy is self-consistent.
//! The side file catches that: on open, the database must cover at least the side checkpoint's
//! size with the same root at that size. The side file is refreshed (temp file, fsync, rename,
//! directory fsync) only when [`SidePolicy`] says so, at [`Log::close`], on drop and on open with
//! the operator key, so it may lag the database. The window is exact: a rollback of the database
//! to any size at or above the side file's size goes undetected from the directory alone; with
//! the default policy that is at most one second or 10 000 entries of the newest appends.
//! Rollback below it, truncation and tampering are errors, never repaired.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::checkpoint::Checkpoint;
use crate::error::{Cause, Error, Result};
use crate::identity::{Keypair, PublicKey};
use crate::merkle::{Hash, MerkleTree, leaf_hash};
use crate::store::{RedbStore, Store};

/// File name of the entry database inside a ledger directory.
pub const DB_FILE: &str = "log.redb";
/// File name of the database's write-ahead log (see [`crate::wal`]).
pub const WAL_FILE: &str = "log.redb-wal";
/// File name of the side checkpoint inside a ledger directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// When an append also refreshes the side checkpoint file (whichever comes first), and whether
/// that write happens on a background thread. This bounds the rollback window described in the
/// module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidePolicy {
    /// Refresh once this many entries were appended since the last refresh.
    pub max_entries: u64,
    /// Refresh once this much time passed since the last refresh.
    pub max_interval: Duration,
    /// Write on a background thread (the append does not wait for it; the window grows by the
    /// duration of one write) instead of inside the append call.
    pub background: bool,
}

impl SidePolicy {
    /// Refresh inside every append: no rollback window, three more fsyncs per append.
    pub const EVERY_APPEND: Self = Self {
        max_entries: 1,
        max_interval: Duration::ZERO,
        background: false,
    };
}

impl Default for SidePolicy {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_interval: Duration::from_secs(1),
            background: true,
        }
    }
}

#[derive(Debug)]
struct SideShared {
    /// Last checkpoint durably written to the side file.
    written: Checkpoint,
    /// First write failure; fatal for the log.
    error: Option<Cause>,
}

/// The side checkpoint file and its (optional) background writer. Writes never move the file
/// backwards and only ever receive checkpoints whose commit is already durable, so the file is
/// never ahead of the database.
#[derive(Debug)]
struct SideFile {
    path: PathBuf,
    shared: Arc<Mutex<SideShared>>,
    tx: Option<mpsc::Sender<Checkpoint>>,
    worker: Option<std::thread::JoinHandle<()>>,
    requested_size: u64,
    requested_at: Instant,
}

impl SideFile {
    fn new(path: PathBuf, written: Checkpoint) -> Self {
        Self {
            path,
            requested_size: written.size,
            shared: Arc::new(Mutex::new(SideShared {
                written,
                error: None,
            })),
            tx: None,
            worker: None,
            requested_at: Instant::now(),
        }
    }

    fn lock(shared: &Mutex<SideShared>) -> std::sync::MutexGuard<'_, SideShared> {
        shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_now(shared: &Mutex<SideShared>, path: &Path, cp: &Checkpoint) -> Result<()> {
        let mut g = Self::lock(shared);
        if let Some(cause) = &g.error {
            return Err(Error::Poisoned {
                path: path.to_path_buf(),
                source: cause.clone(),
            });
        }
        if cp.size < g.written.size || *cp == g.written {
            return Ok(());
        }
        match cp.write_atomic(path) {
            Ok(()) => {
                g.written = cp.clone();
                Ok(())
            }
            Err(e) => {
                // Kept whole for every later call; this one gets it as the poison's source.
                let cause: Cause = Arc::new(e);
                g.error = Some(cause.clone());
                Err(Error::Poisoned {
                    path: path.to_path_buf(),
                    source: cause,
                })
            }
        }
    }

    fn error(&self) -> Option<Cause> {
        Self::lock(&self.shared).error.clone()
    }

    fn written(&self) -> Checkpoint {
        Self::lock(&self.shared).written.clone()
    }

    /// Asks for `cp` to be written, on the background thread (started on first use) or now.
    fn request(&mut self, cp: &Checkpoint, background: bool) -> Result<()> {
        self.requested_size = cp.size;
        self.requested_at = Instant::now();
        if !background {
            return Self::write_now(&self.shared, &self.path, cp);
        }
        let tx = self.tx.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel::<Checkpoint>();
            let shared = Arc::clone(&self.shared);
            let path = self.path.clone();
            self.worker = Some(std::thread::spawn(move || {
                while let Ok(mut cp) = rx.recv() {
                    // Only the newest pending checkpoint matters.
                    while let Ok(newer) = rx.try_recv() {
                        cp = newer;
                    }
                    if Self::write_now(&shared, &path, &cp).is_err() {
                        break;
                    }
                }
            }));
            tx
        });
        // A send fails only after the worker stopped on an error, which `error()` reports.
        let _ = tx.send(cp.clone());
        Ok(())
    }

    /// Stops the background writer after it has written what it was sent.
    fn shutdown(&mut self) {
        self.tx = None;
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// An append-only, checkpointed Merkle log.
#[derive(Debug)]
pub struct Log<S: Store = RedbStore> {
    store: S,
    tree: MerkleTree,
    checkpoint: Checkpoint,
    side: SideFile,
    policy: SidePolicy,
    cp_path: PathBuf,
    key: Option<Keypair>,
    poisoned: Option<Cause>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Log<RedbStore> {
    /// Creates a new empty log in `dir` (which must not hold one) signed by `key`.
    pub fn create(dir: &Path, origin: &str, key: Keypair) -> Result<Self> {
        if origin.is_empty() || origin.len() > 64 || origin.contains('\n') {
            return Err(Error::Invalid(format!(
                "origin `{origin}` must be 1..=64 bytes without newlines"
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let cp_path = dir.join(CHECKPOINT_FILE);
        let db_path = dir.join(DB_FILE);
        if cp_path.exists() || db_path.exists() {
            return Err(Error::Invalid(format!(
                "{} already holds a ledger",
                dir.display()
            )));
        }
        // The empty side checkpoint is written first: from then on a missing file is an attack.
        let cp = Checkpoint::sign(origin, 0, crate::merkle::empty_root(), now(), &key);
        cp.write_atomic(&cp_path)?;
        let mut store = RedbStore::open(&db_path)?;
        store.append(&[], &cp.to_bytes())?;
        Ok(Self {
            store,
            tree: MerkleTree::new(),
            checkpoint: cp.clone(),
            side: SideFile::new(cp_path.clone(), cp),
            policy: SidePolicy::default(),
            cp_path,
            key: Some(key),
            poisoned: None,
        })
    }

    /// Opens the log in `dir`, calling `on_entry` for each entry, and checks it against both
    /// checkpoints. `trusted` pins the operator key; `key` (the operator's secret) allows appends
    /// and brings the side checkpoint up to date.
    pub fn open(
        dir: &Path,
        trusted: Option<&PublicKey>,
        key: Option<Keypair>,
        on_entry: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<Self> {
        let cp_path = dir.join(CHECKPOINT_FILE);
        let db_path = dir.join(DB_FILE);
        if !db_path.exists() {
            return Err(Error::Integrity(format!(
                "{} is missing (no ledger or deleted)",
                db_path.display()
            )));
        }
        if !cp_path.exists() {
            return Err(Error::Integrity(format!(
                "{} is missing: the log cannot be checked",
                cp_path.display()
            )));
        }
        let pinned = trusted
            .copied()
            .or_else(|| key.as_ref().map(Keypair::public));
        let side = Checkpoint::read(&cp_path, pinned.as_ref())?;
        let store = RedbStore::open(&db_path)?;
        Self::from_parts(store, side, cp_path, key, on_entry)
    }
}

impl<S: Store> Log<S> {
    /// Builds a log from an opened store and a verified side checkpoint (read from `cp_path`):
    /// replays every entry, checks them against the checkpoint stored in the database (same
    /// signer as `side`) and checks that the database covers `side`.
    pub fn from_parts(
        store: S,
        side: Checkpoint,
        cp_path: PathBuf,
        key: Option<Keypair>,
        on_entry: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<Self> {
        let hex = crate::codec::hex;
        let db_bytes = store.checkpoint()?.ok_or_else(|| {
            Error::Integrity("the database holds no checkpoint (not a ledger, or wiped)".into())
        })?;
        let checkpoint = Checkpoint::from_bytes(&db_bytes, Some(&side.signer))
            .map_err(|e| Error::Integrity(format!("checkpoint in {DB_FILE}: {e}")))?;
        if checkpoint.origin != side.origin {
            return Err(Error::Integrity(format!(
                "checkpoint in {DB_FILE} is for `{}` but {} is for `{}`",
                checkpoint.origin,
                cp_path.display(),
                side.origin
            )));
        }
        let mut tree = MerkleTree::new();
        store.scan(&mut |i, bytes| {
            tree.push_hash(leaf_hash(bytes));
            on_entry(i, bytes)
        })?;
        // Entries and the stored checkpoint are committed together, so they must agree exactly.
        if tree.len() != checkpoint.size {
            return Err(Error::Integrity(format!(
                "store holds {} entries but the checkpoint in {DB_FILE} covers {}: entries were \
                 added or removed outside the log",
                tree.len(),
                checkpoint.size
            )));
        }
        let root = tree.root();
        if root != checkpoint.root {
            return Err(Error::Integrity(format!(
                "root of the first {} entries is {} but the checkpoint in {DB_FILE} signs {}",
                checkpoint.size,
                hex(&root),
                hex(&checkpoint.root)
            )));
        }
        if side.size > checkpoint.size {
            return Err(Error::Integrity(format!(
                "database holds {} entries but checkpoint {} covers {}: truncated or rolled back",
                checkpoint.size,
                cp_path.display(),
                side.size
            )));
        }
        let side_root = tree.root_at(side.size)?;
        if side_root != side.root {
            return Err(Error::Integrity(format!(
                "root of the first {} entries is {} but checkpoint {} signs {}: the log was \
                 rewritten",
                side.size,
                hex(&side_root),
                cp_path.display(),
                hex(&side.root)
            )));
        }
        let mut log = Self {
            store,
            tree,
            checkpoint,
            side: SideFile::new(cp_path.clone(), side),
            policy: SidePolicy::default(),
            cp_path,
            key,
            poisoned: None,
        };
        if log.key.is_some() {
            log.sync_side()?;
        }
        Ok(log)
    }

    /// Sets when appends refresh the side checkpoint.
    pub fn set_side_policy(&mut self, policy: SidePolicy) {
        self.policy = policy;
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Ledger name from the checkpoint.
    pub fn origin(&self) -> &str {
        &self.checkpoint.origin
    }

    /// Latest signed checkpoint (the one committed with the newest entries).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The side checkpoint as last written to the `checkpoint` file.
    pub fn side_checkpoint(&self) -> Checkpoint {
        self.side.written()
    }

    /// The Merkle tree over all entries.
    pub fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    /// Entry `index`.
    pub fn get(&self, index: u64) -> Result<Vec<u8>> {
        self.store.get(index)
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Mutable store access (tamper tests).
    #[doc(hidden)]
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Operator public key (from the checkpoint).
    pub fn operator(&self) -> PublicKey {
        self.checkpoint.signer
    }

    fn check(&mut self) -> Result<()> {
        if self.poisoned.is_none()
            && let Some(cause) = self.side.error()
        {
            // The side checkpoint's own write failed (its error names the file).
            self.poisoned = Some(cause);
        }
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned {
                path: self.cp_path.clone(),
                source: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&mut self, e: Error) -> Error {
        // Already poisoned below (the store): hand on the same first failure.
        let cause: Cause = match e {
            Error::Poisoned { source, .. } => source,
            other => Arc::new(other),
        };
        self.poisoned = Some(cause.clone());
        Error::Poisoned {
            path: self.cp_path.clone(),
            source: cause,
        }
    }

    /// Appends entries and a checkpoint covering them in one durable write, then refreshes the
    /// side checkpoint if [`SidePolicy`] says so. Returns the index of the first entry. Once this
    /// returns `Ok`, the entries survive kill -9 and power loss. Any error poisons the log.
    pub fn append(&mut self, entries: &[&[u8]]) -> Result<u64> {
        self.check()?;
        let Some(key) = &self.key else {
            return Err(Error::Invalid(
                "log opened without the operator key is read-only".into(),
            ));
        };
        if entries.is_empty() {
            return Ok(self.len());
        }
        let first = self.tree.len();
        for e in entries {
            self.tree.push_hash(leaf_hash(e));
        }
        let cp = Checkpoint::sign(
            &self.checkpoint.origin,
            self.tree.len(),
            self.tree.root(),
            now().max(self.checkpoint.time),
            key,
        );
        match self.store.append(entries, &cp.to_bytes()) {
            Ok(at) if at == first => {}
            // The tree already holds the new leaves; only a reopen can be trusted now.
            Ok(at) => {
                let e = Error::Integrity(format!("store appended at {at}, log expected {first}"));
                return Err(self.poison(e));
            }
            Err(e) => return Err(self.poison(e)),
        }
        self.checkpoint = cp;
        let due = self.tree.len() - self.side.requested_size >= self.policy.max_entries
            || self.side.requested_at.elapsed() >= self.policy.max_interval;
        if due && let Err(e) = self.side.request(&self.checkpoint, self.policy.background) {
            return Err(self.poison(e));
        }
        Ok(first)
    }

    /// Writes the side checkpoint file now (waiting for it) if it lags the database. After this
    /// returns `Ok`, a rollback of the database to any earlier state is detected on open, even
    /// after power loss. A failure poisons the log.
    pub fn sync_side(&mut self) -> Result<()> {
        self.check()?;
        if self.key.is_none() {
            return Ok(());
        }
        if let Err(e) = SideFile::write_now(&self.side.shared, &self.cp_path, &self.checkpoint) {
            return Err(self.poison(e));
        }
        Ok(())
    }

    /// Closes the log: the store absorbs its write-ahead log ([`Store::flush`]) and the side
    /// checkpoint is brought up to date (see [`Log::sync_side`]).
    pub fn close(mut self) -> Result<()> {
        self.check()?;
        if let Err(e) = self.store.flush() {
            return Err(self.poison(e));
        }
        self.sync_side()
    }

    /// Drops the log without refreshing the side checkpoint, as a crash would. Only for tests of
    /// the rollback window.
    #[doc(hidden)]
    pub fn drop_like_a_crash(mut self) {
        self.poisoned = Some(Arc::new(Error::Invalid("dropped like a crash".into())));
    }

    /// Inclusion proof for entry `index` against the current checkpoint's tree size.
    pub fn inclusion_proof(&self, index: u64) -> Result<(Hash, Vec<Hash>)> {
        let size = self.checkpoint.size;
        let proof = self.tree.inclusion_proof(index, size)?;
        let leaf = self
            .tree
            .leaf(index)
            .ok_or_else(|| Error::Proof(format!("no leaf {index}")))?;
        Ok((leaf, proof))
    }
}

impl<S: Store> Drop for Log<S> {
    fn drop(&mut self) {
        self.side.shutdown();
        // Best effort: a failure here only leaves the side file lagging (the documented window);
        // callers that must know use `close`.
        if self.poisoned.is_none() && self.key.is_some() {
            let _ = SideFile::write_now(&self.side.shared, &self.cp_path, &self.checkpoint);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::verify_inclusion;

    fn noop() -> impl FnMut(u64, &[u8]) -> Result<()> {
        |_, _| Ok(())
    }

    #[test]
    fn append_reopen_and_prove() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("l");
        let key = Keypair::from_seed([1; 32]);
        let op = key.public();
        {
            let mut log = Log::create(&d, "t", key).unwrap();
            log.append(&[b"a", b"b"]).unwrap();
            log.append(&[b"c"]).unwrap();
        }
        let log = Log::open(&d, Some(&op), None, &mut noop()).unwrap();
        assert_eq!(log.len(), 3);
        assert_eq!(log.checkpoint().size, 3);
        let (leaf, p) = log.inclusion_proof(1).unwrap();
        verify_inclusion(&leaf, 1, 3, &p, &log.checkpoint().root).unwrap();
        assert_eq!(leaf, leaf_hash(b"b"));
        assert_eq!(
            crate::store::wal_path(Path::new(DB_FILE)),
            Path::new(WAL_FILE)
        );
    }

    /// Copies a database file together with its WAL (the two are one state).
    fn cp(from: impl AsRef<Path>, to: impl AsRef<Path>) {
        let (from, to) = (from.as_ref(), to.as_ref());
        std::fs::copy(from, to).unwrap();
        std::fs::copy(crate::store::wal_path(from), crate::store::wal_path(to)).unwrap();
    }

    fn reopen(d: &Path, op: &PublicKey) -> Result<Log> {
        Log::open(d, Some(op), None, &mut noop())
    }

    #[test]
    fn rollback_is_detected_outside_the_documented_window_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("l");
        let key = Keypair::from_seed([1; 32]);
        let op = key.public();
        let mut log = Log::create(&d, "t", key).unwrap();
        for i in 0..10u8 {
            log.append(&[&[i; 50]]).unwrap();
        }
        log.close().unwrap();
        let old = dir.path().join("old.redb");
        cp(d.join(DB_FILE), &old);
        // Side file refreshed at close: it now covers all 10 entries.
        assert_eq!(
            Checkpoint::read(&d.join(CHECKPOINT_FILE), None)
                .unwrap()
                .size,
            10
        );

        // Inside the window: appends since the last side refresh, then a crash (no drop, so no
        // refresh). Restoring the older database is not detectable from the directory alone.
        let mut log = Log::open(
            &d,
            Some(&op),
            Some(Keypair::from_seed([1; 32])),
            &mut noop(),
        )
        .unwrap();
        log.set_side_policy(SidePolicy {
            max_entries: 1000,
            max_interval: Duration::from_hours(1),
            background: true,
        });
        log.append(&[b"newer"]).unwrap();
        assert_eq!(log.side_checkpoint().size, 10);
        log.drop_like_a_crash();
        let backup_new = dir.path().join("new.redb");
        cp(d.join(DB_FILE), &backup_new);
        cp(&old, d.join(DB_FILE));
        assert_eq!(reopen(&d, &op).unwrap().len(), 10);

        // Outside the window: once the side file covers the newer entry (close, drop, policy or
        // open with the key), the same rollback is an error.
        cp(&backup_new, d.join(DB_FILE));
        let log = Log::open(
            &d,
            Some(&op),
            Some(Keypair::from_seed([1; 32])),
            &mut noop(),
        )
        .unwrap();
        assert_eq!(log.side_checkpoint().size, 11);
        drop(log);
        cp(&old, d.join(DB_FILE));
        let e = reopen(&d, &op).unwrap_err();
        assert!(e.to_string().contains("truncated or rolled back"), "{e}");

        // With the side file refreshed on every append there is no window at all.
        cp(&backup_new, d.join(DB_FILE));
        let mut log = Log::open(
            &d,
            Some(&op),
            Some(Keypair::from_seed([1; 32])),
            &mut noop(),
        )
        .unwrap();
        log.set_side_policy(SidePolicy::EVERY_APPEND);
        cp(d.join(DB_FILE), &old);
        log.append(&[b"newest"]).unwrap();
        log.drop_like_a_crash();
        cp(&old, d.join(DB_FILE));
        let e = reopen(&d, &op).unwrap_err();
        assert!(e.to_string().contains("truncated or rolled back"), "{e}");
    }

    #[test]
    fn background_side_writes_land_and_their_failure_is_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("l");
        let mut log = Log::create(&d, "t", Keypair::from_seed([1; 32])).unwrap();
        log.set_side_policy(SidePolicy {
            max_entries: 5,
            max_interval: Duration::from_hours(1),
            background: true,
        });
        for i in 0..12u8 {
            log.append(&[&[i; 10]]).unwrap();
        }
        // The writer is asynchronous: wait (bounded) for it to catch up with the last request.
        let t = Instant::now();
        while log.side_checkpoint().size < 10 && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(log.side_checkpoint().size, 10);
        assert_eq!(
            Checkpoint::read(&d.join(CHECKPOINT_FILE), None)
                .unwrap()
                .size,
            10
        );
        log.close().unwrap();
        assert_eq!(
            Checkpoint::read(&d.join(CHECKPOINT_FILE), None)
                .unwrap()
                .size,
            12
        );

        // A side write that fails (its temp path is a directory) poisons the log, synchronously
        // or on the next call after the background writer hit it.
        for background in [false, true] {
            let mut log =
                Log::open(&d, None, Some(Keypair::from_seed([1; 32])), &mut noop()).unwrap();
            log.set_side_policy(SidePolicy {
                max_entries: 1,
                max_interval: Duration::ZERO,
                background,
            });
            std::fs::create_dir(d.join("checkpoint.tmp")).unwrap();
            let t = Instant::now();
            let e = loop {
                match log.append(&[b"x"]) {
                    Err(e) => break e,
                    Ok(_) if t.elapsed() < Duration::from_secs(30) => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Ok(_) => panic!("side write failure never surfaced"),
                }
            };
            assert!(matches!(e, Error::Poisoned { .. }), "{e}");
            assert!(matches!(log.append(&[b"y"]), Err(Error::Poisoned { .. })));
            assert!(log.sync_side().is_err());
            drop(log);
            std::fs::remove_dir(d.join("checkpoint.tmp")).unwrap();
            // Whatever was acknowledged is intact and the directory still verifies.
            Log::open(&d, None, None, &mut noop()).unwrap();
        }
    }

    #[test]
    fn edits_of_entries_or_either_checkpoint_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("l");
        let key = Keypair::from_seed([1; 32]);
        let op = key.public();
        let mut log = Log::create(&d, "t", key).unwrap();
        for i in 0..10u8 {
            log.append(&[&[i; 50]]).unwrap();
        }
        let cp5 = Checkpoint::sign(
            "t",
            5,
            log.tree().root_at(5).unwrap(),
            0,
            &Keypair::from_seed([1; 32]),
        );
        log.close().unwrap();
        let db = d.join(DB_FILE);
        let fresh = dir.path().join("fresh.redb");
        cp(&db, &fresh);
        let restore = || cp(&fresh, &db);

        // An entry changed in place.
        let mut s = RedbStore::open(&db).unwrap();
        s.tamper_overwrite(3, &[9; 50]).unwrap();
        drop(s);
        let e = reopen(&d, &op).unwrap_err();
        assert!(e.to_string().contains("root of the first 10"), "{e}");

        // Entries truncated (the stored checkpoint still covers them).
        restore();
        let mut s = RedbStore::open(&db).unwrap();
        s.tamper_truncate(2).unwrap();
        drop(s);
        let e = reopen(&d, &op).unwrap_err();
        assert!(e.to_string().contains("added or removed"), "{e}");

        // The stored checkpoint rolled back alone, or replaced by another key's.
        restore();
        let mut s = RedbStore::open(&db).unwrap();
        s.tamper_checkpoint(&cp5.to_bytes()).unwrap();
        drop(s);
        let e = reopen(&d, &op).unwrap_err();
        assert!(e.to_string().contains("covers 5"), "{e}");
        restore();
        let other = Checkpoint::sign("t", 10, [0; 32], 0, &Keypair::from_seed([2; 32]));
        let mut s = RedbStore::open(&db).unwrap();
        s.tamper_checkpoint(&other.to_bytes()).unwrap();
        drop(s);
        let e = reopen(&d, &op).unwrap_err();
        assert!(e.to_string().contains("expected operator"), "{e}");

        // A side file for a different history of the same size.
        restore();
        reopen(&d, &op).unwrap();
        Checkpoint::sign("t", 10, [7; 32], 0, &Keypair::from_seed([1; 32]))
            .write_atomic(&d.join(CHECKPOINT_FILE))
            .unwrap();
        let e = reopen(&d, &op).unwrap_err();
        assert!(e.to_string().contains("rewritten"), "{e}");

        // Deleted side file and a side file by another key.
        std::fs::remove_file(d.join(CHECKPOINT_FILE)).unwrap();
        assert!(reopen(&d, &op).is_err());
        Checkpoint::sign(
            "t",
            0,
            crate::merkle::empty_root(),
            0,
            &Keypair::from_seed([2; 32]),
        )
        .write_atomic(&d.join(CHECKPOINT_FILE))
        .unwrap();
        let e = reopen(&d, &op).unwrap_err();
        assert!(e.to_string().contains("expected operator"), "{e}");
    }
}
