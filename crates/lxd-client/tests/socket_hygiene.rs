//! LXD (5.0 at least) peeks at the first bytes of every new unix-socket connection inside its accept loop: one
//! connection that is opened and left silent stops the daemon from accepting anyone else. The client must never
//! leave such a connection behind, however its requests race.

mod common;

use std::time::Duration;

use common::client;

/// Sockets this process has open.
fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    std::fs::read_link(e.path()).map(|t| t.to_string_lossy().starts_with("socket:")).unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bursts_of_requests_leave_no_idle_connection_and_the_daemon_keeps_accepting() {
    let lxd = client().await;
    let baseline = open_sockets();
    for _round in 0..5 {
        let calls = (0..64).map(|_| {
            let lxd = lxd.clone();
            async move { lxd.server_fresh().await.map(|_| ()) }
        });
        for result in futures_util::future::join_all(calls).await {
            result.expect("GET /1.0");
        }
    }
    // Every connection is closed once its response is read (allow the runtime a moment to drop them).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while open_sockets() > baseline && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(open_sockets() <= baseline, "{} sockets still open after the burst (baseline {baseline})", open_sockets());
    // An independent client is served at once while this one is still alive.
    let started = std::time::Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("lxc").args(["query", "/1.0"]).output(),
    )
    .await
    .expect("`lxc query /1.0` answered within 10 s: the daemon is still accepting")
    .expect("run lxc");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(lxd);
}
