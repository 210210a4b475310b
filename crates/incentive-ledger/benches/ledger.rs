//! `cargo xtask bench ledger`: durable appends (single and batched, ~200-byte records) against
//! SQLite WAL + synchronous=FULL in the same run (interleaved rounds), verified ingest, signature
//! verification (`verify_strict`, our hinted batch on 1 thread and on rayon's pool, dalek's
//! `verify_batch` for reference) and proof generation for 10^6 leaves. Records the load average.
//! Writes `$MAGNET_BENCH_OUT/ledger.json`.

use std::path::Path;
use std::time::Instant;

use incentive_ledger::identity::{
    BATCH_CHUNK, KeyCache, Keypair, PublicKey, SigItem, r_hint, verify_many, verify_strict,
};
use incentive_ledger::ledger::Ledger;
use incentive_ledger::log::{Log, SidePolicy};
use incentive_ledger::merkle::{MerkleTree, verify_consistency, verify_inclusion};
use incentive_ledger::record::{Body, Contribution, Genesis, Message, Role, SignedMessage};
use serde_json::json;

fn record(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; 200];
    v[..8].copy_from_slice(&i.to_be_bytes());
    for (j, b) in v[8..].iter_mut().enumerate() {
        *b = (i as usize * 31 + j) as u8;
    }
    v
}

/// `/proc/loadavg`'s three load averages, so every result says how busy the machine was.
fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// This process's user + system CPU time in seconds (`/proc/self/stat`, 100 Hz ticks). On a
/// shared machine, operations per CPU-second show what a core does when it is really ours.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

/// CPU time of the main thread in seconds, with nanosecond resolution (`/proc/self/schedstat`,
/// first field): fine enough for 100 ms rounds, where the 10 ms ticks of [`cpu_seconds`] are
/// not. Both append systems do their work on this thread.
fn main_thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |ns| ns / 1e9)
}

