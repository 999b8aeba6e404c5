//! Where the daemon is and how bytes get there: unix socket discovery, HTTPS with a client certificate and a
//! pinned server certificate, and the connector shared by HTTP requests and websockets.
//!
//! Two trust rules live here. An explicitly named daemon is the only one used: a socket named by `LXD_SOCKET` or
//! `LXD_DIR` (Incus: `INCUS_SOCKET`, `INCUS_DIR`) that cannot be used is an error naming the variable, never a
//! fallback to the usual paths, which are tried only when no variable is set (a variable set to the empty string
//! counts as unset, as for the `lxc` CLI). And an HTTPS server is trusted only through a pin (its certificate or
//! its SHA-256 fingerprint) or a CA chain the caller chose ([`ServerCa`], then with hostname verification): an
//! unpinned server is refused with its fingerprint in the error, and [`first_contact`] fetches the certificate for
//! the caller to show and accept, as `lxc remote add` does.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509StoreContextRef, X509};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};

/// Which daemon family: decides the socket paths and the file header prefix (`X-LXD-*` or `X-Incus-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Flavor {
    /// Canonical LXD.
    #[default]
    Lxd,
    /// Incus, the community fork.
    Incus,
}

impl Flavor {
    /// The prefix of file transfer headers (`X-LXD-uid`, `X-Incus-uid`, ...).
    pub fn header_prefix(self) -> &'static str {
        match self {
            Flavor::Lxd => "X-LXD-",
            Flavor::Incus => "X-Incus-",
        }
    }

    /// The environment variables that name this family's socket explicitly: the socket itself, then a directory
    /// holding `unix.socket`. The first one set (and not empty) wins, as in the daemon's own client.
    pub fn socket_variables(self) -> [&'static str; 2] {
        match self {
            Flavor::Lxd => ["LXD_SOCKET", "LXD_DIR"],
            Flavor::Incus => ["INCUS_SOCKET", "INCUS_DIR"],
        }
    }

    /// Every unix socket path discovery knows, explicit ones (from the environment) first. [`discover_socket`] uses
    /// only the explicit one when a variable is set, and the usual places only when none is.
    pub fn socket_candidates(self, env: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
        let mut out = Vec::new();
        match self {
            Flavor::Lxd => {
                if let Some(socket) = env("LXD_SOCKET").filter(|s| !s.is_empty()) {
                    out.push(PathBuf::from(socket));
                }
                if let Some(dir) = env("LXD_DIR").filter(|s| !s.is_empty()) {
                    out.push(Path::new(&dir).join("unix.socket"));
                }
                out.push(PathBuf::from("/var/snap/lxd/common/lxd/unix.socket"));
                out.push(PathBuf::from("/var/lib/lxd/unix.socket"));
            }
            Flavor::Incus => {
                if let Some(socket) = env("INCUS_SOCKET").filter(|s| !s.is_empty()) {
                    out.push(PathBuf::from(socket));
                }
                if let Some(dir) = env("INCUS_DIR").filter(|s| !s.is_empty()) {
                    out.push(Path::new(&dir).join("unix.socket"));
                }
                out.push(PathBuf::from("/var/lib/incus/unix.socket"));
                out.push(PathBuf::from("/run/incus/unix.socket"));
            }
        }
        out
    }
}

/// The daemon's socket, from this process's environment (see [`discover_socket_in`]).
pub fn discover_socket(flavor: Flavor) -> Result<PathBuf> {
    discover_socket_in(flavor, |variable| std::env::var_os(variable))
}

