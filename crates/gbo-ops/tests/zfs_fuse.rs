//! Real ZFS runs against `zfs-fuse` (a user-space pool on a file). Its old CLI has no `version`, no `-p` on list,
//! one snapshot per destroy and no `-n`: gbo detects that and falls back. A missing `zfs-fuse` fails the test.

use gbo_ops::zfs::{PrunePolicy, Zfs};
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
    let s = |i: usize| format!("gbo-daily-2024-02-0{}", i + 1);
    for i in 0..5 {
        run(&["zfs", "snapshot", &format!("{ds}@{}", s(i))]);
    }
    run(&["zfs", "snapshot", &format!("{lxd_ds}/web@snapshot-a")]);
    // A clone pins s1: its destroy fails and is reported, the others go on.
    run(&["zfs", "clone", &format!("{ds}@{}", s(1)), &format!("{}/pinned", pool.name)]);

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
    assert_eq!(report.failures[0].snapshot, format!("{ds}@{}", s(1)));
    assert!(report.failures[0].reason.contains("clone"), "{}", report.failures[0].reason);
    assert_eq!(report.destroyed.len(), 3);
    let mut left: Vec<String> = run(&["zfs", "list", "-H", "-t", "snapshot", "-o", "name"])
        .lines()
        .filter(|l| l.starts_with(&pool.name))
        .map(str::to_string)
        .collect();
    left.sort();
    let mut expected = vec![
        format!("{lxd_ds}/web@snapshot-a"),
        format!("{ds}@{}", s(1)),
        format!("{ds}@{}", s(3)),
        format!("{ds}@{}", s(4)),
    ];
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

/// Every snapshot of the pool, sorted.
fn snapshots_of(pool: &Pool) -> Vec<String> {
    let mut names: Vec<String> = run(&["zfs", "list", "-H", "-t", "snapshot", "-o", "name"])
        .lines()
        .filter(|l| l.starts_with(&format!("{}/", pool.name)) || l.starts_with(&format!("{}@", pool.name)))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// Reproduction (issue 9, item 9), for real: prune destroyed snapshots gbo did not make. Now only gbo's dailies go
/// by default; the others are kept.
#[test]
fn on_zfs_fuse_prune_destroys_only_gbo_s_snapshots() {
    let pool = Pool::new();
    let ds = format!("{}/data", pool.name);
    let web = format!("{}/containers/web", pool.name);
    run(&["zfs", "create", &ds]);
    run(&["zfs", "create", &format!("{}/containers", pool.name)]);
    run(&["zfs", "create", &web]);
    let ours: Vec<String> = (1..=4).map(|d| format!("{ds}@gbo-daily-2024-03-0{d}")).collect();
    let others = [
        format!("{ds}@zfs-auto-snap_daily-2024-03-01-0000"),
        format!("{ds}@manual"),
        format!("{ds}@zfs-auto-snap_daily-2024-03-02-0000"),
        format!("{ds}@gbo-default-tables-s1"),
        format!("{ds}@gbo-daily-tables-s1"),
        format!("{web}@copy-6f1c"),
        format!("{web}@copy-9a2e"),
        format!("{web}@snapshot-a"),
    ];
    for (i, name) in ours.iter().enumerate() {
        run(&["zfs", "snapshot", name]);
        if let Some(other) = others.get(2 * i) {
            run(&["zfs", "snapshot", other]);
        }
        if let Some(other) = others.get(2 * i + 1) {
            run(&["zfs", "snapshot", other]);
        }
    }
    let zfs = Zfs::detect_program("zfs").expect("detect");
    let now = time::OffsetDateTime::now_utc().unix_timestamp() + 3_600;
    let report = zfs.prune(std::slice::from_ref(&pool.name), 0, 1, now, false).expect("prune");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let mut expected_gone = ours[..3].to_vec();
    expected_gone.sort();
    let mut destroyed = report.destroyed.clone();
    destroyed.sort();
    assert_eq!(destroyed, expected_gone);
    let mut left: Vec<String> = others.iter().cloned().chain([ours[3].clone()]).collect();
    left.sort();
    assert_eq!(snapshots_of(&pool), left, "everything gbo did not make is still there");
    let mut kept_unowned = report.kept_unowned.clone();
    kept_unowned.sort();
    let mut expected_unowned = vec![others[0].clone(), others[1].clone(), others[2].clone()];
    expected_unowned.sort();
    assert_eq!(kept_unowned, expected_unowned);
    assert_eq!((report.kept_lxd, report.kept_captures), (3, 2));

    // --all-unowned: the others go too (the dataset's newest stays); LXD's and gbo snapshot's never.
    let policy = PrunePolicy { keep_days: 0, min_keep: 1, all_unowned: true };
    let plan = zfs.plan(std::slice::from_ref(&pool.name), &policy, now).expect("plan");
    let mut listed = plan.doomed_unowned.clone();
    listed.sort();
    assert_eq!(listed, expected_unowned);
    let report = zfs.execute(&plan, false);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let mut left: Vec<String> = others[3..].iter().cloned().chain([ours[3].clone()]).collect();
    left.sort();
    assert_eq!(snapshots_of(&pool), left, "LXD's snapshots and gbo snapshot's captures are still there");
}

/// Reproduction (issue 9, item 9), for real: the newest snapshots by createtxg stay (zfs-fuse has `createtxg`;
/// it has no ranges, so there order decides only which ones are the newest). Names that sort the other way round
/// from the order they were taken in, all taken in one second: prune kept the ones whose names sorted last.
#[test]
fn on_zfs_fuse_the_newest_by_createtxg_stay_when_names_and_seconds_disagree() {
    let pool = Pool::new();
    let ds = format!("{}/data", pool.name);
    run(&["zfs", "create", &ds]);
    // Taken in this order: 05, 04, 03, 02, 01.
    let names: Vec<String> = (1..=5).rev().map(|d| format!("{ds}@gbo-daily-2024-04-0{d}")).collect();
    let mut same_second = false;
    for _ in 0..10 {
        for n in &names {
            run(&["zfs", "snapshot", n]);
        }
        let mut args = vec!["zfs", "get", "-H", "-p", "-o", "value", "creation"];
        args.extend(names.iter().map(String::as_str));
        let seconds: std::collections::BTreeSet<String> = run(&args).lines().map(str::to_string).collect();
        if seconds.len() == 1 {
            same_second = true;
            break;
        }
        for n in &names {
            run(&["zfs", "destroy", n]);
        }
    }
    assert!(same_second, "could not take the five snapshots within one second in ten tries");
    let mut args = vec!["zfs", "get", "-H", "-p", "-o", "value", "createtxg"];
    args.extend(names.iter().map(String::as_str));
    let txgs: Vec<u64> = run(&args).lines().map(|l| l.trim().parse().expect("createtxg")).collect();
    assert!(txgs.windows(2).all(|w| w[0] < w[1]), "zfs-fuse's createtxg follows the order taken: {txgs:?}");

    let zfs = Zfs::detect_program("zfs").expect("detect");
    let now = time::OffsetDateTime::now_utc().unix_timestamp() + 3_600;
    let report = zfs.prune(std::slice::from_ref(&ds), 0, 2, now, false).expect("prune");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let mut expected_left = names[3..].to_vec();
    expected_left.sort();
    assert_eq!(snapshots_of(&pool), expected_left, "the two taken last stay, whatever their names");
}
