//! Protocol-level health checks: PostgreSQL login with the generated password and `SELECT 1`, Redis `AUTH` with the
//! generated password and `PING`, an HTTP request, a banner. Run from the host through the component's published
//! port (host storage), or from inside the container (`storage = "volumes"`, where the daemon may be another
//! machine): the same protocol exchange travels through an exec's stdin and stdout to the service's port on the
//! container's own loopback ([`Inside`]), so no secret is an argument and the daemon's host is not dialled. A
//! proxy device that accepts while nothing listens inside is not mistaken for a service.

use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use gbo_components::{HealthCheck, Role, Secrets};
use lxd_client::Client;

use super::plan::Desired;
use super::ports::Allocation;
use crate::inventory::ManagedInstance;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Health {
    /// Whether the service answered as expected.
    pub healthy: bool,
    /// What was checked and what came back (never a secret).
    pub detail: String,
}

impl Health {
    fn ok(detail: impl Into<String>) -> Self {
        Self { healthy: true, detail: detail.into() }
    }
    fn bad(detail: impl Into<String>) -> Self {
        Self { healthy: false, detail: detail.into() }
    }
}

/// Where to probe: the host address and port publishing the check's container port, or the container itself.
#[derive(Debug, Clone)]
pub struct Target {
    /// Address to connect to (an all-addresses listener is probed on 127.0.0.1).
    pub address: std::net::IpAddr,
    /// Host port.
    pub port: u16,
    /// Probe from inside this container instead of through the host port.
    pub inside: Option<Inside>,
}

/// A probe from inside a container: `bash` connects to `127.0.0.1:port` there and relays the connection over
/// the exec's stdin and stdout.
#[derive(Debug, Clone)]
pub struct Inside {
    /// The daemon.
    pub lxd: Client,
    /// The container.
    pub instance: lxd_client::InstanceName,
    /// The service's port inside the container.
    pub port: u16,
}

/// The relay run inside the container (the port is its only argument; nothing secret is on its command line).
/// The command LXD waits for copies the service's answer to stdout, so the exec (and the probe's read) ends when
/// the service closes the connection (an HTTP/1.0 answer); our stdin is copied by a background `cat` through a
/// saved descriptor (a background job's own stdin is /dev/null in a non-interactive shell).
const RELAY: &str = r#"exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 111; exec 4<&0; cat <&4 >&3 2>/dev/null & exec cat <&3"#;

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A connection relayed through an exec; dropping it ends the exec (LXD kills the relay).
struct Relayed {
    io: Box<dyn Io>,
    _session: lxd_client::ExecSession,
}

impl tokio::io::AsyncRead for Relayed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Relayed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Where a probe connects (shown in messages as the address, or the port inside the container).
#[derive(Debug, Clone)]
pub enum Via {
    /// A TCP address on this machine (a published port).
    Host(std::net::SocketAddr),
    /// A port inside a container, reached through an exec relay: no host port is trusted, and it works through
    /// a remote whose containers run on another machine.
    Inside(Inside),
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Host(addr) => write!(f, "{addr}"),
            Via::Inside(inside) => write!(f, "127.0.0.1:{} inside {}", inside.port, inside.instance),
        }
    }
}

