//! Write-ahead log in front of the redb store, the way SQLite's WAL sits in front of its B-tree.
//!
//! Why: a durable redb commit writes about eight scattered pages (header, table trees, the entry
//! chunk) before its fsync; a WAL append writes one contiguous run at the end of a preallocated
//! file, so its `fdatasync` flushes a few adjacent pages and no file metadata.
//!
//! File `<db>-wal`: [`SEGMENT_BYTES`] zero bytes written (and fsynced) once at creation, then
//! frames from byte 0. Frame = 60-byte header then payload:
//!
//! ```text
//! [4]  magic "MLW1"
//! u64  salt          random per generation; the live one is stored durably in the database
//! u64  first         index of the frame's first entry
//! u32  n             number of entries
//! u32  payload_len
//! [32] SHA-256(header fields above ‖ payload)
//! payload: n × (u32 len ‖ entry) ‖ checkpoint bytes (the rest)
//! ```
//!
//! Generations: after the database has durably absorbed every frame (a redb commit with
//! `Durability::Immediate` that also stores a fresh salt), the WAL restarts at byte 0 with the
//! new salt. Frames of other salts are leftovers of older generations, never replayed. The salt
//! is random and kept in the database, so an entry submitted from outside cannot embed a frame
//! that recovery would take for a real one.
//!
//! Recovery ([`Wal::open`]): frames with the live salt are read from byte 0 while their checksum
//! holds; each must start at the next expected entry index (else an integrity error). The chain
//! ends at the first frame that is absent (zeros, other salt) or damaged. A damaged frame is
//! accepted as a torn, never-acknowledged write only if it is the last one: if any valid
//! live-salt frame lies beyond it, entries after the damage were acknowledged and recovery
//! fails with an integrity error instead of dropping them.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Size of the preallocated WAL file; when the next frame does not fit, the database absorbs the
/// WAL (one durable redb commit) and the WAL restarts. About SQLite's default auto-checkpoint
/// (1000 pages of 4 KiB).
pub const SEGMENT_BYTES: u64 = 4 << 20;
const MAGIC: [u8; 4] = *b"MLW1";
/// Header length: magic, salt, first, n, `payload_len`, digest.
pub const HEADER_BYTES: usize = 4 + 8 + 8 + 4 + 4 + 32;

/// One recovered frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Byte offset of the frame in the WAL file.
    pub at: u64,
    /// Index of the first entry.
    pub first: u64,
    /// The entries.
    pub entries: Vec<Vec<u8>>,
    /// Checkpoint bytes committed with them.
    pub checkpoint: Vec<u8>,
}

/// Encodes a frame (see the module docs).
pub fn encode(salt: u64, first: u64, entries: &[&[u8]], checkpoint: &[u8]) -> Vec<u8> {
    let payload_len: usize = entries.iter().map(|e| 4 + e.len()).sum::<usize>() + checkpoint.len();
    let mut out = Vec::with_capacity(HEADER_BYTES + payload_len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&salt.to_be_bytes());
    out.extend_from_slice(&first.to_be_bytes());
    let n = u32::try_from(entries.len()).expect("far fewer than 2^32 entries per append");
    out.extend_from_slice(&n.to_be_bytes());
    let len = u32::try_from(payload_len).expect("frames larger than 4 GiB bypass the WAL");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0; 32]);
    for e in entries {
        let l = u32::try_from(e.len()).expect("entries are far below 4 GiB");
        out.extend_from_slice(&l.to_be_bytes());
        out.extend_from_slice(e);
    }
    out.extend_from_slice(checkpoint);
    let digest = frame_digest(&out[..28], &out[HEADER_BYTES..]);
    out[28..HEADER_BYTES].copy_from_slice(&digest);
    out
}

fn frame_digest(fields: &[u8], payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(fields);
    h.update(payload);
    h.finalize().into()
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().expect("4 bytes"))
}

/// What lies at one offset of the WAL.
enum Found {
    /// A complete frame with the live salt and a valid checksum, and its total length.
    Valid(Frame, usize),
    /// Zeros, a frame of another generation, or too few bytes for a header: the clean end.
    End,
    /// A live-salt header whose frame is cut off or fails its checksum.
    Damaged(String),
}

