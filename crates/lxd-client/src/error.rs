//! The one error type of `lxd-client`.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong talking to LXD.
///
/// Server failures are data ([`Error::Api`], [`Error::NotFound`], [`Error::OperationFailed`], ...) and are kept
/// apart from transport and decoding failures. Use the predicates ([`Error::is_not_found`], ...) rather than
/// matching on messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No LXD unix socket was found at any of the usual places.
    #[error(
        "no LXD socket found (tried {}); install LXD (`apt-get install lxd` or `snap install lxd`) and start it, \
         or point LXD_SOCKET at the socket",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    SocketNotFound {
        /// Every path that was tried, in order.
        tried: Vec<PathBuf>,
    },
    /// A socket named explicitly by the environment (`LXD_SOCKET`, `LXD_DIR`, `INCUS_SOCKET`, `INCUS_DIR`) cannot be
    /// used. No other socket is tried: an operator who points at one daemon never has another one acted on.
    #[error("{}", explicit_socket_message(variable, value, path, reason))]
    ExplicitSocket {
        /// The environment variable that named the socket.
        variable: &'static str,
        /// Its value.
        value: PathBuf,
        /// The socket path it gives.
        path: PathBuf,
        /// What is wrong with it (`does not exist`, `is not a unix socket`, ...).
        reason: String,
    },
    /// A remote of the `lxc` configuration, named explicitly, cannot be used; no other daemon is tried.
    #[error("remote `{remote}` cannot be used: {reason}")]
    Remote {
        /// The remote's name.
        remote: String,
        /// Why.
        reason: String,
    },
    /// The socket exists but this user may not open it.
    #[error(
        "permission denied on the LXD socket {}: run as root, or join the `lxd` group \
         (`sudo usermod -aG lxd $USER && newgrp lxd`)",
        path.display()
    )]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
    },
    /// Connecting to the daemon failed; the cause is the [`std::error::Error::source`].
    #[error("cannot connect to LXD at {endpoint}")]
    Connect {
        /// The unix socket path or HTTPS address.
        endpoint: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// TLS setup or the TLS handshake failed (bad certificate, fingerprint mismatch, ...).
    #[error("TLS error with {endpoint}: {message}")]
    Tls {
        /// The HTTPS address.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// The HTTPS server presented a certificate that is neither pinned nor from a CA the caller chose. Nothing was
    /// sent. Check the fingerprint out of band (on the server, `lxc info` shows `certificate_fingerprint`), then pin
    /// it: [`crate::TlsIdentity::server_fingerprint`], or `servercerts/<remote>.crt` for an `lxc` remote
    /// ([`crate::Remote::accept_server_certificate`] after [`crate::first_contact`]).
    #[error(
        "{endpoint} presented a certificate that is not pinned (SHA-256 fingerprint {fingerprint}); nothing was \
         sent. Check this fingerprint on the server (`lxc info` there shows certificate_fingerprint), then pin it \
         (servercerts/<remote>.crt, or the fingerprint)"
    )]
    UntrustedServer {
        /// The HTTPS address (and remote name, when known).
        endpoint: String,
        /// The SHA-256 fingerprint of the certificate it presented (lower-case hex).
        fingerprint: String,
    },
    /// Something read into memory went past its size limit ([`crate::ReadLimits`]); nothing more was read.
    #[error(
        "{what} is larger than {} (the {limit_name} read limit); nothing more was read. Raise it with \
         Client::with_read_limits, or use the streaming call",
        human_size(*limit)
    )]
    TooLarge {
        /// What was being read (`stdout of `pg_dump` in default-tables`, `the answer to GET /1.0/instances`, ...).
        what: String,
        /// Which limit: `body` or `collected` (the fields of [`crate::ReadLimits`]).
        limit_name: &'static str,
        /// The limit in bytes.
        limit: u64,
    },
    /// The HTTP exchange failed below the API level.
    #[error("{method} {path}: transport error: {message}")]
    Transport {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The request did not complete within its timeout.
    #[error("{method} {path}: no answer within {after:?}")]
    Timeout {
        /// HTTP method.
        method: String,
        /// Request path.
        path: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The object does not exist (HTTP 404).
    #[error("{path}: not found: {message}")]
    NotFound {
        /// Request path.
        path: String,
        /// The daemon's message.
        message: String,
    },
    /// The object already exists or is in a conflicting state (HTTP 409).
    #[error("{path}: conflict: {message}")]
    Conflict {
        /// Request path.
        path: String,
        /// The daemon's message.
        message: String,
    },
    /// The `If-Match` ETag was stale (HTTP 412): someone changed the object meanwhile.
    #[error("{path}: changed concurrently (ETag mismatch): {message}")]
    PreconditionFailed {
        /// Request path.
        path: String,
        /// The daemon's message.
        message: String,
    },
    /// Any other error answer of the API.
    #[error("{path}: LXD error {status}: {message}")]
    Api {
        /// HTTP status or `error_code`.
        status: u16,
        /// Request path.
        path: String,
        /// The daemon's message.
        message: String,
    },
    /// A background operation finished unsuccessfully.
    #[error("operation {id} failed ({status_code}): {message}")]
    OperationFailed {
        /// Operation id.
        id: String,
        /// Final status code (400 failure, 401 cancelled).
        status_code: i64,
        /// The daemon's `err`.
        message: String,
    },
    /// Waiting for an operation timed out; the operation may still be running.
    #[error("operation {id} still running after {after:?}")]
    OperationTimeout {
        /// Operation id: use it to wait again or cancel.
        id: String,
        /// How long we waited.
        after: Duration,
    },
    /// The daemon lacks an API extension this call needs.
    #[error("the LXD server lacks the API extension `{name}` ({hint})")]
    MissingExtension {
        /// Extension name.
        name: String,
        /// What to do about it.
        hint: String,
    },
    /// A response could not be decoded.
    #[error("{path}: cannot decode the response: {message}")]
    Decode {
        /// Request path.
        path: String,
        /// The decoder's message.
        message: String,
    },
    /// A name (instance, snapshot, device, ...) breaks LXD's rules; rejected before any request.
    #[error("invalid {kind} name {value:?}: {rule}")]
    InvalidName {
        /// What kind of name.
        kind: &'static str,
        /// The rejected value.
        value: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// An exec request without a command; rejected before any request.
    #[error("exec in {instance}: the command is empty (an exec needs at least the program to run)")]
    EmptyCommand {
        /// The instance the command was meant for.
        instance: String,
    },
    /// A path that must be a regular file (to be read whole or copied out) is something else.
    #[error("{path} in {instance} is a {found}, not a regular file")]
    NotAFile {
        /// The instance.
        instance: String,
        /// The path inside it.
        path: String,
        /// What it is instead (`directory`, `symlink`).
        found: &'static str,
    },
    /// A request whose options do not go together (recorded exec with stdin, output taken twice, ...); rejected
    /// before anything is sent.
    #[error("{what}: {reason}")]
    InvalidRequest {
        /// The call and its object (`exec of `psql` in default-tables`).
        what: String,
        /// What does not go together, and what to do instead.
        reason: String,
    },
    /// A device definition is invalid; rejected before any request.
    #[error("invalid device {device:?}: {message}")]
    InvalidDevice {
        /// The device name.
        device: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A websocket (exec, events) failed.
    #[error("websocket {path}: {message}")]
    Websocket {
        /// The websocket path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Local I/O (reading a file to push, writing a pulled file, ...); the cause is the
    /// [`std::error::Error::source`].
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A remote configuration (the `lxc` CLI's config.yml, certificates) could not be used.
    #[error("remote configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// The object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// The object already exists or conflicts with the current state.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// A stale ETag.
    pub fn is_precondition_failed(&self) -> bool {
        matches!(self, Error::PreconditionFailed { .. })
    }

    /// A request or operation timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::OperationTimeout { .. })
    }

    /// The daemon refused an update because a concurrent update of the same instance held it and has finished
    /// meanwhile (LXD 5.0: "A matching non-reusable operation has now succeeded"): what was read before is stale,
    /// like a failed ETag precondition; read again and retry.
    pub fn is_superseded(&self) -> bool {
        match self {
            Error::Api { message, .. } | Error::Conflict { message, .. } | Error::OperationFailed { message, .. } => {
                message.contains("non-reusable operation has now succeeded")
            }
            _ => false,
        }
    }

    /// The daemon refused to act because another operation holds the instance ("Instance is busy running a
    /// "stop" operation"). Deletes and state changes wait for such operations and try again by themselves.
    pub fn is_instance_busy(&self) -> bool {
        match self {
            Error::Api { message, .. } | Error::Conflict { message, .. } | Error::OperationFailed { message, .. } => {
                message.contains("is busy running a")
            }
            _ => false,
        }
    }

    /// The daemon could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Error::SocketNotFound { .. }
                | Error::ExplicitSocket { .. }
                | Error::Remote { .. }
                | Error::PermissionDenied { .. }
                | Error::Connect { .. }
        )
    }

    /// A read went past its size limit ([`Error::TooLarge`]).
    pub fn is_too_large(&self) -> bool {
        matches!(self, Error::TooLarge { .. })
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// Map an API error answer to the right variant (a 404 is [`Error::NotFound`], a 409 or an "already exists"
    /// answer is [`Error::Conflict`], a 412 is [`Error::PreconditionFailed`]).
    pub(crate) fn from_api(status: u16, path: &str, message: String) -> Self {
        let path = path.to_string();
        match status {
            404 => Error::NotFound { path, message },
            409 => Error::Conflict { path, message },
            // LXD 5.0 answers some duplicates (profiles, networks) with 500 "... already exists": same meaning.
            400 | 500 if message.contains("already exists") => Error::Conflict { path, message },
            412 => Error::PreconditionFailed { path, message },
            _ => Error::Api { status, path, message },
        }
    }
}

fn explicit_socket_message(variable: &str, value: &std::path::Path, path: &std::path::Path, reason: &str) -> String {
    let named = if value == path {
        format!("{variable} names {}, which {reason}", value.display())
    } else {
        format!("{variable} names {}, whose socket {} {reason}", value.display(), path.display())
    };
    format!(
        "{named}; no other daemon is tried (unset {variable}, or set it to the empty string, to use the usual places)"
    )
}

/// `64 MiB`, `512 KiB` or `1000 bytes`.
pub(crate) fn human_size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
