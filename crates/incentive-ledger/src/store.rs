//! Durable entry storage behind the [`Store`] trait; [`RedbStore`] is the default backend.
//!
//! Contract: when `append` returns `Ok`, the entries and the checkpoint committed with them survive
//! kill -9 and power loss, together: one commit is one durable point. Any
//! failed durable write poisons the store: every later call returns [`Error::Poisoned`], because
//! after a failed fsync Linux may have dropped the dirty pages and a retry could falsely succeed
//! (fsyncgate). The owner must drop the store and reopen, which re-verifies everything.

use std::path::{Path, PathBuf};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::error::{Error, Result};

/// Append-only storage of opaque entries indexed from 0.
pub trait Store {
    /// Number of entries.
    fn len(&self) -> Result<u64>;
    /// True when empty.
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Entry `index`.
    fn get(&self, index: u64) -> Result<Vec<u8>>;
    /// Calls `f(index, bytes)` for every entry in order.
    fn scan(&self, f: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<()>;
    /// The checkpoint bytes committed by the last [`Store::append`]; `None` before the first.
    fn checkpoint(&self) -> Result<Option<Vec<u8>>>;
    /// Appends `entries` (possibly none) and replaces the stored checkpoint with `checkpoint`,
    /// all in one atomic, durable commit; returns the index of the first entry.
    fn append(&mut self, entries: &[&[u8]], checkpoint: &[u8]) -> Result<u64>;
}

/// Runs `f`, turning a panic inside redb (it panics on some corrupted files, e.g. "Malformed
/// allocator state") into an integrity error: hostile or damaged input must not crash us.
fn guard<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Error::Integrity(format!(
            "{}: database is corrupted (redb panicked: {what})",
            path.display()
        )))
    })
}

const ENTRIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const CHECKPOINT_KEY: &str = "checkpoint";

