//! Shared pieces: device and preset selection, corpus look-up, dataset preparation (with
//! progress) and default output paths.

use anyhow::{Context, Result, bail};
use bitnet_model::data::{CorpusLocation, DatasetInfo, TokenData, find_corpus, prepare_dataset};
use burn::tensor::Device;
use clap::ValueEnum;
use std::path::{Path, PathBuf};

/// `./runs/genkidama` under the working directory (docs/cli.md: outputs never depend on
/// where the binary was built).
pub fn default_out() -> PathBuf {
    PathBuf::from("runs").join("genkidama")
}

/// The architecture presets: bitnet-model's one type (a `clap::ValueEnum` there).
pub use bitnet_model::Preset;

/// A ternary weight format (`--format`, docs/cli.md): the GGUF type `export` / `convert`
/// write and the packed layout `generate` runs, with one default everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum WeightFormat {
    /// llama.cpp's TQ2_0 (`bitnet` architecture): mainline llama.cpp, gguf-py and our
    /// runtime all read it.
    #[default]
    #[value(name = "tq2_0")]
    Tq2_0,
    /// llama.cpp's TQ1_0 (1.6875 bits per weight).
    #[value(name = "tq1_0")]
    Tq1_0,
    /// bitnet.cpp's I2_S (one f32 scale per tensor).
    #[value(name = "i2_s")]
    I2S,
}

impl WeightFormat {
    /// The GGUF target that stores weights in this format.
    pub fn target(self) -> bitnet_model::export::Target {
        use bitnet_model::export::{Target, TernaryType};
        match self {
            Self::Tq2_0 => Target::LlamaCpp(TernaryType::Tq2_0),
            Self::Tq1_0 => Target::LlamaCpp(TernaryType::Tq1_0),
            Self::I2S => Target::BitnetCpp,
        }
    }

    /// The packed runtime's layout for this format.
    pub fn packed(self) -> bitnet_model::runtime::Format {
        use bitnet_model::runtime::Format;
        match self {
            Self::Tq2_0 => Format::Tq2_0,
            Self::Tq1_0 => Format::Tq1_0,
            Self::I2S => Format::I2S,
        }
    }

    /// The flag value (also the suffix of the file names `genkidama run` writes).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tq2_0 => "tq2_0",
            Self::Tq1_0 => "tq1_0",
            Self::I2S => "i2_s",
        }
    }
}

/// Element type of the token embedding (and an untied head) in a written GGUF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Embedding {
    /// What llama.cpp's converter writes.
    #[default]
    F16,
    /// Lossless.
    F32,
}

impl From<Embedding> for bitnet_model::export::EmbeddingType {
    fn from(e: Embedding) -> Self {
        match e {
            Embedding::F16 => Self::F16,
            Embedding::F32 => Self::F32,
        }
    }
}

/// bitnet.cpp's I2_S code layouts (`--i2s-layout`), mirroring
/// [`bitnet_model::export::I2sLayout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum I2sLayoutArg {
    /// bitnet.cpp's default x86 build (and its published files).
    #[default]
    X86,
    /// ARM NEON builds: 64-value blocks of 16 bytes.
    Arm,
    /// x86 builds without `ACT_PARALLEL`: four rows interleaved per byte.
    #[value(name = "1x4")]
    Rows1x4,
}

impl From<I2sLayoutArg> for bitnet_model::export::I2sLayout {
    fn from(l: I2sLayoutArg) -> Self {
        match l {
            I2sLayoutArg::X86 => Self::X86,
            I2sLayoutArg::Arm => Self::Arm,
            I2sLayoutArg::Rows1x4 => Self::Rows1x4,
        }
    }
}

/// A burn device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// burn's CPU backend.
    Flex,
    /// burn-cuda, GPU 0 (needs a build with `--features cuda`).
    Cuda,
}

impl Backend {
    /// The name [`device`] takes.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Cuda => "cuda",
        }
    }
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

/// The corpus: `--corpus`, else `MAGNET_CORPUS`, else the shipped copy (SHA-256 checked).
pub fn corpus(explicit: Option<&Path>) -> Result<CorpusLocation> {
    let Some(found) = find_corpus(explicit)? else {
        bail!(
            "no corpus: pass --corpus DIR or set MAGNET_CORPUS (a directory of UTF-8 *.txt \
             files; en/, ko/, ja/ subfolders give the language mix)"
        );
    };
    eprintln!("corpus: {} ({})", found.dir.display(), found.source);
    Ok(found)
}

/// Tokenizer training and shards for `corpus` in `data_dir` (reused when unchanged): a
/// spinner names the stages up to tokenizer training, which draws tokenizers' own bar
/// (with its counts) on a terminal.
pub fn dataset(
    corpus: &Path,
    data_dir: &Path,
    vocab: usize,
    seed: u64,
) -> Result<(DatasetInfo, TokenData)> {
    let mut current = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{prefix:>9} [{elapsed_precise}] {spinner} {msg}")
            .expect("valid template"),
    );
    current.set_prefix("data");
    current.enable_steady_tick(std::time::Duration::from_millis(200));
    let info = prepare_dataset(corpus, data_dir, vocab, seed, &mut |m| {
        if m.starts_with("training a") {
            // tokenizers' own bar follows (then encoding, a few seconds): no spinner
            // draws over it.
            current.finish_and_clear();
            eprintln!("{m}");
            current = indicatif::ProgressBar::hidden();
        } else if current.is_hidden() {
            // No terminal (a log file, CI): plain lines.
            eprintln!("{m}");
        } else {
            current.println(m);
            current.set_message(m.to_string());
        }
    })
    .with_context(|| format!("preparing the dataset in {}", data_dir.display()));
    current.finish_and_clear();
    let info = info?;
    let data = TokenData::open(data_dir)?;
    Ok((info, data))
}
