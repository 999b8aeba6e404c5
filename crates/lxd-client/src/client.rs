//! The client handle and the one request path every endpoint goes through.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use crate::error::{Error, Result};
use crate::operation::Operation;
use crate::server::Server;
use crate::transport::{discover_socket, Connector, Endpoint, Flavor};

/// The default per-request timeout (time to the response headers and body of a synchronous call).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default [`ReadLimits::body`]: 32 MiB. The largest answer gbo asks for is the instance list
/// (`recursion=1`), a few KiB per instance: about 4 MiB for a thousand containers.
pub const DEFAULT_BODY_LIMIT: u64 = 32 * 1024 * 1024;

/// The default [`ReadLimits::collected`]: 64 MiB. What gbo collects whole is command output it parses (`psql`
/// answers, `ss` and `ps` listings) and configuration files: kilobytes. Dumps and backups are streamed.
pub const DEFAULT_COLLECT_LIMIT: u64 = 64 * 1024 * 1024;

/// How much the client reads into memory from the daemon (and so from a container or a remote) before it stops
/// with [`Error::TooLarge`] naming the limit and what was being read. Streaming calls are not limited: pushes and
/// [`Client::pull`]/[`Client::pull_to`], an [`crate::ExecSession`]'s output stream and
/// [`crate::ExecSession::relay`], image and backup transfers. Set with [`Client::with_read_limits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// Every answer body read whole: JSON envelopes and operation waits, error bodies, directory listings, symlink
    /// targets. Default [`DEFAULT_BODY_LIMIT`].
    pub body: u64,
    /// Data collected whole: each of stdout and stderr of [`Client::exec_output`] (and
    /// [`crate::ExecSession::output`]) and [`Client::exec_recorded`], a file read by [`Client::read_file`], an
    /// instance log. Default [`DEFAULT_COLLECT_LIMIT`].
    pub collected: u64,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self { body: DEFAULT_BODY_LIMIT, collected: DEFAULT_COLLECT_LIMIT }
    }
}

/// The request body type.
pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A cheap-to-clone handle on one LXD daemon.
///
/// [`Client::project`], [`Client::target`], [`Client::with_timeout`] and [`Client::with_read_limits`] return adjusted
/// copies that share the connection pool, like the Go client's `UseProject`/`UseTarget`.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
    project: Option<String>,
    target: Option<String>,
    timeout: Duration,
    limits: ReadLimits,
}

pub(crate) struct Inner {
    pub(crate) connector: Connector,
    http: HyperClient<Connector, Body>,
    pub(crate) flavor: Flavor,
    server: tokio::sync::OnceCell<Server>,
    authority: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.connector.endpoint().describe())
            .field("project", &self.project)
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .field("limits", &self.limits)
            .finish()
    }
}

/// The envelope every LXD answer comes in. Private: callers get decoded values and typed errors, never envelopes.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Envelope {
    /// `sync`, `async` or `error`.
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// For errors: the code.
    #[serde(default)]
    pub(crate) error_code: u16,
    /// For errors: the message.
    #[serde(default)]
    pub(crate) error: String,
    /// The payload.
    #[serde(default)]
    pub(crate) metadata: serde_json::Value,
}

/// A decoded answer: the envelope plus what the headers said.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) envelope: Envelope,
    pub(crate) etag: Option<String>,
}

const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encode one path segment or query value.
pub(crate) fn encode(value: &str) -> String {
    utf8_percent_encode(value, QUERY).to_string()
}

/// One request, built by endpoint code and sent by [`Client::send`].
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Body>,
    pub(crate) timeout: Option<Duration>,
    /// Add `project=` (true for project-scoped endpoints).
    pub(crate) scoped: bool,
    /// Add the client's `target=` whatever the method (endpoints of objects that live on one member, such as custom
    /// volumes on a member-local pool); otherwise it goes on `POST` only (creations).
    pub(crate) on_member: bool,
}