/// Reads the frame at `at` of `buf` (the whole WAL), bounds-checked.
fn frame_at(path: &Path, buf: &[u8], at: usize, salt: u64) -> Result<Found> {
    let Some(h) = buf.get(at..at + HEADER_BYTES) else {
        return Ok(Found::End);
    };
    if h[..4] != MAGIC || be_u64(&h[4..12]) != salt {
        return Ok(Found::End);
    }
    let first = be_u64(&h[12..20]);
    let n = be_u32(&h[20..24]) as usize;
    let len = be_u32(&h[24..28]) as usize;
    let Some(payload) = buf.get(at + HEADER_BYTES..at + HEADER_BYTES + len) else {
        return Ok(Found::Damaged(format!(
            "payload of {len} bytes runs past the end of the file"
        )));
    };
    if frame_digest(&h[..28], payload) != h[28..HEADER_BYTES] {
        return Ok(Found::Damaged("checksum mismatch".into()));
    }
    // From here the frame is exactly what we wrote (or a SHA-256 forgery with the secret salt),
    // so a malformed payload is corruption, never a tear.
    let bad = |off: usize, what: String| {
        Error::Integrity(format!(
            "{}: frame at byte {at}, payload byte {off}: {what}",
            path.display()
        ))
    };
    let mut entries = Vec::with_capacity(n.min(len / 4));
    let mut off = 0usize;
    for i in 0..n {
        let Some(l) = payload.get(off..off + 4) else {
            return Err(bad(off, format!("entry {i} of {n} has no length")));
        };
        let l = be_u32(l) as usize;
        let Some(e) = payload.get(off + 4..off + 4 + l) else {
            return Err(bad(
                off,
                format!("entry {i} of {l} bytes overruns the frame"),
            ));
        };
        entries.push(e.to_vec());
        off += 4 + l;
    }
    if off == payload.len() {
        return Err(bad(off, "no checkpoint after the entries".into()));
    }
    let frame = Frame {
        at: at as u64,
        first,
        entries,
        checkpoint: payload[off..].to_vec(),
    };
    Ok(Found::Valid(frame, HEADER_BYTES + len))
}

/// The open WAL file: where the next frame goes and under which salt.
#[derive(Debug)]
pub struct Wal {
    file: File,
    path: PathBuf,
    salt: u64,
    offset: u64,
    capacity: u64,
    #[cfg(test)]
    pub(crate) fail_sync: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Wal {
    /// Opens (creating and preallocating if needed) the WAL at `path` and recovers the frames of
    /// generation `salt`, which must continue the database's `next` entries. The returned frames
    /// are not yet in the database; the WAL position stays after them.
    pub fn open(path: &Path, salt: u64, next: u64) -> Result<(Self, Vec<Frame>)> {
        let io = |e| Error::io(path, e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < SEGMENT_BYTES {
            // Zeros written once: later frames overwrite allocated blocks, so an `fdatasync`
            // after a frame flushes data only, never the file size or extent map.
            let zeros = vec![0u8; usize::try_from(SEGMENT_BYTES - len).expect("4 MiB")];
            file.write_all_at(&zeros, len).map_err(io)?;
            file.sync_all().map_err(io)?;
            crate::identity::sync_parent(path)?;
        }
        // Frames never extend past SEGMENT_BYTES (larger appends bypass the WAL), so bytes
        // beyond it are not ours and are neither read nor used.
        let capacity = SEGMENT_BYTES;
        let mut buf = vec![0u8; usize::try_from(capacity).expect("WAL fits in memory")];
        file.read_exact_at(&mut buf, 0).map_err(io)?;
        let mut frames = Vec::new();
        let mut at = 0usize;
        let mut expect = next;
        let damage = loop {
            match frame_at(path, &buf, at, salt)? {
                Found::Valid(f, size) => {
                    // Live frames always continue the database exactly: the commit that absorbs
                    // them also changes the salt.
                    let n = f.entries.len() as u64;
                    if f.first != expect {
                        return Err(Error::Integrity(format!(
                            "{}: frame at byte {at} holds entries {}..{} but the log continues \
                             at entry {expect}",
                            path.display(),
                            f.first,
                            f.first + n,
                        )));
                    }
                    expect += n;
                    frames.push(f);
                    at += size;
                }
                Found::End => break None,
                Found::Damaged(what) => break Some(what),
            }
        };
        // Only the last frame may be torn: a valid live frame after the end means acknowledged
        // entries follow a damaged or overwritten one.
        let mut p = at + 1;
        while let Some(q) = buf
            .get(p..)
            .and_then(|rest| rest.iter().position(|&b| b == MAGIC[0]))
        {
            let cand = p + q;
            p = cand + 1;
            if !buf[cand..].starts_with(&MAGIC) {
                continue;
            }
            if let Found::Valid(f, _) = frame_at(path, &buf, cand, salt)? {
                return Err(Error::Integrity(format!(
                    "{}: frame at byte {cand} (entries from {}) follows {} at byte {at}; \
                     acknowledged entries cannot be recovered",
                    path.display(),
                    f.first,
                    damage.as_deref().unwrap_or("the end of the log")
                )));
            }
        }
        let wal = Self {
            file,
            path: path.to_path_buf(),
            salt,
            offset: at as u64,
            capacity,
            #[cfg(test)]
            fail_sync: None,
        };
        Ok((wal, frames))
    }

    /// The live generation's salt.
    pub fn salt(&self) -> u64 {
        self.salt
    }

    /// True when a frame of `bytes` fits after the current position.
    pub fn fits(&self, bytes: usize) -> bool {
        self.offset + bytes as u64 <= self.capacity
    }

    /// True when a frame of `bytes` could ever fit (larger ones go straight to the database).
    pub fn can_hold(&self, bytes: usize) -> bool {
        bytes as u64 <= self.capacity
    }

    /// True when no frame of the live generation has been written.
    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// Writes `frame` (from [`encode`] with [`Wal::salt`]) at the current position and waits for
    /// `fdatasync`: when this returns `Ok`, the frame survives power loss. An error leaves the
    /// file in an unknown state; the caller must poison itself.
    pub fn write(&mut self, frame: &[u8]) -> Result<()> {
        let io = |e| Error::io(&self.path, e);
        self.file.write_all_at(frame, self.offset).map_err(io)?;
        #[cfg(test)]
        if self
            .fail_sync
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst))
        {
            return Err(io(std::io::Error::other("injected EIO on WAL fsync")));
        }
        self.file.sync_data().map_err(io)?;
        self.offset += frame.len() as u64;
        Ok(())
    }

