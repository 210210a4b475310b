//! Durable entry storage behind the [`Store`] trait; [`RedbStore`] is the default backend.
//!
//! Contract: when `append` returns `Ok`, the entries and the checkpoint committed with them survive
//! kill -9 and power loss, together: one append is one durable point (for [`RedbStore`], one WAL
//! frame and its `fdatasync`; see [`crate::wal`]). Any
//! failed durable write poisons the store: every later call returns [`Error::Poisoned`], because
//! after a failed fsync Linux may have dropped the dirty pages and a retry could falsely succeed
//! (fsyncgate). The owner must drop the store and reopen, which re-verifies everything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Cause, Error, Result};
use crate::wal::{self, Wal};

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
    /// Moves what is durable only in a write-ahead log into the main store, if the store has one
    /// (appends are durable without it; this bounds recovery work and the log's size).
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
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
/// Salt of the live WAL generation (`u64`, big-endian); changes only in durable commits.
const WAL_SALT_KEY: &str = "wal_salt";

/// [`Store`] on redb behind a write-ahead log (see [`crate::wal`]), like SQLite's WAL in front of
/// its B-tree. An append is one checksummed frame written at the end of the preallocated file
/// `<db>-wal` and one `fdatasync` (the acknowledgement); its entries and checkpoint are then kept
/// in memory (at most one WAL's worth, 4 MiB) and served from there. The database absorbs them
/// in one durable commit (which also stores a new WAL salt) when the WAL is full, on
/// [`Store::flush`], on drop and after recovery; an append larger than the whole WAL is absorbed
/// directly, together with what is pending.
///
/// On open, the database is what its last durable commit left and the WAL frames of the live
/// salt are replayed on top: a torn last
/// frame (never acknowledged) is dropped; a damaged frame followed by valid ones, a frame out of
/// sequence or a malformed frame is an [`Error::Integrity`], and nothing is dropped silently.
/// Durable commits use redb's one-phase protocol by default; [`RedbStore::with_two_phase_commit`]
/// restores the two-fsync protocol for them. Torn redb commits cannot pass
/// [`crate::log::Log::open`] either way: entries and the operator-signed checkpoint share every
/// transaction, and open requires count and Merkle root to equal what it signs.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
    wal: Wal,
    /// Entries in the database.
    len: u64,
    /// Entries durable only in the WAL (they follow the database's), and their checkpoint.
    pending: Vec<Vec<u8>>,
    pending_cp: Option<Vec<u8>>,
    two_phase: bool,
    poisoned: Option<Cause>,
    recovered: usize,
    absorptions: u64,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("len", &(self.len + self.pending.len() as u64))
            .finish_non_exhaustive()
    }
}

fn db_error(path: &Path, e: impl Into<redb::Error>) -> Error {
    Error::Db {
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    }
}

/// Path of the WAL beside database `db`: the same name with `-wal` appended.
pub fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push("-wal");
    PathBuf::from(s)
}

impl RedbStore {
    /// Opens or creates the database file and its WAL, replaying the WAL's acknowledged frames.
    /// Entries must be the contiguous range `0..len`.
    pub fn open(path: &Path) -> Result<Self> {
        guard(path, || {
            let db = Database::create(path).map_err(|e| db_error(path, e))?;
            Self::from_db(db, path)
        })
    }

