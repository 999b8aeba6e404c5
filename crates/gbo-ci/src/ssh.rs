//! SSH transport over `ssh2` (libssh2): connection with host-key verification, key authentication, remote commands,
//! streamed uploads, and HTTP probes tunnelled through `direct-tcpip` channels.
//!
//! Nothing here accepts an unknown host key silently: a key that is not recorded is refused unless the caller asked
//! to record it on first contact, and a key that differs from the recorded one is always refused.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, MethodType, Session};

use crate::error::{Error, Result};
use crate::ssh_config::{expand_path, SshConfig};

/// A secret held in memory (a private key or a passphrase): never shown by `Debug`.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret(<redacted>)")
    }
}

/// How to reach and authenticate to a host.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Host name or `~/.ssh/config` alias.
    pub host: String,
    /// Port; overrides the config's `Port` (default 22).
    pub port: Option<u16>,
    /// Remote user; overrides the config's `User` (default: the local user name).
    pub user: Option<String>,
    /// Private key files to try; when empty, the config's `IdentityFile`s, then the agent, then the default keys.
    pub identity_files: Vec<PathBuf>,
    /// A PEM private key held in memory (from the runner's environment), tried first.
    pub private_key: Option<Secret>,
    /// Passphrase for encrypted key files or the in-memory key.
    pub passphrase: Option<Secret>,
    /// The ssh config file; default `~/.ssh/config`.
    pub ssh_config: Option<PathBuf>,
    /// The known_hosts file; default the config's `UserKnownHostsFile`, else `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// Record the host key on first contact (an unknown host); a changed key is refused regardless.
    pub accept_new_host_key: bool,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// The user's home directory, for `~` expansion and defaults.
    pub home: PathBuf,
}

impl ConnectOptions {
    /// Options for `host` with every other setting at its default (home from `$HOME`).
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: None,
            user: None,
            identity_files: Vec::new(),
            private_key: None,
            passphrase: None,
            ssh_config: None,
            known_hosts: None,
            accept_new_host_key: false,
            connect_timeout: Duration::from_secs(10),
            home: std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root")),
        }
    }
}

/// What a host-key check concluded, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// The key matched a recorded one.
    Known,
    /// First contact: the key was recorded in this file (only with `accept_new_host_key`).
    Recorded(PathBuf),
}

/// The output of a finished remote command.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// Exit status.
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// An authenticated SSH session to one host.
pub struct Remote {
    session: Session,
    label: String,
    hostname: String,
    port: u16,
    user: String,
    host_key_status: HostKeyStatus,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Remote")
            .field("label", &self.label)
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .field("user", &self.user)
            .finish()
    }
}

const DEFAULT_TIMEOUT_MS: u32 = 60_000;

impl Remote {
    /// Resolve the alias, connect, verify the host key and authenticate.
    ///
    /// Explicit targets never fall back: an `--ssh-config` that does not exist, a single-label name that is no
    /// alias (or an alias without `HostName`), a missing `--identity` or `IdentityFile`, an unreachable address are
    /// errors naming them; gbo-ci never looks the name up some other way or tries another key instead.
    pub fn connect(options: &ConnectOptions) -> Result<Self> {
        let (config_path, explicit_config) = match &options.ssh_config {
            Some(path) => (path.clone(), true),
            None => (options.home.join(".ssh").join("config"), false),
        };
        if explicit_config && !config_path.exists() {
            return Err(Error::invalid(
                "--ssh-config",
                config_path.display().to_string(),
                "an existing ssh config file (a config that was named but cannot be read is never replaced by none)",
            ));
        }
        let config = SshConfig::load(&config_path)?;
        let settings = config.resolve(&options.host, &config_path)?;
        let hostname = match &settings.hostname {
            Some(hostname) => hostname.clone(),
            None => {
                validate_hostname(&options.host)?;
                check_unaliased_host(&options.host, settings.alias_line, &config_path)?;
                options.host.clone()
            }
        };
        let port = options.port.or(settings.port).unwrap_or(22);
        let user = options
            .user
            .clone()
            .or(settings.user.clone())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "root".into());
        let expand = |value: &str| expand_path(value, &options.home, &hostname, port, &user);

