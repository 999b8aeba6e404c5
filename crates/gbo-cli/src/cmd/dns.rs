//! `gbo dns`: the CoreDNS Corefile with the acl, reloaded by SIGHUP to its pid.

use gbo_ops::dns;

use crate::output::outln;
use crate::output::{print_json, Format, Outcome};

/// `gbo dns` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Render the Corefile (one block per zone with the acl: ANY only from 10/8 and 127/8; A, AAAA, MX from
    /// anywhere; the rest blocked), create missing zone files, and SIGHUP the coredns process by its pid.
    Apply {
        /// Tenant.
        #[arg(long, default_value = "default")]
        tenant: gbo_components::TenantName,
        /// A zone served (repeat or comma-separate).
        #[arg(long, value_delimiter = ',', required = true)]
        zone: Vec<String>,
        /// The port CoreDNS serves inside the container.
        #[arg(long, default_value_t = 53)]
        port: u16,
        /// Result format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

/// Run a `gbo dns` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Apply { tenant, zone, port, output } => {
            let lxd = crate::output::lxd_on_host("gbo dns").await?;
            let report = dns::apply(&lxd, &tenant, &zone, port).await?;
            match output {
                Format::Json => print_json(&report)?,
                Format::Table => {
                    outln!(
                        "{}: {}",
                        report.instance,
                        if report.changed.is_empty() {
                            "unchanged".into()
                        } else {
                            format!("wrote {}", report.changed.join(", "))
                        }
                    );
                    match report.reloaded_pid {
                        Some(pid) => outln!("SIGHUP sent to pid {pid} ({})", report.pid_source),
                        None => outln!("{}", report.pid_source),
                    }
                }
            }
            Ok(Outcome::Ok)
        }
    }
}
