//! Exec against the real daemon: outputs and exit codes, stdin, a 20 MB streamed output, environment/cwd/user,
//! commands that ignore stdin, signals, an interactive TTY with a resize, recorded mode, and a timeout that
//! kills the command instead of hanging, and many short execs at once each returning their whole output.

mod common;

use std::time::{Duration, Instant};

use common::{client, peak_rss_kib, Container, CountingSink};
use futures_util::StreamExt;
use lxd_client::{Error, ExecChunk, ExecRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn outputs_exit_code_stdin_environment() {
    let lxd = client().await;
    let c = Container::create(&lxd, "exec", true).await;

    let out = lxd
        .exec_output(&c.name, &ExecRequest::new(["sh", "-c", "echo out; echo err >&2; exit 3"]))
        .await
        .expect("exec");
    assert_eq!((out.exit_code, out.stdout_text().as_str(), out.stderr_text().as_str()), (3, "out\n", "err\n"));
    assert!(!out.success());

    let out = lxd.exec_output(&c.name, &ExecRequest::new(["cat"]).stdin_bytes(&b"hello stdin"[..])).await.expect("cat");
    assert_eq!(out.stdout, b"hello stdin");

    // 1 MiB through stdin and back through a checksum.
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let out = lxd.exec_output(&c.name, &ExecRequest::new(["wc", "-c"]).stdin_bytes(data.clone())).await.expect("wc");
    assert_eq!(out.stdout_text().trim(), data.len().to_string());

    let req = ExecRequest::new(["sh", "-c", "echo \"$GBOT_VAR\"; pwd; id -u; id -g"])
        .env("GBOT_VAR", "a value")
        .cwd("/tmp")
        .user(1001, 1001);
    let out = lxd.exec_output(&c.name, &req).await.expect("env/cwd/user");
    assert_eq!(out.stdout_text(), "a value\n/tmp\n1001\n1001\n", "stderr: {}", out.stderr_text());

    // A command that never reads its stdin, given a lot of it, does not hang.
    let started = Instant::now();
    let out = lxd
        .exec_output(&c.name, &ExecRequest::new(["true"]).timeout(Duration::from_secs(30)).stdin_bytes(data.clone()))
        .await
        .expect("true");
    assert_eq!(out.exit_code, 0);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());

    // A missing program fails the operation itself (LXD 5.0 answers "Command not found"), typed as such.
    let err = lxd.exec_output(&c.name, &ExecRequest::new(["/no/such/program"])).await.expect_err("no program");
    assert!(matches!(&err, Error::OperationFailed { message, .. } if message.contains("not found")), "{err:?}");
}

#[tokio::test]
async fn twenty_megabytes_of_output_are_streamed() {
    let lxd = client().await;
    let c = Container::create(&lxd, "exec-big", true).await;
    let before = peak_rss_kib();
    let mut sink = CountingSink::default();
    let req = ExecRequest::new(["head", "-c", "20971520", "/dev/urandom"]);
    let session = lxd.exec(&c.name, &req).await.expect("start");
    let code = session.relay(None::<tokio::io::Empty>, &mut sink, tokio::io::sink()).await.expect("exec");
    assert_eq!(code, 0);
    assert_eq!(sink.bytes, 20 * 1024 * 1024);
    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(grown_mib < 16, "peak RSS grew {grown_mib} MiB for 20 MiB of output: it was buffered");
}

#[tokio::test]
async fn signals_through_the_control_socket() {
    let lxd = client().await;
    let c = Container::create(&lxd, "exec-sig", true).await;
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done";
    let req = ExecRequest::new(["sh", "-c", script]).timeout(Duration::from_secs(60));
    let (mut reader, writer) = tokio::io::duplex(64 * 1024);
    let session = lxd.exec(&c.name, &req).await.expect("start");
    let tx = session.controller();
    let run = session.relay(None::<tokio::io::Empty>, writer, tokio::io::sink());
    let drive = async move {
        let mut seen = String::new();
        let mut buf = [0u8; 256];
        // Readiness check: the trap is installed once `ready` is printed.
        while !seen.contains("ready") {
            let n = reader.read(&mut buf).await.expect("read stdout");
            assert!(n > 0, "stdout ended before `ready`: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        tx.signal(15).await.expect("send signal");
        let mut rest = String::new();
        reader.read_to_string(&mut rest).await.expect("read rest");
        seen + &rest
    };
    let (code, output) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(run, drive) }).await.expect("no hang");
    assert_eq!(code.expect("exec"), 7, "the TERM trap ran");
    assert!(output.contains("got-term"), "{output}");
}

