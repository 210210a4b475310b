//! `ledger`: command-line front end of the incentive ledger.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use incentive_ledger::codec::{hex, unhex};
use incentive_ledger::identity::{Keypair, PublicKey};
use incentive_ledger::ledger::{Ledger, verify_dir};
use incentive_ledger::merkle::verify_inclusion;
use incentive_ledger::record::{Genesis, SignedMessage};
use incentive_ledger::{Error, Result};

#[derive(Parser)]
#[command(
    name = "ledger",
    version,
    about = "MAGNET incentive ledger: signed contributions, Merkle log, rewards"
)]
struct Cli {
    /// Print the result as one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate an Ed25519 key file (mode 0600) and print the public key.
    Keygen {
        /// Key file to create (never overwritten).
        out: PathBuf,
    },
    /// Create a new ledger in DIR operated by KEY.
    Init {
        /// Ledger directory.
        dir: PathBuf,
        /// Operator key file.
        #[arg(long)]
        key: PathBuf,
        /// Ledger name bound into every message.
        #[arg(long, default_value = "magnet")]
        origin: String,
        /// Units minted in round 1.
        #[arg(long, default_value_t = 1_000_000)]
        initial_emission: u64,
        /// Rounds between halvings.
        #[arg(long, default_value_t = 100)]
        halving_rounds: u64,
        /// Total emission cap.
        #[arg(long, default_value_t = 400_000_000)]
        cap: u64,
        /// Sketch overlap (ppm) from which a later contribution is a copy.
        #[arg(long, default_value_t = 600_000)]
        copy_threshold_ppm: u32,
        /// Hex SHA-256 of the round-1 base model.
        #[arg(long)]
        base_model: Option<String>,
    },
    /// Print the checkpoint, rounds, registrations and entries.
    Show {
        /// Ledger directory.
        dir: PathBuf,
        /// Also list every entry.
        #[arg(long)]
        entries: bool,
    },
    /// Print balances.
    Balances {
        /// Ledger directory.
        dir: PathBuf,
    },
    /// Print (and check) the inclusion proof of entry INDEX against the signed checkpoint.
    Proof {
        /// Ledger directory.
        dir: PathBuf,
        /// Entry index.
        index: u64,
    },
    /// Verify every signature, the Merkle root against the signed checkpoint, and replay all
    /// settlements; reports the first thing that does not hold.
    Verify {
        /// Ledger directory.
        dir: PathBuf,
        /// Pin the operator's public key (hex).
        #[arg(long)]
        operator: Option<String>,
    },
    /// Simulate a few rounds into a new ledger DIR.
    Demo {
        /// Ledger directory to create.
        dir: PathBuf,
        /// Seed (same seed, same log entries and balances).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Rounds to simulate.
        #[arg(long, default_value_t = 3)]
        rounds: u64,
    },
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("a JSON value serializes")
    );
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    match cli.cmd {
        Cmd::Keygen { out } => {
            let k = Keypair::generate();
            k.save(&out)?;
            if json {
                print_json(&serde_json::json!({
                    "public_key": k.public().to_string(),
                    "key_file": out.display().to_string(),
                }));
            } else {
                println!("{}", k.public());
            }
        }
        Cmd::Init {
            dir,
            key,
            origin,
            initial_emission,
            halving_rounds,
            cap,
            copy_threshold_ppm,
            base_model,
        } => {
            let k = Keypair::load(&key)?;
            let base_model = match base_model {
                Some(h) => unhex::<32>(&h)?,
                None => [0; 32],
            };
            let l = Ledger::create(
                &dir,
                &origin,
                k,
                Genesis {
                    base_model,
                    initial_emission,
                    halving_rounds,
                    cap,
                    copy_threshold_ppm,
                },
            )?;
            if json {
                print_json(&serde_json::json!({
                    "origin": l.origin(),
                    "dir": dir.display().to_string(),
                }));
            } else {
                println!("created ledger `{}` in {}", l.origin(), dir.display());
            }
        }
        Cmd::Show { dir, entries } if json => {
            let l = Ledger::open(&dir, None, None)?;
            let s = l.state();
            let cp = l.log().checkpoint();
            let mut listed = Vec::new();
            if entries {
                for i in 0..l.log().len() {
                    let sm = SignedMessage::from_bytes(&l.log().get(i)?)?;
                    listed.push(serde_json::json!({
                        "index": i,
                        "kind": sm.msg.body.kind(),
                        "round": sm.msg.round,
                        "seq": sm.msg.seq,
                        "signer": sm.msg.signer.to_string(),
                        "id": sm.short_id(),
                    }));
                }
            }
            print_json(&serde_json::json!({
                "checkpoint": { "size": cp.size, "root": hex(&cp.root) },
                "entries": l.log().len(),
                "open_round": s.round,
                "emitted": s.emitted,
                "registered": s.registry.iter().map(|(k, (role, stake))| serde_json::json!({
                    "key": k.to_string(), "role": role.name(), "stake": stake,
                })).collect::<Vec<_>>(),
                "rounds": s.history.iter().map(|r| serde_json::json!({
                    "round": r.round,
                    "emission": r.emission,
                    "outcomes": r.outcomes.iter().map(|o| serde_json::json!({
                        "contribution": hex(&o.id),
                        "worker": o.worker.to_string(),
                        "consensus": o.consensus.map(|c| format!("{c:?}")),
                        "slash": o.slash.map(|r| r.to_string()),
                        "reward": o.reward,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "log": listed,
            }));
        }
        Cmd::Show { dir, entries } => {
            let l = Ledger::open(&dir, None, None)?;
            let s = l.state();
            print!("{}", l.log().checkpoint().to_note());
            println!();
            println!(
                "entries {}  open round {}  emitted {}",
                l.log().len(),
                s.round,
                s.emitted
            );
            for (k, (role, stake)) in &s.registry {
                println!("registered {} {:<10} stake {stake}", k, role.name());
            }
            for r in &s.history {
                println!("round {}: emission {}", r.round, r.emission);
                for o in &r.outcomes {
                    println!(
                        "  contribution {} by {}: consensus {} slash {} reward {}",
                        hex(&o.id[..6]),
                        o.worker.short(),
                        o.consensus.map_or("no quorum".into(), |c| format!("{c:?}")),
                        o.slash.map_or("none".into(), |r| r.to_string()),
                        o.reward
                    );
                }
            }
            if entries {
                for i in 0..l.log().len() {
                    let sm = SignedMessage::from_bytes(&l.log().get(i)?)?;
                    println!(
                        "{i:>6} {:<13} round {:>3} seq {:>4} signer {} id {}",
                        sm.msg.body.kind(),
                        sm.msg.round,
                        sm.msg.seq,
                        sm.msg.signer.short(),
                        sm.short_id()
                    );
                }
            }
        }
        Cmd::Balances { dir } => {
            let l = Ledger::open(&dir, None, None)?;
            let s = l.state();
            if json {
                print_json(&serde_json::json!({
                    "balances": s.balances.iter().map(|(k, b)| serde_json::json!({
                        "key": k.to_string(),
                        "role": s.registry.get(k).map(|r| r.0.name()),
                        "balance": b,
                    })).collect::<Vec<_>>(),
                    "total": s.balances.values().sum::<u64>(),
                }));
                return Ok(());
            }
            for (k, b) in &s.balances {
                let role = s.registry.get(k).map_or("?", |r| r.0.name());
                println!("{k} {role:<10} {b}");
            }
            println!("total {}", s.balances.values().sum::<u64>());
        }
        Cmd::Proof { dir, index } => {
            let l = Ledger::open(&dir, None, None)?;
            let (leaf, proof) = l.log().inclusion_proof(index)?;
            let cp = l.log().checkpoint();
            verify_inclusion(&leaf, index, cp.size, &proof, &cp.root)?;
            if json {
                print_json(&serde_json::json!({
                    "index": index,
                    "leaf": hex(&leaf),
                    "tree_size": cp.size,
                    "root": hex(&cp.root),
                    "proof": proof.iter().map(|h| hex(h)).collect::<Vec<_>>(),
                    "verified": true,
                }));
                return Ok(());
            }
            println!("leaf {index} hash {}", hex(&leaf));
            println!("tree size {} root {}", cp.size, hex(&cp.root));
            for (i, h) in proof.iter().enumerate() {
                println!("proof[{i}] {}", hex(h));
            }
            println!("inclusion proof verifies against the signed checkpoint");
        }
        Cmd::Verify { dir, operator } => {
            let pinned = operator
                .map(|h| unhex::<32>(&h).map(PublicKey))
                .transpose()?;
            let r = verify_dir(&dir, pinned.as_ref())?;
            if json {
                print_json(&serde_json::json!({
                    "ok": true,
                    "entries": r.entries,
                    "signatures": r.signatures,
                    "checkpoint_size": r.checkpoint_size,
                    "settlements": r.settlements,
                    "total_balance": r.total_balance,
                }));
                return Ok(());
            }
            println!(
                "OK: {} entries, {} strict signatures, checkpoint covers {}, {} settlements replayed, total balance {}",
                r.entries, r.signatures, r.checkpoint_size, r.settlements, r.total_balance
            );
        }
        Cmd::Demo { dir, seed, rounds } => {
            let s = incentive_ledger::demo::run_demo(&dir, seed, rounds)?;
            if json {
                print_json(&serde_json::json!({
                    "rounds": s.rounds,
                    "entries": s.entries,
                    "slashes": s.slashes,
                    "dir": dir.display().to_string(),
                    "balances": s.balances.iter().map(|(k, b)| serde_json::json!({
                        "key": k.to_string(), "balance": b,
                    })).collect::<Vec<_>>(),
                }));
                return Ok(());
            }
            println!(
                "demo: {} rounds, {} entries, {} slashes in {}",
                s.rounds,
                s.entries,
                s.slashes,
                dir.display()
            );
            for (k, b) in &s.balances {
                println!("balance {k} {b}");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let prefix = if matches!(e, Error::Integrity(_) | Error::Rejected(_)) {
                "VERIFY FAILED"
            } else {
                "error"
            };
            eprintln!("{prefix}: {e}");
            ExitCode::FAILURE
        }
    }
}
