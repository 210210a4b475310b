//! The pinned Python virtualenv holding the independent implementations we test against
//! (gguf-py for GGUF and the ternary formats, Optuna for the HPO benchmark).

use crate::util::{root, run};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// Creates (or reuses) `<root>/.venv` with `xtask/python-requirements.txt` installed, and
/// the bench extras when `bench` is set. Returns the venv's python executable.
pub fn ensure(bench: bool) -> Result<PathBuf> {
    let root = root();
    let venv = root.join(".venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        let system = crate::services::python_with_venv(true)?;
        run(
            "python-venv",
            Command::new(&system).args(["-m", "venv"]).arg(&venv),
        )
        .with_context(|| {
            format!(
                "creating a virtualenv with `{system} -m venv` (set PYTHON to another interpreter)"
            )
        })?;
    }
    let mut files = vec![root.join("xtask/python-requirements.txt")];
    if bench {
        files.push(root.join("xtask/python-requirements-bench.txt"));
    }
    for file in files {
        let stamp = venv.join(format!(
            "installed-{}",
            file.file_name().unwrap_or_default().to_string_lossy()
        ));
        let wanted = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
            continue;
        }
        run(
            "python-deps",
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(&file),
        )?;
        std::fs::write(&stamp, wanted)?;
    }
    Ok(python)
}
