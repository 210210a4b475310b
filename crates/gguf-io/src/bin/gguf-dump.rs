//! `gguf-dump [--json] FILE`: prints a GGUF file's metadata and tensor table.
//!
//! A malformed or unreadable file exits with status 1 and the error on stderr; bad usage
//! exits with status 2 (clap's).

use clap::Parser;
use gguf_io::{GgufFile, dump};
use std::path::PathBuf;
use std::process::ExitCode;

/// Print a GGUF file's metadata and tensor table.
#[derive(Parser, Debug)]
#[command(name = "gguf-dump", version)]
struct Args {
    /// Machine-readable output (one JSON document).
    #[arg(long)]
    json: bool,
    /// The GGUF file.
    file: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match GgufFile::open(&args.file) {
        Ok(f) => {
            if args.json {
                println!("{}", dump::to_json(&f));
            } else {
                print!("{}", dump::to_text(&f));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gguf-dump: {e}");
            ExitCode::from(1)
        }
    }
}
