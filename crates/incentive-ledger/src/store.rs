//! Durable entry storage behind the [`Store`] trait; [`RedbStore`] is the default backend.
//!
//! Contract: when `append` returns `Ok`, the entries and the checkpoint committed with them survive
//! kill -9 and power loss, together: one commit is one durable point. Any
//! failed durable write poisons the store: every later call returns [`Error::Poisoned`], because
//! after a failed fsync Linux may have dropped the dirty pages and a retry could falsely succeed
//! (fsyncgate). The owner must drop the store and reopen, which re-verifies everything.

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

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

/// Entries are stored in chunks: key = index of the chunk's first entry, value = the entries,
/// each as a big-endian `u32` length then its bytes. One append writes its entries as a few
/// large values instead of one B-tree record each, so a commit touches a few contiguous pages
/// rather than a dozen scattered ones (fewer write requests per fsync).
const ENTRIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("entry_chunks");
/// Largest chunk value (bytes) an append builds; a single larger entry gets a chunk of its own.
/// Bounds the read amplification of [`Store::get`].
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Frames `entries` into chunk values of at most [`CHUNK_BYTES`] (at least one entry each).
fn chunk_entries(entries: &[&[u8]]) -> Vec<(usize, Vec<u8>)> {
    let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut cur: Option<(usize, Vec<u8>)> = None;
    for (i, e) in entries.iter().enumerate() {
        let add = 4 + e.len();
        if let Some((_, v)) = &cur
            && v.len() + add > CHUNK_BYTES
        {
            out.extend(cur.take());
        }
        let (_, v) = cur.get_or_insert_with(|| (i, Vec::new()));
        let len = u32::try_from(e.len()).expect("entries are far below 4 GiB");
        v.extend_from_slice(&len.to_be_bytes());
        v.extend_from_slice(e);
    }
    out.extend(cur);
    out
}

