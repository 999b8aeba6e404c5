//! What a deploy and a rollback are asked to do, and the checks of it that need no network.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::names::{HealthUrl, RemotePath, SystemdUnit, UnixUser};

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
    pub unit: Option<SystemdUnit>,
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

impl DeployOptions {
    /// The checks a deploy makes before it touches the network.
    pub(super) fn check(&self) -> Result<()> {
        if self.keep == 0 {
            return Err(Error::invalid("--keep", "0", "at least 1 previous release must be kept"));
        }
        check_restart_timeout(self.stop_timeout, self.restart_timeout)
    }
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
    pub unit: Option<SystemdUnit>,
    /// Health deadline.
    pub health_timeout: Duration,
    /// Stop deadline before SIGKILL.
    pub stop_timeout: Duration,
    /// How long the restart may take (longer than `stop_timeout`).
    pub restart_timeout: Duration,
    /// How long to wait for another deploy or rollback of the same target to finish.
    pub lock_wait: Duration,
}

impl RollbackOptions {
    /// The checks a rollback makes before it touches the network.
    pub(super) fn check(&self) -> Result<()> {
        check_restart_timeout(self.stop_timeout, self.restart_timeout)
    }
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
