//! Small process and path helpers shared by the xtask commands.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The workspace root (the parent of this crate's folder).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A `cargo` command run from the workspace root, using the same cargo that runs xtask.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd`, printing it first and its duration after; fails on a non-zero exit.
pub fn run(step: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> [{step}] {cmd:?}");
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("[{step}] could not start {cmd:?}"))?;
    eprintln!(
        "<== [{step}] {} in {:.1}s",
        if status.success() { "ok" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("[{step}] failed with {status}");
    }
    Ok(())
}
