//! `cargo xtask ci`: exactly what CI runs, in one place, so a developer runs the same.
//!
//! One build profile (dev, with optimised dependencies) serves clippy's check and the
//! tests; the feature checks that change burn's feature set use their own target folders
//! so they never invalidate the main build.

use crate::python;
use crate::util::{cargo, root, run as step};
use anyhow::{Result, bail};

/// Runs every step even after one fails, so a single run shows every problem, then fails
/// if any step did.
fn run_ci(skip_features: bool) -> Result<()> {
    let root = root();
    let mut failed: Vec<String> = Vec::new();
    let mut record = |result: Result<()>| {
        if let Err(e) = result {
            failed.push(e.to_string());
        }
    };

    record(step("fmt", cargo().args(["fmt", "--all", "--", "--check"])));

    // The oracles (gguf-py) must exist before the tests that compare against them.
    let python = python::ensure(false)?;

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
        .env("MAGNET_REQUIRE_ORACLES", "1");
    // CI may point the corpus at the shared reference copy instead of rebuilding it.
    if std::env::var_os("MAGNET_CORPUS").is_none() {
        let shared = root.join("../shared/corpus");
        if shared.is_dir() {
            test.env("MAGNET_CORPUS", shared);
        }
    }
    record(step("test", &mut test));

    if !skip_features {
        // The GPU path must keep type-checking although CI has no GPU and no LLVM bundle:
        // DOCS_RS makes the cubecl LLVM build scripts return early. Both optional backends
        // are checked in one build (one extra burn stack instead of two: ~5 minutes less).
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
                .env("CARGO_TARGET_DIR", root.join("target/check-features")),
        ));
    }
    if !skip_features {
        record(check_aarch64(&root));
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

pub fn run(args: &[String]) -> Result<()> {
    let skip_features = args.iter().any(|a| a == "--skip-feature-checks");
    run_ci(skip_features)
}

/// ternary-core's NEON kernels must keep compiling for aarch64 although CI runs on x86-64.
/// The target's standard library comes from rustup; where rustup cannot fetch it (an
/// offline machine), the check is reported as skipped rather than failing the whole run.
fn check_aarch64(root: &std::path::Path) -> Result<()> {
    const TARGET: &str = "aarch64-unknown-linux-gnu";
    let have_target = std::process::Command::new("rustup")
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
            .env("CARGO_TARGET_DIR", root.join("target/check-aarch64")),
    )
}