/// The daemon's socket given an environment: the one `LXD_SOCKET` (else `LXD_DIR`) names when set, which must be a
/// unix socket, or [`Error::ExplicitSocket`] naming the variable and the path; no other path is tried then. With
/// neither set (or set to the empty string), the first existing path of the usual places (snap, then Debian; for
/// Incus `/var/lib/incus`, then `/run/incus`), or [`Error::SocketNotFound`] listing them.
pub fn discover_socket_in(flavor: Flavor, env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let [socket_variable, dir_variable] = flavor.socket_variables();
    let set = |variable: &str| env(variable).filter(|value| !value.is_empty()).map(PathBuf::from);
    let explicit = match (set(socket_variable), set(dir_variable)) {
        (Some(socket), _) => Some((socket_variable, socket.clone(), socket)),
        (None, Some(dir)) => Some((dir_variable, dir.clone(), dir.join("unix.socket"))),
        (None, None) => None,
    };
    if let Some((variable, value, path)) = explicit {
        return match check_socket(&path) {
            Ok(()) => Ok(path),
            Err(reason) => Err(Error::ExplicitSocket { variable, value, path, reason }),
        };
    }
    let usual = flavor.socket_candidates(|_| None);
    match usual.iter().find(|candidate| candidate.exists()) {
        Some(found) => Ok(found.clone()),
        None => Err(Error::SocketNotFound { tried: usual }),
    }
}

/// Whether `path` is a unix socket (following links, as `connect` does), or what it is instead.
pub(crate) fn check_socket(path: &Path) -> std::result::Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => Ok(()),
        Ok(meta) if meta.is_dir() => Err("is a directory, not a unix socket".into()),
        Ok(_) => Err("is not a unix socket".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("does not exist".into()),
        Err(e) => Err(format!("cannot be checked ({e})")),
    }
}

/// TLS material for an HTTPS remote, and how its server certificate is trusted.
///
/// The server is trusted through a pin (`server_cert_pem`, `server_fingerprint`, or both, which must then agree)
/// or a CA the caller chose (`server_ca`, with hostname verification); with a pin and a CA both apply. With none
/// of them every connection is refused with [`Error::UntrustedServer`], which carries the fingerprint to check and
/// pin ([`first_contact`] fetches the certificate without trusting it).
#[derive(Clone)]
pub struct TlsIdentity {
    /// Client certificate (PEM).
    pub client_cert_pem: Vec<u8>,
    /// Client private key (PEM).
    pub client_key_pem: Vec<u8>,
    /// The server certificate to trust (PEM); when set, only this exact certificate is accepted.
    pub server_cert_pem: Option<Vec<u8>>,
    /// A SHA-256 fingerprint (64 hex digits, colons allowed) the server certificate must have.
    pub server_fingerprint: Option<String>,
    /// Trust a certificate chain to this CA instead of (or as well as) a pin; the certificate must then name the
    /// host of the address (hostname or IP address verification).
    pub server_ca: Option<ServerCa>,
}

impl TlsIdentity {
    /// A client identity with no server trust yet: set a pin or a CA before connecting.
    pub fn new(client_cert_pem: impl Into<Vec<u8>>, client_key_pem: impl Into<Vec<u8>>) -> Self {
        Self {
            client_cert_pem: client_cert_pem.into(),
            client_key_pem: client_key_pem.into(),
            server_cert_pem: None,
            server_fingerprint: None,
            server_ca: None,
        }
    }
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("client_key_pem", &"<redacted>")
            .field("server_cert_pem", &self.server_cert_pem.as_ref().map(|_| "<pinned>"))
            .field("server_fingerprint", &self.server_fingerprint)
            .field("server_ca", &self.server_ca)
            .finish()
    }
}

/// A CA chain to trust for an HTTPS server, chosen instead of a pin. Hostname verification is always on with it.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerCa {
    /// The system's public CAs (OpenSSL's default store, `SSL_CERT_FILE`/`SSL_CERT_DIR` when set).
    System,
    /// Only these CA certificates (PEM, one or more), for a private CA (LXD's PKI mode).
    Roots(Vec<u8>),
}

impl std::fmt::Debug for ServerCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerCa::System => f.write_str("System"),
            ServerCa::Roots(pem) => write!(f, "Roots({} bytes of PEM)", pem.len()),
        }
    }
}

/// The certificate an HTTPS server presented at [`first_contact`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerCertificate {
    /// The certificate (PEM).
    pub pem: Vec<u8>,
    /// Its SHA-256 fingerprint (lower-case hex, no colons; what `lxc remote add` and `lxc info` print).
    pub fingerprint: String,
}

/// Where the daemon is.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// A local unix socket.
    Unix(PathBuf),
    /// An HTTPS address (`host:port`) with its TLS material.
    Https {
        /// `host:port`.
        address: String,
        /// Client identity and server pin.
        tls: TlsIdentity,
    },
}

