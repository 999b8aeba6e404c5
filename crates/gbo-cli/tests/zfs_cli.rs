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
    fn new(snapshots: &[(String, i64)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("zfs-standin"), STANDIN).expect("write");
        std::fs::write(d.join("list"), snapshots.iter().map(|(n, c)| format!("{n}\t{c}\t2048\n")).collect::<String>())
            .expect("list");
        std::fs::write(d.join("log"), "").expect("log");
        let wrapper = format!(
            "#!/bin/bash\nexport ZFS_STANDIN_LOG='{0}/log' ZFS_STANDIN_LIST='{0}/list'\nexec '{0}/zfs-standin' \"$@\"\n",
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

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("log")).expect("log").lines().map(str::to_string).collect()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

#[test]
fn prune_dry_run_json_and_usage_flags_ci_snapshots() {
    let old = now() - 30 * 86_400;
    let mut snaps: Vec<(String, i64)> = (0..40).map(|i| (format!("tank/data@s{i:04}"), old + i * 3_600)).collect();
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
    assert_eq!(destroys, ["destroy -n -v -p tank/data@s0000%s0034"]);
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
