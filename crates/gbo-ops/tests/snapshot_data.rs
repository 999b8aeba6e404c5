//! Snapshots against the real LXD daemon: the container **and** its mounted host directory are captured and
//! restored together, on ext4 (frozen copy) and on a loop-mounted btrfs stack dir (subvolume snapshot); tenant
//! snapshots in parallel; plain `lxc snapshot` ones restore container-only; tiered prune with a dry run.

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gbo_ops::inventory::{KEY_STACK_DIR, KEY_TENANT, KEY_ROLE};
use gbo_ops::snapshot::{self, CaptureMethod, CreateOptions, RetentionPolicy};
use gbo_tests::TestContainer;
use lxd_client::{DiskDevice, DeviceName, ExecRequest};

/// Idmap base of unprivileged containers here: container root is host uid 100000.
const ROOT_UID: u32 = 100_000;

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A container with `<stack>/tables/data` mounted at /opt/gbo/data, recorded as gbo would.
async fn container_with_data(tag: &str, stack: &Path, tenant: Option<&str>) -> TestContainer {
    let data = stack.join("tables").join("data");
    if !data.exists() {
        std::fs::create_dir_all(&data).expect("data dir");
    }
    chown(&data, Some(ROOT_UID), Some(ROOT_UID)).expect("chown to the container's root");
    let device = DeviceName::new("gbo-data").expect("name");
    let disk = DiskDevice::new(data.display().to_string(), "/opt/gbo/data").to_config(&device).expect("disk");
    let stack_s = stack.display().to_string();
    let tenant = tenant.map(str::to_string);
    TestContainer::create_with(tag, true, move |req| {
        let req = req.config(KEY_STACK_DIR, stack_s).device(&device, disk);
        match tenant {
            Some(t) => req.config(KEY_TENANT, t).config(KEY_ROLE, "tables"),
            None => req,
        }
    })
    .await
}

async fn write_inside(c: &TestContainer, file: &str, text: &str) {
    let req = ExecRequest::new(["sh", "-c", &format!("printf %s '{text}' > /opt/gbo/data/{file} && sync")]);
    let out = c.lxd.exec(&c.name, &req).await.expect("exec");
    assert!(out.success(), "{}", out.stderr_text());
}

