//! Every `gbo` command. Each area owns one module with its clap arguments and a `run` function; this file only
//! lists them.

use crate::output::Outcome;

mod brother;
mod dns;
mod doctor;
mod fail2ban;
mod firewall;
mod lifecycle;
mod migrate;
mod proxy;
mod snapshot;
mod vault;
mod zfs;

/// The commands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    #[command(flatten)]
    Lifecycle(lifecycle::Command),
    /// Container and host-data snapshots: create, list, restore, delete, prune, schedule.
    #[command(subcommand)]
    Snapshot(snapshot::Command),
    /// Move the botserver database between a host PostgreSQL and the tenant's tables container, verified.
    #[command(subcommand)]
    Migrate(migrate::Command),
    /// ZFS snapshot usage, daily snapshots and retention on the host pool.
    #[command(subcommand)]
    Zfs(zfs::Command),
    /// Vault seal status and unsealing.
    #[command(subcommand)]
    Vault(vault::Command),
    /// Safe Caddy changes: apply, reload, prune dead domains.
    #[command(subcommand)]
    Proxy(proxy::Command),
    /// CoreDNS configuration with the ACL.
    #[command(subcommand)]
    Dns(dns::Command),
    /// fail2ban filters and jails.
    #[command(subcommand)]
    Fail2ban(fail2ban::Command),
    /// iptables rules (containers; the host only with --host).
    #[command(subcommand)]
    Firewall(firewall::Command),
    /// Brother mode: give the system container the host's LXD socket (host-root equivalent).
    #[command(subcommand)]
    Brother(brother::Command),
    /// Check every rule of the production runbook; --fix applies the safe fixes.
    Doctor(doctor::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    ///
    /// Example: `gbo completions bash > /etc/bash_completion.d/gbo`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Run one command.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Lifecycle(c) => lifecycle::run(c).await,
        Command::Snapshot(c) => snapshot::run(c).await,
        Command::Migrate(c) => migrate::run(c).await,
        Command::Zfs(c) => zfs::run(c).await,
        Command::Vault(c) => vault::run(c).await,
        Command::Proxy(c) => proxy::run(c).await,
        Command::Dns(c) => dns::run(c).await,
        Command::Fail2ban(c) => fail2ban::run(c).await,
        Command::Firewall(c) => firewall::run(c).await,
        Command::Brother(c) => brother::run(c).await,
        Command::Doctor(a) => doctor::run(a).await,
        Command::Completions { shell } => {
            let mut command = <crate::Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "gbo", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(Outcome::Ok),
            }
        }
    }
}
