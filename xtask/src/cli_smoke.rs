//! The CLI check of `cargo xtask ci`: every binary target of the workspace (found through
//! `cargo metadata`, so a new binary is covered without an edit here) answers `--version`
//! and `--help` with status 0 without starting work (it runs in an empty folder, which
//! must stay empty), and refuses an unknown flag with status 2 (docs/cli.md).

use crate::ci::target_dir;
use crate::util::{cargo, run as step};
use anyhow::{Context, Result, bail};
use std::process::Command;

/// (binary name, package name, package version) of every binary target.
fn binaries() -> Result<Vec<(String, String, String)>> {
    let out = cargo()
        .args(["metadata", "--no-deps", "--format-version", "1", "--locked"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let mut bins = Vec::new();
    for package in meta["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_bin = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"));
            if is_bin {
                bins.push((
                    target["name"].as_str().unwrap_or_default().to_string(),
                    package["name"].as_str().unwrap_or_default().to_string(),
                    package["version"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    bins.sort();
    Ok(bins)
}

/// Builds every binary and checks each one's `--version`, `--help` and an unknown flag.
///
/// The binaries are built with `--tests` beside `--bins`: with dev-dependencies in the
/// build, cargo resolves features exactly as `cargo test --workspace` did, so the step
/// reuses the test build instead of compiling the burn stack a second time with a slightly
/// different feature set (`--bins` alone: ~14 more minutes on 2 cores).
pub fn run() -> Result<()> {
    step(
        "cli: build",
        cargo().args(["build", "--workspace", "--bins", "--tests", "--locked"]),
    )?;
    eprintln!("==> [cli] --version, --help and an unknown flag of every binary");
    let bins = binaries()?;
    let empty = tempfile_dir()?;
    let mut problems = Vec::new();
    for (bin, package, version) in &bins {
        let exe = target_dir().join("debug").join(bin);
        let call = |arg: &str| {
            Command::new(&exe)
                .arg(arg)
                .current_dir(&empty)
                .env("NO_COLOR", "1")
                .output()
        };
        let version_out =
            call("--version").with_context(|| format!("running {}", exe.display()))?;
        let text = String::from_utf8_lossy(&version_out.stdout);
        if !version_out.status.success() || !text.contains(version.as_str()) {
            problems.push(format!(
                "{bin} ({package}): `--version` gave {} and {text:?} (want {version})",
                version_out.status
            ));
        }
        let help = call("--help")?;
        let text = String::from_utf8_lossy(&help.stdout);
        if !help.status.success() || !text.to_ascii_lowercase().contains("usage") {
            problems.push(format!("{bin} ({package}): `--help` gave {}", help.status));
        }
        let unknown = call("--no-such-flag-anywhere")?;
        if unknown.status.code() != Some(2) {
            problems.push(format!(
                "{bin} ({package}): an unknown flag gave {} (want exit status 2)",
                unknown.status
            ));
        }
        if std::fs::read_dir(&empty)?.next().is_some() {
            problems.push(format!(
                "{bin} ({package}): `--help` / `--version` wrote files"
            ));
            std::fs::remove_dir_all(&empty)?;
            std::fs::create_dir_all(&empty)?;
        }
    }
    std::fs::remove_dir_all(&empty).ok();
    if !problems.is_empty() {
        bail!(
            "[cli] {} of {} binaries break docs/cli.md:\n    {}",
            problems.len(),
            bins.len(),
            problems.join("\n    ")
        );
    }
    eprintln!("<== [cli] ok: {} binaries", bins.len());
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = target_dir().join("cli-smoke-cwd");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