impl Endpoint {
    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Unix(path) => path.display().to_string(),
            Endpoint::Https { address, .. } => format!("https://{address}"),
        }
    }
}

/// The SHA-256 fingerprint (lower-case hex, no colons) of a PEM certificate.
pub fn certificate_fingerprint(pem: &[u8]) -> Result<String> {
    let cert = X509::from_pem(pem).map_err(|e| Error::Config { message: format!("bad certificate PEM: {e}") })?;
    let digest = cert
        .digest(MessageDigest::sha256())
        .map_err(|e| Error::Config { message: format!("cannot hash certificate: {e}") })?;
    Ok(hex::encode(digest))
}

fn normalise_fingerprint(fp: &str) -> String {
    fp.chars().filter(|c| c.is_ascii_hexdigit()).collect::<String>().to_ascii_lowercase()
}

/// A SHA-256 fingerprint as given by a person or a file (hex, any case, colons and spaces allowed), normalised to
/// lower-case hex; anything else is refused rather than pinned to something that can never match.
pub(crate) fn parse_fingerprint(fp: &str) -> std::result::Result<String, String> {
    let allowed = fp.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c.is_ascii_whitespace());
    let normalised = normalise_fingerprint(fp);
    if allowed && normalised.len() == 64 {
        Ok(normalised)
    } else {
        Err(format!("{fp:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"))
    }
}

/// The SHA-256 fingerprint of a certificate (lower-case hex).
fn digest_hex(cert: &openssl::x509::X509Ref) -> Option<String> {
    cert.digest(MessageDigest::sha256()).ok().map(hex::encode)
}

/// The host part of `host:port` (IPv6 without brackets).
pub(crate) fn host_of(address: &str) -> &str {
    address.rsplit_once(':').map(|(h, _)| h).unwrap_or(address).trim_matches(['[', ']'])
}

/// A stream to the daemon: unix or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A boxed connection.
pub(crate) type BoxedIo = Box<dyn Io>;

/// Opens connections to one endpoint. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Connector {
    inner: Arc<ConnectorInner>,
}

struct ConnectorInner {
    endpoint: Endpoint,
    /// How errors name the daemon: the endpoint, with the remote's name when it came from one.
    label: String,
    /// The `lxc` remote it came from.
    remote: Option<String>,
    tls: Option<TlsPolicy>,
}

/// The TLS context of one HTTPS endpoint and what its server certificate must satisfy.
struct TlsPolicy {
    connector: SslConnector,
    /// The pinned SHA-256 fingerprint.
    pin: Option<String>,
    /// A chosen CA chain (with hostname verification).
    ca: bool,
}

