//! `cargo xtask ci`: exactly what CI runs, in one place, so a developer runs the same.
//!
//! It needs nothing but Rust and Python 3 with venv: the services the tests use
//! (PostgreSQL, S3) are started first (`services`), and a prerequisite that is missing
//! and cannot be installed stops the run before any build with the command that installs
//! it. One build profile (dev, with optimised dependencies) serves clippy's check, the
//! tests, the CLI checks and the main job from an empty folder; the feature checks that change
//! burn's feature set use their own target folders so they never invalidate that build.

use crate::util::{cargo, root, run as step};
use crate::{cli_smoke, python, services};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `cargo xtask ci`.
#[derive(clap::Args, Debug)]
pub struct CiArgs {
    /// Skip the CUDA / ndarray and aarch64 type-checks (each builds another burn stack).
    #[arg(long)]
    pub skip_feature_checks: bool,
    /// Skip the main job's set-up path from an empty folder (shipped corpus, a few steps).
    #[arg(long)]
    pub skip_main_job: bool,
}

/// The target folder cargo uses for this workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// Runs every step even after one fails, so a single run shows every problem, then fails
/// if any step did.
pub fn run(args: &CiArgs) -> Result<()> {
    // Prerequisites first: a missing one ends the run in seconds, not after the build.
    let services = services::start().context("starting the test services")?;
    // The oracles (gguf-py) must exist before the tests that compare against them.
    let python = python::ensure(false)?;

    let mut failed: Vec<String> = Vec::new();
    let mut record = |result: Result<()>| {
        if let Err(e) = result {
            failed.push(format!("{e:#}"));
        }
    };

    record(step("fmt", cargo().args(["fmt", "--all", "--", "--check"])));
    record(step(
        "clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    ));

    let mut test = cargo();
    test.args(["test", "--workspace", "--locked"])
        .env("MAGNET_PYTHON", &python)
        .env("MAGNET_REQUIRE_ORACLES", "1")
        // The tests read the shipped corpus, as a user's run does.
        .env_remove("MAGNET_CORPUS")
        .envs(services.iter().map(|(k, v)| (k, v)));
    record(step("test", &mut test));

    let cli = cli_smoke::run();
    let built = cli.is_ok();
    record(cli);
    if !args.skip_main_job && built {
        record(main_job_anywhere());
    }

    if !args.skip_feature_checks {
        // The GPU path must keep type-checking although CI has no GPU and no LLVM bundle:
        // DOCS_RS makes the cubecl LLVM build scripts return early. Both optional backends
        // are checked in one build (one extra burn stack instead of two).
        record(step(
            "check-cuda-ndarray",
            cargo()
                .args([
                    "check",
                    "--locked",
                    "-p",
                    "bitnet-model",
                    "--features",
                    "cuda,ndarray",
                ])
                .env("DOCS_RS", "1")
                .env("CARGO_TARGET_DIR", target_dir().join("check-features")),
        ));
        record(check_aarch64());
    }
    if !failed.is_empty() {
        bail!(
            "xtask ci: {} step(s) failed:\n  {}",
            failed.len(),
            failed.join("\n  ")
        );
    }
    eprintln!("xtask ci: all steps passed");
    Ok(())
}

/// The README's main job set-up path where nothing is beside it: the `genkidama` binary of
/// this build (the cli step built it) runs `run --steps 2 --skip-fp` in an empty folder
/// with no `../shared`, no `MAGNET_CORPUS` and a private `TMPDIR`. It must find the corpus
/// shipped inside the binary (SHA-256 checked on extraction), prepare the data, train a few
/// steps, export and generate, and its report must name the extracted copy. (Building a
/// second copy from a clone would compile the burn stack again with another feature set;
/// CI itself runs on a fresh clone.)
fn main_job_anywhere() -> Result<()> {
    let scratch = std::path::absolute(target_dir().join("main-job"))?;
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("clearing {}", scratch.display()))?;
    }
    let cwd = scratch.join("empty");
    let tmp = scratch.join("tmp");
    std::fs::create_dir_all(&cwd)?;
    std::fs::create_dir_all(&tmp)?;
    let exe = target_dir().join("debug").join("genkidama");
    let out = scratch.join("run");
    step(
        "main-job: genkidama run",
        Command::new(&exe)
            .current_dir(&cwd)
            .args(["run", "--steps", "2", "--skip-fp", "--out"])
            .arg(&out)
            .env("TMPDIR", &tmp)
            .env_remove("MAGNET_CORPUS"),
    )?;
    let report_path = out.join("report.json");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&report_path)
            .with_context(|| format!("reading {}", report_path.display()))?,
    )
    .with_context(|| format!("parsing {}", report_path.display()))?;
    let corpus = report["corpus"].as_str().unwrap_or_default();
    if !Path::new(corpus).starts_with(&tmp) || !corpus.contains("magnet-corpus-") {
        bail!(
            "[main-job] the run used corpus `{corpus}`, not the shipped copy under {}",
            tmp.display()
        );
    }
    if std::fs::read_dir(&cwd)?.next().is_some() {
        bail!("[main-job] the run wrote into its working folder despite --out");
    }
    eprintln!("<== [main-job] the main job ran from the shipped corpus ({corpus})");
    std::fs::remove_dir_all(&scratch).ok();
    Ok(())
}

/// ternary-core's NEON kernels must keep compiling for aarch64 although CI runs on x86-64.
/// The target's standard library comes from rustup; where rustup cannot fetch it (an
/// offline machine), the check is reported as skipped rather than failing the whole run.
fn check_aarch64() -> Result<()> {
    const TARGET: &str = "aarch64-unknown-linux-gnu";
    let have_target = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !have_target {
        eprintln!("==> [check-aarch64] SKIPPED: `rustup target add {TARGET}` is not possible here");
        return Ok(());
    }
    step(
        "check-aarch64",
        cargo()
            .args([
                "check",
                "--locked",
                "-p",
                "ternary-core",
                "--target",
                TARGET,
            ])
            .env("CARGO_TARGET_DIR", target_dir().join("check-aarch64")),
    )
}
