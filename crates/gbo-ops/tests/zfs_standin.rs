//! OpenZFS batched command lines, checked as data through a **recording `zfs` stand-in** (a shell script written by
//! this test; it is not ZFS). It logs every invocation, answers `version`/`list` like OpenZFS 2.2, emulates
//! "argument list too long" above a set number of list items and "dataset is busy" for held snapshots, and prints
//! `reclaim` figures. The real ZFS runs are in `zfs_fuse.rs`.

use std::path::{Path, PathBuf};

use gbo_ops::zfs::{Zfs, BATCH};

/// The stand-in script (also used by `gbo-cli`'s tests and `cargo xtask bench ops`).
const STANDIN: &str = include_str!("zfs_standin.sh");

struct StandIn {
    dir: tempfile::TempDir,
}

impl StandIn {
    /// `snapshots`: (dataset@name, creation) in creation order.
    fn new(snapshots: &[(String, i64)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = dir.path().join("zfs");
        std::fs::write(&program, STANDIN).expect("write stand-in");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let list: String = snapshots.iter().map(|(n, c)| format!("{n}\t{c}\t1024\n")).collect();
        std::fs::write(dir.path().join("list"), list).expect("list");
        std::fs::write(dir.path().join("log"), "").expect("log");
        Self { dir }
    }

    fn program(&self) -> PathBuf {
        self.dir.path().join("zfs")
    }

    /// The stand-in reads its settings from the environment of each call; tests in this file set them through a
    /// wrapper script so that parallel tests never share them.
    fn wrapper(&self, max_items: Option<usize>, held: &[&str]) -> String {
        let path = self.dir.path().join("zfs-wrapped");
        let script = format!(
            "#!/bin/bash\nexport ZFS_STANDIN_LOG='{log}' ZFS_STANDIN_LIST='{list}' ZFS_STANDIN_MAX_ITEMS='{max}' ZFS_STANDIN_HELD='{held}'\nexec '{program}' \"$@\"\n",
            log = self.dir.path().join("log").display(),
            list = self.dir.path().join("list").display(),
            max = max_items.map(|m| m.to_string()).unwrap_or_default(),
            held = held.join(","),
            program = self.program().display()
        );
        std::fs::write(&path, script).expect("wrapper");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path.display().to_string()
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("log")).expect("log").lines().map(str::to_string).collect()
    }
}

const DAY: i64 = 86_400;
const NOW: i64 = 1_700_000_000;

fn series(dataset: &str, count: usize, newest: i64) -> Vec<(String, i64)> {
    (0..count).map(|i| (format!("{dataset}@s{i:04}"), newest - (count - 1 - i) as i64 * 3_600)).collect()
}

fn destroys(calls: &[String]) -> Vec<String> {
    calls.iter().filter(|c| c.starts_with("destroy")).cloned().collect()
}

#[test]
fn a_thousand_snapshots_go_in_ranges_of_at_most_100_with_few_calls() {
    let mut snaps = series("tank/a", 600, NOW - 8 * DAY);
    snaps.extend(series("tank/b", 400, NOW - 8 * DAY));
    snaps.push(("tank/lxd/containers/web@snapshot-old".into(), NOW - 30 * DAY));
    snaps.sort_by_key(|s| s.1);
    let standin = StandIn::new(&snaps);
    let zfs = Zfs::detect_program(&standin.wrapper(None, &[])).expect("detect");
    assert!(zfs.features().openzfs);
    let report = zfs.prune(&[], 7, 5, NOW, false).expect("prune");
    assert_eq!(report.destroyed.len(), 595 + 395);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let calls = standin.calls();
    let d = destroys(&calls);
    assert_eq!(d.len(), 6 + 4);
    assert_eq!(d[0], "destroy -v -p tank/a@s0000%s0099");
    assert_eq!(d[5], "destroy -v -p tank/a@s0500%s0594");
    assert_eq!(d[6], "destroy -v -p tank/b@s0000%s0099");
    assert!(calls.len() <= 20, "{} zfs calls: {calls:?}", calls.len());
    assert!(!calls.iter().any(|c| c.contains("tank/lxd")), "LXD's snapshots go through LXD: {calls:?}");
    assert_eq!(report.zfs_calls, calls.len() - 1, "the report counts every call but detection");
    assert_eq!(report.reclaim_bytes, 990 * 1024);
    assert_eq!(report.kept["tank/a"], 5);
}

#[test]
fn dry_run_asks_zfs_for_the_space_it_would_reclaim() {
    let snaps = series("tank/a", 150, NOW - 8 * DAY);
    let standin = StandIn::new(&snaps);
    let zfs = Zfs::detect_program(&standin.wrapper(None, &[])).expect("detect");
    let report = zfs.prune(&["tank/a".to_string()], 7, 10, NOW, true).expect("dry run");
    assert!(report.dry_run);
    assert_eq!(report.destroyed.len(), 140);
    assert_eq!(report.reclaim_bytes, 140 * 1024);
    assert_eq!(report.reclaim_source, "zfs destroy -nvp");
    let calls = standin.calls();
    assert_eq!(calls[1], "list -H -p -t snapshot -o name,creation,used -s creation -r tank/a");
    assert_eq!(destroys(&calls), ["destroy -n -v -p tank/a@s0000%s0099", "destroy -n -v -p tank/a@s0100%s0139"]);
}

#[test]
fn lists_are_halved_on_argument_list_too_long_and_held_snapshots_are_reported() {
    // gbo's own data captures sit between the daily snapshots: they are never destroyed, so the dailies form a
    // comma list without ranges.
    let mut snaps = Vec::new();
    for i in 0..120 {
        snaps.push((format!("tank/a@s{i:04}"), NOW - 20 * DAY + i * 60));
        snaps.push((format!("tank/a@gbo-web-c{i:04}"), NOW - 20 * DAY + i * 60 + 30));
    }
    let standin = StandIn::new(&snaps);
    let zfs = Zfs::detect_program(&standin.wrapper(Some(30), &["tank/a@s0007"])).expect("detect");
    let report = zfs.prune(&[], 7, 1, NOW, false).expect("prune");
    let d = destroys(&standin.calls());
    // 119 candidates (the newest stays): a batch of 100 items fails, halves to 50, then 25; the first 25 holds the
    // held snapshot, which is reported, and the other 24 are retried at once; then the second 25, the other 50
    // halved, and the last 19.
    let sizes: Vec<usize> = d.iter().map(|c| c.split(',').count()).collect();
    assert_eq!(sizes, [BATCH, 50, 25, 24, 25, 50, 25, 25, 19], "{d:?}");
    assert!(d[2].contains("s0007") && !d[3].contains("s0007"));
    assert!(d.iter().all(|c| !c.contains("gbo-web")), "{d:?}");
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].snapshot, "tank/a@s0007");
    assert_eq!(report.failures[0].reason, "dataset is busy");
    assert_eq!(report.destroyed.len(), 118);
    assert!(!report.destroyed.contains(&"tank/a@s0007".to_string()));
    assert!(d.len() <= 20, "{}", d.len());
}

#[test]
fn detection_and_a_missing_program_fail_clearly() {
    let err = Zfs::detect_program("/nonexistent/zfs").expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/zfs"), "{err}");
    let _ = Path::new("/");
}
