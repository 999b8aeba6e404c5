//! Is it right now? The health URL polled through the SSH connection until it answers 2xx, and the `verify` command's
//! comparison of the deployed binary with the local artifact.

use std::time::{Duration, Instant};

use super::event::DeployEvent;
use super::inspect::{remote_digest, RemoteState};
use super::report::VerifyReport;
use crate::error::Result;
use crate::event::Observer;
use crate::names::{HealthUrl, RemotePath};
use crate::ssh::Remote;

/// Wait for `url` to answer 2xx, saying so; returns the downtime since `stopped_at` (`None` when nothing was
/// stopped), or the last probe's failure.
pub(super) fn await_healthy(
    remote: &Remote,
    url: &HealthUrl,
    timeout: Duration,
    stopped_at: Option<Instant>,
    observer: &mut dyn Observer<DeployEvent>,
) -> std::result::Result<Option<Duration>, String> {
    observer.on_event(&DeployEvent::WaitingForHealth { url: url.clone() });
    let healthy_at = wait_healthy(remote, url, timeout)?;
    let downtime = stopped_at.map(|stop| healthy_at.saturating_duration_since(stop));
    observer.on_event(&DeployEvent::Healthy { downtime });
    Ok(downtime)
}

/// Poll until 2xx or the deadline; returns the instant of the healthy answer or the last failure.
pub(super) fn wait_healthy(
    remote: &Remote,
    url: &HealthUrl,
    timeout: Duration,
) -> std::result::Result<Instant, String> {
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

/// Compare the deployed binary (and the processes that run it) with the local artifact's SHA-256 and time.
pub(super) fn compare(
    remote: &Remote,
    dest: &RemotePath,
    (local_sha256, local_mtime): (String, u64),
    state: RemoteState,
) -> Result<VerifyReport> {
    let (remote_sha256, remote_mtime) =
        if state.dest_exists { remote_digest(remote, dest, dest.file_name())? } else { (None, None) };
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
        dest: dest.clone(),
        local_sha256,
        remote_sha256,
        local_mtime,
        remote_mtime,
        processes: state.processes,
        findings,
    })
}
