//! Developer and CI automation for gbo: `cargo xtask <command>`.
//!
//! - `lxd-up`: install, start and initialise a local LXD daemon and import the test image (idempotent).
//! - `test-image`: build (or reuse) the test image only.
//! - `clean`: remove containers and images that earlier test runs left behind.
//! - `bench <client|install|ops|ci>`: run a benchmark side by side with the `lxc` CLI or the runbook's commands and
//!   rewrite its section of `docs/benchmarks.md`.

mod bench;
mod lxd_up;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Developer and CI automation for gbo")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install (if missing), start and initialise LXD, enable HTTPS on 127.0.0.1:8443, import the test image.
    LxdUp(lxd_up::Args),
    /// Remove the containers, profiles and images that earlier test runs left behind (names starting `gbot-`).
    Clean,
    /// Run a benchmark and rewrite its section of docs/benchmarks.md.
    Bench {
        /// Which benchmark: client, install, ops or ci.
        which: bench::Which,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::LxdUp(args) => runtime.block_on(lxd_up::run(args)),
        Command::Clean => runtime.block_on(lxd_up::clean()),
        Command::Bench { which } => runtime.block_on(bench::run(which)),
    }
}
