//! Running commands in instances: [`Client::exec`] starts a command and returns an [`ExecSession`] (stdin writer,
//! output stream, signals, terminal resizes, exit code); [`Client::exec_output`] collects the output of a short
//! command; [`Client::exec_recorded`] runs one in LXD's recorded mode, a daemon task that outlives the client.
//!
//! Websocket mode never hangs on a lost close frame: "done" means the operation finished **and** both output
//! streams reached EOF, the control socket is connected first and the data sockets concurrently right after it
//! (LXD starts the command once the data sockets are there, and gives up after 10 s), every socket is read
//! continuously so pings are answered, and a deadline bounds the whole call.
//!
//! Nothing an output socket carries is dropped: a reply of ours that meets the daemon's closed end is discarded
//! instead of ending the read (see `transport::PeerGone`), so every frame LXD sent before closing is delivered.
//!
//! The sockets are driven by a task of the session's own (spawned on the caller's runtime), so what the caller
//! does with the outputs never stops the daemon's pings from being answered; dropping an unfinished session ends
//! that task and closes the sockets, and LXD then kills the command.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, Stream, StreamExt};
use http::Method;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

use crate::client::{Client, Request};
use crate::error::{Error, Result};
use crate::instances::instance_path;
use crate::names::InstanceName;
use crate::operation::Operation;
use crate::transport::BoxedIo;

/// Default bound on one exec, from its start to its exit code.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(600);

/// How long an exec's outputs may take to reach EOF once its operation has finished.
pub const EXEC_DRAIN_GRACE: Duration = Duration::from_secs(5);

/// What a command reads on its standard input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecInput {
    /// Nothing: end of file at once.
    #[default]
    Empty,
    /// These bytes, then end of file.
    Bytes(Bytes),
    /// What the caller writes to [`ExecSession::stdin`], until it is shut down or dropped.
    Piped,
}

/// The size of an interactive exec's terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// What to run, and how: argv, environment, working directory, user, standard input, terminal, deadline.
///
/// ```
/// use std::time::Duration;
/// use lxd_client::ExecRequest;
/// let request = ExecRequest::new(["psql", "-f", "-"])
///     .env("PGDATABASE", "botserver")
///     .user(999, 999)
///     .stdin_bytes("SELECT 1;")
///     .timeout(Duration::from_secs(60));
/// assert_eq!(request.command[0], "psql");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExecRequest {
    /// argv. Never put a secret here: LXD publishes exec command lines in its event stream.
    pub command: Vec<String>,
    /// Extra environment (never a secret either: it is part of the request).
    pub environment: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// uid to run as.
    pub user: Option<u32>,
    /// gid to run as.
    pub group: Option<u32>,
    /// Standard input.
    pub stdin: ExecInput,
    /// Run on a pseudo-terminal of this size (interactive): stdin feeds the terminal, stdout carries what it
    /// prints, there is no separate stderr.
    pub terminal: Option<TerminalSize>,
    /// Whole-exec deadline: past it the command is killed and [`Error::OperationTimeout`] returned.
    pub timeout: Duration,
}

impl ExecRequest {
    /// Run `command` (argv) as root, empty stdin, no terminal, [`DEFAULT_EXEC_TIMEOUT`].
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
            stdin: ExecInput::Empty,
            terminal: None,
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

    /// The command reads `data`, then end of file.
    pub fn stdin_bytes(mut self, data: impl Into<Bytes>) -> Self {
        self.stdin = ExecInput::Bytes(data.into());
        self
    }

    /// The command reads what is written to [`ExecSession::stdin`] (or given to [`ExecSession::relay`]).
    pub fn stdin_piped(mut self) -> Self {
        self.stdin = ExecInput::Piped;
        self
    }

    /// Run on a pseudo-terminal of `width` columns and `height` rows; stdin is then piped.
    pub fn terminal(mut self, width: u16, height: u16) -> Self {
        self.terminal = Some(TerminalSize { width, height });
        self.stdin = ExecInput::Piped;
        self
    }

    /// Bound the whole exec.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn argv0(&self) -> &str {
        self.command.first().map(String::as_str).unwrap_or("")
    }
}

/// Collected result of [`Client::exec_output`], [`ExecSession::output`] and [`Client::exec_recorded`].
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

