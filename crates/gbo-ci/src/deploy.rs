//! `deploy`, `rollback` and `verify`: replace a running binary on a remote host without "dest open: Failure".
//!
//! The new file is streamed to a temporary name beside the target, synced, checked by SHA-256 on the remote, given
//! its owner and mode, and renamed over the target. The running process keeps its old inode, so nothing is busy.
//! The current binary is kept as a numbered release (`<dest>.prev.<N>`, a hard link, so it costs no copy), then the
//! service is restarted: through its systemd unit when one owns the process, otherwise by stopping the process that
//! runs the exact target path and starting the new one detached as the owner. The health URL (as seen from the
//! remote host) is polled through the SSH connection; if it never answers 2xx the previous release is put back,
//! started and checked.
//!
//! Nothing on the remote changes until every input has been checked: the binary is readable, the destination
//! directory, owner, working directory and log directory exist.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::names::{HealthUrl, RemotePath, UnixUser};
use crate::ssh::{sh_quote, ConnectOptions, HeldCommand, HostKeyStatus, Remote};

/// What `deploy` needs besides the connection.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// The local artifact to ship.
    pub binary: PathBuf,
    /// The path of the binary on the remote host.
    pub dest: RemotePath,
    /// The user that owns the binary and runs the process.
    pub owner: UnixUser,
    /// The health URL as seen from the remote host.
    pub health: HealthUrl,
    /// How many previous releases to keep (at least 1).
    pub keep: usize,
    /// How the process is (re)started when no systemd unit owns it.
    pub start: StartOptions,
    /// Force restarts through this systemd unit instead of detecting one.
    pub unit: Option<String>,
    /// How long to wait for the health URL to answer 2xx.
    pub health_timeout: Duration,
    /// How long a stopped process may take to exit before it is killed.
    pub stop_timeout: Duration,
    /// How long to wait for another deploy or rollback of the same target to finish.
    pub lock_wait: Duration,
}

/// How to start the binary by hand (no systemd unit). Unset fields are taken from the running process when there is
/// one (its arguments, working directory and the file its output goes to), else from the defaults.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Arguments, e.g. `--noconsole`.
    pub args: Option<Vec<String>>,
    /// Working directory; default the binary's directory.
    pub cwd: Option<RemotePath>,
    /// File that output is appended to; default `<dest>/../../logs/<name>.log` (the seed's `/opt/gbo/logs/`).
    pub log: Option<RemotePath>,
}

/// Progress a deploy reports while it runs; the CLI renders it on stderr.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DeployEvent {
    /// Connected and authenticated.
    Connected {
        /// `user@host:port`.
        target: String,
        /// The known_hosts file the key was recorded in, on first contact.
        recorded_host_key: Option<PathBuf>,
    },
    /// Another deploy or rollback of the same target holds its lock; this one waits for it.
    WaitingForLock {
        /// The lock file on the remote.
        lock: String,
        /// Who holds it, as the holder recorded it (pid, user, client address, since when).
        holder: String,
    },
    /// The lock is taken; no other deploy or rollback of this target runs until this one ends.
    Locked {
        /// The lock file on the remote.
        lock: String,
    },
    /// The upload is starting.
    UploadStarted {
        /// Temporary path on the remote.
        temp_path: String,
        /// Bytes to send.
        total: u64,
    },
    /// Bytes sent so far.
    UploadProgress {
        /// Bytes sent.
        sent: u64,
        /// Bytes to send.
        total: u64,
    },
    /// The upload is complete and synced; the checksum check comes next.
    Uploaded {
        /// Temporary path on the remote.
        temp_path: String,
    },
    /// The remote checksum matched.
    ChecksumVerified {
        /// SHA-256 (hex).
        sha256: String,
    },
    /// The new binary is in place.
    Swapped {
        /// Where the previous binary was kept, if there was one.
        previous_release: Option<String>,
    },
    /// The service is being restarted.
    Restarting {
        /// How: `systemd unit X`, `process 123, 456`, or `not running`.
        method: String,
    },
    /// Waiting for the health URL.
    WaitingForHealth {
        /// The URL.
        url: String,
    },
    /// Health answered 2xx.
    Healthy {
        /// From stopping the old process to the first healthy answer.
        downtime: Option<Duration>,
    },
    /// Health never came; the previous release is being restored.
    RollingBack {
        /// Why.
        reason: String,
    },
}

/// Receives [`DeployEvent`]s. Called synchronously between steps.
pub trait DeployObserver {
    /// One event.
    fn on_event(&mut self, event: &DeployEvent);
}

impl DeployObserver for () {
    fn on_event(&mut self, _event: &DeployEvent) {}
}

/// The result of a successful deploy, printed by the CLI (`--output json` prints this shape).
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    /// The host as given.
    pub host: String,
    /// The deployed path.
    pub dest: String,
    /// SHA-256 of the deployed binary.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Upload time in milliseconds.
    pub upload_ms: u64,
    /// Where the previous binary was kept.
    pub previous_release: Option<String>,
    /// `systemd` or `process`.
    pub restart_method: String,
    /// The systemd unit, when restarted through one.
    pub unit: Option<String>,
    /// PIDs that were stopped (process mode).
    pub stopped_pids: Vec<u32>,
    /// From sending the stop (or `systemctl restart`) to the first healthy answer, in milliseconds; an upper bound
    /// that includes the remote shell's start-up. `None` when nothing was running.
    pub downtime_ms: Option<u64>,
    /// Releases removed beyond `--keep`.
    pub pruned_releases: Vec<String>,
    /// Whole deploy, in milliseconds.
    pub total_ms: u64,
}

/// What `rollback` needs besides the connection.
#[derive(Debug, Clone)]
pub struct RollbackOptions {
    /// The path of the binary on the remote host.
    pub dest: RemotePath,
    /// The user that runs the process; default the owner of the release being restored.
    pub owner: Option<UnixUser>,
    /// Health URL to check after the restart (optional).
    pub health: Option<HealthUrl>,
    /// How to start the process when no systemd unit owns it.
    pub start: StartOptions,
    /// Force restarts through this systemd unit.
    pub unit: Option<String>,
    /// Health deadline.
    pub health_timeout: Duration,
    /// Stop deadline before SIGKILL.
    pub stop_timeout: Duration,
    /// How long to wait for another deploy or rollback of the same target to finish.
    pub lock_wait: Duration,
}

/// The result of a rollback.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// The host as given.
    pub host: String,
    /// The restored path.
    pub dest: String,
    /// The release that was put back.
    pub restored_release: String,
    /// SHA-256 of the binary now in place.
    pub sha256: String,
    /// `systemd`, `process` or `not running`.
    pub restart_method: String,
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
    pub dest: String,
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

