//! Small process, path and system-package helpers shared by the xtask commands.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The workspace root (the parent of this crate's folder). xtask is project automation
/// and is the one program that works on the checkout it was built from (docs/cli.md).
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

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `name` found in `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A system package manager this process may use without asking for a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installer {
    /// Debian / Ubuntu.
    Apt,
    /// Fedora / RHEL.
    Dnf,
}

impl Installer {
    /// The package manager of this machine when we are root or have password-less sudo.
    pub fn usable() -> Option<(Self, bool)> {
        let manager = if which("apt-get").is_some() {
            Installer::Apt
        } else if which("dnf").is_some() {
            Installer::Dnf
        } else {
            return None;
        };
        if is_root() {
            return Some((manager, false));
        }
        let sudo = which("sudo").is_some()
            && Command::new("sudo")
                .args(["-n", "true"])
                .output()
                .is_ok_and(|o| o.status.success());
        sudo.then_some((manager, true))
    }

    /// Installs `packages` (already named for this manager).
    pub fn install(self, sudo: bool, packages: &[&str]) -> Result<()> {
        let command = |args: &[&str]| {
            let mut cmd = if sudo {
                let mut c = Command::new("sudo");
                c.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive"]);
                c.arg(self.program());
                c
            } else {
                let mut c = Command::new(self.program());
                c.env("DEBIAN_FRONTEND", "noninteractive");
                c
            };
            cmd.args(args);
            cmd
        };
        match self {
            Installer::Apt => {
                run("apt-get update", &mut command(&["update", "-qq"]))?;
                let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
                args.extend_from_slice(packages);
                run("apt-get install", &mut command(&args))
            }
            Installer::Dnf => {
                let mut args = vec!["install", "-y", "-q"];
                args.extend_from_slice(packages);
                run("dnf install", &mut command(&args))
            }
        }
    }

    fn program(self) -> &'static str {
        match self {
            Installer::Apt => "apt-get",
            Installer::Dnf => "dnf",
        }
    }
}
