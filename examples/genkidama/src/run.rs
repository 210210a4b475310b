//! `genkidama run`: the whole pipeline on one preset (tiny by default): corpus, tokenizer,
//! ternary training, the full-precision twin at equal steps, validation, GGUF export,
//! generated samples, and `report.json` + `report.md` + `loss.png` under `--out`.

use crate::common::{self, Backend, Embedding, Preset, WeightFormat};
use crate::train::{TrainArgs, Trained, configs, train_to};
use anyhow::Result;
use bitnet_model::data::{DatasetInfo, TextTokenizer};
use clap::Args;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

/// Options of `genkidama run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Output directory (default: ./runs/genkidama).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Model preset.
    #[arg(long, value_enum, default_value_t = Preset::Tiny)]
    pub preset: Preset,
    /// Corpus directory of UTF-8 *.txt files (else MAGNET_CORPUS, else the shipped
    /// corpus).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Optimizer steps for each model (default: the tiny schedule).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Skip the full-precision twin.
    #[arg(long)]
    pub skip_fp: bool,
    /// Train the twin after the ternary model instead of beside it (each then has both
    /// cores, so its tokens/s is its own; the run takes longer on a 2-core machine).
    #[arg(long)]
    pub sequential: bool,
    /// burn device.
    #[arg(long, value_enum, default_value_t = Backend::Flex)]
    pub device: Backend,
    /// Print report.json on stdout instead of the Markdown summary.
    #[arg(long)]
    pub json: bool,
}

/// One generated sample (filled by the export / generation step).
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Language of the prompt.
    pub language: String,
    /// Prompt.
    pub prompt: String,
    /// Generated continuation.
    pub text: String,
}

/// `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Preset trained.
    pub preset: String,
    /// Corpus directory used.
    pub corpus: String,
    /// How it was found: `--corpus`, `MAGNET_CORPUS` or `shipped`.
    pub corpus_source: String,
    /// Text fingerprint of the corpus (`magnet_corpus::Manifest::fingerprint`).
    pub corpus_fingerprint: String,
    /// CPU model and features: the numbers below are bit-identical only on the same ones
    /// (docs/genkidama.md, Reproducibility).
    pub machine: bitnet_model::train::Machine,
    /// Dataset statistics (tokens per language, keep fractions).
    pub dataset: DatasetInfo,
    /// Parameters of the model.
    pub params: usize,
    /// Optimizer steps per model.
    pub steps: usize,
    /// Tokens per optimizer step.
    pub tokens_per_step: usize,
    /// Ternary model: validation loss (nats/token).
    pub val_loss: f64,
    /// Ternary model: validation bits per byte.
    pub val_bpb: f64,
    /// Full-precision twin: validation loss at the same steps.
    pub fp_val_loss: Option<f64>,
    /// Full-precision twin: bits per byte.
    pub fp_val_bpb: Option<f64>,
    /// `val_loss - fp_val_loss` (target: within 0.15 nats).
    pub ternary_gap_nats: Option<f64>,
    /// Ternary training throughput.
    pub train_tokens_per_s: f64,
    /// Full-precision training throughput.
    pub fp_train_tokens_per_s: Option<f64>,
    /// Packed-runtime generation throughput (set by the generation step).
    pub gen_tokens_per_s: Option<f64>,
    /// Exported llama.cpp `bitnet` GGUF (TQ2_0), set by the export step.
    pub gguf_tq2_0: Option<String>,
    /// Exported bitnet.cpp GGUF (I2_S), set by the export step.
    pub gguf_i2_s: Option<String>,
    /// Generated lines per language.
    pub samples: Vec<Sample>,
    /// The trained ternary model directory (loadable by `genkidama eval`).
    pub model_dir: String,
    /// The full-precision twin's model directory.
    pub fp_model_dir: Option<String>,
    /// The loss curve.
    pub loss_png: String,
    /// Wall-clock seconds of the whole run.
    pub wall_s: f64,
}

