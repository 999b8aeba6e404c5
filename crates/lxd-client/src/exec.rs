//! Running commands in instances: websocket streaming (stdin, stdout, stderr, control), interactive TTY, and
//! recorded mode.
//!
//! Websocket mode never hangs on a lost close frame: "done" means the operation finished **and** both output
//! streams reached EOF, the control socket is connected first and the data sockets concurrently right after it
//! (LXD starts the command once the data sockets are there, and gives up after 10 s), every socket is read
//! continuously so pings are answered, and a deadline bounds the whole call.
//!
//! Nothing an output socket carries is dropped: a reply of ours that meets the daemon's closed end is discarded
//! instead of ending the read (see `transport::PeerGone`), so every frame LXD sent before closing is delivered.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use http::Method;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::client::{Client, Request};
use crate::error::{Error, Result};
use crate::instances::instance_path;
use crate::names::InstanceName;
use crate::operation::Operation;
use crate::transport::BoxedIo;

/// Default bound on one exec call.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(600);

/// How long an exec's outputs may take to reach EOF once its operation has finished.
pub const EXEC_DRAIN_GRACE: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// argv. Never put a secret here: LXD publishes exec command lines in its event stream.
    pub command: Vec<String>,
    /// Extra environment.
    pub environment: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// uid to run as.
    pub user: Option<u32>,
    /// gid to run as.
    pub group: Option<u32>,
    /// Whole-call deadline.
    pub timeout: Duration,
}

impl ExecRequest {
    /// Run `command` (argv) as root.
    pub fn new<I, S>(command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            command: command.into_iter().map(Into::into).collect(),
            environment: BTreeMap::new(),
            cwd: None,
            user: None,
            group: None,
            timeout: DEFAULT_EXEC_TIMEOUT,
        }
    }

    /// Set an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.environment.insert(key.into(), value.into());
        self
    }

    /// Set the working directory.
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Run as `uid`/`gid`.
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some(uid);
        self.group = Some(gid);
        self
    }

    /// Bound the whole call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Collected result of a non-streaming exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The command's exit code (a non-zero code is data, not an error).
    pub exit_code: i32,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// stdout as (lossy) UTF-8.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as (lossy) UTF-8.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A message for a running exec's control socket.
#[derive(Debug, Clone)]
pub enum ExecControl {
    /// Send a signal (e.g. 15 for SIGTERM).
    Signal(i32),
    /// Resize the terminal (interactive mode).
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
}

#[derive(Serialize)]
struct ExecBody<'a> {
    command: &'a [String],
    environment: &'a BTreeMap<String, String>,
    #[serde(rename = "wait-for-websocket")]
    wait_for_websocket: bool,
    #[serde(rename = "record-output")]
    record_output: bool,
    interactive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cwd: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<u32>,
}

type Ws = WebSocketStream<BoxedIo>;

pub(crate) fn exit_code(op: &Operation) -> i32 {
    op.metadata.as_ref().and_then(|m| m.get("return")).and_then(|r| r.as_i64()).unwrap_or(-1) as i32
}

fn control_message(control: &ExecControl) -> String {
    match control {
        ExecControl::Signal(signal) => serde_json::json!({ "command": "signal", "signal": signal }).to_string(),
        ExecControl::Resize { width, height } => serde_json::json!({
            "command": "window-resize",
            "args": { "width": width.to_string(), "height": height.to_string() }
        })
        .to_string(),
    }
}

impl Client {
    async fn start_exec(
        &self,
        name: &InstanceName,
        req: &ExecRequest,
        interactive: Option<(u16, u16)>,
        record: bool,
    ) -> Result<Operation> {
        if req.command.is_empty() {
            return Err(Error::InvalidName {
                kind: "command",
                value: String::new(),
                rule: "an exec needs at least one argument",
            });
        }
        let body = ExecBody {
            command: &req.command,
            environment: &req.environment,
            wait_for_websocket: !record,
            record_output: record,
            interactive: interactive.is_some(),
            width: interactive.map(|(w, _)| w),
            height: interactive.map(|(_, h)| h),
            cwd: req.cwd.as_deref(),
            user: req.user,
            group: req.group,
        };
        let request = Request::new(Method::POST, format!("{}/exec", instance_path(name))).json(&body)?;
        self.start_operation(request).await
    }

    /// Open an operation websocket.
    pub(crate) async fn websocket(&self, path_and_query: &str) -> Result<Ws> {
        self.websocket_over(path_and_query, false).await
    }