/// What the remote looks like before anything is changed.
#[derive(Debug, Default, Clone)]
struct RemoteState {
    uid: Option<u32>,
    dir_exists: bool,
    owner_exists: bool,
    dest_exists: bool,
    has_sha256sum: bool,
    has_runuser: bool,
    systemd: bool,
    log_dir_exists: bool,
    cwd_exists: bool,
    releases: Vec<(u64, String)>,
    processes: Vec<ProcessInfo>,
    inherited: Inherited,
    current_owner: Option<String>,
}

/// Settings read from the running process, used when the caller did not give them.
#[derive(Debug, Default, Clone)]
struct Inherited {
    args: Option<Vec<String>>,
    cwd: Option<String>,
    log: Option<String>,
}

/// The restart plan resolved from options and remote state.
#[derive(Debug, Clone)]
enum Restart {
    Systemd(String),
    Process { pids: Vec<u32> },
}

/// Everything a start by hand needs, resolved.
#[derive(Debug, Clone)]
struct Launch {
    owner: String,
    args: Vec<String>,
    cwd: String,
    log: String,
    cwd_inherited: bool,
    log_inherited: bool,
}

/// The options a deploy checks before it touches the network.
fn check_deploy_options(options: &DeployOptions) -> Result<()> {
    if options.keep == 0 {
        return Err(Error::invalid("--keep", "0", "at least 1 previous release must be kept"));
    }
    if let Some(unit) = &options.unit {
        validate_unit(unit)?;
    }
    Ok(())
}

/// The read-only part of a deploy: the remote's state, checked, and the restart and start it calls for.
fn resolve_deploy(remote: &Remote, options: &DeployOptions) -> Result<(RemoteState, Restart, Launch)> {
    let dest = &options.dest;
    let state = inspect(remote, dest, Some(options.owner.as_str()), &options.start)?;
    preflight(remote, dest, &state, true)?;
    let restart = choose_restart(remote, dest, &state, options.unit.as_deref())?;
    let launch = resolve_launch(dest, options.owner.as_str(), &options.start, &state.inherited);
    if matches!(restart, Restart::Process { .. }) {
        check_launch_dirs(remote, &state, &launch)?;
    }
    Ok((state, restart, launch))
}

/// The number and path the current binary is kept under (no path when there is no current binary).
fn next_release(dest: &RemotePath, state: &RemoteState) -> (u64, Option<String>) {
    let next_number = state.releases.iter().map(|(number, _)| *number).max().unwrap_or(0) + 1;
    (next_number, state.dest_exists.then(|| format!("{}.prev.{next_number}", dest.as_str())))
}

/// Read the local artifact's size, hash and modification time; refuses unreadable or empty files.
pub fn local_artifact(path: &Path) -> Result<(u64, String, u64)> {
    let mut file = File::open(path).map_err(|error| Error::io("opening the binary", path, error))?;
    let metadata = file.metadata().map_err(|error| Error::io("reading metadata of", path, error))?;
    if !metadata.is_file() || metadata.len() == 0 {
        return Err(Error::invalid("binary", path.display().to_string(), "a non-empty regular file"));
    }
    let mut hasher = Sha256::new();
    let mut buffer = vec![0_u8; 1024 * 1024];
    loop {
        let count = file.read(&mut buffer).map_err(|error| Error::io("reading", path, error))?;
        if count == 0 {
            break;
        }
        hasher.update(&buffer[..count]);
    }
    Ok((metadata.len(), hex::encode(hasher.finalize()), mtime_secs(&metadata)))
}

fn mtime_secs(metadata: &std::fs::Metadata) -> u64 {
    metadata.modified().ok().and_then(|time| time.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0)
}

