//! The first room of every request: one read-only remote script that reads everything a deploy, rollback or verify
//! decides on (the destination directory and its real path, the target, the owner, the tools, the releases, the
//! processes that run the target and what they inherited), its parser, the preflight checks of it, and the digest of
//! a file there. Nothing here changes anything on the remote.

use std::collections::BTreeMap;

use super::access::Access;
use super::options::StartOptions;
use super::report::ProcessInfo;
use crate::error::Result;
use crate::names::RemotePath;
use crate::remote_dir;
use crate::ssh::{sh_quote, Remote};

/// What the remote looks like before anything is changed.
#[derive(Debug, Default, Clone)]
pub(super) struct RemoteState {
    pub(super) uid: Option<u32>,
    pub(super) dir_exists: bool,
    pub(super) owner_exists: bool,
    pub(super) dest_exists: bool,
    pub(super) has_sha256sum: bool,
    pub(super) has_runuser: bool,
    pub(super) systemd: bool,
    pub(super) log_dir_exists: bool,
    pub(super) cwd_exists: bool,
    /// Every `<dest>.prev.<N>`, whatever it is (so a new number never meets a planted name).
    pub(super) releases: Vec<(u64, String)>,
    /// The releases that are not regular files (links or anything else planted there).
    pub(super) irregular_releases: Vec<String>,
    pub(super) processes: Vec<ProcessInfo>,
    pub(super) inherited: Inherited,
    pub(super) current_owner: Option<String>,
    /// The destination directory's real path (`pwd -P`), when it can be entered.
    pub(super) real_dir: Option<String>,
    /// The target exists but is a symbolic link or not a regular file.
    pub(super) dest_not_file: bool,
}

impl RemoteState {
    /// How this session reaches root and the owner there.
    pub(super) fn access(&self, remote: &Remote) -> Access {
        Access { root: self.uid == Some(0), user: remote.user().to_string(), runuser: self.has_runuser }
    }
}

/// Settings read from the running process, used when the caller did not give them.
#[derive(Debug, Default, Clone)]
pub(super) struct Inherited {
    pub(super) args: Option<Vec<String>>,
    pub(super) cwd: Option<String>,
    pub(super) log: Option<String>,
}

/// One remote script that reads everything the deploy decides on, without changing anything.
pub(super) fn inspect(
    remote: &Remote,
    dest: &RemotePath,
    owner: Option<&str>,
    start: &StartOptions,
) -> Result<RemoteState> {
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
pub(super) fn glob_escape(path: &str) -> String {
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

/// The destination directory is there and is its own real path, the owner exists (when it is checked) and the
/// remote has `sha256sum`; otherwise a refusal that says nothing was changed.
pub(super) fn preflight(remote: &Remote, dest: &RemotePath, state: &RemoteState, check_owner: bool) -> Result<()> {
    let fail = |message: String| Err(remote.refused(message));
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

/// The log a start by hand appends to when none is given or inherited: `<dest>/../../logs/<name>.log`.
pub(super) fn default_log(dest: &RemotePath) -> String {
    let bin_dir = dest.parent();
    let base = match bin_dir.rfind('/') {
        Some(0) | None => "",
        Some(index) => &bin_dir[..index],
    };
    format!("{base}/logs/{}.log", dest.file_name())
}

/// The directory of an absolute path (`/` for a top-level one).
pub(super) fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(index) => &path[..index],
    }
}

/// SHA-256 and modification time of `file` (a name in `dest`'s directory), read without following a link; `None`
/// when it is not a regular file.
pub(super) fn remote_digest(remote: &Remote, dest: &RemotePath, file: &str) -> Result<(Option<String>, Option<u64>)> {
    let output = remote.exec(&remote_dir::digest(dest, file))?;
    if output.status == remote_dir::REFUSED {
        return Err(remote.refused(output.stderr.trim()));
    }
    if output.status != 0 {
        return Err(remote.failed(format!("sha256 of {file}"), &output));
    }
    let sha = output.stdout.lines().find_map(|line| line.strip_prefix("sha=")).map(str::to_string);
    let mtime = output.stdout.lines().find_map(|line| line.strip_prefix("mtime=")).and_then(|t| t.trim().parse().ok());
    Ok((sha, mtime))
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
}

#[cfg(test)]
#[path = "inspect_properties.rs"]
mod properties;