    /// Open an operation websocket; `output` for a socket that only carries data from the daemon (its writes are
    /// dropped once the daemon has gone: see `transport::PeerGone`).
    async fn websocket_over(&self, path_and_query: &str, output: bool) -> Result<Ws> {
        let ws_err = |message: String| Error::Websocket { path: path_and_query.to_string(), message };
        let io = self.inner.connector.connect_with(output).await?;
        let url = format!("ws://lxd{path_and_query}");
        let request = url.into_client_request().map_err(|e| ws_err(e.to_string()))?;
        let (ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::client_async(request, io))
            .await
            .map_err(|_| ws_err("handshake timed out".into()))?
            .map_err(|e| match e {
                // The daemon's own words are in the body of a refused upgrade.
                tokio_tungstenite::tungstenite::Error::Http(response) => {
                    let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                    ws_err(format!("HTTP {}: {}", response.status(), body.trim()))
                }
                other => ws_err(other.to_string()),
            })?;
        Ok(ws)
    }

    /// Connect an operation's websockets, in `keys` order. Those in `outputs` carry the daemon's data to us (an
    /// exec's stdout and stderr, an interactive exec's terminal): a write of ours that finds the daemon gone there is
    /// dropped, so every frame it sent is read (see `transport::PeerGone`).
    async fn operation_sockets(&self, op: &Operation, keys: &[&str], outputs: &[&str]) -> Result<Vec<Ws>> {
        let fds = op.metadata.as_ref().and_then(|m| m.get("fds")).ok_or_else(|| Error::Decode {
            path: format!("/1.0/operations/{}", op.id),
            message: "no `fds` in exec operation".into(),
        })?;
        let mut paths = Vec::new();
        for &key in keys {
            let secret = fds.get(key).and_then(|v| v.as_str()).ok_or_else(|| Error::Decode {
                path: format!("/1.0/operations/{}", op.id),
                message: format!("no secret for fd {key}"),
            })?;
            let req = Request::new(Method::GET, format!("/1.0/operations/{}/websocket", op.id)).query("secret", secret);
            paths.push((self.path_and_query(&req), outputs.contains(&key)));
        }
        // The control socket first: LXD starts the command as soon as the data sockets are connected, and a short
        // command can be over (its operation no longer running) before a control socket that was connected
        // alongside them gets there, which LXD then refuses ("Only running operations can be connected"). The data
        // sockets then connect concurrently: LXD waits only a few seconds for all of them.
        let control = match keys.iter().position(|&key| key == "control") {
            Some(index) => {
                let (path, output) = paths.remove(index);
                Some((index, self.websocket_over(&path, output).await?))
            }
            None => None,
        };
        let mut sockets =
            futures_util::future::try_join_all(paths.iter().map(|(p, output)| self.websocket_over(p, *output))).await?;
        if let Some((index, socket)) = control {
            sockets.insert(index, socket);
        }
        Ok(sockets)
    }

    /// Run a command, collect its output (stdin is empty). A non-zero exit is returned, not raised. Each of stdout
    /// and stderr is collected up to [`crate::ReadLimits::collected`]: past it the command is killed and
    /// [`Error::TooLarge`] returned (use [`Client::exec_io`] to stream output of any size).
    pub async fn exec(&self, name: &InstanceName, req: &ExecRequest) -> Result<ExecOutput> {
        self.exec_collected(name, req, None).await
    }

    /// Run a command with `stdin` as its standard input and collect its output (bounded as in [`Client::exec`]).
    pub async fn exec_with_stdin(&self, name: &InstanceName, req: &ExecRequest, stdin: &[u8]) -> Result<ExecOutput> {
        self.exec_collected(name, req, Some(stdin)).await
    }

    async fn exec_collected(&self, name: &InstanceName, req: &ExecRequest, stdin: Option<&[u8]>) -> Result<ExecOutput> {
        let limit = self.collected_limit();
        let mut stdout = Collector::new(limit);
        let mut stderr = Collector::new(limit);
        let result = self.exec_io(name, req, stdin, &mut stdout, &mut stderr).await;
        for (collector, stream) in [(&stdout, "stdout"), (&stderr, "stderr")] {
            if collector.exceeded {
                let argv0 = req.command.first().map(String::as_str).unwrap_or("");
                return Err(Error::TooLarge {
                    what: format!("{stream} of `{argv0}` in {name}"),
                    limit_name: "collected",
                    limit,
                });
            }
        }
        Ok(ExecOutput { exit_code: result?, stdout: stdout.data, stderr: stderr.data })
    }

