//! `gbo snapshot`: snapshots of containers and their host data (create, list, restore, delete, prune, schedule).

use std::path::PathBuf;

use anyhow::Context;
use gbo_ops::inventory::ManagedInstance;
use gbo_ops::snapshot::{self, schedule, RetentionPolicy, Span};

use crate::output::outln;
use crate::output::{self, Format, Outcome};

/// `gbo snapshot` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Snapshot a container and its mounted host data (`CONTAINER [NAME]`), or every container of a tenant
    /// (`--tenant T [NAME]`) in parallel under one name.
    Create {
        /// `CONTAINER [NAME]`, or `[NAME]` with --tenant.
        #[arg(value_name = "CONTAINER|NAME")]
        args: Vec<String>,
        /// Every container of this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Let LXD delete the snapshot after this long (`30m`, `12h`, `7d`, `4w`).
        #[arg(long)]
        expires: Option<String>,
        /// Result format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// List snapshots: name, taken at, expires, size where known, and what each covers.
    List {
        /// A container (or use --tenant; with neither, the `default` tenant).
        container: Option<String>,
        /// Every container of this tenant.
        #[arg(long, conflicts_with = "container")]
        tenant: Option<String>,
        /// Result format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Restore a container and the host data its snapshot captured (a safety snapshot is taken first).
    Restore {
        /// Container.
        container: String,
        /// Snapshot.
        name: String,
        /// Do not take a safety snapshot first.
        #[arg(long)]
        no_safety: bool,
    },
    /// Delete a snapshot and the host data it captured.
    Delete {
        /// Container.
        container: String,
        /// Snapshot.
        name: String,
    },
    /// Tiered retention: keep the last N, one per day for D days, one per week for W weeks; the newest always stays.
    Prune {
        /// A container (or use --tenant).
        container: Option<String>,
        /// Every container of this tenant.
        #[arg(long, conflicts_with = "container")]
        tenant: Option<String>,
        #[command(flatten)]
        keep: Keep,
        /// Print exactly what would go, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Result format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Install a timer (systemd, or cron without systemd) running gbo's data-inclusive snapshot and prune.
    Schedule {
        /// A container (or use --tenant).
        container: Option<String>,
        /// Every container of this tenant.
        #[arg(long, conflicts_with = "container")]
        tenant: Option<String>,
        /// @hourly, @daily, @weekly or @monthly.
        #[arg(long, default_value = "@daily")]
        every: String,
        /// Expiry of each snapshot (`30m`, `12h`, `7d`, `4w`).
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        keep: Keep,
        /// Set LXD's own snapshots.schedule/expiry/pattern instead (container only: no host data).
        #[arg(long)]
        lxd_native: bool,
        /// Write the timer files under this root instead of `/` (for packaging and tests).
        #[arg(long, default_value = "/", hide = true)]
        root: PathBuf,
    },
}

/// Retention tiers.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Keep {
    /// Keep the N newest.
    #[arg(long, default_value_t = 0)]
    keep_last: u32,
    /// Keep the newest of each of the D most recent days that have snapshots.
    #[arg(long, default_value_t = 0)]
    keep_daily: u32,
    /// Keep the newest of each of the W most recent weeks that have snapshots.
    #[arg(long, default_value_t = 0)]
    keep_weekly: u32,
}

impl Keep {
    fn policy(self) -> RetentionPolicy {
        RetentionPolicy { keep_last: self.keep_last, keep_daily: self.keep_daily, keep_weekly: self.keep_weekly }
    }
    fn given(self) -> bool {
        self.keep_last + self.keep_daily + self.keep_weekly > 0
    }
}

fn span(value: Option<&str>) -> anyhow::Result<Option<Span>> {
    value.map(|v| v.parse::<Span>().map_err(anyhow::Error::from)).transpose()
}

async fn targets(
    lxd: &lxd_client::Client,
    container: Option<&str>,
    tenant: Option<&str>,
) -> anyhow::Result<Vec<ManagedInstance>> {
    match (container, tenant) {
        (Some(c), None) => Ok(vec![snapshot::container(lxd, c).await?]),
        (None, Some(t)) => Ok(snapshot::tenant_containers(lxd, &gbo_components::TenantName::new(t)?).await?),
        (Some(_), Some(_)) => anyhow::bail!("give either a CONTAINER or --tenant, not both"),
        (None, None) => anyhow::bail!("name a CONTAINER or give --tenant T"),
    }
}

/// Whether `error` says a tenant has no containers (listing it shows nothing; it is no error).
fn is_empty_tenant(error: &anyhow::Error) -> bool {
    matches!(error.downcast_ref::<snapshot::SnapshotError>(), Some(snapshot::SnapshotError::EmptyTenant { .. }))
}

/// Run a `gbo snapshot` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Create { args, tenant, expires, output } => {
            let expires = span(expires.as_deref())?;
            let (container, name) = match (&tenant, args.as_slice()) {
                (Some(_), []) => (None, None),
                (Some(_), [name]) => (None, Some(name.clone())),
                (None, [container]) => (Some(container.clone()), None),
                (None, [container, name]) => (Some(container.clone()), Some(name.clone())),
                (Some(_), _) => anyhow::bail!("with --tenant, give at most one argument: the snapshot NAME"),
                (None, _) => anyhow::bail!("give CONTAINER [NAME], or --tenant T [NAME]"),
            };
            let name = name.unwrap_or_else(|| snapshot::default_name(time::OffsetDateTime::now_utc()));
            let name = snapshot::snapshot_name(&name)?;
            let lxd = output::lxd_on_host("gbo snapshot").await?;
            let containers = targets(&lxd, container.as_deref(), tenant.as_deref()).await?;
            let _locks = output::lock_tenants(&lxd, containers.iter().map(|c| &c.tenant)).await?;
            let results = snapshot::create_many(&lxd, &containers, &name, &snapshot::CreateOptions { expires }).await;
            let mut infos = Vec::new();
            let mut failures = Vec::new();
            for (container, result) in containers.iter().zip(results) {
                match result {
                    Ok(info) => infos.push(info),
                    Err(e) => failures.push(format!("{}: {e}", container.name)),
                }
            }
            print_infos(&infos, output)?;
            if !failures.is_empty() {
                anyhow::bail!("snapshot failed for {} container(s):\n  {}", failures.len(), failures.join("\n  "));
            }
            Ok(Outcome::Ok)
        }
        Command::List { container, tenant, output } => {
            let lxd = output::lxd_on_host("gbo snapshot").await?;
            // Nothing named: the default tenant, as everywhere else.
            let tenant = match (&container, tenant) {
                (None, None) => Some(gbo_components::TenantName::DEFAULT.to_string()),
                (_, tenant) => tenant,
            };
            let containers = match targets(&lxd, container.as_deref(), tenant.as_deref()).await {
                Err(e) if container.is_none() && is_empty_tenant(&e) => Vec::new(),
                other => other?,
            };
            let mut infos = Vec::new();
            for c in &containers {
                infos.extend(snapshot::list(&lxd, c).await?);
            }
            print_infos(&infos, output)?;
            Ok(Outcome::Ok)
        }
        Command::Restore { container, name, no_safety } => {
            let name = snapshot::snapshot_name(&name).or_else(|_| {
                lxd_client::SnapshotName::new(name.as_str()).with_context(|| format!("invalid snapshot name `{name}`"))
            })?;
            let lxd = output::lxd_on_host("gbo snapshot").await?;
            let c = snapshot::container(&lxd, &container).await?;
            let _locks = output::lock_tenants(&lxd, [&c.tenant]).await?;
            let report = snapshot::restore(&lxd, &c, &name, !no_safety).await?;
            if let Some(safety) = &report.safety_snapshot {
                eprintln!("safety snapshot taken first: {}/{safety} (restore it to undo)", report.container);
            }
            let mut parts: Vec<String> = report.data_restored.iter().map(|p| p.display().to_string()).collect();
            parts.extend(report.volumes_restored.iter().map(|v| format!("volume {v}")));
            let data = if parts.is_empty() {
                "container only (this snapshot captured no host data)".to_string()
            } else {
                format!("container and {}", parts.join(", "))
            };
            outln!("restored {}/{}: {data}", report.container, report.snapshot);
            Ok(Outcome::Ok)
        }
        Command::Delete { container, name } => {
            let name = lxd_client::SnapshotName::new(name.as_str())
                .with_context(|| format!("invalid snapshot name `{name}`"))?;
            let lxd = output::lxd_on_host("gbo snapshot").await?;
            let c = snapshot::container(&lxd, &container).await?;
            let _locks = output::lock_tenants(&lxd, [&c.tenant]).await?;
            snapshot::delete(&lxd, &c, &name).await?;
            outln!("deleted {container}/{name}");
            Ok(Outcome::Ok)
        }
        Command::Prune { container, tenant, keep, dry_run, output } => {
            keep.policy().validate()?;
            let lxd = output::lxd_on_host("gbo snapshot").await?;
            let containers = targets(&lxd, container.as_deref(), tenant.as_deref()).await?;
            let _locks = if dry_run {
                Vec::new()
            } else {
                output::lock_tenants(&lxd, containers.iter().map(|c| &c.tenant)).await?
            };
            let mut reports = Vec::new();
            for c in &containers {
                reports.push(snapshot::prune(&lxd, c, keep.policy(), dry_run).await?);
            }
            match output {
                Format::Json => output::print_json(&reports)?,
                Format::Table => {
                    let mut rows = Vec::new();
                    for r in &reports {
                        for v in &r.verdicts {
                            let action = if v.keep() {
                                format!("keep ({})", v.kept_by.join(", "))
                            } else if dry_run {
                                "would delete".into()
                            } else {
                                "deleted".into()
                            };
                            rows.push(vec![r.container.clone(), v.name.clone(), snapshot::rfc3339(v.taken_at), action]);
                        }
                        for o in &r.orphaned_data_removed {
                            rows.push(vec![
                                r.container.clone(),
                                o.clone(),
                                String::new(),
                                "host data of an expired snapshot removed".into(),
                            ]);
                        }
                    }
                    output::print_table(&["CONTAINER", "SNAPSHOT", "TAKEN AT", "ACTION"], &rows);
                }
            }
            Ok(Outcome::Ok)
        }
        Command::Schedule { container, tenant, every, expires, keep, lxd_native, root } => {
            let every: schedule::Every = every.parse()?;
            let expires = span(expires.as_deref())?;
            if keep.given() {
                keep.policy().validate()?;
            }
            let lxd = output::lxd_on_host("gbo snapshot").await?;
            let containers = targets(&lxd, container.as_deref(), tenant.as_deref()).await?;
            if lxd_native {
                if keep.given() {
                    anyhow::bail!("--keep-* cannot be used with --lxd-native: LXD's own schedule only knows an expiry (--expires)");
                }
                schedule::set_lxd_native(&lxd, &containers, every, expires).await?;
                let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
                outln!(
                    "LXD will snapshot {} {} (expiry {}). These snapshots cover the container only, not its host data; use `gbo snapshot schedule` without --lxd-native for data-inclusive snapshots.",
                    names.join(", "),
                    every.cron(),
                    expires.map(|e| e.to_lxd_expiry()).unwrap_or_else(|| "none".into())
                );
                return Ok(Outcome::Ok);
            }
            let target = match (&container, &tenant) {
                (Some(c), _) => schedule::ScheduleTarget::Container(c.clone()),
                (None, Some(t)) => schedule::ScheduleTarget::Tenant(t.clone()),
                (None, None) => anyhow::bail!("name a CONTAINER or give --tenant T"),
            };
            let gbo = std::env::current_exe().context("cannot find the gbo executable's path")?;
            let job = schedule::snapshot_job(&gbo, &target, every, expires, keep.given().then(|| keep.policy()));
            let kind = schedule::TimerKind::detect();
            let written = schedule::install(&job, kind, &root)?;
            for path in &written {
                outln!("wrote {}", path.display());
            }
            if kind == schedule::TimerKind::Systemd {
                outln!("enable it with: systemctl daemon-reload && systemctl enable --now {}.timer", job.name);
            }
            Ok(Outcome::Ok)
        }
    }
}

fn print_infos(infos: &[snapshot::SnapshotInfo], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => output::print_json(&infos),
        Format::Table => {
            let rows: Vec<Vec<String>> = infos
                .iter()
                .map(|i| {
                    let covers = if i.data.is_empty() && i.volumes.is_empty() {
                        i.covers.clone()
                    } else {
                        format!(
                            "{} ({})",
                            i.covers,
                            i.data
                                .iter()
                                .map(|d| format!("{}:{}", d.host_path.display(), d.method.label()))
                                .chain(i.volumes.iter().map(|v| format!("volume {v}")))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    vec![
                        i.container.clone(),
                        i.name.clone(),
                        i.taken_at.clone(),
                        i.expires_at.clone().unwrap_or_else(|| "never".into()),
                        i.size.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                        covers,
                    ]
                })
                .collect();
            output::print_table(&["CONTAINER", "SNAPSHOT", "TAKEN AT", "EXPIRES", "SIZE", "COVERS"], &rows);
            Ok(())
        }
    }
}
