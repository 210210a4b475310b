//! The append-only log: a [`Store`] of entries, the RFC 6962 Merkle tree over them and the
//! signed checkpoint kept beside the database.
//!
//! Layout of a ledger directory: `log.redb` (entries) and `checkpoint` (latest signed tree
//! head, replaced atomically after every durable append). On open the tree is rebuilt from the
//! store and checked against the checkpoint: fewer entries than the checkpoint covers means
//! truncation or rollback, a different root means tampering. Both are errors, never repaired.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::identity::{Keypair, PublicKey};
use crate::merkle::{Hash, MerkleTree, leaf_hash};
use crate::store::{RedbStore, Store};

/// File name of the entry database inside a ledger directory.
pub const DB_FILE: &str = "log.redb";
/// File name of the signed checkpoint inside a ledger directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// An append-only, checkpointed Merkle log.
#[derive(Debug)]
pub struct Log<S: Store = RedbStore> {
    store: S,
    tree: MerkleTree,
    checkpoint: Checkpoint,
    cp_path: PathBuf,
    key: Option<Keypair>,
    poisoned: Option<String>,
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
        // The empty checkpoint is written first: from then on a missing file is an attack.
        let cp = Checkpoint::sign(origin, 0, crate::merkle::empty_root(), now(), &key);
        cp.write_atomic(&cp_path)?;
        let store = RedbStore::open(&db_path)?;
        Ok(Self {
            store,
            tree: MerkleTree::new(),
            checkpoint: cp,
            cp_path,
            key: Some(key),
            poisoned: None,
        })
    }

    /// Opens the log in `dir`, calling `on_entry` for each entry, and checks it against the
    /// checkpoint. `trusted` pins the operator key; `key` (the operator's secret) allows appends.
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
        let checkpoint = Checkpoint::read(&cp_path, pinned.as_ref())?;
        let store = RedbStore::open(&db_path)?;
        Self::from_parts(store, checkpoint, cp_path, key, on_entry)
    }
}

impl<S: Store> Log<S> {
    /// Builds a log from an opened store and a verified checkpoint, replaying every entry.
    pub fn from_parts(
        store: S,
        checkpoint: Checkpoint,
        cp_path: PathBuf,
        key: Option<Keypair>,
        on_entry: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<Self> {
        let mut tree = MerkleTree::new();
        store.scan(&mut |i, bytes| {
            tree.push_hash(leaf_hash(bytes));
            on_entry(i, bytes)
        })?;
        if tree.len() < checkpoint.size {
            return Err(Error::Integrity(format!(
                "store holds {} entries but checkpoint {} covers {}: truncated or rolled back",
                tree.len(),
                cp_path.display(),
                checkpoint.size
            )));
        }
        let root = tree.root_at(checkpoint.size)?;
        if root != checkpoint.root {
            return Err(Error::Integrity(format!(
                "root of the first {} entries is {} but checkpoint {} signs {}",
                checkpoint.size,
                crate::codec::hex(&root),
                cp_path.display(),
                crate::codec::hex(&checkpoint.root)
            )));
        }
        Ok(Self {
            store,
            tree,
            checkpoint,
            cp_path,
            key,
            poisoned: None,
        })
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

    /// Latest signed checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
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

    /// Appends entries durably, then signs and writes a checkpoint covering them. Returns the
    /// index of the first entry. Once this returns `Ok`, the entries survive a crash.
    pub fn append(&mut self, entries: &[&[u8]]) -> Result<u64> {
        if let Some(what) = &self.poisoned {
            return Err(Error::Poisoned {
                path: self.cp_path.clone(),
                what: what.clone(),
            });
        }
        let Some(key) = &self.key else {
            return Err(Error::Invalid(
                "log opened without the operator key is read-only".into(),
            ));
        };
        if entries.is_empty() {
            return Ok(self.len());
        }
        let first = self.store.append(entries)?;
        debug_assert_eq!(first, self.tree.len());
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
        if let Err(e) = cp.write_atomic(&self.cp_path) {
            self.poisoned = Some(e.to_string());
            return Err(Error::Poisoned {
                path: self.cp_path.clone(),
                what: e.to_string(),
            });
        }
        self.checkpoint = cp;
        Ok(first)
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
    }

    #[test]
    fn truncation_rollback_and_tamper_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("l");
        let key = Keypair::from_seed([1; 32]);
        let op = key.public();
        let mut log = Log::create(&d, "t", key).unwrap();
        for i in 0..10u8 {
            log.append(&[&[i; 50]]).unwrap();
        }
        drop(log);
        // Rollback: restore an older copy of the database next to the newer checkpoint.
        let old = dir.path().join("old.redb");
        std::fs::copy(d.join(DB_FILE), &old).unwrap();
        let mut log = Log::open(
            &d,
            Some(&op),
            Some(Keypair::from_seed([1; 32])),
            &mut noop(),
        )
        .unwrap();
        log.append(&[b"newer"]).unwrap();
        drop(log);
        std::fs::copy(&old, d.join(DB_FILE)).unwrap();
        let e = Log::open(&d, Some(&op), None, &mut noop()).unwrap_err();
        assert!(e.to_string().contains("truncated or rolled back"), "{e}");

        // Tamper with one entry in place.
        let mut s = RedbStore::open(&d.join(DB_FILE)).unwrap();
        s.append(&[b"newer"]).unwrap();
        s.tamper_overwrite(3, &[9; 50]).unwrap();
        drop(s);
        let e = Log::open(&d, Some(&op), None, &mut noop()).unwrap_err();
        assert!(e.to_string().contains("root of the first 11"), "{e}");

        // Deleted checkpoint and a checkpoint by another key.
        std::fs::remove_file(d.join(CHECKPOINT_FILE)).unwrap();
        assert!(Log::open(&d, Some(&op), None, &mut noop()).is_err());
        Checkpoint::sign(
            "t",
            0,
            crate::merkle::empty_root(),
            0,
            &Keypair::from_seed([2; 32]),
        )
        .write_atomic(&d.join(CHECKPOINT_FILE))
        .unwrap();
        let e = Log::open(&d, Some(&op), None, &mut noop()).unwrap_err();
        assert!(e.to_string().contains("expected operator"), "{e}");
    }
}