impl Via {
    async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        match self {
            Via::Host(addr) => Ok(Box::new(TcpStream::connect(addr).await?)),
            Via::Inside(inside) => {
                let request = lxd_client::ExecRequest::new([
                    "bash".to_string(),
                    "-c".into(),
                    RELAY.into(),
                    "gbo-relay".into(),
                    inside.port.to_string(),
                ])
                .stdin_piped()
                .timeout(PROBE_TIMEOUT);
                let mut session = inside.lxd.exec(&inside.instance, &request).await.map_err(std::io::Error::other)?;
                let stdin = session.stdin().ok_or_else(|| std::io::Error::other("the relay has no stdin"))?;
                let output = session.output_stream().ok_or_else(|| std::io::Error::other("the relay has no output"))?;
                use futures_util::StreamExt;
                let stdout = tokio_util::io::StreamReader::new(output.map(|chunk| match chunk {
                    lxd_client::ExecChunk::Stdout(bytes) => Ok::<_, std::io::Error>(bytes),
                    _ => Ok(bytes::Bytes::new()),
                }));
                Ok(Box::new(Relayed { io: Box::new(tokio::io::join(stdout, stdin)), _session: session }))
            }
        }
    }
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Run `check` once against `target`.
pub async fn probe(check: &HealthCheck, target: &Target, secrets: &Secrets) -> Health {
    let address = if target.address.is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { target.address };
    let addr = match &target.inside {
        Some(inside) => Via::Inside(inside.clone()),
        None => Via::Host(std::net::SocketAddr::new(address, target.port)),
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe_inner(check, addr.clone(), secrets)).await {
        Ok(h) => h,
        Err(_) => Health::bad(format!("no answer from {addr} within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

async fn probe_inner(check: &HealthCheck, addr: Via, secrets: &Secrets) -> Health {
    match check {
        HealthCheck::Postgres { user, database, password_secret, .. } => {
            let Some(password) = secrets.get(password_secret) else {
                return Health::bad(format!("secret {password_secret} is missing"));
            };
            let mut config = tokio_postgres::Config::new();
            config.user(*user).password(password).dbname(*database).connect_timeout(PROBE_TIMEOUT);
            let stream = match addr.connect().await {
                Ok(stream) => stream,
                Err(e) => return Health::bad(format!("connecting to {addr}: {}", redact(&e.to_string(), password))),
            };
            match config.connect_raw(stream, tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    let task = tokio::spawn(connection);
                    let result = client.simple_query("SELECT 1").await;
                    drop(client);
                    let _ = task.await;
                    match result {
                        Ok(_) => Health::ok(format!("SELECT 1 as {user} on {database} at {addr}")),
                        Err(e) => Health::bad(format!("SELECT 1 at {addr}: {}", redact(&e.to_string(), password))),
                    }
                }
                Err(e) => Health::bad(format!(
                    "login as {user} to {database} at {addr}: {}",
                    redact(&e.to_string(), password)
                )),
            }
        }
        HealthCheck::RedisPing { password_secret, .. } => {
            let Some(password) = secrets.get(password_secret) else {
                return Health::bad(format!(
                    "secret {password_secret} is missing (gbo install sets the cache's password)"
                ));
            };
            match redis_exchange(&addr, &[&["AUTH", password], &["PING"]]).await {
                Ok(lines) => match lines.as_slice() {
                    [auth, pong] if auth.starts_with("+OK") && pong.starts_with("+PONG") => {
                        Health::ok(format!("AUTH and PING -> PONG at {addr}"))
                    }
                    [auth, ..] if !auth.starts_with("+OK") => {
                        Health::bad(format!("AUTH at {addr} answered {:?}", redact(auth.trim_end(), password)))
                    }
                    other => Health::bad(format!("PING at {addr} answered {:?}", redact(&other.join(" "), password))),
                },
                Err(e) => Health::bad(format!("PING at {addr}: {}", redact(&e.to_string(), password))),
            }
        }
        HealthCheck::Http { path, expect, .. } | HealthCheck::HttpPage { path, expect, .. } => {
            let contains = match check {
                HealthCheck::HttpPage { contains, .. } => Some(*contains),
                _ => None,
            };
            let limit = if contains.is_some() { HTTP_PAGE_LIMIT } else { 4096 };
            let result = async {
                let mut stream = addr.connect().await?;
                let request = format!(
                    "GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: gbo-health\r\nConnection: close\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).await?;
                let mut buf = Vec::new();
                let mut limited = stream.take(limit);
                limited.read_to_end(&mut buf).await?;
                Ok::<_, std::io::Error>(buf)
            }
            .await;
            match result {
                Ok(buf) => {
                    let text = String::from_utf8_lossy(&buf);
                    let status = text
                        .lines()
                        .next()
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|s| s.parse::<u16>().ok());
                    match status {
                        Some(code) if expect.contains(code) => match contains {
                            Some(wanted) if !text.contains(wanted) => {
                                Health::bad(format!("GET {path} -> {code} at {addr}, but the page lacks {wanted:?}"))
                            }
                            Some(wanted) => Health::ok(format!("GET {path} -> {code} with {wanted:?} at {addr}")),
                            None => Health::ok(format!("GET {path} -> {code} at {addr}")),
                        },
                        Some(code) => Health::bad(format!(
                            "GET {path} -> {code} at {addr} (expected {}-{})",
                            expect.min, expect.max
                        )),
                        None => Health::bad(format!("GET {path} at {addr}: no HTTP answer")),
                    }
                }
                Err(e) => Health::bad(format!("GET {path} at {addr}: {e}")),
            }
        }
        HealthCheck::Banner { prefix, .. } => {
            let result = async {
                let stream = addr.connect().await?;
                let mut reader = tokio::io::BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).await?;
                Ok::<_, std::io::Error>(line)
            }
            .await;
            match result {
                Ok(line) if line.starts_with(prefix) => Health::ok(format!("banner {:?} at {addr}", line.trim_end())),
                Ok(line) => Health::bad(format!("banner at {addr} was {:?}, expected {prefix:?}", line.trim_end())),
                Err(e) => Health::bad(format!("banner at {addr}: {e}")),
            }
        }
        HealthCheck::Tcp { .. } => match addr.connect().await {
            Ok(_) => Health::ok(format!("TCP connect to {addr}")),
            Err(e) => Health::bad(format!("TCP connect to {addr}: {e}")),
        },
        other => Health::bad(format!("unsupported health check {other:?}")),
    }
}

/// Most of a page read by an [`HealthCheck::HttpPage`] probe.
const HTTP_PAGE_LIMIT: u64 = 256 * 1024;

/// Longest reply line read from a Redis server (a status or error line; bounded so a hostile answer cannot grow).
const REDIS_LINE_LIMIT: u64 = 4096;

/// Longest bulk reply read from a Redis server (`INFO persistence` is about 1 KiB).
const REDIS_BULK_LIMIT: usize = 64 * 1024;

/// Send `commands` to the Redis server at `addr` as RESP arrays (binary-safe: the password is never parsed as
/// syntax) and return each reply: its first line, and for a bulk string (`$<n>`, as `INFO` answers) that line
/// followed by its payload.
pub async fn redis_command(addr: std::net::SocketAddr, commands: &[&[&str]]) -> std::io::Result<Vec<String>> {
    redis_exchange(&Via::Host(addr), commands).await
}

/// [`redis_command`] through `via` (a published port, or the port inside the container).
pub async fn redis_exchange(addr: &Via, commands: &[&[&str]]) -> std::io::Result<Vec<String>> {
    let mut stream = addr.connect().await?;
    let mut request = Vec::new();
    for command in commands {
        request.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
        for arg in *command {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
    }
    stream.write_all(&request).await?;
    let mut reader = tokio::io::BufReader::new(stream);
    let mut lines = Vec::new();
    for _ in commands {
        let mut line = String::new();
        (&mut reader).take(REDIS_LINE_LIMIT).read_line(&mut line).await?;
        if line.is_empty() {
            break;
        }
        if let Some(len) = line.strip_prefix('$').and_then(|n| n.trim_end().parse::<usize>().ok()) {
            if len > REDIS_BULK_LIMIT {
                return Err(std::io::Error::other(format!("a reply of {len} bytes (at most {REDIS_BULK_LIMIT} read)")));
            }
            let mut payload = vec![0; len + 2];
            reader.read_exact(&mut payload).await?;
            payload.truncate(len);
            line.push_str(&String::from_utf8_lossy(&payload));
        }
        lines.push(line);
    }
    Ok(lines)
}

/// Never let a secret through into a message, whatever a library put in its error.
fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "<redacted>")
    }
}

