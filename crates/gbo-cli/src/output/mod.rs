//! Terminal output shared by every command: logging to stderr, error printing, tables and JSON on stdout, and the
//! outcome-to-exit-code mapping; `progress` renders the events of long operations.

pub mod progress;

/// `println!` for results: a reader that went away (`gbo status | head`) ends the command quietly, with exit 0, as
/// for other Unix tools, instead of a panic on the broken pipe.
macro_rules! outln {
    () => {
        $crate::output::write_stdout("\n")
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// Write `text` to stdout (see [`outln`]).
pub fn write_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

use std::io::IsTerminal;

use serde::Serialize;

/// How a command ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Ok,
    /// Exit 1: a check found problems.
    Problems,
}

impl From<Outcome> for std::process::ExitCode {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Ok => std::process::ExitCode::SUCCESS,
            Outcome::Problems => std::process::ExitCode::from(1),
        }
    }
}

/// Result format of commands that print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for scripts (shapes documented in docs/json-output.md).
    Json,
}

/// Logs (tracing) to stderr; `-v` for debug, `-vv` for trace; `RUST_LOG` overrides.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,gbo_ops=debug,lxd_client=debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// Print an error and its causes to stderr.
pub fn print_error(error: &anyhow::Error) {
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

/// Print rows as aligned columns.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{:<width$}  ", cell, width = widths[i]));
            }
        }
        outln!("{}", out.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Print a value as pretty JSON.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Connect to the local LXD daemon, with an error that says what to do.
/// How long a changing command waits for another gbo run that holds the tenant's lock.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The locks of `tenants` (each once), for a command that changes them after install: two gbo runs never change one
/// tenant at once. A tenant with no recorded stack dir has no host data to protect and no lock.
pub async fn lock_tenants<'a>(
    lxd: &lxd_client::Client,
    tenants: impl IntoIterator<Item = &'a gbo_components::TenantName>,
) -> anyhow::Result<Vec<gbo_ops::install::lock::TenantLock>> {
    let mut names: Vec<&gbo_components::TenantName> = tenants.into_iter().collect();
    names.sort_unstable();
    names.dedup();
    let mut locks = Vec::new();
    for tenant in names {
        if let Some(lock) = gbo_ops::install::lock::acquire_recorded(lxd, tenant, LOCK_WAIT).await? {
            locks.push(lock);
        }
    }
    Ok(locks)
}

pub fn lxd() -> anyhow::Result<lxd_client::Client> {
    if let Some(connection) = CONNECTION.get() {
        return Ok(connection.client.clone());
    }
    lxd_client::Client::local().map_err(|e| anyhow::anyhow!("{e}"))
}

/// The daemon chosen by `--remote`/`--project`, when one was.
struct Connection {
    remote: Option<String>,
    client: lxd_client::Client,
}

static CONNECTION: std::sync::OnceLock<Connection> = std::sync::OnceLock::new();

/// Choose the daemon for this run: remote `remote` of the `lxc` CLI (checked now: unknown or unreachable is an
/// error naming it), else the local socket; in `project` when given. Without either, nothing is done (the local
/// socket is found when a command needs it).
pub async fn connect(remote: Option<&str>, project: Option<&str>) -> anyhow::Result<()> {
    if remote.is_none() && project.is_none() {
        return Ok(());
    }
    let mut client = match remote {
        Some(name) => {
            let client = lxd_client::Client::from_lxc_remote(name)
                .map_err(|e| anyhow::anyhow!("--remote {name}: cannot use remote `{name}`: {e}"))?;
            client
                .server()
                .await
                .map_err(|e| anyhow::anyhow!("--remote {name}: remote `{name}` cannot be reached: {e}"))?;
            client
        }
        None => lxd()?,
    };
    if let Some(project) = project {
        let name = lxd_client::ObjectName::new(project)
            .map_err(|e| anyhow::anyhow!("--project {project:?} is not a project name: {e}"))?;
        client.project_info(&name).await.map_err(|e| {
            anyhow::anyhow!(
                "--project {project}: project `{project}` cannot be used on {}: {e}",
                client.endpoint().describe()
            )
        })?;
        client = client.project(&name);
    }
    let _ = CONNECTION.set(Connection { remote: remote.map(str::to_string), client });
    Ok(())
}

/// The remote named with `--remote`, if any.
pub fn remote_name() -> Option<&'static str> {
    CONNECTION.get().and_then(|c| c.remote.as_deref())
}

/// Where the daemon is ([`gbo_ops::site::Site`]).
pub async fn site(lxd: &lxd_client::Client) -> anyhow::Result<gbo_ops::site::Site> {
    gbo_ops::site::Site::observe(lxd, remote_name())
        .await
        .map_err(|e| anyhow::anyhow!("reading the cluster state of {}: {e}", lxd.endpoint().describe()))
}

/// The daemon, for a command on one tenant's containers: refused (naming `command`, the daemon and why) only when
/// the tenant's storage mode is `host` ([`gbo_ops::install::storage::mode_for_run`]) and the daemon's containers
/// may run on another machine. `storage = "volumes"` needs nothing on the daemon's host, so it works through any
/// remote.
pub async fn lxd_for_storage(
    command: &str,
    tenant: &gbo_components::TenantName,
    asked: Option<gbo_components::StorageMode>,
) -> anyhow::Result<lxd_client::Client> {
    let lxd = lxd()?;
    let mode = gbo_ops::install::storage::mode_for_run(&lxd, tenant, asked).await.map_err(anyhow::Error::new)?;
    site(&lxd).await?.require_host_for(command, mode).map_err(anyhow::Error::msg)?;
    Ok(lxd)
}

/// The daemon, for a command that works on this host's directories or through 127.0.0.1: refused (naming
/// `command`) when the daemon's containers may run on another machine.
pub async fn lxd_on_host(command: &str) -> anyhow::Result<lxd_client::Client> {
    let lxd = lxd()?;
    site(&lxd).await?.require_host(command).map_err(anyhow::Error::msg)?;
    Ok(lxd)
}