/// One piece of a running command's output, in the order the daemon sent it on its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecChunk {
    /// Written to stdout (or, on a terminal, printed by it).
    Stdout(Bytes),
    /// Written to stderr.
    Stderr(Bytes),
}

/// The output of a running command, as it arrives ([`ExecSession::output_stream`]). It ends when both outputs
/// reached end of file (or the session ended); whether the command succeeded is [`ExecSession::wait`]'s answer.
/// Dropping it discards the rest of the output (the command is not blocked).
#[derive(Debug)]
pub struct ExecOutputStream {
    chunks: mpsc::Receiver<ExecChunk>,
}

impl Stream for ExecOutputStream {
    type Item = ExecChunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ExecChunk>> {
        self.chunks.poll_recv(cx)
    }
}

/// The standard input of a running command ([`ExecSession::stdin`]). Each write is queued for the daemon (at most
/// 256 KiB per write; small writes queued together travel as one frame); `shutdown` or dropping it is end of
/// file. Writes after the command closed its stdin fail with `BrokenPipe`.
#[derive(Debug)]
pub struct ExecStdin {
    sender: tokio_util::sync::PollSender<Bytes>,
}

impl ExecStdin {
    /// Queue `data` whole (no copy).
    async fn send(&mut self, data: Bytes) -> std::io::Result<()> {
        let sender = self.sender.get_ref().ok_or_else(broken_pipe)?;
        sender.send(data).await.map_err(|_| broken_pipe())
    }
}

fn broken_pipe() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the command's stdin is closed")
}

impl AsyncWrite for ExecStdin {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self.sender.poll_reserve(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(broken_pipe())),
            Poll::Ready(Ok(())) => {
                let n = buf.len().min(STDIN_FRAME);
                match self.sender.send_item(Bytes::copy_from_slice(&buf[..n])) {
                    Ok(()) => Poll::Ready(Ok(n)),
                    Err(_) => Poll::Ready(Err(broken_pipe())),
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // Every write is already queued for the session's task, which sends it as soon as it can.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.sender.close();
        Poll::Ready(Ok(()))
    }
}

/// Signals and terminal resizes for a running command, usable from any task ([`ExecSession::controller`]).
#[derive(Debug, Clone)]
pub struct ExecController {
    commands: mpsc::Sender<DriverCommand>,
    operation: String,
}

#[derive(Debug)]
enum DriverCommand {
    Control(ExecControl, oneshot::Sender<Result<()>>),
    Kill(oneshot::Sender<()>),
}

impl ExecController {
    /// Send `signal` (e.g. 15 for SIGTERM) to the command.
    pub async fn signal(&self, signal: i32) -> Result<()> {
        self.control(ExecControl::Signal(signal)).await
    }

    /// Resize the terminal of an interactive command to `width` columns and `height` rows.
    pub async fn resize(&self, width: u16, height: u16) -> Result<()> {
        self.control(ExecControl::Resize { width, height }).await
    }

    async fn control(&self, message: ExecControl) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(DriverCommand::Control(message, reply)).await.map_err(|_| self.ended())?;
        answer.await.map_err(|_| self.ended())?
    }

    /// SIGKILL through the control socket, then the session's task ends.
    async fn kill(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(DriverCommand::Kill(reply)).await.is_ok() {
            let _ = done.await;
        }
    }

    fn ended(&self) -> Error {
        Error::Websocket {
            path: format!("/1.0/operations/{}/websocket", self.operation),
            message: "the command has ended: its control socket is closed".into(),
        }
    }
}