/// Deploy `options.binary` to the host described by `connect`.
pub fn deploy(
    connect: &ConnectOptions,
    options: &DeployOptions,
    observer: &mut dyn DeployObserver,
) -> Result<DeployReport> {
    let started = Instant::now();
    check_deploy_options(options)?;
    // Check the artifact before touching the network; the hash is recomputed while streaming.
    let mut file =
        File::open(&options.binary).map_err(|error| Error::io("opening the binary", &options.binary, error))?;
    let metadata = file.metadata().map_err(|error| Error::io("reading metadata of", &options.binary, error))?;
    if !metadata.is_file() || metadata.len() == 0 {
        return Err(Error::invalid("binary", options.binary.display().to_string(), "a non-empty regular file"));
    }
    let total = metadata.len();
    let local_mtime = mtime_secs(&metadata);

    let remote = Remote::connect(connect)?;
    announce(&remote, observer);
    let dest = &options.dest;
    // Read-only checks first, so bad input changes nothing (not even the lock file); then the lock, and the state
    // read again under it (a deploy that held the lock meanwhile changed the releases and the process).
    preflight(&remote, dest, &inspect(&remote, dest, Some(options.owner.as_str()), &options.start)?, true)?;
    let _lock = lock_target(&remote, dest, options.lock_wait, observer)?;
    let (state, restart, launch) = resolve_deploy(&remote, options)?;
    let sudo = if state.uid == Some(0) { "" } else { "sudo -n " };

    // Upload to a temporary file beside the target.
    let temp_path = format!("{}/.{}.gbo-ci-{:016x}.tmp", dest.parent(), dest.file_name(), rand::rngs::OsRng.next_u64());
    let quoted_temp = sh_quote(&temp_path);
    observer.on_event(&DeployEvent::UploadStarted { temp_path: temp_path.clone(), total });
    let upload_started = Instant::now();
    let mut hashing = HashingReader { inner: &mut file, hasher: Sha256::new() };
    let upload = remote.exec_with_input(
        &format!("set -C; umask 077; cat > {quoted_temp} && sync -- {quoted_temp}"),
        &mut hashing,
        &mut |sent| observer.on_event(&DeployEvent::UploadProgress { sent, total }),
    );
    let local_sha = hex::encode(hashing.hasher.finalize());
    let cleanup = |remote: &Remote| {
        let _ = remote.exec(&format!("rm -f -- {quoted_temp}"));
    };
    match upload {
        Ok(output) if output.status == 0 => {}
        Ok(output) => {
            cleanup(&remote);
            return Err(Error::RemoteCommand {
                host: remote.label().to_string(),
                command: format!("upload to {temp_path}"),
                status: output.status,
                stderr: output.stderr.trim().to_string(),
            });
        }
        Err(error) => {
            cleanup(&remote);
            return Err(error);
        }
    }
    let upload_ms = millis(upload_started.elapsed());
    observer.on_event(&DeployEvent::Uploaded { temp_path: temp_path.clone() });

    // One round trip: verify what landed on the remote disk, then owner, mode and mtime, keep the current binary as
    // the next numbered release (a hard link: same inode, no copy), and rename the upload over the target.
    let (next_number, previous_release) = next_release(dest, &state);
    let quoted_dest = sh_quote(dest.as_str());
    let owner = sh_quote(options.owner.as_str());
    let keep_previous = match &previous_release {
        Some(release) => {
            let quoted_release = sh_quote(release);
            format!("{sudo}ln -- {quoted_dest} {quoted_release} 2>/dev/null || {sudo}cp -p -- {quoted_dest} {quoted_release}\n")
        }
        None => String::new(),
    };
    let swap = format!(
        "set -e\n\
         actual=$(sha256sum -- {quoted_temp} | cut -d ' ' -f 1)\n\
         if [ \"$actual\" != {local_sha} ]; then rm -f -- {quoted_temp}; echo \"mismatch=$actual\"; exit 0; fi\n\
         {sudo}chown -- {owner}: {quoted_temp}\n\
         {sudo}chmod 0755 -- {quoted_temp}\n\
         {sudo}touch -m -d @{local_mtime} -- {quoted_temp}\n\
         {keep_previous}\
         {sudo}mv -f -- {quoted_temp} {quoted_dest}\n\
         sync -- {quoted_dest} 2>/dev/null || true\n\
         echo swapped\n"
    );
    let swapped = match remote.run("verify, chown/chmod and atomic swap", &swap) {
        Ok(output) => output,
        Err(error) => {
            cleanup(&remote);
            return Err(error);
        }
    };
    if let Some(remote_sha) = swapped.lines().find_map(|line| line.strip_prefix("mismatch=")) {
        return Err(Error::ChecksumMismatch {
            host: remote.label().to_string(),
            temp_path,
            local: local_sha,
            remote: remote_sha.to_string(),
        });
    }
    observer.on_event(&DeployEvent::ChecksumVerified { sha256: local_sha.clone() });
    observer.on_event(&DeployEvent::Swapped { previous_release: previous_release.clone() });

    // Restart and wait for health.
    let (stopped_at, stopped_pids) =
        restart_service(&remote, dest, &restart, &launch, sudo, options.stop_timeout, observer)?;
    observer.on_event(&DeployEvent::WaitingForHealth { url: options.health.to_string() });
    match wait_healthy(&remote, &options.health, options.health_timeout) {
        Ok(healthy_at) => {
            let downtime = stopped_at.map(|stop| healthy_at.saturating_duration_since(stop));
            observer.on_event(&DeployEvent::Healthy { downtime });
            let mut releases: Vec<(u64, String)> = state.releases.clone();
            if let Some(release) = &previous_release {
                releases.push((next_number, release.clone()));
            }
            let pruned = prune_releases(&remote, &mut releases, options.keep, sudo);
            Ok(DeployReport {
                host: remote.label().to_string(),
                dest: dest.to_string(),
                sha256: local_sha,
                bytes: total,
                upload_ms,
                previous_release,
                restart_method: restart_name(&restart).to_string(),
                unit: match &restart {
                    Restart::Systemd(unit) => Some(unit.clone()),
                    Restart::Process { .. } => None,
                },
                stopped_pids,
                downtime_ms: downtime.map(millis),
                pruned_releases: pruned,
                total_ms: millis(started.elapsed()),
            })
        }
        Err(last) => {
            let timeout_secs = options.health_timeout.as_secs();
            let outcome = match &previous_release {
                None => {
                    stop_by_path(&remote, dest, sudo, options.stop_timeout, &restart)?;
                    "there is no previous release to roll back to; the new process was stopped".to_string()
                }
                Some(release) => {
                    observer.on_event(&DeployEvent::RollingBack { reason: last.clone() });
                    let quoted_release = sh_quote(release);
                    remote.run(
                        "restore the previous release",
                        &format!("{sudo}mv -f -- {quoted_release} {quoted_dest}"),
                    )?;
                    restart_current(&remote, dest, &restart, &launch, sudo, options.stop_timeout, observer)?;
                    match wait_healthy(&remote, &options.health, options.health_timeout) {
                        Ok(_) => format!("rolled back to the previous release ({release}), which is healthy again"),
                        Err(again) => format!(
                            "rolled back to the previous release ({release}), but it is not healthy either (last: {again})"
                        ),
                    }
                }
            };
            Err(Error::DeployUnhealthy {
                target: format!("{}:{dest}", remote.label()),
                url: options.health.to_string(),
                timeout_secs,
                last,
                outcome,
            })
        }
    }
}

/// What a deploy would do, from the remote's current state (`deploy --dry-run`). Reading it changes nothing on the
/// remote, not even the lock file.
#[derive(Debug, Clone, Serialize)]
pub struct DeployPlan {
    /// The host as given.
    pub host: String,
    /// The path that would be replaced.
    pub dest: String,
    /// SHA-256 of the local artifact.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// Whether the remote already has exactly this binary at `dest` (a deploy would still restart it).
    pub already_deployed: bool,
    /// Where the current binary would be kept (`None` on a first deploy).
    pub previous_release: Option<String>,
    /// `systemd` or `process`.
    pub restart_method: String,
    /// The systemd unit that would be restarted.
    pub unit: Option<String>,
    /// The processes that would be stopped (restart by process).
    pub stop_pids: Vec<u32>,
    /// How the new binary would be started by hand (restart by process): owner, arguments, working directory, log.
    pub start: Option<PlannedStart>,
    /// Releases that a successful deploy would remove (beyond `--keep`).
    pub prune_releases: Vec<String>,
    /// The health URL that would be polled.
    pub health: String,
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
    /// The file its output is appended to.
    pub log: String,
}

/// The restart part of a plan: the unit, or the PIDs to stop and how the binary would be started.
fn planned_restart(restart: &Restart, launch: &Launch) -> (Option<String>, Vec<u32>, Option<PlannedStart>) {
    match restart {
        Restart::Systemd(unit) => (Some(unit.clone()), Vec::new(), None),
        Restart::Process { pids } => (
            None,
            pids.clone(),
            Some(PlannedStart {
                owner: launch.owner.clone(),
                args: launch.args.clone(),
                cwd: launch.cwd.clone(),
                log: launch.log.clone(),
            }),
        ),
    }
}

