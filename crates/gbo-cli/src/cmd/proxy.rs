//! `gbo proxy`: safe Caddy changes (apply, reload, prune-dead-domains).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use gbo_ops::proxy::resolve::{Resolver, StaticResolver, SystemResolver, Verdict};
use gbo_ops::proxy::{self, ApplyOptions, ApplyReport, ProxyTarget};

use crate::output::outln;
use crate::output::{print_json, print_table, Format, Outcome};

/// `gbo proxy` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Install NEWFILE as the tenant's Caddyfile: back up the current one, refuse lost sites and a missing storage
    /// block, validate as the caddy user, reload (never restart), probe every site, restore on failure.
    Apply {
        /// The new Caddyfile (on this machine).
        file: PathBuf,
        #[command(flatten)]
        common: Common,
        /// A site that may disappear (repeat, or separate with commas). Any other lost site refuses the change.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        allow_removal: Vec<String>,
    },
    /// Validate the current Caddyfile as the caddy user and reload Caddy (never restart); probe the sites.
    Reload {
        #[command(flatten)]
        common: Common,
    },
    /// Resolve every site domain and remove those with no DNS record (they make Caddy loop on certificates), then
    /// restart Caddy. When nothing resolves at all the verdict is "unknown" and nothing is removed.
    PruneDeadDomains {
        #[command(flatten)]
        common: Common,
        /// Seconds to wait for each lookup.
        #[arg(long, default_value_t = 3)]
        resolve_timeout: u64,
        /// Resolve from a file instead of DNS (`name ip...`, `name NXDOMAIN`, `name FAIL` per line).
        #[arg(long, hide = true, env = "GBO_RESOLVER_FILE")]
        resolver_file: Option<PathBuf>,
    },
}

/// Options shared by the subcommands.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Tenant whose proxy container is changed.
    #[arg(long, default_value = "default")]
    tenant: gbo_components::TenantName,
    /// Check and print what would happen; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Do not probe the sites after the change.
    #[arg(long)]
    no_probe: bool,
    /// Seconds each site may take to answer the probe.
    #[arg(long, default_value_t = 15)]
    probe_timeout: u64,
    /// Result format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

impl Common {
    fn options(&self) -> ApplyOptions {
        ApplyOptions {
            allow_removal: Vec::new(),
            dry_run: self.dry_run,
            probe: !self.no_probe,
            probe_timeout: Duration::from_secs(self.probe_timeout),
        }
    }
}

/// Run a `gbo proxy` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Apply { file, common, allow_removal } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read the new Caddyfile {}", file.display()))?;
            let lxd = crate::output::lxd_on_host("gbo proxy").await?;
            let target = ProxyTarget::find(&lxd, &common.tenant).await?;
            let _locks = crate::output::lock_tenants(&lxd, [&common.tenant]).await?;
            let options = ApplyOptions { allow_removal, ..common.options() };
            let report = proxy::apply(&lxd, &target, &text, &options)
                .await
                .with_context(|| format!("{} was not applied", file.display()))?;
            print_report(&report, common.output)?;
        }
        Command::Reload { common } => {
            let lxd = crate::output::lxd_on_host("gbo proxy").await?;
            let target = ProxyTarget::find(&lxd, &common.tenant).await?;
            let _locks = crate::output::lock_tenants(&lxd, [&common.tenant]).await?;
            let report = proxy::reload(&lxd, &target, &common.options()).await?;
            print_report(&report, common.output)?;
        }
        Command::PruneDeadDomains { common, resolve_timeout, resolver_file } => {
            let resolver: Box<dyn Resolver> = match &resolver_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read the resolver file {}", path.display()))?;
                    Box::new(
                        StaticResolver::parse(&text)
                            .map_err(|e| anyhow::anyhow!("resolver file {}: {e}", path.display()))?,
                    )
                }
                None => Box::new(SystemResolver { timeout: Duration::from_secs(resolve_timeout.max(1)) }),
            };
            let lxd = crate::output::lxd_on_host("gbo proxy").await?;
            let target = ProxyTarget::find(&lxd, &common.tenant).await?;
            let _locks = crate::output::lock_tenants(&lxd, [&common.tenant]).await?;
            let report = proxy::prune_dead_domains(&lxd, &target, resolver.as_ref(), &common.options()).await?;
            match common.output {
                Format::Json => print_json(&report)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> = report
                        .domains
                        .iter()
                        .map(|d| {
                            let (verdict, detail) = match &d.verdict {
                                Verdict::Alive { addresses } => {
                                    ("alive", addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" "))
                                }
                                Verdict::Dead => {
                                    ("dead", if common.dry_run { "would be removed".into() } else { "removed".into() })
                                }
                                Verdict::Unknown { reason } => ("unknown", reason.clone()),
                            };
                            vec![d.domain.clone(), verdict.to_string(), detail]
                        })
                        .collect();
                    print_table(&["DOMAIN", "VERDICT", "DETAIL"], &rows);
                    if let Some(apply) = &report.apply {
                        eprintln!();
                        print_summary(apply);
                    }
                }
            }
        }
    }
    Ok(Outcome::Ok)
}

fn print_report(report: &ApplyReport, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(report),
        Format::Table => {
            print_summary(report);
            if !report.probes.is_empty() {
                let rows: Vec<Vec<String>> = report
                    .probes
                    .iter()
                    .map(|p| {
                        vec![
                            p.host.clone(),
                            p.url.clone(),
                            p.status.map(|s| s.to_string()).unwrap_or_else(|| p.error.clone().unwrap_or_default()),
                        ]
                    })
                    .collect();
                print_table(&["SITE", "PROBED", "ANSWER"], &rows);
            }
            Ok(())
        }
    }
}

fn print_summary(report: &ApplyReport) {
    let what = if report.dry_run {
        "dry run: nothing changed".to_string()
    } else if !report.changed && report.action == "none" {
        "unchanged".to_string()
    } else {
        format!("{} ({})", report.action, report.config)
    };
    outln!("{}: {what}", report.instance);
    outln!("sites: {} before, {} after", report.sites_before.len(), report.sites_after.len());
    if !report.added.is_empty() {
        outln!("added: {}", report.added.join(", "));
    }
    if !report.removed.is_empty() {
        outln!("removed: {}", report.removed.join(", "));
    }
    if let Some(backup) = &report.backup {
        outln!("backup: {backup}");
    }
}