        let known_hosts_files: Vec<PathBuf> = match &options.known_hosts {
            Some(path) => vec![path.clone()],
            None if !settings.user_known_hosts_files.is_empty() => {
                settings.user_known_hosts_files.iter().map(|value| expand(value)).collect()
            }
            None => vec![options.home.join(".ssh").join("known_hosts")],
        };

        validate_hostname(&hostname)?;
        // Every key named is checked before the connection: a missing one is never replaced by another.
        for file in &options.identity_files {
            if !file.exists() {
                return Err(Error::invalid(
                    "--identity",
                    file.display().to_string(),
                    "an existing private key file (gbo-ci never falls back to another key)",
                ));
            }
        }
        let config_identities: Vec<PathBuf> = settings.identity_files.iter().map(|value| expand(value)).collect();
        if options.private_key.is_none() && options.identity_files.is_empty() {
            if let Some(missing) = config_identities.iter().find(|file| !file.exists()) {
                return Err(Error::invalid(
                    "IdentityFile",
                    missing.display().to_string(),
                    format!(
                        "an existing private key file: {} names it for `{}`, and gbo-ci never falls back to another \
                         key (the agent or a default key): create it, fix the config, or pass --identity",
                        config_path.display(),
                        options.host
                    ),
                ));
            }
        }
        let tcp = connect_tcp(&hostname, port, options.connect_timeout)?;
        let mut session = Session::new().map_err(|error| Error::ssh("creating a session", error))?;
        session.set_tcp_stream(tcp);
        session.set_timeout(DEFAULT_TIMEOUT_MS);
        // Prefer modern host key types; an unsupported name in the list is simply dropped by libssh2.
        let _ = session.method_pref(
            MethodType::HostKey,
            "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,rsa-sha2-512,rsa-sha2-256,ssh-rsa",
        );
        session.handshake().map_err(|error| Error::ssh(format!("handshake with {hostname}:{port}"), error))?;

        let host_key_status =
            verify_host_key(&session, &hostname, port, &known_hosts_files, options.accept_new_host_key)?;

        authenticate(&session, &user, &hostname, options, &config_identities)?;

