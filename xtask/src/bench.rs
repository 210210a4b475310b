//! `cargo xtask bench <area>`: each area is one `harness = false` bench target that
//! measures its baseline in the same run and writes `target/bench/<area>.json`.

use crate::python;
use crate::util::{cargo, root, run as run_cmd};
use anyhow::Result;
use clap::{Args, ValueEnum};

/// A benchmark area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Area {
    /// ternary-core GEMV / GEMM kernels against read bandwidth and the scalar path.
    Kernels,
    /// gguf-io reader and writer against gguf-py.
    Gguf,
    /// bitnet-model training steps.
    Train,
    /// bitnet-model packed CPU inference against the f32 reference.
    Infer,
    /// autoresearch samplers against Optuna.
    Hpo,
    /// incentive-ledger appends, proofs and verification against SQLite.
    Ledger,
    /// Our packed runtime against llama.cpp on the same random GGUF (outside CI).
    PeerInfer,
}

impl Area {
    /// (package, bench target, needs the Python baselines)
    fn target(self) -> (&'static str, &'static str, bool) {
        match self {
            Area::Kernels => ("ternary-core", "kernels", false),
            Area::Gguf => ("gguf-io", "gguf", true),
            Area::Train => ("bitnet-model", "train", true),
            Area::Infer => ("bitnet-model", "infer", false),
            Area::Hpo => ("autoresearch", "hpo", true),
            Area::Ledger => ("incentive-ledger", "ledger", false),
            Area::PeerInfer => ("bitnet-model", "infer", true),
        }
    }
}

/// Options of `cargo xtask bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The area to measure.
    #[arg(value_enum)]
    pub area: Area,
    /// Arguments for the bench binary (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.area == Area::PeerInfer {
        return crate::peer_infer::run(&args.args);
    }
    let (package, target, needs_python) = args.area.target();
    let name = args
        .area
        .to_possible_value()
        .map_or_else(|| target.to_string(), |v| v.get_name().to_string());
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let mut cmd = cargo();
    // `--workspace` (bench target names are unique in it) resolves features as the
    // workspace's test build does; `-p <package>` alone would resolve the burn stack's
    // features differently and rebuild all of it.
    cmd.args(["bench", "--locked", "--workspace", "--bench", target, "--"])
        .args(&args.args)
        .env("MAGNET_BENCH_OUT", &out);
    if needs_python {
        cmd.env("MAGNET_PYTHON", python::ensure(true)?);
    }
    run_cmd(&format!("bench {name} ({package})"), &mut cmd)?;
    eprintln!("report: {}", out.join(format!("{name}.json")).display());
    Ok(())
}