fn train_args(args: &RunArgs, full_precision: bool, out: PathBuf) -> TrainArgs {
    TrainArgs {
        preset: args.preset,
        model_config: None,
        train_config: None,
        full_precision,
        steps: args.steps,
        batch_size: None,
        seq_len: None,
        grad_accum: None,
        lr: None,
        warmup_steps: None,
        seed: args.seed,
        eval_every: None,
        checkpoint_every: None,
        corpus: None,
        data_dir: None,
        out: Some(out),
        resume: false,
        device: args.device,
        time_budget_s: None,
        json: false,
    }
}

/// `genkidama run`.
pub fn run(args: &RunArgs) -> Result<()> {
    let start = Instant::now();
    let device = common::device(args.device.name())?;
    let out = args.out.clone().unwrap_or_else(common::default_out);
    std::fs::create_dir_all(&out)?;
    let out = std::path::absolute(&out)?;
    let found = common::corpus(args.corpus.as_deref())?;
    let corpus_fingerprint = found.fingerprint()?;
    let corpus = std::path::absolute(&found.dir)?;
    let ternary_args = train_args(args, false, out.join("ternary"));
    let (model, train) = configs(&ternary_args, None)?;
    let data_dir = out.join("data");
    let (info, data) = common::dataset(&corpus, &data_dir, model.vocab_size, train.seed)?;
    let tokenizer = TextTokenizer::load(&data_dir.join("tokenizer.json"))?;
    eprintln!(
        "{}: {} parameters, {} steps x {} tokens",
        args.preset.name(),
        model.param_count(),
        train.steps,
        train.tokens_per_step()
    );

    // The two models are independent (own seeds, own RNG, read-only data), and one burn
    // training step at this size keeps about one core busy, so on a multi-core machine the
    // twin trains beside the ternary model instead of after it: same numbers, about half
    // the wall time.
    let progress = indicatif::MultiProgress::new();
    let train_ternary = || {
        train_to(
            "ternary",
            model,
            train,
            data.clone(),
            &tokenizer,
            &out.join("ternary"),
            &device,
            false,
            Some(&progress),
        )
    };
    let train_fp = || -> Result<Trained> {
        let fp_args = train_args(args, true, out.join("fp"));
        let (fp_model, fp_train) = configs(&fp_args, None)?;
        train_to(
            "fp",
            fp_model,
            fp_train,
            data.clone(),
            &tokenizer,
            &out.join("fp"),
            &device,
            false,
            Some(&progress),
        )
    };
    let (ternary, fp): (Trained, Option<Trained>) = if args.skip_fp {
        (train_ternary()?, None)
    } else if args.sequential {
        let ternary = train_ternary()?;
        (ternary, Some(train_fp()?))
    } else {
        std::thread::scope(|scope| -> Result<(Trained, Option<Trained>)> {
            let fp = scope.spawn(train_fp);
            let ternary = train_ternary();
            let fp = fp
                .join()
                .map_err(|_| anyhow::anyhow!("the full-precision training thread panicked"))?;
            Ok((ternary?, Some(fp?)))
        })?
    };

    let loss_png = out.join("loss.png");
    let mut curves = vec![crate::plot::Curves {
        name: "ternary",
        metrics: &ternary.report.metrics,
    }];
    if let Some(fp) = &fp {
        curves.push(crate::plot::Curves {
            name: "full precision",
            metrics: &fp.report.metrics,
        });
    }
    crate::plot::loss_png(&loss_png, &curves)?;

    let mut report = Report {
        preset: args.preset.name().to_string(),
        corpus: corpus.display().to_string(),
        corpus_source: found.source.to_string(),
        corpus_fingerprint,
        machine: bitnet_model::train::Machine::detect(),
        dataset: info,
        params: ternary.config.param_count(),
        steps: ternary.train.steps,
        tokens_per_step: ternary.train.tokens_per_step(),
        val_loss: ternary.report.final_eval.loss,
        val_bpb: ternary.report.final_eval.bpb,
        fp_val_loss: fp.as_ref().map(|f| f.report.final_eval.loss),
        fp_val_bpb: fp.as_ref().map(|f| f.report.final_eval.bpb),
        ternary_gap_nats: fp
            .as_ref()
            .map(|f| ternary.report.final_eval.loss - f.report.final_eval.loss),
        train_tokens_per_s: ternary.report.tokens_per_s,
        fp_train_tokens_per_s: fp.as_ref().map(|f| f.report.tokens_per_s),
        gen_tokens_per_s: None,
        gguf_tq2_0: None,
        gguf_i2_s: None,
        samples: Vec::new(),
        model_dir: ternary.model_dir.display().to_string(),
        fp_model_dir: fp.as_ref().map(|f| f.model_dir.display().to_string()),
        loss_png: loss_png.display().to_string(),
        wall_s: 0.0,
    };

    // GGUF export: a target that cannot compute this model refuses with a reason, which is
    // reported instead of failing the whole run.
    for (format, slot) in [
        (WeightFormat::Tq2_0, &mut report.gguf_tq2_0),
        (WeightFormat::I2S, &mut report.gguf_i2_s),
    ] {
        let name = format.name();
        let path = out.join(format!("genkidama-{name}.gguf"));
        match crate::export::export_file(&ternary.model_dir, &path, format, Embedding::F16) {
            Ok(()) => *slot = Some(path.display().to_string()),
            Err(e) => eprintln!("warning: no {name} export: {e:#}"),
        }
    }
    // Samples and generation speed from the packed CPU runtime.
    let dir = bitnet_model::store::ModelDir::load(&ternary.model_dir)?;
    let (samples, gen_tps) = crate::generate::samples(&dir, 32, ternary.train.seed)?;
    report.samples = samples;
    report.gen_tokens_per_s = Some(gen_tps);

    report.wall_s = start.elapsed().as_secs_f64();
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(out.join("report.md"), markdown(&report))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", markdown(&report));
        println!("report: {}", out.join("report.json").display());
    }
    Ok(())
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.digits$}"))
}

