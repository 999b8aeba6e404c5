//! `gbo exec` returns when its command ends, whatever its own stdin does: a caller that keeps stdin open (a pipe
//! from a long-running producer) used to keep `gbo` waiting for EOF after the command had exited 0.

use std::time::{Duration, Instant};

use gbo_tests::TestContainer;

#[tokio::test(flavor = "multi_thread")]
async fn exec_returns_when_the_command_ends_with_stdin_still_open() {
    let c = TestContainer::create("execcli", true).await;
    let name = c.name.to_string();
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gbo"))
        .args(["exec", &name, "--", "true"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("gbo runs");
    // Hold stdin open (never written, never closed) while waiting.
    let _stdin = child.stdin.take();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("gbo exec did not return 30 s after `true` ended: it waits for stdin to close");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
}
