//! Runner cache upkeep: prune the sccache and cargo registry caches to a size (oldest first), and install the daily
//! cleanup the runbook asks for ("sccache + cargo registry cache accumulates — daily cleanup cron required").
//!
//! What is removed is whole units, never parts of one: a file of the sccache cache, a downloaded `.crate` in
//! `registry/cache/<index>/`, or an extracted crate directory in `registry/src/<index>/` (cargo re-extracts or
//! re-downloads what is missing). The registry index is never touched. Age is the unit's modification time.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::event::Observer;
use crate::size::ByteSize;

/// Where the caches are.
#[derive(Debug, Clone)]
pub struct CacheLocations {
    /// sccache's local disk cache (`$SCCACHE_DIR`, default `~/.cache/sccache`).
    pub sccache_dir: PathBuf,
    /// cargo's registry (`$CARGO_HOME/registry`, default `~/.cargo/registry`).
    pub registry_dir: PathBuf,
}

impl CacheLocations {
    /// The defaults from the environment and the home directory.
    pub fn from_env(home: &Path) -> Self {
        let sccache_dir =
            std::env::var_os("SCCACHE_DIR").map(PathBuf::from).unwrap_or_else(|| home.join(".cache").join("sccache"));
        let cargo_home = std::env::var_os("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".cargo"));
        Self { sccache_dir, registry_dir: cargo_home.join("registry") }
    }

    /// The directories given, the defaults for the others (from the environment and `$HOME`, else `/root`).
    pub fn with(sccache_dir: Option<PathBuf>, registry_dir: Option<PathBuf>) -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        let defaults = Self::from_env(&home);
        Self {
            sccache_dir: sccache_dir.unwrap_or(defaults.sccache_dir),
            registry_dir: registry_dir.unwrap_or(defaults.registry_dir),
        }
    }
}

/// Progress a prune reports while it runs; the CLI renders it on stderr.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum CacheEvent {
    /// A cache directory does not exist: nothing to prune there.
    Missing {
        /// The directory.
        path: PathBuf,
    },
    /// The caches were scanned.
    Scanned {
        /// Removable units found.
        units: usize,
        /// Bytes they hold together.
        bytes: u64,
    },
    /// The oldest units are being removed (never on a dry run).
    Removing {
        /// How many.
        units: usize,
        /// Bytes they hold together.
        bytes: u64,
    },
}

/// One removable unit of cache.
#[derive(Debug, Clone, Serialize)]
pub struct CacheEntry {
    /// File or directory.
    pub path: PathBuf,
    /// Bytes it holds.
    pub bytes: u64,
    /// Modification time, Unix seconds.
    pub mtime: u64,
}

/// The result of a prune (`--output json` prints this shape).
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// The limit.
    pub max_bytes: u64,
    /// Total before.
    pub before_bytes: u64,
    /// Total after (what it would be, on a dry run).
    pub after_bytes: u64,
    /// Nothing was removed.
    pub dry_run: bool,
    /// Removed (or, on a dry run, to be removed), oldest first.
    pub removed: Vec<CacheEntry>,
    /// Cache directories that do not exist (skipped).
    pub missing: Vec<PathBuf>,
}

/// Every removable unit under the cache locations.
pub fn scan(locations: &CacheLocations) -> Result<(Vec<CacheEntry>, Vec<PathBuf>)> {
    let mut entries = Vec::new();
    let mut missing = Vec::new();
    if locations.sccache_dir.is_dir() {
        collect_files(&locations.sccache_dir, &mut entries)?;
    } else {
        missing.push(locations.sccache_dir.clone());
    }
    if locations.registry_dir.is_dir() {
        for kind in ["cache", "src"] {
            let base = locations.registry_dir.join(kind);
            for index_dir in read_dir_sorted(&base)? {
                if !index_dir.is_dir() {
                    continue;
                }
                for unit in read_dir_sorted(&index_dir)? {
                    let metadata = std::fs::symlink_metadata(&unit)
                        .map_err(|error| Error::io("reading metadata of", &unit, error))?;
                    let bytes = if metadata.is_dir() { tree_size(&unit)? } else { metadata.len() };
                    entries.push(CacheEntry { path: unit, bytes, mtime: mtime(&metadata) });
                }
            }
        }
    } else {
        missing.push(locations.registry_dir.clone());
    }
    Ok((entries, missing))
}