/// Check everything a deploy checks and say what it would do, without changing anything on the remote.
pub fn plan_deploy(
    connect: &ConnectOptions,
    options: &DeployOptions,
    observer: &mut dyn DeployObserver,
) -> Result<DeployPlan> {
    check_deploy_options(options)?;
    let (bytes, sha256, _) = local_artifact(&options.binary)?;
    let remote = Remote::connect(connect)?;
    announce(&remote, observer);
    let dest = &options.dest;
    let (state, restart, launch) = resolve_deploy(&remote, options)?;
    let already_deployed = state.dest_exists
        && remote.run("sha256sum", &format!("sha256sum -- {}", sh_quote(dest.as_str())))?.split_whitespace().next()
            == Some(sha256.as_str());
    let (next_number, previous_release) = next_release(dest, &state);
    let mut releases = state.releases.clone();
    if let Some(release) = &previous_release {
        releases.push((next_number, release.clone()));
    }
    let (unit, stop_pids, start) = planned_restart(&restart, &launch);
    Ok(DeployPlan {
        host: remote.label().to_string(),
        dest: dest.to_string(),
        sha256,
        bytes,
        already_deployed,
        previous_release,
        restart_method: restart_name(&restart).to_string(),
        unit,
        stop_pids,
        start,
        prune_releases: excess_releases(&mut releases, options.keep),
        health: options.health.to_string(),
    })
}

/// The newest `<dest>.prev.<N>`, or the error that there is nothing to roll back to.
fn newest_release(remote: &Remote, dest: &RemotePath, state: &RemoteState) -> Result<String> {
    state.releases.iter().max_by_key(|(number, _)| *number).map(|(_, path)| path.clone()).ok_or_else(|| Error::RemotePrecondition {
        host: remote.label().to_string(),
        message: format!("no previous release of {dest} (looked for {dest}.prev.<N>); nothing to roll back to (nothing was changed)"),
    })
}

/// The read-only part of a rollback: the remote's state, checked, the release to restore, and the restart and start
/// it calls for (the owner defaults to the release file's).
fn resolve_rollback(remote: &Remote, options: &RollbackOptions) -> Result<(RemoteState, String, Restart, Launch)> {
    let dest = &options.dest;
    let state = inspect(remote, dest, options.owner.as_ref().map(UnixUser::as_str), &options.start)?;
    preflight(remote, dest, &state, options.owner.is_some())?;
    let release = newest_release(remote, dest, &state)?;
    let owner = match &options.owner {
        Some(owner) => owner.to_string(),
        None => {
            remote.run("owner of the release", &format!("stat -c %U -- {}", sh_quote(&release)))?.trim().to_string()
        }
    };
    let restart = choose_restart(remote, dest, &state, options.unit.as_deref())?;
    let launch = resolve_launch(dest, &owner, &options.start, &state.inherited);
    if matches!(restart, Restart::Process { .. }) {
        check_launch_dirs(remote, &state, &launch)?;
    }
    Ok((state, release, restart, launch))
}

/// What a rollback would do (`rollback --dry-run`); reading it changes nothing on the remote.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackPlan {
    /// The host as given.
    pub host: String,
    /// The path that would be replaced.
    pub dest: String,
    /// The release that would be put back.
    pub restore_release: String,
    /// SHA-256 of that release.
    pub sha256: String,
    /// `systemd` or `process`.
    pub restart_method: String,
    /// The systemd unit that would be restarted.
    pub unit: Option<String>,
    /// The processes that would be stopped (restart by process).
    pub stop_pids: Vec<u32>,
    /// How the restored binary would be started by hand (restart by process).
    pub start: Option<PlannedStart>,
    /// Releases still available after this one.
    pub remaining_releases: Vec<String>,
}

/// Check everything a rollback checks and say what it would do, without changing anything on the remote.
pub fn plan_rollback(
    connect: &ConnectOptions,
    options: &RollbackOptions,
    observer: &mut dyn DeployObserver,
) -> Result<RollbackPlan> {
    if let Some(unit) = &options.unit {
        validate_unit(unit)?;
    }
    let remote = Remote::connect(connect)?;
    announce(&remote, observer);
    let dest = &options.dest;
    let (state, release, restart, launch) = resolve_rollback(&remote, options)?;
    let sha256 = remote
        .run("sha256sum of the release", &format!("sha256sum -- {}", sh_quote(&release)))?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let (unit, stop_pids, start) = planned_restart(&restart, &launch);
    Ok(RollbackPlan {
        host: remote.label().to_string(),
        dest: dest.to_string(),
        sha256,
        restart_method: restart_name(&restart).to_string(),
        unit,
        stop_pids,
        start,
        remaining_releases: state
            .releases
            .iter()
            .filter(|(_, path)| *path != release)
            .map(|(_, p)| p.clone())
            .collect(),
        restore_release: release,
    })
}

/// Put the newest previous release back in place and restart it.
pub fn rollback(
    connect: &ConnectOptions,
    options: &RollbackOptions,
    observer: &mut dyn DeployObserver,
) -> Result<RollbackReport> {
    if let Some(unit) = &options.unit {
        validate_unit(unit)?;
    }
    let remote = Remote::connect(connect)?;
    announce(&remote, observer);
    let dest = &options.dest;
    // Read-only checks first (no release means nothing to do, and nothing is changed), then the lock, then the
    // state again under it.
    let before = inspect(&remote, dest, options.owner.as_ref().map(UnixUser::as_str), &options.start)?;
    preflight(&remote, dest, &before, options.owner.is_some())?;
    newest_release(&remote, dest, &before)?;
    let _lock = lock_target(&remote, dest, options.lock_wait, observer)?;
    let (state, release, restart, launch) = resolve_rollback(&remote, options)?;
    let sudo = if state.uid == Some(0) { "" } else { "sudo -n " };
    let quoted_dest = sh_quote(dest.as_str());
    remote.run("restore the previous release", &format!("{sudo}mv -f -- {} {quoted_dest}", sh_quote(&release)))?;
    observer.on_event(&DeployEvent::Swapped { previous_release: None });
    let (stopped_at, _) = restart_service(&remote, dest, &restart, &launch, sudo, options.stop_timeout, observer)?;
    let (healthy, downtime_ms) = match &options.health {
        None => (None, None),
        Some(url) => {
            observer.on_event(&DeployEvent::WaitingForHealth { url: url.to_string() });
            match wait_healthy(&remote, url, options.health_timeout) {
                Ok(at) => {
                    let downtime = stopped_at.map(|stop| at.saturating_duration_since(stop));
                    observer.on_event(&DeployEvent::Healthy { downtime });
                    (Some(true), downtime.map(millis))
                }
                Err(_) => (Some(false), None),
            }
        }
    };
    let sha256 = remote
        .run("sha256sum", &format!("sha256sum -- {quoted_dest}"))?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(RollbackReport {
        host: remote.label().to_string(),
        dest: dest.to_string(),
        restored_release: release.clone(),
        sha256,
        restart_method: restart_name(&restart).to_string(),
        healthy,
        downtime_ms,
        remaining_releases: state
            .releases
            .iter()
            .filter(|(_, path)| *path != release)
            .map(|(_, p)| p.clone())
            .collect(),
    })
}

