//! Real ZFS runs against `zfs-fuse` (a user-space pool on a file). Its old CLI has no `version`, no `-p` on list,
//! one snapshot per destroy and no `-n`: gbo detects that and falls back. A missing `zfs-fuse` fails the test.

use gbo_ops::zfs::Zfs;
use gbo_tests::zfs_fuse::{run, Pool};

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
    assert_eq!(
        run(&["zfs", "list", "-H", "-t", "snapshot", "-o", "name"])
            .lines()
            .filter(|l| l.starts_with(&pool.name))
            .count(),
        7,
        "the dry run changed nothing"
    );

    let report = zfs.prune(std::slice::from_ref(&pool.name), 0, 2, now, false).expect("prune");
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    assert_eq!(report.failures[0].snapshot, format!("{ds}@s1"));
    assert!(report.failures[0].reason.contains("clone"), "{}", report.failures[0].reason);
    assert_eq!(report.destroyed.len(), 3);
    let mut left: Vec<String> = run(&["zfs", "list", "-H", "-t", "snapshot", "-o", "name"])
        .lines()
        .filter(|l| l.starts_with(&pool.name))
        .map(str::to_string)
        .collect();
    left.sort();
    let mut expected =
        vec![format!("{lxd_ds}/web@snapshot-a"), format!("{ds}@s1"), format!("{ds}@s3"), format!("{ds}@s4")];
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
