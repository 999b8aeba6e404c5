//! Running things inside a container for the runbook commands (proxy, dns, fail2ban, firewall, brother, doctor):
//! argv only, bounded in time, never a secret in the command line.

use std::time::Duration;

use lxd_client::{Client, ExecOutput, ExecRequest, FileOptions, InstanceName};

/// How long one command inside may take.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(120);

/// Run `argv` as root.
pub async fn run(lxd: &Client, name: &InstanceName, argv: &[&str]) -> Result<ExecOutput, lxd_client::Error> {
    exec(lxd, name, &ExecRequest::new(argv.iter().copied()).timeout(EXEC_TIMEOUT)).await
}

/// One exec, retried when its websockets could not be set up: the daemon starts the command only once every
/// websocket is connected (`wait-for-websocket`), so a failed handshake means it never ran.
pub async fn exec(lxd: &Client, name: &InstanceName, req: &ExecRequest) -> Result<ExecOutput, lxd_client::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match lxd.exec_output(name, req).await {
            Err(lxd_client::Error::Websocket { message, .. }) if attempt < 3 && message.contains("handshake") => {
                tracing::warn!(instance = %name, %message, "exec websocket handshake failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            // LXD refuses to start a program it cannot find: that is exit code 127 to a shell, data not failure.
            Err(lxd_client::Error::OperationFailed { message, .. }) if message.contains("Command not found") => {
                return Ok(ExecOutput {
                    exit_code: 127,
                    stdout: Vec::new(),
                    stderr: format!("{}: {message}", req.command.join(" ")).into_bytes(),
                });
            }
            other => return other,
        }
    }
}

/// Run `argv` as `user` (uid, gid, home).
pub async fn run_as(
    lxd: &Client,
    name: &InstanceName,
    user: &User,
    argv: &[&str],
) -> Result<ExecOutput, lxd_client::Error> {
    let req = ExecRequest::new(argv.iter().copied())
        .user(user.uid, user.gid)
        .env("HOME", user.home.clone())
        .env("USER", user.name.clone())
        .cwd(user.home.clone())
        .timeout(EXEC_TIMEOUT);
    exec(lxd, name, &req).await
}

/// A user inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// Look a user up inside (`getent passwd`); `None` when there is no such user.
pub async fn user(lxd: &Client, name: &InstanceName, user: &str) -> Result<Option<User>, lxd_client::Error> {
    let out = run(lxd, name, &["getent", "passwd", user]).await?;
    if !out.success() {
        return Ok(None);
    }
    let line = out.stdout_text();
    let fields: Vec<&str> = line.trim().split(':').collect();
    if fields.len() < 6 {
        return Ok(None);
    }
    match (fields[2].parse(), fields[3].parse()) {
        (Ok(uid), Ok(gid)) => Ok(Some(User { name: user.to_string(), uid, gid, home: fields[5].to_string() })),
        _ => Ok(None),
    }
}

/// A file's content, `None` when it does not exist.
pub async fn read_opt(lxd: &Client, name: &InstanceName, path: &str) -> Result<Option<Vec<u8>>, lxd_client::Error> {
    match lxd.read_file(name, path).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Write `content` at `path` (parents created) unless it already holds exactly that. Returns whether it wrote.
pub async fn write_if_changed(
    lxd: &Client,
    name: &InstanceName,
    path: &str,
    content: &[u8],
    options: FileOptions,
) -> Result<bool, lxd_client::Error> {
    if read_opt(lxd, name, path).await?.as_deref() == Some(content) {
        return Ok(false);
    }
    if let Some((parent, _)) = path.rsplit_once('/') {
        if !parent.is_empty() {
            lxd.mkdir_all(name, parent, FileOptions::root(0o755)).await?;
        }
    }
    lxd.push_bytes(name, path, content.to_vec(), options).await?;
    Ok(true)
}

/// Whether a program is on the container's PATH (`command -v` through `sh`, with the name as an argument).
pub async fn has_program(lxd: &Client, name: &InstanceName, program: &str) -> Result<bool, lxd_client::Error> {
    Ok(run(lxd, name, &["sh", "-c", "command -v \"$1\" >/dev/null", "sh", program]).await?.success())
}

/// The first active systemd unit among `units`, `None` when none is (or there is no systemd).
pub async fn active_unit(
    lxd: &Client,
    name: &InstanceName,
    units: &[&str],
) -> Result<Option<String>, lxd_client::Error> {
    for unit in units {
        if run(lxd, name, &["systemctl", "is-active", "--quiet", unit]).await?.success() {
            return Ok(Some((*unit).to_string()));
        }
    }
    Ok(None)
}

/// `MainPID` of a unit (0 when it has none).
pub async fn main_pid(lxd: &Client, name: &InstanceName, unit: &str) -> Result<u32, lxd_client::Error> {
    let out = run(lxd, name, &["systemctl", "show", "--property=MainPID", "--value", unit]).await?;
    Ok(out.stdout_text().trim().parse().unwrap_or(0))
}

/// A short summary of a failed command's output, for messages.
pub fn failure_text(out: &ExecOutput) -> String {
    let mut text = out.stderr_text();
    if text.trim().is_empty() {
        text = out.stdout_text();
    }
    let lines: Vec<&str> = text.trim().lines().collect();
    let tail = lines[lines.len().saturating_sub(12)..].join("\n");
    format!("exit {}: {}", out.exit_code, tail)
}
