//! OpenZFS batched command lines, checked as data through a **recording `zfs` stand-in** (a shell script written by
//! this test; it is not ZFS). It logs every invocation, answers `version`/`list` like OpenZFS 2.2 (the columns and
//! sort order asked for), expands `a%b` ranges over createtxg the way OpenZFS does and records what a real destroy
//! would have removed, emulates "argument list too long" above a set number of list items and "dataset is busy" for
//! held snapshots, and prints `reclaim` figures. The real ZFS runs are in `zfs_fuse.rs`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use gbo_ops::zfs::{PrunePolicy, Zfs, BATCH};

/// The stand-in script (also used by `gbo-cli`'s tests and `cargo xtask bench ops`).
const STANDIN: &str = include_str!("zfs_standin.sh");

/// One snapshot the stand-in lists.
#[derive(Clone)]
struct Snap {
    full: String,
    txg: u64,
    creation: i64,
}

fn snap(full: impl Into<String>, txg: u64, creation: i64) -> Snap {
    Snap { full: full.into(), txg, creation }
}

struct StandIn {
    dir: tempfile::TempDir,
}

impl StandIn {
    fn new(snapshots: &[Snap]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let program = dir.path().join("zfs");
        std::fs::write(&program, STANDIN).expect("write stand-in");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let list: String = snapshots.iter().map(|s| format!("{}\t{}\t{}\t1024\n", s.full, s.txg, s.creation)).collect();
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

    /// What the destroys really removed, as OpenZFS would have (ranges expanded over createtxg).
    fn destroyed(&self) -> BTreeSet<String> {
        std::fs::read_to_string(self.dir.path().join("log.destroyed"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

const DAY: i64 = 86_400;
const NOW: i64 = 1_700_000_000;

/// The name of gbo's `n`-th daily snapshot (`gbo-daily-YYYY-MM-DD`, from 2020-01-01 on).
fn daily(n: usize) -> String {
    let date = time::macros::date!(2020 - 01 - 01) + time::Duration::days(n as i64);
    format!("gbo-daily-{date}")
}

/// `count` daily snapshots of `dataset`, an hour apart, the newest at `newest`, createtxg from `first_txg`.
fn series(dataset: &str, count: usize, newest: i64, first_txg: u64) -> Vec<Snap> {
    (0..count)
        .map(|i| snap(format!("{dataset}@{}", daily(i)), first_txg + i as u64, newest - (count - 1 - i) as i64 * 3_600))
        .collect()
}

fn destroys(calls: &[String]) -> Vec<String> {
    calls.iter().filter(|c| c.starts_with("destroy")).cloned().collect()
}

fn set(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

#[test]
fn a_thousand_snapshots_go_in_ranges_of_at_most_100_with_few_calls() {
    let mut snaps = series("tank/a", 600, NOW - 8 * DAY, 1_000);
    snaps.extend(series("tank/b", 400, NOW - 8 * DAY, 5_000));
    snaps.push(snap("tank/lxd/containers/web@snapshot-old", 10, NOW - 30 * DAY));
    let standin = StandIn::new(&snaps);
    let zfs = Zfs::detect_program(&standin.wrapper(None, &[])).expect("detect");
    assert!(zfs.features().openzfs);
    let report = zfs.prune(&[], 7, 5, NOW, false).expect("prune");
    assert_eq!(report.destroyed.len(), 595 + 395);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let calls = standin.calls();
    let d = destroys(&calls);
    assert_eq!(d.len(), 6 + 4);
    assert_eq!(d[0], format!("destroy -v -p tank/a@{}%{}", daily(0), daily(99)));
    assert_eq!(d[5], format!("destroy -v -p tank/a@{}%{}", daily(500), daily(594)));
    assert_eq!(d[6], format!("destroy -v -p tank/b@{}%{}", daily(0), daily(99)));
    assert!(calls.len() <= 20, "{} zfs calls: {calls:?}", calls.len());
    assert!(
        !calls.iter().any(|c| c.contains("tank/lxd") && c.starts_with("destroy")),
        "LXD's go through LXD: {calls:?}"
    );
    assert_eq!(report.zfs_calls, calls.len() - 1, "the report counts every call but detection");
    assert_eq!(report.reclaim_bytes, 990 * 1024);
    assert_eq!(report.kept["tank/a"], 5);
    assert_eq!(standin.destroyed(), set(&report.destroyed), "what gbo reports is what ZFS destroyed");
}

#[test]
fn dry_run_asks_zfs_for_the_space_it_would_reclaim() {
    let snaps = series("tank/a", 150, NOW - 8 * DAY, 100);
    let standin = StandIn::new(&snaps);
    let zfs = Zfs::detect_program(&standin.wrapper(None, &[])).expect("detect");
    let report = zfs.prune(&["tank/a".to_string()], 7, 10, NOW, true).expect("dry run");
    assert!(report.dry_run);
    assert_eq!(report.destroyed.len(), 140);
    assert_eq!(report.reclaim_bytes, 140 * 1024);
    assert_eq!(report.reclaim_source, "zfs destroy -nvp");
    let calls = standin.calls();
    assert_eq!(calls[1], "list -H -p -t snapshot -o name,createtxg,creation,used -s createtxg -r tank/a");
    assert_eq!(
        destroys(&calls),
        [
            format!("destroy -n -v -p tank/a@{}%{}", daily(0), daily(99)),
            format!("destroy -n -v -p tank/a@{}%{}", daily(100), daily(139))
        ]
    );
    assert!(standin.destroyed().is_empty(), "a dry run destroys nothing");
}

#[test]
fn lists_are_halved_on_argument_list_too_long_and_held_snapshots_are_reported() {
    // gbo's own data captures sit between the daily snapshots: they are never destroyed, so the dailies form a
    // comma list without ranges.
    let mut snaps = Vec::new();
    for i in 0..120 {
        snaps.push(snap(format!("tank/a@{}", daily(i)), 100 + 2 * i as u64, NOW - 20 * DAY + i as i64 * 60));
        snaps.push(snap(format!("tank/a@gbo-web-c{i:04}"), 101 + 2 * i as u64, NOW - 20 * DAY + i as i64 * 60 + 30));
    }
    let standin = StandIn::new(&snaps);
    let held = format!("tank/a@{}", daily(7));
    let zfs = Zfs::detect_program(&standin.wrapper(Some(30), &[&held])).expect("detect");
    let report = zfs.prune(&[], 7, 1, NOW, false).expect("prune");
    let d = destroys(&standin.calls());
    // 119 candidates (the newest stays): a batch of 100 items fails, halves to 50, then 25; the first 25 holds the
    // held snapshot, which is reported, and the other 24 are retried at once; then the second 25, the other 50
    // halved, and the last 19.
    let sizes: Vec<usize> = d.iter().map(|c| c.split(',').count()).collect();
    assert_eq!(sizes, [BATCH, 50, 25, 24, 25, 50, 25, 25, 19], "{d:?}");
    assert!(d[2].contains(&daily(7)) && !d[3].contains(&daily(7)));
    assert!(d.iter().all(|c| !c.contains("gbo-web")), "{d:?}");
    assert_eq!(report.failures.len(), 1);
    assert_eq!(report.failures[0].snapshot, held);
    assert_eq!(report.failures[0].reason, "dataset is busy");
    assert_eq!(report.destroyed.len(), 118);
    assert!(!report.destroyed.contains(&held));
    assert!(d.len() <= 20, "{}", d.len());
    assert_eq!(standin.destroyed(), set(&report.destroyed));
}

#[test]
fn detection_and_a_missing_program_fail_clearly() {
    let err = Zfs::detect_program("/nonexistent/zfs").expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/zfs"), "{err}");
}

/// Reproduction (issue 9, item 9): prune destroyed every snapshot that was not LXD's `snapshot-*` or a gbo data
/// capture: other tools' (`zfs-auto-snap_*`), hand-made ones, LXD's copy origins, and a data capture of a tenant
/// named `daily` (`gbo-daily-tables-...`, taken for gbo's own daily by its prefix).
#[test]
fn prune_destroys_only_gbo_daily_snapshots_by_default() {
    let old = NOW - 30 * DAY;
    let mut snaps = Vec::new();
    let mut txg = 100;
    let mut add = |full: String| {
        txg += 1;
        snaps.push(snap(full, txg, old + txg as i64));
    };
    for i in 0..5 {
        add(format!("tank/data@{}", daily(i)));
        add(format!("tank/data@zfs-auto-snap_daily-2024-01-0{}-0000", i + 1));
        if i == 2 {
            add("tank/data@gbo-default-tables-s0".into());
        }
    }
    add("tank/data@manual".into());
    add("tank/data@before-upgrade".into());
    add("tank/data@gbo-default-tables-s1".into());
    add("tank/data@gbo-daily-tables-s1".into());
    add("tank/data@gbo-daily-tables-s2".into());
    add("tank/lxd/containers/web@copy-6f1c".into());
    add("tank/lxd/containers/web@copy-9a2e".into());
    add("tank/lxd/containers/web@snapshot-a".into());
    add("tank/lxd/images/abc@readonly".into());
    let standin = StandIn::new(&snaps);
    let zfs = Zfs::detect_program(&standin.wrapper(None, &[])).expect("detect");
    let report = zfs.prune(&[], 7, 1, NOW, false).expect("prune");
    let expected: BTreeSet<String> = (0..4).map(|i| format!("tank/data@{}", daily(i))).collect();
    assert_eq!(standin.destroyed(), expected, "only gbo's own dailies go (the newest stays)");
    assert_eq!(set(&report.destroyed), expected);
    let unowned: Vec<String> = (1..=5)
        .map(|d| format!("tank/data@zfs-auto-snap_daily-2024-01-0{d}-0000"))
        .chain(["tank/data@manual".into(), "tank/data@before-upgrade".into()])
        .collect();
    assert_eq!(report.kept_unowned, unowned, "the others are listed as kept, in the order they were taken");
    assert_eq!((report.kept_lxd, report.kept_captures), (4, 4));
    assert!(report.destroyed_unowned.is_empty() && !report.all_unowned);

    // --all-unowned: the others are candidates too (the newest of the dataset stays); LXD's snapshots and gbo
    // snapshot's data captures still never go, and no range reaches over a capture.
    let standin = StandIn::new(&snaps);
    let zfs = Zfs::detect_program(&standin.wrapper(None, &[])).expect("detect");
    let policy = PrunePolicy { keep_days: 7, min_keep: 1, all_unowned: true };
    let plan = zfs.plan(&[], &policy, NOW).expect("plan");
    assert_eq!(plan.doomed_unowned, unowned[..6], "listed before anything is destroyed");
    assert!(destroys(&standin.calls()).is_empty(), "planning destroys nothing");
    let report = zfs.execute(&plan, false);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let expected: BTreeSet<String> =
        (0..5).map(|i| format!("tank/data@{}", daily(i))).chain(unowned[..6].iter().cloned()).collect();
    assert_eq!(standin.destroyed(), expected, "{:?}", destroys(&standin.calls()));
    assert_eq!(set(&report.destroyed), expected);
    assert_eq!(report.destroyed_unowned, unowned[..6]);
    assert!(destroys(&standin.calls()).iter().all(|c| !c.contains("tank/lxd")));
}

/// Reproduction (issue 9, item 9): ranges were built in (creation second, name) order. Snapshots taken in one
/// second whose names sort differently than they were taken, or a clock that stepped back, made `a%b` cover a
/// snapshot that was to be kept (OpenZFS expands a range over createtxg).
#[test]
fn ranges_follow_createtxg_and_never_cover_a_kept_snapshot() {
    let old = NOW - 30 * DAY;
    let mut snaps = Vec::new();
    // tank/a: eight dailies in one second, taken in the order 0 2 1 3 5 4 6 7, with a hand-made snapshot between.
    for (txg, n) in [(10, 0), (11, 2), (12, 1), (13, 3), (15, 5), (16, 4), (17, 6), (18, 7)] {
        snaps.push(snap(format!("tank/a@{}", daily(n)), txg, old));
    }
    snaps.push(snap("tank/a@manual", 14, old));
    // tank/b: the clock stepped back an hour at a time: creation says the reverse of the order they were taken.
    for i in 0..6u64 {
        snaps.push(snap(format!("tank/b@{}", daily(i as usize)), 100 + i, old - i as i64 * 3_600));
    }
    let standin = StandIn::new(&snaps);
    let zfs = Zfs::detect_program(&standin.wrapper(None, &[])).expect("detect");
    let report = zfs.prune(&[], 7, 2, NOW, false).expect("prune");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    // The two taken last stay in each dataset; so does the hand-made one.
    let expected: BTreeSet<String> = [0, 2, 1, 3, 5, 4]
        .iter()
        .map(|n| format!("tank/a@{}", daily(*n)))
        .chain((0..4).map(|n| format!("tank/b@{}", daily(n))))
        .collect();
    assert_eq!(standin.destroyed(), expected, "{:?}", destroys(&standin.calls()));
    assert_eq!(set(&report.destroyed), expected);
    assert!(destroys(&standin.calls()).iter().any(|c| c.contains('%')), "ranges are used where they are safe");
}