/// Remove the oldest units until the total is at most `max`.
pub fn prune(
    locations: &CacheLocations,
    max: ByteSize,
    dry_run: bool,
    observer: &mut dyn Observer<CacheEvent>,
) -> Result<PruneReport> {
    let (mut entries, missing) = scan(locations)?;
    for path in &missing {
        observer.on_event(&CacheEvent::Missing { path: path.clone() });
    }
    entries.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.path.cmp(&b.path)));
    let before: u64 = entries.iter().map(|entry| entry.bytes).sum();
    observer.on_event(&CacheEvent::Scanned { units: entries.len(), bytes: before });
    // The oldest units, until what is left fits.
    let mut total = before;
    let removed: Vec<CacheEntry> = entries
        .into_iter()
        .take_while(|entry| {
            let over = total > max.0;
            if over {
                total -= entry.bytes;
            }
            over
        })
        .collect();
    if !dry_run && !removed.is_empty() {
        observer.on_event(&CacheEvent::Removing { units: removed.len(), bytes: before - total });
        for entry in &removed {
            let result = if entry.path.is_dir() {
                std::fs::remove_dir_all(&entry.path)
            } else {
                std::fs::remove_file(&entry.path)
            };
            match result {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(Error::io("removing", &entry.path, error)),
            }
        }
    }
    Ok(PruneReport { max_bytes: max.0, before_bytes: before, after_bytes: total, dry_run, removed, missing })
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(read) => {
            let mut paths: Vec<PathBuf> = read
                .map(|entry| entry.map(|entry| entry.path()))
                .collect::<std::io::Result<_>>()
                .map_err(|error| Error::io("listing", dir, error))?;
            paths.sort();
            Ok(paths)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(Error::io("listing", dir, error)),
    }
}

fn collect_files(dir: &Path, out: &mut Vec<CacheEntry>) -> Result<()> {
    for path in read_dir_sorted(dir)? {
        let metadata =
            std::fs::symlink_metadata(&path).map_err(|error| Error::io("reading metadata of", &path, error))?;
        if metadata.is_dir() {
            collect_files(&path, out)?;
        } else if metadata.is_file() {
            out.push(CacheEntry { path, bytes: metadata.len(), mtime: mtime(&metadata) });
        }
    }
    Ok(())
}

fn tree_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for path in read_dir_sorted(dir)? {
        let metadata =
            std::fs::symlink_metadata(&path).map_err(|error| Error::io("reading metadata of", &path, error))?;
        total += if metadata.is_dir() { tree_size(&path)? } else { metadata.len() };
    }
    Ok(total)
}

fn mtime(metadata: &std::fs::Metadata) -> u64 {
    metadata.modified().ok().and_then(|time| time.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0)
}

/// How the daily cleanup is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// A systemd service and timer.
    Systemd,
    /// A file in /etc/cron.d.
    Cron,
}

/// What `install-timer` writes.
#[derive(Debug, Clone)]
pub struct TimerOptions {
    /// File system root to write under (`/` normally; a directory in tests).
    pub root: PathBuf,
    /// The `gbo-ci` executable the job runs.
    pub executable: PathBuf,
    /// The size limit.
    pub max_size: ByteSize,
    /// Explicit cache locations to pass on, if not the defaults.
    pub sccache_dir: Option<PathBuf>,
    /// Explicit registry location to pass on.
    pub registry_dir: Option<PathBuf>,
    /// Force a scheduler; default: systemd when `<root>/run/systemd/system` exists, else cron.
    pub scheduler: Option<Scheduler>,
}

/// Name of the unit, timer and cron file.
pub const JOB_NAME: &str = "gbo-ci-cache-prune";

/// The result of `install-timer`.
#[derive(Debug, Clone, Serialize)]
pub struct TimerReport {
    /// The scheduler used.
    pub scheduler: Scheduler,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Commands run to activate it (only when writing to `/` under systemd).
    pub activated: Vec<String>,
}

fn job_command(options: &TimerOptions) -> String {
    let mut parts = vec![
        crate::ssh::sh_quote(&options.executable.display().to_string()),
        "cache".into(),
        "prune".into(),
        "--max-size".into(),
        options.max_size.0.to_string(),
    ];
    if let Some(dir) = &options.sccache_dir {
        parts.push("--sccache-dir".into());
        parts.push(crate::ssh::sh_quote(&dir.display().to_string()));
    }
    if let Some(dir) = &options.registry_dir {
        parts.push("--registry-dir".into());
        parts.push(crate::ssh::sh_quote(&dir.display().to_string()));
    }
    parts.join(" ")
}

