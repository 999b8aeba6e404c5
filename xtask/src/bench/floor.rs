//! The daemon's floor for `cargo xtask bench client`: the leanest request sequence any client can send for one
//! exec and for a full-state list, spoken with nothing but hyper and tokio-tungstenite over the unix socket. What
//! lxd-client costs on top of it (typed decoding, its session task, tracing) is the ratio to this floor.
//!
//! This is the one place outside lxd-client that speaks to LXD directly: it measures the daemon, not a client.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Raw requests to one daemon's unix socket: one connection per request, as LXD wants (see `socket_hygiene`).
pub struct Floor {
    socket: PathBuf,
}

impl Floor {
    /// The daemon at `socket`.
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.to_path_buf() }
    }

    /// One request on a fresh connection; the body's JSON.
    async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<serde_json::Value> {
        let stream = UnixStream::connect(&self.socket).await.with_context(|| self.socket.display().to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let builder = http::Request::builder().method(method).uri(path).header(http::header::HOST, "lxd");
        let response = match body {
            Some(body) => {
                let request = builder.header(http::header::CONTENT_TYPE, "application/json").body(Full::new(body))?;
                sender.send_request(request.map(|b| b.boxed())).await?
            }
            None => sender.send_request(builder.body(Empty::<Bytes>::new().boxed())?).await?,
        };
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&bytes)?;
        if value["type"] == "error" {
            bail!("{path}: {}", value["error"]);
        }
        Ok(value)
    }

    /// `GET /1.0/instances?recursion=2`: every instance with its live state, in one answer. Returns how many.
    pub async fn list_full(&self) -> anyhow::Result<usize> {
        let answer = self.request(http::Method::GET, "/1.0/instances?recursion=2", None).await?;
        Ok(answer["metadata"].as_array().map(Vec::len).unwrap_or(0))
    }

    /// One non-interactive exec with websockets: `POST exec`, the control socket then stdin, stdout and stderr
    /// concurrently (LXD starts the command once the data sockets are in, and refuses a control socket that comes
    /// after a short command is over), stdin closed at once, both outputs read to their end while `/wait` gives the
    /// exit code. Returns the exit code.
    pub async fn exec(&self, instance: &str, command: &[&str]) -> anyhow::Result<i64> {
        let body = serde_json::json!({
            "command": command,
            "environment": {},
            "interactive": false,
            "wait-for-websocket": true,
            "record-output": false,
        });
        let answer = self
            .request(http::Method::POST, &format!("/1.0/instances/{instance}/exec"), Some(body.to_string().into()))
            .await?;
        let operation = answer["metadata"]["id"].as_str().context("no operation id")?.to_string();
        let fds = &answer["metadata"]["metadata"]["fds"];
        let secret = |fd: &str| fds[fd].as_str().map(str::to_string).with_context(|| format!("no secret for {fd}"));
        let (control_secret, stdin_secret, stdout_secret, stderr_secret) =
            (secret("control")?, secret("0")?, secret("1")?, secret("2")?);
        let control = self.websocket(&operation, &control_secret).await?;
        let (stdin, stdout, stderr) = tokio::try_join!(
            self.websocket(&operation, &stdin_secret),
            self.websocket(&operation, &stdout_secret),
            self.websocket(&operation, &stderr_secret),
        )?;
        let wait_path = format!("/1.0/operations/{operation}/wait?timeout=30");
        let wait = self.request(http::Method::GET, &wait_path, None);
        let feed = async {
            let mut stdin = stdin;
            let _ = stdin.send(Message::Close(None)).await;
            while let Some(Ok(_)) = stdin.next().await {}
        };
        let (done, _, _, _) = tokio::join!(wait, feed, drain(stdout), drain(stderr));
        drop(control);
        let done = done?;
        match done["metadata"]["status_code"].as_i64() {
            Some(200) => done["metadata"]["metadata"]["return"].as_i64().context("no exit code"),
            _ => bail!("exec failed: {}", done["metadata"]["err"]),
        }
    }

    async fn websocket(
        &self,
        operation: &str,
        secret: &str,
    ) -> anyhow::Result<tokio_tungstenite::WebSocketStream<UnixStream>> {
        let stream = UnixStream::connect(&self.socket).await?;
        let request = format!("ws://lxd/1.0/operations/{operation}/websocket?secret={secret}").into_client_request()?;
        let (socket, _) = tokio_tungstenite::client_async(request, stream).await?;
        Ok(socket)
    }
}

/// Read an output socket to its end (an empty text frame, a close, or the connection gone).
async fn drain(mut socket: tokio_tungstenite::WebSocketStream<UnixStream>) -> usize {
    let mut bytes = 0;
    while let Some(Ok(message)) = socket.next().await {
        match message {
            Message::Binary(data) => bytes += data.len(),
            Message::Text(text) if text.is_empty() => break,
            Message::Close(_) => break,
            _ => {}
        }
    }
    bytes
}
