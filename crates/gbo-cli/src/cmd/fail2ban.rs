//! `gbo fail2ban`: filters and jails in the proxy and email containers, and on the host with --host.

use std::path::PathBuf;

use gbo_ops::fail2ban::{self, Fail2banOptions};

use crate::output::{print_json, print_table, Format, Outcome};

/// `gbo fail2ban` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Install the caddy-http-flood filter and jail in the proxy container (Debian's sshd jail disabled), the mail
    /// jail in the email container, and with --host the host's sshd jail; restart fail2ban where files changed.
    Apply {
        /// Tenant.
        #[arg(long, default_value = "default")]
        tenant: gbo_components::TenantName,
        /// Also install the host's sshd jail (changes the host).
        #[arg(long)]
        host: bool,
        /// The host's root directory (render there instead of changing `/`).
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Show what would change.
        #[arg(long)]
        dry_run: bool,
        /// Result format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

/// Run a `gbo fail2ban` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Apply { tenant, host, root, dry_run, output } => {
            let options = Fail2banOptions { host, host_root: root, dry_run };
            let report = if !host || tenant_has_containers(&tenant).await? {
                let lxd = crate::output::lxd_on_host("gbo fail2ban").await?;
                fail2ban::apply(&lxd, &tenant, &options).await?
            } else {
                vec![fail2ban::apply_host(&options.host_root, dry_run)?]
            };
            match output {
                Format::Json => print_json(&report)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> = report
                        .iter()
                        .map(|r| {
                            vec![
                                r.target.clone(),
                                if r.changed.is_empty() { "-".into() } else { r.changed.join(" ") },
                                r.action.clone(),
                                r.jails.join(", "),
                            ]
                        })
                        .collect();
                    print_table(&["WHERE", "CHANGED", "ACTION", "JAILS"], &rows);
                }
            }
            Ok(Outcome::Ok)
        }
    }
}

/// With --host alone (no LXD needed) the host part still runs when LXD is absent or the tenant has no containers.
/// A daemon named explicitly (`LXD_SOCKET`, `LXD_DIR`) that cannot be used is an error all the same.
async fn tenant_has_containers(tenant: &gbo_components::TenantName) -> anyhow::Result<bool> {
    let explicit = lxd_client::Flavor::Lxd
        .socket_variables()
        .iter()
        .any(|variable| std::env::var_os(variable).is_some_and(|value| !value.is_empty()));
    let found = async {
        let lxd = crate::output::lxd_on_host("gbo fail2ban").await?;
        Ok::<_, anyhow::Error>(!gbo_ops::inventory::tenant_instances(&lxd, tenant).await?.is_empty())
    };
    match found.await {
        Ok(found) => Ok(found),
        Err(e) if explicit => Err(e),
        Err(_) => Ok(false),
    }
}