/// A running command ([`Client::exec`]): its stdin, its output, signals and resizes, and its exit code.
///
/// Take the parts you need ([`ExecSession::stdin`], [`ExecSession::output_stream`], [`ExecSession::controller`]),
/// then [`ExecSession::wait`] for the exit code; or let [`ExecSession::output`] collect the output or
/// [`ExecSession::relay`] copy it into writers. Read the output stream you took while (or before) waiting, or drop
/// it: a full stream holds the command back. Dropping the session before its end closes the sockets and LXD kills
/// the command.
///
/// ```no_run
/// # async fn demo(lxd: &lxd_client::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use futures_util::StreamExt;
/// use lxd_client::{ExecChunk, ExecRequest, InstanceName};
/// use tokio::io::AsyncWriteExt;
/// let name = InstanceName::new("default-tables")?;
/// let mut session = lxd.exec(&name, &ExecRequest::new(["wc", "-l"]).stdin_piped()).await?;
/// let mut stdin = session.stdin().ok_or("stdin is piped")?;
/// let mut output = session.output_stream().ok_or("not taken yet")?;
/// stdin.write_all(b"one\ntwo\n").await?;
/// drop(stdin); // end of file
/// while let Some(chunk) = output.next().await {
///     if let ExecChunk::Stdout(data) = chunk {
///         print!("{}", String::from_utf8_lossy(&data));
///     }
/// }
/// let exit_code = session.wait().await?;
/// # let _ = exit_code; Ok(()) }
/// ```
#[derive(Debug)]
pub struct ExecSession {
    operation: String,
    /// `stdout of `argv0` in instance`-style names for errors.
    what: String,
    stdin: Option<ExecStdin>,
    output: Option<ExecOutputStream>,
    controller: ExecController,
    driver: Option<tokio::task::JoinHandle<Result<i32>>>,
    collected_limit: u64,
}

impl ExecSession {
    /// The id of the exec's LXD operation.
    pub fn operation_id(&self) -> &str {
        &self.operation
    }

    /// The command's stdin, when the request asked for it ([`ExecRequest::stdin_piped`] or a terminal); `None`
    /// otherwise or once taken.
    pub fn stdin(&mut self) -> Option<ExecStdin> {
        self.stdin.take()
    }

    /// The command's output as it arrives; `None` once taken.
    pub fn output_stream(&mut self) -> Option<ExecOutputStream> {
        self.output.take()
    }

    /// A handle that signals the command or resizes its terminal from another task.
    pub fn controller(&self) -> ExecController {
        self.controller.clone()
    }

    /// Send `signal` (e.g. 15 for SIGTERM) to the command.
    pub async fn signal(&self, signal: i32) -> Result<()> {
        self.controller.signal(signal).await
    }

    /// Resize the terminal of an interactive command.
    pub async fn resize(&self, width: u16, height: u16) -> Result<()> {
        self.controller.resize(width, height).await
    }

    /// Kill the command (SIGKILL) and end the session.
    pub async fn kill(mut self) -> Result<()> {
        self.controller.kill().await;
        if let Some(driver) = self.driver.take() {
            let _ = driver.await;
        }
        Ok(())
    }

