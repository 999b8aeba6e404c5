//! `gbo zfs`: snapshot usage, daily snapshots and the rolling window on the host pool.

use std::path::PathBuf;

use anyhow::Context;
use gbo_ops::events::human_bytes;
use gbo_ops::snapshot::schedule;
use gbo_ops::zfs::{self, Zfs};

use crate::output::outln;
use crate::output::{self, Format, Outcome};

/// `gbo zfs` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Snapshots by space used, the pools' totals, and the CI container's snapshots flagged.
    Usage {
        /// Only this dataset and its children.
        dataset: Option<String>,
        /// Result format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Take today's `@gbo-daily-YYYY-MM-DD` snapshot of each dataset.
    Snapshot {
        /// The daily snapshot (the only kind for now; says what the name will be).
        #[arg(long, required = true)]
        daily: bool,
        /// Datasets.
        #[arg(required = true)]
        datasets: Vec<String>,
    },
    /// Destroy gbo's daily snapshots older than the window, keeping at least --min-keep per dataset; batched where
    /// ZFS can. Snapshots gbo did not make are kept and listed unless --all-unowned; LXD's and `gbo snapshot`'s
    /// never go.
    Prune {
        /// The window in days.
        #[arg(long, default_value_t = 7)]
        keep_days: u32,
        /// Never keep fewer than this many snapshots of a dataset.
        #[arg(long, default_value_t = 7)]
        min_keep: usize,
        /// Datasets (all when none).
        datasets: Vec<String>,
        /// Show what would go and the space ZFS says it would reclaim; destroy nothing.
        #[arg(long)]
        dry_run: bool,
        /// Include snapshots gbo did not make (zfs-auto-snapshot, sanoid, by hand), listed before anything goes.
        /// Never LXD's own snapshots nor `gbo snapshot`'s data captures.
        #[arg(long)]
        all_unowned: bool,
        /// Result format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Write the daily job (systemd timer, or a cron file without systemd) keeping the rolling window.
    InstallTimer {
        /// Datasets to snapshot and prune.
        #[arg(required = true)]
        datasets: Vec<String>,
        /// The window in days.
        #[arg(long, default_value_t = 7)]
        keep_days: u32,
        /// Minimum snapshots per dataset.
        #[arg(long, default_value_t = 7)]
        min_keep: usize,
        /// Write under this root instead of `/` (packaging, tests).
        #[arg(long, default_value = "/", hide = true)]
        root: PathBuf,
    },
}

fn datasets(values: &[String]) -> anyhow::Result<Vec<String>> {
    values.iter().map(|v| zfs::dataset_name(v).map_err(anyhow::Error::from)).collect()
}

/// Run a `gbo zfs` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Usage { dataset, output } => {
            let selected = datasets(&dataset.into_iter().collect::<Vec<_>>())?;
            let usage = tokio::task::spawn_blocking(move || Zfs::detect()?.usage(&selected)).await??;
            match output {
                Format::Json => output::print_json(&usage)?,
                Format::Table => {
                    let rows: Vec<Vec<String>> = usage
                        .snapshots
                        .iter()
                        .map(|r| {
                            let mut flags = Vec::new();
                            if r.ci {
                                flags.push("CI container (can be huge)");
                            }
                            match r.owner {
                                zfs::Owner::Lxd => flags.push("LXD's (use gbo snapshot)"),
                                zfs::Owner::GboSnapshot => flags.push("gbo snapshot's data capture"),
                                zfs::Owner::Unowned => flags.push("not made by gbo"),
                                zfs::Owner::GboDaily => {}
                            }
                            vec![
                                r.snapshot.full_name.clone(),
                                human_bytes(r.snapshot.used),
                                created(r.snapshot.creation),
                                flags.join(", "),
                            ]
                        })
                        .collect();
                    output::print_table(&["SNAPSHOT", "USED", "CREATED", "NOTE"], &rows);
                    outln!();
                    let pools: Vec<Vec<String>> = usage
                        .pools
                        .iter()
                        .map(|p| vec![p.name.clone(), p.used.clone(), p.available.clone(), p.referenced.clone()])
                        .collect();
                    output::print_table(&["POOL", "USED", "AVAIL", "REFER"], &pools);
                }
            }
            Ok(Outcome::Ok)
        }
        Command::Snapshot { daily: _, datasets: given } => {
            let selected = datasets(&given)?;
            let today = time::OffsetDateTime::now_utc().date();
            let taken = tokio::task::spawn_blocking(move || Zfs::detect()?.snapshot_daily(&selected, today)).await??;
            for t in taken {
                outln!("took {t}");
            }
            Ok(Outcome::Ok)
        }
        Command::Prune { keep_days, min_keep, datasets: given, dry_run, all_unowned, output } => {
            let selected = datasets(&given)?;
            if min_keep == 0 {
                return Err(zfs::ZfsError::ZeroMinimum.into());
            }
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let policy = zfs::PrunePolicy { keep_days, min_keep, all_unowned };
            let (zfs, plan) = tokio::task::spawn_blocking(move || {
                let zfs = Zfs::detect()?;
                let plan = zfs.plan(&selected, &policy, now)?;
                Ok::<_, zfs::ZfsError>((zfs, plan))
            })
            .await??;
            // What gbo did not make is shown before anything is destroyed (on stderr with JSON output, so that
            // stdout stays one document).
            if !dry_run && !plan.doomed_unowned.is_empty() {
                let mut text =
                    format!("destroying {} snapshot(s) gbo did not make (--all-unowned):\n", plan.doomed_unowned.len());
                for name in &plan.doomed_unowned {
                    text.push_str(&format!("  {name}\n"));
                }
                match output {
                    Format::Json => eprint!("{text}"),
                    Format::Table => crate::output::write_stdout(&text),
                }
            }
            let report = tokio::task::spawn_blocking(move || zfs.execute(&plan, dry_run)).await?;
            match output {
                Format::Json => output::print_json(&report)?,
                Format::Table => {
                    let verb = if dry_run { "would destroy" } else { "destroyed" };
                    // The ones gbo did not make first.
                    for d in &report.destroyed_unowned {
                        outln!("{verb}, not made by gbo (--all-unowned): {d}");
                    }
                    for d in report.destroyed.iter().filter(|d| !report.destroyed_unowned.contains(d)) {
                        outln!("{verb} {d}");
                    }
                    for f in &report.failures {
                        outln!("could not destroy {}: {}", f.snapshot, f.reason);
                    }
                    for k in &report.kept_unowned {
                        outln!("kept, not made by gbo (--all-unowned to include): {k}");
                    }
                    if report.kept_lxd + report.kept_captures > 0 {
                        outln!(
                            "never destroyed here: {} of LXD's (use lxc or gbo snapshot), {} data capture(s) of gbo snapshot",
                            report.kept_lxd, report.kept_captures
                        );
                    }
                    outln!(
                        "{verb} {} snapshot(s), {} ({}), {} zfs call(s); kept {} snapshot(s) in {} dataset(s)",
                        report.destroyed.len(),
                        human_bytes(report.reclaim_bytes),
                        report.reclaim_source,
                        report.zfs_calls,
                        report.kept.values().sum::<usize>(),
                        report.kept.len()
                    );
                }
            }
            if report.failures.is_empty() {
                Ok(Outcome::Ok)
            } else {
                anyhow::bail!(
                    "{} snapshot(s) could not be destroyed (see above); the others were",
                    report.failures.len()
                )
            }
        }
        Command::InstallTimer { datasets: given, keep_days, min_keep, root } => {
            let selected = datasets(&given)?;
            if min_keep == 0 {
                return Err(zfs::ZfsError::ZeroMinimum.into());
            }
            let gbo = std::env::current_exe().context("cannot find the gbo executable's path")?;
            let job = zfs::daily_job(&gbo, &selected, keep_days, min_keep);
            let kind = schedule::TimerKind::detect();
            for path in schedule::install(&job, kind, &root)? {
                outln!("wrote {}", path.display());
            }
            if kind == schedule::TimerKind::Systemd {
                outln!("enable it with: systemctl daemon-reload && systemctl enable --now {}.timer", job.name);
            }
            Ok(Outcome::Ok)
        }
    }
}

fn created(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix).map(gbo_ops::snapshot::rfc3339).unwrap_or_else(|_| unix.to_string())
}