        Ok(Self { session, label: options.host.clone(), hostname, port, user, host_key_status })
    }

    /// The name the user gave (alias or host), for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The host actually connected to.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The port actually connected to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The remote user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether the host key was already known or recorded on this connection.
    pub fn host_key_status(&self) -> &HostKeyStatus {
        &self.host_key_status
    }

    /// Run a shell command and collect its output, whatever its exit status.
    pub fn exec(&self, command: &str) -> Result<ExecOutput> {
        let mut channel =
            self.session.channel_session().map_err(|error| Error::ssh("opening a session channel", error))?;
        channel.exec(command).map_err(|error| Error::ssh("starting a remote command", error))?;
        finish(channel)
    }

    /// [`Remote::exec`] with the session's blocking calls bounded by `timeout` instead of the usual minute: for
    /// commands that may rightly run longer (a restart that waits for a slow stop), or must not run as long.
    pub fn exec_within(&self, command: &str, timeout: Duration) -> Result<ExecOutput> {
        with_timeout(&self.session, timeout, || self.exec(command))
    }

    /// Run a shell command that must succeed; `what` names it in the error. Returns stdout.
    pub fn run(&self, what: &str, command: &str) -> Result<String> {
        let output = self.exec(command)?;
        if output.status != 0 {
            return Err(self.failed(what, &output));
        }
        Ok(output.stdout)
    }

    /// The error of a remote command `what` that ended with `output`'s (non-zero) status.
    pub fn failed(&self, what: impl Into<String>, output: &ExecOutput) -> Error {
        Error::RemoteCommand {
            host: self.label.clone(),
            command: what.into(),
            status: output.status,
            stderr: output.stderr.trim().to_string(),
        }
    }

    /// The error that this host is not in a state the operation can start from (`message` says what to do).
    pub fn refused(&self, message: impl Into<String>) -> Error {
        Error::RemotePrecondition { host: self.label.clone(), message: message.into() }
    }

    /// Run `command` with `input` streamed to its stdin in chunks; `on_progress` gets the bytes sent so far.
    pub fn exec_with_input(
        &self,
        command: &str,
        input: &mut dyn Read,
        on_progress: &mut dyn FnMut(u64),
    ) -> Result<ExecOutput> {
        let mut channel =
            self.session.channel_session().map_err(|error| Error::ssh("opening a session channel", error))?;
        channel.exec(command).map_err(|error| Error::ssh("starting a remote command", error))?;
        let mut buffer = vec![0_u8; 256 * 1024];
        let mut sent: u64 = 0;
        loop {
            let count = input.read(&mut buffer).map_err(|error| Error::io("reading", "upload source", error))?;
            if count == 0 {
                break;
            }
            channel.write_all(&buffer[..count]).map_err(|error| Error::ssh_io("streaming the upload", error))?;
            sent += count as u64;
            on_progress(sent);
        }
        channel.send_eof().map_err(|error| Error::ssh("finishing the upload", error))?;
        finish(channel)
    }

    /// Start `command` and keep it running after this call returns: the remote process lives until the returned
    /// [`HeldCommand`] is dropped (its stdin then ends) or the connection drops. This is how a remote `flock` is held
    /// for the length of a deploy and released even when this process dies.
    pub fn start_held(&self, command: &str) -> Result<HeldCommand> {
        let mut channel =
            self.session.channel_session().map_err(|error| Error::ssh("opening a session channel", error))?;
        channel.exec(command).map_err(|error| Error::ssh("starting a remote command", error))?;
        Ok(HeldCommand { channel, session: self.session.clone(), pending: Vec::new() })
    }

    /// `GET path` on `host:port` as seen from the remote host, through a `direct-tcpip` channel (the remote needs no
    /// curl). Returns the HTTP status code.
    pub fn http_get(&self, host: &str, port: u16, path: &str, timeout: Duration) -> Result<u16> {
        with_timeout(&self.session, timeout, || self.http_get_inner(host, port, path))
    }

    fn http_get_inner(&self, host: &str, port: u16, path: &str) -> Result<u16> {
        let mut channel = self
            .session
            .channel_direct_tcpip(host, port, None)
            .map_err(|error| Error::ssh(format!("connecting to {host}:{port} through the tunnel"), error))?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: gbo-ci\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        channel.write_all(request.as_bytes()).map_err(|error| Error::ssh_io("sending the health request", error))?;
        let mut head = Vec::new();
        let mut buffer = [0_u8; 1024];
        while !head.windows(2).any(|window| window == b"\r\n") && head.len() < 8192 {
            let count =
                channel.read(&mut buffer).map_err(|error| Error::ssh_io("reading the health response", error))?;
            if count == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..count]);
        }
        let _ = channel.close();
        parse_status_line(&head).ok_or_else(|| Error::RemotePrecondition {
            host: self.label.clone(),
            message: format!("{host}:{port}{path} did not answer with an HTTP status line"),
        })
    }
}

/// Run `f` with the session's blocking calls bounded by `timeout`, then put the default bound back.
/// Read a started command's output to the end and wait for its exit status.
fn finish(mut channel: ssh2::Channel) -> Result<ExecOutput> {
    let mut stdout = String::new();
    channel.read_to_string(&mut stdout).map_err(|error| Error::ssh_io("reading remote output", error))?;
    let mut stderr = String::new();
    channel.stderr().read_to_string(&mut stderr).map_err(|error| Error::ssh_io("reading remote errors", error))?;
    channel.wait_close().map_err(|error| Error::ssh("closing a remote command", error))?;
    let status = channel.exit_status().map_err(|error| Error::ssh("reading an exit status", error))?;
    Ok(ExecOutput { status, stdout, stderr })
}