    /// Wait for the command to end and return its exit code (a non-zero code is data, not an error). A stdin still
    /// held by the session is closed first and an output stream still held is discarded.
    ///
    /// The exec ends when its operation has finished and both outputs reached EOF (outputs get
    /// [`EXEC_DRAIN_GRACE`] after the operation to finish, so a lost close frame cannot hang it). When the request's
    /// timeout passes first, the command is killed (SIGKILL through the control socket) and
    /// [`Error::OperationTimeout`] is returned.
    pub async fn wait(mut self) -> Result<i32> {
        drop(self.stdin.take());
        drop(self.output.take());
        let driver = self.driver.take().ok_or_else(|| self.controller.ended())?;
        match driver.await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(self.controller.ended()),
        }
    }

    /// Collect stdout and stderr and wait for the exit code. Each output is collected up to
    /// [`crate::ReadLimits::collected`]: past it the command is killed and [`Error::TooLarge`] returned (stream
    /// output of any size with [`ExecSession::output_stream`] or [`ExecSession::relay`]).
    pub async fn output(mut self) -> Result<ExecOutput> {
        drop(self.stdin.take());
        let mut chunks = self.output.take().ok_or_else(|| self.taken("collect the output"))?;
        let limit = self.collected_limit;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(chunk) = chunks.next().await {
            let (buffer, stream, data) = match chunk {
                ExecChunk::Stdout(data) => (&mut stdout, "stdout", data),
                ExecChunk::Stderr(data) => (&mut stderr, "stderr", data),
            };
            if buffer.len() as u64 + data.len() as u64 > limit {
                // Nobody reads the output any more: kill the command rather than leave it blocked on a full pipe.
                self.controller.kill().await;
                return Err(Error::TooLarge {
                    what: format!("{stream} of {}", self.what),
                    limit_name: "collected",
                    limit,
                });
            }
            buffer.extend_from_slice(&data);
        }
        let exit_code = self.wait().await?;
        Ok(ExecOutput { exit_code, stdout, stderr })
    }

    /// Copy `stdin` (when given) into the command and its stdout and stderr into the writers as they arrive, then
    /// wait for the exit code. Streams of any size pass with bounded memory. Giving `stdin` needs a piped stdin
    /// ([`ExecRequest::stdin_piped`] or a terminal); once the output has ended the rest of `stdin` is not waited for
    /// (an interactive user never sends end of file). A writer or reader that fails kills the command.
    pub async fn relay<R, O, E>(mut self, stdin: Option<R>, mut stdout: O, mut stderr: E) -> Result<i32>
    where
        R: AsyncRead + Unpin + Send,
        O: AsyncWrite + Unpin + Send,
        E: AsyncWrite + Unpin + Send,
    {
        let input = self.stdin.take();
        if stdin.is_some() && input.is_none() {
            return Err(Error::InvalidRequest {
                what: format!("relaying stdin to {}", self.what),
                reason: "the request has no piped stdin (ExecRequest::stdin_piped), or it was taken".into(),
            });
        }
        let mut chunks = self.output.take().ok_or_else(|| self.taken("relay the output"))?;
        let controller = self.controller.clone();
        let failure = {
            let feed = async {
                match (stdin, input) {
                    (Some(reader), Some(writer)) => copy_stdin(reader, writer).await,
                    _ => Ok(()),
                }
            };
            let drain = async {
                while let Some(chunk) = chunks.next().await {
                    match chunk {
                        ExecChunk::Stdout(data) => stdout.write_all(&data).await,
                        ExecChunk::Stderr(data) => stderr.write_all(&data).await,
                    }
                    .map_err(|e| Error::io("writing exec output", e))?;
                }
                stdout.flush().await.map_err(|e| Error::io("flushing exec output", e))?;
                stderr.flush().await.map_err(|e| Error::io("flushing exec output", e))?;
                Ok::<(), Error>(())
            };
            tokio::pin!(feed, drain);
            let mut feeding = true;
            loop {
                tokio::select! {
                    result = &mut feed, if feeding => match result {
                        Ok(()) => feeding = false,
                        Err(e) => break Some(e),
                    },
                    result = &mut drain => break result.err(),
                }
            }
        };
        if let Some(e) = failure {
            controller.kill().await;
            return Err(e);
        }
        self.wait().await
    }

    fn taken(&self, doing: &str) -> Error {
        Error::InvalidRequest {
            what: format!("the exec of {}", self.what),
            reason: format!("cannot {doing}: the output stream was taken (ExecSession::output_stream)"),
        }
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        if let Some(driver) = self.driver.take() {
            // Closing the sockets without a close frame: LXD kills the command.
            driver.abort();
        }
    }
}

/// Copy a reader into a command's stdin, then end of file. What the reader already holds goes as one frame: a
/// reader that yields small pieces (a row stream such as PostgreSQL's COPY, one row per message) would otherwise
/// cost a frame per piece. A command that closed its stdin is not an error.
async fn copy_stdin<R: AsyncRead + Unpin>(mut reader: R, mut writer: ExecStdin) -> Result<()> {
    let mut buf = vec![0u8; STDIN_FRAME];
    loop {
        let n = reader.read(&mut buf).await.map_err(|e| Error::io("reading exec stdin", e))?;
        if n == 0 {
            break;
        }
        let mut filled = n;
        let mut eof = false;
        while filled < buf.len() {
            // `read` is cancel-safe, so dropping a read that is not ready loses nothing.
            match reader.read(&mut buf[filled..]).now_or_never() {
                Some(Ok(0)) => {
                    eof = true;
                    break;
                }
                Some(Ok(more)) => filled += more,
                Some(Err(e)) => return Err(Error::io("reading exec stdin", e)),
                None => break,
            }
        }
        if writer.send(Bytes::copy_from_slice(&buf[..filled])).await.is_err() {
            return Ok(());
        }
        if eof {
            break;
        }
    }
    let _ = writer.shutdown().await;
    Ok(())
}