impl Connector {
    pub(crate) fn new(endpoint: Endpoint, remote: Option<String>) -> Result<Self> {
        let label = match &remote {
            Some(name) => format!("remote `{name}` ({})", endpoint.describe()),
            None => endpoint.describe(),
        };
        let tls = match &endpoint {
            Endpoint::Unix(_) => None,
            Endpoint::Https { tls, .. } => Some(build_tls(&label, tls)?),
        };
        Ok(Self { inner: Arc::new(ConnectorInner { endpoint, label, remote, tls }) })
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Open one raw connection.
    pub(crate) async fn connect(&self) -> Result<BoxedIo> {
        self.connect_with(false).await
    }

    /// Open one raw connection; `output_only` for a websocket that only carries data from the daemon: writes that
    /// find the daemon gone are then dropped beneath TLS (see [`PeerGone`]).
    pub(crate) async fn connect_with(&self, output_only: bool) -> Result<BoxedIo> {
        match &self.inner.endpoint {
            Endpoint::Unix(path) => match tokio::net::UnixStream::connect(path).await {
                Ok(stream) => Ok(Box::new(PeerGone { inner: stream, drop_writes: output_only })),
                Err(e) => {
                    let error = match e.kind() {
                        std::io::ErrorKind::PermissionDenied => Error::PermissionDenied { path: path.clone() },
                        std::io::ErrorKind::NotFound if self.inner.remote.is_some() => Error::Connect {
                            endpoint: self.inner.label.clone(),
                            source: std::io::Error::new(
                                e.kind(),
                                format!("the socket {} does not exist", path.display()),
                            ),
                        },
                        std::io::ErrorKind::NotFound => Error::SocketNotFound { tried: vec![path.clone()] },
                        _ => Error::Connect { endpoint: self.inner.label.clone(), source: e },
                    };
                    Err(error)
                }
            },
            Endpoint::Https { address, .. } => {
                let label = &self.inner.label;
                let tls_err = |message: String| Error::Tls { endpoint: label.clone(), message };
                let tcp = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(|source| Error::Connect { endpoint: label.clone(), source })?;
                let _ = tcp.set_nodelay(true);
                let tcp = PeerGone { inner: tcp, drop_writes: output_only };
                let policy = self.inner.tls.as_ref().ok_or_else(|| tls_err("no TLS configuration".into()))?;
                let host = host_of(address);
                let config = policy
                    .connector
                    .configure()
                    .map_err(|e| tls_err(e.to_string()))?
                    .verify_hostname(policy.ca)
                    .use_server_name_indication(host.parse::<std::net::IpAddr>().is_err());
                let mut ssl = config.into_ssl(host).map_err(|e| tls_err(e.to_string()))?;
                // Decided per connection, so the refusal can say what was presented.
                let verdict = Arc::new(Mutex::new(Verdict::default()));
                let (pin, ca, seen) = (policy.pin.clone(), policy.ca, verdict.clone());
                ssl.set_verify_callback(SslVerifyMode::PEER, move |preverified, ctx| {
                    verify_server(&seen, pin.as_deref(), ca, preverified, ctx)
                });
                let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| tls_err(e.to_string()))?;
                if let Err(e) = Pin::new(&mut stream).connect().await {
                    let verdict = verdict.lock().map(|v| v.clone()).unwrap_or_default();
                    return Err(handshake_error(label, &verdict, policy.pin.as_deref(), &e.to_string()));
                }
                Ok(Box::new(stream))
            }
        }
    }
}

/// What the verification of one server certificate saw and why it refused.
#[derive(Clone, Debug, Default)]
struct Verdict {
    /// SHA-256 of the certificate the server presented.
    fingerprint: Option<String>,
    refusal: Option<Refusal>,
}

#[derive(Clone, Debug)]
enum Refusal {
    /// No pin and no CA: nothing to trust it by.
    NotPinned,
    /// Pinned, and this is another certificate.
    WrongPin,
    /// The chosen CA chain (or the hostname) does not verify.
    Chain(String),
}

/// OpenSSL's verification callback for one connection. Certificates above the leaf matter only for a CA chain; the
/// leaf must match the pin when there is one, and verify (chain and hostname) when a CA was chosen.
fn verify_server(
    verdict: &Mutex<Verdict>,
    pin: Option<&str>,
    ca: bool,
    preverified: bool,
    ctx: &mut X509StoreContextRef,
) -> bool {
    let refuse = |refusal: Refusal| {
        if let Ok(mut v) = verdict.lock() {
            v.refusal.get_or_insert(refusal);
        }
        false
    };
    if ctx.error_depth() != 0 {
        return if ca && !preverified { refuse(Refusal::Chain(ctx.error().error_string().to_string())) } else { true };
    }
    let fingerprint = ctx.current_cert().and_then(digest_hex);
    if let Ok(mut v) = verdict.lock() {
        v.fingerprint.clone_from(&fingerprint);
    }
    if ca && !preverified {
        return refuse(Refusal::Chain(ctx.error().error_string().to_string()));
    }
    match pin {
        Some(expected) if fingerprint.as_deref() == Some(expected) => true,
        Some(_) => refuse(Refusal::WrongPin),
        None if ca => true,
        None => refuse(Refusal::NotPinned),
    }
}

