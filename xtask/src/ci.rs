//! `cargo xtask ci`: exactly what CI runs, in one place, so a developer runs the same.
//!
//! It needs nothing but Rust and Python 3 with venv: the services the tests use
//! (PostgreSQL, S3) are started first (`services`), and a prerequisite that is missing
//! and cannot be installed stops the run before any build with the command that installs
//! it. One build profile (dev, with optimised dependencies) serves clippy's check, the
//! tests, the CLI checks and the clean-clone main job; the feature checks that change
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
    /// Skip the main job's set-up path from a fresh clone (shipped corpus, a few steps).
    #[arg(long)]
    pub skip_clean_clone: bool,
}

/// The target folder cargo uses for this workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// Runs every step even after one fails, so a single run shows every problem, then fails
/// if any step did.
pub fn run(args: &CiArgs) -> Result<()> {
    let root = root();
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

    record(cli_smoke::run());
    if !args.skip_clean_clone {
        record(clean_clone(&root));
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

/// The README's main job from a fresh clone of the committed tree, with no `../shared`
/// beside it, no `MAGNET_CORPUS` and an empty temporary directory: it must find the
/// shipped corpus, prepare the data, train a few steps, export and generate. It shares
/// this workspace's target folder, so only our own crates are compiled again.
fn clean_clone(root: &Path) -> Result<()> {
    let scratch = std::path::absolute(target_dir().join("clean-clone"))?;
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("clearing {}", scratch.display()))?;
    }
    let clone = scratch.join("magnet-rs");
    let tmp = scratch.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    step(
        "clean-clone: git clone",
        Command::new("git")
            .args(["clone", "--quiet", "--no-hardlinks"])
            .arg(root)
            .arg(&clone),
    )?;
    let out = scratch.join("run");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    step(
        "clean-clone: genkidama run",
        Command::new(cargo)
            .current_dir(&clone)
            .args(["run", "--locked", "-p", "genkidama", "--", "run"])
            .args(["--steps", "2", "--skip-fp", "--out"])
            .arg(&out)
            .env("CARGO_TARGET_DIR", target_dir())
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
            "[clean-clone] the run used corpus `{corpus}`, not the shipped copy under {}",
            tmp.display()
        );
    }
    eprintln!("<== [clean-clone] the main job ran from the shipped corpus ({corpus})");
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