    /// Run a command streaming stdin from `stdin` and stdout/stderr into the writers; returns the exit code.
    /// Streams of any size pass through with bounded memory.
    pub async fn exec_io<R, O, E>(
        &self,
        name: &InstanceName,
        req: &ExecRequest,
        stdin: Option<R>,
        stdout: O,
        stderr: E,
    ) -> Result<i32>
    where
        R: AsyncRead + Unpin + Send,
        O: AsyncWrite + Unpin + Send,
        E: AsyncWrite + Unpin + Send,
    {
        self.exec_controlled(name, req, stdin, stdout, stderr, None).await
    }

    /// [`Client::exec_io`] with a control channel: send [`ExecControl::Signal`] to signal the running command.
    ///
    /// The call ends when the operation has finished and both outputs reached EOF (after the operation ends,
    /// outputs get [`EXEC_DRAIN_GRACE`] to finish, so a lost close frame cannot hang it). When `req.timeout`
    /// passes first, the command is killed (SIGKILL through the control socket) and
    /// [`Error::OperationTimeout`] is returned.
    pub async fn exec_controlled<R, O, E>(
        &self,
        name: &InstanceName,
        req: &ExecRequest,
        stdin: Option<R>,
        stdout: O,
        stderr: E,
        controls: Option<mpsc::Receiver<ExecControl>>,
    ) -> Result<i32>
    where
        R: AsyncRead + Unpin + Send,
        O: AsyncWrite + Unpin + Send,
        E: AsyncWrite + Unpin + Send,
    {
        let span = tracing::debug_span!("exec", instance = %name, argv0 = %req.command.first().map(String::as_str).unwrap_or(""));
        let _guard = span.enter();
        let op = self.start_exec(name, req, None, false).await?;
        let mut sockets = self.operation_sockets(&op, &["0", "1", "2", "control"], &["1", "2"]).await?;
        let control = sockets.pop().ok_or_else(|| ws_missing(&op))?;
        let err_ws = sockets.pop().ok_or_else(|| ws_missing(&op))?;
        let out_ws = sockets.pop().ok_or_else(|| ws_missing(&op))?;
        let in_ws = sockets.pop().ok_or_else(|| ws_missing(&op))?;
        let io = async {
            let ((input, output), errors) = tokio::join!(
                async { tokio::join!(pump_in(in_ws, stdin), pump_out(out_ws, stdout)) },
                pump_out(err_ws, stderr)
            );
            output.and(errors).and(input)
        };
        let finished = self.supervise(&op, req.timeout, control, controls, io).await?;
        Ok(exit_code(&finished))
    }

