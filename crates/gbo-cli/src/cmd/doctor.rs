//! `gbo doctor`: every rule of the production runbook as a check. Exit 0 when all pass, 1 when any fails, 2 when
//! doctor itself cannot run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gbo_ops::doctor::{self, DoctorOptions, Verdict};
use gbo_ops::proxy::resolve::{Resolver, StaticResolver, SystemResolver};

use crate::output::outln;
use crate::output::{print_json, print_table, Format, Outcome};

/// Options of `gbo doctor`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tenant to check (default: the tenant file's, else `default`).
    #[arg(long)]
    pub tenant: Option<gbo_components::TenantName>,
    /// The tenant file the containers are checked against (default: ./gbo.toml when it exists, else the
    /// defaults): for example whether the system container may be privileged (`[system] privileged = true`).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Apply the safe fixes (loopback rule, fail2ban jails, botui's BOTSERVER_URL, botserver's owner, a removed proxy
    /// device re-added from its recorded port), then check
    /// again.
    #[arg(long)]
    pub fix: bool,
    /// Result format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Fail when ZFS snapshots use more than this percentage of their pool.
    #[arg(long, default_value_t = 30)]
    pub zfs_snapshot_percent: u8,
    /// Seconds to wait for each DNS lookup of a site domain.
    #[arg(long, default_value_t = 3)]
    pub resolve_timeout: u64,
    /// Resolve from a file instead of DNS (`name ip...`, `name NXDOMAIN`, `name FAIL` per line).
    #[arg(long, hide = true, env = "GBO_RESOLVER_FILE")]
    pub resolver_file: Option<PathBuf>,
}

/// Run the checks.
pub async fn run(args: Args) -> anyhow::Result<Outcome> {
    let resolver: Arc<dyn Resolver> = match &args.resolver_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the resolver file {}", path.display()))?;
            Arc::new(
                StaticResolver::parse(&text).map_err(|e| anyhow::anyhow!("resolver file {}: {e}", path.display()))?,
            )
        }
        None => Arc::new(SystemResolver { timeout: Duration::from_secs(args.resolve_timeout.max(1)) }),
    };
    let path = args.file.clone().or_else(|| Some(PathBuf::from("gbo.toml")).filter(|p| p.is_file()));
    let tenant_file = match &path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading the tenant file {}", p.display()))?;
            gbo_components::TenantFile::parse(&text).with_context(|| format!("in {}", p.display()))?
        }
        None => gbo_components::TenantFile::default(),
    };
    let tenant = match &args.tenant {
        Some(t) => t.clone(),
        None => tenant_file.tenant.clone(),
    };
    let lxd = crate::output::lxd_on_host("gbo doctor").await?;
    let options =
        DoctorOptions { fix: args.fix, tenant_file, resolver, zfs_snapshot_percent: args.zfs_snapshot_percent };
    let report = doctor::run(&lxd, &tenant, &options).await?;
    match args.output {
        Format::Json => print_json(&report)?,
        Format::Table => {
            outln!("tenant {}: {} layout ({} containers)", report.tenant, report.layout, report.containers.len());
            let rows: Vec<Vec<String>> = report
                .checks
                .iter()
                .map(|c| {
                    let verdict = match c.verdict {
                        Verdict::Pass if c.fixed => "FIXED",
                        Verdict::Pass => "ok",
                        Verdict::Fail => "FAIL",
                        Verdict::Warn => "warn",
                        Verdict::Skip => "skip",
                    };
                    let fix =
                        if c.verdict == Verdict::Fail { c.fix.clone().unwrap_or_default() } else { String::new() };
                    vec![verdict.to_string(), c.id.to_string(), c.target.clone(), c.evidence.clone(), fix]
                })
                .collect();
            print_table(&["VERDICT", "CHECK", "WHERE", "EVIDENCE", "FIX"], &rows);
        }
    }
    Ok(if report.exit_code() == 0 { Outcome::Ok } else { Outcome::Problems })
}
