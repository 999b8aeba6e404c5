//! `gbo zfs` end to end through the real binary and a **recording `zfs` stand-in** (the shell script
//! `crates/gbo-ops/tests/zfs_standin.sh`; it is not ZFS), injected with `GBO_ZFS`. Real ZFS runs (zfs-fuse) are in
//! gbo-ops' `zfs_fuse.rs`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

const STANDIN: &str = include_str!("../../gbo-ops/tests/zfs_standin.sh");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// `snapshots`: (dataset@name, creation), listed in this order, which is also their createtxg order.
    fn new(snapshots: &[(String, i64)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("zfs-standin"), STANDIN).expect("write");
        std::fs::write(
            d.join("list"),
            snapshots
                .iter()
                .enumerate()
                .map(|(i, (n, c))| format!("{n}\t{}\t{c}\t2048\n", 100 + i))
                .collect::<String>(),
        )
        .expect("list");
        std::fs::write(d.join("log"), "").expect("log");
        // At the first destroy the wrapper keeps a copy of what gbo had printed by then (`gbo_to_file`).
        let wrapper = format!(
            "#!/bin/bash\nexport ZFS_STANDIN_LOG='{0}/log' ZFS_STANDIN_LIST='{0}/list'\n\
             if [ \"$1\" = destroy ] && [ -e '{0}/stdout' ] && [ ! -e '{0}/stdout-at-first-destroy' ]; then cp '{0}/stdout' '{0}/stdout-at-first-destroy'; fi\n\
             exec '{0}/zfs-standin' \"$@\"\n",
            d.display()
        );
        std::fs::write(d.join("zfs"), wrapper).expect("wrapper");
        for f in ["zfs", "zfs-standin"] {
            std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Self { dir }
    }

    fn gbo(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_gbo"))
            .args(args)
            .env("GBO_ZFS", self.dir.path().join("zfs"))
            .output()
            .expect("gbo");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    /// Run gbo with its stdout going to a file, so that the stand-in can see what it printed before destroying.
    /// Returns the exit code, all of stdout, and stdout as it was at the first destroy.
    fn gbo_to_file(&self, args: &[&str]) -> (i32, String, String) {
        let path = self.dir.path().join("stdout");
        let _ = std::fs::remove_file(self.dir.path().join("stdout-at-first-destroy"));
        let file = std::fs::File::create(&path).expect("stdout file");
        let status = Command::new(env!("CARGO_BIN_EXE_gbo"))
            .args(args)
            .env("GBO_ZFS", self.dir.path().join("zfs"))
            .stdout(file)
            .status()
            .expect("gbo");
        let at_first = std::fs::read_to_string(self.dir.path().join("stdout-at-first-destroy")).unwrap_or_default();
        (status.code().unwrap_or(-1), std::fs::read_to_string(&path).expect("stdout"), at_first)
    }

    /// What the destroys really removed, as OpenZFS would have (the stand-in expands ranges over createtxg).
    fn destroyed(&self) -> Vec<String> {
        let mut d: Vec<String> = std::fs::read_to_string(self.dir.path().join("log.destroyed"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        d.sort();
        d
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("log")).expect("log").lines().map(str::to_string).collect()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// The name of gbo's `n`-th daily snapshot (`gbo-daily-YYYY-MM-DD`, from 2020-01-01 on).
fn daily(n: i64) -> String {
    let date = time::macros::date!(2020 - 01 - 01) + time::Duration::days(n);
    format!("gbo-daily-{date}")
}

#[test]
fn prune_dry_run_json_and_usage_flags_ci_snapshots() {
    let old = now() - 30 * 86_400;
    let mut snaps: Vec<(String, i64)> = (0..40).map(|i| (format!("tank/data@{}", daily(i)), old + i * 3_600)).collect();
    snaps.push(("tank/lxd/containers/default-alm-ci@snapshot-big".into(), old));
    let env = Env::new(&snaps);
    let (code, stdout, stderr) =
        env.gbo(&["zfs", "prune", "--keep-days", "7", "--min-keep", "5", "--dry-run", "--output", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(report["destroyed"].as_array().map(Vec::len), Some(35));
    assert_eq!(report["reclaim_bytes"].as_u64(), Some(35 * 1024));
    assert_eq!(report["dry_run"].as_bool(), Some(true));
    let destroys: Vec<String> = env.calls().into_iter().filter(|c| c.starts_with("destroy")).collect();
    assert_eq!(destroys, [format!("destroy -n -v -p tank/data@{}%{}", daily(0), daily(34))]);
    let (code, stdout, _) = env.gbo(&["zfs", "usage"]);
    assert_eq!(code, 0);
    let ci_line = stdout.lines().find(|l| l.contains("default-alm-ci")).expect("ci line");
    assert!(ci_line.contains("CI container (can be huge)") && ci_line.contains("LXD's"), "{ci_line}");
}

#[test]
fn bad_input_exits_2_before_any_zfs_call() {
    let env = Env::new(&[]);
    let (code, _, stderr) = env.gbo(&["zfs", "prune", "--min-keep", "0"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--min-keep 0"), "{stderr}");
    let (code, _, stderr) = env.gbo(&["zfs", "prune", "tank@oops"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("invalid dataset `tank@oops`"), "{stderr}");
    assert!(env.calls().is_empty(), "{:?}", env.calls());
}

#[test]
fn install_timer_writes_the_daily_job() {
    let env = Env::new(&[]);
    let root = tempfile::tempdir().expect("root");
    let (code, stdout, stderr) =
        env.gbo(&["zfs", "install-timer", "tank/data", "--root", &root.path().display().to_string()]);
    assert_eq!(code, 0, "{stderr}");
    // No systemd as PID 1 on these machines: a cron file.
    let cron = std::fs::read_to_string(root.path().join("etc/cron.d/gbo-zfs-daily")).expect("cron file");
    let gbo = env!("CARGO_BIN_EXE_gbo");
    assert!(
        cron.contains(&format!(
            "@daily root {gbo} zfs snapshot --daily tank/data && {gbo} zfs prune --keep-days 7 --min-keep 7 tank/data"
        )),
        "{cron}"
    );
    assert!(stdout.contains("etc/cron.d/gbo-zfs-daily"));
}

/// Reproduction (issue 9, item 9): `gbo zfs prune` destroyed other tools' and hand-made snapshots. By default it now
/// destroys only gbo's dailies and lists the others as kept; `--all-unowned` includes them, listed first in the dry
/// run and printed before anything is destroyed in a real run; LXD's snapshots and gbo snapshot's data captures are
/// never destroyed, even then.
#[test]
fn prune_keeps_what_gbo_did_not_make_unless_all_unowned_which_lists_them_first() {
    let old = now() - 30 * 86_400;
    let mut snaps = Vec::new();
    for i in 0..6 {
        snaps.push((format!("tank/data@{}", daily(i)), old + i * 3_600));
        snaps.push((format!("tank/data@zfs-auto-snap_hourly-2024-01-01-0{i}00"), old + i * 3_600 + 60));
    }
    snaps.push(("tank/data@manual".to_string(), old + 10 * 3_600));
    snaps.push(("tank/data@gbo-default-tables-s1".to_string(), old + 11 * 3_600));
    snaps.push(("tank/lxd/containers/default-tables@copy-6f1c".to_string(), old));
    snaps.push(("tank/lxd/containers/default-tables@snapshot-a".to_string(), old + 60));
    snaps.push(("tank/lxd/containers/default-tables@snapshot-b".to_string(), old + 120));
    let unowned: Vec<String> = (0..6)
        .map(|i| format!("tank/data@zfs-auto-snap_hourly-2024-01-01-0{i}00"))
        .chain(["tank/data@manual".to_string()])
        .collect();
    let env = Env::new(&snaps);

    // Default: gbo's dailies only; the others are listed as kept.
    let (code, stdout, stderr) = env.gbo(&["zfs", "prune", "--min-keep", "2", "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    let would: Vec<&str> =
        stdout.lines().filter_map(|l| l.strip_prefix("would destroy ")).filter(|l| l.contains('@')).collect();
    assert_eq!(would, (0..4).map(|i| format!("tank/data@{}", daily(i))).collect::<Vec<_>>(), "{stdout}");
    for u in &unowned {
        assert!(
            stdout.lines().any(|l| l.starts_with("kept, not made by gbo") && l.ends_with(u.as_str())),
            "{u}: {stdout}"
        );
    }
    let destroy_args: Vec<String> = env.calls().into_iter().filter(|c| c.starts_with("destroy")).collect();
    assert!(destroy_args.iter().all(|c| !c.contains("auto-snap") && !c.contains("manual")), "{destroy_args:?}");

    // --all-unowned --dry-run: the others are listed first, then gbo's.
    let (code, stdout, stderr) = env.gbo(&["zfs", "prune", "--min-keep", "2", "--all-unowned", "--dry-run"]);
    assert_eq!(code, 0, "{stderr}");
    let listed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("would destroy") && l.contains('@')).collect();
    let first_gbo = listed.iter().position(|l| l.contains("gbo-daily")).expect("gbo's are listed");
    let last_unowned = listed.iter().rposition(|l| l.contains("auto-snap") || l.contains("manual")).expect("listed");
    assert!(last_unowned < first_gbo, "the ones gbo did not make come first: {stdout}");
    assert!(listed[..first_gbo].iter().all(|l| l.starts_with("would destroy, not made by gbo")), "{stdout}");
    assert!(!stdout.contains("would destroy tank/lxd") && !stdout.contains("gbo-default-tables"), "{stdout}");
    assert!(env.destroyed().is_empty(), "a dry run destroys nothing");

    // A real run with --all-unowned prints what it will destroy before the first destroy.
    let (code, stdout, before) = env.gbo_to_file(&["zfs", "prune", "--min-keep", "2", "--all-unowned"]);
    assert_eq!(code, 0, "{stdout}");
    // 14 candidates (6 dailies, 6 hourlies, manual; the newest two stay): 11 go, 5 of them not gbo's.
    let going_unowned: Vec<&String> = unowned.iter().take(5).collect();
    for u in &going_unowned {
        assert!(before.lines().any(|l| l.trim().ends_with(u.as_str())), "{u} shown before destroying: {before:?}");
    }
    let mut expected: Vec<String> = going_unowned.iter().map(|s| s.to_string()).collect();
    expected.extend((0..6).map(|i| format!("tank/data@{}", daily(i))));
    expected.sort();
    assert_eq!(env.destroyed(), expected, "{stdout}");
    assert!(env.destroyed().iter().all(|d| !d.contains("tank/lxd") && !d.contains("gbo-default-tables")));

    // JSON names them apart.
    let env = Env::new(&snaps);
    let (code, stdout, stderr) = env.gbo(&["zfs", "prune", "--min-keep", "2", "--dry-run", "--output", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let kept: Vec<&str> =
        report["kept_unowned"].as_array().expect("kept_unowned").iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(kept, unowned.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(report["destroyed_unowned"].as_array().map(Vec::len), Some(0));
}
