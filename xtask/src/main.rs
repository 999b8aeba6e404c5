//! Developer and CI automation for gbo: `cargo xtask <command>`.
//!
//! - `lxd-up`: install, start and initialise a local LXD daemon and import the test image (idempotent).
//! - `test-image`: build (or reuse) the test image only.
//! - `lxd-cluster up|down|status`: a real three-member LXD cluster on loopback beside the main daemon.
//! - `lint`: the gates CI runs before the tests: formatting, clippy with warnings denied, rustdoc with warnings
//!   denied.
//! - `clean`: remove containers and images that earlier test runs left behind.
//! - `bench <client|install|ops|ci>`: run a benchmark side by side with the `lxc` CLI or the runbook's commands and
//!   rewrite its section of `docs/benchmarks.md`.

mod bench;
mod cluster;
mod lxd_up;
mod suite;

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
    /// A real three-member LXD cluster on 127.0.0.2-4:8443 beside the main daemon (own LXD_DIRs under
    /// /var/lib/gbo-cluster, own pools, the test image imported once): `up` (idempotent), `down`, `status`.
    LxdCluster {
        /// What to do.
        #[command(subcommand)]
        action: cluster::Action,
    },
    /// The gates CI runs before the tests: `cargo fmt --check`, `cargo clippy --workspace --all-targets -- -D
    /// warnings`, and `cargo doc --no-deps` with rustdoc warnings denied. Fails on the first gate that fails.
    Lint,
    /// Remove the containers, profiles and images that earlier test runs left behind (names starting `gbot-`).
    Clean,
    /// The whole test suite on this machine: install test dependencies, bring LXD up with the test image, remove
    /// leftovers of earlier runs, run every test (nextest when installed). Prints timings per phase.
    Test {
        /// Extra arguments for the test runner (e.g. a filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// The main job: bring LXD up, build the offline image and deploy the `default` tenant with tables, cache
    /// and proxy, then print `gbo status`.
    Up {
        /// Tenant to deploy.
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Run a benchmark and rewrite its section of docs/benchmarks.md.
    Bench {
        /// Which benchmark: client, install, ops, ci or cluster.
        which: bench::Which,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::LxdUp(args) => runtime.block_on(lxd_up::run(args)),
        Command::Lint => suite::lint(),
        Command::LxdCluster { action } => match action {
            cluster::Action::Up => runtime.block_on(cluster::up()),
            cluster::Action::Down => cluster::down(),
            cluster::Action::Status => cluster::status(),
        },
        Command::Clean => {
            runtime.block_on(lxd_up::clean())?;
            cluster::clean();
            Ok(())
        }
        Command::Test { args } => runtime.block_on(suite::test(args)),
        Command::Up { tenant } => runtime.block_on(suite::up(tenant)),
        Command::Bench { which } => {
            // Benchmarks measure optimised code: what users run. A debug xtask (the `cargo xtask` alias) rebuilds
            // itself in release and hands over.
            if cfg!(debug_assertions) {
                let which = format!("{which:?}").to_lowercase();
                eprintln!("bench: building xtask in release...");
                let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
                duct::cmd!("cargo", "run", "--quiet", "--release", "--package", "xtask", "--", "bench", which)
                    .dir(workspace)
                    .run()?;
                return Ok(());
            }
            runtime.block_on(bench::run(which))
        }
    }
}
