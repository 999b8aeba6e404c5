//! `gbo ci connect`: the seed's CI path (the runner in `-alm-ci` deploys to `-system` over SSH) on a stack gbo built.

use gbo_ops::ci::{self, ConnectOptions};

use crate::output::outln;
use crate::output::{self, Format, Outcome};

/// `gbo ci` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Connect the tenant's CI runner (-alm-ci) to its system container over SSH: the runner's key pair made
    /// inside -alm-ci (the private key never leaves it), its public key authorised for gbuser on -system, the ssh
    /// alias `system` and -system's host key for the runner, the wire between them, and the runner registration
    /// command for Forgejo. Idempotent.
    Connect {
        /// Tenant.
        #[arg(long)]
        tenant: gbo_components::TenantName,
        /// Forgejo's URL as the runner sees it (the alm wire on its own loopback by default).
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        forgejo_url: String,
        /// The runner's labels (the rendered workflows run on `gbo-runner`).
        #[arg(long, default_value = "gbo-runner:host")]
        labels: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
}

/// Run a `gbo ci` command.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Connect { tenant, forgejo_url, labels, output } => {
            let lxd = output::lxd()?;
            let _locks = output::lock_tenants(&lxd, [&tenant]).await?;
            let connected = ci::connect(&lxd, &tenant, &ConnectOptions { forgejo_url, labels }).await?;
            if output == Format::Json {
                output::print_json(&connected)?;
                return Ok(Outcome::Ok);
            }
            outln!("{} -> {} over SSH (alias `{}`)", connected.runner, connected.system, connected.ssh_alias);
            outln!(
                "  wire {}: {}'s 127.0.0.1:22 -> 127.0.0.1:{} ({}){}",
                connected.wire_device,
                connected.runner,
                connected.system_ssh_host_port,
                connected.system,
                if connected.wire_changed { " added" } else { "" }
            );
            outln!(
                "  runner key {} ({}, made and kept inside {})",
                connected.key_fingerprint,
                if connected.key_created { "new" } else { "kept" },
                connected.runner
            );
            outln!("  host key of {}: {}", connected.system, connected.host_key_fingerprint);
            if connected.changed_files.is_empty() {
                outln!("  nothing changed: already connected");
            } else {
                for file in &connected.changed_files {
                    outln!("  wrote {file}");
                }
            }
            outln!("Register the runner with Forgejo: put a registration token (Forgejo: Site administration > Actions > Runners > Create new runner) in {}:/opt/gbo/data/registration-token (mode 0600, owner gbuser), then run:", connected.runner);
            outln!("  {}", connected.registration);
            outln!(
                "Workflows deploy with `gbo-ci deploy --host {}` (gbo-ci workflow render --host {}).",
                connected.workflow_host,
                connected.workflow_host
            );
            Ok(Outcome::Ok)
        }
    }
}