impl Request {
    pub(crate) fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: None,
            timeout: None,
            scoped: true,
            on_member: false,
        }
    }

    pub(crate) fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_string(), value.into()));
        self
    }

    pub(crate) fn json<T: Serialize>(mut self, value: &T) -> Result<Self> {
        let data = serde_json::to_vec(value)
            .map_err(|e| Error::Decode { path: self.path.clone(), message: format!("cannot encode request: {e}") })?;
        self.headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.body = Some(full(data));
        Ok(self)
    }

    pub(crate) fn stream(mut self, reader: impl AsyncRead + Send + 'static, content_type: &'static str) -> Self {
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024).map_ok(Frame::data);
        self.headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        self.body = Some(UnsyncBoxBody::new(StreamBody::new(stream)));
        self
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Result<Self> {
        let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| Error::Transport {
            method: self.method.to_string(),
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let value = HeaderValue::from_str(value).map_err(|e| Error::Transport {
            method: self.method.to_string(),
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        self.headers.insert(name, value);
        Ok(self)
    }

    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn unscoped(mut self) -> Self {
        self.scoped = false;
        self
    }

    /// Send the client's `target=` with this request whatever its method (see [`Request::on_member`]).
    pub(crate) fn on_member(mut self) -> Self {
        self.on_member = true;
        self
    }
}

pub(crate) fn full(data: impl Into<Bytes>) -> Body {
    UnsyncBoxBody::new(Full::new(data.into()).map_err(|never| match never {}))
}

impl Client {
    /// Connect to the local daemon: the socket `LXD_SOCKET` (else `LXD_DIR`) names, and only that one when set;
    /// with neither set (or set empty), the snap path, then the Debian one. See [`crate::discover_socket_in`].
    ///
    /// ```no_run
    /// # async fn demo() -> lxd_client::Result<()> {
    /// let lxd = lxd_client::Client::local()?; // nothing is connected yet
    /// let server = lxd.server().await?;
    /// println!("LXD {} at {}", server.environment.server_version, lxd.endpoint().describe());
    /// for instance in lxd.instances().await? {
    ///     println!("{} {}", instance.name, instance.status);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn local() -> Result<Self> {
        let path = discover_socket(Flavor::Lxd)?;
        Self::new(Endpoint::Unix(path), Flavor::Lxd)
    }

    /// Connect to a local Incus daemon: the socket `INCUS_SOCKET` (else `INCUS_DIR`) names, and only that one when
    /// set; otherwise `/var/lib/incus`, then `/run/incus`.
    pub fn local_incus() -> Result<Self> {
        let path = discover_socket(Flavor::Incus)?;
        Self::new(Endpoint::Unix(path), Flavor::Incus)
    }

    /// A client for a given endpoint. No connection is made until the first request.
    pub fn new(endpoint: Endpoint, flavor: Flavor) -> Result<Self> {
        Self::labelled(endpoint, flavor, None)
    }

    /// [`Client::new`] for a named remote: its connection errors name it.
    pub(crate) fn labelled(endpoint: Endpoint, flavor: Flavor, remote: Option<String>) -> Result<Self> {
        let authority = match &endpoint {
            Endpoint::Unix(_) => "lxd".to_string(),
            Endpoint::Https { address, .. } => address.clone(),
        };
        // LXD (5.0 at least) reads the first bytes of every new unix-socket connection inside its accept loop, to
        // tell TLS from plain HTTP: a connection that is opened and left silent stops the daemon from accepting any
        // other client. hyper's pool opens such connections (a connect that loses the race against an idle
        // checkout is finished and parked unused), so on the unix socket nothing is kept idle: every request gets
        // its own connection, which costs microseconds there. HTTPS keeps a pool (TLS handshakes are costly), with
        // a timer so idle connections are really closed.
        let unix = matches!(endpoint, Endpoint::Unix(_));
        let connector = Connector::new(endpoint, remote)?;
        let mut builder = HyperClient::builder(TokioExecutor::new());
        builder.pool_timer(hyper_util::rt::TokioTimer::new()).pool_idle_timeout(Duration::from_secs(10));
        if unix {
            builder.pool_max_idle_per_host(0);
        } else {
            builder.pool_max_idle_per_host(8);
        }
        let http = builder.build(connector.clone());
        Ok(Self {
            inner: Arc::new(Inner { connector, http, flavor, server: tokio::sync::OnceCell::new(), authority }),
            project: None,
            target: None,
            timeout: DEFAULT_TIMEOUT,
            limits: ReadLimits::default(),
        })
    }

    /// A copy that works in `project`.
    pub fn project(&self, project: &crate::names::ObjectName) -> Self {
        Self { project: Some(project.to_string()), ..self.clone() }
    }

    /// A copy that sends creations to a cluster member (`target=` on every `POST`), and every request on a custom
    /// volume or its snapshots and backups (read, change, delete, export, import) to that member too: on a pool
    /// local to each member, one volume name may exist on several members, and `target=` says which one.
    pub fn target(&self, member: impl Into<String>) -> Self {
        Self { target: Some(member.into()), ..self.clone() }
    }

    /// A copy without a `target=` (for requests that name their member themselves).
    pub(crate) fn untargeted(&self) -> Self {
        Self { target: None, ..self.clone() }
    }

    /// The cluster member creations are sent to, if set.
    pub fn current_target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// A copy with another per-request timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self { timeout, ..self.clone() }
    }

    /// A copy with other read limits (see [`ReadLimits`]).
    pub fn with_read_limits(&self, limits: ReadLimits) -> Self {
        Self { limits, ..self.clone() }
    }

    /// The read limits of this handle.
    pub fn read_limits(&self) -> ReadLimits {
        self.limits
    }

    /// The per-request timeout of this handle.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The project this handle works in, if set.
    pub fn current_project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// The endpoint (socket path or HTTPS address).
    pub fn endpoint(&self) -> &Endpoint {
        self.inner.connector.endpoint()
    }

    /// The daemon family.
    pub fn flavor(&self) -> Flavor {
        self.inner.flavor
    }

    /// `GET /1.0`, fetched once per client and cached.
    pub async fn server(&self) -> Result<&Server> {
        self.inner.server.get_or_try_init(|| async { self.get::<Server>("/1.0").await }).await
    }

    /// `GET /1.0` again, bypassing the cache (for example after changing the server's configuration).
    pub async fn server_fresh(&self) -> Result<Server> {
        self.get::<Server>("/1.0").await
    }

    /// Whether the daemon has an API extension.
    pub async fn has_extension(&self, name: &str) -> Result<bool> {
        Ok(self.server().await?.api_extensions.iter().any(|e| e == name))
    }

    /// Fail with [`Error::MissingExtension`] unless the daemon has `name`.
    pub async fn require_extension(&self, name: &str, hint: &str) -> Result<()> {
        if self.has_extension(name).await? {
            Ok(())
        } else {
            Err(Error::MissingExtension { name: name.to_string(), hint: hint.to_string() })
        }
    }

    fn uri(&self, req: &Request) -> String {
        let mut query = req.query.clone();
        if req.scoped {
            if let Some(project) = &self.project {
                query.push(("project".into(), project.clone()));
            }
            if req.method == Method::POST || req.on_member {
                if let Some(target) = &self.target {
                    query.push(("target".into(), target.clone()));
                }
            }
        }
        let mut uri = format!("http://{}{}", self.inner.authority, req.path);
        if !query.is_empty() {
            uri.push('?');
            let parts: Vec<String> = query.iter().map(|(k, v)| format!("{}={}", k, encode(v))).collect();
            uri.push_str(&parts.join("&"));
        }
        uri
    }

    /// Path plus query string, for websocket requests.
    pub(crate) fn path_and_query(&self, req: &Request) -> String {
        let uri = self.uri(req);
        let prefix = format!("http://{}", self.inner.authority);
        uri.strip_prefix(&prefix).unwrap_or(&uri).to_string()
    }

    /// Send a request and return the raw response (for streaming bodies).
    pub(crate) async fn send_raw(&self, req: Request) -> Result<http::Response<Incoming>> {
        let method = req.method.clone();
        let path = req.path.clone();
        let timeout = req.timeout.unwrap_or(self.timeout);
        let uri = self.uri(&req);
        let mut builder = http::Request::builder().method(req.method).uri(&uri);
        if let Some(headers) = builder.headers_mut() {
            headers.extend(req.headers);
        }
        let body = req.body.unwrap_or_else(|| full(Bytes::new()));
        let request = builder.body(body).map_err(|e| Error::Transport {
            method: method.to_string(),
            path: path.clone(),
            message: e.to_string(),
        })?;
        tracing::trace!(%method, %uri, "lxd request");
        match tokio::time::timeout(timeout, self.inner.http.request(request)).await {
            Err(_) => Err(Error::Timeout { method: method.to_string(), path, after: timeout }),
            Ok(Err(e)) => {
                // Surface the connector's own error (socket missing, permission, TLS) rather than hyper's wrapper.
                let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                while let Some(err) = source {
                    if let Some(connect) = err.downcast_ref::<crate::transport::ConnectError>() {
                        return Err(clone_connect_error(&connect.0));
                    }
                    source = err.source();
                }
                Err(Error::Transport { method: method.to_string(), path, message: format!("{e:#}") })
            }
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// Send a request and decode the envelope, whatever the HTTP status.
    pub(crate) async fn send(&self, req: Request) -> Result<Answer> {
        let method = req.method.to_string();
        let path = req.path.clone();
        let timeout = req.timeout.unwrap_or(self.timeout);
        let response = self.send_raw(req).await?;
        let status = response.status();
        let etag = response.headers().get(http::header::ETAG).and_then(|v| v.to_str().ok()).map(|s| s.to_string());
        let what = || format!("the answer to {method} {path}");
        let body = match tokio::time::timeout(timeout, self.read_body(response.into_body(), &method, &path, what)).await
        {
            Err(_) => return Err(Error::Timeout { method, path, after: timeout }),
            Ok(body) => body?,
        };
        let envelope = decode_envelope(status, &path, &body)?;
        Ok(Answer { envelope, etag })
    }

    /// Read a whole answer body, at most [`ReadLimits::body`]; `what` names it in the error past the limit.
    pub(crate) async fn read_body(
        &self,
        body: Incoming,
        method: &str,
        path: &str,
        what: impl FnOnce() -> String,
    ) -> Result<Bytes> {
        collect_limited(body, self.limits.body, "body", method, path, what).await
    }

    /// Read whole data (a file, a log), at most [`ReadLimits::collected`].
    pub(crate) async fn read_collected(
        &self,
        body: Incoming,
        method: &str,
        path: &str,
        what: impl FnOnce() -> String,
    ) -> Result<Bytes> {
        collect_limited(body, self.limits.collected, "collected", method, path, what).await
    }

    /// The error an unsuccessful raw response stands for: its envelope's error when it has one, else its status and
    /// (the start of) its text. The body is read within [`ReadLimits::body`].
    pub(crate) async fn failure(&self, response: http::Response<Incoming>, method: &str, path: &str) -> Error {
        let status = response.status();
        let body = match self
            .read_body(response.into_body(), method, path, || format!("the error answer to {method} {path}"))
            .await
        {
            Ok(body) => body,
            Err(e) if e.is_too_large() => return e,
            Err(_) => Bytes::new(),
        };
        match decode_envelope(status, path, &body) {
            Err(e) => e,
            Ok(_) => Error::from_api(status.as_u16(), path, String::from_utf8_lossy(&body).chars().take(300).collect()),
        }
    }

    /// The limit on data collected whole ([`ReadLimits::collected`]).
    pub(crate) fn collected_limit(&self) -> u64 {
        self.limits.collected
    }

    /// `GET` a synchronous resource and decode its metadata.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let answer = self.send(Request::new(Method::GET, path)).await?;
        decode_metadata(path, answer.envelope.metadata)
    }

    /// Send a request that answers synchronously and decode its metadata.
    pub(crate) async fn sync<T: DeserializeOwned>(&self, req: Request) -> Result<T> {
        let path = req.path.clone();
        let answer = self.send(req).await?;
        decode_metadata(&path, answer.envelope.metadata)
    }

    /// Send a request that starts a background operation; return the operation.
    pub(crate) async fn start_operation(&self, req: Request) -> Result<Operation> {
        let path = req.path.clone();
        let answer = self.send(req).await?;
        operation_from_answer(&path, answer.envelope)
    }

    /// Send a request that starts an operation and wait for it to finish (within this handle's timeout plus the
    /// given operation timeout).
    pub(crate) async fn run_operation(&self, req: Request, wait: Duration) -> Result<Operation> {
        let operation = self.start_operation(req).await?;
        self.wait_operation(&operation.id, wait).await
    }
}

/// Collect a body up to `limit` bytes; past it, [`Error::TooLarge`] (nothing more is read).
async fn collect_limited(
    body: Incoming,
    limit: u64,
    limit_name: &'static str,
    method: &str,
    path: &str,
    what: impl FnOnce() -> String,
) -> Result<Bytes> {
    let bounded = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match bounded.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(Error::TooLarge { what: what(), limit_name, limit })
        }
        Err(e) => Err(Error::Transport { method: method.to_string(), path: path.to_string(), message: e.to_string() }),
    }
}

