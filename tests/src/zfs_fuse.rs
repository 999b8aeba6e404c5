//! zfs-fuse for tests: a user-space ZFS daemon (started when it does not answer, robust to a stale pid file and
//! serialised across test processes) and throw-away pools on files. A missing zfs-fuse fails the test.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// How long one zfs/zpool command may take before the test fails instead of hanging (a wedged daemon).
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// Run argv to completion within `limit`: its output, or an error naming what went wrong (missing program,
/// killed after the limit). stdout and stderr are drained by threads, so a chatty command cannot block on a pipe.
fn output_within(args: &[&str], limit: Duration) -> Result<std::process::Output, String> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{args:?}: {e} (install zfs-fuse)"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{args:?} did not finish within {} s and was killed (is the zfs-fuse daemon wedged?)",
                    limit.as_secs()
                ));
            }
            Err(e) => return Err(format!("{args:?}: {e}")),
        }
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// Run a host command (argv); its stdout. Fails the test with the command's output when it fails, is missing or
/// takes longer than a minute.
pub fn run(args: &[&str]) -> String {
    let out = output_within(args, COMMAND_LIMIT).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether argv ran and succeeded within a few seconds.
fn succeeds(args: &[&str]) -> bool {
    output_within(args, Duration::from_secs(10)).is_ok_and(|o| o.status.success())
}

const ZFS_FUSE_PID_FILE: &str = "/run/zfs-fuse.pid";

/// An advisory lock (`flock`) across test processes, so two test binaries never start the daemon twice. The kernel
/// drops it when its holder dies, so a killed run leaves nothing stale; a directory at its path (an older scheme's
/// leftover) is removed.
struct StartLock {
    /// Held, never read: the lock lasts as long as the open file.
    _held: std::fs::File,
}

impl StartLock {
    fn take() -> Self {
        let path = "/run/gbo-test-zfs-fuse.lock";
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let open = || std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path);
        let file = match open() {
            Err(_) if std::path::Path::new(path).is_dir() => {
                let _ = std::fs::remove_dir_all(path);
                open()
            }
            other => other,
        }
        .unwrap_or_else(|e| panic!("opening {path}: {e}"));
        loop {
            match file.try_lock() {
                Ok(()) => return Self { _held: file },
                Err(std::fs::TryLockError::WouldBlock) => {
                    assert!(std::time::Instant::now() < deadline, "{path} held by another test process for 90 s");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => panic!("locking {path}: {e}"),
            }
        }
    }
}

/// Start the zfs-fuse daemon when it is not answering (it stays up for other tests), and wait for it: a stale pid
/// file is removed, a live daemon that does not answer is stopped first, and test pools that the daemon imports
/// from its cache (left by a killed run) are destroyed.
pub fn ensure_daemon() {
    let answering = || succeeds(&["zpool", "list"]);
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
    let out = output_within(&["zfs-fuse", "-p", ZFS_FUSE_PID_FILE], COMMAND_LIMIT)
        .unwrap_or_else(|e| panic!("zfs-fuse is required for this test: {e}"));
    assert!(
        out.status.success(),
        "zfs-fuse did not start ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !answering() {
        assert!(std::time::Instant::now() < deadline, "zfs-fuse did not answer within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing of this run exists yet (the lock is held), so every test pool now is a killed run's leftover.
    for name in run(&["zpool", "list", "-H", "-o", "name"]).lines().filter(|n| n.starts_with("gbot-")) {
        let _ = output_within(&["zpool", "destroy", "-f", name], COMMAND_LIMIT);
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
            if succeeds(&["zpool", "destroy", "-f", &self.name]) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
