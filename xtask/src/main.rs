//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! - `cargo xtask ci`: everything CI runs (fmt, clippy, tests with the Python oracles,
//!   feature type-checks).
//! - `cargo xtask bench <area>`: one benchmark area, writing `target/bench/<area>.json`.
//! - `cargo xtask python-env [--bench]`: create the pinned virtualenv and print its python.

mod bench;
mod ci;
mod corpus;
mod cuda;
mod python;
mod util;

use anyhow::{Result, bail};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci                 fmt check, clippy -D warnings, tests (with Python oracles), feature checks
  bench <area>       run one benchmark area and write target/bench/<area>.json
                     areas: kernels, gguf, train, infer, hpo, ledger
  python-env [--bench]
                     create .venv with the pinned oracle packages and print its python
  corpus [--out DIR] [--debs DIR]
                     rebuild the en/ja/ko training corpus from Debian packages
                     (default: data/corpus)
  cuda-setup [--no-install] [--build]
                     make burn's CUDA backend build offline (Debian LLVM 22 stand-in)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        Some("ci") => ci::run(rest),
        Some("bench") => bench::run(rest),
        Some("python-env") => {
            let bench = rest.iter().any(|a| a == "--bench");
            let python = python::ensure(bench)?;
            println!("{}", python.display());
            Ok(())
        }
        Some("corpus") => corpus::run(rest),
        Some("cuda-setup") => cuda::run(rest),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown xtask command `{other}`\n\n{USAGE}"),
    }
}
