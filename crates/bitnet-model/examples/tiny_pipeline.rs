//! The Genkidama recipe with the library alone (no CLI dependencies): corpus look-up,
//! tokenizer + shards, the ternary `tiny` model and its full-precision twin at equal steps,
//! validation, one JSON summary line. `genkidama run` is the full front end.
//!
//! ```text
//! cargo run --release -p bitnet-model --example tiny_pipeline -- [STEPS] [OUT_DIR]
//! # OUT_DIR defaults to ./runs/tiny-pipeline
//! # OUT_DIR defaults to ./runs/tiny-pipeline
//! ```

use bitnet_model::data::{TokenData, find_corpus, prepare_dataset};
use bitnet_model::train::{TrainConfig, Trainer, fit};
use bitnet_model::{ModelConfig, WeightKind};
use burn::tensor::Device;
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(300);
    let out = args
        .get(1)
        .map_or_else(|| PathBuf::from("runs/tiny-pipeline"), PathBuf::from);
    let corpus = find_corpus(None)?
        .ok_or("no corpus found: set MAGNET_CORPUS (this build has no shipped corpus)")?;
    eprintln!("corpus {} ({})", corpus.dir.display(), corpus.source);
    let model = ModelConfig::preset("tiny")?;
    let data_dir = out.join("data");
    let info = prepare_dataset(&corpus.dir, &data_dir, model.vocab_size, 1234, &mut |m| {
        eprintln!("{m}");
    })?;
    let data = TokenData::open(&data_dir)?;
    let mut summary = serde_json::json!({"steps": steps, "train_tokens": info.train_tokens, "val_tokens": info.val_tokens});
    for kind in [WeightKind::Ternary, WeightKind::FullPrecision] {
        let config = if kind == WeightKind::Ternary {
            model.clone()
        } else {
            model.full_precision_twin()
        };
        let lr = if kind == WeightKind::Ternary {
            4e-3
        } else {
            2e-3
        };
        let train = TrainConfig {
            steps,
            batch_size: 8,
            seq_len: 128,
            warmup_steps: 20,
            lr,
            lr_stage1_end: lr * 0.6,
            lr_stage2: lr * 0.4,
            lr_final: lr * 0.04,
            eval_every: 50,
            eval_windows: 32,
            ..TrainConfig::default()
        };
        let name = if kind == WeightKind::Ternary {
            "ternary"
        } else {
            "fp"
        };
        let mut trainer = Trainer::new(config, train, data.clone(), &Device::flex())?;
        let report = fit(&mut trainer, &out.join(name), &mut |e| {
            if let bitnet_model::train::Event::Eval { step, stats } = e {
                eprintln!(
                    "{name} step {step}: val {:.4} ({:.4} bpb)",
                    stats.loss, stats.bpb
                );
            }
        })?;
        summary[name] = serde_json::json!({
            "val_loss": report.final_eval.loss,
            "val_bpb": report.final_eval.bpb,
            "tokens_per_s": report.tokens_per_s,
            "wall_s": report.wall_s,
        });
    }
    summary["wall_s"] = serde_json::json!(start.elapsed().as_secs_f64());
    println!("{summary}");
    Ok(())
}
