//! What `deploy`, `rollback` and `verify` (and their dry runs) return. The binary prints these shapes with
//! `--output json` (documented in docs/gbo-ci.md); a field may be added, never renamed.

use std::fmt;

use serde::Serialize;

use crate::names::{HealthUrl, RemotePath};

/// How a service is restarted: the method and what it acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Restart {
    /// `systemctl restart` of the unit that owns the process (or the one given with `--unit`).
    Systemd {
        /// The unit.
        unit: String,
    },
    /// Stop exactly these processes (none: nothing runs) and start the binary by hand as its owner.
    Process {
        /// The PIDs that run the target path.
        pids: Vec<u32>,
    },
}

impl Restart {
    /// The method alone.
    pub fn method(&self) -> RestartMethod {
        match self {
            Restart::Systemd { .. } => RestartMethod::Systemd,
            Restart::Process { .. } => RestartMethod::Process,
        }
    }

    /// The systemd unit, when restarted through one.
    pub fn unit(&self) -> Option<&str> {
        match self {
            Restart::Systemd { unit } => Some(unit),
            Restart::Process { .. } => None,
        }
    }

    /// The processes stopped by hand (none for a unit).
    pub fn pids(&self) -> &[u32] {
        match self {
            Restart::Systemd { .. } => &[],
            Restart::Process { pids } => pids,
        }
    }
}

/// How a service is restarted; `"systemd"` or `"process"` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartMethod {
    /// Through its systemd unit.
    Systemd,
    /// By stopping the processes that run the target path and starting the binary by hand.
    Process,
}

impl RestartMethod {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartMethod::Systemd => "systemd",
            RestartMethod::Process => "process",
        }
    }
}

impl fmt::Display for RestartMethod {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The result of a successful deploy, printed by the CLI (`--output json` prints this shape).
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    /// The host as given.
    pub host: String,
    /// The deployed path.
    pub dest: RemotePath,
    /// SHA-256 of the deployed binary.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Upload time in milliseconds.
    pub upload_ms: u64,
    /// Where the previous binary was kept.
    pub previous_release: Option<String>,
    /// `systemd` or `process`.
    pub restart_method: RestartMethod,
    /// The systemd unit, when restarted through one.
    pub unit: Option<String>,
    /// PIDs that were stopped (process mode).
    pub stopped_pids: Vec<u32>,
    /// From sending the stop (or `systemctl restart`) to the first healthy answer, in milliseconds; an upper bound
    /// that includes the remote shell's start-up. `None` when nothing was running.
    pub downtime_ms: Option<u64>,
    /// Releases removed beyond `--keep`.
    pub pruned_releases: Vec<String>,
    /// Why pruning was skipped, when it was (the deploy itself succeeded; nothing was removed).
    pub prune_error: Option<String>,
    /// Whole deploy, in milliseconds.
    pub total_ms: u64,
}

/// The result of a rollback.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// The host as given.
    pub host: String,
    /// The restored path.
    pub dest: RemotePath,
    /// The release that was put back.
    pub restored_release: String,
    /// SHA-256 of the binary now in place.
    pub sha256: String,
    /// `systemd` or `process`.
    pub restart_method: RestartMethod,
    /// Health checked and OK (`None` when no URL was given).
    pub healthy: Option<bool>,
    /// Downtime in milliseconds, when health was checked.
    pub downtime_ms: Option<u64>,
    /// Releases still available after this one.
    pub remaining_releases: Vec<String>,
}

/// The result of `verify`; `findings` empty means the deployed binary is the local artifact.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The host as given.
    pub host: String,
    /// The deployed path.
    pub dest: RemotePath,
    /// SHA-256 of the local artifact.
    pub local_sha256: String,
    /// SHA-256 of the deployed binary (`None` when it does not exist).
    pub remote_sha256: Option<String>,
    /// Local modification time (Unix seconds).
    pub local_mtime: u64,
    /// Remote modification time (Unix seconds).
    pub remote_mtime: Option<u64>,
    /// Processes running the target path, and whether each runs a replaced (deleted) file.
    pub processes: Vec<ProcessInfo>,
    /// Problems found; empty when all is well.
    pub findings: Vec<String>,
}

/// A process that runs the deployed path.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessInfo {
    /// PID on the remote.
    pub pid: u32,
    /// True when the process still runs a binary that was replaced on disk (restart pending).
    pub runs_replaced_binary: bool,
    /// The systemd unit whose cgroup holds it, if any.
    pub unit: Option<String>,
}

/// What a deploy would do, from the remote's current state (`deploy --dry-run`). Reading it changes nothing on the
/// remote, not even the lock file.
#[derive(Debug, Clone, Serialize)]
pub struct DeployPlan {
    /// The host as given.
    pub host: String,
    /// The path that would be replaced.
    pub dest: RemotePath,
    /// SHA-256 of the local artifact.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Whether the remote already has exactly this binary at `dest` (a deploy would still restart it).
    pub already_deployed: bool,
    /// Where the current binary would be kept (`None` on a first deploy).
    pub previous_release: Option<String>,
    /// `systemd` or `process`.
    pub restart_method: RestartMethod,
    /// The systemd unit that would be restarted.
    pub unit: Option<String>,
    /// The processes that would be stopped (restart by process).
    pub stop_pids: Vec<u32>,
    /// How the new binary would be started by hand (restart by process): owner, arguments, working directory, log.
    pub start: Option<PlannedStart>,
    /// Releases that a successful deploy would remove (beyond `--keep`).
    pub prune_releases: Vec<String>,
    /// The health URL that would be polled.
    pub health: HealthUrl,
}

/// What a rollback would do (`rollback --dry-run`); reading it changes nothing on the remote.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackPlan {
    /// The host as given.
    pub host: String,
    /// The path that would be replaced.
    pub dest: RemotePath,
    /// The release that would be put back.
    pub restore_release: String,
    /// SHA-256 of that release.
    pub sha256: String,
    /// `systemd` or `process`.
    pub restart_method: RestartMethod,
    /// The systemd unit that would be restarted.
    pub unit: Option<String>,
    /// The processes that would be stopped (restart by process).
    pub stop_pids: Vec<u32>,
    /// How the restored binary would be started by hand (restart by process).
    pub start: Option<PlannedStart>,
    /// Releases still available after this one.
    pub remaining_releases: Vec<String>,
}

/// How a start by hand would run the binary.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStart {
    /// The user it runs as.
    pub owner: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its working directory.
    pub cwd: String,
    /// The file its output is appended to (opened by the owner).
    pub log: String,
}