/// Operations per CPU-second of `reps × n` operations (see [`cpu_seconds`]).
fn per_cpu_second(reps: usize, n: u64, mut f: impl FnMut()) -> f64 {
    let c = cpu_seconds();
    for _ in 0..reps {
        f();
    }
    (reps as u64 * n) as f64 / (cpu_seconds() - c).max(0.01)
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

/// A system under test for durable appends: `append(first, n)` durably stores records
/// `first..first + n` in one transaction.
trait Appender {
    fn append(&mut self, first: u64, n: u64);
}

struct OurLog(Log);

impl Appender for OurLog {
    fn append(&mut self, first: u64, n: u64) {
        let recs: Vec<Vec<u8>> = (first..first + n).map(record).collect();
        let refs: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
        self.0.append(&refs).unwrap();
    }
}

struct Sqlite(rusqlite::Connection);

impl Sqlite {
    fn open(path: &Path) -> Self {
        let c = rusqlite::Connection::open(path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.pragma_update(None, "synchronous", "FULL").unwrap();
        c.execute(
            "CREATE TABLE entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL)",
            [],
        )
        .unwrap();
        Self(c)
    }
}

impl Appender for Sqlite {
    fn append(&mut self, first: u64, n: u64) {
        let tx = self.0.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached("INSERT INTO entries (idx, data) VALUES (?1, ?2)")
                .unwrap();
            for i in first..first + n {
                st.execute(rusqlite::params![i as i64, record(i)]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
}

/// Appends/s of each system over `rounds` rounds of `calls` append calls of `batch` records
/// each: `(median of the per-round rates, all records / all time, all records / main-thread
/// CPU-seconds while the system ran)`. The second includes every round's stalls (our WAL
/// absorptions, SQLite's checkpoints) at their real weight; the third is what the system costs
/// in CPU when the disk is not the limit. The systems
/// take turns inside every round (in rotating order), so a change in disk or CPU load hits all of
/// them.
fn interleaved(
    systems: &mut [&mut dyn Appender],
    batch: u64,
    calls: u64,
    rounds: usize,
) -> Vec<(f64, f64, f64)> {
    let mut next = vec![0u64; systems.len()];
    let mut rates = vec![Vec::new(); systems.len()];
    let mut secs = vec![0f64; systems.len()];
    let mut cpu = vec![0f64; systems.len()];
    let m = systems.len();
    for r in 0..rounds {
        // Rotate who goes first, so no system always follows the same neighbour's writeback.
        for k in (r..r + m).map(|k| k % m) {
            let s = &mut systems[k];
            let (t, c) = (Instant::now(), main_thread_cpu_seconds());
            for _ in 0..calls {
                s.append(next[k], batch);
                next[k] += batch;
            }
            let dt = t.elapsed().as_secs_f64();
            secs[k] += dt;
            cpu[k] += main_thread_cpu_seconds() - c;
            rates[k].push((batch * calls) as f64 / dt);
        }
    }
    let total = (batch * calls * rounds as u64) as f64;
    rates
        .into_iter()
        .zip(secs)
        .zip(cpu)
        .map(|((r, t), c)| (median(r), total / t, total / c.max(0.01)))
        .collect()
}

fn our_log(dir: &Path, name: &str, policy: SidePolicy) -> OurLog {
    let mut log = Log::create(&dir.join(name), "bench", Keypair::from_seed([1; 32])).unwrap();
    log.set_side_policy(policy);
    OurLog(log)
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
    for chunk in contribs.chunks(256) {
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
    let load_start = load_avg();

    eprintln!("durable appends ...");
    let mut ours = our_log(dir, "log-batch", SidePolicy::default());
    let mut ours_every = our_log(dir, "log-batch-every", SidePolicy::EVERY_APPEND);
    let mut sq = Sqlite::open(&dir.join("sqlite-batch.db"));
    // 20 rounds × 20 calls × 100 records: about 8 MiB of WAL frames, so the measured time holds
    // at least one absorption of our 4 MiB WAL into redb (and several SQLite checkpoints).
    let batched = interleaved(&mut [&mut ours, &mut sq, &mut ours_every], 100, 20, 20);
    let (
        (log_batched, log_batched_all, log_batched_cpu),
        (sqlite_batched, sqlite_batched_all, sqlite_batched_cpu),
    ) = (batched[0], batched[1]);
    let log_batched_every = batched[2].0;
    let absorptions = ours.0.store().durable_commits();
    let mut ours = our_log(dir, "log-single", SidePolicy::default());
    let mut sq = Sqlite::open(&dir.join("sqlite-single.db"));
    let single = interleaved(&mut [&mut ours, &mut sq], 1, 100, 3);
    let (log_single, sqlite_single) = (single[0].0, single[1].0);

    eprintln!("signatures ...");
    let n = 4096;
    let (keys, msgs, sigs) = signed_set(n);
    let pubs: Vec<_> = keys.iter().map(Keypair::public).collect();
    let t = Instant::now();
    let hints: Vec<[u8; 32]> = sigs.iter().map(|s| r_hint(s).unwrap()).collect();
    let hint_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
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
            hint: Some(&hints[i]),
        })
        .collect();
    // Registered keys are parsed once (KeyCache); the first call warms it and is not timed.
    let mut cache = KeyCache::default();
    assert!(verify_many(&items, &mut cache).iter().all(Result::is_ok));
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let batch_1t = one_thread.install(|| {
        rate(3, n as u64, |_| {
            assert!(verify_many(&items, &mut cache).iter().all(Result::is_ok));
        })
    });
    let strict_cpu = per_cpu_second(1, n as u64, || {
        for i in 0..n {
            verify_strict(&pubs[i], &msgs[i], &sigs[i]).unwrap();
        }
    });
    let batch_cpu = one_thread.install(|| {
        per_cpu_second(5, n as u64, || {
            assert!(verify_many(&items, &mut cache).iter().all(Result::is_ok));
        })
    });
    let batch_all = rate(5, n as u64, |_| {
        assert!(verify_many(&items, &mut cache).iter().all(Result::is_ok));
    });
    // dalek's own verify_batch (cofactorless, no torsion protection; see docs/ledger.md), one
    // thread, chunks of BATCH_CHUNK: the reference point for our sound equation.
    let vks: Vec<_> = pubs
        .iter()
        .map(|p| PublicKey::parse(p.0).unwrap())
        .collect();
    let dsigs: Vec<_> = sigs
        .iter()
        .map(ed25519_dalek::Signature::from_bytes)
        .collect();
    let dalek_1t = rate(3, n as u64, |_| {
        for c in (0..n).collect::<Vec<_>>().chunks(BATCH_CHUNK) {
            let m: Vec<&[u8]> = c.iter().map(|&i| msgs[i].as_slice()).collect();
            let s: Vec<_> = c.iter().map(|&i| dsigs[i]).collect();
            let k: Vec<_> = c.iter().map(|&i| vks[i]).collect();
            ed25519_dalek::verify_batch(&m, &s, &k).unwrap();
        }
    });

    eprintln!("verified ingest ...");
    let ingest = verified_ingest(dir, 4096);

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
        "load_average_at_end": load_avg(),
        "record_bytes": 200,
        "load_average_at_start": load_start,
        "durable_appends": {
            "log_single_per_s": log_single,
            "log_batch100_per_s": log_batched_all,
            "log_batch100_median_round_per_s": log_batched,
            "log_batch100_side_file_every_append_per_s": log_batched_every,
            "log_batch100_wal_absorptions": absorptions,
            "log_batch100_per_cpu_second": log_batched_cpu,
            "note": "one WAL frame + fdatasync per append (the acknowledgement), then a redb commit with Durability::None; the 4 MiB WAL is absorbed by a durable redb commit when full (counted in log_batch100_wal_absorptions, inside the measured time); side checkpoint file refreshed on a background thread every 1 s / 10k entries (default) or inside every append; 20 (batched) / 3 (single) interleaved rounds of 20 / 100 calls in rotating order; *_per_s = all records / all time, *_median_round_per_s = median round"
        },
        "baseline_sqlite_wal_full": {
            "single_per_s": sqlite_single,
            "batch100_per_s": sqlite_batched_all,
            "batch100_median_round_per_s": sqlite_batched,
            "batch100_per_cpu_second": sqlite_batched_cpu
        },
        "ratio_ours_to_sqlite_batched": log_batched_all / sqlite_batched_all,
        "ratio_ours_to_sqlite_batched_median_rounds": log_batched / sqlite_batched,
        "signatures": {
            "verify_strict_per_s": single,
            "batch_hinted_1_thread_per_s": batch_1t,
            "batch_hinted_all_cores_per_s": batch_all,
            "dalek_verify_batch_1_thread_per_s": dalek_1t,
            "r_hint_signer_cost_us": hint_us,
            "verify_strict_per_cpu_second": strict_cpu,
            "batch_hinted_per_cpu_second": batch_cpu,
            "per_cpu_second_note": "operations per second of this process's own CPU time (/proc/self/stat): what one core does when no other process takes it",
            "batch_chunk": BATCH_CHUNK,
            "cores": cores,
            "rayon_threads": rayon::current_num_threads()
        },
        "verified_ingest_per_s": ingest,
        "verified_ingest_note": "submit_batch of 256 signed contributions: hinted batch verification over rayon, admission, one durable commit",
        "proofs_1e6_leaves": {
            "tree_build_s": build_s,
            "inclusion_proof_median_us": incl_us,
            "consistency_proof_median_us": cons_us
        },
        "summary": {
            "durable_appends_per_s_batched": log_batched_all,
            "sqlite_appends_per_s_batched": sqlite_batched_all,
            "verified_ingest_per_s": ingest,
            "verifies_per_s_batch": batch_all
        }
    });
    let path = Path::new(&out_dir).join("ledger.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    eprintln!("wrote {}", path.display());
}