/// [`Store`] on redb: one write transaction per append call, holding the entries and the new
/// checkpoint, committed with `Durability::Immediate`. A batch is all-or-nothing and acknowledged
/// only after the commit's fsync.
///
/// By default redb commits in one phase (one fsync; the new commit slot is protected by a
/// checksum). redb documents a theoretical attack on that mode: a workload-controlling attacker
/// who can also crash the machine mid-fsync could get a *partially written, unacknowledged*
/// transaction accepted. Here such a state cannot pass [`crate::log::Log::open`]: the entries and
/// the operator-signed checkpoint share the transaction, and open requires the entry count and
/// Merkle root to equal what that checkpoint signs, so a torn commit is reported as an integrity
/// error instead of being used. [`RedbStore::with_two_phase_commit`] restores redb's two-fsync
/// protocol for callers that prefer it.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    len: u64,
    two_phase: bool,
    poisoned: Option<String>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens or creates the database file. Entries must be the contiguous range `0..len`.
    pub fn open(path: &Path) -> Result<Self> {
        guard(path, || {
            let db = Database::create(path).map_err(|e| Error::Db {
                path: path.to_path_buf(),
                what: e.to_string(),
            })?;
            Self::from_db(db, path)
        })
    }

    /// Opens a database on a custom redb storage backend (fault injection in tests); `path`
    /// only names it in errors.
    pub fn open_backend(backend: impl redb::StorageBackend, path: &Path) -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| Error::Db {
                path: path.to_path_buf(),
                what: e.to_string(),
            })?;
        Self::from_db(db, path)
    }

    fn from_db(db: Database, path: &Path) -> Result<Self> {
        let db_err = |what: String| Error::Db {
            path: path.to_path_buf(),
            what,
        };
        let mut s = Self {
            db,
            path: path.to_path_buf(),
            len: 0,
            two_phase: false,
            poisoned: None,
        };
        let tx = s.db.begin_write().map_err(|e| db_err(e.to_string()))?;
        tx.open_table(ENTRIES).map_err(|e| db_err(e.to_string()))?;
        tx.open_table(META).map_err(|e| db_err(e.to_string()))?;
        tx.commit().map_err(|e| db_err(e.to_string()))?;
        let rtx = s.db.begin_read().map_err(|e| db_err(e.to_string()))?;
        let t = rtx.open_table(ENTRIES).map_err(|e| db_err(e.to_string()))?;
        let n = t.len().map_err(|e| db_err(e.to_string()))?;
        if n > 0 {
            let last = t
                .last()
                .map_err(|e| db_err(e.to_string()))?
                .map(|(k, _)| k.value());
            if last != Some(n - 1) {
                return Err(Error::Integrity(format!(
                    "{}: {n} entries but the last index is {last:?}; the log has a gap",
                    path.display()
                )));
            }
        }
        s.len = n;
        Ok(s)
    }

    fn scan_inner(&self, f: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
        let rtx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = rtx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        for (expect, item) in (0u64..).zip(t.iter().map_err(|e| self.db_err(e))?) {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            if k.value() != expect {
                return Err(Error::Integrity(format!(
                    "{}: expected entry {expect}, found {}",
                    self.path.display(),
                    k.value()
                )));
            }
            f(expect, v.value())?;
        }
        Ok(())
    }

    /// Commits with redb's two-phase protocol (two fsyncs per append) instead of one.
    #[must_use]
    pub fn with_two_phase_commit(mut self, enabled: bool) -> Self {
        self.two_phase = enabled;
        self
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self) -> Result<()> {
        match &self.poisoned {
            Some(what) => Err(Error::Poisoned {
                path: self.path.clone(),
                what: what.clone(),
            }),
            None => Ok(()),
        }
    }

    fn db_err(&self, what: impl ToString) -> Error {
        Error::Db {
            path: self.path.clone(),
            what: what.to_string(),
        }
    }

    /// Overwrites entry `index` in place, bypassing every check. Only for tamper tests.
    #[doc(hidden)]
    pub fn tamper_overwrite(&mut self, index: u64, bytes: &[u8]) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut t = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
            t.insert(index, bytes).map_err(|e| self.db_err(e))?;
        }
        tx.commit().map_err(|e| self.db_err(e))
    }

    /// Replaces the stored checkpoint bytes, bypassing every check. Only for tamper tests.
    #[doc(hidden)]
    pub fn tamper_checkpoint(&mut self, bytes: &[u8]) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut t = tx.open_table(META).map_err(|e| self.db_err(e))?;
            t.insert(CHECKPOINT_KEY, bytes)
                .map_err(|e| self.db_err(e))?;
        }
        tx.commit().map_err(|e| self.db_err(e))
    }

    /// Deletes the last `n` entries, bypassing every check. Only for rollback tests.
    #[doc(hidden)]
    pub fn tamper_truncate(&mut self, n: u64) -> Result<()> {
        let tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut t = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
            for i in self.len.saturating_sub(n)..self.len {
                t.remove(i).map_err(|e| self.db_err(e))?;
            }
        }
        tx.commit().map_err(|e| self.db_err(e))?;
        self.len = self.len.saturating_sub(n);
        Ok(())
    }
}

impl Store for RedbStore {
    fn len(&self) -> Result<u64> {
        self.check()?;
        Ok(self.len)
    }

    fn get(&self, index: u64) -> Result<Vec<u8>> {
        self.check()?;
        guard(&self.path, || {
            let rtx = self.db.begin_read().map_err(|e| self.db_err(e))?;
            let t = rtx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
            let v = t.get(index).map_err(|e| self.db_err(e))?;
            v.map(|g| g.value().to_vec()).ok_or_else(|| {
                Error::Integrity(format!("{}: entry {index} missing", self.path.display()))
            })
        })
    }

    fn scan(&self, f: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
        self.check()?;
        guard(&self.path, || self.scan_inner(f))
    }

    fn checkpoint(&self) -> Result<Option<Vec<u8>>> {
        self.check()?;
        guard(&self.path, || {
            let rtx = self.db.begin_read().map_err(|e| self.db_err(e))?;
            let t = rtx.open_table(META).map_err(|e| self.db_err(e))?;
            let v = t.get(CHECKPOINT_KEY).map_err(|e| self.db_err(e))?;
            Ok(v.map(|g| g.value().to_vec()))
        })
    }

