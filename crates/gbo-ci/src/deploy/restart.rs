//! Restart the service after a swap: `systemctl restart` of its unit, or SIGTERM (then SIGKILL) to exactly the
//! processes that run the target path and a start of the binary detached, as its owner, whose own shell enters the
//! working directory and opens the log. Every restart step is bounded on the remote by the restart timeout (which
//! ends the step, never the process it started) and locally by the SSH session a little later.

use std::time::{Duration, Instant};

use super::access::Access;
use super::event::DeployEvent;
use super::inspect::glob_escape;
use super::plan::Launch;
use super::report::Restart;
use crate::error::{Error, Result};
use crate::event::Observer;
use crate::names::RemotePath;
use crate::remote_dir;
use crate::ssh::{sh_quote, Remote};

/// The service of one target, and how it is restarted.
pub(super) struct Service<'a> {
    pub(super) remote: &'a Remote,
    pub(super) access: &'a Access,
    pub(super) dest: &'a RemotePath,
    launch: &'a Launch,
    /// How long a stopped process may take to exit before it is killed.
    stop_timeout: Duration,
    /// How long the whole restart may take.
    restart_timeout: Duration,
}

impl<'a> Service<'a> {
    /// The service at `dest`, started by hand as `launch` says; `(stop timeout, restart timeout)`.
    pub(super) fn new(
        remote: &'a Remote,
        access: &'a Access,
        dest: &'a RemotePath,
        launch: &'a Launch,
        (stop_timeout, restart_timeout): (Duration, Duration),
    ) -> Self {
        Service { remote, access, dest, launch, stop_timeout, restart_timeout }
    }

    /// Restart after a swap; returns when the old process was told to stop (`None` if none ran) and the PIDs
    /// stopped. A failure or a timeout is an error, for the caller to roll back.
    pub(super) fn restart(
        &self,
        restart: &Restart,
        observer: &mut dyn Observer<DeployEvent>,
    ) -> Result<(Option<Instant>, Vec<u32>)> {
        observer.on_event(&DeployEvent::Restarting { restart: restart.clone() });
        let stopped_at = Instant::now();
        match restart {
            Restart::Systemd { unit } => {
                // A unit that a broken release left failed (or past its start limit) is restarted all the same.
                let quoted = sh_quote(unit);
                let script =
                    format!("systemctl reset-failed -- {quoted} >/dev/null 2>&1; systemctl restart -- {quoted}");
                self.run_bounded(&format!("systemctl restart {unit}"), &script)?;
                Ok((Some(stopped_at), Vec::new()))
            }
            Restart::Process { pids } => {
                let mut script = String::new();
                if !pids.is_empty() {
                    script.push_str(&stop_script(self.dest, pids, self.stop_timeout));
                }
                script.push_str(&self.start_script());
                self.run_bounded("stop the old process and start the new one", &script)?;
                Ok(((!pids.is_empty()).then_some(stopped_at), pids.clone()))
            }
        }
    }

    /// Restart whatever runs the target now, the same way (used after restoring a release).
    pub(super) fn restart_current(&self, restart: &Restart, observer: &mut dyn Observer<DeployEvent>) -> Result<()> {
        let current = match restart {
            Restart::Systemd { unit } => Restart::Systemd { unit: unit.clone() },
            Restart::Process { .. } => Restart::Process { pids: self.running_pids()? },
        };
        self.restart(&current, observer).map(|_| ())
    }

    /// Stop whatever runs the target, the same way.
    pub(super) fn stop(&self, restart: &Restart) -> Result<()> {
        match restart {
            Restart::Systemd { unit } => {
                let script = format!("systemctl stop -- {}", sh_quote(unit));
                self.run_bounded(&format!("systemctl stop {unit}"), &script)?;
            }
            Restart::Process { .. } => {
                let pids = self.running_pids()?;
                if !pids.is_empty() {
                    self.run_bounded("stop the process", &stop_script(self.dest, &pids, self.stop_timeout))?;
                }
            }
        }
        Ok(())
    }

    fn running_pids(&self) -> Result<Vec<u32>> {
        let dest = self.dest.as_str();
        let script = format!(
            r#"dest={}; for x in $(find /proc -mindepth 2 -maxdepth 2 -name exe \( -lname {} -o -lname {} \) 2>/dev/null); do p=${{x%/exe}}; e=$(readlink "$p/exe" 2>/dev/null) || continue; if [ "$e" = "$dest" ] || [ "$e" = "$dest (deleted)" ]; then echo "${{p#/proc/}}"; fi; done; true"#,
            sh_quote(dest),
            sh_quote(&glob_escape(dest)),
            sh_quote(&format!("{} (deleted)", glob_escape(dest))),
        );
        let output = self.remote.run("find running processes", &script)?;
        Ok(output.lines().filter_map(|line| line.trim().parse().ok()).collect())
    }

    /// Start the target detached (own session, no terminal) as the owner, whose own shell enters the working
    /// directory and opens the log (see [`remote_dir::start`]).
    fn start_script(&self) -> String {
        let launch = self.launch;
        let mut command = vec![sh_quote(self.dest.as_str())];
        command.extend(launch.args.iter().map(|arg| sh_quote(arg)));
        remote_dir::start(&self.access.as_owner(&launch.owner), &launch.cwd, &launch.log, &command.join(" "))
    }

    /// Run a restart step as root, bounded on the remote by the restart timeout (which ends the whole step, never
    /// the process it started) and locally by the SSH session's own timeout a little later: a step that does not
    /// finish in time is an error saying so, like any other failed restart.
    fn run_bounded(&self, what: &str, script: &str) -> Result<String> {
        let remote = self.remote;
        let secs = self.restart_timeout.as_secs().max(1);
        let bounded = format!("timeout -k 5 {secs} sh -c {}", sh_quote(script));
        let timed_out =
            |secs: u64| Error::RemoteTimeout { host: remote.label().to_string(), what: what.to_string(), secs };
        match remote.exec_within(&self.access.root(&bounded), Duration::from_secs(secs + 20)) {
            Ok(output) if output.status == 0 => Ok(output.stdout),
            Ok(output) if output.status == 124 || output.status == 137 => Err(timed_out(secs)),
            Ok(output) => Err(remote.failed(what, &output)),
            Err(error) if error.is_timeout() => Err(timed_out(secs + 20)),
            Err(error) => Err(error),
        }
    }
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