/// Compare the deployed binary with a local artifact.
pub fn verify(connect: &ConnectOptions, binary: &Path, dest: &RemotePath) -> Result<VerifyReport> {
    let (_, local_sha256, local_mtime) = local_artifact(binary)?;
    let remote = Remote::connect(connect)?;
    let state = inspect(&remote, dest, None, &StartOptions::default())?;
    let quoted = sh_quote(dest.as_str());
    let (remote_sha256, remote_mtime) = if state.dest_exists {
        let output = remote.run("sha256sum and stat", &format!("sha256sum -- {quoted} && stat -c %Y -- {quoted}"))?;
        let mut lines = output.lines();
        let sha = lines.next().and_then(|line| line.split_whitespace().next()).map(str::to_string);
        let mtime = lines.next().and_then(|line| line.trim().parse::<u64>().ok());
        (sha, mtime)
    } else {
        (None, None)
    };
    let mut findings = Vec::new();
    match &remote_sha256 {
        None => findings.push(format!("{dest} does not exist on {}", remote.label())),
        Some(sha) if *sha != local_sha256 => {
            let mut finding =
                format!("{dest} differs from the local artifact (remote sha256 {sha}, local {local_sha256})");
            if let Some(remote_time) = remote_mtime {
                if remote_time < local_mtime {
                    finding.push_str(&format!(
                        "; it was modified {}s before the artifact was built: the deploy did not update it",
                        local_mtime - remote_time
                    ));
                }
            }
            findings.push(finding);
        }
        Some(_) => {}
    }
    for process in &state.processes {
        if process.runs_replaced_binary {
            findings.push(format!(
                "process {} still runs a replaced copy of {dest}: it was never restarted after the swap",
                process.pid
            ));
        }
    }
    Ok(VerifyReport {
        host: remote.label().to_string(),
        dest: dest.to_string(),
        local_sha256,
        remote_sha256,
        local_mtime,
        remote_mtime,
        processes: state.processes,
        findings,
    })
}

fn announce(remote: &Remote, observer: &mut dyn DeployObserver) {
    observer.on_event(&DeployEvent::Connected {
        target: format!("{}@{}:{}", remote.user(), remote.hostname(), remote.port()),
        recorded_host_key: match remote.host_key_status() {
            HostKeyStatus::Recorded(path) => Some(path.clone()),
            HostKeyStatus::Known => None,
        },
    });
}

/// The lock file of a target: beside it, hidden (`<dir>/.<name>.gbo-ci.lock`).
pub fn lock_path(dest: &RemotePath) -> String {
    format!("{}/.{}.gbo-ci.lock", dest.parent(), dest.file_name())
}

/// Take the target's lock: a `flock` held by a remote process for as long as the returned handle lives. The kernel
/// releases it when that process ends, which it does when this deploy ends, fails or loses its connection, so a
/// dead deploy never leaves a stale lock. The holder writes who it is into the file, for the next one's message.
fn lock_target(
    remote: &Remote,
    dest: &RemotePath,
    wait: Duration,
    observer: &mut dyn DeployObserver,
) -> Result<HeldCommand> {
    let lock = lock_path(dest);
    let wait_secs = wait.as_secs();
    let script = format!(
        r#"lock={quoted}
command -v flock >/dev/null 2>&1 || {{ echo noflock; exit 0; }}
exec 9>>"$lock" || exit 3
holder() {{ head -c 300 -- "$lock" | tr -d '\n'; }}
if ! flock -n 9; then
  echo "waiting=$(holder)"
  if [ {wait_secs} -eq 0 ] || ! flock -w {wait_secs} 9; then echo "held=$(holder)"; exit 0; fi
fi
: > "$lock"
echo "pid $$, $(id -un) from ${{SSH_CLIENT%% *}}, since $(date -u +%Y-%m-%dT%H:%M:%SZ)" >&9
echo locked
exec cat >/dev/null
"#,
        quoted = sh_quote(&lock)
    );
    let started = Instant::now();
    let mut held = remote.start_held(&script)?;
    let fail = |message: String| Error::RemotePrecondition { host: remote.label().to_string(), message };
    loop {
        match held.read_line(wait + Duration::from_secs(30))? {
            Some(line) if line == "locked" => {
                observer.on_event(&DeployEvent::Locked { lock: lock.clone() });
                return Ok(held);
            }
            Some(line) if line == "noflock" => {
                return Err(fail(format!(
                    "flock (util-linux) is not installed; it keeps two deploys of {dest} apart (nothing was changed)"
                )))
            }
            Some(line) => {
                if let Some(holder) = line.strip_prefix("waiting=") {
                    observer.on_event(&DeployEvent::WaitingForLock { lock: lock.clone(), holder: holder.to_string() });
                } else if let Some(holder) = line.strip_prefix("held=") {
                    return Err(Error::Locked {
                        host: remote.label().to_string(),
                        lock,
                        holder: if holder.is_empty() { "another gbo-ci".to_string() } else { holder.to_string() },
                        waited_secs: started.elapsed().as_secs(),
                    });
                }
            }
            None => {
                let stderr = held.stderr();
                return Err(fail(format!(
                    "cannot open the deploy lock {lock}: {stderr}; the SSH user needs write access to {} (the upload \
                     goes there too; nothing was changed)",
                    dest.parent()
                )));
            }
        }
    }
}

fn validate_unit(unit: &str) -> Result<()> {
    let ok = unit.ends_with(".service")
        && unit.len() > ".service".len()
        && unit.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("--unit", unit, "a systemd service name such as system.service"))
    }
}

fn default_log(dest: &RemotePath) -> String {
    let bin_dir = dest.parent();
    let base = match bin_dir.rfind('/') {
        Some(0) | None => "",
        Some(index) => &bin_dir[..index],
    };
    format!("{base}/logs/{}.log", dest.file_name())
}

fn resolve_launch(dest: &RemotePath, owner: &str, start: &StartOptions, inherited: &Inherited) -> Launch {
    Launch {
        cwd_inherited: start.cwd.is_none() && inherited.cwd.is_some(),
        log_inherited: start.log.is_none() && inherited.log.is_some(),
        owner: owner.to_string(),
        args: start.args.clone().or_else(|| inherited.args.clone()).unwrap_or_default(),
        cwd: start
            .cwd
            .as_ref()
            .map(RemotePath::to_string)
            .or_else(|| inherited.cwd.clone())
            .unwrap_or_else(|| dest.parent().to_string()),
        log: start
            .log
            .as_ref()
            .map(RemotePath::to_string)
            .or_else(|| inherited.log.clone())
            .unwrap_or_else(|| default_log(dest)),
    }
}