/// A message for a running exec's control socket.
#[derive(Debug, Clone)]
enum ExecControl {
    Signal(i32),
    Resize { width: u16, height: u16 },
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

/// How many output chunks wait for the caller before the session's task stops reading (and the command blocks).
const OUTPUT_QUEUE: usize = 16;

/// How many stdin writes wait for the session's task.
const STDIN_QUEUE: usize = 4;

/// The largest stdin frame sent to LXD.
const STDIN_FRAME: usize = 256 * 1024;

impl Client {
    async fn start_exec(&self, name: &InstanceName, req: &ExecRequest, record: bool) -> Result<Operation> {
        if req.command.is_empty() {
            return Err(Error::EmptyCommand { instance: name.to_string() });
        }
        let body = ExecBody {
            command: &req.command,
            environment: &req.environment,
            wait_for_websocket: !record,
            record_output: record,
            interactive: req.terminal.is_some(),
            width: req.terminal.map(|t| t.width),
            height: req.terminal.map(|t| t.height),
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

    /// Start a command and return its [`ExecSession`]: stdin as the request says ([`ExecRequest::stdin_bytes`],
    /// [`ExecRequest::stdin_piped`], empty by default), the output as a stream, signals and resizes, and the exit
    /// code from [`ExecSession::wait`]. With [`ExecRequest::terminal`] the command runs on a pseudo-terminal.
    ///
    /// An empty command is refused ([`Error::EmptyCommand`]) before any request. A missing program fails the
    /// operation ([`Error::OperationFailed`], "Command not found").
    ///
    /// ```no_run
    /// # async fn demo(lxd: &lxd_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use lxd_client::{ExecRequest, InstanceName};
    /// let name = InstanceName::new("default-tables")?;
    /// // A dump of any size, streamed to a file while it runs.
    /// let request = ExecRequest::new(["pg_dumpall"]).user(999, 999);
    /// let dump = tokio::fs::File::create("/var/backups/all.sql").await?;
    /// let session = lxd.exec(&name, &request).await?;
    /// let exit_code = session.relay(None::<tokio::io::Empty>, dump, tokio::io::stderr()).await?;
    /// # let _ = exit_code; Ok(()) }
    /// ```
    pub async fn exec(&self, name: &InstanceName, req: &ExecRequest) -> Result<ExecSession> {
        let what = format!("`{}` in {name}", req.argv0());
        let span = tracing::debug_span!("exec", instance = %name, argv0 = %req.argv0());
        let op = self.start_exec(name, req, false).instrument(span.clone()).await?;
        let (keys, outputs): (&[&str], &[&str]) = if req.terminal.is_some() {
            // The terminal socket carries both ways; its input side needs no failure either: once the daemon has
            // gone, the command has ended and its output is what ends the exec.
            (&["0", "control"], &["0"])
        } else {
            (&["0", "1", "2", "control"], &["1", "2"])
        };
        let sockets = self.operation_sockets(&op, keys, outputs).instrument(span.clone()).await?;
        let (stdin, source) = match &req.stdin {
            ExecInput::Empty => (None, StdinSource::Empty),
            ExecInput::Bytes(data) => (None, StdinSource::Bytes(data.clone())),
            ExecInput::Piped => {
                let (sender, receiver) = mpsc::channel(STDIN_QUEUE);
                (Some(ExecStdin { sender: tokio_util::sync::PollSender::new(sender) }), StdinSource::Channel(receiver))
            }
        };
        let (chunk_sender, chunks) = mpsc::channel(OUTPUT_QUEUE);
        let (command_sender, commands) = mpsc::channel(4);
        let driver = Driver {
            client: self.clone(),
            op,
            timeout: req.timeout,
            interactive: req.terminal.is_some(),
            sockets,
            stdin: source,
            output: chunk_sender,
            commands,
        };
        let operation = driver.op.id.clone();
        let driver = tokio::spawn(driver.run().instrument(span));
        Ok(ExecSession {
            controller: ExecController { commands: command_sender, operation: operation.clone() },
            operation,
            what,
            stdin,
            output: Some(ExecOutputStream { chunks }),
            driver: Some(driver),
            collected_limit: self.collected_limit(),
        })
    }

    /// Run a command and collect its output: [`Client::exec`] then [`ExecSession::output`]. A non-zero exit is
    /// returned, not raised. Each of stdout and stderr is collected up to [`crate::ReadLimits::collected`]: past it
    /// the command is killed and [`Error::TooLarge`] returned.
    ///
    /// ```no_run
    /// # async fn demo(lxd: &lxd_client::Client) -> lxd_client::Result<()> {
    /// use lxd_client::{ExecRequest, InstanceName};
    /// let name = InstanceName::new("default-tables")?;
    /// let out = lxd.exec_output(&name, &ExecRequest::new(["pg_isready"])).await?;
    /// println!("exit {}: {}", out.exit_code, out.stdout_text());
    /// let sql = lxd.exec_output(&name, &ExecRequest::new(["psql", "-At", "-f", "-"]).stdin_bytes("SELECT 1")).await?;
    /// assert_eq!(sql.stdout_text().trim(), "1");
    /// # Ok(()) }
    /// ```
    pub async fn exec_output(&self, name: &InstanceName, req: &ExecRequest) -> Result<ExecOutput> {
        self.exec(name, req).await?.output().await
    }

    /// Run a command in LXD's recorded mode: the daemon runs it as a task of its own (it goes on if this client
    /// dies, and a later client can wait for its operation) and writes stdout and stderr to log files, which are
    /// downloaded (each at most [`crate::ReadLimits::collected`]) and deleted. No stdin, no terminal, no output
    /// before the end; each call leaves `instance-log-*` lifecycle events.
    ///
    /// A separate call rather than an option of [`Client::exec`]: nothing of a session (stdin, output stream,
    /// signals) exists in this mode, so it returns only what it can give.
    pub async fn exec_recorded(&self, name: &InstanceName, req: &ExecRequest) -> Result<ExecOutput> {
        let refuse = |reason: &str| Error::InvalidRequest {
            what: format!("recorded exec of `{}` in {name}", req.argv0()),
            reason: reason.to_string(),
        };
        if req.stdin != ExecInput::Empty {
            return Err(refuse("recorded mode has no stdin: use Client::exec"));
        }
        if req.terminal.is_some() {
            return Err(refuse("recorded mode has no terminal: use Client::exec"));
        }
        let op = self.start_exec(name, req, true).await?;
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
        let argv0 = req.argv0();
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

/// Where the session's task takes the command's stdin from.
enum StdinSource {
    Empty,
    Bytes(Bytes),
    Channel(mpsc::Receiver<Bytes>),
}

/// The session's task: owns the sockets, feeds stdin, forwards output, control messages and the deadline, and
/// answers with the exit code.
struct Driver {
    client: Client,
    op: Operation,
    timeout: Duration,
    interactive: bool,
    sockets: Vec<Ws>,
    stdin: StdinSource,
    output: mpsc::Sender<ExecChunk>,
    commands: mpsc::Receiver<DriverCommand>,
}

impl Driver {
    async fn run(self) -> Result<i32> {
        let Driver { client, op, timeout, interactive, mut sockets, stdin, output, commands } = self;
        let control = sockets.pop().ok_or_else(|| ws_missing(&op))?;
        if interactive {
            let tty = sockets.pop().ok_or_else(|| ws_missing(&op))?;
            let (tty_sink, tty_stream) = tty.split();
            // The terminal's output ends the I/O; input may stay open (an interactive user never sends EOF).
            let io = async {
                let writer = feed_socket(tty_sink, stdin, false);
                let reader = pump_out_stream(tty_stream, ExecChunk::Stdout, output);
                tokio::pin!(writer, reader);
                let mut writer_done = false;
                loop {
                    tokio::select! {
                        result = &mut writer, if !writer_done => { writer_done = true; let _sink = result?; }
                        result = &mut reader => return result,
                    }
                }
            };
            let finished = client.supervise(&op, timeout, control, commands, io).await?;
            return Ok(exit_code(&finished));
        }
        let err_ws = sockets.pop().ok_or_else(|| ws_missing(&op))?;
        let out_ws = sockets.pop().ok_or_else(|| ws_missing(&op))?;
        let in_ws = sockets.pop().ok_or_else(|| ws_missing(&op))?;
        // Only the pumps hold the output's senders: the stream ends when both outputs have.
        let (stdout_sender, stderr_sender) = (output.clone(), output);
        let io = async {
            let ((input, out), errors) = tokio::join!(
                async { tokio::join!(pump_in(in_ws, stdin), pump_out(out_ws, ExecChunk::Stdout, stdout_sender)) },
                pump_out(err_ws, ExecChunk::Stderr, stderr_sender)
            );
            out.and(errors).and(input)
        };
        let finished = client.supervise(&op, timeout, control, commands, io).await?;
        Ok(exit_code(&finished))
    }
}

impl Client {
    /// Drive an exec to its end: forward control messages, wait for the operation and the output pumps, kill the
    /// command at the deadline.
    async fn supervise<F>(
        &self,
        op: &Operation,
        timeout: Duration,
        control: Ws,
        commands: mpsc::Receiver<DriverCommand>,
        io: F,
    ) -> Result<Operation>
    where
        F: std::future::Future<Output = Result<()>>,
    {
        let control_path = format!("/1.0/operations/{}/websocket", op.id);
        let (mut control_sink, mut control_stream) = control.split();
        let mut commands = Some(commands);
        let wait = self.wait_operation(&op.id, timeout);
        tokio::pin!(io, wait);
        let mut io_result: Option<Result<()>> = None;
        let mut finished: Option<Result<Operation>> = None;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let mut control_open = true;
        let kill = Message::Text(control_message(&ExecControl::Signal(9)));
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
                        // The outputs cannot be read any more: kill the command rather than leave it blocked on a
                        // full pipe until the deadline.
                        let _ = control_sink.send(kill.clone()).await;
                        let _ = control_sink.close().await;
                        return Err(e);
                    }
                    other => io_result = Some(other),
                },
                result = &mut wait, if finished.is_none() => {
                    if matches!(result, Err(Error::OperationTimeout { .. })) {
                        // Kill the command so nothing keeps running behind our back, then give up.
                        let _ = control_sink.send(kill.clone()).await;
                        let _ = control_sink.close().await;
                        return Err(Error::OperationTimeout { id: op.id.clone(), after: timeout });
                    }
                    finished = Some(result);
                    drain_deadline = Some(tokio::time::Instant::now() + EXEC_DRAIN_GRACE);
                }
                command = async {
                    match commands.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match command {
                    Some(DriverCommand::Control(message, reply)) => {
                        let sent = control_sink
                            .send(Message::Text(control_message(&message)))
                            .await
                            .map_err(|e| Error::Websocket { path: control_path.clone(), message: e.to_string() });
                        let _ = reply.send(sent);
                    }
                    Some(DriverCommand::Kill(done)) => {
                        let _ = control_sink.send(kill.clone()).await;
                        let _ = control_sink.close().await;
                        let _ = done.send(());
                        return Err(Error::Websocket {
                            path: control_path,
                            message: "the command was killed (SIGKILL)".into(),
                        });
                    }
                    None => commands = None,
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
}

fn ws_missing(op: &Operation) -> Error {
    Error::Websocket { path: format!("/1.0/operations/{}", op.id), message: "a websocket is missing".into() }
}

/// Feed the stdin websocket, then signal EOF with a close frame. The read half is drained all along so control
/// frames (ping, close) are processed; when the daemon closes the socket (the command has exited), feeding stops
/// even if the caller still holds its stdin writer, whose next write then fails with `BrokenPipe`.
async fn pump_in(ws: Ws, source: StdinSource) -> Result<()> {
    let (sink, mut stream) = ws.split();
    let drain = async { while let Some(Ok(_)) = stream.next().await {} };
    let feed = feed_socket(sink, source, true);
    tokio::pin!(drain, feed);
    tokio::select! {
        result = &mut feed => {
            // The write half stays until the daemon has answered our close.
            let _sink = result?;
            drain.await;
            Ok(())
        }
        () = &mut drain => Ok(()),
    }
}

/// Send stdin into `sink`: what is queued travels together, up to [`STDIN_FRAME`] per frame. A sink the daemon
/// closed (the command exited and LXD closed its stdin) ends the feed without an error; later writes of the caller
/// then fail with `BrokenPipe`.
async fn feed_socket<S>(mut sink: S, source: StdinSource, close_at_eof: bool) -> Result<S>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let closed = |e: &tokio_tungstenite::tungstenite::Error| {
        matches!(
            e,
            tokio_tungstenite::tungstenite::Error::ConnectionClosed
                | tokio_tungstenite::tungstenite::Error::AlreadyClosed
        ) || matches!(e, tokio_tungstenite::tungstenite::Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset))
    };
    let ws_err = |e: tokio_tungstenite::tungstenite::Error| Error::Websocket {
        path: "exec stdin".into(),
        message: e.to_string(),
    };
    match source {
        StdinSource::Empty => {}
        StdinSource::Bytes(data) => {
            for frame in data.chunks(STDIN_FRAME) {
                if let Err(e) = sink.send(Message::Binary(frame.to_vec())).await {
                    return if closed(&e) { Ok(sink) } else { Err(ws_err(e)) };
                }
            }
        }
        StdinSource::Channel(mut queue) => {
            let mut carried: Option<Bytes> = None;
            loop {
                let first = match carried.take() {
                    Some(first) => first,
                    None => match queue.recv().await {
                        Some(first) => first,
                        None => break,
                    },
                };
                let mut frame = first.to_vec();
                while frame.len() < STDIN_FRAME {
                    match queue.try_recv() {
                        Ok(more) if frame.len() + more.len() <= STDIN_FRAME => frame.extend_from_slice(&more),
                        Ok(more) => {
                            carried = Some(more);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if let Err(e) = sink.send(Message::Binary(frame)).await {
                    return if closed(&e) { Ok(sink) } else { Err(ws_err(e)) };
                }
            }
        }
    }
    if close_at_eof {
        let _ = sink.send(Message::Close(None)).await;
    }
    Ok(sink)
}

async fn pump_out(ws: Ws, tag: fn(Bytes) -> ExecChunk, output: mpsc::Sender<ExecChunk>) -> Result<()> {
    let (_sink, stream) = ws.split();
    pump_out_stream(stream, tag, output).await
}

/// Read an output socket to its end, forwarding each frame; once the caller has dropped the output stream, what
/// comes is read and discarded (so the command never blocks on it).
async fn pump_out_stream<S>(mut stream: S, tag: fn(Bytes) -> ExecChunk, output: mpsc::Sender<ExecChunk>) -> Result<()>
where
    S: futures_util::Stream<Item = std::result::Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut output = Some(output);
    while let Some(message) = stream.next().await {
        let data = match message {
            Ok(Message::Binary(data)) => Bytes::from(data),
            Ok(Message::Text(text)) if text.is_empty() => break,
            Ok(Message::Text(text)) => Bytes::from(text.into_bytes()),
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(
                tokio_tungstenite::tungstenite::Error::ConnectionClosed
                | tokio_tungstenite::tungstenite::Error::AlreadyClosed,
            ) => break,
            // A read that finds the socket reset comes after every frame the daemon sent (the kernel hands over
            // what is queued first, and our writes never fail here: see `transport::PeerGone`). The exit code comes
            // from the operation, not from this socket.
            Err(tokio_tungstenite::tungstenite::Error::Io(io))
                if matches!(io.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset) =>
            {
                break
            }
            Err(e) => return Err(Error::Websocket { path: "exec output".into(), message: e.to_string() }),
        };
        if let Some(sender) = &output {
            if data.is_empty() {
                continue;
            }
            if sender.send(tag(data)).await.is_err() {
                output = None;
            }
        }
    }
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

    #[test]
    fn a_terminal_pipes_stdin() {
        let request = ExecRequest::new(["sh"]).terminal(80, 24);
        assert_eq!(request.terminal, Some(TerminalSize { width: 80, height: 24 }));
        assert_eq!(request.stdin, ExecInput::Piped);
        assert_eq!(ExecRequest::new(["true"]).stdin, ExecInput::Empty);
    }

    #[tokio::test]
    async fn queued_stdin_writes_travel_together_and_end_with_a_close() {
        let (sender, queue) = mpsc::channel(STDIN_QUEUE);
        for piece in [&b"one "[..], b"two ", b"three"] {
            sender.send(Bytes::copy_from_slice(piece)).await.expect("queued");
        }
        drop(sender);
        let sink = Vec::<Message>::new().sink_map_err(
            |never: std::convert::Infallible| -> tokio_tungstenite::tungstenite::Error { match never {} },
        );
        let sent = feed_socket(sink, StdinSource::Channel(queue), true).await.expect("fed").into_inner();
        assert_eq!(sent, vec![Message::Binary(b"one two three".to_vec()), Message::Close(None)]);
    }
}
