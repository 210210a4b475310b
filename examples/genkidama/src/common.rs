//! Shared pieces: device selection, corpus look-up (building it when missing), dataset
//! preparation and default output paths.

use anyhow::{Context, Result, bail};
use bitnet_model::data::{
    DatasetInfo, TokenData, find_corpus, prepare_dataset, text::workspace_root,
};
use burn::tensor::Device;
use std::path::{Path, PathBuf};

/// `target/genkidama` under the workspace.
pub fn default_out() -> PathBuf {
    workspace_root().join("target/genkidama")
}

/// The burn device by name: `flex` (CPU, default) or `cuda` (needs `--features cuda`).
pub fn device(name: &str) -> Result<Device> {
    match name {
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        #[cfg(not(feature = "cuda"))]
        "cuda" => bail!(
            "--device cuda needs a build with `--features cuda` (see `cargo xtask cuda-setup`)"
        ),
        other => bail!("unknown --device `{other}` (flex or cuda)"),
    }
}

/// Finds the corpus (see `bitnet_model::data::find_corpus`); when none exists, builds it
/// into `<workspace>/data/corpus` with `cargo xtask corpus`.
pub fn corpus_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(found) = find_corpus(explicit)? {
        eprintln!("corpus: {} ({})", found.dir.display(), found.source);
        return Ok(found.dir);
    }
    let target = workspace_root().join("data/corpus");
    eprintln!(
        "no corpus found (--corpus, MAGNET_CORPUS, data/corpus); building {} from Debian packages",
        target.display()
    );
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["xtask", "corpus", "--out"])
            .arg(&target)
            .current_dir(workspace_root())
            .status();
    match status {
        Ok(s) if s.success() => Ok(target),
        Ok(s) => bail!(
            "building the corpus failed ({s}). Point --corpus or MAGNET_CORPUS at a directory \
             of UTF-8 text (en/, ko/, ja/ subfolders give the language mix), or run \
             `cargo xtask corpus` on a Debian/Ubuntu machine with apt access"
        ),
        Err(e) => bail!(
            "no corpus found and `cargo xtask corpus` could not start ({e}). Point --corpus or \
             MAGNET_CORPUS at a directory of UTF-8 text"
        ),
    }
}

/// Tokenizer training and shards for `corpus` in `data_dir` (reused when unchanged).
pub fn dataset(
    corpus: &Path,
    data_dir: &Path,
    vocab: usize,
    seed: u64,
) -> Result<(DatasetInfo, TokenData)> {
    let info = prepare_dataset(corpus, data_dir, vocab, seed, &mut |m| eprintln!("{m}"))
        .with_context(|| format!("preparing the dataset in {}", data_dir.display()))?;
    let data = TokenData::open(data_dir)?;
    Ok((info, data))
}
