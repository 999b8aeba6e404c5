//! Every `gbo` command. Each area owns one module with its clap arguments and a `run` function; this file only
//! lists them.

use crate::output::{Format, Outcome};

mod adopt;
mod backup;
mod brother;
mod ci;
mod container;
mod dns;
mod doctor;
mod fail2ban;
mod firewall;
mod image;
mod install;
mod migrate;
mod moves;
mod proxy;
mod snapshot;
mod upgrade;
mod vault;
mod zfs;

/// The commands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Detect the LXD socket and initialise a storage pool and the default profile's root disk if missing.
    Setup {
        /// Also create a bridge (lxdbr0) for hosts whose containers should reach the network.
        #[arg(long)]
        network: bool,
    },
    /// Build or list gbo images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// List the catalogue's roles: container, software, ports, dependencies.
    Components {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Show what `install` would change, with the reason for each step (changes nothing).
    Plan(install::InstallArgs),
    /// Install (converge) a tenant's components: plan, apply in dependency order, verify health.
    Install {
        #[command(flatten)]
        args: install::InstallArgs,
        /// Print the plan and stop without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Rebuild a tenant's containers on a newer image (role by role in dependency order: snapshot with data, new
    /// container keeping config, devices, ports and data, health check; a failure restores the previous container
    /// and data and exits 2).
    #[command(disable_version_flag = true)]
    Upgrade(upgrade::Args),
    /// Take over containers built by hand from the seed (`{tenant}-{role}`, botserver-stack/ mounts, proxy devices):
    /// record gbo's keys, rename their devices to the catalogue's, show what the next install would change. Never
    /// recreates a container or moves data.
    Adopt(adopt::Args),
    /// Delete components' containers; host data stays unless --purge.
    Uninstall {
        /// Roles (or container names) to remove.
        #[arg(required = true)]
        roles: Vec<String>,
        /// Tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Also delete the host data: the directories recorded on the tenant's own containers, never one that
        /// another tenant uses.
        #[arg(long)]
        purge: bool,
        /// Do not ask before purging (required without a terminal).
        #[arg(long)]
        yes: bool,
        /// Seconds to wait for another gbo run on the tenant to finish.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        lock_wait: u64,
    },
    /// Containers, state, image, ports, mounts and live health of a tenant. Exit 1 when something is unhealthy.
    Status {
        /// Roles or container names (default: all of the tenant's).
        targets: Vec<String>,
        /// Tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// The local image alias containers are compared with: one running another image is marked for `gbo
        /// upgrade`.
        #[arg(long, env = "GBO_DEFAULT_IMAGE", default_value = gbo_ops::install::DEFAULT_IMAGE, value_name = "ALIAS")]
        image: String,
        /// Output format (JSON shape in docs/json-output.md).
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Start containers (a container name, or --tenant T [ROLE...]).
    Start(container::TargetArgs),
    /// Stop containers.
    Stop(container::TargetArgs),
    /// Restart containers.
    Restart(container::TargetArgs),
    /// Run a command in a container (interactive when stdin is a terminal): `gbo exec default-tables -- psql`.
    Exec {
        /// Container name.
        container: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The journal of a container's role unit (`journalctl -u <role>`).
    Logs {
        /// Container name.
        container: String,
        /// Keep following.
        #[arg(short, long)]
        follow: bool,
        /// Number of lines.
        #[arg(short = 'n', long, default_value_t = 200)]
        lines: u32,
        /// A log file under /opt/gbo/logs instead of the unit's journal: `access` (access.log), `error`,
        /// `postgresql`, or a full name such as access.log.1.
        #[arg(long, value_name = "NAME")]
        file: Option<String>,
    },
    /// Print a container's console log (what its init wrote; also for a container that will not start), as
    /// `lxc console --show-log` does.
    ConsoleLog {
        /// Container name.
        container: String,
    },
    /// Set LXD limits on a container (also settable per role in gbo.toml under [limits.ROLE]).
    Limits {
        /// Container name.
        container: String,
        /// CPUs (limits.cpu).
        #[arg(long)]
        cpu: Option<u32>,
        /// Memory (limits.memory), e.g. 4GB.
        #[arg(long)]
        memory: Option<String>,
    },
    /// Move a tenant's container to another cluster member: snapshot, stop, move, start, health; back to its
    /// origin on failure. Refused while either member is not online.
    Move(moves::MoveArgs),
    /// Move every gbo container off a cluster member (maintenance), dependencies first; the plan is shown first.
    Evacuate(moves::EvacuateArgs),
    /// Container and host-data snapshots: create, list, restore, delete, prune, schedule.
    #[command(subcommand)]
    Snapshot(snapshot::Command),
    /// Whole-tenant backups in a restic-format repository: create, list, verify, restore, prune, schedule.
    #[command(subcommand)]
    Backup(backup::Command),
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
    /// The CI path: connect the runner (-alm-ci) to -system over SSH.
    #[command(subcommand)]
    Ci(ci::Command),
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
    if let (Some(remote), Command::Zfs(_)) = (crate::output::remote_name(), &command) {
        anyhow::bail!("gbo zfs works on this host's ZFS pool; it has no meaning with --remote {remote}");
    }
    match command {
        Command::Setup { network } => install::setup(network).await,
        Command::Image(c) => image::run(c).await,
        Command::Components { output } => install::components(output),
        Command::Plan(args) => install::plan(args).await,
        Command::Install { args, dry_run } => install::install(args, dry_run).await,
        Command::Upgrade(args) => upgrade::run(args).await,
        Command::Adopt(args) => adopt::run(args).await,
        Command::Uninstall { roles, tenant, purge, yes, lock_wait } => {
            install::uninstall(roles, tenant, purge, yes, std::time::Duration::from_secs(lock_wait)).await
        }
        Command::Status { targets, tenant, image, output } => install::status(targets, tenant, image, output).await,
        Command::Start(t) => container::state(t, lxd_client::StateAction::Start).await,
        Command::Stop(t) => container::state(t, lxd_client::StateAction::Stop).await,
        Command::Restart(t) => container::state(t, lxd_client::StateAction::Restart).await,
        Command::Exec { container, command } => container::exec(container, command).await,
        Command::Logs { container, follow, lines, file } => container::logs(container, follow, lines, file).await,
        Command::ConsoleLog { container } => container::console_log(container).await,
        Command::Limits { container, cpu, memory } => container::limits(container, cpu, memory).await,
        Command::Move(a) => moves::run_move(a).await,
        Command::Evacuate(a) => moves::run_evacuate(a).await,
        Command::Snapshot(c) => snapshot::run(c).await,
        Command::Backup(c) => backup::run(c).await,
        Command::Migrate(c) => migrate::run(c).await,
        Command::Zfs(c) => zfs::run(c).await,
        Command::Vault(c) => vault::run(c).await,
        Command::Proxy(c) => proxy::run(c).await,
        Command::Dns(c) => dns::run(c).await,
        Command::Fail2ban(c) => fail2ban::run(c).await,
        Command::Firewall(c) => firewall::run(c).await,
        Command::Brother(c) => brother::run(c).await,
        Command::Doctor(a) => doctor::run(a).await,
        Command::Ci(c) => ci::run(c).await,
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