/// Splits a stored chunk into its entries; `first` (the chunk's key) names it in errors.
fn unchunk<'a>(path: &Path, first: u64, value: &'a [u8]) -> Result<Vec<&'a [u8]>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < value.len() {
        let bad = |what: String| {
            Error::Integrity(format!(
                "{}: chunk at entry {first}, byte {at}: {what}",
                path.display()
            ))
        };
        let Some(len) = value.get(at..at + 4) else {
            return Err(bad(format!(
                "{} bytes left, need a 4-byte length",
                value.len() - at
            )));
        };
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let Some(e) = value.get(at + 4..at + 4 + len) else {
            return Err(bad(format!(
                "entry length {len} exceeds the {} bytes left",
                value.len() - at - 4
            )));
        };
        out.push(e);
        at += 4 + len;
    }
    if out.is_empty() {
        return Err(Error::Integrity(format!(
            "{}: chunk at entry {first} is empty",
            path.display()
        )));
    }
    Ok(out)
}
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
        // Length = last chunk's key + its entry count; contiguity is checked by every scan.
        let last = t.last().map_err(|e| db_err(e.to_string()))?;
        let n = match last {
            None => 0,
            Some((k, v)) => k.value() + unchunk(path, k.value(), v.value())?.len() as u64,
        };
        s.len = n;
        Ok(s)
    }

    fn scan_inner(&self, f: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
        let rtx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = rtx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        let mut expect = 0u64;
        for item in t.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            if k.value() != expect {
                return Err(Error::Integrity(format!(
                    "{}: expected a chunk starting at entry {expect}, found one at {}",
                    self.path.display(),
                    k.value()
                )));
            }
            for e in unchunk(&self.path, expect, v.value())? {
                f(expect, e)?;
                expect += 1;
            }
        }
        Ok(())
    }

    /// The chunk holding entry `index`: its first index and its entries (owned).
    fn chunk_of(&self, index: u64) -> Result<Option<(u64, Vec<Vec<u8>>)>> {
        let rtx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let t = rtx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
        let mut r = t.range(..=index).map_err(|e| self.db_err(e))?;
        let Some(item) = r.next_back() else {
            return Ok(None);
        };
        let (k, v) = item.map_err(|e| self.db_err(e))?;
        let first = k.value();
        let entries = unchunk(&self.path, first, v.value())?;
        if index - first >= entries.len() as u64 {
            return Ok(None);
        }
        Ok(Some((
            first,
            entries.into_iter().map(<[u8]>::to_vec).collect(),
        )))
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
        let (first, mut entries) = self
            .chunk_of(index)?
            .ok_or_else(|| Error::Invalid(format!("no entry {index} to overwrite")))?;
        entries[usize::try_from(index - first).expect("chunk offset")] = bytes.to_vec();
        self.tamper_put_chunk(first, &entries)
    }

    fn tamper_put_chunk(&mut self, first: u64, entries: &[Vec<u8>]) -> Result<()> {
        let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut t = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
            t.remove(first).map_err(|e| self.db_err(e))?;
            for (i, v) in chunk_entries(&refs) {
                t.insert(first + i as u64, v.as_slice())
                    .map_err(|e| self.db_err(e))?;
            }
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
        let keep = self.len.saturating_sub(n);
        while self.len > keep {
            let (first, mut entries) = self
                .chunk_of(self.len - 1)?
                .ok_or_else(|| Error::Invalid("store shorter than its length".into()))?;
            let tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
            {
                let mut t = tx.open_table(ENTRIES).map_err(|e| self.db_err(e))?;
                t.remove(first).map_err(|e| self.db_err(e))?;
            }
            tx.commit().map_err(|e| self.db_err(e))?;
            if first < keep {
                entries.truncate(usize::try_from(keep - first).expect("chunk offset"));
                self.tamper_put_chunk(first, &entries)?;
                self.len = keep;
            } else {
                self.len = first;
            }
        }
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
            let (first, mut entries) = self.chunk_of(index)?.ok_or_else(|| {
                Error::Integrity(format!("{}: entry {index} missing", self.path.display()))
            })?;
            Ok(entries.swap_remove(usize::try_from(index - first).expect("chunk offset")))
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
                for (i, v) in chunk_entries(entries) {
                    t.insert(first + i as u64, v.as_slice())
                        .map_err(|e| e.to_string())?;
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

    #[test]
    fn large_batches_span_chunks_and_damaged_chunks_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.redb");
        let recs: Vec<Vec<u8>> = (0..1000u32)
            .map(|i| vec![(i % 251) as u8; 100 + (i as usize % 300)])
            .collect();
        let refs: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
        let chunks = chunk_entries(&refs);
        assert!(chunks.len() > 3);
        assert!(chunks.iter().all(|(_, v)| v.len() <= CHUNK_BYTES));
        let big = vec![9u8; CHUNK_BYTES + 10];
        {
            let mut s = RedbStore::open(&p).unwrap();
            s.append(&refs[..1], b"a").unwrap();
            s.append(&refs[1..], b"b").unwrap();
            s.append(&[&big, b"x"], b"c").unwrap();
        }
        let mut s = RedbStore::open(&p).unwrap();
        assert_eq!(s.len().unwrap(), 1002);
        for i in [0usize, 1, 2, 499, 500, 998, 999] {
            assert_eq!(s.get(i as u64).unwrap(), recs[i], "entry {i}");
        }
        assert_eq!(s.get(1000).unwrap(), big);
        assert_eq!(s.get(1001).unwrap(), b"x");
        assert!(s.get(1002).is_err());
        let mut n = 0;
        s.scan(&mut |i, b| {
            assert_eq!(i, n);
            if i < 1000 {
                assert_eq!(b, recs[i as usize].as_slice());
            }
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1002);
        // Truncation across chunk boundaries keeps exactly the prefix.
        s.tamper_truncate(700).unwrap();
        assert_eq!(s.len().unwrap(), 302);
        drop(s);
        let mut s = RedbStore::open(&p).unwrap();
        assert_eq!(s.len().unwrap(), 302);
        assert_eq!(s.get(301).unwrap(), recs[301]);
        // A chunk whose length prefix overruns its value is an integrity error, not a panic.
        let tx = s.db.begin_write().unwrap();
        {
            let mut t = tx.open_table(ENTRIES).unwrap();
            t.insert(302, &[0u8, 0, 1, 0, 7][..]).unwrap();
        }
        tx.commit().unwrap();
        s.len = 303;
        let e = s.get(302).unwrap_err();
        assert!(e.to_string().contains("chunk at entry 302, byte 0"), "{e}");
        drop(s);
        let e = RedbStore::open(&p).unwrap_err();
        assert!(e.to_string().contains("exceeds the 1 bytes left"), "{e}");
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
