//! `cargo xtask bench <area>`: each area is one `harness = false` bench target that
//! measures its baseline in the same run and writes `target/bench/<area>.json`.

use crate::python;
use crate::util::{cargo, root, run as run_cmd};
use anyhow::{Result, bail};

/// (area, package, bench target, needs the Python baselines)
const AREAS: &[(&str, &str, &str, bool)] = &[
    ("kernels", "ternary-core", "kernels", false),
    ("gguf", "gguf-io", "gguf", true),
    ("train", "bitnet-model", "train", false),
    ("infer", "bitnet-model", "infer", false),
    ("hpo", "autoresearch", "hpo", true),
    ("ledger", "incentive-ledger", "ledger", false),
];

pub fn run(args: &[String]) -> Result<()> {
    let Some(area) = args.first() else {
        bail!(
            "usage: cargo xtask bench <area> [-- bench args]; areas: {}",
            AREAS.iter().map(|a| a.0).collect::<Vec<_>>().join(", ")
        );
    };
    let Some(&(_, package, target, needs_python)) = AREAS.iter().find(|a| a.0 == area) else {
        bail!(
            "unknown bench area `{area}`; areas: {}",
            AREAS.iter().map(|a| a.0).collect::<Vec<_>>().join(", ")
        );
    };
    let out = root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let mut cmd = cargo();
    cmd.args(["bench", "--locked", "-p", package, "--bench", target, "--"])
        .args(args.iter().skip(1).filter(|a| *a != "--"))
        .env("MAGNET_BENCH_OUT", &out);
    if needs_python {
        cmd.env("MAGNET_PYTHON", python::ensure(true)?);
    }
    run_cmd(&format!("bench {area}"), &mut cmd)?;
    eprintln!("report: {}", out.join(format!("{area}.json")).display());
    Ok(())
}
