//! `gbo backup`: whole-tenant backups in a restic-format repository (docs/backup.md).

use std::path::PathBuf;
use std::time::Duration;

use gbo_ops::backup::{self, BackupEvent, RepoAccess, Retention};
use gbo_ops::events::{human_bytes, InstallEvent};

use crate::output::outln;
use crate::output::progress::{Lines, Style};
use crate::output::{self, Format, Outcome};

/// Where a repository is and how to open it.
#[derive(clap::Args, Debug)]
pub struct RepoArgs {
    /// The repository: a local directory (created on the first `create` when missing or empty).
    #[arg(long, value_name = "DIR")]
    repo: PathBuf,
    /// A file whose first line is the repository password (mode 0600, yours; restic's own flag). Never give the
    /// password as an argument or in the environment.
    #[arg(long, value_name = "FILE")]
    password_file: PathBuf,
}

impl RepoArgs {
    fn access(&self) -> anyhow::Result<RepoAccess> {
        Ok(RepoAccess::new(&self.repo, &self.password_file)?)
    }
}

/// `gbo backup` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Back up a whole tenant: every role's data, conf and logs (consistent per role), its containers'
    /// configuration, ports, devices, image identity and secrets.
    Create {
        /// Tenant.
        #[arg(long, value_parser = super::install::parse_tenant)]
        tenant: gbo_components::TenantName,
        #[command(flatten)]
        repo: RepoArgs,
        /// The tenant file to store with the backup.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Seconds to wait for another run on the repository or the tenant.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        lock_wait: u64,
        /// Result format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// List the backups in a repository.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        repo: RepoArgs,
        /// Result format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Check the repository and read every pack back (restic's `check --read-data`). Exit 1 when damaged.
    Verify {
        #[command(flatten)]
        repo: RepoArgs,
        /// Check the structure only (do not read the data back).
        #[arg(long)]
        no_read_data: bool,
        /// Result format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Recreate a tenant from a backup on this LXD (or the one --remote or LXD_SOCKET names): the plan first.
    Restore {
        /// The tenant backed up.
        #[arg(long, value_parser = super::install::parse_tenant)]
        tenant: gbo_components::TenantName,
        #[command(flatten)]
        repo: RepoArgs,
        /// The backup id (default: the newest complete one).
        #[arg(long)]
        backup: Option<String>,
        /// Restore as another tenant.
        #[arg(long = "as", value_name = "NEW", value_parser = super::install::parse_tenant)]
        as_tenant: Option<gbo_components::TenantName>,
        /// Stack dir on this host (default: the recorded one).
        #[arg(long)]
        stack_dir: Option<PathBuf>,
        /// Restore over the existing tenant (its containers and their volumes are snapshotted first; undone from
        /// that snapshot when a volumes-mode restore fails).
        #[arg(long)]
        replace: bool,
        /// Image for the containers (default: install's default).
        #[arg(long)]
        image: Option<String>,
        /// The cluster member the containers and their volumes go to (default: the placement in the backed-up
        /// tenant file, else the member gbo talks to).
        #[arg(long, value_name = "MEMBER")]
        target: Option<String>,
        /// Show the plan and stop.
        #[arg(long)]
        dry_run: bool,
        /// Result format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Forget a tenant's old backups by restic's rules and remove the data no backup uses.
    Prune {
        /// Tenant.
        #[arg(long, value_parser = super::install::parse_tenant)]
        tenant: gbo_components::TenantName,
        #[command(flatten)]
        repo: RepoArgs,
        /// Keep the last N backups.
        #[arg(long)]
        keep_last: Option<u32>,
        /// Keep the newest backup of each of the last N hours.
        #[arg(long)]
        keep_hourly: Option<u32>,
        /// Keep the newest backup of each of the last N days.
        #[arg(long)]
        keep_daily: Option<u32>,
        /// Keep the newest backup of each of the last N weeks.
        #[arg(long)]
        keep_weekly: Option<u32>,
        /// Keep the newest backup of each of the last N months.
        #[arg(long)]
        keep_monthly: Option<u32>,
        /// Keep the newest backup of each of the last N years.
        #[arg(long)]
        keep_yearly: Option<u32>,
        /// Decide and show, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Result format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Install a systemd timer that backs the tenant up (and prunes, with --prune).
    Schedule {
        /// Tenant.
        #[arg(long, value_parser = super::install::parse_tenant)]
        tenant: gbo_components::TenantName,
        #[command(flatten)]
        repo: RepoArgs,
        /// systemd calendar expression.
        #[arg(long, default_value = "daily")]
        on_calendar: String,
        /// Prune after each backup with these options, e.g. "--keep-daily 7 --keep-weekly 4".
        #[arg(long, allow_hyphen_values = true)]
        prune: Option<String>,
        /// Where the unit files go.
        #[arg(long, default_value = "/etc/systemd/system")]
        unit_dir: PathBuf,
    },
}

/// Run a `gbo backup` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Create { tenant, repo, file, lock_wait, output } => {
            let access = repo.access()?;
            // Host storage is read from this host's directories: refused through a remote on another machine.
            let lxd = output::lxd_for_storage("gbo backup create", &tenant, None).await?;
            let lines = Lines::new(Style::for_output(output));
            let events = |e: &BackupEvent| lines.show(e);
            let options = backup::CreateOptions {
                tenant_file: file,
                lock_wait: Duration::from_secs(lock_wait),
                ..Default::default()
            };
            let result = backup::create(&lxd, &tenant, &access, &options, &events).await;
            lines.close();
            let report = result?;
            match output {
                Format::Json => output::print_json(&report)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> = report
                        .roles
                        .iter()
                        .map(|r| {
                            vec![
                                r.container.clone(),
                                r.snapshot[..8.min(r.snapshot.len())].to_string(),
                                r.files.to_string(),
                                human_bytes(r.bytes),
                                human_bytes(r.added),
                            ]
                        })
                        .collect();
                    output::print_table(&["CONTAINER", "SNAPSHOT", "FILES", "READ", "ADDED"], &rows);
                    outln!(
                        "backup {} of tenant {} stored in {} ({} added)",
                        report.backup,
                        report.tenant,
                        report.repo.display(),
                        human_bytes(report.added)
                    );
                }
            }
            Ok(Outcome::Ok)
        }
        Command::List { tenant, repo, output } => {
            let access = repo.access()?;
            let backups = backup::list(&access, tenant.as_deref()).await?;
            match output {
                Format::Json => output::print_json(&backups)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> = backups
                        .iter()
                        .map(|b| {
                            vec![
                                b.backup.clone(),
                                b.tenant.clone(),
                                b.time.clone(),
                                b.hostname.clone(),
                                b.roles.join(","),
                                if b.complete { "yes".into() } else { "no (interrupted)".into() },
                                human_bytes(b.bytes),
                            ]
                        })
                        .collect();
                    output::print_table(&["BACKUP", "TENANT", "TIME", "HOST", "ROLES", "COMPLETE", "SIZE"], &rows);
                }
            }
            Ok(Outcome::Ok)
        }
        Command::Verify { repo, no_read_data, output } => {
            let access = repo.access()?;
            let report = backup::verify(&access, !no_read_data).await?;
            match output {
                Format::Json => output::print_json(&report)?,
                Format::Table => {
                    for w in &report.warnings {
                        eprintln!("warning: {w}");
                    }
                    for e in &report.errors {
                        outln!("error: {e}");
                    }
                    for p in &report.damaged_packs {
                        outln!("damaged pack: {}", access.repo.join(p).display());
                    }
                    if report.ok() {
                        outln!(
                            "{}: no errors{}",
                            access.repo.display(),
                            if report.read_data { " (every pack read back)" } else { "" }
                        );
                    }
                }
            }
            Ok(if report.ok() { Outcome::Ok } else { Outcome::Problems })
        }
        Command::Restore {
            tenant,
            repo,
            backup: id,
            as_tenant,
            stack_dir,
            replace,
            image,
            target,
            dry_run,
            output,
        } => {
            let access = repo.access()?;
            let lxd = output::lxd()?;
            // A host-storage backup needs the daemon's containers on this machine; the library refuses it (exit 2,
            // naming the remote) once it has read which mode the backup is.
            let host_refused = output::site(&lxd).await?.require_host("gbo backup restore").err();
            let options = backup::RestoreOptions {
                backup: id,
                as_tenant,
                stack_dir,
                replace,
                image,
                dry_run,
                target,
                host_refused,
                ..Default::default()
            };
            let show_plan = |plan: &backup::restore::RestorePlan| {
                eprintln!(
                    "restore plan: backup {} ({}) of tenant {} -> tenant {} in {}",
                    plan.backup,
                    plan.taken_at,
                    plan.from_tenant,
                    plan.tenant,
                    plan.stack_dir.display()
                );
                eprintln!("  roles: {}", plan.roles.join(", "));
                for p in &plan.ports {
                    if p.kept {
                        eprintln!("  port {}.{}: {} (kept)", p.role, p.name, p.recorded);
                    } else {
                        eprintln!("  port {}.{}: {} is taken here: a new one is allocated", p.role, p.name, p.recorded);
                    }
                }
                if !plan.existing.is_empty() {
                    eprintln!(
                        "  existing containers: {} ({})",
                        plan.existing.join(", "),
                        if replace { "snapshotted, then replaced" } else { "refused without --replace" }
                    );
                }
                for v in &plan.volumes {
                    let on = v.member.as_ref().map(|m| format!(" on member {m}")).unwrap_or_default();
                    match (v.replaced, replace) {
                        (false, _) => eprintln!("  volume {}/{}{on}: created from the backup", v.pool, v.volume),
                        (true, true) => eprintln!(
                            "  volume {}/{}{on}: snapshotted, then its content replaced by the backup's",
                            v.pool, v.volume
                        ),
                        (true, false) => {
                            eprintln!("  volume {}/{}{on}: exists (refused without --replace)", v.pool, v.volume)
                        }
                    }
                }
            };
            let lines = Lines::new(Style::for_output(output));
            let events = |e: &BackupEvent| lines.show(e);
            let install_events = |e: &InstallEvent| lines.show(e);
            let result = backup::restore(&lxd, &access, &tenant, &options, &show_plan, &events, &install_events).await;
            lines.close();
            let report = result?;
            match output {
                Format::Json => output::print_json(&report)?,
                Format::Table => {
                    if !report.applied {
                        outln!("dry run: nothing changed");
                        return Ok(Outcome::Ok);
                    }
                    let rows: Vec<Vec<String>> = report
                        .health
                        .iter()
                        .map(|(c, ok, d)| {
                            vec![c.clone(), if *ok { "healthy".into() } else { "UNHEALTHY".into() }, d.clone()]
                        })
                        .collect();
                    output::print_table(&["CONTAINER", "HEALTH", "DETAIL"], &rows);
                    if let Some(s) = &report.safety_snapshot {
                        outln!(
                            "what was replaced is in snapshot {s} of each container (and of its volumes): `gbo snapshot restore CONTAINER {s}` brings it back, `gbo snapshot delete CONTAINER {s}` drops it"
                        );
                    }
                    if report.checked_tables > 0 {
                        outln!(
                            "{} tables hold exactly the rows the backup recorded; the application role reads and writes them",
                            report.checked_tables
                        );
                    }
                    outln!("tenant {} restored from backup {}", report.plan.tenant, report.plan.backup);
                }
            }
            Ok(if report.health.iter().all(|(_, ok, _)| *ok) { Outcome::Ok } else { Outcome::Problems })
        }
        Command::Prune {
            tenant,
            repo,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            dry_run,
            output,
        } => {
            let access = repo.access()?;
            let retention = Retention {
                last: keep_last,
                hourly: keep_hourly,
                daily: keep_daily,
                weekly: keep_weekly,
                monthly: keep_monthly,
                yearly: keep_yearly,
            };
            let report = backup::prune(&access, tenant.as_str(), retention, dry_run, Duration::from_secs(60)).await?;
            match output {
                Format::Json => output::print_json(&report)?,
                Format::Table => {
                    for (id, reasons) in &report.kept {
                        outln!("keep   {id}  ({})", reasons.join(", "));
                    }
                    for id in &report.forgotten {
                        outln!("forget {id}");
                    }
                    outln!(
                        "{} snapshot(s) {}",
                        report.snapshots_removed,
                        if report.applied { "removed, unused data pruned" } else { "would be removed (dry run)" }
                    );
                }
            }
            Ok(Outcome::Ok)
        }
        Command::Schedule { tenant, repo, on_calendar, prune, unit_dir } => {
            backup::schedule::check_calendar(&on_calendar)?;
            let prune = prune.as_deref().map(backup::schedule::parse_prune).transpose()?;
            let access = repo.access()?;
            let gbo = std::env::current_exe()?;
            // The unit runs from `/`: relative paths are made absolute here.
            let (repo_dir, password_file) =
                (std::path::absolute(&access.repo)?, std::path::absolute(&access.password_file)?);
            for (what, path) in [("--repo", &repo_dir), ("--password-file", &password_file), ("gbo", &gbo)] {
                backup::schedule::check_path(what, path)?;
            }
            let (service, timer) = backup::schedule::render(
                &gbo,
                tenant.as_str(),
                &repo_dir,
                &password_file,
                &on_calendar,
                prune.as_ref(),
            );
            let name = backup::schedule::unit_name(tenant.as_str());
            let dir = gbo_ops::hostfs::HostDir::create_root(&unit_dir, 0o755)?;
            dir.write_file(std::path::Path::new(&format!("{name}.service")), service.as_bytes(), 0o644, None, 0o755)?;
            dir.write_file(std::path::Path::new(&format!("{name}.timer")), timer.as_bytes(), 0o644, None, 0o755)?;
            outln!(
                "wrote {name}.service and {name}.timer in {}; enable with `systemctl daemon-reload && systemctl enable --now {name}.timer`",
                unit_dir.display()
            );
            Ok(Outcome::Ok)
        }
    }
}