#[tokio::test]
async fn interactive_tty_with_resize() {
    let lxd = client().await;
    let c = Container::create(&lxd, "exec-tty", true).await;
    let req = ExecRequest::new([
        "sh",
        "-c",
        "stty size; while read line; do [ \"$line\" = quit ] && exit 5; stty size; done",
    ])
    .env("TERM", "xterm")
    .timeout(Duration::from_secs(60));
    let (mut output_reader, output_writer) = tokio::io::duplex(64 * 1024);
    let (input_reader, mut input_writer) = tokio::io::duplex(1024);
    let session = lxd.exec(&c.name, &req.terminal(80, 24)).await.expect("start");
    let tx = session.controller();
    let run = session.relay(Some(input_reader), output_writer, tokio::io::sink());
    let drive = async move {
        let mut seen = String::new();
        let mut buf = [0u8; 1024];
        read_until(&mut output_reader, &mut seen, "24 80").await;
        tx.resize(100, 30).await.expect("resize");
        // The resize travels on another socket: poke the shell until it reports the new size.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !seen.contains("30 100") {
            assert!(Instant::now() < deadline, "never saw the new size: {seen}");
            input_writer.write_all(b"again\n").await.expect("write tty");
            let n = tokio::time::timeout(Duration::from_millis(500), output_reader.read(&mut buf))
                .await
                .unwrap_or(Ok(0))
                .expect("read");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        input_writer.write_all(b"quit\n").await.expect("write tty");
        let mut rest = Vec::new();
        output_reader.read_to_end(&mut rest).await.expect("read the rest");
        seen + &String::from_utf8_lossy(&rest)
    };
    let (code, seen) =
        tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(run, drive) }).await.expect("no hang");
    assert_eq!(code.expect("interactive exec"), 5);
    assert!(seen.contains("24 80") && seen.contains("30 100"), "{seen}");
}

#[tokio::test]
async fn recorded_mode_deletes_its_logs() {
    let lxd = client().await;
    let c = Container::create(&lxd, "exec-rec", true).await;
    let out = lxd
        .exec_recorded(&c.name, &ExecRequest::new(["sh", "-c", "echo recorded; echo oops >&2; exit 2"]))
        .await
        .expect("recorded");
    assert_eq!((out.exit_code, out.stdout_text().as_str(), out.stderr_text().as_str()), (2, "recorded\n", "oops\n"));
    let logs = lxd.instance_logs(&c.name).await.expect("logs");
    assert!(!logs.iter().any(|l| l.starts_with("exec")), "exec logs left behind: {logs:?}");
}

