//! `genkidama`: reproduce MAGNET's Genkidama pipeline at small scale.
//!
//! ```text
//! cargo run --release -p genkidama -- run                 # everything, tiny preset
//! cargo run --release -p genkidama -- train --steps 300   # one model
//! cargo run --release -p genkidama -- eval --model target/genkidama/ternary/model \
//!     --text some.txt --max-tokens 4096 --json
//! ```

mod common;
mod convert;
mod eval;
mod export;
mod generate;
mod plot;
mod run;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Genkidama: BitNet b1.58 training, evaluation and export on CPU.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train one model (ternary, or the full-precision twin).
    Train(train::TrainArgs),
    /// Score a text file with a model directory.
    Eval(eval::EvalArgs),
    /// Stream text from a model with the packed CPU runtime.
    Generate(generate::GenerateArgs),
    /// Write a GGUF file for llama.cpp (TQ2_0 / TQ1_0) or bitnet.cpp (I2_S).
    Export(export::ExportArgs),
    /// The whole pipeline: data, both models, validation, report.
    Run(run::RunArgs),
    /// Write GGUF from a Hugging Face folder, or re-quantize a GGUF file.
    Convert(convert::ConvertArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Export(a) => export::run(a),
        Command::Run(a) => run::run(a),
        Command::Convert(a) => convert::run(a),
    }
}
