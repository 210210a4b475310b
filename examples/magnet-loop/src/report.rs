//! `report.json` (machines) and `report.md` (people): the loss curve, bytes moved, every
//! worker's score, reward and balance per round, slashes with reasons, the verified ledger
//! and the GGUF file.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// One worker's line in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRound {
    /// Worker name (`worker0`..., `copycat`).
    pub worker: String,
    /// Short public key.
    pub key: String,
    /// First 16 hex digits of the artifact's SHA-256.
    pub artifact: String,
    /// Artifact size.
    pub artifact_bytes: u64,
    /// Largest copy-sketch overlap (ppm) with an earlier contribution of the round (the
    /// ledger slashes as copied from its genesis threshold on).
    pub max_overlap_ppm: u64,
    /// Consensus score (stake-weighted median) in ppm of relative loss improvement.
    pub score_ppm: Option<i64>,
    /// Slash reason, if slashed.
    pub slashed: Option<String>,
    /// Units paid this round.
    pub reward: u64,
    /// Balance after this round's settlement.
    pub balance: u64,
}

/// One settled round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    /// Round (1-based).
    pub round: u64,
    /// Validation loss of the global model after the round.
    pub val_loss: f64,
    /// Mean last inner training loss of the honest workers.
    pub train_loss: f64,
    /// Artifacts sent by the contributors.
    pub uplink_bytes: u64,
    /// Artifacts fetched by the validators.
    pub validator_download_bytes: u64,
    /// Outer step broadcast to the workers (f32).
    pub downlink_bytes: u64,
    /// Signed evaluations recorded.
    pub evaluations: u64,
    /// Units minted.
    pub emission: u64,
    /// Updates merged into the global model (after screening).
    pub merged: usize,
    /// Paid updates that diloco's screening still left out, with reasons.
    pub screened_out: Vec<String>,
    /// Per contributor.
    pub workers: Vec<WorkerRound>,
}

/// A recorded slash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slashed {
    /// Round.
    pub round: u64,
    /// Worker name.
    pub worker: String,
    /// `copied`, `invalid` or `non-finite`.
    pub kind: String,
    /// The ledger's reason text.
    pub reason: String,
}

/// The ledger after reopening and full verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerSummary {
    /// Directory.
    pub dir: String,
    /// Operator key (hex).
    pub operator: String,
    /// Log entries.
    pub entries: u64,
    /// Merkle root (hex).
    pub root: String,
    /// Units minted in total.
    pub emitted: u64,
    /// Entries replayed by `verify_dir`.
    pub verified_entries: u64,
    /// Signatures checked strictly.
    pub verified_signatures: u64,
    /// Size covered by the signed checkpoint.
    pub checkpoint_size: u64,
    /// Settlements replayed.
    pub settlements: u64,
    /// Sum of balances after replay.
    pub total_balance: u64,
}

/// Everything a run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `--model` as given.
    pub model: String,
    /// Parameter count.
    pub parameters: u64,
    /// Corpus directory.
    pub corpus: String,
    /// Honest workers.
    pub workers: usize,
    /// Validators.
    pub validators: usize,
    /// Whether a copycat took part.
    pub copycat: bool,
    /// Rounds.
    pub rounds: u64,
    /// Inner steps per round.
    pub inner_steps: u64,
    /// Uplink codec.
    pub codec: String,
    /// Seed.
    pub seed: u64,
    /// Which contributions were merged (`paid` or `unslashed`).
    pub merge: String,
    /// What validators measured (`alone` or `marginal`).
    pub score: String,
    /// Sketch overlap (ppm) from which the ledger slashes a contribution as copied.
    pub copy_threshold_ppm: u32,
    /// Val loss of the initial weights.
    pub initial_val_loss: f64,
    /// One entry per round.
    pub per_round: Vec<RoundReport>,
    /// Every slash.
    pub slashes: Vec<Slashed>,
    /// Final balance per worker name.
    pub final_balances: Vec<(String, u64)>,
    /// What the emission schedule mints over the run's rounds.
    pub emission_scheduled: u64,
    /// The verified ledger.
    pub ledger: LedgerSummary,
    /// Final model directory.
    pub model_dir: String,
    /// GGUF file, when the config allows a TQ2_0 export.
    pub gguf: Option<String>,
    /// Export summary or why there is none.
    pub gguf_note: String,
    /// Wall time of the run.
    pub seconds: f64,
}