fn with_timeout<T>(session: &Session, timeout: Duration, f: impl FnOnce() -> T) -> T {
    session.set_timeout(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX).max(1));
    let result = f();
    session.set_timeout(DEFAULT_TIMEOUT_MS);
    result
}

/// A remote command started by [`Remote::start_held`]; ended (stdin closed, channel closed) on drop.
pub struct HeldCommand {
    channel: ssh2::Channel,
    session: Session,
    pending: Vec<u8>,
}

impl std::fmt::Debug for HeldCommand {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("HeldCommand").finish_non_exhaustive()
    }
}

impl HeldCommand {
    /// The next line the command writes on stdout (without its newline), waiting up to `timeout`; `None` once the
    /// command has ended and its output is read.
    pub fn read_line(&mut self, timeout: Duration) -> Result<Option<String>> {
        let session = self.session.clone();
        with_timeout(&session, timeout, || self.read_line_inner())
    }

    fn read_line_inner(&mut self) -> Result<Option<String>> {
        let mut buffer = [0_u8; 512];
        loop {
            if let Some(end) = self.pending.iter().position(|byte| *byte == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..end]).into_owned()));
            }
            let count = self
                .channel
                .read(&mut buffer)
                .map_err(|error| Error::ssh_io("reading a held remote command", error))?;
            if count == 0 {
                if self.pending.is_empty() {
                    return Ok(None);
                }
                let line = std::mem::take(&mut self.pending);
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            self.pending.extend_from_slice(&buffer[..count]);
        }
    }

    /// What the command wrote on stderr, once it has ended.
    pub fn stderr(&mut self) -> String {
        let mut text = String::new();
        let _ = self.channel.stderr().read_to_string(&mut text);
        text.trim().to_string()
    }
}

impl Drop for HeldCommand {
    fn drop(&mut self) {
        let _ = self.channel.send_eof();
        let _ = self.channel.close();
        let _ = self.channel.wait_close();
    }
}

/// Parse `HTTP/1.x NNN ...` from the start of a response.
pub fn parse_status_line(head: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().next()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// A host name used as given (no `HostName` for it) must say where it goes by itself: an address, `localhost`, or a
/// name with a dot. A single-label name is an alias that the config does not define (or defines without `HostName`),
/// and looking it up would let DNS search domains answer with another host.
fn check_unaliased_host(host: &str, alias_line: Option<usize>, config: &Path) -> Result<()> {
    let qualified = host.parse::<std::net::IpAddr>().is_ok()
        || host.eq_ignore_ascii_case("localhost")
        || host.trim_end_matches('.').contains('.');
    if qualified {
        return Ok(());
    }
    Err(match alias_line {
        Some(line) => Error::SshConfig {
            path: config.to_path_buf(),
            line,
            message: format!(
                "the alias `{host}` has no HostName; gbo-ci does not look an alias up as a host name (DNS search \
                 domains could answer with another host): add `HostName` to it"
            ),
        },
        None => Error::invalid(
            "host",
            host,
            format!(
                "not a Host alias in {} and not a fully qualified name or an address; gbo-ci never looks a \
                 single-label name up (DNS search domains could answer with another host): add a Host block with \
                 HostName, or give the full name or the address",
                config.display()
            ),
        ),
    })
}

/// Refuse names that no resolver could answer before any lookup is sent.
fn validate_hostname(hostname: &str) -> Result<()> {
    if hostname.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let name = hostname.strip_suffix('.').unwrap_or(hostname);
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(Error::invalid(
            "host",
            hostname,
            "a host name, an IP address, or a Host alias from the ssh config",
        ));
    }
    Ok(())
}

fn connect_tcp(hostname: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let addresses = (hostname, port).to_socket_addrs().map_err(|source| Error::Connect {
        host: hostname.to_string(),
        port,
        source: std::io::Error::new(source.kind(), format!("cannot resolve host name: {source}")),
    })?;
    let mut last_error = std::io::Error::new(std::io::ErrorKind::NotFound, "the name resolved to no address");
    for address in addresses {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => return Ok(stream),
            Err(error) => last_error = error,
        }
    }
    Err(Error::Connect { host: hostname.to_string(), port, source: last_error })
}

