//! `deploy`, `rollback` and `verify`: replace a running binary on a remote host without "dest open: Failure".
//!
//! The new file is streamed into a root-only staging directory made for this deploy inside the target's directory,
//! synced, checked by SHA-256 on the remote, given its owner and mode there, and renamed over the target. The running
//! process keeps its old inode, so nothing is busy. The current binary is kept as a numbered release
//! (`<dest>.prev.<N>`, a hard link, so it costs no copy), then the service is restarted: through its systemd unit
//! when one owns the process, otherwise by stopping the process that runs the exact target path and starting the new
//! one detached as the owner (the owner's own shell opens the log). The health URL (as seen from the remote host) is
//! polled through the SSH connection; if the restart fails, takes longer than the restart timeout, or health never
//! answers 2xx, the previous release is put back, started and checked.
//!
//! The target's directory belongs to the service user, so every root step there is built by [`crate::remote_dir`]:
//! one working directory entered and checked once, only relative names, nothing opened or chowned by a name the
//! service user controls. Nothing on the remote changes until every input has been checked: the binary is readable,
//! the destination directory is its real path, the owner exists, and the owner can enter the working directory and
//! write the log.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::names::{HealthUrl, RemotePath, UnixUser};
use crate::remote_dir;
use crate::ssh::{sh_quote, ConnectOptions, HeldCommand, HostKeyStatus, Remote};

pub use crate::remote_dir::lock_path;

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
    /// How long the restart (the stop and the start, or `systemctl restart`) may take before it counts as failed and
    /// is rolled back; longer than `stop_timeout` ([`default_restart_timeout`] gives the usual value).
    pub restart_timeout: Duration,
    /// How long to wait for another deploy or rollback of the same target to finish.
    pub lock_wait: Duration,
}