/// One remote script that reads everything the deploy decides on, without changing anything.
fn inspect(remote: &Remote, dest: &RemotePath, owner: Option<&str>, start: &StartOptions) -> Result<RemoteState> {
    // The directories a start by hand would use when nothing is inherited; checked in the same round trip.
    let log_dir = match &start.log {
        Some(log) => log.parent().to_string(),
        None => parent_of(&default_log(dest)).to_string(),
    };
    let cwd = start.cwd.as_ref().map(RemotePath::to_string).unwrap_or_else(|| dest.parent().to_string());
    let owner_probe = match owner {
        Some(owner) => format!("id -u -- {} >/dev/null 2>&1 && echo owner=1", sh_quote(owner)),
        None => String::new(),
    };
    let script = format!(
        r#"dest={dest}; dir={dir}
echo "uid=$(id -u)"
[ -d "$dir" ] && echo dir=1
[ -d {log_dir} ] && echo logdir=1
[ -d {cwd} ] && echo cwddir=1
{owner_probe}
[ -f "$dest" ] && echo "current=$(stat -c %U -- "$dest")"
command -v sha256sum >/dev/null 2>&1 && echo sha256sum=1
command -v runuser >/dev/null 2>&1 && echo runuser=1
command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] && echo systemd=1
for f in "$dest".prev.*; do [ -f "$f" ] && echo "release=$f"; done
for x in $(find /proc -mindepth 2 -maxdepth 2 -name exe \( -lname {pattern} -o -lname {pattern_deleted} \) 2>/dev/null); do
  p=${{x%/exe}}
  e=$(readlink "$p/exe" 2>/dev/null) || continue
  if [ "$e" = "$dest" ] || [ "$e" = "$dest (deleted)" ]; then
    pid=${{p#/proc/}}
    echo "pid=$pid:$e"
    u=$(sed -n 's#.*/\([^/]*\.service\)$#\1#p' "$p/cgroup" 2>/dev/null | head -n 1)
    [ -n "$u" ] && echo "unit=$pid:$u"
    echo "cmdline=$pid:$(od -An -v -tx1 "$p/cmdline" 2>/dev/null | tr -d ' \n')"
    echo "cwdof=$pid:$(readlink "$p/cwd" 2>/dev/null)"
    echo "stdout=$pid:$(readlink "$p/fd/1" 2>/dev/null)"
  fi
done
true
"#,
        dest = sh_quote(dest.as_str()),
        dir = sh_quote(dest.parent()),
        log_dir = sh_quote(&log_dir),
        cwd = sh_quote(&cwd),
        pattern = sh_quote(&glob_escape(dest.as_str())),
        pattern_deleted = sh_quote(&format!("{} (deleted)", glob_escape(dest.as_str()))),
    );
    let output = remote.run("inspect the target", &script)?;
    Ok(parse_inspect(&output, dest))
}

/// Escape `find -lname` glob characters so the pattern matches the path literally.
fn glob_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for character in path.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(character);
    }
    out
}

