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
//!
//! A request walks through the rooms of this module once, in order: `inspect` (one read-only script) → `plan` (the
//! restart, the start by hand, the release names; dry runs stop here) → `lock` → `stage` (upload, check, swap in)
//! → `restart` → `verify` (health) → `releases` (prune), or on failure `rollback` (restore, restart, check). A
//! rollback request: `inspect` → `plan` → `lock` → `releases` (restore) → `restart` → `verify`. `access` (how
//! root and the owner are reached) sits under all of them; progress goes out as [`DeployEvent`]s.

mod access;
mod event;
mod inspect;
mod lock;
mod options;
mod plan;
mod releases;
mod report;
mod restart;
mod rollback;
mod stage;
mod verify;

use std::path::Path;
use std::time::Instant;

pub use self::event::{DeployEvent, DeployObserver, RollbackReason};
pub use self::options::{default_restart_timeout, DeployOptions, RollbackOptions, StartOptions};
pub use self::report::{
    DeployPlan, DeployReport, PlannedStart, ProcessInfo, Restart, RestartMethod, RollbackPlan, RollbackReport,
    VerifyReport,
};
pub use self::stage::local_artifact;
pub use crate::remote_dir::lock_path;

use self::inspect::remote_digest;
use self::restart::Service;
use self::stage::Artifact;
use crate::error::{Error, Result};
use crate::event::{millis, Observer};
use crate::names::RemotePath;
use crate::ssh::{ConnectOptions, HostKeyStatus, Remote};

/// Deploy `options.binary` to the host described by `connect`.
pub fn deploy(
    connect: &ConnectOptions,
    options: &DeployOptions,
    observer: &mut dyn Observer<DeployEvent>,
) -> Result<DeployReport> {
    let started = Instant::now();
    options.check()?;
    // Check the artifact before touching the network; the hash is computed while streaming.
    let artifact = Artifact::open(&options.binary)?;
    let remote = connect_to(connect, observer)?;
    let dest = &options.dest;
    // Every read-only check first, so bad input changes nothing (not even the lock file); then the lock, and the
    // state read again under it (a deploy that held the lock meanwhile changed the releases and the process).
    let access = plan::deploy(&remote, options)?.state.access(&remote);
    let _lock = lock::take(&remote, &access, dest, options.lock_wait, observer)?;
    let decided = plan::deploy(&remote, options)?;
    let (number, keep_as) = plan::next_release(dest, &decided.state);

    let staged = stage::upload(&remote, &access, dest, artifact, observer)?;
    let previous_release = staged.swap_in(&remote, &access, dest, &options.owner, (number, keep_as), observer)?;

    // Restart and wait for health; any failure of either rolls back.
    let restart = &decided.restart;
    let service =
        Service::new(&remote, &access, dest, &decided.launch, (options.stop_timeout, options.restart_timeout));
    let reason = match service.restart(restart, observer) {
        Err(error) => RollbackReason::RestartFailed(error.to_string()),
        Ok((stopped_at, stopped_pids)) => {
            match verify::await_healthy(&remote, &options.health, options.health_timeout, stopped_at, observer) {
                Err(last) => RollbackReason::Unhealthy(last),
                Ok(downtime) => {
                    let mut releases = releases::with_kept(&decided.state.releases, number, previous_release.as_ref());
                    let (pruned, prune_error) = releases::prune(&remote, &access, dest, &mut releases, options.keep);
                    return Ok(DeployReport {
                        host: remote.label().to_string(),
                        dest: dest.clone(),
                        sha256: staged.sha256,
                        bytes: staged.bytes,
                        upload_ms: staged.upload_ms,
                        previous_release,
                        restart_method: restart.method(),
                        unit: restart.unit().map(str::to_string),
                        stopped_pids,
                        downtime_ms: downtime.map(millis),
                        pruned_releases: pruned,
                        prune_error,
                        total_ms: millis(started.elapsed()),
                    });
                }
            }
        }
    };
    let outcome = rollback::after_failed_deploy(
        &service,
        restart,
        previous_release.as_deref(),
        (&options.health, options.health_timeout),
        reason.clone(),
        observer,
    );
    let target = format!("{}:{dest}", remote.label());
    Err(match reason {
        RollbackReason::RestartFailed(reason) => Error::DeployRestartFailed { target, reason, outcome },
        RollbackReason::Unhealthy(last) => Error::DeployUnhealthy {
            target,
            url: options.health.to_string(),
            timeout_secs: options.health_timeout.as_secs(),
            last,
            outcome,
        },
    })
}