    /// Starts generation `salt` at byte 0. Only after the database durably holds everything
    /// written so far together with `salt`.
    pub fn restart(&mut self, salt: u64) {
        self.salt = salt;
        self.offset = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(first: u64, n: u64) -> Vec<Vec<u8>> {
        (first..first + n)
            .map(|i| vec![(i % 251) as u8; 50 + (i as usize % 200)])
            .collect()
    }

    fn write_frames(wal: &mut Wal, first: u64, batches: &[u64]) -> Vec<u64> {
        let mut at = Vec::new();
        let mut next = first;
        for &n in batches {
            let es = entries(next, n);
            let refs: Vec<&[u8]> = es.iter().map(Vec::as_slice).collect();
            at.push(wal.offset);
            wal.write(&encode(
                wal.salt(),
                next,
                &refs,
                format!("cp{next}").as_bytes(),
            ))
            .unwrap();
            next += n;
        }
        at
    }

    #[test]
    fn frames_round_trip_and_other_generations_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w");
        let (mut wal, frames) = Wal::open(&p, 7, 10).unwrap();
        assert!(frames.is_empty());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), SEGMENT_BYTES);
        write_frames(&mut wal, 10, &[3, 0, 5]);
        drop(wal);
        let (_, frames) = Wal::open(&p, 7, 10).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2].first, 13);
        assert_eq!(frames[2].entries, entries(13, 5));
        assert_eq!(frames[1].checkpoint, b"cp13");
        // Another salt sees nothing; a wrong starting index is an integrity error.
        assert!(Wal::open(&p, 8, 10).unwrap().1.is_empty());
        let e = Wal::open(&p, 7, 11).unwrap_err();
        assert!(e.to_string().contains("entries 10..13"), "{e}");
        let e = Wal::open(&p, 7, 9).unwrap_err();
        assert!(e.to_string().contains("continues at entry 9"), "{e}");
        // A new generation overwrites from byte 0; older frames behind it are not replayed.
        let (mut wal, _) = Wal::open(&p, 7, 10).unwrap();
        wal.restart(9);
        write_frames(&mut wal, 18, &[1]);
        drop(wal);
        let (_, frames) = Wal::open(&p, 9, 18).unwrap();
        assert_eq!(frames.len(), 1);
    }

    #[test]
    fn a_torn_last_frame_is_dropped_but_damage_before_acknowledged_frames_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w");
        let (mut wal, _) = Wal::open(&p, 1, 0).unwrap();
        let at = write_frames(&mut wal, 0, &[2, 4, 3]);
        let end = wal.offset;
        drop(wal);
        let orig = std::fs::read(&p).unwrap();
        // Torn last frame: every cut inside it drops exactly that frame.
        for cut in [at[2] + 1, at[2] + 40, end - 1] {
            let mut b = orig.clone();
            b[usize::try_from(cut).unwrap()..usize::try_from(end).unwrap()].fill(0);
            std::fs::write(&p, &b).unwrap();
            let (wal, frames) = Wal::open(&p, 1, 0).unwrap();
            assert_eq!(frames.len(), 2, "cut at {cut}");
            // The next frame overwrites the torn one.
            assert_eq!(wal.offset, at[2]);
        }
        // A flip anywhere in an earlier frame, header included, is an integrity error.
        for q in (at[0]..at[2]).step_by(7) {
            let mut b = orig.clone();
            b[usize::try_from(q).unwrap()] ^= 0x20;
            std::fs::write(&p, &b).unwrap();
            let e = Wal::open(&p, 1, 0).unwrap_err();
            assert!(matches!(e, Error::Integrity(_)), "flip at {q}: {e}");
        }
        std::fs::write(&p, &orig).unwrap();
        assert_eq!(Wal::open(&p, 1, 0).unwrap().1.len(), 3);
    }

    #[test]
    fn valid_checksum_with_a_malformed_payload_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w");
        drop(Wal::open(&p, 5, 0).unwrap());
        // n = 3 entries claimed but the payload holds one: re-sign it with the right digest.
        let mut f = encode(5, 0, &[b"abc"], b"cp");
        f[20..24].copy_from_slice(&3u32.to_be_bytes());
        let d = frame_digest(&f[..28], &f[HEADER_BYTES..]);
        f[28..HEADER_BYTES].copy_from_slice(&d);
        let file = OpenOptions::new().write(true).open(&p).unwrap();
        file.write_all_at(&f, 0).unwrap();
        let e = Wal::open(&p, 5, 0).unwrap_err();
        assert!(e.to_string().contains("frame at byte 0"), "{e}");
    }
}
