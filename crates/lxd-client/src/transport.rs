//! Where the daemon is and how bytes get there: unix socket discovery, HTTPS with a client certificate and a
//! pinned server certificate, and the connector shared by HTTP requests and websockets.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use tokio::io::{AsyncRead, AsyncWrite};

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

    /// Candidate unix socket paths in the daemon's own discovery order, given the environment.
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

/// Find the first existing socket among [`Flavor::socket_candidates`], or say every path tried.
pub fn discover_socket(flavor: Flavor) -> Result<PathBuf> {
    let candidates = flavor.socket_candidates(|k| std::env::var(k).ok());
    for candidate in &candidates {
        if candidate.exists() {
            return Ok(candidate.clone());
        }
    }
    Err(Error::SocketNotFound { tried: candidates })
}

/// TLS material for an HTTPS remote.
#[derive(Clone)]
pub struct TlsIdentity {
    /// Client certificate (PEM).
    pub client_cert_pem: Vec<u8>,
    /// Client private key (PEM).
    pub client_key_pem: Vec<u8>,
    /// The server certificate to trust (PEM); when set, only this exact certificate is accepted.
    pub server_cert_pem: Option<Vec<u8>>,
    /// A SHA-256 fingerprint (hex, colons allowed) the server certificate must have.
    pub server_fingerprint: Option<String>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("client_key_pem", &"<redacted>")
            .field("server_fingerprint", &self.server_fingerprint)
            .finish()
    }
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
    tls: Option<SslConnector>,
}

impl Connector {
    pub(crate) fn new(endpoint: Endpoint) -> Result<Self> {
        let tls = match &endpoint {
            Endpoint::Unix(_) => None,
            Endpoint::Https { address, tls } => Some(build_tls(address, tls)?),
        };
        Ok(Self { inner: Arc::new(ConnectorInner { endpoint, tls }) })
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
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    Err(Error::PermissionDenied { path: path.clone() })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Error::SocketNotFound { tried: vec![path.clone()] })
                }
                Err(source) => Err(Error::Connect { endpoint: path.display().to_string(), source }),
            },
            Endpoint::Https { address, .. } => {
                let tcp = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(|source| Error::Connect { endpoint: address.clone(), source })?;
                let _ = tcp.set_nodelay(true);
                let tcp = PeerGone { inner: tcp, drop_writes: output_only };
                let connector = self
                    .inner
                    .tls
                    .as_ref()
                    .ok_or_else(|| Error::Tls { endpoint: address.clone(), message: "no TLS configuration".into() })?;
                let host = address.rsplit_once(':').map(|(h, _)| h).unwrap_or(address).trim_matches(['[', ']']);
                let config = connector
                    .configure()
                    .map_err(|e| Error::Tls { endpoint: address.clone(), message: e.to_string() })?
                    .verify_hostname(false)
                    .use_server_name_indication(host.parse::<std::net::IpAddr>().is_err());
                let ssl = config
                    .into_ssl(host)
                    .map_err(|e| Error::Tls { endpoint: address.clone(), message: e.to_string() })?;
                let mut stream = tokio_openssl::SslStream::new(ssl, tcp)
                    .map_err(|e| Error::Tls { endpoint: address.clone(), message: e.to_string() })?;
                Pin::new(&mut stream).connect().await.map_err(|e| Error::Tls {
                    endpoint: address.clone(),
                    message: format!("handshake failed (is the server certificate the pinned one?): {e}"),
                })?;
                Ok(Box::new(stream))
            }
        }
    }
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

fn build_tls(address: &str, tls: &TlsIdentity) -> Result<SslConnector> {
    let err = |message: String| Error::Tls { endpoint: address.to_string(), message };
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| err(e.to_string()))?;
    let cert = X509::from_pem(&tls.client_cert_pem).map_err(|e| err(format!("client certificate: {e}")))?;
    let key = PKey::private_key_from_pem(&tls.client_key_pem).map_err(|e| err(format!("client key: {e}")))?;
    builder.set_certificate(&cert).map_err(|e| err(e.to_string()))?;
    builder.set_private_key(&key).map_err(|e| err(e.to_string()))?;
    builder.check_private_key().map_err(|e| err(format!("client key does not match certificate: {e}")))?;
    let mut pin = tls.server_fingerprint.as_deref().map(normalise_fingerprint);
    if let Some(server_pem) = &tls.server_cert_pem {
        let fp = certificate_fingerprint(server_pem)?;
        if let Some(existing) = &pin {
            if existing != &fp {
                return Err(err("the pinned fingerprint does not match the given server certificate".into()));
            }
        }
        pin = Some(fp);
    }
    match pin {
        Some(expected) => {
            // LXD servers use self-signed certificates: trust exactly the pinned leaf, nothing else.
            builder.set_verify_callback(SslVerifyMode::PEER, move |_preverified, ctx| {
                if ctx.error_depth() != 0 {
                    return true;
                }
                match ctx.current_cert().and_then(|c| c.digest(MessageDigest::sha256()).ok()) {
                    Some(digest) => hex::encode(digest) == expected,
                    None => false,
                }
            });
        }
        None => builder.set_verify(SslVerifyMode::PEER),
    }
    Ok(builder.build())
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