fn handshake_error(label: &str, verdict: &Verdict, pin: Option<&str>, detail: &str) -> Error {
    let seen = verdict.fingerprint.clone().unwrap_or_else(|| "unknown".into());
    let tls = |message: String| Error::Tls { endpoint: label.to_string(), message };
    match &verdict.refusal {
        Some(Refusal::NotPinned) => Error::UntrustedServer { endpoint: label.to_string(), fingerprint: seen },
        Some(Refusal::WrongPin) => tls(format!(
            "the server presented a certificate with SHA-256 fingerprint {seen}, not the pinned {}",
            pin.unwrap_or("")
        )),
        Some(Refusal::Chain(reason)) => tls(format!(
            "the server's certificate (SHA-256 fingerprint {seen}) does not verify against the chosen CA for this \
             host name: {reason}"
        )),
        None => tls(format!("handshake failed: {detail}")),
    }
}

/// First contact with an HTTPS daemon at `address` (`host:port`): the certificate it presents, fetched without
/// trusting it. No client certificate is shown and nothing but the TLS handshake is sent. Show
/// [`ServerCertificate::fingerprint`] to the operator (as `lxc remote add` does) and pin the certificate only once
/// they have checked it against the server: [`TlsIdentity::server_cert_pem`], or
/// [`crate::Remote::accept_server_certificate`] for an `lxc` remote.
pub async fn first_contact(address: &str) -> Result<ServerCertificate> {
    let label = format!("https://{address}");
    let tls_err = |message: String| Error::Tls { endpoint: label.clone(), message };
    let timeout = crate::client::DEFAULT_TIMEOUT;
    let tcp = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Err(_) => {
            let source = std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {timeout:?}"));
            return Err(Error::Connect { endpoint: label, source });
        }
        Ok(Err(source)) => return Err(Error::Connect { endpoint: label, source }),
        Ok(Ok(tcp)) => tcp,
    };
    let connector = SslConnector::builder(SslMethod::tls_client()).map_err(|e| tls_err(e.to_string()))?.build();
    let host = host_of(address);
    let mut ssl = connector
        .configure()
        .map_err(|e| tls_err(e.to_string()))?
        .verify_hostname(false)
        .use_server_name_indication(host.parse::<std::net::IpAddr>().is_err())
        .into_ssl(host)
        .map_err(|e| tls_err(e.to_string()))?;
    // Accepted only to be read: this connection carries nothing.
    ssl.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| tls_err(e.to_string()))?;
    match tokio::time::timeout(timeout, Pin::new(&mut stream).connect()).await {
        Err(_) => return Err(tls_err(format!("no TLS handshake within {timeout:?}"))),
        Ok(Err(e)) => return Err(tls_err(format!("handshake failed: {e}"))),
        Ok(Ok(())) => {}
    }
    let cert = stream.ssl().peer_certificate().ok_or_else(|| tls_err("the server presented no certificate".into()))?;
    let pem = cert.to_pem().map_err(|e| tls_err(e.to_string()))?;
    let fingerprint = digest_hex(&cert).ok_or_else(|| tls_err("cannot hash the server certificate".into()))?;
    let _ = stream.shutdown().await;
    Ok(ServerCertificate { pem, fingerprint })
}

/// A connection whose writes, on a socket that only carries data from the daemon (an exec's stdout or stderr), are
/// dropped once the daemon has gone. LXD writes the last frames of an output and closes its end at once, so a reply
/// of ours (a pong to its keepalive ping, our half of the close handshake) can meet a closed socket. tungstenite
/// sends such replies before it reads the next frame, and a failed one ended the stream with the frames still
/// unread: the command's output, lost while its exit code said success (a third of short execs under CPU load;
/// regression test `concurrent_short_execs_each_return_their_complete_output`). Dropping the write lets every queued
/// frame be read. It sits beneath TLS, so OpenSSL never sees a failed write and still decrypts what is queued.
/// With `drop_writes` off it is a plain pass-through.
pub(crate) struct PeerGone<T> {
    inner: T,
    drop_writes: bool,
}