/// Probe until healthy or `deadline` passes; returns the last answer and whether it became healthy. Polls
/// quickly at first (readiness, not a fixed sleep).
pub async fn wait_healthy(check: &HealthCheck, target: &Target, secrets: &Secrets, deadline: Duration) -> Health {
    let start = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let health = probe(check, target, secrets).await;
        if health.healthy || start.elapsed() >= deadline {
            return health;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// The health target of a spec: the published port of its health check's container port.
pub(super) fn target_of(
    lxd: &Client,
    desired: &Desired,
    allocations: &BTreeMap<(Role, String), Allocation>,
) -> Option<Target> {
    let port = desired.spec.health.port()?;
    let spec_port =
        desired.spec.ports.iter().find(|p| p.container_port == port && p.protocol == gbo_components::Protocol::Tcp)?;
    let a = allocations.get(&(desired.role, spec_port.name.to_string()))?;
    let inside = inside_of(lxd, &desired.config, &desired.instance, port);
    Some(Target { address: a.address, port: a.port, inside })
}

/// Health of a component without a published probe port: its unit is active (websocket exec, read-only).
pub(super) async fn unit_health(lxd: &Client, desired: &Desired) -> Health {
    let unit = match &desired.spec.health {
        HealthCheck::UnitActive { unit, .. } => unit.to_string(),
        _ => desired.role.unit_name(),
    };
    let Ok(name) = lxd_client::InstanceName::new(desired.instance.clone()) else {
        return Health { healthy: false, detail: "invalid instance name".into() };
    };
    let request =
        lxd_client::ExecRequest::new(["systemctl", "is-active", unit.as_str()]).timeout(Duration::from_secs(30));
    match lxd.exec_output(&name, &request).await {
        Ok(out) if out.success() => Health { healthy: true, detail: format!("{unit} is active") },
        Ok(out) => Health { healthy: false, detail: format!("{unit} is {}", out.stdout_text().trim()) },
        Err(e) => Health { healthy: false, detail: format!("systemctl is-active {unit}: {e}") },
    }
}

/// The in-container probe of an instance whose data lives in custom volumes (`storage = "volumes"`: the daemon
/// may be another machine, so its published ports are not dialled from here).
fn inside_of(lxd: &Client, config: &BTreeMap<String, String>, instance: &str, port: u16) -> Option<Inside> {
    if config.get(super::storage::KEY_STORAGE).map(String::as_str) != Some("volumes") {
        return None;
    }
    let instance = lxd_client::InstanceName::new(instance).ok()?;
    Some(Inside { lxd: lxd.clone(), instance, port })
}

/// Health checked from inside a container: `unit` is active (a non-recorded exec, read-only). Used where the
/// published ports are not this machine's (a remote daemon, members on other machines).
pub async fn unit_inside(lxd: &Client, name: &lxd_client::InstanceName, unit: &str) -> Health {
    let request = lxd_client::ExecRequest::new(["systemctl", "is-active", unit]).timeout(Duration::from_secs(30));
    match lxd.exec_output(name, &request).await {
        Ok(out) if out.success() => Health { healthy: true, detail: format!("{unit} is active (checked inside)") },
        Ok(out) => {
            Health { healthy: false, detail: format!("{unit} is {} (checked inside)", out.stdout_text().trim()) }
        }
        Err(e) => Health { healthy: false, detail: format!("systemctl is-active {unit} inside: {e}") },
    }
}

/// The health check and target of an observed instance, from the catalogue and its published ports.
pub fn health_of(lxd: &Client, m: &ManagedInstance) -> Option<(HealthCheck, Target)> {
    let role: Role = m.role?;
    let check = super::status::health_check(role)?;
    let port = check.port()?;
    let published = m.ports.iter().find(|p| p.container_port == port && p.protocol == gbo_components::Protocol::Tcp)?;
    let address = published.host_address.parse().ok()?;
    let inside = inside_of(lxd, &m.instance.config, m.name.as_str(), port);
    Some((check, Target { address, port: published.host_port, inside }))
}

/// Wait up to `timeout` for a gbo container to answer its role's health check: through its published port (the
/// secrets read from its stack dir) when the daemon's containers run on this machine, else its unit from inside.
/// `None` for a container of no known role.
pub async fn wait_container(
    lxd: &Client,
    site: &crate::site::Site,
    container: &ManagedInstance,
    timeout: Duration,
) -> Option<Health> {
    let role = container.role?;
    if site.shares_host() {
        if let Some((check, target)) = health_of(lxd, container) {
            let specs: Vec<_> = gbo_components::secrets::ALL_SECRETS.to_vec();
            let secrets = match &container.stack_dir {
                Some(dir) => crate::install::secrets::read_existing(dir, &specs).unwrap_or_default(),
                None => Secrets::new(),
            };
            return Some(wait_healthy(&check, &target, &secrets, timeout).await);
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        let h = unit_inside(lxd, &container.name, &role.unit_name()).await;
        if h.healthy || Instant::now() >= deadline {
            return Some(h);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
