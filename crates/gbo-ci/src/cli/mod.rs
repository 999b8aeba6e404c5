//! Argument parsing and rendering for the `gbo-ci` binary. Only this module prints.

mod deploy;
mod events;
mod upkeep;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use gbo_ci::ssh::{ConnectOptions, Secret};

/// Exit code for "a check found problems".
pub const FINDINGS: u8 = 1;

/// `gbo-ci`: safe botserver deploys over SSH, Forgejo workflows, dual-remote push and runner upkeep.
#[derive(Debug, Parser)]
#[command(name = "gbo-ci", version, about, long_about = None)]
pub struct Cli {
    /// Result format on stdout.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

/// Result formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// One JSON document (shapes documented in docs/gbo-ci.md).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload a binary into a root-only staging directory, verify it, swap it in atomically, restart, check health,
    /// roll back on failure.
    Deploy(deploy::DeployArgs),
    /// Put the newest previous release back in place and restart it.
    Rollback(deploy::RollbackArgs),
    /// Compare the deployed binary's SHA-256 and modification time with a local artifact (exit 1 when stale).
    Verify(deploy::VerifyArgs),
    /// Render or lint Forgejo workflow files.
    #[command(subcommand)]
    Workflow(upkeep::WorkflowCommand),
    /// Push a submodule to both remotes, update the root's pointer, push the root, confirm every remote.
    Push(upkeep::PushArgs),
    /// Runner cache upkeep.
    #[command(subcommand)]
    Cache(upkeep::CacheCommand),
    /// List recent workflow runs through the Forgejo API (token from FORGEJO_TOKEN).
    Runs(upkeep::RunsArgs),
}

/// How to reach the host; shared by deploy, rollback and verify.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Host name or ~/.ssh/config alias (HostName, Port, User, IdentityFile, UserKnownHostsFile are honoured).
    #[arg(long)]
    pub host: String,
    /// SSH port (overrides the config).
    #[arg(long)]
    pub port: Option<u16>,
    /// Remote user (overrides the config).
    #[arg(long)]
    pub user: Option<String>,
    /// Private key file (repeatable). The key may also come from the environment variable GBO_CI_SSH_KEY (PEM text)
    /// and its passphrase from GBO_CI_SSH_PASSPHRASE; an ssh-agent is used when SSH_AUTH_SOCK is set.
    #[arg(long = "identity", value_name = "PATH")]
    pub identities: Vec<PathBuf>,
    /// ssh config file to read instead of ~/.ssh/config.
    #[arg(long, value_name = "PATH")]
    pub ssh_config: Option<PathBuf>,
    /// known_hosts file to check (and record into) instead of the config's or ~/.ssh/known_hosts.
    #[arg(long, value_name = "PATH")]
    pub known_hosts: Option<PathBuf>,
    /// First contact: record the server's host key if the host is not known yet. A changed key is always refused.
    #[arg(long)]
    pub accept_new_host_key: bool,
    /// TCP connect timeout in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
}

impl ConnectArgs {
    fn options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new(self.host.clone());
        options.port = self.port;
        options.user = self.user.clone();
        options.identity_files = self.identities.clone();
        options.ssh_config = self.ssh_config.clone();
        options.known_hosts = self.known_hosts.clone();
        options.accept_new_host_key = self.accept_new_host_key;
        options.connect_timeout = Duration::from_secs(self.connect_timeout.max(1));
        options.private_key =
            std::env::var("GBO_CI_SSH_KEY").ok().filter(|key| !key.trim().is_empty()).map(Secret::new);
        options.passphrase = std::env::var("GBO_CI_SSH_PASSPHRASE").ok().filter(|p| !p.is_empty()).map(Secret::new);
        options
    }
}

/// Run the parsed command; returns the exit code for success (0) or findings (1).
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let output = cli.output;
    match cli.command {
        Command::Deploy(args) => deploy::deploy(args, output),
        Command::Rollback(args) => deploy::rollback(args, output),
        Command::Verify(args) => deploy::verify(args, output),
        Command::Workflow(command) => upkeep::workflow(command, output),
        Command::Push(args) => upkeep::push(args, output),
        Command::Cache(command) => upkeep::cache(command, output),
        Command::Runs(args) => upkeep::runs(args, output),
    }
}

/// Print a serialisable result as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
