//! Tamper test: flipping bytes of the stored log (database file, WAL file and logical entries) or
//! of the checkpoint is detected by `verify_dir`. Flips that land in unused database space cannot
//! change the log; for those the test checks that the verified content is byte-identical.

use std::path::Path;

use incentive_ledger::demo::run_demo;
use incentive_ledger::identity::Keypair;
use incentive_ledger::ledger::{Ledger, verify_dir};
use incentive_ledger::log::{CHECKPOINT_FILE, DB_FILE, WAL_FILE};
use incentive_ledger::record::{Genesis, Role};
use incentive_ledger::store::{RedbStore, Store};

fn entries(d: &Path) -> Vec<Vec<u8>> {
    let s = RedbStore::open(&d.join(DB_FILE)).unwrap();
    let mut v = Vec::new();
    s.scan(&mut |_, b| {
        v.push(b.to_vec());
        Ok(())
    })
    .unwrap();
    v
}

fn demo() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("l");
    run_demo(&d, 7, 2).unwrap();
    verify_dir(&d, None).unwrap();
    (dir, d)
}

#[test]
fn every_checkpoint_byte_flip_is_detected() {
    let (_t, d) = demo();
    let p = d.join(CHECKPOINT_FILE);
    let orig = std::fs::read(&p).unwrap();
    for i in 0..orig.len() {
        let mut b = orig.clone();
        b[i] ^= 0x01;
        std::fs::write(&p, &b).unwrap();
        assert!(
            verify_dir(&d, None).is_err(),
            "checkpoint flip at byte {i} not detected"
        );
    }
    std::fs::write(&p, &orig).unwrap();
    verify_dir(&d, None).unwrap();
}

#[test]
fn every_entry_byte_change_is_detected() {
    let (_t, d) = demo();
    let orig = entries(&d);
    let mut store = RedbStore::open(&d.join(DB_FILE)).unwrap();
    let mut checked = 0;
    for (i, e) in orig.iter().enumerate() {
        // One position per entry, rotating through header, body and signature; a spread of
        // positions over all of entry 1 (each verify reopens the database, so keep it bounded).
        let positions: Vec<usize> = if i == 1 {
            (0..e.len()).step_by(9).chain([e.len() - 1]).collect()
        } else {
            vec![(i * 37) % e.len()]
        };
        for p in positions {
            let mut b = e.clone();
            b[p] ^= 0x80;
            store.tamper_overwrite(i as u64, &b).unwrap();
            drop(store);
            let err = verify_dir(&d, None).expect_err("modified entry accepted");
            assert!(
                err.to_string().contains("root") || err.to_string().contains("entry"),
                "{err}"
            );
            store = RedbStore::open(&d.join(DB_FILE)).unwrap();
            checked += 1;
        }
        store.tamper_overwrite(i as u64, e).unwrap();
    }
    drop(store);
    verify_dir(&d, None).unwrap();
    assert!(checked > 50);
}

#[test]
fn byte_flips_anywhere_in_the_database_file_never_go_unnoticed() {
    let (_t, d) = demo();
    let orig_entries = entries(&d);
    let p = d.join(DB_FILE);
    let orig = std::fs::read(&p).unwrap();
    // One position in every 4 KiB region of the file, plus pseudo-random extra ones.
    let mut positions: Vec<usize> = (0..orig.len())
        .step_by(4096)
        .map(|r| r + (r / 4096 * 37) % 4096)
        .collect();
    let mut x: u64 = 99;
    for _ in 0..200 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        positions.push((x >> 20) as usize % orig.len());
    }
    positions.retain(|&q| q < orig.len());
    let (mut detected, mut inert) = (0, 0);
    for &q in &positions {
        let mut b = orig.clone();
        b[q] ^= 0x10;
        std::fs::write(&p, &b).unwrap();
        // A panic here (e.g. from redb on a damaged file) fails the test: verify must report.
        if verify_dir(&d, None).is_ok() {
            // Verified: then the log content must be exactly the original.
            assert_eq!(
                entries(&d),
                orig_entries,
                "flip at {q} changed the log undetected"
            );
            inert += 1;
        } else {
            detected += 1;
        }
    }
    std::fs::write(&p, &orig).unwrap();
    verify_dir(&d, None).unwrap();
    eprintln!(
        "database flips: {} positions over {} bytes, {detected} detected, {inert} in unused space",
        positions.len(),
        orig.len()
    );
    assert!(detected > 0);
}

