//! The decisions a deploy or rollback takes from the inspected state, before anything changes: how the service is
//! restarted (its systemd unit, or the processes that run the target), how a start by hand runs (owner, arguments,
//! working directory, log; checked as the owner), which name keeps the current binary and which release a rollback
//! restores. Dry runs stop here.

use super::access::Access;
use super::inspect::{default_log, inspect, parent_of, preflight, Inherited, RemoteState};
use super::options::{DeployOptions, RollbackOptions, StartOptions};
use super::report::{PlannedStart, Restart};
use crate::error::Result;
use crate::names::{RemotePath, SystemdUnit, UnixUser};
use crate::remote_dir;
use crate::ssh::{sh_quote, Remote};

/// Everything a start by hand needs, resolved.
#[derive(Debug, Clone)]
pub(super) struct Launch {
    pub(super) owner: String,
    pub(super) args: Vec<String>,
    pub(super) cwd: String,
    pub(super) log: String,
    pub(super) cwd_inherited: bool,
    pub(super) log_inherited: bool,
}

impl Launch {
    /// The start as a dry run reports it, when the restart is by hand.
    pub(super) fn planned(&self, restart: &Restart) -> Option<PlannedStart> {
        matches!(restart, Restart::Process { .. }).then(|| PlannedStart {
            owner: self.owner.clone(),
            args: self.args.clone(),
            cwd: self.cwd.clone(),
            log: self.log.clone(),
        })
    }
}

/// A deploy decided: the state it starts from, how it restarts, and how a start by hand runs.
pub(super) struct DeployDecision {
    pub(super) state: RemoteState,
    pub(super) restart: Restart,
    pub(super) launch: Launch,
}

/// A rollback decided: the state, the release it restores, how it restarts, and how a start by hand runs.
pub(super) struct RollbackDecision {
    pub(super) state: RemoteState,
    pub(super) release: String,
    pub(super) restart: Restart,
    pub(super) launch: Launch,
}

/// The read-only part of a deploy: the remote's state, checked, and the restart and start it calls for.
pub(super) fn deploy(remote: &Remote, options: &DeployOptions) -> Result<DeployDecision> {
    let dest = &options.dest;
    let state = inspect(remote, dest, Some(options.owner.as_str()), &options.start)?;
    preflight(remote, dest, &state, true)?;
    if state.dest_not_file {
        return Err(remote.refused(format!(
            "{dest} is a symbolic link or not a regular file; gbo-ci replaces only a regular file (it never writes \
             through a link): remove it (nothing was changed)"
        )));
    }
    let restart = choose_restart(remote, dest, &state, options.unit.as_ref())?;
    let launch = resolve_launch(dest, options.owner.as_str(), &options.start, &state.inherited);
    check_launch(remote, &state, &restart, &launch)?;
    Ok(DeployDecision { state, restart, launch })
}

/// The read-only part of a rollback: the remote's state, checked, the release to restore, and the restart and start
/// it calls for (the owner defaults to the release file's, never root).
pub(super) fn rollback(remote: &Remote, options: &RollbackOptions) -> Result<RollbackDecision> {
    let dest = &options.dest;
    let state = inspect(remote, dest, options.owner.as_ref().map(UnixUser::as_str), &options.start)?;
    preflight(remote, dest, &state, options.owner.is_some())?;
    let release = newest_release(remote, dest, &state)?;
    let restart = choose_restart(remote, dest, &state, options.unit.as_ref())?;
    let owner = match &options.owner {
        Some(owner) => owner.to_string(),
        None => {
            let probe = format!("stat -c %u:%U -- {}", sh_quote(&release));
            let output = remote.run("owner of the release", &probe)?;
            let (uid, name) = output.trim().split_once(':').unwrap_or(("", ""));
            if uid == "0" && matches!(restart, Restart::Process { .. }) {
                return Err(remote.refused(format!(
                    "the release {release} belongs to root; a rollback starts the release as its owner unless \
                     --owner says otherwise, and gbo-ci never starts one as root on its own: pass --owner (nothing \
                     was changed)"
                )));
            }
            name.to_string()
        }
    };
    let launch = resolve_launch(dest, &owner, &options.start, &state.inherited);
    check_launch(remote, &state, &restart, &launch)?;
    Ok(RollbackDecision { state, release, restart, launch })
}

/// The number and path the current binary is kept under (no path when there is no current binary). The number is
/// past every `<dest>.prev.<N>` name there is, whatever it is.
pub(super) fn next_release(dest: &RemotePath, state: &RemoteState) -> (u64, Option<String>) {
    let next_number = state.releases.iter().map(|(number, _)| *number).max().unwrap_or(0) + 1;
    (next_number, state.dest_exists.then(|| format!("{}.prev.{next_number}", dest.as_str())))
}

/// The newest `<dest>.prev.<N>`, or the error that there is nothing to roll back to, or that the newest is not a
/// regular file (a link planted at a release name is refused, never skipped for an older release).
fn newest_release(remote: &Remote, dest: &RemotePath, state: &RemoteState) -> Result<String> {
    let newest =
        state.releases.iter().max_by_key(|(number, _)| *number).map(|(_, path)| path.clone()).ok_or_else(|| {
            remote.refused(format!(
            "no previous release of {dest} (looked for {dest}.prev.<N>); nothing to roll back to (nothing was changed)"
        ))
        })?;
    if state.irregular_releases.contains(&newest) {
        return Err(remote.refused(format!(
            "the newest release {newest} is a symbolic link or not a regular file; gbo-ci restores only a regular file \
             (it never follows a link): remove it (nothing was changed)"
        )));
    }
    Ok(newest)
}