fn clone_connect_error(error: &Error) -> Error {
    match error {
        Error::SocketNotFound { tried } => Error::SocketNotFound { tried: tried.clone() },
        Error::UntrustedServer { endpoint, fingerprint } => {
            Error::UntrustedServer { endpoint: endpoint.clone(), fingerprint: fingerprint.clone() }
        }
        Error::PermissionDenied { path } => Error::PermissionDenied { path: path.clone() },
        Error::Connect { endpoint, source } => Error::Connect {
            endpoint: endpoint.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::Tls { endpoint, message } => Error::Tls { endpoint: endpoint.clone(), message: message.clone() },
        other => Error::Transport { method: String::new(), path: String::new(), message: other.to_string() },
    }
}

/// Decode an envelope from a body, switching on `type` rather than on the HTTP status.
pub(crate) fn decode_envelope(status: StatusCode, path: &str, body: &[u8]) -> Result<Envelope> {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(envelope) if envelope.kind == "error" => {
            let code = if envelope.error_code != 0 { envelope.error_code } else { status.as_u16() };
            Err(Error::from_api(code, path, envelope.error))
        }
        Ok(envelope) => Ok(envelope),
        Err(e) if !status.is_success() => {
            let text = String::from_utf8_lossy(body).trim().chars().take(300).collect::<String>();
            let message = if text.is_empty() { status.to_string() } else { text };
            let _ = e;
            Err(Error::from_api(status.as_u16(), path, message))
        }
        Err(e) => Err(Error::Decode { path: path.to_string(), message: e.to_string() }),
    }
}

