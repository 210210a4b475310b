//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! Every command is a clap subcommand (docs/cli.md): `--help` and `--version` answer
//! before anything runs, and an unknown flag is refused.

mod bench;
mod ci;
mod cli_smoke;
mod corpus;
mod cuda;
mod peer_infer;
mod python;
mod services;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// MAGNET-rs project automation (CI, benchmarks, corpus, environments).
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Everything CI runs: fmt check, clippy -D warnings, tests with the Python oracles,
    /// PostgreSQL and S3 (started here), CLI checks, the main job from an empty folder, feature checks.
    Ci(ci::CiArgs),
    /// Start (or reuse) the throw-away PostgreSQL cluster and S3 server the tests need and
    /// print their environment as `export` lines (`eval "$(cargo xtask services)"`).
    Services(services::ServicesArgs),
    /// Run one benchmark area and write target/bench/<area>.json.
    Bench(bench::BenchArgs),
    /// Create .venv with the pinned oracle packages and print its python.
    PythonEnv {
        /// Also install the benchmark baselines (Optuna).
        #[arg(long)]
        bench: bool,
    },
    /// Rebuild the en/ja/ko training corpus from Debian packages.
    Corpus(corpus::CorpusArgs),
    /// Make burn's CUDA backend build offline (Debian LLVM 22 stand-in).
    CudaSetup(cuda::CudaArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Ci(args) => ci::run(&args),
        Command::Services(args) => services::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::PythonEnv { bench } => {
            let python = python::ensure(bench)?;
            println!("{}", python.display());
            Ok(())
        }
        Command::Corpus(args) => corpus::run(&args),
        Command::CudaSetup(args) => cuda::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("cargo xtask").chain(args.iter().copied()))
    }

    #[test]
    fn parser_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_flags_and_commands_are_refused() {
        use clap::error::ErrorKind;
        for args in [
            &["ci", "--skip-features"][..],
            &["ci", "--frobnicate"],
            &["corpus", "--output", "x"],
            &["bench", "nope"],
            &["python-env", "--benchh"],
            &["services", "extra"],
            &["no-such-command"],
        ] {
            let err = parse(args).expect_err(&format!("{args:?} must be refused"));
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::UnknownArgument
                        | ErrorKind::InvalidSubcommand
                        | ErrorKind::InvalidValue
                ),
                "{args:?}: {:?}",
                err.kind()
            );
        }
    }

    #[test]
    fn help_and_version_answer_without_running() {
        use clap::error::ErrorKind;
        for args in [&["--help"][..], &["ci", "--help"], &["corpus", "-h"]] {
            assert_eq!(parse(args).unwrap_err().kind(), ErrorKind::DisplayHelp);
        }
        assert_eq!(
            parse(&["--version"]).unwrap_err().kind(),
            ErrorKind::DisplayVersion
        );
    }

    #[test]
    fn known_flags_parse() {
        let cli = parse(&["ci", "--skip-feature-checks"]).unwrap();
        assert!(matches!(cli.command, Command::Ci(a) if a.skip_feature_checks));
        let cli = parse(&["corpus", "--out", "c", "--debs", "d", "--pack"]).unwrap();
        assert!(matches!(cli.command, Command::Corpus(a) if a.pack && a.out.is_some()));
        let cli = parse(&["bench", "kernels", "--", "--quick"]).unwrap();
        assert!(matches!(cli.command, Command::Bench(a) if a.args == ["--quick"]));
    }
}
