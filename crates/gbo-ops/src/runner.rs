//! The one way gbo-ops runs host tools (`debootstrap`, `tar`, `zfs`, `pg_dump`, ...): argv only (never a shell),
//! captured output, a clear error naming the command, and retries for flaky network-bound tools.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// A failed host command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The program is not installed.
    #[error("`{program}` is not installed or not on PATH ({hint})")]
    Missing {
        /// Program name.
        program: String,
        /// How to install it.
        hint: String,
    },
    /// It ran and failed.
    #[error("`{command}` failed with exit code {code:?}: {stderr}")]
    Failed {
        /// The command line (arguments are never secrets).
        command: String,
        /// Exit code.
        code: Option<i32>,
        /// The tail of its stderr.
        stderr: String,
    },
    /// It could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A host command: program plus argv, optional working directory and environment.
#[derive(Debug, Clone)]
pub struct HostCommand {
    program: String,
    args: Vec<OsString>,
    dir: Option<PathBuf>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    install_hint: String,
}

impl HostCommand {
    /// `program` with no arguments yet.
    pub fn new(program: impl Into<String>) -> Self {
        let program = program.into();
        let install_hint = format!("install it with `apt-get install {program}`");
        Self { program, args: Vec::new(), dir: None, env: Vec::new(), env_remove: Vec::new(), install_hint }
    }

    /// Append one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Append arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Run in `dir`.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Set an environment variable (values here are not secrets: they show in `/proc/<pid>/environ` to root).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Leave a variable of gbo's own environment out of the command's (applied before [`HostCommand::env`]).
    pub fn env_remove(mut self, key: impl Into<String>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// What to tell the user when the program is missing.
    pub fn install_hint(mut self, hint: impl Into<String>) -> Self {
        self.install_hint = hint.into();
        self
    }

    /// The command line, for messages.
    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    fn expression(&self) -> duct::Expression {
        let mut e = duct::cmd(&self.program, &self.args).stdout_capture().stderr_capture().unchecked();
        if let Some(dir) = &self.dir {
            e = e.dir(dir);
        }
        for k in &self.env_remove {
            e = e.env_remove(k);
        }
        for (k, v) in &self.env {
            e = e.env(k, v);
        }
        e
    }

    /// Whether the program exists on PATH.
    pub fn available(&self) -> bool {
        which(&self.program).is_some()
    }

    /// Run to completion; stdout on success.
    pub fn run(&self) -> Result<String, RunError> {
        self.run_output().map(|o| o.0)
    }

    /// Run to completion; (stdout, stderr) on success.
    pub fn run_output(&self) -> Result<(String, String), RunError> {
        if !self.program.contains('/') && which(&self.program).is_none() {
            return Err(RunError::Missing { program: self.program.clone(), hint: self.install_hint.clone() });
        }
        tracing::debug!(command = %self.display(), "running host command");
        let output = self.expression().run().map_err(|source| RunError::Spawn { command: self.display(), source })?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.success() {
            Ok((stdout, stderr))
        } else {
            let tail: String =
                stderr.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            Err(RunError::Failed { command: self.display(), code: output.status.code(), stderr: tail })
        }
    }

    /// Run in a blocking thread (for async callers).
    pub async fn run_async(&self) -> Result<String, RunError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.run()).await.unwrap_or_else(|e| {
            Err(RunError::Spawn { command: "blocking task".into(), source: std::io::Error::other(e.to_string()) })
        })
    }

    /// Run up to `attempts` times, waiting `pause` between tries (network-bound tools such as debootstrap).
    pub async fn run_with_retries(&self, attempts: u32, pause: Duration) -> Result<String, RunError> {
        let mut last = None;
        for attempt in 1..=attempts.max(1) {
            match self.run_async().await {
                Ok(out) => return Ok(out),
                Err(e @ RunError::Missing { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "host command failed; retrying");
                    last = Some(e);
                    tokio::time::sleep(pause).await;
                }
            }
        }
        Err(last
            .unwrap_or(RunError::Spawn { command: self.display(), source: std::io::Error::other("no attempt made") }))
    }
}

/// A host command running in the background whose stdout the caller streams; its stderr is drained as it comes
/// (a command never blocks on a full stderr pipe) and its tail reported when it fails.
#[derive(Debug)]
pub struct Streaming {
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<String>,
    command: String,
}

/// How much of a streaming command's stderr is kept for its error message.
const STDERR_TAIL: usize = 16 * 1024;

impl HostCommand {
    /// Start the command with its stdout piped to the caller (see [`Streaming`]).
    pub fn spawn_stdout(&self) -> Result<(Streaming, tokio::process::ChildStdout), RunError> {
        if !self.program.contains('/') && which(&self.program).is_none() {
            return Err(RunError::Missing { program: self.program.clone(), hint: self.install_hint.clone() });
        }
        tracing::debug!(command = %self.display(), "starting host command");
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.args).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped());
        command.stderr(std::process::Stdio::piped()).kill_on_drop(true);
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        for k in &self.env_remove {
            command.env_remove(k);
        }
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let spawn_error = |source| RunError::Spawn { command: self.display(), source };
        let mut child = command.spawn().map_err(spawn_error)?;
        let missing = || spawn_error(std::io::Error::other("no pipe"));
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let mut stderr = child.stderr.take().ok_or_else(missing)?;
        let drain = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut tail: Vec<u8> = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            String::from_utf8_lossy(&tail).into_owned()
        });
        Ok((Streaming { child, stderr: drain, command: self.display() }, stdout))
    }
}

impl Streaming {
    /// Wait for the command to end; an error naming it with the tail of its stderr when it failed.
    pub async fn finish(mut self) -> Result<(), RunError> {
        let status =
            self.child.wait().await.map_err(|source| RunError::Spawn { command: self.command.clone(), source })?;
        let stderr = self.stderr.await.unwrap_or_default();
        if status.success() {
            return Ok(());
        }
        let tail: String =
            stderr.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        Err(RunError::Failed { command: self.command, code: status.code(), stderr: tail })
    }
}

/// Find a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| {
        use std::os::unix::fs::PermissionsExt;
        candidate.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_real_programs_and_reports_failures() {
        assert_eq!(HostCommand::new("echo").arg("hi").run().expect("run"), "hi\n");
        let err = HostCommand::new("sh").args(["-c", "echo nope >&2; exit 3"]).run().unwrap_err();
        match err {
            RunError::Failed { code, stderr, .. } => assert_eq!((code, stderr.as_str()), (Some(3), "nope")),
            other => panic!("{other:?}"),
        }
        let missing = HostCommand::new("gbo-no-such-tool").run().unwrap_err();
        assert!(missing.to_string().contains("apt-get install gbo-no-such-tool"), "{missing}");
    }
}