/// Check everything a deploy checks and say what it would do, without changing anything on the remote.
pub fn plan_deploy(
    connect: &ConnectOptions,
    options: &DeployOptions,
    observer: &mut dyn Observer<DeployEvent>,
) -> Result<DeployPlan> {
    options.check()?;
    let (bytes, sha256, _) = local_artifact(&options.binary)?;
    let remote = connect_to(connect, observer)?;
    let dest = &options.dest;
    let decided = plan::deploy(&remote, options)?;
    let already_deployed = decided.state.dest_exists
        && remote_digest(&remote, dest, dest.file_name())?.0.as_deref() == Some(sha256.as_str());
    let (number, previous_release) = plan::next_release(dest, &decided.state);
    let mut releases = releases::with_kept(&decided.state.releases, number, previous_release.as_ref());
    Ok(DeployPlan {
        host: remote.label().to_string(),
        dest: dest.clone(),
        sha256,
        bytes,
        already_deployed,
        previous_release,
        restart_method: decided.restart.method(),
        unit: decided.restart.unit().map(str::to_string),
        stop_pids: decided.restart.pids().to_vec(),
        start: decided.launch.planned(&decided.restart),
        prune_releases: releases::excess(&mut releases, options.keep),
        health: options.health.clone(),
    })
}

/// Put the newest previous release back in place and restart it.
pub fn rollback(
    connect: &ConnectOptions,
    options: &RollbackOptions,
    observer: &mut dyn Observer<DeployEvent>,
) -> Result<RollbackReport> {
    options.check()?;
    let remote = connect_to(connect, observer)?;
    let dest = &options.dest;
    // Every read-only check first (no release means nothing to do, and nothing is changed), then the lock, then the
    // state again under it.
    let access = plan::rollback(&remote, options)?.state.access(&remote);
    let _lock = lock::take(&remote, &access, dest, options.lock_wait, observer)?;
    let decided = plan::rollback(&remote, options)?;
    releases::restore(&remote, &access, dest, &decided.release)?;
    observer.on_event(&DeployEvent::Swapped { previous_release: None });
    let service =
        Service::new(&remote, &access, dest, &decided.launch, (options.stop_timeout, options.restart_timeout));
    let (stopped_at, _) = service.restart(&decided.restart, observer)?;
    let (healthy, downtime_ms) = match &options.health {
        None => (None, None),
        Some(url) => match verify::await_healthy(&remote, url, options.health_timeout, stopped_at, observer) {
            Ok(downtime) => (Some(true), downtime.map(millis)),
            Err(_) => (Some(false), None),
        },
    };
    let sha256 = remote_digest(&remote, dest, dest.file_name())?.0.unwrap_or_default();
    Ok(RollbackReport {
        host: remote.label().to_string(),
        dest: dest.clone(),
        sha256,
        restart_method: decided.restart.method(),
        healthy,
        downtime_ms,
        remaining_releases: releases::remaining(&decided.state.releases, &decided.release),
        restored_release: decided.release,
    })
}

/// Check everything a rollback checks and say what it would do, without changing anything on the remote.
pub fn plan_rollback(
    connect: &ConnectOptions,
    options: &RollbackOptions,
    observer: &mut dyn Observer<DeployEvent>,
) -> Result<RollbackPlan> {
    options.check()?;
    let remote = connect_to(connect, observer)?;
    let dest = &options.dest;
    let decided = plan::rollback(&remote, options)?;
    let sha256 = remote_digest(&remote, dest, releases::file_name_of(&decided.release))?.0.unwrap_or_default();
    Ok(RollbackPlan {
        host: remote.label().to_string(),
        dest: dest.clone(),
        sha256,
        restart_method: decided.restart.method(),
        unit: decided.restart.unit().map(str::to_string),
        stop_pids: decided.restart.pids().to_vec(),
        start: decided.launch.planned(&decided.restart),
        remaining_releases: releases::remaining(&decided.state.releases, &decided.release),
        restore_release: decided.release,
    })
}

/// Compare the deployed binary with a local artifact.
pub fn verify(connect: &ConnectOptions, binary: &Path, dest: &RemotePath) -> Result<VerifyReport> {
    let (_, local_sha256, local_mtime) = local_artifact(binary)?;
    let remote = Remote::connect(connect)?;
    let state = inspect::inspect(&remote, dest, None, &StartOptions::default())?;
    verify::compare(&remote, dest, (local_sha256, local_mtime), state)
}

/// Connect, and say so.
fn connect_to(connect: &ConnectOptions, observer: &mut dyn Observer<DeployEvent>) -> Result<Remote> {
    let remote = Remote::connect(connect)?;
    observer.on_event(&DeployEvent::Connected {
        target: format!("{}@{}:{}", remote.user(), remote.hostname(), remote.port()),
        recorded_host_key: match remote.host_key_status() {
            HostKeyStatus::Recorded(path) => Some(path.clone()),
            HostKeyStatus::Known => None,
        },
    });
    Ok(remote)
}
