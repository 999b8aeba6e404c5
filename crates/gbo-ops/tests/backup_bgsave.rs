//! The cache's `BGSAVE`, as `gbo backup create` asks for it, against a real `redis-server` on loopback (password
//! from a 0600 config file, data in a scratch directory).
//!
//! Reproduction: `LASTSAVE` counts whole seconds, so a `BGSAVE` that finishes within the same second as the save
//! before it (right after the server started, or after another save) never moved it, and the backup waited out its
//! 600 s deadline (the suite's `--replace` test hung that way once). And a `BGSAVE` that fails (its directory gone)
//! must be reported at once, naming the failure, not waited for.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gbo_ops::backup::capture::redis_bgsave;
use gbo_ops::install::health::{redis_command, Via};

const PASSWORD: &str = "gbot-bgsave-Pw-7731";

struct Redis {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    async fn start() -> Self {
        let program = gbo_tests::programs::require_program("redis-server");
        let dir = tempfile::tempdir().expect("tempdir");
        let port = gbo_tests::free_port();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        let conf = dir.path().join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "bind 127.0.0.1\nport {port}\nrequirepass {PASSWORD}\ndir {}\ndbfilename dump.rdb\nsave \"\"\n\
                 daemonize no\nlogfile {}\n",
                data.display(),
                dir.path().join("redis.log").display()
            ),
        )
        .expect("redis.conf");
        std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
        let child =
            Command::new(program).arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("redis-server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let redis = Self { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while redis.request(&["PING"]).await.is_none() {
            assert!(Instant::now() < deadline, "redis-server did not answer on {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        redis
    }

    /// `AUTH` then `command`; the reply's first line.
    async fn request(&self, command: &[&str]) -> Option<String> {
        let replies = redis_command(self.addr, &[&["AUTH", PASSWORD], command]).await.ok()?;
        replies.get(1).cloned()
    }
}

#[tokio::test]
async fn a_bgsave_in_the_same_second_as_the_last_save_is_seen_to_finish() {
    let redis = Redis::start().await;
    assert_eq!(redis.request(&["SET", "k", "v"]).await.as_deref(), Some("+OK\r\n"));
    for round in 0..3 {
        // A synchronous save, so LASTSAVE is this second; the BGSAVE right after it (a few keys: milliseconds)
        // usually ends within the same second.
        assert_eq!(redis.request(&["SAVE"]).await.as_deref(), Some("+OK\r\n"), "SAVE");
        let started = Instant::now();
        let result = redis_bgsave(&Via::Host(redis.addr), PASSWORD, Duration::from_secs(8)).await;
        assert!(result.is_ok(), "round {round}: {result:?}");
        assert!(started.elapsed() < Duration::from_secs(4), "round {round}: took {:?}", started.elapsed());
    }
    assert!(redis.dir.path().join("data/dump.rdb").is_file(), "the dump file is there");
}

#[tokio::test]
async fn a_failed_bgsave_is_reported_at_once_and_a_wrong_password_is_named() {
    let redis = Redis::start().await;
    let wrong = redis_bgsave(&Via::Host(redis.addr), "not-the-password", Duration::from_secs(8)).await;
    let message = wrong.expect_err("a wrong password is refused");
    assert!(message.contains("AUTH refused"), "{message}");
    assert!(!message.contains("not-the-password"), "the password is never in a message: {message}");

    // The data directory gone: the child process cannot write its dump.
    std::fs::remove_dir_all(redis.dir.path().join("data")).expect("remove the data dir");
    let started = Instant::now();
    let failed = redis_bgsave(&Via::Host(redis.addr), PASSWORD, Duration::from_secs(20)).await;
    let message = failed.expect_err("a BGSAVE that cannot write fails the capture");
    assert!(started.elapsed() < Duration::from_secs(10), "not waited out: {:?} ({message})", started.elapsed());
    assert!(message.contains("BGSAVE failed"), "{message}");
}
