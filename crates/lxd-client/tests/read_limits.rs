//! Bounded reads against the real daemon: what a container (or a remote) sends is only read into memory up to a
//! limit, and going past it is an error naming the limit and what was being read, never an unbounded allocation.
//! The defaults: 64 MiB for each collected exec output and each file read whole, 32 MiB for each answer body;
//! streaming calls are not limited.

mod common;

use std::time::{Duration, Instant};

use common::{client, Container, CountingSink};
use lxd_client::{ExecRequest, ReadLimits};

const DEFAULT_COLLECTED: u64 = 64 * 1024 * 1024;

#[tokio::test]
async fn collected_exec_output_over_the_default_limit_is_an_error() {
    let lxd = client().await;
    let c = Container::create(&lxd, "limit-exec", true).await;
    let over = (DEFAULT_COLLECTED + 1).to_string();
    let result = lxd.exec_output(&c.name, &ExecRequest::new(["head", "-c", over.as_str(), "/dev/zero"])).await;
    let err = result.map(|out| format!("Ok with {} bytes of stdout", out.stdout.len())).expect_err("over the limit");
    let message = err.to_string();
    assert!(message.contains("64 MiB") && message.contains("stdout") && message.contains(c.name.as_str()), "{message}");

    // Exactly at the limit is fine, and the streaming call is not limited at all.
    let at = DEFAULT_COLLECTED.to_string();
    let out =
        lxd.exec_output(&c.name, &ExecRequest::new(["head", "-c", at.as_str(), "/dev/zero"])).await.expect("at limit");
    assert_eq!(out.stdout.len() as u64, DEFAULT_COLLECTED);
    let mut sink = CountingSink::default();
    let mut stderr = Vec::new();
    let code = lxd
        .exec(&c.name, &ExecRequest::new(["head", "-c", over.as_str(), "/dev/zero"]))
        .await
        .expect("started")
        .relay(None::<&[u8]>, &mut sink, &mut stderr)
        .await
        .expect("streamed");
    assert_eq!((code, sink.bytes), (0, DEFAULT_COLLECTED + 1));
}

#[tokio::test]
async fn a_file_read_whole_over_the_default_limit_is_an_error() {
    let lxd = client().await;
    let c = Container::create(&lxd, "limit-file", true).await;
    let over = (DEFAULT_COLLECTED + 1).to_string();
    let made = lxd
        .exec_output(&c.name, &ExecRequest::new(["truncate", "-s", over.as_str(), "/root/big"]))
        .await
        .expect("truncate");
    assert!(made.success(), "{}", made.stderr_text());
    let result = lxd.read_file(&c.name, "/root/big").await;
    let err = result.map(|data| format!("Ok with {} bytes", data.len())).expect_err("over the limit");
    let message = err.to_string();
    assert!(message.contains("64 MiB") && message.contains("/root/big"), "{message}");
    // Streaming it out is not limited.
    let mut sink = CountingSink::default();
    assert_eq!(lxd.pull_to(&c.name, "/root/big", &mut sink).await.expect("pull_to"), DEFAULT_COLLECTED + 1);
}

