//! `gbo migrate`: move the botserver database between a host PostgreSQL and the tenant's tables container,
//! streamed and verified (row counts, content checksums, sequences) before success is declared.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gbo_ops::migrate::{self, ContainerServer, Endpoint, HostServer, MigrateOptions};

use crate::output::{self, Format, Outcome};

/// `gbo migrate` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Host PostgreSQL → the tenant's tables container.
    LocalToContainer(Args),
    /// The tenant's tables container → host PostgreSQL.
    ContainerToLocal(Args),
}

/// Arguments shared by both directions.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The host server as a libpq connection string (`postgresql://user@127.0.0.1:5432?sslmode=verify-full&sslrootcert=
    /// ca.crt` or `host=... port=... sslmode=...`). Without it, PGHOST/PGPORT/PGUSER/PGPASSWORD/PGSSLMODE/PGSSLROOTCERT
    /// apply, then the local socket. Put passwords in PGPASSWORD, not here.
    #[arg(long, value_name = "CONNINFO")]
    host: Option<String>,
    /// Database to move (the same name on both sides).
    #[arg(long, default_value = migrate::DEFAULT_DATABASE)]
    database: String,
    /// Tenant whose tables container is the other side.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// The container, when it is not `{tenant}-tables`.
    #[arg(long)]
    container: Option<String>,
    /// PostgreSQL port inside the container.
    #[arg(long, default_value_t = 5432)]
    container_port: u16,
    /// Concurrent per-table COPY streams.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Replace a target database that holds data (a snapshot or backup of it is taken first).
    #[arg(long)]
    replace: bool,
    /// Keep the source's owners (missing roles are created as plain NOLOGIN roles). Without it every migrated
    /// object belongs to the tenant's application role (`gbuser`). Either way the application role must be able to
    /// read and write every table, or the migration fails naming the table.
    #[arg(long)]
    keep_owners: bool,
    /// Where a host target's backup goes before --replace.
    #[arg(long, default_value = "/var/backups/gbo")]
    backup_dir: PathBuf,
    /// Also keep the migration as a plain SQL file (0600; restore with `psql -f FILE` into an empty database).
    /// Written only after verification passed, never over an existing file. Without it nothing touches the disk.
    #[arg(long, value_name = "FILE")]
    keep_sql: Option<PathBuf>,
    /// Result format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Run a `gbo migrate` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    let (args, to_container) = match command {
        Command::LocalToContainer(a) => (a, true),
        Command::ContainerToLocal(a) => (a, false),
    };
    // Before anything else: the name reaches connection strings, argv and backup file names.
    migrate::validate_database(&args.database)?;
    if args.jobs == 0 || args.jobs > 64 {
        anyhow::bail!("invalid --jobs {}: use a number from 1 to 64", args.jobs);
    }
    let host = HostServer::from_libpq(args.host.as_deref())?;
    let lxd = output::lxd()?;
    let container_name = match &args.container {
        Some(c) => c.clone(),
        None => {
            let tenant = gbo_components::TenantName::new(&args.tenant)
                .map_err(|e| anyhow::anyhow!("invalid --tenant `{}`: {e}", args.tenant))?;
            gbo_components::instance_name(&tenant, gbo_components::Role::Tables)
        }
    };
    let managed = gbo_ops::snapshot::container(&lxd, &container_name).await?;
    let instance = lxd_client::InstanceName::new(container_name.as_str()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut container = ContainerServer::new(lxd.clone(), instance, args.container_port);
    // Where its PostgreSQL is published on the host (the tables role's proxy device): a source container is read
    // only through it.
    if let Some(port) = managed.ports.iter().find(|p| p.protocol == "tcp" && p.container_port == args.container_port) {
        container = container.published(&port.host_address, port.host_port);
    }
    let container = Endpoint::Container(container);
    let host = Endpoint::Host(host);
    let (source, target) = if to_container { (&host, &container) } else { (&container, &host) };
    let mut options = MigrateOptions::new(args.database.clone());
    options.jobs = args.jobs;
    options.replace = args.replace;
    options.keep_owners = args.keep_owners;
    options.backup_dir = args.backup_dir.clone();
    options.keep_sql = args.keep_sql.clone();
    let progress = options.progress.clone();
    let ticker = tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = progress.load(Ordering::Relaxed);
            if now != last {
                eprintln!("copied {} ({}/s)", human(now), human((now - last) / 2));
                last = now;
            }
        }
    });
    let result = migrate::migrate(source, target, &options, Some(&managed), Some(&lxd)).await;
    ticker.abort();
    let report = result?;
    match args.output {
        Format::Json => output::print_json(&report)?,
        Format::Table => {
            if let Some(b) = &report.replaced_backup {
                eprintln!("the previous target was saved first: {b}");
            }
            if let Some(f) = &report.kept_sql {
                eprintln!("SQL kept at {}", f.display());
            }
            if !report.created_roles.is_empty() {
                let roles: Vec<String> = report.created_roles.iter().map(|r| printable(r)).collect();
                eprintln!(
                    "roles the target lacked were created without login or password: {} (give `{}` LOGIN and a password for the application if it was one of them)",
                    roles.join(", "),
                    printable(&report.app_role)
                );
            }
            // Names can come from a container: control characters are shown escaped, never sent to the terminal.
            let mut rows: Vec<Vec<String>> =
                report.tables.iter().map(|t| vec![printable(&t.table), t.rows.to_string(), "ok".into()]).collect();
            if let Some(lo) = &report.large_objects {
                rows.push(vec![lo.table.clone(), lo.rows.to_string(), "ok".into()]);
            }
            output::print_table(&["TABLE", "ROWS", "VERIFIED"], &rows);
            println!(
                "migrated {} from {} to {}: {} tables, {} sequences, {} streamed in {:.1} s; counts, checksums and sequences match; owned by {}; `{}` read and wrote every table",
                report.database,
                report.source,
                report.target,
                report.tables.len(),
                report.sequences.len(),
                human(report.bytes),
                report.seconds,
                printable(&report.owner),
                printable(&report.app_role)
            );
        }
    }
    Ok(Outcome::Ok)
}

/// A name as it may be shown on a terminal: control characters escaped.
fn printable(name: &str) -> String {
    name.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