/// The systemd service unit.
pub fn render_service(options: &TimerOptions) -> String {
    format!(
        "# Written by `gbo-ci cache install-timer`.\n[Unit]\nDescription=Prune the CI runner's sccache and cargo registry caches to {size}\n\n\
         [Service]\nType=oneshot\nNice=10\nIOSchedulingClass=idle\nExecStart={command}\n",
        size = options.max_size,
        command = job_command(options)
    )
}

/// The systemd timer unit (daily, catching up after downtime).
pub fn render_timer() -> String {
    format!(
        "# Written by `gbo-ci cache install-timer`.\n[Unit]\nDescription=Daily pruning of the CI runner caches\n\n\
         [Timer]\nOnCalendar=daily\nRandomizedDelaySec=1h\nPersistent=true\nUnit={JOB_NAME}.service\n\n\
         [Install]\nWantedBy=timers.target\n"
    )
}

/// The /etc/cron.d file (daily at 03:17, as root, output appended to a log).
pub fn render_cron(options: &TimerOptions) -> String {
    format!(
        "# Written by `gbo-ci cache install-timer`: prune the CI runner's caches to {size} every day.\n\
         SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
         17 3 * * * root {command} >> /var/log/{JOB_NAME}.log 2>&1\n",
        size = options.max_size,
        command = job_command(options)
    )
}

/// Write the timer (or cron file) under `options.root`, and activate it when writing to the live system.
pub fn install_timer(options: &TimerOptions) -> Result<TimerReport> {
    if !options.root.is_dir() {
        return Err(Error::invalid("--root", options.root.display().to_string(), "an existing directory"));
    }
    if !options.executable.is_absolute() {
        return Err(Error::invalid("--executable", options.executable.display().to_string(), "an absolute path"));
    }
    let scheduler = options.scheduler.unwrap_or_else(|| {
        if options.root.join("run/systemd/system").is_dir() {
            Scheduler::Systemd
        } else {
            Scheduler::Cron
        }
    });
    let mut files = Vec::new();
    let mut activated = Vec::new();
    match scheduler {
        Scheduler::Systemd => {
            let dir = options.root.join("etc/systemd/system");
            let service = dir.join(format!("{JOB_NAME}.service"));
            let timer = dir.join(format!("{JOB_NAME}.timer"));
            write_file(&service, &render_service(options))?;
            write_file(&timer, &render_timer())?;
            files.extend([service, timer]);
            if options.root == Path::new("/") {
                for args in [vec!["daemon-reload"], vec!["enable", "--now", "gbo-ci-cache-prune.timer"]] {
                    duct::cmd("systemctl", &args).stdout_null().run().map_err(|error| Error::RemoteCommand {
                        host: "localhost".into(),
                        command: format!("systemctl {}", args.join(" ")),
                        status: -1,
                        stderr: error.to_string(),
                    })?;
                    activated.push(format!("systemctl {}", args.join(" ")));
                }
            }
        }
        Scheduler::Cron => {
            let file = options.root.join("etc/cron.d").join(JOB_NAME);
            write_file(&file, &render_cron(options))?;
            files.push(file);
        }
    }
    Ok(TimerReport { scheduler, files, activated })
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|error| Error::io("creating", parent, error))?;
    }
    let temp = path.with_extension("gbo-ci-tmp");
    std::fs::write(&temp, contents).map_err(|error| Error::io("writing", &temp, error))?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644))
        .map_err(|error| Error::io("setting the mode of", &temp, error))?;
    std::fs::rename(&temp, path).map_err(|error| Error::io("renaming into", path, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> TimerOptions {
        TimerOptions {
            root: PathBuf::from("/"),
            executable: PathBuf::from("/usr/local/bin/gbo-ci"),
            max_size: "20G".parse().expect("parse"),
            sccache_dir: None,
            registry_dir: Some(PathBuf::from("/root/.cargo/registry")),
            scheduler: None,
        }
    }

    #[test]
    fn systemd_units_snapshot() {
        insta::assert_snapshot!("service", render_service(&options()));
        insta::assert_snapshot!("timer", render_timer());
    }

    #[test]
    fn cron_file_snapshot() {
        insta::assert_snapshot!("cron", render_cron(&options()));
    }
}