/// Deserialize `null` as the type's default (LXD sends `"used_by": null` for unused objects).
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

pub(crate) fn decode_metadata<T: DeserializeOwned>(path: &str, metadata: serde_json::Value) -> Result<T> {
    serde_json::from_value(metadata).map_err(|e| Error::Decode { path: path.to_string(), message: e.to_string() })
}

pub(crate) fn operation_from_answer(path: &str, envelope: Envelope) -> Result<Operation> {
    if envelope.kind != "async" {
        return Err(Error::Decode {
            path: path.to_string(),
            message: format!("expected an async answer, got `{}`", envelope.kind),
        });
    }
    decode_metadata(path, envelope.metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_envelope_with_http_200_is_an_error() {
        let body = br#"{"type":"error","error":"Instance not found","error_code":404,"metadata":null}"#;
        let err = decode_envelope(StatusCode::OK, "/1.0/instances/x", body).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn status_codes_map_to_variants() {
        let conflict = br#"{"type":"error","error":"already exists","error_code":409}"#;
        assert!(decode_envelope(StatusCode::CONFLICT, "/p", conflict).unwrap_err().is_conflict());
        let stale = br#"{"type":"error","error":"ETag doesn't match","error_code":412}"#;
        assert!(decode_envelope(StatusCode::PRECONDITION_FAILED, "/p", stale).unwrap_err().is_precondition_failed());
        let other = br#"{"type":"error","error":"boom","error_code":500}"#;
        match decode_envelope(StatusCode::INTERNAL_SERVER_ERROR, "/p", other).unwrap_err() {
            Error::Api { status, message, .. } => assert_eq!((status, message.as_str()), (500, "boom")),
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn non_json_error_bodies_keep_their_text() {
        let err = decode_envelope(StatusCode::MOVED_PERMANENTLY, "/1.0/", b"<a href=...>Moved</a>").unwrap_err();
        assert!(matches!(err, Error::Api { status: 301, .. }), "{err:?}");
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("/opt/gbo/a b"), "%2Fopt%2Fgbo%2Fa%20b");
    }
}
