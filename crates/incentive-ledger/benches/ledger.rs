//! `cargo xtask bench ledger`: durable appends (single and batched, ~200-byte records) against
//! SQLite WAL + synchronous=FULL in the same run, verified ingest, signature verification
//! (single, batch, batch on all cores) and proof generation for 10^6 leaves. Writes
//! `$MAGNET_BENCH_OUT/ledger.json`.

use std::path::Path;
use std::time::Instant;

use incentive_ledger::identity::{Keypair, SigItem, verify_many, verify_strict};
use incentive_ledger::ledger::Ledger;
use incentive_ledger::log::Log;
use incentive_ledger::merkle::{MerkleTree, verify_consistency, verify_inclusion};
use incentive_ledger::record::{Body, Contribution, Genesis, Message, Role, SignedMessage};
use incentive_ledger::store::{RedbStore, Store};
use serde_json::json;

fn record(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; 200];
    v[..8].copy_from_slice(&i.to_be_bytes());
    for (j, b) in v[8..].iter_mut().enumerate() {
        *b = (i as usize * 31 + j) as u8;
    }
    v
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Rate over `reps` repetitions of `n` operations each; returns the median ops/s.
fn rate(reps: usize, n: u64, mut f: impl FnMut(usize)) -> f64 {
    let v: Vec<f64> = (0..reps)
        .map(|r| {
            let t = Instant::now();
            f(r);
            n as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    median(v)
}

fn log_appends(dir: &Path, batch: u64, batches: u64) -> f64 {
    let d = dir.join(format!("log-{batch}"));
    let mut log = Log::create(&d, "bench", Keypair::from_seed([1; 32])).unwrap();
    let mut next = 0u64;
    rate(3, batch * batches, |_| {
        for _ in 0..batches {
            let recs: Vec<Vec<u8>> = (next..next + batch).map(record).collect();
            let refs: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
            log.append(&refs).unwrap();
            next += batch;
        }
    })
}

fn store_appends(dir: &Path, batch: u64, batches: u64) -> f64 {
    let mut s = RedbStore::open(&dir.join(format!("store-{batch}.redb"))).unwrap();
    let mut next = 0u64;
    rate(3, batch * batches, |_| {
        for _ in 0..batches {
            let recs: Vec<Vec<u8>> = (next..next + batch).map(record).collect();
            let refs: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
            s.append(&refs).unwrap();
            next += batch;
        }
    })
}

fn sqlite_appends(dir: &Path, batch: u64, batches: u64) -> f64 {
    let c = rusqlite::Connection::open(dir.join(format!("sqlite-{batch}.db"))).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "FULL").unwrap();
    c.execute(
        "CREATE TABLE entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL)",
        [],
    )
    .unwrap();
    let mut next = 0u64;
    let mut c = c;
    rate(3, batch * batches, |_| {
        for _ in 0..batches {
            let tx = c.transaction().unwrap();
            {
                let mut st = tx
                    .prepare_cached("INSERT INTO entries (idx, data) VALUES (?1, ?2)")
                    .unwrap();
                for i in next..next + batch {
                    st.execute(rusqlite::params![i as i64, record(i)]).unwrap();
                }
            }
            tx.commit().unwrap();
            next += batch;
        }
    })
}

fn signed_set(n: usize) -> (Vec<Keypair>, Vec<Vec<u8>>, Vec<[u8; 64]>) {
    let keys: Vec<Keypair> = (0..n)
        .map(|i| Keypair::from_seed([(i % 251) as u8 + 1; 32]))
        .collect();
    let msgs: Vec<Vec<u8>> = (0..n).map(|i| record(i as u64)).collect();
    let sigs = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
    (keys, msgs, sigs)
}

fn verified_ingest(dir: &Path, n: usize) -> f64 {
    let op = Keypair::from_seed([9; 32]);
    let mut l = Ledger::create(
        &dir.join("ingest"),
        "bench",
        op.clone(),
        Genesis {
            base_model: [0; 32],
            initial_emission: 1000,
            halving_rounds: 10,
            cap: 1_000_000,
            copy_threshold_ppm: 1_000_000,
        },
    )
    .unwrap();
    let workers: Vec<Keypair> = (0..n)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&(i as u64 + 1000).to_be_bytes());
            Keypair::from_seed(s)
        })
        .collect();
    // Registration is setup, not measured.
    let regs: Vec<SignedMessage> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            Message {
                origin: "bench".into(),
                signer: op.public(),
                seq: 2 + i as u64,
                round: 1,
                body: Body::Registration(incentive_ledger::record::Registration {
                    key: w.public(),
                    role: Role::Worker,
                    stake: 0,
                }),
            }
            .sign(&op)
        })
        .collect();
    for chunk in regs.chunks(500) {
        for r in l.submit_batch(chunk).unwrap() {
            r.unwrap();
        }
    }
    let contribs: Vec<SignedMessage> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            Message {
                origin: "bench".into(),
                signer: w.public(),
                seq: 1,
                round: 1,
                body: Body::Contribution(Contribution {
                    parent_model: [0; 32],
                    artifact: [i as u8; 32],
                    artifact_size: 1 << 20,
                    metrics: vec![],
                    sketch: vec![i as u32],
                }),
            }
            .sign(w)
        })
        .collect();
    let t = Instant::now();
    for chunk in contribs.chunks(100) {
        for r in l.submit_batch(chunk).unwrap() {
            r.unwrap();
        }
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let out_dir = std::env::var("MAGNET_BENCH_OUT").unwrap_or_else(|_| "target/bench".into());
    std::fs::create_dir_all(&out_dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);

    eprintln!("durable appends ...");
    let log_single = log_appends(dir, 1, 100);
    let log_batched = log_appends(dir, 100, 20);
    let store_single = store_appends(dir, 1, 100);
    let store_batched = store_appends(dir, 100, 20);
    let sqlite_single = sqlite_appends(dir, 1, 100);
    let sqlite_batched = sqlite_appends(dir, 100, 20);

    eprintln!("signatures ...");
    let n = 4096;
    let (keys, msgs, sigs) = signed_set(n);
    let pubs: Vec<_> = keys.iter().map(Keypair::public).collect();
    let single = rate(3, n as u64, |_| {
        for i in 0..n {
            verify_strict(&pubs[i], &msgs[i], &sigs[i]).unwrap();
        }
    });
    let items: Vec<SigItem<'_>> = (0..n)
        .map(|i| SigItem {
            key: &pubs[i],
            msg: &msgs[i],
            sig: &sigs[i],
        })
        .collect();
    let batch_1t = rate(3, n as u64, |_| {
        assert!(verify_many(&items).iter().all(Result::is_ok));
    });
    let batch_all = rate(3, n as u64, |_| {
        std::thread::scope(|s| {
            let per = n.div_ceil(cores);
            let hs: Vec<_> = items
                .chunks(per)
                .map(|c| s.spawn(move || verify_many(c).iter().all(Result::is_ok)))
                .collect();
            assert!(hs.into_iter().all(|h| h.join().unwrap()));
        });
    });

    eprintln!("verified ingest ...");
    let ingest = verified_ingest(dir, 2000);

    eprintln!("proofs over 10^6 leaves ...");
    let t = Instant::now();
    let mut tree = MerkleTree::new();
    for i in 0..1_000_000u64 {
        tree.push_data(&i.to_be_bytes());
    }
    let build_s = t.elapsed().as_secs_f64();
    let size = tree.len();
    let root = tree.root();
    let mut incl = Vec::new();
    let mut cons = Vec::new();
    let mut x = 12345u64;
    for _ in 0..1000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        let idx = (x >> 11) % size;
        let t = Instant::now();
        let p = tree.inclusion_proof(idx, size).unwrap();
        incl.push(t.elapsed().as_secs_f64() * 1e6);
        verify_inclusion(&tree.leaf(idx).unwrap(), idx, size, &p, &root).unwrap();
        let old = 1 + idx;
        let t = Instant::now();
        let c = tree.consistency_proof(old, size).unwrap();
        cons.push(t.elapsed().as_secs_f64() * 1e6);
        verify_consistency(old, size, &tree.root_at(old).unwrap(), &root, &c).unwrap();
    }
    let incl_us = median(incl);
    let cons_us = median(cons);

    let report = json!({
        "area": "ledger",
        "machine": { "cores": cores },
        "record_bytes": 200,
        "durable_appends": {
            "log_single_per_s": log_single,
            "log_batch100_per_s": log_batched,
            "redb_store_single_per_s": store_single,
            "redb_store_batch100_per_s": store_batched,
            "note": "log = redb commit (Durability::Immediate, 2-phase) + signed checkpoint file (fsync, rename, dir fsync) per append call"
        },
        "baseline_sqlite_wal_full": {
            "single_per_s": sqlite_single,
            "batch100_per_s": sqlite_batched
        },
        "signatures": {
            "verify_strict_per_s": single,
            "batch_1_thread_per_s": batch_1t,
            "batch_all_cores_per_s": batch_all,
            "cores": cores
        },
        "verified_ingest_per_s": ingest,
        "proofs_1e6_leaves": {
            "tree_build_s": build_s,
            "inclusion_proof_median_us": incl_us,
            "consistency_proof_median_us": cons_us
        },
        "summary": {
            "durable_appends_per_s_batched": log_batched,
            "sqlite_appends_per_s_batched": sqlite_batched,
            "verified_ingest_per_s": ingest,
            "verifies_per_s_batch": batch_all
        }
    });
    let path = Path::new(&out_dir).join("ledger.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    eprintln!("wrote {}", path.display());
}