/// The restart timeout that goes with a stop timeout: the stop's whole allowance plus a minute for the start.
pub fn default_restart_timeout(stop_timeout: Duration) -> Duration {
    stop_timeout + Duration::from_secs(60)
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
    /// The restart failed or health never came; the previous release is being restored.
    RollingBack {
        /// Why (`the restart failed: ...` or `not healthy: ...`).
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
    /// Why pruning was skipped, when it was (the deploy itself succeeded; nothing was removed).
    pub prune_error: Option<String>,
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
    /// How long the restart may take (longer than `stop_timeout`).
    pub restart_timeout: Duration,
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
    /// Every `<dest>.prev.<N>`, whatever it is (so a new number never meets a planted name).
    releases: Vec<(u64, String)>,
    /// The releases that are not regular files (links or anything else planted there).
    irregular_releases: Vec<String>,
    processes: Vec<ProcessInfo>,
    inherited: Inherited,
    current_owner: Option<String>,
    /// The destination directory's real path (`pwd -P`), when it can be entered.
    real_dir: Option<String>,
    /// The target exists but is a symbolic link or not a regular file.
    dest_not_file: bool,
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

/// How this session reaches root and the owner on the remote.
#[derive(Debug, Clone)]
struct Access {
    /// The SSH user is root.
    root: bool,
    /// The SSH user's name.
    user: String,
    /// `runuser` exists on the remote.
    runuser: bool,
}

impl Access {
    fn new(remote: &Remote, state: &RemoteState) -> Self {
        Access { root: state.uid == Some(0), user: remote.user().to_string(), runuser: state.has_runuser }
    }

    /// `script` run by root: as it is when the SSH user is root, through `sudo -n` otherwise.
    fn root(&self, script: &str) -> String {
        if self.root {
            script.to_string()
        } else {
            format!("sudo -n sh -c {} gbo-ci", sh_quote(script))
        }
    }

    /// A command prefix that runs what follows as `owner` (nothing when the SSH user is the owner).
    fn as_owner(&self, owner: &str) -> String {
        let quoted = sh_quote(owner);
        if self.user == owner {
            String::new()
        } else if self.root && self.runuser {
            format!("runuser -u {quoted} -- ")
        } else if self.root {
            format!("su -s /bin/sh {quoted} -c 'exec \"$0\" \"$@\"' ")
        } else {
            format!("sudo -n -u {quoted} -- ")
        }
    }
}

/// Run a root script of [`remote_dir`]; its refusal (exit 3) is an error carrying its message.
fn run_root(remote: &Remote, access: &Access, what: &str, script: &str) -> Result<String> {
    let output = remote.exec(&access.root(script))?;
    match output.status {
        0 => Ok(output.stdout),
        remote_dir::REFUSED => Err(Error::RemotePrecondition {
            host: remote.label().to_string(),
            message: output.stderr.trim().to_string(),
        }),
        status => Err(Error::RemoteCommand {
            host: remote.label().to_string(),
            command: what.to_string(),
            status,
            stderr: output.stderr.trim().to_string(),
        }),
    }
}

/// Run a restart step as root, bounded on the remote by `timeout` (which ends the whole step, never the process it
/// started) and locally by the SSH session's own timeout a little later: a step that does not finish in time is an
/// error saying so, like any other failed restart.
fn run_bounded(remote: &Remote, access: &Access, what: &str, script: &str, limit: Duration) -> Result<String> {
    let secs = limit.as_secs().max(1);
    let bounded = format!("timeout -k 5 {secs} sh -c {}", sh_quote(script));
    let timed_out = |secs: u64| Error::RemoteTimeout { host: remote.label().to_string(), what: what.to_string(), secs };
    match remote.exec_within(&access.root(&bounded), Duration::from_secs(secs + 20)) {
        Ok(output) if output.status == 0 => Ok(output.stdout),
        Ok(output) if output.status == 124 || output.status == 137 => Err(timed_out(secs)),
        Ok(output) => Err(Error::RemoteCommand {
            host: remote.label().to_string(),
            command: what.to_string(),
            status: output.status,
            stderr: output.stderr.trim().to_string(),
        }),
        Err(error) if error.is_timeout() => Err(timed_out(secs + 20)),
        Err(error) => Err(error),
    }
}

/// The options a deploy checks before it touches the network.
fn check_deploy_options(options: &DeployOptions) -> Result<()> {
    if options.keep == 0 {
        return Err(Error::invalid("--keep", "0", "at least 1 previous release must be kept"));
    }
    if let Some(unit) = &options.unit {
        validate_unit(unit)?;
    }
    check_restart_timeout(options.stop_timeout, options.restart_timeout)
}

/// The restart must be allowed longer than the stop it contains.
fn check_restart_timeout(stop_timeout: Duration, restart_timeout: Duration) -> Result<()> {
    if restart_timeout <= stop_timeout {
        return Err(Error::invalid(
            "--restart-timeout",
            restart_timeout.as_secs().to_string(),
            format!(
                "longer than --stop-timeout ({} s): the restart waits that long for the old process to stop before \
                 it starts the new one",
                stop_timeout.as_secs()
            ),
        ));
    }
    Ok(())
}

/// The read-only part of a deploy: the remote's state, checked, and the restart and start it calls for.
fn resolve_deploy(remote: &Remote, options: &DeployOptions) -> Result<(RemoteState, Restart, Launch)> {
    let dest = &options.dest;
    let state = inspect(remote, dest, Some(options.owner.as_str()), &options.start)?;
    preflight(remote, dest, &state, true)?;
    if state.dest_not_file {
        return Err(Error::RemotePrecondition {
            host: remote.label().to_string(),
            message: format!(
                "{dest} is a symbolic link or not a regular file; gbo-ci replaces only a regular file (it never \
                 writes through a link): remove it (nothing was changed)"
            ),
        });
    }
    let restart = choose_restart(remote, dest, &state, options.unit.as_deref())?;
    let launch = resolve_launch(dest, options.owner.as_str(), &options.start, &state.inherited);
    if matches!(restart, Restart::Process { .. }) {
        check_launch_dirs(remote, &state, &launch)?;
        check_launch_as_owner(remote, &Access::new(remote, &state), &launch)?;
    }
    Ok((state, restart, launch))
}

/// The number and path the current binary is kept under (no path when there is no current binary). The number is
/// past every `<dest>.prev.<N>` name there is, whatever it is.
fn next_release(dest: &RemotePath, state: &RemoteState) -> (u64, Option<String>) {
    let next_number = state.releases.iter().map(|(number, _)| *number).max().unwrap_or(0) + 1;
    (next_number, state.dest_exists.then(|| format!("{}.prev.{next_number}", dest.as_str())))
}

/// The file name of a release path (`/opt/gbo/bin/botserver.prev.3` → `botserver.prev.3`).
fn file_name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
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

/// Why a deploy rolls back.
enum Failure {
    /// The restart command failed or was cut off.
    Restart(String),
    /// Health never answered 2xx; the last probe's result.
    Unhealthy(String),
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
    // Every read-only check first, so bad input changes nothing (not even the lock file); then the lock, and the
    // state read again under it (a deploy that held the lock meanwhile changed the releases and the process).
    let (state, _, _) = resolve_deploy(&remote, options)?;
    let access = Access::new(&remote, &state);
    let _lock = lock_target(&remote, &access, dest, options.lock_wait, observer)?;
    let (state, restart, launch) = resolve_deploy(&remote, options)?;
    let (next_number, previous_release) = next_release(dest, &state);

    // Upload into a root-only staging directory inside the target's directory.
    let stage = remote_dir::stage_name(dest);
    run_root(&remote, &access, "make the staging directory", &remote_dir::prepare_stage(dest, &stage))?;
    let temp_path = remote_dir::upload_path(dest, &stage);
    let discard = |remote: &Remote| {
        let _ = remote.exec(&access.root(&remote_dir::discard_stage(dest, &stage)));
    };
    observer.on_event(&DeployEvent::UploadStarted { temp_path: temp_path.clone(), total });
    let upload_started = Instant::now();
    let mut hashing = HashingReader { inner: &mut file, hasher: Sha256::new() };
    let upload = remote.exec_with_input(&access.root(&remote_dir::upload(dest, &stage)), &mut hashing, &mut |sent| {
        observer.on_event(&DeployEvent::UploadProgress { sent, total })
    });
    let local_sha = hex::encode(hashing.hasher.finalize());
    match upload {
        Ok(output) if output.status == 0 => {}
        Ok(output) => {
            discard(&remote);
            return Err(Error::RemoteCommand {
                host: remote.label().to_string(),
                command: format!("upload to {temp_path}"),
                status: output.status,
                stderr: output.stderr.trim().to_string(),
            });
        }
        Err(error) => {
            discard(&remote);
            return Err(error);
        }
    }
    let upload_ms = millis(upload_started.elapsed());
    observer.on_event(&DeployEvent::Uploaded { temp_path: temp_path.clone() });

    // One root shell: verify what landed, give it owner, mode and mtime in the staging directory, keep the current
    // binary as the next numbered release (a hard link), and rename the upload over the target.
    let release_file = previous_release.as_ref().map(|_| remote_dir::release_name(dest, next_number));
    let swap = remote_dir::swap(dest, &stage, &local_sha, options.owner.as_str(), local_mtime, release_file.as_deref());
    let swapped = match run_root(&remote, &access, "verify, chown/chmod and atomic swap", &swap) {
        Ok(output) => output,
        Err(error) => {
            discard(&remote);
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
    // The current binary can vanish between the look and the swap; then nothing was kept.
    let previous_release = previous_release.filter(|_| swapped.lines().any(|line| line.starts_with("kept=")));
    observer.on_event(&DeployEvent::ChecksumVerified { sha256: local_sha.clone() });
    observer.on_event(&DeployEvent::Swapped { previous_release: previous_release.clone() });

    // Restart and wait for health; any failure of either rolls back.
    let failure = match restart_service(
        &remote,
        &access,
        dest,
        &restart,
        &launch,
        options.stop_timeout,
        options.restart_timeout,
        observer,
    ) {
        Err(error) => Failure::Restart(error.to_string()),
        Ok((stopped_at, stopped_pids)) => {
            observer.on_event(&DeployEvent::WaitingForHealth { url: options.health.to_string() });
            match wait_healthy(&remote, &options.health, options.health_timeout) {
                Ok(healthy_at) => {
                    let downtime = stopped_at.map(|stop| healthy_at.saturating_duration_since(stop));
                    observer.on_event(&DeployEvent::Healthy { downtime });
                    let mut releases: Vec<(u64, String)> = state.releases.clone();
                    if let Some(release) = &previous_release {
                        releases.push((next_number, release.clone()));
                    }
                    let (pruned, prune_error) = prune_releases(&remote, &access, dest, &mut releases, options.keep);
                    return Ok(DeployReport {
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
                        prune_error,
                        total_ms: millis(started.elapsed()),
                    });
                }
                Err(last) => Failure::Unhealthy(last),
            }
        }
    };
    let reason = match &failure {
        Failure::Restart(error) => format!("the restart failed: {error}"),
        Failure::Unhealthy(last) => format!("not healthy: {last}"),
    };
    let outcome = roll_back_deploy(
        &remote,
        &access,
        dest,
        previous_release.as_deref(),
        &restart,
        &launch,
        options,
        &reason,
        observer,
    );
    let target = format!("{}:{dest}", remote.label());
    Err(match failure {
        Failure::Restart(reason) => Error::DeployRestartFailed { target, reason, outcome },
        Failure::Unhealthy(last) => Error::DeployUnhealthy {
            target,
            url: options.health.to_string(),
            timeout_secs: options.health_timeout.as_secs(),
            last,
            outcome,
        },
    })
}

/// Put the previous release back after a failed restart or health check, restart it and check it; returns what
/// happened, for the error message (this never fails: every failure is said in the text).
#[allow(clippy::too_many_arguments)]
fn roll_back_deploy(
    remote: &Remote,
    access: &Access,
    dest: &RemotePath,
    previous_release: Option<&str>,
    restart: &Restart,
    launch: &Launch,
    options: &DeployOptions,
    reason: &str,
    observer: &mut dyn DeployObserver,
) -> String {
    let Some(release) = previous_release else {
        return match stop_by_path(remote, access, dest, options.stop_timeout, options.restart_timeout, restart) {
            Ok(()) => "there is no previous release to roll back to; the new process was stopped".to_string(),
            Err(error) => {
                format!("there is no previous release to roll back to, and stopping the new release failed: {error}")
            }
        };
    };
    observer.on_event(&DeployEvent::RollingBack { reason: reason.to_string() });
    let restore = remote_dir::restore(dest, file_name_of(release));
    if let Err(error) = run_root(remote, access, "restore the previous release", &restore) {
        return format!(
            "the previous release ({release}) could not be put back: {error}; the new release is still in place"
        );
    }
    if let Err(error) =
        restart_current(remote, access, dest, restart, launch, options.stop_timeout, options.restart_timeout, observer)
    {
        return format!("the previous release ({release}) was put back, but its restart failed too: {error}");
    }
    match wait_healthy(remote, &options.health, options.health_timeout) {
        Ok(_) => format!("rolled back to the previous release ({release}), which is healthy again"),
        Err(again) => {
            format!("rolled back to the previous release ({release}), but it is not healthy either (last: {again})")
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
    /// The file its output is appended to (opened by the owner).
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

/// SHA-256 and modification time of `file` (a name in `dest`'s directory), read without following a link; `None`
/// when it is not a regular file.
fn remote_digest(remote: &Remote, dest: &RemotePath, file: &str) -> Result<(Option<String>, Option<u64>)> {
    let output = remote.exec(&remote_dir::digest(dest, file))?;
    if output.status == remote_dir::REFUSED {
        return Err(Error::RemotePrecondition {
            host: remote.label().to_string(),
            message: output.stderr.trim().to_string(),
        });
    }
    if output.status != 0 {
        return Err(Error::RemoteCommand {
            host: remote.label().to_string(),
            command: format!("sha256 of {file}"),
            status: output.status,
            stderr: output.stderr.trim().to_string(),
        });
    }
    let sha = output.stdout.lines().find_map(|line| line.strip_prefix("sha=")).map(str::to_string);
    let mtime = output.stdout.lines().find_map(|line| line.strip_prefix("mtime=")).and_then(|t| t.trim().parse().ok());
    Ok((sha, mtime))
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
    let already_deployed =
        state.dest_exists && remote_digest(&remote, dest, dest.file_name())?.0.as_deref() == Some(sha256.as_str());
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

/// The newest `<dest>.prev.<N>`, or the error that there is nothing to roll back to, or that the newest is not a
/// regular file (a link planted at a release name is refused, never skipped for an older release).
fn newest_release(remote: &Remote, dest: &RemotePath, state: &RemoteState) -> Result<String> {
    let fail = |message: String| Error::RemotePrecondition { host: remote.label().to_string(), message };
    let newest =
        state.releases.iter().max_by_key(|(number, _)| *number).map(|(_, path)| path.clone()).ok_or_else(|| {
            fail(format!(
            "no previous release of {dest} (looked for {dest}.prev.<N>); nothing to roll back to (nothing was changed)"
        ))
        })?;
    if state.irregular_releases.contains(&newest) {
        return Err(fail(format!(
            "the newest release {newest} is a symbolic link or not a regular file; gbo-ci restores only a regular file \
             (it never follows a link): remove it (nothing was changed)"
        )));
    }
    Ok(newest)
}

/// The read-only part of a rollback: the remote's state, checked, the release to restore, and the restart and start
/// it calls for (the owner defaults to the release file's, never root).
fn resolve_rollback(remote: &Remote, options: &RollbackOptions) -> Result<(RemoteState, String, Restart, Launch)> {
    let dest = &options.dest;
    let state = inspect(remote, dest, options.owner.as_ref().map(UnixUser::as_str), &options.start)?;
    preflight(remote, dest, &state, options.owner.is_some())?;
    let release = newest_release(remote, dest, &state)?;
    let restart = choose_restart(remote, dest, &state, options.unit.as_deref())?;
    let owner = match &options.owner {
        Some(owner) => owner.to_string(),
        None => {
            let probe = format!("stat -c %u:%U -- {}", sh_quote(&release));
            let output = remote.run("owner of the release", &probe)?;
            let (uid, name) = output.trim().split_once(':').unwrap_or(("", ""));
            if uid == "0" && matches!(restart, Restart::Process { .. }) {
                return Err(Error::RemotePrecondition {
                    host: remote.label().to_string(),
                    message: format!(
                        "the release {release} belongs to root; a rollback starts the release as its owner unless \
                         --owner says otherwise, and gbo-ci never starts one as root on its own: pass --owner \
                         (nothing was changed)"
                    ),
                });
            }
            name.to_string()
        }
    };
    let launch = resolve_launch(dest, &owner, &options.start, &state.inherited);
    if matches!(restart, Restart::Process { .. }) {
        check_launch_dirs(remote, &state, &launch)?;
        check_launch_as_owner(remote, &Access::new(remote, &state), &launch)?;
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

fn check_rollback_options(options: &RollbackOptions) -> Result<()> {
    if let Some(unit) = &options.unit {
        validate_unit(unit)?;
    }
    check_restart_timeout(options.stop_timeout, options.restart_timeout)
}

/// Check everything a rollback checks and say what it would do, without changing anything on the remote.
pub fn plan_rollback(
    connect: &ConnectOptions,
    options: &RollbackOptions,
    observer: &mut dyn DeployObserver,
) -> Result<RollbackPlan> {
    check_rollback_options(options)?;
    let remote = Remote::connect(connect)?;
    announce(&remote, observer);
    let dest = &options.dest;
    let (state, release, restart, launch) = resolve_rollback(&remote, options)?;
    let sha256 = remote_digest(&remote, dest, file_name_of(&release))?.0.unwrap_or_default();
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
    check_rollback_options(options)?;
    let remote = Remote::connect(connect)?;
    announce(&remote, observer);
    let dest = &options.dest;
    // Every read-only check first (no release means nothing to do, and nothing is changed), then the lock, then the
    // state again under it.
    let (before, _, _, _) = resolve_rollback(&remote, options)?;
    let access = Access::new(&remote, &before);
    let _lock = lock_target(&remote, &access, dest, options.lock_wait, observer)?;
    let (state, release, restart, launch) = resolve_rollback(&remote, options)?;
    run_root(&remote, &access, "restore the previous release", &remote_dir::restore(dest, file_name_of(&release)))?;
    observer.on_event(&DeployEvent::Swapped { previous_release: None });
    let (stopped_at, _) = restart_service(
        &remote,
        &access,
        dest,
        &restart,
        &launch,
        options.stop_timeout,
        options.restart_timeout,
        observer,
    )?;
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
    let sha256 = remote_digest(&remote, dest, dest.file_name())?.0.unwrap_or_default();
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
    let (remote_sha256, remote_mtime) =
        if state.dest_exists { remote_digest(&remote, dest, dest.file_name())? } else { (None, None) };
    let mut findings = Vec::new();
    match &remote_sha256 {
        None if state.dest_not_file => {
            findings.push(format!("{dest} on {} is a symbolic link or not a regular file", remote.label()))
        }
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

/// Take the target's lock: a `flock` on `/run/lock/gbo-ci/<hash>.lock` held by a remote root process for as long as
/// the returned handle lives. The kernel releases it when that process ends, which it does when this deploy ends,
/// fails or loses its connection, so a dead deploy never leaves a stale lock. The holder writes who it is into the
/// file, for the next one's message. The lock directory is root's alone, so no name in it is the service user's.
fn lock_target(
    remote: &Remote,
    access: &Access,
    dest: &RemotePath,
    wait: Duration,
    observer: &mut dyn DeployObserver,
) -> Result<HeldCommand> {
    let lock = lock_path(dest);
    let started = Instant::now();
    let mut held = remote.start_held(&access.root(&remote_dir::lock(dest, wait.as_secs())))?;
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
                    "cannot take the deploy lock {lock}: {stderr} (root takes it; a non-root SSH user needs \
                     `sudo -n`; nothing was changed)"
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
real=$(cd -P -- "$dir" 2>/dev/null && pwd -P) && echo "realdir=$real"
[ -d {log_dir} ] && echo logdir=1
[ -d {cwd} ] && echo cwddir=1
{owner_probe}
if [ -L "$dest" ]; then echo notfile=1
elif [ -f "$dest" ]; then echo "current=$(stat -c %U -- "$dest")"
elif [ -e "$dest" ]; then echo notfile=1
fi
command -v sha256sum >/dev/null 2>&1 && echo sha256sum=1
command -v runuser >/dev/null 2>&1 && echo runuser=1
command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] && echo systemd=1
for f in "$dest".prev.*; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  echo "release=$f"
  {{ [ -f "$f" ] && [ ! -L "$f" ]; }} || echo "irregular=$f"
done
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
            "realdir" => state.real_dir = Some(value.to_string()),
            "owner" => state.owner_exists = true,
            "current" => {
                state.dest_exists = true;
                state.current_owner = Some(value.to_string());
            }
            "notfile" => state.dest_not_file = true,
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
            "irregular" => state.irregular_releases.push(value.to_string()),
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
    match &state.real_dir {
        Some(real) if real == dest.parent() => {}
        Some(real) => {
            return fail(format!(
                "the destination directory {} is reached through a symbolic link (it resolves to {real}); gbo-ci \
                 acts only in a directory's real path: pass that, or remove the link (nothing was changed)",
                dest.parent()
            ))
        }
        None => return fail(format!("cannot enter the destination directory {} (nothing was changed)", dest.parent())),
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

/// The start by hand runs as the owner, who enters the working directory and opens the log itself (root never
/// opens it): check, as the owner, that both will work, before anything changes.
fn check_launch_as_owner(remote: &Remote, access: &Access, launch: &Launch) -> Result<()> {
    let script = remote_dir::owner_check(&access.as_owner(&launch.owner), &launch.cwd, &launch.log);
    // Root runs it only to become the owner; an SSH user that is the owner runs it itself.
    let command = if access.user == launch.owner { script } else { access.root(&script) };
    let output = remote.run("check the start as the owner", &command)?;
    let (owner, log, cwd) = (&launch.owner, &launch.log, &launch.cwd);
    let problem = match output.trim() {
        "ok" => return Ok(()),
        "cwd" => format!("the working directory {cwd} cannot be entered by {owner}"),
        "notfile" => format!("the log {log} is not a regular file (a symbolic link to one is followed, as {owner})"),
        "notwritable" => format!(
            "the log {log} is not writable by {owner}; the started process opens it as {owner} (root never opens \
             it): make {owner} its owner, or pass --log"
        ),
        "dirnotwritable" => format!(
            "{owner} cannot create the log {log} (its directory is not writable by {owner}); the started process \
             opens it as {owner}: create it owned by {owner}, or pass --log"
        ),
        other => format!("the check of the start as {owner} answered `{other}`"),
    };
    Err(Error::RemotePrecondition {
        host: remote.label().to_string(),
        message: format!("{problem} (nothing was changed)"),
    })
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
/// The whole restart is bounded by `restart_timeout` (which covers the stop's `stop_timeout`); a failure or a
/// timeout is an error, for the caller to roll back.
#[allow(clippy::too_many_arguments)]
fn restart_service(
    remote: &Remote,
    access: &Access,
    dest: &RemotePath,
    restart: &Restart,
    launch: &Launch,
    stop_timeout: Duration,
    restart_timeout: Duration,
    observer: &mut dyn DeployObserver,
) -> Result<(Option<Instant>, Vec<u32>)> {
    match restart {
        Restart::Systemd(unit) => {
            observer.on_event(&DeployEvent::Restarting { method: format!("systemd unit {unit}") });
            let stopped_at = Instant::now();
            // A unit that a broken release left failed (or past its start limit) is restarted all the same.
            let quoted = sh_quote(unit);
            let script = format!("systemctl reset-failed -- {quoted} >/dev/null 2>&1; systemctl restart -- {quoted}");
            run_bounded(remote, access, &format!("systemctl restart {unit}"), &script, restart_timeout)?;
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
                script.push_str(&stop_script(dest, pids, stop_timeout));
            }
            script.push_str(&start_script(access, dest, launch));
            run_bounded(remote, access, "stop the old process and start the new one", &script, restart_timeout)?;
            Ok(((!pids.is_empty()).then_some(stopped_at), pids.clone()))
        }
    }
}

/// Restart whatever runs `dest` now (used after restoring a release).
#[allow(clippy::too_many_arguments)]
fn restart_current(
    remote: &Remote,
    access: &Access,
    dest: &RemotePath,
    restart: &Restart,
    launch: &Launch,
    stop_timeout: Duration,
    restart_timeout: Duration,
    observer: &mut dyn DeployObserver,
) -> Result<()> {
    let current = match restart {
        Restart::Systemd(unit) => Restart::Systemd(unit.clone()),
        Restart::Process { .. } => Restart::Process { pids: running_pids(remote, dest)? },
    };
    restart_service(remote, access, dest, &current, launch, stop_timeout, restart_timeout, observer).map(|_| ())
}

fn stop_by_path(
    remote: &Remote,
    access: &Access,
    dest: &RemotePath,
    stop_timeout: Duration,
    restart_timeout: Duration,
    restart: &Restart,
) -> Result<()> {
    match restart {
        Restart::Systemd(unit) => {
            let script = format!("systemctl stop -- {}", sh_quote(unit));
            run_bounded(remote, access, &format!("systemctl stop {unit}"), &script, restart_timeout)?;
        }
        Restart::Process { .. } => {
            let pids = running_pids(remote, dest)?;
            if !pids.is_empty() {
                run_bounded(
                    remote,
                    access,
                    "stop the process",
                    &stop_script(dest, &pids, stop_timeout),
                    restart_timeout,
                )?;
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

/// SIGTERM the PIDs that still run `dest` (re-checked, so a reused PID is never hit), wait, then SIGKILL. Runs as
/// root (the caller wraps it).
fn stop_script(dest: &RemotePath, pids: &[u32], stop_timeout: Duration) -> String {
    let pid_list = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
    let rounds = (stop_timeout.as_millis() / 50).max(1);
    format!(
        r#"dest={dest}
mine() {{ e=$(readlink "/proc/$1/exe" 2>/dev/null) && {{ [ "$e" = "$dest" ] || [ "$e" = "$dest (deleted)" ]; }}; }}
for p in {pid_list}; do mine "$p" && kill -TERM "$p" 2>/dev/null; done
i=0
while [ "$i" -lt {rounds} ]; do
  alive=; for p in {pid_list}; do mine "$p" && alive=1; done
  [ -z "$alive" ] && break
  sleep 0.05; i=$((i+1))
done
if [ -n "$alive" ]; then for p in {pid_list}; do mine "$p" && kill -KILL "$p" 2>/dev/null; done; sleep 0.1; fi
true
"#,
        dest = sh_quote(dest.as_str()),
    )
}

/// Start `dest` detached (own session, no terminal) as the owner, whose own shell enters the working directory and
/// opens the log (see [`remote_dir::start`]).
fn start_script(access: &Access, dest: &RemotePath, launch: &Launch) -> String {
    let mut command = vec![sh_quote(dest.as_str())];
    command.extend(launch.args.iter().map(|arg| sh_quote(arg)));
    remote_dir::start(&access.as_owner(&launch.owner), &launch.cwd, &launch.log, &command.join(" "))
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

/// Unlink the releases beyond `keep` (names only: nothing a name points to is touched). The deploy has succeeded
/// by then, so a failure is reported beside the result, not as an error.
fn prune_releases(
    remote: &Remote,
    access: &Access,
    dest: &RemotePath,
    releases: &mut Vec<(u64, String)>,
    keep: usize,
) -> (Vec<String>, Option<String>) {
    let excess = excess_releases(releases, keep);
    if excess.is_empty() {
        return (Vec::new(), None);
    }
    let names: Vec<String> = excess.iter().map(|path| file_name_of(path).to_string()).collect();
    match run_root(remote, access, "prune old releases", &remote_dir::prune(dest, &names)) {
        Ok(_) => (excess, None),
        Err(error) => (Vec::new(), Some(error.to_string())),
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