/// A ledger as kill -9 leaves it with acknowledged appends still only in the WAL: the files are
/// copied while the ledger is open (a clean drop would make the database absorb the WAL).
fn crashed_with_live_wal() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("l");
    let genesis = Genesis {
        base_model: [0; 32],
        initial_emission: 1000,
        halving_rounds: 10,
        cap: 1_000_000,
        copy_threshold_ppm: 600_000,
    };
    let mut l = Ledger::create(&d, "wal-tamper", Keypair::from_seed([5; 32]), genesis).unwrap();
    let frames = 6;
    for i in 0..frames {
        l.register(Keypair::from_seed([10 + i; 32]).public(), Role::Worker, 0)
            .unwrap();
    }
    let snap = dir.path().join("snap");
    std::fs::create_dir(&snap).unwrap();
    for f in [DB_FILE, WAL_FILE, CHECKPOINT_FILE] {
        std::fs::copy(d.join(f), snap.join(f)).unwrap();
    }
    drop(l);
    (dir, snap)
}

#[test]
fn byte_flips_in_live_wal_frames_are_detected_or_drop_only_the_unacknowledged_tail() {
    let (_t, d) = crashed_with_live_wal();
    let work = d.parent().unwrap().join("work");
    let reset = || {
        std::fs::create_dir_all(&work).unwrap();
        // The WAL itself is rewritten (flipped) before every check; open never writes it.
        for f in [DB_FILE, CHECKPOINT_FILE] {
            std::fs::copy(d.join(f), work.join(f)).unwrap();
        }
    };
    reset();
    std::fs::copy(d.join(WAL_FILE), work.join(WAL_FILE)).unwrap();
    let full = verify_dir(&work, None).unwrap();
    let all = entries(&work);
    assert_eq!(full.entries as usize, all.len());
    let wal = std::fs::read(d.join(WAL_FILE)).unwrap();
    // This is the WAL's first generation: frames follow each other from byte 0, each a header
    // (magic "MLW1", payload length at bytes 24..28) and its payload. The live region ends where
    // the last frame's payload ends, read from its header: the payload itself may end in zero
    // bytes (a signature's last byte is 0 one time in 256), so "last non-zero byte" is not it.
    let mut starts = Vec::new();
    let mut at = 0;
    while wal[at..].starts_with(b"MLW1") {
        starts.push(at);
        let len = u32::from_be_bytes(wal[at + 24..at + 28].try_into().unwrap()) as usize;
        at += incentive_ledger::wal::HEADER_BYTES + len;
    }
    let live = at;
    assert!(starts.len() >= 7, "{} frames", starts.len());
    assert!(
        wal[live..].iter().all(|&b| b == 0),
        "bytes after the last frame"
    );
    let last = *starts.last().unwrap();
    // Every 4th byte of every header, every 23rd byte of the payloads, the last frame's last
    // byte, and a spread after the end.
    let mut positions: Vec<usize> = starts
        .iter()
        .flat_map(|&s| (s..s + incentive_ledger::wal::HEADER_BYTES).step_by(4))
        .chain((0..live).step_by(23))
        .chain([live - 1])
        .chain((live..wal.len()).step_by(97_001))
        .collect();
    positions.sort_unstable();
    positions.dedup();
    let (mut detected, mut dropped_tail, mut inert) = (0, 0, 0);
    for &q in &positions {
        reset();
        let mut b = wal.clone();
        b[q] ^= 0x04;
        std::fs::write(work.join(WAL_FILE), &b).unwrap();
        match verify_dir(&work, None) {
            Err(_) => detected += 1,
            Ok(_) if q >= live => {
                assert_eq!(entries(&work), all, "flip at {q} past the live frames");
                inert += 1;
            }
            Ok(_) => {
                // Only a damaged last frame may be taken for a torn, unacknowledged write: the
                // log is then exactly the entries before it.
                assert!(q >= last, "flip at {q} in an earlier frame went unnoticed");
                assert_eq!(entries(&work), all[..all.len() - 1], "flip at {q}");
                dropped_tail += 1;
            }
        }
    }
    eprintln!(
        "WAL flips: {} positions, {detected} detected, {dropped_tail} dropped the last frame, \
         {inert} past the live frames",
        positions.len()
    );
    assert!(detected > 0 && inert > 0);
}
