//! `gguf-dump [--json] FILE`: prints a GGUF file's metadata and tensor table.
//!
//! A malformed or unreadable file exits with status 1 and the error on stderr; bad usage
//! exits with status 2.

use gguf_io::{GgufFile, dump};
use std::process::ExitCode;

const USAGE: &str = "usage: gguf-dump [--json] [--version] FILE";

fn main() -> ExitCode {
    let mut json = false;
    let mut file = None;
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("--json") => json = true,
            Some("-V" | "--version") => {
                println!("gguf-dump {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Some(a) if a.starts_with('-') && a != "-" => {
                eprintln!("gguf-dump: unknown option `{a}`\n{USAGE}");
                return ExitCode::from(2);
            }
            _ if file.is_some() => {
                eprintln!("gguf-dump: more than one file given\n{USAGE}");
                return ExitCode::from(2);
            }
            _ => file = Some(arg),
        }
    }
    let Some(path) = file else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match GgufFile::open(&path) {
        Ok(f) => {
            if json {
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
