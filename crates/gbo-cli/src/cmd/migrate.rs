//! `gbo migrate`: move the botserver database between a host PostgreSQL and the tenant's tables container,
//! streamed and verified (row counts, content checksums, sequences) before success is declared.

use std::path::PathBuf;

use gbo_ops::events::human_bytes;
use gbo_ops::migrate::{self, ContainerServer, Direction, HostServer, MigrateEvent, MigrateOptions};

use crate::output::outln;
use crate::output::progress::{Lines, Style};
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

/// Run a `gbo migrate` subcommand: progress as it goes on stderr (JSON lines with `--output json`), the report at
/// the end.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    let (args, direction) = match command {
        Command::LocalToContainer(a) => (a, Direction::LocalToContainer),
        Command::ContainerToLocal(a) => (a, Direction::ContainerToLocal),
    };
    let mut options = MigrateOptions::new(args.database.clone());
    options.jobs = args.jobs;
    options.replace = args.replace;
    options.keep_owners = args.keep_owners;
    options.backup_dir = args.backup_dir.clone();
    options.keep_sql = args.keep_sql.clone();
    // Before anything else: the name reaches connection strings, argv and backup file names.
    options.check()?;
    let host = HostServer::from_libpq(args.host.as_deref())?;
    let lxd = output::lxd_on_host("gbo migrate").await?;
    let (container, managed) =
        ContainerServer::of_tenant(&lxd, &args.tenant, args.container.as_deref(), args.container_port).await?;
    let (source, target) = direction.ends(host, container);
    let lines = Lines::new(Style::for_output(args.output));
    let events = |event: &MigrateEvent| lines.show(event);
    let result = migrate::migrate(&source, &target, &options, Some(&managed), Some(&lxd), &events).await;
    lines.close();
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
            outln!(
                "migrated {} from {} to {}: {} tables, {} sequences, {} streamed in {:.1} s; counts, checksums and sequences match; owned by {}; `{}` read and wrote every table",
                report.database,
                report.source,
                report.target,
                report.tables.len(),
                report.sequences.len(),
                human_bytes(report.bytes),
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
