//! Crash test: a child process appends as fast as it can and is killed with SIGKILL at random
//! moments, 100 times. After every kill the log must reopen, verify against its signed
//! checkpoint, and contain every entry the child acknowledged, byte for byte. The acknowledgement
//! is the WAL frame's `fdatasync`, so most reopens recover entries by replaying WAL frames (a
//! kill during a frame write leaves a torn, unacknowledged last frame, which is dropped).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use incentive_ledger::identity::Keypair;
use incentive_ledger::log::Log;
use sha2::{Digest, Sha256};

const CHILD_ENV: &str = "LEDGER_CRASH_CHILD_DIR";

fn key() -> Keypair {
    Keypair::from_seed([42; 32])
}

/// Entry `i`: ~200 deterministic bytes, so the parent can check content, not just counts.
fn entry(i: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(200);
    out.extend_from_slice(&i.to_be_bytes());
    let mut h: [u8; 32] = Sha256::digest(i.to_be_bytes()).into();
    while out.len() < 200 {
        out.extend_from_slice(&h);
        h = Sha256::digest(h).into();
    }
    out.truncate(200);
    out
}

/// Child half: run by the parent via `--ignored --exact`; never meaningful on its own.
#[test]
#[ignore = "child process of crash_kill9_100_times"]
fn crash_child_appender() {
    let dir = std::env::var(CHILD_ENV).expect("run by the crash test");
    let k = key();
    let op = k.public();
    let mut log = Log::open(Path::new(&dir), Some(&op), Some(k), &mut |_, _| Ok(())).unwrap();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut n = log.len();
    writeln!(out, "ready {n}").unwrap();
    out.flush().unwrap();
    loop {
        // Mostly single appends and small batches; now and then a batch of 300 (a 60 KiB
        // frame, so a kill can land inside a large frame write).
        let batch = if n % 13 == 3 { 300 } else { 1 + (n % 4) };
        let entries: Vec<Vec<u8>> = (n..n + batch).map(entry).collect();
        let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        log.append(&refs).unwrap();
        n += batch;
        // Acknowledge only after append returned (durable + checkpoint written).
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn crash_kill9_100_times() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("ledger");
    drop(Log::create(&d, "crash-test", key()).unwrap());
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut rng: u64 = 0x1234_5678;
    let mut max_acked = 0u64;
    let mut kills_after_ack = 0;
    let mut kills_while_appending = 0;
    let mut rounds_replaying_wal = 0;
    for round in 0..100 {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child_appender",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &d)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait_ms = (rng >> 33) % 60;
        // A reader thread forwards the child's lines, so the parent can time the kill from
        // the moment the child is appending (on a loaded machine start-up alone takes longer
        // than any fixed delay). Every tenth kill lands blind, possibly during open/recovery.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut acked = 0u64;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line
                    .strip_prefix("ack ")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    acked = n;
                }
                let _ = tx.send(line);
            }
            acked
        });
        let mut ready = false;
        if round % 10 != 9 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                if line.contains("ready ") {
                    ready = true;
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        if acked > 0 {
            kills_after_ack += 1;
        }
        if ready {
            kills_while_appending += 1;
        }
        max_acked = max_acked.max(acked);
        let log = Log::open(&d, Some(&key().public()), None, &mut |i, b| {
            assert_eq!(
                b,
                entry(i).as_slice(),
                "round {round}: entry {i} differs after crash"
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        if log.store().recovered_frames() > 0 {
            rounds_replaying_wal += 1;
        }
        assert!(
            log.len() >= max_acked,
            "round {round}: {} entries after crash, {max_acked} were acknowledged",
            log.len()
        );
        assert!(log.checkpoint().size >= max_acked);
    }
    eprintln!(
        "crash test: 100 kills ({kills_while_appending} while appending, {kills_after_ack} after at least one ack, {rounds_replaying_wal} reopens replayed WAL frames), {max_acked} entries acknowledged, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        kills_while_appending >= 80,
        "too few kills landed while appending"
    );
    assert!(
        kills_after_ack >= 30 && max_acked >= 100,
        "too few acknowledged appends"
    );
    // Acknowledged entries must have come back through WAL recovery, not only through a
    // database that happened to be durable already.
    assert!(
        rounds_replaying_wal >= 30,
        "only {rounds_replaying_wal} reopens had WAL frames to replay"
    );
}
