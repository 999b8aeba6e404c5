//! Real ZFS runs against `zfs-fuse` (a user-space pool on a file). Its old CLI has no `version`, no `-p` on list,
//! one snapshot per destroy and no `-n`: gbo detects that and falls back. A missing `zfs-fuse` fails the test.

use std::process::Command;
use std::time::Duration;

use gbo_ops::zfs::Zfs;

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e} (install zfs-fuse)"));
    assert!(out.status.success(), "{args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const PID_FILE: &str = "/run/zfs-fuse.pid";

/// A directory as a lock across test processes (mkdir is atomic); a lock older than a minute is a dead holder's.
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

/// Start the zfs-fuse daemon when it is not answering (it stays up for other tests), and wait for it.
///
/// Tests run as separate processes, so the start is serialised by a lock file. A pid file left by a daemon that died
/// (a package's init script, an earlier run, a reboot) makes zfs-fuse refuse to start: it is removed when its pid is
/// not a live zfs-fuse, and a live one that does not answer is stopped first.
fn ensure_daemon() {
    let answering = || Command::new("zpool").arg("list").output().map(|o| o.status.success()).unwrap_or(false);
    if answering() {
        return;
    }
    let _lock = StartLock::take();
    if answering() {
        return;
    }
    if let Ok(text) = std::fs::read_to_string(PID_FILE) {
        let pid = text.trim();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'));
        if comm.trim() == "zfs-fuse" && !zombie {
            // Alive but not answering: give it a moment (it may be starting), then stop it.
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
        std::fs::remove_file(PID_FILE).expect("remove the stale zfs-fuse pid file");
    }
    let out = Command::new("zfs-fuse").args(["-p", PID_FILE]).output().expect("zfs-fuse is required for this test (apt-get install zfs-fuse)");
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
}

/// A pool on a file, destroyed on drop.
struct Pool {
    name: String,
    _dir: tempfile::TempDir,
}

impl Pool {
    fn new() -> Self {
        ensure_daemon();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pool.img");
        run(&["truncate", "-s", "128M", &file.display().to_string()]);
        let name = gbo_tests::unique_name("zp");
        // Mounted inside the temp dir, so nothing is left in `/` when the pool is destroyed.
        let mount = dir.path().join("mnt");
        run(&["zpool", "create", "-m", &mount.display().to_string(), &name, &file.display().to_string()]);
        Self { name, _dir: dir }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = Command::new("zpool").args(["destroy", "-f", &self.name]).status();
    }
}

#[test]
fn prune_on_zfs_fuse_destroys_one_per_call_keeps_the_minimum_and_reports_clones() {
    let pool = Pool::new();
    let ds = format!("{}/data", pool.name);
    let lxd_ds = format!("{}/containers", pool.name);
    run(&["zfs", "create", &ds]);
    run(&["zfs", "create", &lxd_ds]);
    run(&["zfs", "create", &format!("{lxd_ds}/web")]);
    let zfs = Zfs::detect_program("zfs").expect("detect");
    assert!(!zfs.features().openzfs, "zfs-fuse has no `zfs version`");
    let taken = zfs.snapshot_daily(std::slice::from_ref(&ds), time::macros::date!(2024 - 01 - 15)).expect("daily");
    assert_eq!(taken, [format!("{ds}@gbo-daily-2024-01-15")]);
    for i in 0..5 {
        run(&["zfs", "snapshot", &format!("{ds}@s{i}")]);
    }
    run(&["zfs", "snapshot", &format!("{lxd_ds}/web@snapshot-a")]);
    // A clone pins s1: its destroy fails and is reported, the others go on.
    run(&["zfs", "clone", &format!("{ds}@s1"), &format!("{}/pinned", pool.name)]);

    let usage = zfs.usage(std::slice::from_ref(&pool.name)).expect("usage");
    assert_eq!(usage.snapshots.len(), 7);
    assert!(usage.snapshots.iter().any(|r| r.lxd && r.snapshot.name == "snapshot-a"));
    assert!(usage.pools.iter().any(|p| p.name == pool.name), "{:?}", usage.pools);

    let now = time::OffsetDateTime::now_utc().unix_timestamp() + 3_600;
    let dry = zfs.prune(std::slice::from_ref(&pool.name), 0, 2, now, true).expect("dry run");
    assert_eq!(dry.destroyed.len(), 4, "{:?}", dry.destroyed);
    assert!(dry.reclaim_source.contains("sum of used"));
    assert_eq!(run(&["zfs", "list", "-H", "-t", "snapshot", "-o", "name"]).lines().filter(|l| l.starts_with(&pool.name)).count(), 7, "the dry run changed nothing");

    let report = zfs.prune(std::slice::from_ref(&pool.name), 0, 2, now, false).expect("prune");
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert_eq!(report.failures[0].snapshot, format!("{ds}@s1"));
    assert!(report.failures[0].reason.contains("clone"), "{}", report.failures[0].reason);
    assert_eq!(report.destroyed.len(), 3);
    let mut left: Vec<String> = run(&["zfs", "list", "-H", "-t", "snapshot", "-o", "name"]).lines().filter(|l| l.starts_with(&pool.name)).map(str::to_string).collect();
    left.sort();
    let mut expected = vec![format!("{lxd_ds}/web@snapshot-a"), format!("{ds}@s1"), format!("{ds}@s3"), format!("{ds}@s4")];
    expected.sort();
    assert_eq!(left, expected, "LXD's snapshot stays, the newest two stay, the pinned one stays");
    // One snapshot per destroy call on this CLI.
    assert_eq!(report.zfs_calls, 2 + 4);
}

#[test]
fn a_missing_dataset_is_named() {
    let pool = Pool::new();
    let zfs = Zfs::detect_program("zfs").expect("detect");
    let err = zfs.prune(&[format!("{}/nope", pool.name)], 7, 2, 0, true).expect_err("missing");
    assert!(err.to_string().contains(&format!("{}/nope", pool.name)), "{err}");
}