fn parse_inspect(output: &str, dest: &RemotePath) -> RemoteState {
    let mut state = RemoteState::default();
    let mut units: BTreeMap<u32, String> = BTreeMap::new();
    let mut first_pid: Option<u32> = None;
    let mut per_pid: BTreeMap<(u32, &str), String> = BTreeMap::new();
    let release_prefix = format!("{}.prev.", dest.as_str());
    for line in output.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        match key {
            "uid" => state.uid = value.trim().parse().ok(),
            "dir" => state.dir_exists = true,
            "owner" => state.owner_exists = true,
            "current" => {
                state.dest_exists = true;
                state.current_owner = Some(value.to_string());
            }
            "sha256sum" => state.has_sha256sum = true,
            "runuser" => state.has_runuser = true,
            "logdir" => state.log_dir_exists = true,
            "cwddir" => state.cwd_exists = true,
            "systemd" => state.systemd = true,
            "release" => {
                if let Some(number) = value.strip_prefix(&release_prefix).and_then(|n| n.parse::<u64>().ok()) {
                    state.releases.push((number, value.to_string()));
                }
            }
            "pid" => {
                if let Some((pid, exe)) = value.split_once(':') {
                    if let Ok(pid) = pid.parse::<u32>() {
                        first_pid.get_or_insert(pid);
                        state.processes.push(ProcessInfo {
                            pid,
                            runs_replaced_binary: exe.ends_with(" (deleted)"),
                            unit: None,
                        });
                    }
                }
            }
            "unit" | "cmdline" | "cwdof" | "stdout" => {
                if let Some((pid, rest)) = value.split_once(':') {
                    if let Ok(pid) = pid.parse::<u32>() {
                        if key == "unit" {
                            units.insert(pid, rest.to_string());
                        } else {
                            per_pid.insert((pid, key), rest.to_string());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for process in &mut state.processes {
        process.unit = units.get(&process.pid).cloned();
    }
    state.releases.sort();
    if let Some(pid) = first_pid {
        if let Some(hex_args) = per_pid.get(&(pid, "cmdline")) {
            if let Ok(bytes) = hex::decode(hex_args) {
                let mut parts: Vec<String> =
                    bytes.split(|byte| *byte == 0).map(|part| String::from_utf8_lossy(part).into_owned()).collect();
                if parts.last().is_some_and(String::is_empty) {
                    parts.pop();
                }
                if !parts.is_empty() {
                    state.inherited.args = Some(parts[1..].to_vec());
                }
            }
        }
        state.inherited.cwd = per_pid.get(&(pid, "cwdof")).filter(|value| value.starts_with('/')).cloned();
        // Only a regular log file is inherited, never a terminal, pipe or /dev/null.
        state.inherited.log = per_pid
            .get(&(pid, "stdout"))
            .filter(|value| value.starts_with('/') && !value.starts_with("/dev/") && !value.ends_with(" (deleted)"))
            .cloned();
    }
    state
}

fn preflight(remote: &Remote, dest: &RemotePath, state: &RemoteState, check_owner: bool) -> Result<()> {
    let fail = |message: String| Err(Error::RemotePrecondition { host: remote.label().to_string(), message });
    if !state.dir_exists {
        return fail(format!(
            "the destination directory {} does not exist; create it first (nothing was changed)",
            dest.parent()
        ));
    }
    if check_owner && !state.owner_exists {
        return fail("the owner user does not exist on the remote host (nothing was changed)".to_string());
    }
    if !state.has_sha256sum {
        return fail("sha256sum (coreutils) is not installed on the remote host".to_string());
    }
    Ok(())
}

fn check_launch_dirs(remote: &Remote, state: &RemoteState, launch: &Launch) -> Result<()> {
    // Directories inherited from the running process exist (it runs there and writes there); the others were
    // probed by `inspect`.
    let fail = |message: String| Err(Error::RemotePrecondition { host: remote.label().to_string(), message });
    if !launch.log_inherited && !state.log_dir_exists {
        return fail(format!(
            "the log directory {} does not exist; create it or pass --log (nothing was changed)",
            parent_of(&launch.log)
        ));
    }
    if !launch.cwd_inherited && !state.cwd_exists {
        return fail(format!("the working directory {} does not exist; pass --cwd (nothing was changed)", launch.cwd));
    }
    Ok(())
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(index) => &path[..index],
    }
}

fn choose_restart(
    remote: &Remote,
    dest: &RemotePath,
    state: &RemoteState,
    forced_unit: Option<&str>,
) -> Result<Restart> {
    if let Some(unit) = forced_unit {
        return Ok(Restart::Systemd(unit.to_string()));
    }
    if state.systemd {
        for process in &state.processes {
            let Some(unit) = &process.unit else { continue };
            // A process in a unit's cgroup is only "owned" by it when the unit runs this binary: a binary started by
            // hand from an SSH session without pam_systemd sits in ssh.service's cgroup, and restarting ssh.service
            // would be wrong.
            let show = remote.exec(&format!("systemctl show -p MainPID -p ExecStart -- {}", sh_quote(unit)))?;
            let main_pid = show
                .stdout
                .lines()
                .find_map(|line| line.strip_prefix("MainPID="))
                .and_then(|value| value.trim().parse::<u32>().ok());
            if main_pid == Some(process.pid) || show.stdout.contains(&format!("path={} ", dest.as_str())) {
                return Ok(Restart::Systemd(unit.clone()));
            }
        }
    }
    Ok(Restart::Process { pids: state.processes.iter().map(|process| process.pid).collect() })
}

fn restart_name(restart: &Restart) -> &'static str {
    match restart {
        Restart::Systemd(_) => "systemd",
        Restart::Process { .. } => "process",
    }
}

/// Restart after a swap; returns when the old process was told to stop (`None` if none ran) and the PIDs stopped.
fn restart_service(
    remote: &Remote,
    dest: &RemotePath,
    restart: &Restart,
    launch: &Launch,
    sudo: &str,
    stop_timeout: Duration,
    observer: &mut dyn DeployObserver,
) -> Result<(Option<Instant>, Vec<u32>)> {
    match restart {
        Restart::Systemd(unit) => {
            observer.on_event(&DeployEvent::Restarting { method: format!("systemd unit {unit}") });
            let stopped_at = Instant::now();
            remote
                .run(&format!("systemctl restart {unit}"), &format!("{sudo}systemctl restart -- {}", sh_quote(unit)))?;
            Ok((Some(stopped_at), Vec::new()))
        }
        Restart::Process { pids } => {
            let method = if pids.is_empty() {
                "not running; starting it".to_string()
            } else {
                format!("process {}", pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))
            };
            observer.on_event(&DeployEvent::Restarting { method });
            let stopped_at = Instant::now();
            let mut script = String::new();
            if !pids.is_empty() {
                script.push_str(&stop_script(dest, pids, sudo, stop_timeout));
            }
            script.push_str(&start_script(remote, dest, launch, sudo));
            remote.run("stop the old process and start the new one", &script)?;
            Ok(((!pids.is_empty()).then_some(stopped_at), pids.clone()))
        }
    }
}

/// Restart whatever runs `dest` now (used after restoring a release).
fn restart_current(
    remote: &Remote,
    dest: &RemotePath,
    restart: &Restart,
    launch: &Launch,
    sudo: &str,
    stop_timeout: Duration,
    observer: &mut dyn DeployObserver,
) -> Result<()> {
    let current = match restart {
        Restart::Systemd(unit) => Restart::Systemd(unit.clone()),
        Restart::Process { .. } => Restart::Process { pids: running_pids(remote, dest)? },
    };
    restart_service(remote, dest, &current, launch, sudo, stop_timeout, observer).map(|_| ())
}

fn stop_by_path(
    remote: &Remote,
    dest: &RemotePath,
    sudo: &str,
    stop_timeout: Duration,
    restart: &Restart,
) -> Result<()> {
    match restart {
        Restart::Systemd(unit) => {
            remote.run(&format!("systemctl stop {unit}"), &format!("{sudo}systemctl stop -- {}", sh_quote(unit)))?;
        }
        Restart::Process { .. } => {
            let pids = running_pids(remote, dest)?;
            if !pids.is_empty() {
                remote.run("stop the process", &stop_script(dest, &pids, sudo, stop_timeout))?;
            }
        }
    }
    Ok(())
}

fn running_pids(remote: &Remote, dest: &RemotePath) -> Result<Vec<u32>> {
    let script = format!(
        r#"dest={}; for x in $(find /proc -mindepth 2 -maxdepth 2 -name exe \( -lname {} -o -lname {} \) 2>/dev/null); do p=${{x%/exe}}; e=$(readlink "$p/exe" 2>/dev/null) || continue; if [ "$e" = "$dest" ] || [ "$e" = "$dest (deleted)" ]; then echo "${{p#/proc/}}"; fi; done; true"#,
        sh_quote(dest.as_str()),
        sh_quote(&glob_escape(dest.as_str())),
        sh_quote(&format!("{} (deleted)", glob_escape(dest.as_str()))),
    );
    let output = remote.run("find running processes", &script)?;
    Ok(output.lines().filter_map(|line| line.trim().parse().ok()).collect())
}

/// SIGTERM the PIDs that still run `dest` (re-checked, so a reused PID is never hit), wait, then SIGKILL.
fn stop_script(dest: &RemotePath, pids: &[u32], sudo: &str, stop_timeout: Duration) -> String {
    let pid_list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
    let rounds = (stop_timeout.as_millis() / 50).max(1);
    format!(
        r#"dest={dest}
mine() {{ e=$(readlink "/proc/$1/exe" 2>/dev/null) && {{ [ "$e" = "$dest" ] || [ "$e" = "$dest (deleted)" ]; }}; }}
for p in {pid_list}; do mine "$p" && {sudo}kill -TERM "$p" 2>/dev/null; done
i=0
while [ "$i" -lt {rounds} ]; do
  alive=; for p in {pid_list}; do mine "$p" && alive=1; done
  [ -z "$alive" ] && break
  sleep 0.05; i=$((i+1))
done
if [ -n "$alive" ]; then for p in {pid_list}; do mine "$p" && {sudo}kill -KILL "$p" 2>/dev/null; done; sleep 0.1; fi
true
"#,
        dest = sh_quote(dest.as_str()),
    )
}

/// Start `dest` detached (own session, no terminal) as the owner, output appended to the log.
fn start_script(remote: &Remote, dest: &RemotePath, launch: &Launch, sudo: &str) -> String {
    let mut command = vec![sh_quote(dest.as_str())];
    command.extend(launch.args.iter().map(|arg| sh_quote(arg)));
    let command = command.join(" ");
    let owner = sh_quote(&launch.owner);
    let run_as = if remote.user() == launch.owner {
        command
    } else if sudo.is_empty() {
        format!(
            "if command -v runuser >/dev/null 2>&1; then exec runuser -u {owner} -- {command}; else exec su -s /bin/sh {owner} -c 'exec \"$0\" \"$@\"' {command}; fi"
        )
    } else {
        format!("exec sudo -n -u {owner} -- {command}")
    };
    format!(
        "cd -- {cwd} && setsid -f sh -c {inner} >> {log} 2>&1 < /dev/null\n",
        cwd = sh_quote(&launch.cwd),
        inner = sh_quote(&run_as),
        log = sh_quote(&launch.log),
    )
}

/// Poll until 2xx or the deadline; returns the instant of the healthy answer or the last failure.
fn wait_healthy(remote: &Remote, url: &HealthUrl, timeout: Duration) -> std::result::Result<Instant, String> {
    let deadline = Instant::now() + timeout;
    let mut last: String;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let probe_timeout = remaining.min(Duration::from_secs(3)).max(Duration::from_millis(200));
        match remote.http_get(url.host(), url.port(), url.path(), probe_timeout) {
            Ok(status) if (200..300).contains(&status) => return Ok(Instant::now()),
            Ok(status) => last = format!("HTTP {status}"),
            Err(error) => last = error.to_string(),
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The releases beyond the newest `keep`, oldest first: what a deploy removes after it succeeds.
fn excess_releases(releases: &mut Vec<(u64, String)>, keep: usize) -> Vec<String> {
    releases.sort();
    if releases.len() <= keep {
        return Vec::new();
    }
    releases.drain(..releases.len() - keep).map(|(_, path)| path).collect()
}

fn prune_releases(remote: &Remote, releases: &mut Vec<(u64, String)>, keep: usize, sudo: &str) -> Vec<String> {
    let excess = excess_releases(releases, keep);
    if excess.is_empty() {
        return Vec::new();
    }
    let quoted: Vec<String> = excess.iter().map(|path| sh_quote(path)).collect();
    match remote.run("prune old releases", &format!("{sudo}rm -f -- {}", quoted.join(" "))) {
        Ok(_) => excess,
        Err(_) => Vec::new(),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Seconds since the epoch, for reports.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

struct HashingReader<'a> {
    inner: &'a mut File,
    hasher: Sha256,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let count = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..count]);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_log_sits_in_the_seed_logs_directory() {
        let dest: RemotePath = "/opt/gbo/bin/botserver".parse().expect("parse");
        assert_eq!(default_log(&dest), "/opt/gbo/logs/botserver.log");
        let shallow: RemotePath = "/bin/tool".parse().expect("parse");
        assert_eq!(default_log(&shallow), "/logs/tool.log");
    }

    #[test]
    fn inspect_output_is_parsed() {
        let dest: RemotePath = "/opt/gbo/bin/botserver".parse().expect("parse");
        let output = "uid=0\ndir=1\nowner=1\ncurrent=gbuser\nsha256sum=1\nrunuser=1\n\
            release=/opt/gbo/bin/botserver.prev.10\nrelease=/opt/gbo/bin/botserver.prev.9\n\
            release=/opt/gbo/bin/botserver.prev.x\n\
            pid=42:/opt/gbo/bin/botserver (deleted)\nunit=42:system.service\n\
            cmdline=42:2f6f70742f67626f2f62696e2f626f747365727665720020612062002d2d6e6f636f6e736f6c6500\n\
            cwdof=42:/opt/gbo/bin\nstdout=42:/opt/gbo/logs/error.log\n";
        let state = parse_inspect(output, &dest);
        assert_eq!(state.uid, Some(0));
        assert!(state.dir_exists && state.owner_exists && state.dest_exists && state.has_runuser);
        assert_eq!(state.releases.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![9, 10]);
        assert_eq!(state.processes.len(), 1);
        assert!(state.processes[0].runs_replaced_binary);
        assert_eq!(state.processes[0].unit.as_deref(), Some("system.service"));
        assert_eq!(state.inherited.args, Some(vec![" a b".to_string(), "--noconsole".to_string()]));
        assert_eq!(state.inherited.cwd.as_deref(), Some("/opt/gbo/bin"));
        assert_eq!(state.inherited.log.as_deref(), Some("/opt/gbo/logs/error.log"));
    }

    #[test]
    fn terminals_and_null_are_not_inherited_as_logs() {
        let dest: RemotePath = "/x/bin/b".parse().expect("parse");
        let state = parse_inspect("pid=7:/x/bin/b\nstdout=7:/dev/null\n", &dest);
        assert_eq!(state.inherited.log, None);
        let state = parse_inspect("pid=7:/x/bin/b\nstdout=7:pipe:[1234]\n", &dest);
        assert_eq!(state.inherited.log, None);
    }

    #[test]
    fn glob_characters_are_escaped_for_find() {
        assert_eq!(glob_escape("/opt/gbo/bin/botserver"), "/opt/gbo/bin/botserver");
        assert_eq!(glob_escape("/a[1]/b*?"), "/a\\[1\\]/b\\*\\?");
    }

    #[test]
    fn unit_names_are_validated() {
        assert!(validate_unit("system.service").is_ok());
        assert!(validate_unit("getty@tty1.service").is_ok());
        assert!(validate_unit("system").is_err());
        assert!(validate_unit("a;b.service").is_err());
    }

    #[test]
    fn explicit_start_options_win_over_inherited_ones() {
        let dest: RemotePath = "/opt/gbo/bin/botserver".parse().expect("parse");
        let inherited =
            Inherited { args: Some(vec!["--old".into()]), cwd: Some("/srv".into()), log: Some("/l/x.log".into()) };
        let launch = resolve_launch(&dest, "gbuser", &StartOptions::default(), &inherited);
        assert_eq!(
            (launch.args.clone(), launch.cwd.as_str(), launch.log.as_str()),
            (vec!["--old".to_string()], "/srv", "/l/x.log")
        );
        let explicit = StartOptions {
            args: Some(vec!["--noconsole".into()]),
            cwd: None,
            log: Some("/opt/gbo/logs/error.log".parse().expect("parse")),
        };
        let launch = resolve_launch(&dest, "gbuser", &explicit, &Inherited::default());
        assert_eq!(launch.args, vec!["--noconsole"]);
        assert_eq!(launch.cwd, "/opt/gbo/bin");
        assert_eq!(launch.log, "/opt/gbo/logs/error.log");
    }
}

#[cfg(test)]
#[path = "deploy_properties.rs"]
mod properties;