/// Markdown rendering.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# magnet-loop report\n");
    let _ = writeln!(
        s,
        "Model `{}` ({} parameters), {} workers{}, {} validators, {} rounds of H = {}, codec \
         `{}`, seed {}, score `{}`, merge `{}`, copy threshold {} ppm; corpus `{}`; {:.0} s.\n",
        r.model,
        r.parameters,
        r.workers,
        if r.copycat { " + 1 copycat" } else { "" },
        r.validators,
        r.rounds,
        r.inner_steps,
        r.codec,
        r.seed,
        r.score,
        r.merge,
        r.copy_threshold_ppm,
        r.corpus,
        r.seconds
    );
    let names: Vec<&str> = r
        .per_round
        .first()
        .map(|x| x.workers.iter().map(|w| w.worker.as_str()).collect())
        .unwrap_or_default();
    let _ = write!(
        s,
        "| round | val loss | uplink B | validators B | downlink B | emission |"
    );
    for n in &names {
        let _ = write!(s, " {n} score ppm / overlap ppm / reward / balance |");
    }
    let _ = write!(s, "\n|---:|---:|---:|---:|---:|---:|");
    for _ in &names {
        let _ = write!(s, "---|");
    }
    let _ = writeln!(
        s,
        "\n| 0 | {:.4} | | | | |{}",
        r.initial_val_loss,
        " |".repeat(names.len())
    );
    for x in &r.per_round {
        let _ = write!(
            s,
            "| {} | {:.4} | {} | {} | {} | {} |",
            x.round,
            x.val_loss,
            x.uplink_bytes,
            x.validator_download_bytes,
            x.downlink_bytes,
            x.emission
        );
        for w in &x.workers {
            let score = w.score_ppm.map_or("-".into(), |p| p.to_string());
            let slash = w
                .slashed
                .as_ref()
                .map_or(String::new(), |r| format!(" (slashed: {r})"));
            let _ = write!(
                s,
                " {score} / {} / {} / {}{slash} |",
                w.max_overlap_ppm, w.reward, w.balance
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\nSlashes:\n");
    if r.slashes.is_empty() {
        let _ = writeln!(s, "- none");
    }
    for x in &r.slashes {
        let _ = writeln!(
            s,
            "- round {}: {} slashed as {} ({})",
            x.round, x.worker, x.kind, x.reason
        );
    }
    let _ = writeln!(s, "\nFinal balances:\n");
    for (n, b) in &r.final_balances {
        let _ = writeln!(s, "- {n}: {b}");
    }
    let l = &r.ledger;
    let _ = writeln!(
        s,
        "\nLedger `{}`: {} entries, root `{}`, {} units minted (schedule {}); verify_dir \
         replayed {} entries, {} signatures checked strictly, checkpoint covers {}, {} \
         settlements, balances sum to {}.\n",
        l.dir,
        l.entries,
        l.root,
        l.emitted,
        r.emission_scheduled,
        l.verified_entries,
        l.verified_signatures,
        l.checkpoint_size,
        l.settlements,
        l.total_balance
    );
    let _ = writeln!(
        s,
        "Final model: `{}`. GGUF: {} ({}).",
        r.model_dir,
        r.gguf
            .as_deref()
            .map_or("none".into(), |g| format!("`{g}`")),
        r.gguf_note
    );
    s
}

/// Writes `report.json` and `report.md` into `out`.
pub fn write(r: &Report, out: &Path) -> Result<()> {
    let (json, md) = crate::r#loop::report_paths(out);
    let text = serde_json::to_string_pretty(r).context("serializing the report")?;
    std::fs::write(&json, text).with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(&md, markdown(r)).with_context(|| format!("writing {}", md.display()))?;
    Ok(())
}
