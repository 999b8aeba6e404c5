//! `gbo logs CONTAINER --file NAME` follows a file under /opt/gbo/logs inside the container (the seed's `tail -f
//! /opt/gbo/logs/access.log`), refusing names that are not plain file names and naming the files there when the
//! one asked for is missing; `gbo console-log CONTAINER` prints what `lxc console --show-log` prints.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gbo_tests::programs::require_program;
use gbo_tests::{gbo, gbo_bin, lxd, require_test_image, TestTenant, TEST_IMAGE};

fn lxc(args: &[&str]) -> String {
    let out = Command::new(require_program("lxc")).args(args).output().expect("lxc");
    assert!(out.status.success(), "lxc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_a_role_file_and_console_log_matches_lxc() {
    let client = lxd().await;
    require_test_image(&client).await;
    let t = TestTenant::new();
    let name = t.container("proxy");
    lxc(&["launch", TEST_IMAGE, &name]);
    lxc(&[
        "exec",
        &name,
        "--",
        "sh",
        "-c",
        "mkdir -p /opt/gbo/logs && printf 'one\\ntwo\\n' > /opt/gbo/logs/access.log",
    ]);

    let last = gbo(&["logs", &name, "--file", "access", "-n", "1"]);
    assert_eq!((last.code, last.stdout.as_str()), (0, "two\n"), "{}", last.all());
    for bad in ["../../etc/shadow", "/etc/shadow", ".hidden", "a b"] {
        let refused = gbo(&["logs", &name, "--file", bad]);
        assert_eq!(refused.code, 2, "{bad}: {}", refused.all());
        assert!(refused.stderr.contains("--file"), "{}", refused.all());
    }
    let missing = gbo(&["logs", &name, "--file", "error"]);
    assert_eq!(missing.code, 2, "{}", missing.all());
    assert!(missing.stderr.contains("no log file /opt/gbo/logs/error.log (it has: access.log)"), "{}", missing.all());

    // Following: a line appended later arrives, also across a rotation (tail -F).
    let mut child = Command::new(gbo_bin())
        .args(["logs", &name, "--file", "access", "-n", "0", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gbo logs -f");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |want: &str, append: &dyn Fn()| {
        let start = Instant::now();
        loop {
            append();
            if let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
                if line == want {
                    return;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{want} never arrived");
        }
    };
    let appended = std::cell::Cell::new(false);
    wait_for("three", &|| {
        if !appended.replace(true) {
            lxc(&["exec", &name, "--", "sh", "-c", "sleep 1; echo three >> /opt/gbo/logs/access.log"]);
        }
    });
    let rotated = std::cell::Cell::new(false);
    wait_for("four", &|| {
        if !rotated.replace(true) {
            lxc(&[
                "exec",
                &name,
                "--",
                "sh",
                "-c",
                "mv /opt/gbo/logs/access.log /opt/gbo/logs/access.log.1; sleep 2; echo four > /opt/gbo/logs/access.log",
            ]);
        }
    });
    child.kill().expect("kill");
    let _ = child.wait();

    let running = gbo(&["console-log", &name]);
    assert_eq!(running.code, 0, "{}", running.all());
    // A container that has stopped (one that will not start): what LXD kept of its console.
    lxc(&["stop", &name]);
    let console = gbo(&["console-log", &name]);
    assert_eq!(console.code, 0, "{}", console.all());
    let by_lxc = lxc(&["console", &name, "--show-log"]);
    assert!(!console.stdout.trim().is_empty(), "an empty console log");
    assert!(by_lxc.contains(console.stdout.trim()), "gbo: {:?}\nlxc: {by_lxc:?}", console.stdout);
    let unknown = gbo(&["console-log", &format!("{}-nosuch", t.name)]);
    assert_eq!(unknown.code, 2, "{}", unknown.all());
}