fn choose_restart(
    remote: &Remote,
    dest: &RemotePath,
    state: &RemoteState,
    forced_unit: Option<&SystemdUnit>,
) -> Result<Restart> {
    if let Some(unit) = forced_unit {
        return Ok(Restart::Systemd { unit: unit.to_string() });
    }
    if state.systemd {
        for process in &state.processes {
            let Some(unit) = &process.unit else { continue };
            // A process in a unit's cgroup is only "owned" by it when the unit runs this binary: a binary started by
            // hand from an SSH session without pam_systemd sits in ssh.service's cgroup, and restarting ssh.service
            // would be wrong.
            // As root: a user's systemctl needs the D-Bus system bus, which a minimal container has not; root's
            // talks to systemd's private socket.
            let show = remote.exec(
                &state.access(remote).root(&format!("systemctl show -p MainPID -p ExecStart -- {}", sh_quote(unit))),
            )?;
            let main_pid = show
                .stdout
                .lines()
                .find_map(|line| line.strip_prefix("MainPID="))
                .and_then(|value| value.trim().parse::<u32>().ok());
            if main_pid == Some(process.pid) || show.stdout.contains(&format!("path={} ", dest.as_str())) {
                return Ok(Restart::Systemd { unit: unit.clone() });
            }
        }
    }
    Ok(Restart::Process { pids: state.processes.iter().map(|process| process.pid).collect() })
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

/// A start by hand (restart by process) must find its directories and be possible as the owner.
fn check_launch(remote: &Remote, state: &RemoteState, restart: &Restart, launch: &Launch) -> Result<()> {
    if matches!(restart, Restart::Process { .. }) {
        check_launch_dirs(remote, state, launch)?;
        check_launch_as_owner(remote, &state.access(remote), launch)?;
    }
    Ok(())
}

fn check_launch_dirs(remote: &Remote, state: &RemoteState, launch: &Launch) -> Result<()> {
    // Directories inherited from the running process exist (it runs there and writes there); the others were
    // probed by `inspect`.
    if !launch.log_inherited && !state.log_dir_exists {
        return Err(remote.refused(format!(
            "the log directory {} does not exist; create it or pass --log (nothing was changed)",
            parent_of(&launch.log)
        )));
    }
    if !launch.cwd_inherited && !state.cwd_exists {
        return Err(remote.refused(format!(
            "the working directory {} does not exist; pass --cwd (nothing was changed)",
            launch.cwd
        )));
    }
    Ok(())
}

/// What [`remote_dir::owner_check`] found, as the owner.
enum OwnerCheck {
    Ok,
    /// The working directory cannot be entered.
    Cwd,
    /// The log is not a regular file.
    NotFile,
    /// The log is not writable.
    NotWritable,
    /// The log does not exist and its directory is not writable.
    DirNotWritable,
    /// Anything else the script printed.
    Other(String),
}

impl OwnerCheck {
    fn parse(output: &str) -> Self {
        match output.trim() {
            "ok" => OwnerCheck::Ok,
            "cwd" => OwnerCheck::Cwd,
            "notfile" => OwnerCheck::NotFile,
            "notwritable" => OwnerCheck::NotWritable,
            "dirnotwritable" => OwnerCheck::DirNotWritable,
            other => OwnerCheck::Other(other.to_string()),
        }
    }
}

/// The start by hand runs as the owner, who enters the working directory and opens the log itself (root never
/// opens it): check, as the owner, that both will work, before anything changes.
fn check_launch_as_owner(remote: &Remote, access: &Access, launch: &Launch) -> Result<()> {
    let script = remote_dir::owner_check(&access.as_owner(&launch.owner), &launch.cwd, &launch.log);
    // Root runs it only to become the owner; an SSH user that is the owner runs it itself.
    let command = if access.user == launch.owner { script } else { access.root(&script) };
    let output = remote.run("check the start as the owner", &command)?;
    let (owner, log, cwd) = (&launch.owner, &launch.log, &launch.cwd);
    let problem = match OwnerCheck::parse(&output) {
        OwnerCheck::Ok => return Ok(()),
        OwnerCheck::Cwd => format!("the working directory {cwd} cannot be entered by {owner}"),
        OwnerCheck::NotFile => {
            format!("the log {log} is not a regular file (a symbolic link to one is followed, as {owner})")
        }
        OwnerCheck::NotWritable => format!(
            "the log {log} is not writable by {owner}; the started process opens it as {owner} (root never opens \
             it): make {owner} its owner, or pass --log"
        ),
        OwnerCheck::DirNotWritable => format!(
            "{owner} cannot create the log {log} (its directory is not writable by {owner}); the started process \
             opens it as {owner}: create it owned by {owner}, or pass --log"
        ),
        OwnerCheck::Other(other) => format!("the check of the start as {owner} answered `{other}`"),
    };
    Err(remote.refused(format!("{problem} (nothing was changed)")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
