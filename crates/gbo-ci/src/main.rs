//! `gbo-ci`: safe botserver deploys over SSH, Forgejo workflows, dual-remote push and runner upkeep.
//!
//! Exit codes: 0 success, 1 a check found problems (`verify`, `workflow check`), 2 bad input or a failed operation.
//! Results go to stdout (text, or `--output json`), progress and diagnostics to stderr.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(outcome) => ExitCode::from(outcome),
        Err(error) => {
            eprintln!("gbo-ci: error: {error:#}");
            ExitCode::from(2)
        }
    }
}
