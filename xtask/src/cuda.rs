//! `cargo xtask cuda-setup [--no-install] [--build]`: make burn 0.22.1's CUDA backend
//! build offline (recipe and measurements: ../shared/reference/burn-cuda-offline.md).
//!
//! `cubecl-cuda` 0.11 always links `cubecl-llvm`, whose build script downloads an LLVM
//! bundle from GitHub unless `$XDG_DATA_HOME/tracel/tracel-llvm-23.1.0-4/.tracel-llvm-installed`
//! exists. This command installs Debian's LLVM 22 (`llvm-22-dev libpolly-22-dev
//! libzstd-dev`), creates that prefix under `target/tracel-data` with the sentinel and a
//! `bin/llvm-config` wrapper forwarding to LLVM 22, and prints the environment for
//! `cargo build --features cuda`. With `--build` it also builds `genkidama` with CUDA.

use crate::util::{cargo, is_root, root, run as run_cmd};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The bundle version cubecl 0.11.3's `tracel-llvm-bundler` looks for.
pub const BUNDLE: &str = "tracel-llvm-23.1.0-4";
/// Debian packages that stand in for the bundle.
pub const PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev", "libzstd-dev"];
/// Debian's LLVM 22 `llvm-config`.
pub const SYSTEM_LLVM_CONFIG: &str = "/usr/lib/llvm-22/bin/llvm-config";

/// The wrapper script: forwards to LLVM 22 and rewrites absolute `.so` paths (which the
/// bundler would mangle into `-llibz3`) to `-l` flags.
pub fn wrapper_script(llvm_config: &str) -> String {
    format!(
        "#!/bin/sh\n\
         # Written by `cargo xtask cuda-setup`: Debian's LLVM 22 standing in for {BUNDLE}.\n\
         out=$({llvm_config} \"$@\") || exit $?\n\
         printf '%s\\n' \"$out\" | sed -E 's#(^| )/[^ ]*/lib([A-Za-z0-9_+-]+)\\.so[^ ]*#\\1-l\\2#g'\n"
    )
}

/// Creates `<data_home>/tracel/<BUNDLE>` with the sentinel and the wrapper; returns the
/// prefix.
pub fn write_prefix(data_home: &Path, llvm_config: &str) -> Result<PathBuf> {
    let prefix = data_home.join("tracel").join(BUNDLE);
    let bin = prefix.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let script = bin.join("llvm-config");
    std::fs::write(&script, wrapper_script(llvm_config))
        .with_context(|| format!("writing {}", script.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::write(prefix.join(".tracel-llvm-installed"), b"")?;
    Ok(prefix)
}

fn missing_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

/// Options of `cargo xtask cuda-setup`.
#[derive(clap::Args, Debug)]
pub struct CudaArgs {
    /// Fail with the list of missing Debian packages instead of installing them.
    #[arg(long)]
    pub no_install: bool,
    /// Also build genkidama with `--features cuda` afterwards.
    #[arg(long)]
    pub build: bool,
}

/// Runs the setup.
pub fn run(args: &CudaArgs) -> Result<()> {
    let install = !args.no_install;
    let build = args.build;
    let missing = missing_packages();
    if !missing.is_empty() {
        if !install {
            bail!(
                "missing Debian packages: {} (drop --no-install to install them)",
                missing.join(" ")
            );
        }
        let mut cmd = if is_root() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        // llvm-22-dev is in bookworm-security; a plain `apt-get update` makes it visible.
        let mut update = if is_root() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        run_cmd("apt-get update", update.arg("update"))?;
        run_cmd(
            "install LLVM 22",
            cmd.args(["install", "-y", "--no-install-recommends"])
                .args(&missing),
        )?;
    }
    if !Path::new(SYSTEM_LLVM_CONFIG).exists() {
        bail!(
            "{SYSTEM_LLVM_CONFIG} not found after installing {}",
            PACKAGES.join(" ")
        );
    }
    let data_home = root().join("target/tracel-data");
    let prefix = write_prefix(&data_home, SYSTEM_LLVM_CONFIG)?;
    let check = Command::new(prefix.join("bin/llvm-config"))
        .arg("--version")
        .output()
        .context("running the llvm-config wrapper")?;
    if !check.status.success() {
        bail!(
            "{} --version failed",
            prefix.join("bin/llvm-config").display()
        );
    }
    eprintln!(
        "LLVM {} stands in for {BUNDLE} at {}",
        String::from_utf8_lossy(&check.stdout).trim(),
        prefix.display()
    );
    println!("export XDG_DATA_HOME={}", data_home.display());
    println!(
        "cargo build --release -p genkidama --features cuda   # then: genkidama run --device cuda"
    );
    if build {
        let mut cmd = cargo();
        cmd.args([
            "build",
            "--release",
            "-p",
            "genkidama",
            "--features",
            "cuda",
        ])
        .env("XDG_DATA_HOME", &data_home);
        run_cmd("build genkidama with CUDA", &mut cmd)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_has_sentinel_and_a_working_wrapper() {
        let dir = std::env::temp_dir().join(format!("xtask-cuda-{}", std::process::id()));
        // A fake llvm-config that prints an absolute .so path, as Debian's does.
        let fake = dir.join("fake-llvm-config");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            &fake,
            "#!/bin/sh\necho '-lrt /usr/lib/x86_64-linux-gnu/libz3.so -lm'\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let prefix = write_prefix(&dir, fake.to_str().unwrap()).unwrap();
        assert!(prefix.join(".tracel-llvm-installed").exists());
        assert!(prefix.ends_with(format!("tracel/{BUNDLE}")));
        let out = Command::new(prefix.join("bin/llvm-config"))
            .arg("--system-libs")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "-lrt -lz3 -lm");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
