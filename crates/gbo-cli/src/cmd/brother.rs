//! `gbo brother`: give the system container the host's LXD socket (host-root equivalent).

use std::path::PathBuf;

use gbo_ops::brother::{self, BrotherOptions};

use crate::output::outln;
use crate::output::{print_json, Format, Outcome};

/// `gbo brother` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Add the `lxd-sock` proxy device (host socket, bind=container, uid 0, gid 0, mode 0660) on a dedicated
    /// profile attached only to the tenant's system container.
    ///
    /// HOST-ROOT EQUIVALENT: with the host's LXD socket the container can create a privileged container that
    /// mounts the host's /, so root in the system container (or whoever takes over botserver) is root on the host,
    /// whether or not the container itself is privileged.
    Enable {
        /// Tenant.
        #[arg(long, default_value = "default")]
        tenant: gbo_components::TenantName,
        /// The profile carrying the device.
        #[arg(long, default_value = brother::DEFAULT_PROFILE)]
        profile: String,
        /// Where the socket appears inside. The seed's /tmp/lxd.sock vanishes when systemd mounts a fresh /tmp.
        #[arg(long, default_value = brother::DEFAULT_SOCKET_PATH)]
        socket_path: String,
        /// The host's LXD socket (detected: LXD_SOCKET, LXD_DIR, snap, Debian).
        #[arg(long)]
        host_socket: Option<PathBuf>,
        /// Allow `--profile default`: every container gets root over the host's LXD.
        #[arg(long)]
        allow_default_profile: bool,
        /// Result format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Remove the device and detach the profile.
    Disable {
        /// Tenant.
        #[arg(long, default_value = "default")]
        tenant: gbo_components::TenantName,
        /// The profile carrying the device.
        #[arg(long, default_value = brother::DEFAULT_PROFILE)]
        profile: String,
    },
}

/// Run a `gbo brother` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Enable { tenant, profile, socket_path, host_socket, allow_default_profile, output } => {
            let lxd = crate::output::lxd_on_host("gbo brother").await?;
            let options = BrotherOptions { profile, socket_path, host_socket, allow_default_profile };
            let report = brother::enable(&lxd, &tenant, &options).await?;
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            match output {
                Format::Json => print_json(&report)?,
                Format::Table => {
                    outln!(
                        "{}: {} on profile {} ({})",
                        report.instance,
                        brother::DEVICE,
                        report.profile,
                        if report.changed { "changed" } else { "unchanged" }
                    );
                    outln!("{} -> host {}", report.socket_path, report.host_socket);
                    outln!("point botserver at it: {}", report.lxd_socket_env);
                }
            }
            Ok(Outcome::Ok)
        }
        Command::Disable { tenant, profile } => {
            let lxd = crate::output::lxd_on_host("gbo brother").await?;
            let changed = brother::disable(&lxd, &tenant, &profile).await?;
            outln!("{}", if changed { "brother mode disabled" } else { "brother mode was not enabled" });
            Ok(Outcome::Ok)
        }
    }
}