/// The OpenSSH name of a host key type.
pub fn key_type_name(key_type: HostKeyType) -> &'static str {
    match key_type {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

/// The host pattern OpenSSH writes in known_hosts: `host` on port 22, `[host]:port` otherwise.
pub fn known_hosts_name(hostname: &str, port: u16) -> String {
    if port == 22 {
        hostname.to_string()
    } else {
        format!("[{hostname}]:{port}")
    }
}

fn verify_host_key(
    session: &Session,
    hostname: &str,
    port: u16,
    files: &[PathBuf],
    accept_new: bool,
) -> Result<HostKeyStatus> {
    let (key, key_type) = session.host_key().ok_or_else(|| Error::RemotePrecondition {
        host: hostname.to_string(),
        message: "the server presented no host key".into(),
    })?;
    let key_type_text = key_type_name(key_type).to_string();
    let fingerprint = session
        .host_key_hash(HashType::Sha256)
        .map(|hash| format!("SHA256:{}", base64(hash, false)))
        .unwrap_or_else(|| "SHA256:?".into());
    let mut known = session.known_hosts().map_err(|error| Error::ssh("initialising known hosts", error))?;
    for file in files {
        if file.exists() {
            known
                .read_file(file, KnownHostFileKind::OpenSSH)
                .map_err(|error| Error::ssh(format!("reading {}", file.display()), error))?;
        }
    }
    let primary = files.first().cloned().unwrap_or_else(|| PathBuf::from("known_hosts"));
    match known.check_port(hostname, port, key) {
        CheckResult::Match => Ok(HostKeyStatus::Known),
        CheckResult::Mismatch => Err(Error::HostKeyChanged {
            host: hostname.to_string(),
            port,
            key_type: key_type_text,
            fingerprint,
            known_hosts: primary,
        }),
        CheckResult::NotFound if accept_new => {
            let line = format!("{} {} {}\n", known_hosts_name(hostname, port), key_type_text, base64(key, true));
            append_known_host(&primary, &line)?;
            Ok(HostKeyStatus::Recorded(primary))
        }
        CheckResult::NotFound => Err(Error::HostKeyUnknown {
            host: hostname.to_string(),
            port,
            key_type: key_type_text,
            fingerprint,
            known_hosts: primary,
        }),
        CheckResult::Failure => Err(Error::RemotePrecondition {
            host: hostname.to_string(),
            message: "the host key could not be checked against known_hosts".into(),
        }),
    }
}

fn append_known_host(path: &Path, line: &str) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|error| Error::io("creating", parent, error))?;
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| Error::io("opening", path, error))?;
    file.write_all(line.as_bytes()).map_err(|error| Error::io("writing", path, error))?;
    file.sync_all().map_err(|error| Error::io("syncing", path, error))
}

/// Authenticate with the most explicit keys given, and only those: the key from the environment and the
/// `--identity` files when any is given; else the config's `IdentityFile`s; else the agent, then the default keys.
/// A refused explicit key is never followed by another source.
fn authenticate(
    session: &Session,
    user: &str,
    hostname: &str,
    options: &ConnectOptions,
    config_identities: &[PathBuf],
) -> Result<()> {
    let passphrase = options.passphrase.as_ref().map(Secret::expose);
    let mut tried = Vec::new();
    if options.private_key.is_some() || !options.identity_files.is_empty() {
        if let Some(key) = &options.private_key {
            tried.push("key from the environment".to_string());
            if session.userauth_pubkey_memory(user, None, key.expose(), passphrase).is_ok() && session.authenticated() {
                return Ok(());
            }
        }
        for file in &options.identity_files {
            if try_key_file(session, user, file, passphrase, &mut tried) {
                return Ok(());
            }
        }
    } else if !config_identities.is_empty() {
        for file in config_identities {
            if try_key_file(session, user, file, passphrase, &mut tried) {
                return Ok(());
            }
        }
    } else {
        if std::env::var_os("SSH_AUTH_SOCK").is_some() {
            tried.push("ssh-agent".to_string());
            if try_agent(session, user) {
                return Ok(());
            }
        }
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            let file = options.home.join(".ssh").join(name);
            if file.exists() && try_key_file(session, user, &file, passphrase, &mut tried) {
                return Ok(());
            }
        }
    }
    Err(Error::Auth {
        user: user.to_string(),
        host: hostname.to_string(),
        tried: if tried.is_empty() {
            "no key found (pass --identity or run an ssh-agent)".into()
        } else {
            tried.join(", ")
        },
    })
}