async fn round_trip(stack: &Path, expected_method: &str) {
    let lxd = gbo_tests::lxd().await;
    let c = container_with_data("snapdata", stack, None).await;
    let data = stack.join("tables/data");
    write_inside(&c, "state.txt", "before").await;
    let managed = snapshot::container(&lxd, c.name.as_str()).await.expect("container");
    let name = snapshot::snapshot_name("s1").expect("name");
    let info = snapshot::create(&lxd, &managed, &name, &CreateOptions { expires: "7d".parse().ok() }).await.expect("create");
    assert_eq!(info.covers, "container+data");
    assert_eq!(info.data.len(), 1);
    assert_eq!(info.data[0].method.label(), expected_method, "{:?}", info.data[0]);
    assert!(info.expires_at.is_some());
    assert!(snapshot::manifest_path(&managed, "s1").exists());
    // The container is running again (thawed), and writes after the snapshot land on the host mount.
    assert_eq!(lxd.instance(&c.name).await.expect("instance").status, "Running");
    write_inside(&c, "state.txt", "after").await;
    write_inside(&c, "new.txt", "written after the snapshot").await;
    assert_eq!(std::fs::read_to_string(data.join("state.txt")).expect("read"), "after");

    // A plain `lxc snapshot` shows up as container-only.
    sh(&format!("lxc snapshot {} plain", c.name));
    let listed = snapshot::list(&lxd, &managed).await.expect("list");
    let covers: Vec<(&str, &str)> = listed.iter().map(|i| (i.name.as_str(), i.covers.as_str())).collect();
    assert_eq!(covers, [("s1", "container+data"), ("plain", "container")]);

    let report = snapshot::restore(&lxd, &managed, &name, true).await.expect("restore");
    assert!(report.restarted);
    assert_eq!(report.data_restored, vec![data.clone()]);
    let safety = report.safety_snapshot.expect("safety snapshot");
    assert_eq!(std::fs::read_to_string(data.join("state.txt")).expect("read"), "before");
    assert!(!data.join("new.txt").exists(), "a write made after the snapshot survived the restore");
    // Inside the container too, and the data is still owned by the container's root.
    let out = c.lxd.exec(&c.name, &ExecRequest::new(["cat", "/opt/gbo/data/state.txt"])).await.expect("exec");
    assert_eq!(out.stdout_text(), "before");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&data).expect("meta").uid(), ROOT_UID);

    // The safety snapshot holds the state before the restore: restoring it brings "after" back.
    let safety_name = snapshot::snapshot_name(&safety).expect("name");
    snapshot::restore(&lxd, &managed, &safety_name, false).await.expect("restore safety");
    assert_eq!(std::fs::read_to_string(data.join("state.txt")).expect("read"), "after");
    assert!(data.join("new.txt").exists());

    // Restoring the hand-made snapshot touches the container only.
    let plain = snapshot::snapshot_name("plain").expect("name");
    let report = snapshot::restore(&lxd, &managed, &plain, false).await.expect("restore plain");
    assert!(report.data_restored.is_empty());
    assert_eq!(std::fs::read_to_string(data.join("state.txt")).expect("read"), "after");

    // Delete removes LXD's snapshot and the captured data.
    let captured = info.data[0].clone();
    snapshot::delete(&lxd, &managed, &name).await.expect("delete");
    assert!(!snapshot::manifest_path(&managed, "s1").exists());
    match &captured.method {
        CaptureMethod::BtrfsSnapshot { location } | CaptureMethod::FrozenCopy { location } => assert!(!location.exists(), "{location:?}"),
        CaptureMethod::ZfsSnapshot { .. } => {}
    }
    let err = snapshot::delete(&lxd, &managed, &name).await.expect_err("deleted twice");
    assert!(err.to_string().contains("has no snapshot `s1`"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ext4_stack_dir_is_captured_by_a_frozen_copy_and_restored() {
    let stack = tempfile::tempdir().expect("tempdir");
    let fs = sh(&format!("stat -f -c %T {}", stack.path().display()));
    assert!(fs.trim().starts_with("ext"), "expected ext4 under the temp dir, got {fs}");
    round_trip(stack.path(), "copy").await;
}

/// A btrfs filesystem in a loop-mounted file, unmounted on drop.
struct LoopBtrfs {
    mount: PathBuf,
    _file: tempfile::TempDir,
    _mount_dir: tempfile::TempDir,
}

impl LoopBtrfs {
    fn new() -> Self {
        let file_dir = tempfile::tempdir().expect("tempdir");
        let mount_dir = tempfile::tempdir().expect("tempdir");
        let image = file_dir.path().join("stack.btrfs");
        sh(&format!("truncate -s 256M {0} && mkfs.btrfs -q {0} && mount -o loop {0} {1}", image.display(), mount_dir.path().display()));
        Self { mount: mount_dir.path().to_path_buf(), _file: file_dir, _mount_dir: mount_dir }
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn btrfs_stack_dir_is_captured_by_a_subvolume_snapshot_and_restored() {
    let fs = LoopBtrfs::new();
    std::fs::create_dir_all(fs.mount.join("tables")).expect("mkdir");
    sh(&format!("btrfs subvolume create {}/tables/data", fs.mount.display()));
    round_trip(&fs.mount, "btrfs").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_snapshot_is_parallel_and_prune_keeps_tiers() {
    let lxd = gbo_tests::lxd().await;
    let stack = tempfile::tempdir().expect("tempdir");
    let tenant = gbo_tests::unique_name("tn");
    let a = container_with_data("snapta", stack.path(), Some(&tenant)).await;
    // The second container has no host mount: container-only, but still part of the tenant.
    let t2 = tenant.clone();
    let b = TestContainer::create_with("snaptb", false, move |r| r.config(KEY_TENANT, t2).config(KEY_ROLE, "cache")).await;
    let containers = snapshot::tenant_containers(&lxd, &tenant).await.expect("tenant");
    assert_eq!(containers.len(), 2);
    let name = snapshot::snapshot_name("nightly").expect("name");
    let results = snapshot::create_many(&lxd, &containers, &name, &CreateOptions::default()).await;
    let covers: Vec<String> = results.into_iter().map(|r| r.expect("snapshot").covers).collect();
    let mut expected = [(a.name.to_string(), "container+data"), (b.name.to_string(), "container")];
    expected.sort();
    assert_eq!(covers, expected.iter().map(|e| e.1.to_string()).collect::<Vec<_>>());

    // Four more snapshots on `a`; keep the last 2: the dry run names exactly the three oldest and deletes nothing.
    let managed = snapshot::container(&lxd, a.name.as_str()).await.expect("container");
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        snapshot::create(&lxd, &managed, &snapshot::snapshot_name(&format!("p{i}")).expect("n"), &CreateOptions::default()).await.expect("create");
    }
    let policy = RetentionPolicy { keep_last: 2, keep_daily: 0, keep_weekly: 0 };
    let dry = snapshot::prune(&lxd, &managed, policy, true).await.expect("dry run");
    let going: Vec<&str> = dry.verdicts.iter().filter(|v| !v.keep()).map(|v| v.name.as_str()).collect();
    assert_eq!(going, ["p1", "p0", "nightly"]);
    assert_eq!(snapshot::list(&lxd, &managed).await.expect("list").len(), 5);
    let nightly_data = snapshot::manifest_path(&managed, "nightly");
    assert!(nightly_data.exists());
    let applied = snapshot::prune(&lxd, &managed, policy, false).await.expect("prune");
    assert!(applied.applied);
    let left: Vec<String> = snapshot::list(&lxd, &managed).await.expect("list").into_iter().map(|i| i.name).collect();
    assert_eq!(left, ["p2", "p3"]);
    assert!(!nightly_data.exists(), "pruning a snapshot removes its host data too");
    // A policy that keeps nothing is refused before anything happens.
    let err = snapshot::prune(&lxd, &managed, RetentionPolicy::default(), false).await.expect_err("empty policy");
    assert!(err.to_string().contains("would delete every snapshot"), "{err}");
    assert_eq!(snapshot::list(&lxd, &managed).await.expect("list").len(), 2);
}