    /// Drive an exec to its end: forward control messages, wait for the operation and the output pumps, kill the
    /// command at the deadline.
    async fn supervise<F>(
        &self,
        op: &Operation,
        timeout: Duration,
        control: Ws,
        controls: Option<mpsc::Receiver<ExecControl>>,
        io: F,
    ) -> Result<Operation>
    where
        F: std::future::Future<Output = Result<()>>,
    {
        let control_path = format!("/1.0/operations/{}/websocket", op.id);
        let (mut control_sink, mut control_stream) = control.split();
        let mut controls = controls;
        let wait = self.wait_operation(&op.id, timeout);
        tokio::pin!(io, wait);
        let mut io_result: Option<Result<()>> = None;
        let mut finished: Option<Result<Operation>> = None;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let mut control_open = true;
        loop {
            if io_result.is_some() && finished.is_some() {
                break;
            }
            let grace = async {
                match drain_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = &mut io, if io_result.is_none() => match result {
                    Err(e) if finished.is_none() => {
                        // Nobody reads the outputs any more (a collected output went past its limit, a writer
                        // failed): kill the command rather than leave it blocked on a full pipe until the deadline.
                        let _ = control_sink.send(Message::Text(control_message(&ExecControl::Signal(9)))).await;
                        let _ = control_sink.close().await;
                        return Err(e);
                    }
                    other => io_result = Some(other),
                },
                result = &mut wait, if finished.is_none() => {
                    if matches!(result, Err(Error::OperationTimeout { .. })) {
                        // Kill the command so nothing keeps running behind our back, then give up.
                        let _ = control_sink.send(Message::Text(control_message(&ExecControl::Signal(9)))).await;
                        let _ = control_sink.close().await;
                        return Err(Error::OperationTimeout { id: op.id.clone(), after: timeout });
                    }
                    finished = Some(result);
                    drain_deadline = Some(tokio::time::Instant::now() + EXEC_DRAIN_GRACE);
                }
                message = async {
                    match controls.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match message {
                    Some(message) => control_sink.send(Message::Text(control_message(&message))).await.map_err(|e| Error::Websocket {
                        path: control_path.clone(),
                        message: e.to_string(),
                    })?,
                    None => controls = None,
                },
                // Keep reading the control socket so pings are answered (until the daemon closes it).
                message = control_stream.next(), if control_open => {
                    if !matches!(message, Some(Ok(_))) {
                        control_open = false;
                    }
                }
                () = grace => {
                    tracing::debug!(id = %op.id, "exec outputs did not reach EOF after the operation ended");
                    break;
                }
            }
        }
        let _ = control_sink.close().await;
        if let Some(result) = io_result {
            result?;
        }
        finished.unwrap_or_else(|| Err(Error::OperationTimeout { id: op.id.clone(), after: timeout }))
    }

    /// Run a command on a pseudo-terminal of `size` (columns, rows): `input` feeds the terminal and `output`
    /// receives what it prints; `controls` sends resizes and signals. Returns the exit code. Bounded by
    /// `req.timeout` like [`Client::exec_controlled`].
    pub async fn exec_interactive<R, W>(
        &self,
        name: &InstanceName,
        req: &ExecRequest,
        size: (u16, u16),
        input: R,
        output: W,
        controls: mpsc::Receiver<ExecControl>,
    ) -> Result<i32>
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let op = self.start_exec(name, req, Some(size), false).await?;
        // The terminal socket carries both ways; its input side needs no failure either: once the daemon has gone,
        // the command has ended and its output is what ends this call.
        let mut sockets = self.operation_sockets(&op, &["0", "control"], &["0"]).await?;
        let control = sockets.pop().ok_or_else(|| ws_missing(&op))?;
        let tty = sockets.pop().ok_or_else(|| ws_missing(&op))?;
        let (tty_sink, tty_stream) = tty.split();
        // The terminal's output ends the I/O; input may stay open (an interactive user never sends EOF).
        let io = async {
            let writer = pump_in_sink(tty_sink, Some(input), false);
            let reader = pump_out_stream(tty_stream, output);
            tokio::pin!(writer, reader);
            let mut writer_done = false;
            loop {
                tokio::select! {
                    result = &mut writer, if !writer_done => { writer_done = true; let _sink = result?; }
                    result = &mut reader => return result,
                }
            }
        };
        let finished = self.supervise(&op, req.timeout, control, Some(controls), io).await?;
        Ok(exit_code(&finished))
    }

