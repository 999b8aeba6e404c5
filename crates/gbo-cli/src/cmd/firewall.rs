//! `gbo firewall`: iptables in the system container, and on the host only with --host.

use std::path::PathBuf;

use gbo_ops::firewall::{self, FirewallOptions};

use crate::output::{print_json, print_table, Format, Outcome};

/// `gbo firewall` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Loopback ACCEPT first in INPUT, the cache port dropped from outside, rules persisted to
    /// /etc/iptables/rules.v4 (no duplicates on repeated runs) and restored at boot; ufw's forward policy checked.
    Apply {
        /// Tenant.
        #[arg(long, default_value = "default")]
        tenant: gbo_components::TenantName,
        /// TCP ports dropped from outside (repeat or comma-separate).
        #[arg(long, value_delimiter = ',', default_values_t = vec![6379u16])]
        drop_port: Vec<u16>,
        /// Also change the host (a wrong DROP can cut a machine off: only when asked).
        #[arg(long)]
        host: bool,
        /// The host's root directory: other than `/`, only the rules file under it is merged.
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

/// Run a `gbo firewall` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Apply { tenant, drop_port, host, root, dry_run, output } => {
            let options = FirewallOptions { dropped_ports: drop_port, host, host_root: root, dry_run };
            let lxd = crate::output::lxd_on_host("gbo firewall").await?;
            let report = firewall::apply(&lxd, &tenant, &options).await?;
            let mut warned = false;
            match output {
                Format::Json => print_json(&report)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> = report
                        .iter()
                        .map(|r| {
                            vec![
                                r.target.clone(),
                                if r.changes.is_empty() { "none".into() } else { r.changes.join("; ") },
                                r.persisted.to_string(),
                                r.input_rules.join(" | "),
                            ]
                        })
                        .collect();
                    print_table(&["WHERE", "CHANGES", "PERSISTED", "INPUT"], &rows);
                }
            }
            for r in &report {
                if let Some(policy) = &r.ufw {
                    if policy != "ACCEPT" {
                        eprintln!("warning: {}: ufw DEFAULT_FORWARD_POLICY is {policy}; containers need ACCEPT (/etc/default/ufw)", r.target);
                        warned = true;
                    }
                }
            }
            Ok(if warned { Outcome::Problems } else { Outcome::Ok })
        }
    }
}
