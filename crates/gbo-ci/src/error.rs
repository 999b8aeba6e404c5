//! The one error type of the `gbo-ci` library.
//!
//! Every variant carries the context a person needs to act on it (host, path, command, status). The binary maps any
//! of them to exit code 2 ("bad input or failed operation"); checks that *find problems* are not errors but reports
//! with findings, which map to exit code 1.

use std::path::PathBuf;

/// Everything that can go wrong in `gbo-ci`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value given by the user is not acceptable; nothing was changed.
    #[error("invalid {what} `{value}`: {allowed}")]
    InvalidInput {
        /// Which input (flag or setting) was wrong.
        what: &'static str,
        /// The value as given.
        value: String,
        /// What is allowed instead.
        allowed: String,
    },

    /// A local file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The ssh config file could not be parsed.
    #[error("{}:{line}: {message}", path.display())]
    SshConfig {
        /// The config file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },

    /// The host name could not be resolved or the TCP connection failed.
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        /// Host name (after ssh config resolution).
        host: String,
        /// TCP port.
        port: u16,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The server's host key is not in known_hosts and first contact was not allowed.
    #[error(
        "host key of {host}:{port} ({key_type} {fingerprint}) is not in {}; verify it out of band, then rerun with \
         --accept-new-host-key to record it",
        known_hosts.display()
    )]
    HostKeyUnknown {
        /// Host name as checked.
        host: String,
        /// TCP port.
        port: u16,
        /// Key algorithm name, e.g. `ssh-ed25519`.
        key_type: String,
        /// SHA-256 fingerprint in OpenSSH's `SHA256:` base64 form.
        fingerprint: String,
        /// The known_hosts file that was consulted.
        known_hosts: PathBuf,
    },

    /// The server presented a key different from the one recorded: never accepted.
    #[error(
        "HOST KEY CHANGED for {host}:{port}: the server offers {key_type} {fingerprint}, which differs from the key \
         recorded in {}; refusing to connect (possible man-in-the-middle). If the change is expected, remove the old \
         entry with `ssh-keygen -R` and verify the new key out of band",
        known_hosts.display()
    )]
    HostKeyChanged {
        /// Host name as checked.
        host: String,
        /// TCP port.
        port: u16,
        /// Key algorithm name.
        key_type: String,
        /// SHA-256 fingerprint of the offered key.
        fingerprint: String,
        /// The known_hosts file that holds the recorded key.
        known_hosts: PathBuf,
    },

    /// No offered key was accepted by the server.
    #[error("authentication as {user}@{host} failed; tried: {tried}")]
    Auth {
        /// Remote user.
        user: String,
        /// Host name.
        host: String,
        /// The methods and key files tried, for the message.
        tried: String,
    },

    /// A libssh2 call failed.
    #[error("ssh: {context}: {source}")]
    Ssh {
        /// What was being done.
        context: String,
        /// The libssh2 error.
        #[source]
        source: ssh2::Error,
    },

    /// Reading or writing an SSH channel failed.
    #[error("ssh: {context}: {source}")]
    SshIo {
        /// What was being done.
        context: String,
        /// The I/O error from the channel.
        #[source]
        source: std::io::Error,
    },

    /// A remote command exited unsuccessfully.
    #[error("remote command `{command}` on {host} failed with status {status}: {stderr}")]
    RemoteCommand {
        /// Host name.
        host: String,
        /// A short description of the command (never a secret).
        command: String,
        /// Exit status.
        status: i32,
        /// What the command wrote on stderr (trimmed).
        stderr: String,
    },

    /// The remote side is not in a state the operation can start from; nothing was changed.
    #[error("{host}: {message}")]
    RemotePrecondition {
        /// Host name.
        host: String,
        /// What is wrong and what to do.
        message: String,
    },

    /// Another deploy or rollback of the same target held its lock for longer than this one would wait.
    #[error(
        "{host}: another deploy or rollback of this target holds {lock} ({holder}); waited {waited_secs}s. Nothing was \
         changed: rerun when it is done, or wait longer with --lock-wait"
    )]
    Locked {
        /// Host name.
        host: String,
        /// The lock file on the remote.
        lock: String,
        /// Who holds it, as recorded by the holder.
        holder: String,
        /// How long this deploy waited.
        waited_secs: u64,
    },

    /// The uploaded file's SHA-256 on the remote differs from the local artifact; the target was not touched.
    #[error(
        "checksum mismatch for {temp_path} on {host}: local {local}, remote {remote}; the upload was removed and the \
         target was not touched"
    )]
    ChecksumMismatch {
        /// Host name.
        host: String,
        /// The temporary upload (in the staging directory inside the target's directory).
        temp_path: String,
        /// Local SHA-256 (hex).
        local: String,
        /// Remote SHA-256 (hex).
        remote: String,
    },

    /// The new release never became healthy; what happened afterwards is in `outcome`.
    #[error(
        "{target}: the new release did not become healthy at {url} within {timeout_secs}s (last: {last}); {outcome}"
    )]
    DeployUnhealthy {
        /// `host:dest`.
        target: String,
        /// Health URL as seen from the remote host.
        url: String,
        /// The deadline, in seconds.
        timeout_secs: u64,
        /// The last probe result.
        last: String,
        /// What was done about it (rolled back and healthy, rolled back but unhealthy, nothing to roll back to).
        outcome: String,
    },

    /// A remote step did not finish within its time limit and was cut off.
    #[error("{host}: {what} did not finish within {secs} s and was cut off")]
    RemoteTimeout {
        /// Host name.
        host: String,
        /// The step (never a secret).
        what: String,
        /// The limit, in seconds.
        secs: u64,
    },

    /// The restart of the new release failed (or was cut off); what happened afterwards is in `outcome`.
    #[error("{target}: the restart of the new release failed ({reason}); {outcome}")]
    DeployRestartFailed {
        /// `host:dest`.
        target: String,
        /// What failed.
        reason: String,
        /// What was done about it (rolled back and healthy, rolled back but unhealthy, nothing to roll back to).
        outcome: String,
    },

    /// A git command failed or the repositories are not in a state `push` accepts.
    #[error("git: {message}")]
    Git {
        /// What went wrong and what to do.
        message: String,
    },

    /// An HTTP request to the Forgejo API failed.
    #[error("forgejo API {url}: {message}")]
    Http {
        /// The request URL (never carries the token).
        url: String,
        /// Status or transport error.
        message: String,
    },
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Build an [`Error::InvalidInput`].
    pub fn invalid(what: &'static str, value: impl Into<String>, allowed: impl Into<String>) -> Self {
        Error::InvalidInput { what, value: value.into(), allowed: allowed.into() }
    }

    /// Build an [`Error::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }

    /// Build an [`Error::SshIo`].
    pub fn ssh_io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::SshIo { context: context.into(), source }
    }

    /// Whether this is the SSH session giving up waiting (its blocking calls are bounded).
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::SshIo { source, .. } => source.kind() == std::io::ErrorKind::TimedOut,
            Error::Ssh { source, .. } => source.code() == ssh2::ErrorCode::Session(-9),
            _ => false,
        }
    }

    /// Build an [`Error::Ssh`].
    pub fn ssh(context: impl Into<String>, source: ssh2::Error) -> Self {
        Error::Ssh { context: context.into(), source }
    }
}