    /// Run a command in recorded mode: LXD writes stdout/stderr to log files, which are downloaded (each at most
    /// [`crate::ReadLimits::collected`]) and deleted. Simpler but slower than websockets; each call leaves
    /// `instance-log-*` lifecycle events.
    pub async fn exec_recorded(&self, name: &InstanceName, req: &ExecRequest) -> Result<ExecOutput> {
        let op = self.start_exec(name, req, None, true).await?;
        let done = self.wait_operation(&op.id, req.timeout).await?;
        let outputs = done
            .metadata
            .as_ref()
            .and_then(|m| m.get("output"))
            .and_then(|o| o.as_object())
            .cloned()
            .unwrap_or_default();
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let argv0 = req.command.first().map(String::as_str).unwrap_or("");
        let mut failed = None;
        for (fd, path) in outputs {
            let Some(path) = path.as_str() else { continue };
            // The daemon gives a full API path: /1.0/instances/<n>/logs/exec_<op>.stdout (5.0) or .../exec-output/...
            let what = || format!("recorded output {fd} of `{argv0}` in {name}");
            let data = self.read_raw(Request::new(Method::GET, path.to_string()), what).await;
            // Deleted whether or not it could be read (one past the read limit included).
            let _: serde_json::Value =
                self.sync(Request::new(Method::DELETE, path.to_string())).await.unwrap_or_default();
            match (data, fd.as_str()) {
                (Err(e), _) => failed = failed.or(Some(e)),
                (Ok(data), "1") => stdout = data,
                (Ok(data), "2") => stderr = data,
                _ => {}
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(ExecOutput { exit_code: exit_code(&done), stdout, stderr })
    }
}

/// Collects one exec output in memory up to a limit; a write past it fails (which ends the exec) and is remembered.
struct Collector {
    data: Vec<u8>,
    limit: u64,
    exceeded: bool,
}

impl Collector {
    fn new(limit: u64) -> Self {
        Self { data: Vec::new(), limit, exceeded: false }
    }
}

impl AsyncWrite for Collector {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.data.len() as u64 + buf.len() as u64 > self.limit {
            self.exceeded = true;
            return std::task::Poll::Ready(Err(std::io::Error::other("collected exec output is over its limit")));
        }
        self.data.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn ws_missing(op: &Operation) -> Error {
    Error::Websocket { path: format!("/1.0/operations/{}", op.id), message: "a websocket is missing".into() }
}

/// The largest stdin frame sent to LXD.
const STDIN_FRAME: usize = 256 * 1024;

/// Copy `input` into the stdin websocket, then signal EOF with a close frame.
async fn pump_in<R: AsyncRead + Unpin + Send>(ws: Ws, input: Option<R>) -> Result<()> {
    let (sink, mut stream) = ws.split();
    // Drain the read half so control frames (ping, close) are processed.
    let drain = async { while let Some(Ok(_)) = stream.next().await {} };
    let (result, _) = tokio::join!(pump_in_sink(sink, input, true), drain);
    result.map(|_| ())
}

async fn pump_in_sink<R, S>(mut sink: S, input: Option<R>, close_at_eof: bool) -> Result<S>
where
    R: AsyncRead + Unpin + Send,
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let ws_err = |e: tokio_tungstenite::tungstenite::Error| Error::Websocket {
        path: "exec stdin".into(),
        message: e.to_string(),
    };
    if let Some(mut input) = input {
        let mut buf = vec![0u8; STDIN_FRAME];
        let mut eof = false;
        while !eof {
            let n = input.read(&mut buf).await.map_err(|e| Error::io("reading exec stdin", e))?;
            if n == 0 {
                break;
            }
            // Coalesce what the reader already holds into one frame: a reader that yields small pieces (a row
            // stream such as PostgreSQL's COPY, one row per message) would otherwise cost a frame and a flush per
            // piece. `read` is cancel-safe, so dropping a read that is not ready loses nothing.
            let mut filled = n;
            while filled < buf.len() {
                match input.read(&mut buf[filled..]).now_or_never() {
                    Some(Ok(0)) => {
                        eof = true;
                        break;
                    }
                    Some(Ok(more)) => filled += more,
                    Some(Err(e)) => return Err(Error::io("reading exec stdin", e)),
                    None => break,
                }
            }
            if let Err(e) = sink.send(Message::Binary(buf[..filled].to_vec())).await {
                // The command exited and LXD closed its stdin: not our error.
                if matches!(
                    e,
                    tokio_tungstenite::tungstenite::Error::ConnectionClosed
                        | tokio_tungstenite::tungstenite::Error::AlreadyClosed
                ) || matches!(&e, tokio_tungstenite::tungstenite::Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset))
                {
                    return Ok(sink);
                }
                return Err(ws_err(e));
            }
        }
    }
    if close_at_eof {
        let _ = sink.send(Message::Close(None)).await;
    }
    Ok(sink)
}

async fn pump_out<W: AsyncWrite + Unpin + Send>(ws: Ws, out: W) -> Result<()> {
    let (_sink, stream) = ws.split();
    pump_out_stream(stream, out).await
}

async fn pump_out_stream<S, W>(mut stream: S, mut out: W) -> Result<()>
where
    S: futures_util::Stream<Item = std::result::Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    W: AsyncWrite + Unpin + Send,
{
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Binary(data)) => out.write_all(&data).await.map_err(|e| Error::io("writing exec output", e))?,
            Ok(Message::Text(text)) if text.is_empty() => break,
            Ok(Message::Text(text)) => {
                out.write_all(text.as_bytes()).await.map_err(|e| Error::io("writing exec output", e))?
            }
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(
                tokio_tungstenite::tungstenite::Error::ConnectionClosed
                | tokio_tungstenite::tungstenite::Error::AlreadyClosed,
            ) => break,
            // A read that finds the socket reset comes after every frame the daemon sent (the kernel hands over
            // what is queued first, and our writes never fail here: see `transport::PeerGone`). The exit code comes from the
            // operation, not from this socket.
            Err(tokio_tungstenite::tungstenite::Error::Io(io))
                if matches!(io.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) =>
            {
                break
            }
            Err(e) => return Err(Error::Websocket { path: "exec output".into(), message: e.to_string() }),
        }
    }
    out.flush().await.map_err(|e| Error::io("flushing exec output", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_have_lxd_shape() {
        assert_eq!(control_message(&ExecControl::Signal(15)), r#"{"command":"signal","signal":15}"#);
        let resize: serde_json::Value =
            serde_json::from_str(&control_message(&ExecControl::Resize { width: 80, height: 24 })).expect("from_str");
        assert_eq!(resize["args"]["width"], "80");
        assert_eq!(resize["command"], "window-resize");
    }

    #[test]
    fn exit_code_comes_from_metadata_return() {
        let op = Operation { metadata: Some(serde_json::json!({"return": 3})), ..Default::default() };
        assert_eq!(exit_code(&op), 3);
    }
}
