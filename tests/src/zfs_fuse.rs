//! zfs-fuse for tests: a user-space ZFS daemon (started when it does not answer, robust to a stale pid file and
//! serialised across test processes) and throw-away pools on files. A missing zfs-fuse fails the test.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Run a host command (argv); its stdout. Fails the test with the command's output when it fails or is missing.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e} (install zfs-fuse)"));
    assert!(out.status.success(), "{args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const ZFS_FUSE_PID_FILE: &str = "/run/zfs-fuse.pid";

/// A directory as a lock across test processes (mkdir is atomic); a lock older than a minute is a dead holder's.
/// Same path as in `zfs_fuse.rs`, so the two test binaries never start the daemon twice.
struct StartLock(&'static str);

impl StartLock {
    fn take() -> Self {
        let path = "/run/gbo-test-zfs-fuse.lock";
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while std::fs::create_dir(path).is_err() {
            let stale = std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > Duration::from_secs(60));
            if stale {
                let _ = std::fs::remove_dir(path);
                continue;
            }
            assert!(std::time::Instant::now() < deadline, "{path} held for 90 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self(path)
    }
}

impl Drop for StartLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(self.0);
    }
}

/// Start the zfs-fuse daemon when it is not answering (it stays up for other tests), and wait for it; the same
/// approach as `zfs_fuse.rs` (a stale pid file is removed, a live daemon that does not answer is stopped first).
pub fn ensure_daemon() {
    let answering = || Command::new("zpool").arg("list").output().map(|o| o.status.success()).unwrap_or(false);
    if answering() {
        return;
    }
    let _lock = StartLock::take();
    if answering() {
        return;
    }
    if let Ok(text) = std::fs::read_to_string(ZFS_FUSE_PID_FILE) {
        let pid = text.trim();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'));
        if comm.trim() == "zfs-fuse" && !zombie {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline && !answering() {
                std::thread::sleep(Duration::from_millis(100));
            }
            if answering() {
                return;
            }
            let _ = Command::new("kill").arg(pid).status();
            std::thread::sleep(Duration::from_secs(1));
        }
        std::fs::remove_file(ZFS_FUSE_PID_FILE).expect("remove the stale zfs-fuse pid file");
    }
    let out = Command::new("zfs-fuse").args(["-p", ZFS_FUSE_PID_FILE]).output().expect("zfs-fuse is required for this test (apt-get install zfs-fuse)");
    assert!(out.status.success(), "zfs-fuse did not start ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !answering() {
        assert!(std::time::Instant::now() < deadline, "zfs-fuse did not answer within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A zfs-fuse pool on a file, mounted under a temp dir (nothing is left in `/`), destroyed on drop.
pub struct Pool {
    /// The pool's name (`gbot-zs-...`).
    pub name: String,
    /// Where its root dataset is mounted.
    pub mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl Pool {
    /// A 128 MiB pool on a file in a temp dir.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        ensure_daemon();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pool.img");
        let mount = dir.path().join("mnt");
        run(&["truncate", "-s", "128M", &file.display().to_string()]);
        let name = crate::unique_name("zs");
        run(&["zpool", "create", "-m", &mount.display().to_string(), &name, &file.display().to_string()]);
        Self { name, mount, _dir: dir }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Right after the container is deleted the pool can still be busy for a moment.
        for _ in 0..20 {
            if Command::new("zpool").args(["destroy", "-f", &self.name]).output().map(|o| o.status.success()).unwrap_or(false) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