#[tokio::test]
async fn timeout_kills_the_command_and_returns() {
    let lxd = client().await;
    let c = Container::create(&lxd, "exec-timeout", true).await;
    let started = Instant::now();
    let req = ExecRequest::new(["sleep", "300"]).timeout(Duration::from_secs(2));
    let err = lxd.exec_output(&c.name, &req).await.expect_err("times out");
    assert!(matches!(err, Error::OperationTimeout { .. }), "{err:?}");
    assert!(err.is_timeout());
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    // The command was killed, not left running.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps =
            lxd.exec_output(&c.name, &ExecRequest::new(["sh", "-c", "pgrep -x sleep || true"])).await.expect("pgrep");
        if ps.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "sleep still running: {}", ps.stdout_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let started = Instant::now();
    let err = lxd.exec_recorded(&c.name, &req).await.expect_err("recorded times out");
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

async fn read_until(reader: &mut tokio::io::DuplexStream, seen: &mut String, needle: &str) {
    let mut buf = [0u8; 1024];
    while !seen.contains(needle) {
        let n = reader.read(&mut buf).await.expect("read tty");
        assert!(n > 0, "tty closed before {needle:?}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Many short execs at once (the shape of an install's probes and a migration's queries): every one returns its
/// own complete output and exit code. An exit status that arrives with its output missing would be silent loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_short_execs_each_return_their_complete_output() {
    use futures_util::StreamExt;
    let lxd = client().await;
    let c = Container::create(&lxd, "exec-many", true).await;
    let outcomes: Vec<Result<(), String>> = futures_util::stream::iter(0..240u32)
        .map(|i| {
            let lxd = lxd.clone();
            let name = c.name.clone();
            async move {
                let expected = format!("line {i}\n");
                let out = if i % 2 == 0 {
                    let script = format!("echo 'line {i}'; echo 'err {i}' >&2; exit {}", i % 7);
                    lxd.exec_output(&name, &ExecRequest::new(["sh", "-c", script.as_str()])).await
                } else {
                    lxd.exec_output(
                        &name,
                        &ExecRequest::new([
                            "sh",
                            "-c",
                            "cat; echo \"err $0\" >&2; exit $1",
                            &i.to_string(),
                            &(i % 7).to_string(),
                        ])
                        .stdin_bytes(expected.clone()),
                    )
                    .await
                }
                .map_err(|e| format!("exec {i}: {e}"))?;
                let got = (out.exit_code, out.stdout_text(), out.stderr_text());
                let want = ((i % 7) as i32, expected, format!("err {i}\n"));
                if got == want {
                    Ok(())
                } else {
                    Err(format!("exec {i}: got {got:?}, want {want:?}"))
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let failures: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(failures.is_empty(), "{} of {} execs went wrong: {failures:#?}", failures.len(), outcomes.len());
}

/// The session's own parts: a piped stdin written by hand, the output as a stream, the exit code from `wait`; a
/// stdin writer still held after the command exited does not hold `wait` back, and an output stream dropped
/// unread does not block the command.
#[tokio::test]
async fn a_session_streams_its_parts_and_never_waits_on_what_the_caller_holds() {
    let lxd = client().await;
    let c = Container::create(&lxd, "exec-session", true).await;

    let request = ExecRequest::new(["sh", "-c", "read line; echo \"got $line\"; echo done >&2; exit 4"]).stdin_piped();
    let mut session = lxd.exec(&c.name, &request).await.expect("start");
    let mut stdin = session.stdin().expect("a piped stdin");
    let mut output = session.output_stream().expect("the output stream");
    assert!(session.output_stream().is_none(), "the stream is taken once");
    stdin.write_all(b"hello\n").await.expect("write stdin");
    // `stdin` stays held from here on: once the command has exited, that must not hold anything back.
    let started = Instant::now();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while let Some(chunk) = output.next().await {
        match chunk {
            ExecChunk::Stdout(data) => stdout.extend_from_slice(&data),
            ExecChunk::Stderr(data) => stderr.extend_from_slice(&data),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(session.wait().await.expect("wait"), 4);
    assert!(started.elapsed() < Duration::from_secs(3), "output and exit code took {:?}", started.elapsed());
    assert_eq!((stdout.as_slice(), stderr.as_slice()), (&b"got hello\n"[..], &b"done\n"[..]));
    let err = stdin.write_all(b"late\n").await.expect_err("the command's stdin is closed");
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);

    // 32 MiB of output nobody reads: dropped, so discarded, and the command runs to its end.
    let mut session =
        lxd.exec(&c.name, &ExecRequest::new(["head", "-c", "33554432", "/dev/zero"])).await.expect("start");
    drop(session.output_stream());
    let code = tokio::time::timeout(Duration::from_secs(60), session.wait()).await.expect("no hang").expect("wait");
    assert_eq!(code, 0);
}