fn try_key_file(session: &Session, user: &str, file: &Path, passphrase: Option<&str>, tried: &mut Vec<String>) -> bool {
    if !file.exists() {
        tried.push(format!("{} (missing)", file.display()));
        return false;
    }
    tried.push(file.display().to_string());
    let public = PathBuf::from(format!("{}.pub", file.display()));
    let public = public.exists().then_some(public);
    session.userauth_pubkey_file(user, public.as_deref(), file, passphrase).is_ok() && session.authenticated()
}

fn try_agent(session: &Session, user: &str) -> bool {
    let Ok(mut agent) = session.agent() else { return false };
    if agent.connect().is_err() || agent.list_identities().is_err() {
        return false;
    }
    let Ok(identities) = agent.identities() else { return false };
    let accepted = identities.iter().any(|identity| agent.userauth(user, identity).is_ok() && session.authenticated());
    let _ = agent.disconnect();
    accepted
}

/// Quote a string for a POSIX shell (single quotes, embedded quotes escaped).
pub fn sh_quote(value: &str) -> String {
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&byte)) {
        return value.to_string();
    }
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Standard base64, with or without `=` padding (OpenSSH fingerprints omit it; key blobs keep it).
pub fn base64(data: &[u8], pad: bool) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let bytes = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let group = (u32::from(bytes[0]) << 16) | (u32::from(bytes[1]) << 8) | u32::from(bytes[2]);
        for index in 0..4 {
            if index <= chunk.len() {
                out.push(char::from(ALPHABET[((group >> (18 - 6 * index)) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b"", true), "");
        assert_eq!(base64(b"f", true), "Zg==");
        assert_eq!(base64(b"fo", true), "Zm8=");
        assert_eq!(base64(b"foo", true), "Zm9v");
        assert_eq!(base64(b"foobar", true), "Zm9vYmFy");
        assert_eq!(base64(b"fo", false), "Zm8");
    }

    #[test]
    fn quoting_is_shell_safe() {
        assert_eq!(sh_quote("/opt/gbo/bin/botserver"), "/opt/gbo/bin/botserver");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.1 503 Service Unavailable\r\nX: y"), Some(503));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH"), None);
    }

    #[test]
    fn host_names_are_checked_before_any_lookup() {
        for good in ["pragmatismo-system", "127.0.0.1", "::1", "a.b-c.example.", "host_1"] {
            assert!(validate_hostname(good).is_ok(), "{good}");
        }
        for bad in ["", "no such host", "bad!host", "-x", "a..b", "x;rm"] {
            assert!(validate_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_host_used_as_given_must_be_qualified() {
        for good in ["127.0.0.1", "::1", "localhost", "alm.example.com", "host.local."] {
            assert!(check_unaliased_host(good, None, Path::new("cfg")).is_ok(), "{good}");
        }
        let error = check_unaliased_host("pragmatismo-system", None, Path::new("cfg")).unwrap_err().to_string();
        assert!(error.contains("pragmatismo-system") && error.contains("not a Host alias in cfg"), "{error}");
        let error = check_unaliased_host("pragmatismo-system", Some(4), Path::new("cfg")).unwrap_err().to_string();
        assert!(error.contains("cfg:4") && error.contains("HostName"), "{error}");
    }

    #[test]
    fn known_hosts_names() {
        assert_eq!(known_hosts_name("example", 22), "example");
        assert_eq!(known_hosts_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let secret = Secret::new("hunter2".into());
        assert!(!format!("{secret:?}").contains("hunter2"));
    }
}