/// Every bounded read with limits lowered so a test reaches them cheaply: each names the limit and what was read,
/// a command writing without end is killed at the limit, and reads under the limits still work.
#[tokio::test]
async fn lowered_limits_bound_every_read_and_name_it() {
    let lxd = client().await;
    let c = Container::create(&lxd, "limit-low", true).await;
    const MIB: u64 = 1024 * 1024;
    let low = lxd.with_read_limits(ReadLimits { collected: MIB, ..ReadLimits::default() });

    // A command that never stops writing: stopped at the limit, not at its deadline, and killed.
    let started = Instant::now();
    let err = low.exec_output(&c.name, &ExecRequest::new(["yes"])).await.expect_err("endless output");
    assert!(err.is_too_large(), "{err:?}");
    assert!(err.to_string().contains("stdout of `yes`") && err.to_string().contains("1 MiB"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = lxd.exec_output(&c.name, &ExecRequest::new(["pgrep", "-x", "yes"])).await.expect("pgrep");
        if left.exit_code == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "`yes` still running: {}", left.stdout_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // stderr is bounded the same way, with stdin given too.
    let script = "cat >/dev/null; head -c 1048577 /dev/zero >&2";
    let err = low
        .exec_output(&c.name, &ExecRequest::new(["sh", "-c", script]).stdin_bytes(&b"in"[..]))
        .await
        .expect_err("stderr");
    assert!(err.to_string().contains("stderr of `sh`"), "{err}");
    // Exactly the limit on both is fine.
    let script = "head -c 1048576 /dev/zero; head -c 1048576 /dev/zero >&2";
    let out = low.exec_output(&c.name, &ExecRequest::new(["sh", "-c", script])).await.expect("at the limit");
    assert_eq!((out.stdout.len() as u64, out.stderr.len() as u64), (MIB, MIB));

    // Recorded mode: the log over the limit is an error, and deleted all the same.
    let err = low
        .exec_recorded(&c.name, &ExecRequest::new(["head", "-c", "1048577", "/dev/zero"]))
        .await
        .expect_err("recorded output over the limit");
    assert!(err.to_string().contains("recorded output 1 of `head`"), "{err}");
    let logs = lxd.instance_logs(&c.name).await.expect("logs");
    assert!(!logs.iter().any(|l| l.starts_with("exec")), "exec logs left behind: {logs:?}");

    // A file read whole: one byte over is an error, the limit itself is fine.
    for (path, size) in [("/root/over", MIB + 1), ("/root/at", MIB)] {
        let made = lxd
            .exec_output(&c.name, &ExecRequest::new(["truncate", "-s", &size.to_string(), path]))
            .await
            .expect("truncate");
        assert!(made.success(), "{}", made.stderr_text());
    }
    let err = low.read_file(&c.name, "/root/over").await.expect_err("file over the limit");
    assert!(err.is_too_large() && err.to_string().contains("file /root/over in"), "{err}");
    assert_eq!(low.read_file(&c.name, "/root/at").await.expect("at the limit").len() as u64, MIB);

    // An instance log read whole.
    let tiny = lxd.with_read_limits(ReadLimits { collected: 16, ..ReadLimits::default() });
    let err = tiny.instance_log(&c.name, "lxc.conf").await.expect_err("lxc.conf is longer than 16 bytes");
    assert!(err.to_string().contains("log lxc.conf of") && err.to_string().contains("16 bytes"), "{err}");

    // JSON answers, directory listings and error bodies are bounded by the body limit.
    let small = lxd.with_read_limits(ReadLimits { body: 1024, ..ReadLimits::default() });
    let err = small.server_fresh().await.expect_err("GET /1.0 is more than 1 KiB");
    assert!(err.to_string().contains("the answer to GET /1.0") && err.to_string().contains("1 KiB"), "{err}");
    let listing = lxd
        .exec_output(
            &c.name,
            &ExecRequest::new(["sh", "-c", "mkdir /root/many && cd /root/many && touch $(seq 1 400)"]),
        )
        .await
        .expect("many files");
    assert!(listing.success(), "{}", listing.stderr_text());
    let err = small.pull(&c.name, "/root/many").await.map(|_| ()).expect_err("listing over the limit");
    assert!(err.to_string().contains("the listing of /root/many"), "{err}");
    let tiny_body = lxd.with_read_limits(ReadLimits { body: 8, ..ReadLimits::default() });
    let err = tiny_body.pull(&c.name, "/root/missing").await.map(|_| ()).expect_err("error body over the limit");
    assert!(err.to_string().contains("the error answer to GET /root/missing"), "{err}");
    // Under the default limits all of it reads.
    assert!(lxd.pull(&c.name, "/root/many").await.is_ok());
    assert!(lxd.pull(&c.name, "/root/missing").await.expect_err("missing").is_not_found());
}