impl<T> PeerGone<T> {
    fn dropped(&self, error: &std::io::Error) -> bool {
        self.drop_writes && matches!(error.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for PeerGone<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for PeerGone<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Err(e)) if self.dropped(&e) => Poll::Ready(Ok(buf.len())),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) if self.dropped(&e) => Poll::Ready(Ok(())),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Ready(Err(e)) if self.dropped(&e) => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

fn build_tls(label: &str, tls: &TlsIdentity) -> Result<TlsPolicy> {
    let err = |message: String| Error::Tls { endpoint: label.to_string(), message };
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| err(e.to_string()))?;
    let cert = X509::from_pem(&tls.client_cert_pem).map_err(|e| err(format!("client certificate: {e}")))?;
    let key = PKey::private_key_from_pem(&tls.client_key_pem).map_err(|e| err(format!("client key: {e}")))?;
    builder.set_certificate(&cert).map_err(|e| err(e.to_string()))?;
    builder.set_private_key(&key).map_err(|e| err(e.to_string()))?;
    builder.check_private_key().map_err(|e| err(format!("client key does not match certificate: {e}")))?;
    let mut pin = match tls.server_fingerprint.as_deref() {
        Some(fp) => Some(parse_fingerprint(fp).map_err(|e| err(format!("server fingerprint: {e}")))?),
        None => None,
    };
    if let Some(server_pem) = &tls.server_cert_pem {
        let fp = certificate_fingerprint(server_pem)?;
        if let Some(existing) = &pin {
            if existing != &fp {
                return Err(err("the pinned fingerprint does not match the given server certificate".into()));
            }
        }
        pin = Some(fp);
    }
    let ca = match &tls.server_ca {
        None => false,
        // SslConnector::builder has loaded the system's default store already.
        Some(ServerCa::System) => true,
        Some(ServerCa::Roots(pem)) => {
            let roots = X509::stack_from_pem(pem).map_err(|e| err(format!("server CA: {e}")))?;
            if roots.is_empty() {
                return Err(err("server CA: no certificate in the PEM".into()));
            }
            let mut store = X509StoreBuilder::new().map_err(|e| err(e.to_string()))?;
            for root in roots {
                store.add_cert(root).map_err(|e| err(format!("server CA: {e}")))?;
            }
            builder.set_cert_store(store.build());
            true
        }
    };
    // The per-connection callback decides (see `verify_server`); PEER makes OpenSSL ask it.
    builder.set_verify(SslVerifyMode::PEER);
    Ok(TlsPolicy { connector: builder.build(), pin, ca })
}

/// The connection type handed to hyper's pool.
pub(crate) struct PooledIo {
    io: TokioIo<BoxedIo>,
}

impl Connection for PooledIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for PooledIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for PooledIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Errors of the connector as seen by hyper's pool (it needs `std::error::Error`).
#[derive(Debug)]
pub(crate) struct ConnectError(pub(crate) Error);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ConnectError {}

impl tower_service::Service<http::Uri> for Connector {
    type Response = PooledIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<PooledIo, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::result::Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let io = this.connect().await.map_err(ConnectError)?;
            Ok(PooledIo { io: TokioIo::new(io) })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lxd_discovery_order() {
        let env = |k: &str| match k {
            "LXD_SOCKET" => Some("/custom/sock".to_string()),
            "LXD_DIR" => Some("/custom/dir".to_string()),
            _ => None,
        };
        let c = Flavor::Lxd.socket_candidates(env);
        assert_eq!(
            c,
            vec![
                PathBuf::from("/custom/sock"),
                PathBuf::from("/custom/dir/unix.socket"),
                PathBuf::from("/var/snap/lxd/common/lxd/unix.socket"),
                PathBuf::from("/var/lib/lxd/unix.socket"),
            ]
        );
        let none = Flavor::Lxd.socket_candidates(|_| None);
        assert_eq!(none.len(), 2);
        let incus = Flavor::Incus.socket_candidates(|k| (k == "INCUS_DIR").then(|| "/i".to_string()));
        assert_eq!(incus[0], PathBuf::from("/i/unix.socket"));
        assert_eq!(Flavor::Incus.header_prefix(), "X-Incus-");
    }

    #[test]
    fn missing_socket_lists_every_path() {
        let err = Error::SocketNotFound { tried: vec!["/a".into(), "/b".into()] };
        let msg = err.to_string();
        assert!(msg.contains("/a, /b") && msg.contains("apt-get install lxd"), "{msg}");
    }

    #[test]
    fn fingerprints_are_normalised() {
        assert_eq!(normalise_fingerprint("AB:cd:01"), "abcd01");
    }
}