    /// Opens a database on a custom redb storage backend (fault injection in tests); `path`
    /// names it in errors and places the WAL beside it.
    pub fn open_backend(backend: impl redb::StorageBackend, path: &Path) -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| db_error(path, e))?;
        Self::from_db(db, path)
    }

    fn from_db(db: Database, path: &Path) -> Result<Self> {
        let db_err = |e: redb::Error| db_error(path, e);
        // Read first: a database that already has its tables and salt needs no write (no fsync).
        let stored = (|| -> std::result::Result<Option<Vec<u8>>, redb::Error> {
            let rtx = db.begin_read()?;
            let m = match rtx.open_table(META) {
                Ok(m) => m,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(m.get(WAL_SALT_KEY)?.map(|v| v.value().to_vec()))
        })()
        .map_err(db_err)?;
        // A damaged salt must not silently orphan the WAL's acknowledged frames.
        let salt = if let Some(v) = stored {
            u64::from_be_bytes(<[u8; 8]>::try_from(v.as_slice()).map_err(|_| {
                Error::Integrity(format!(
                    "{}: meta/{WAL_SALT_KEY} holds {} bytes, expected 8",
                    path.display(),
                    v.len()
                ))
            })?)
        } else {
            let s = fresh_salt();
            let tx = db.begin_write().map_err(|e| db_err(e.into()))?;
            (|| -> std::result::Result<(), redb::Error> {
                tx.open_table(ENTRIES)?;
                tx.open_table(META)?
                    .insert(WAL_SALT_KEY, &s.to_be_bytes()[..])?;
                Ok(())
            })()
            .map_err(db_err)?;
            tx.commit().map_err(|e| db_err(e.into()))?;
            s
        };
        let len = {
            let rtx = db.begin_read().map_err(|e| db_err(e.into()))?;
            let t = rtx.open_table(ENTRIES).map_err(|e| db_err(e.into()))?;
            // Length = last chunk's key + its entry count; contiguity is checked by every scan.
            let last = t.last().map_err(|e| db_err(e.into()))?;
            match last {
                None => 0,
                Some((k, v)) => k.value() + unchunk(path, k.value(), v.value())?.len() as u64,
            }
        };
        let (wal, frames) = Wal::open(&wal_path(path), salt, len)?;
        let mut s = Self {
            db,
            path: path.to_path_buf(),
            wal,
            len,
            pending: Vec::new(),
            pending_cp: None,
            two_phase: false,
            poisoned: None,
            recovered: frames.len(),
            absorptions: 0,
        };
        for f in frames {
            s.pending.extend(f.entries);
            s.pending_cp = Some(f.checkpoint);
        }
        if s.recovered > 0
            && let Err(cause) = s.absorb(&[], None)
        {
            return Err(s.poison(cause));
        }
        Ok(s)
    }

    /// The one write path of the store: one durable redb transaction that appends the pending
    /// entries and then `entries` (chunked), replaces the stored checkpoint with the newest one
    /// given, and stores a fresh WAL salt; the WAL then restarts, since the database holds
    /// everything it held.
    fn absorb(
        &mut self,
        entries: &[&[u8]],
        checkpoint: Option<&[u8]>,
    ) -> std::result::Result<(), Cause> {
        // Nothing in the WAL and nothing given: the database already holds everything, and a
        // commit would only cost an fsync (callers absorb before raw edits, flush, drop).
        if entries.is_empty() && checkpoint.is_none() && self.wal.is_empty() {
            return Ok(());
        }
        let first = self.len;
        let pending = std::mem::take(&mut self.pending);
        let pending_cp = self.pending_cp.take();
        let mut all: Vec<&[u8]> = pending.iter().map(Vec::as_slice).collect();
        all.extend_from_slice(entries);
        let cp = checkpoint.or(pending_cp.as_deref());
        let n = all.len() as u64;
        let r = self.transact(|tx| {
            let mut t = tx.open_table(ENTRIES)?;
            for (i, v) in chunk_entries(&all) {
                t.insert(first + i as u64, v.as_slice())?;
            }
            if let Some(cp) = cp {
                tx.open_table(META)?.insert(CHECKPOINT_KEY, cp)?;
            }
            Ok(())
        });
        if r.is_ok() {
            self.len += n;
        } else {
            self.pending = pending;
            self.pending_cp = pending_cp;
        }
        r
    }

    /// Runs `f` in one durable write transaction that also stores a fresh WAL salt, then
    /// restarts the WAL under that salt.
    fn transact(
        &mut self,
        f: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<(), redb::Error>,
    ) -> std::result::Result<(), Cause> {
        let salt = fresh_salt();
        let run = || -> std::result::Result<(), redb::Error> {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(Durability::Immediate)?;
            tx.set_two_phase_commit(self.two_phase);
            tx.open_table(META)?
                .insert(WAL_SALT_KEY, &salt.to_be_bytes()[..])?;
            f(&tx)?;
            tx.commit()?;
            Ok(())
        };
        run().map_err(|e| Arc::new(db_error(&self.path, e)) as Cause)?;
        self.wal.restart(salt);
        self.absorptions += 1;
        Ok(())
    }

    fn append_inner(
        &mut self,
        entries: &[&[u8]],
        checkpoint: &[u8],
    ) -> std::result::Result<(), Cause> {
        let bytes = wal::HEADER_BYTES
            + entries.iter().map(|e| 4 + e.len()).sum::<usize>()
            + checkpoint.len();
        if !self.wal.can_hold(bytes) {
            return self.absorb(entries, Some(checkpoint));
        }
        if !self.wal.fits(bytes) {
            self.absorb(&[], None)?;
        }
        let first = self.len + self.pending.len() as u64;
        let frame = wal::encode(self.wal.salt(), first, entries, checkpoint);
        self.wal.write(&frame).map_err(|e| Arc::new(e) as Cause)?;
        // The frame is the durable copy; the database gets these entries at the next absorption.
        self.pending.extend(entries.iter().map(|e| e.to_vec()));
        self.pending_cp = Some(checkpoint.to_vec());
        Ok(())
    }

    fn poison(&mut self, cause: Cause) -> Error {
        self.poisoned = Some(cause.clone());
        Error::Poisoned {
            path: self.path.clone(),
            source: cause,
        }
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
        for e in &self.pending {
            f(expect, e)?;
            expect += 1;
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

    /// Commits the database's absorption of the WAL with redb's two-phase protocol (two fsyncs)
    /// instead of one.
    #[must_use]
    pub fn with_two_phase_commit(mut self, enabled: bool) -> Self {
        self.two_phase = enabled;
        self
    }

    /// Number of WAL frames this open replayed into the database (acknowledged appends that
    /// the database had not yet made durable itself, e.g. after a crash).
    pub fn recovered_frames(&self) -> usize {
        self.recovered
    }

    /// Number of durable database commits since open (each absorbs the WAL).
    pub fn durable_commits(&self) -> u64 {
        self.absorptions
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned {
                path: self.path.clone(),
                source: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn db_err(&self, e: impl Into<redb::Error>) -> Error {
        db_error(&self.path, e)
    }

    /// A durable raw transaction for the tamper helpers below, after absorbing the WAL.
    fn tamper(
        &mut self,
        f: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<(), redb::Error>,
    ) -> Result<()> {
        self.absorb(&[], None)
            .and_then(|()| self.transact(f))
            .map_err(|cause| self.poison(cause))
    }

    /// Overwrites entry `index` in place, bypassing every check. Only for tamper tests.
    #[doc(hidden)]
    pub fn tamper_overwrite(&mut self, index: u64, bytes: &[u8]) -> Result<()> {
        self.absorb(&[], None).map_err(|cause| self.poison(cause))?;
        let (first, mut entries) = self
            .chunk_of(index)?
            .ok_or_else(|| Error::Invalid(format!("no entry {index} to overwrite")))?;
        entries[usize::try_from(index - first).expect("chunk offset")] = bytes.to_vec();
        let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        self.tamper(|tx| {
            let mut t = tx.open_table(ENTRIES)?;
            t.remove(first)?;
            for (i, v) in chunk_entries(&refs) {
                t.insert(first + i as u64, v.as_slice())?;
            }
            Ok(())
        })
    }

    /// Replaces the stored checkpoint bytes, bypassing every check. Only for tamper tests.
    #[doc(hidden)]
    pub fn tamper_checkpoint(&mut self, bytes: &[u8]) -> Result<()> {
        self.tamper(|tx| {
            tx.open_table(META)?.insert(CHECKPOINT_KEY, bytes)?;
            Ok(())
        })
    }

    /// Deletes the last `n` entries, bypassing every check. Only for rollback tests.
    #[doc(hidden)]
    pub fn tamper_truncate(&mut self, n: u64) -> Result<()> {
        self.absorb(&[], None).map_err(|cause| self.poison(cause))?;
        let keep = self.len.saturating_sub(n);
        while self.len > keep {
            let (first, entries) = self
                .chunk_of(self.len - 1)?
                .ok_or_else(|| Error::Invalid("store shorter than its length".into()))?;
            self.tamper(|tx| {
                tx.open_table(ENTRIES)?.remove(first)?;
                Ok(())
            })?;
            self.len = first;
            if first < keep {
                let refs: Vec<&[u8]> = entries[..usize::try_from(keep - first).expect("offset")]
                    .iter()
                    .map(Vec::as_slice)
                    .collect();
                self.absorb(&refs, None)
                    .map_err(|cause| self.poison(cause))?;
            }
        }
        Ok(())
    }
}

fn fresh_salt() -> u64 {
    use rand::RngExt;
    rand::rng().random()
}

impl Store for RedbStore {
    fn len(&self) -> Result<u64> {
        self.check()?;
        Ok(self.len + self.pending.len() as u64)
    }

    fn get(&self, index: u64) -> Result<Vec<u8>> {
        self.check()?;
        if let Some(e) = index
            .checked_sub(self.len)
            .and_then(|i| self.pending.get(usize::try_from(i).ok()?))
        {
            return Ok(e.clone());
        }
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
        if let Some(cp) = &self.pending_cp {
            return Ok(Some(cp.clone()));
        }
        guard(&self.path, || {
            let rtx = self.db.begin_read().map_err(|e| self.db_err(e))?;
            let t = rtx.open_table(META).map_err(|e| self.db_err(e))?;
            let v = t.get(CHECKPOINT_KEY).map_err(|e| self.db_err(e))?;
            Ok(v.map(|g| g.value().to_vec()))
        })
    }

    fn append(&mut self, entries: &[&[u8]], checkpoint: &[u8]) -> Result<u64> {
        self.check()?;
        let first = self.len + self.pending.len() as u64;
        match self.append_inner(entries, checkpoint) {
            Ok(()) => Ok(first),
            Err(cause) => Err(self.poison(cause)),
        }
    }

    fn flush(&mut self) -> Result<()> {
        self.check()?;
        self.absorb(&[], None).map_err(|cause| self.poison(cause))
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Best effort: frames left in the WAL are replayed on the next open anyway.
        if self.poisoned.is_none() {
            let _ = self.absorb(&[], None);
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
            // Served from the WAL's in-memory copy until the database absorbs it.
            assert_eq!(s.len, 0);
            assert_eq!(s.len().unwrap(), 3);
            assert_eq!(s.get(1).unwrap(), b"bb");
            assert!(s.get(3).is_err());
            assert_eq!(s.checkpoint().unwrap().as_deref(), Some(&b"cp2"[..]));
            let mut n = 0;
            s.scan(&mut |i, _| {
                assert_eq!(i, n);
                n += 1;
                Ok(())
            })
            .unwrap();
            assert_eq!(n, 3);
            s.flush().unwrap();
            assert_eq!((s.len, s.get(2).unwrap()), (3, b"ccc".to_vec()));
            s.append(&[b"dddd"], b"cp3").unwrap();
            assert_eq!(s.get(2).unwrap(), b"ccc");
            assert_eq!(s.get(3).unwrap(), b"dddd");
        }
        let s = RedbStore::open(&p).unwrap();
        assert_eq!(s.len().unwrap(), 4);
        assert_eq!(s.checkpoint().unwrap().as_deref(), Some(&b"cp3"[..]));
        assert_eq!(s.get(1).unwrap(), b"bb");
        let mut seen = Vec::new();
        s.scan(&mut |i, b| {
            seen.push((i, b.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[2], (2, b"ccc".to_vec()));
        assert!(s.get(4).is_err());
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

    fn failing_store(p: &Path, fail: &Arc<AtomicBool>) -> RedbStore {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .unwrap();
        let backend = FailingSync {
            inner: redb::backends::FileBackend::new(file).unwrap(),
            fail: fail.clone(),
        };
        RedbStore::open_backend(backend, p).unwrap()
    }

    #[test]
    fn failed_fsync_poisons_the_store_and_nothing_unacknowledged_appears() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.redb");
        // The acknowledging fsync is the WAL's: it fails during an append.
        let fail = Arc::new(AtomicBool::new(false));
        {
            let mut s = failing_store(&p, &Arc::new(AtomicBool::new(false)));
            s.wal.fail_sync = Some(fail.clone());
            s.append(&[b"kept"], b"cp-kept").unwrap();
            fail.store(true, Ordering::SeqCst);
            let e = s.append(&[b"lost"], b"cp-lost").unwrap_err();
            assert!(e.to_string().contains("injected EIO on WAL fsync"), "{e}");
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
        // Entries and checkpoint move together: whichever frame survived, they match.
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
        drop(s);

        // The database's own fsync fails when it absorbs the WAL: poisoned too, and the WAL
        // still brings back every acknowledged entry on reopen.
        let fail = Arc::new(AtomicBool::new(false));
        {
            let mut s = failing_store(&p, &fail);
            s.append(&[b"in-wal"], b"cp-wal").unwrap();
            fail.store(true, Ordering::SeqCst);
            let e = s.flush().unwrap_err();
            assert!(e.to_string().contains("injected EIO"), "{e}");
            assert!(matches!(s.flush(), Err(Error::Poisoned { .. })));
            assert!(matches!(
                s.append(&[b"x"], b"cp-x"),
                Err(Error::Poisoned { .. })
            ));
        }
        let s = RedbStore::open(&p).unwrap();
        assert_eq!(s.len().unwrap(), n + 1);
        assert_eq!(s.get(n).unwrap(), b"in-wal");
        assert_eq!(s.checkpoint().unwrap().unwrap(), b"cp-wal");
    }

    /// The files as kill -9 would leave them: what was written so far, taken while the store
    /// is still open (a clean close would make redb's pending commits durable).
    fn crash_copy(db: &Path, to: &Path) {
        std::fs::copy(db, to).unwrap();
        std::fs::copy(wal_path(db), wal_path(to)).unwrap();
    }

    fn crash_restore(db: &Path, from: &Path) {
        std::fs::copy(from, db).unwrap();
        std::fs::copy(wal_path(from), wal_path(db)).unwrap();
    }

    #[test]
    fn wal_frames_are_replayed_after_a_crash_and_absorbed_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.redb");
        let snap = dir.path().join("snap.redb");
        let rec = vec![7u8; 200];
        let per_frame = 100;
        let refs: Vec<&[u8]> = vec![rec.as_slice(); per_frame];
        let frame = wal::HEADER_BYTES + per_frame * 204 + 3;
        let frames_per_wal = usize::try_from(wal::SEGMENT_BYTES).unwrap() / frame;
        {
            let mut s = RedbStore::open(&p).unwrap();
            // More than one WAL's worth: at least one absorption on the way.
            for i in 0..frames_per_wal + 5 {
                s.append(&refs, format!("c{:02}", i % 100).as_bytes())
                    .unwrap();
            }
            assert!(!s.wal.is_empty());
            crash_copy(&p, &snap);
        }
        crash_restore(&p, &snap);
        let s = RedbStore::open(&p).unwrap();
        let n = (frames_per_wal + 5) * per_frame;
        assert_eq!(s.len().unwrap(), n as u64);
        assert_eq!(s.get(n as u64 - 1).unwrap(), rec);
        let last = format!("c{:02}", (frames_per_wal + 4) % 100);
        assert_eq!(s.checkpoint().unwrap().unwrap(), last.as_bytes());
        // Recovery absorbed the frames: the WAL starts a new generation.
        assert!(s.wal.is_empty());
        // A batch larger than the whole WAL goes straight to a durable commit.
        let big = vec![1u8; usize::try_from(wal::SEGMENT_BYTES).unwrap()];
        let mut s = s;
        s.append(&[&big], b"big").unwrap();
        assert!(s.wal.is_empty());
        crash_copy(&p, &snap);
        drop(s);
        crash_restore(&p, &snap);
        let s = RedbStore::open(&p).unwrap();
        assert_eq!(s.len().unwrap(), n as u64 + 1);
        assert_eq!(s.get(n as u64).unwrap(), big);
    }
}