/// The human-readable report.
pub fn markdown(r: &Report) -> String {
    let mut s = format!(
        "# Genkidama run ({preset})\n\n\
         | metric | value |\n|---|---|\n\
         | parameters | {params} |\n\
         | steps x tokens/step | {steps} x {tps} |\n\
         | ternary val loss (nats) | {vl:.4} |\n\
         | ternary val bits/byte | {vb:.4} |\n\
         | full-precision val loss | {fl} |\n\
         | full-precision bits/byte | {fb} |\n\
         | ternary - fp gap (nats) | {gap} |\n\
         | train tokens/s (ternary) | {tt:.0} |\n\
         | train tokens/s (fp) | {ft} |\n\
         | generation tokens/s | {gt} |\n\
         | GGUF TQ2_0 | {g1} |\n\
         | GGUF I2_S | {g2} |\n\
         | wall time (s) | {wall:.0} |\n\n\
         Corpus: `{corpus}` ({source}, text SHA-256 `{fp}`); train tokens {trt}, val tokens \
         {vt}. Model: `{md}`. CPU: {cpu} ({features}).\n",
        preset = r.preset,
        params = r.params,
        steps = r.steps,
        tps = r.tokens_per_step,
        vl = r.val_loss,
        vb = r.val_bpb,
        fl = opt(r.fp_val_loss, 4),
        fb = opt(r.fp_val_bpb, 4),
        gap = opt(r.ternary_gap_nats, 4),
        tt = r.train_tokens_per_s,
        ft = opt(r.fp_train_tokens_per_s, 0),
        gt = opt(r.gen_tokens_per_s, 1),
        g1 = r.gguf_tq2_0.as_deref().unwrap_or("n/a"),
        g2 = r.gguf_i2_s.as_deref().unwrap_or("n/a"),
        wall = r.wall_s,
        corpus = r.corpus,
        source = r.corpus_source,
        fp = r.corpus_fingerprint,
        cpu = r.machine.cpu_model,
        features = r.machine.cpu_features.join(" "),
        trt = r.dataset.train_tokens,
        vt = r.dataset.val_tokens,
        md = r.model_dir,
    );
    if !r.samples.is_empty() {
        s.push_str("\n## Samples\n\n");
        for x in &r.samples {
            let _ = writeln!(s, "- **{}** `{}` → {}", x.language, x.prompt, x.text);
        }
    }
    s
}