    fn append(&mut self, entries: &[&[u8]], checkpoint: &[u8]) -> Result<u64> {
        self.check()?;
        let first = self.len;
        let result = (|| -> std::result::Result<(), String> {
            let mut tx = self.db.begin_write().map_err(|e| e.to_string())?;
            tx.set_durability(Durability::Immediate)
                .map_err(|e| e.to_string())?;
            tx.set_two_phase_commit(self.two_phase);
            {
                let mut t = tx.open_table(ENTRIES).map_err(|e| e.to_string())?;
                for (i, e) in entries.iter().enumerate() {
                    t.insert(first + i as u64, *e).map_err(|e| e.to_string())?;
                }
                let mut m = tx.open_table(META).map_err(|e| e.to_string())?;
                m.insert(CHECKPOINT_KEY, checkpoint)
                    .map_err(|e| e.to_string())?;
            }
            tx.commit().map_err(|e| e.to_string())
        })();
        match result {
            Ok(()) => {
                self.len += entries.len() as u64;
                Ok(first)
            }
            Err(what) => {
                self.poisoned = Some(what.clone());
                Err(Error::Poisoned {
                    path: self.path.clone(),
                    what,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn append_get_scan_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.redb");
        {
            let mut s = RedbStore::open(&p).unwrap();
            assert_eq!(s.checkpoint().unwrap(), None);
            assert_eq!(s.append(&[b"a", b"bb"], b"cp1").unwrap(), 0);
            assert_eq!(s.append(&[b"ccc"], b"cp2").unwrap(), 2);
        }
        let s = RedbStore::open(&p).unwrap();
        assert_eq!(s.len().unwrap(), 3);
        assert_eq!(s.checkpoint().unwrap().as_deref(), Some(&b"cp2"[..]));
        assert_eq!(s.get(1).unwrap(), b"bb");
        let mut seen = Vec::new();
        s.scan(&mut |i, b| {
            seen.push((i, b.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2], (2, b"ccc".to_vec()));
        assert!(s.get(3).is_err());
    }

    /// A file backend whose fsync fails once `fail` is set, like a disk returning EIO.
    #[derive(Debug)]
    struct FailingSync {
        inner: redb::backends::FileBackend,
        fail: Arc<AtomicBool>,
    }

    impl redb::StorageBackend for FailingSync {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected EIO on fsync"));
            }
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.inner.write(offset, data)
        }
    }

    #[test]
    fn failed_fsync_poisons_the_store_and_nothing_unacknowledged_appears() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.redb");
        let fail = Arc::new(AtomicBool::new(false));
        {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&p)
                .unwrap();
            let backend = FailingSync {
                inner: redb::backends::FileBackend::new(file).unwrap(),
                fail: fail.clone(),
            };
            let mut s = RedbStore::open_backend(backend, &p).unwrap();
            s.append(&[b"kept"], b"cp-kept").unwrap();
            fail.store(true, Ordering::SeqCst);
            let e = s.append(&[b"lost"], b"cp-lost").unwrap_err();
            assert!(e.to_string().contains("injected EIO"), "{e}");
            fail.store(false, Ordering::SeqCst);
            // Even with a healthy disk again, the store refuses: a retried fsync could lie.
            assert!(matches!(
                s.append(&[b"retry"], b"cp-retry"),
                Err(Error::Poisoned { .. })
            ));
            assert!(matches!(s.len(), Err(Error::Poisoned { .. })));
        }
        let s = RedbStore::open(&p).unwrap();
        assert_eq!(s.get(0).unwrap(), b"kept");
        // Entries and checkpoint move together: whichever commit survived, they match.
        let n = s.len().unwrap();
        assert!(n <= 2);
        let cp = s.checkpoint().unwrap().unwrap();
        assert_eq!(
            cp,
            if n == 1 {
                &b"cp-kept"[..]
            } else {
                &b"cp-lost"[..]
            }
        );
    }
}
