//! Snapshots against the real LXD daemon: the container **and** its mounted host directory are captured and
//! restored together, on ext4 (frozen copy), on a loop-mounted btrfs stack dir (subvolume snapshot) and on a
//! zfs-fuse dataset (ZFS snapshot, restored through a clone); tenant snapshots in parallel; plain `lxc snapshot`
//! ones restore container-only; tiered prune with a dry run.

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gbo_ops::inventory::{KEY_ROLE, KEY_STACK_DIR, KEY_TENANT};
use gbo_ops::snapshot::{self, CaptureMethod, CreateOptions, RetentionPolicy, SnapshotError};
use gbo_tests::TestContainer;
use lxd_client::{DeviceName, DiskDevice, ExecRequest};

/// Idmap base of unprivileged containers here: container root is host uid 100000.
const ROOT_UID: u32 = 100_000;

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A container with `<stack>/tables/data` mounted at /opt/gbo/data, recorded as gbo would; started when `start`.
async fn container_with_data(tag: &str, stack: &Path, tenant: Option<&str>, start: bool) -> TestContainer {
    let data = stack.join("tables").join("data");
    if !data.exists() {
        std::fs::create_dir_all(&data).expect("data dir");
    }
    chown(&data, Some(ROOT_UID), Some(ROOT_UID)).expect("chown to the container's root");
    let device = DeviceName::new("gbo-data").expect("name");
    let disk = DiskDevice::new(data.display().to_string(), "/opt/gbo/data").to_config(&device).expect("disk");
    let stack_s = stack.display().to_string();
    let tenant = tenant.map(str::to_string);
    TestContainer::create_with(tag, start, move |req| {
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
    let out = c.lxd.exec_output(&c.name, &req).await.expect("exec");
    assert!(out.success(), "{}", out.stderr_text());
}

async fn round_trip(stack: &Path, expected_method: &str) {
    let lxd = gbo_tests::lxd().await;
    let c = container_with_data("snapdata", stack, None, true).await;
    let data = stack.join("tables/data");
    write_inside(&c, "state.txt", "before").await;
    let managed = snapshot::container(&lxd, c.name.as_str()).await.expect("container");
    let name = snapshot::snapshot_name("s1").expect("name");
    let info =
        snapshot::create(&lxd, &managed, &name, &CreateOptions { expires: "7d".parse().ok() }).await.expect("create");
    assert_eq!(info.covers, "container+data");
    assert_eq!(info.data.len(), 1);
    assert_eq!(info.data[0].method.label(), expected_method, "{:?}", info.data[0]);
    assert!(info.expires_at.is_some());
    assert!(snapshot::manifest_path(&managed, "s1").exists());
    // On ZFS: the pool's datasets and mounts, which every restore must leave as they are (its clone goes away).
    let zfs_pool = match &info.data[0].method {
        CaptureMethod::ZfsSnapshot { dataset, snapshot, mountpoint } => {
            assert!(data.starts_with(mountpoint), "{data:?} is not under the dataset's mountpoint {mountpoint:?}");
            let pool = dataset.split('/').next().unwrap_or(dataset).to_string();
            assert!(zfs_snapshots(&pool).contains(&format!("{dataset}@{snapshot}")), "{:?}", zfs_snapshots(&pool));
            Some(pool)
        }
        _ => None,
    };
    let zfs_state = || zfs_pool.as_ref().map(|pool| (zfs_datasets(pool), zfs_mounts(pool)));
    let zfs_before = zfs_state();
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
    let methods: Vec<&str> = listed[0].data.iter().map(|d| d.method.label()).collect();
    assert_eq!(methods, [expected_method], "list names how the data was captured");

    let report = snapshot::restore(&lxd, &managed, &name, true).await.expect("restore");
    assert!(report.restarted);
    assert_eq!(report.data_restored, vec![data.clone()]);
    let safety = report.safety_snapshot.expect("safety snapshot");
    assert_eq!(zfs_state(), zfs_before, "the restore left a clone, dataset or mount behind");
    assert_eq!(std::fs::read_to_string(data.join("state.txt")).expect("read"), "before");
    assert!(!data.join("new.txt").exists(), "a write made after the snapshot survived the restore");
    // Inside the container too, and the data is still owned by the container's root.
    let out = c.lxd.exec_output(&c.name, &ExecRequest::new(["cat", "/opt/gbo/data/state.txt"])).await.expect("exec");
    assert_eq!(out.stdout_text(), "before");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&data).expect("meta").uid(), ROOT_UID);

    // The safety snapshot holds the state before the restore: restoring it brings "after" back.
    let safety_name = snapshot::snapshot_name(&safety).expect("name");
    snapshot::restore(&lxd, &managed, &safety_name, false).await.expect("restore safety");
    assert_eq!(std::fs::read_to_string(data.join("state.txt")).expect("read"), "after");
    assert!(data.join("new.txt").exists());
    assert_eq!(zfs_state(), zfs_before, "the restore left a clone, dataset or mount behind");

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
        CaptureMethod::BtrfsSnapshot { location } | CaptureMethod::FrozenCopy { location } => {
            assert!(!location.exists(), "{location:?}")
        }
        CaptureMethod::ZfsSnapshot { dataset, snapshot, .. } => {
            let name = format!("{dataset}@{snapshot}");
            let pool = dataset.split('/').next().unwrap_or(dataset);
            assert!(!zfs_snapshots(pool).contains(&name), "{name} survived `snapshot delete`");
        }
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
        sh(&format!(
            "truncate -s 256M {0} && mkfs.btrfs -q {0} && mount -o loop {0} {1}",
            image.display(),
            mount_dir.path().display()
        ));
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
    let a = container_with_data("snapta", stack.path(), Some(&tenant), true).await;
    // The second container has no host mount: container-only, but still part of the tenant.
    let t2 = tenant.clone();
    let b =
        TestContainer::create_with("snaptb", false, move |r| r.config(KEY_TENANT, t2).config(KEY_ROLE, "cache")).await;
    let tenant_name = gbo_components::TenantName::new(&tenant).expect("a tenant name");
    let containers = snapshot::tenant_containers(&lxd, &tenant_name).await.expect("tenant");
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
        snapshot::create(
            &lxd,
            &managed,
            &snapshot::snapshot_name(&format!("p{i}")).expect("n"),
            &CreateOptions::default(),
        )
        .await
        .expect("create");
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

use gbo_tests::zfs_fuse::{run, Pool as ZfsPool};

/// Every filesystem and volume of a pool (`-r`, which zfs-fuse's `list` has; it has no `-p`).
fn zfs_datasets(pool: &str) -> Vec<String> {
    let mut names: Vec<String> = run(&["zfs", "list", "-H", "-o", "name", "-t", "filesystem,volume", "-r", pool])
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

fn zfs_snapshots(pool: &str) -> Vec<String> {
    run(&["zfs", "list", "-H", "-o", "name", "-t", "snapshot"])
        .lines()
        .filter(|l| l.starts_with(&format!("{pool}/")) || l.starts_with(&format!("{pool}@")))
        .map(str::to_string)
        .collect()
}

/// The ZFS/FUSE mounts of a pool, from mountinfo.
fn zfs_mounts(pool: &str) -> Vec<String> {
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter_map(|l| {
            l.split_once(" - ").map(|(left, right)| {
                (left.split(' ').nth(4).unwrap_or("").to_string(), right.split(' ').nth(1).unwrap_or("").to_string())
            })
        })
        .filter(|(_, source)| source == pool || source.starts_with(&format!("{pool}/")))
        .map(|(point, source)| format!("{source} on {point}"))
        .collect();
    mounts.sort();
    mounts
}

/// ZFS: the stack dir is a zfs-fuse dataset, `<stack>/tables/data` a plain directory in it, mounted into the
/// container by LXD like any host directory. LXD bind-mounts the FUSE mountpoint without trouble: zfs-fuse mounts
/// every dataset with `allow_other,default_permissions`, so the container's processes (host uids from 100000) get
/// in and the kernel checks ordinary permissions on the uids the files carry (the data dir is owned by 100000, the
/// container's root). The container runs throughout, so the capture happens with it frozen, as in production.
///
/// Besides the round trip: the capture is `dataset@gbo-<container>-<snapshot>` on the dataset holding the stack
/// dir; each restore goes through a clone that is gone afterwards (no stray dataset, no leftover mount); `delete`
/// destroys the ZFS snapshot (zfs-fuse: one snapshot per `destroy` call, no `list -p`).
#[tokio::test(flavor = "multi_thread")]
async fn zfs_stack_dir_is_captured_by_a_dataset_snapshot_and_restored_through_a_clone() {
    let pool = ZfsPool::new();
    let dataset = format!("{}/stack", pool.name);
    run(&["zfs", "create", &dataset]);
    let stack = pool.mount.join("stack");
    let fs = sh(&format!("stat -f -c %T {}", stack.display()));
    assert!(fs.trim().starts_with("fuse"), "expected the zfs-fuse dataset under {}, got {fs}", stack.display());
    assert!(zfs_snapshots(&pool.name).is_empty());
    round_trip(&stack, "zfs").await;
    // Delete removed s1's ZFS snapshot; only the safety snapshot's stays (its LXD snapshot goes with the container).
    let left = zfs_snapshots(&pool.name);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].starts_with(&format!("{dataset}@gbo-")) && left[0].contains("-safety-"), "{left:?}");
    assert_eq!(zfs_datasets(&pool.name), [pool.name.clone(), dataset], "no stray clone or dataset");
}

/// ZFS, host side: the stack dir is a plain directory in the pool's **root** dataset, and the container's device
/// names it through a symlink (as `/srv/gbo` → `/tank/gbo`). The container stays stopped (nothing to freeze) and
/// the data is written on the host. Restore must clone inside the pool (a root dataset has no sibling dataset
/// name) and bring back exactly the captured directory, leaving the rest of the dataset alone; `snapshot delete`
/// must succeed when the ZFS snapshot was already destroyed by hand.
#[tokio::test(flavor = "multi_thread")]
async fn zfs_root_dataset_behind_a_symlink_restores_only_the_captured_directory() {
    let pool = ZfsPool::new();
    let real = pool.mount.join("gbo");
    std::fs::create_dir_all(real.join("tables/data")).expect("mkdir");
    std::fs::write(real.join("unrelated.txt"), "before").expect("write");
    let links = tempfile::tempdir().expect("tempdir");
    let stack = links.path().join("stack");
    std::os::unix::fs::symlink(&real, &stack).expect("symlink");
    let data = stack.join("tables/data");

    let lxd = gbo_tests::lxd().await;
    let c = container_with_data("snapzr", &stack, None, false).await;
    std::fs::write(data.join("state.txt"), "before").expect("write");
    let managed = snapshot::container(&lxd, c.name.as_str()).await.expect("container");
    assert_eq!(managed.mounts[0].host_path, data, "the device names the symlinked path");
    let name = snapshot::snapshot_name("s1").expect("name");
    let info = snapshot::create(&lxd, &managed, &name, &CreateOptions::default()).await.expect("create");
    let CaptureMethod::ZfsSnapshot { dataset, snapshot: zsnap, mountpoint } = &info.data[0].method else {
        panic!("not captured by ZFS: {:?}", info.data)
    };
    assert_eq!((dataset.as_str(), mountpoint.as_path()), (pool.name.as_str(), pool.mount.as_path()));
    let manifest = snapshot::read_manifest(&managed, "s1").expect("manifest");
    assert!(!manifest.frozen, "a stopped container is not frozen");
    let before = (zfs_datasets(&pool.name), zfs_mounts(&pool.name));

    std::fs::write(data.join("state.txt"), "after").expect("write");
    std::fs::write(data.join("new.txt"), "written after the snapshot").expect("write");
    std::fs::write(real.join("unrelated.txt"), "after").expect("write");
    let report = snapshot::restore(&lxd, &managed, &name, false).await.expect("restore");
    assert!(!report.restarted);
    assert_eq!(report.data_restored, vec![data.clone()]);
    let mut entries: Vec<String> = std::fs::read_dir(&data)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["state.txt"], "exactly the captured directory comes back, not the dataset's root");
    assert_eq!(std::fs::read_to_string(data.join("state.txt")).expect("read"), "before");
    assert_eq!(
        std::fs::read_to_string(real.join("unrelated.txt")).expect("read"),
        "after",
        "the rest of the dataset is not rolled back"
    );
    assert_eq!(
        (zfs_datasets(&pool.name), zfs_mounts(&pool.name)),
        before,
        "the restore left a clone, dataset or mount behind"
    );

    run(&["zfs", "destroy", &format!("{dataset}@{zsnap}")]);
    snapshot::delete(&lxd, &managed, &name).await.expect("delete after the ZFS snapshot was destroyed by hand");
    assert!(!snapshot::manifest_path(&managed, "s1").exists());
    assert!(snapshot::list(&lxd, &managed).await.expect("list").is_empty());
}

/// A restore that fails half way (here: the captured copy was removed by hand) touches nothing it cannot restore,
/// leaves the container stopped, and names the safety snapshot that brings the state before back.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_that_cannot_finish_names_the_safety_snapshot_and_leaves_data_alone() {
    let stack = tempfile::tempdir().expect("tempdir");
    let lxd = gbo_tests::lxd().await;
    let c = container_with_data("snaplost", stack.path(), None, true).await;
    let data = stack.path().join("tables/data");
    write_inside(&c, "state.txt", "before").await;
    let managed = snapshot::container(&lxd, c.name.as_str()).await.expect("container");
    let name = snapshot::snapshot_name("s1").expect("name");
    let info = snapshot::create(&lxd, &managed, &name, &CreateOptions::default()).await.expect("create");
    let CaptureMethod::FrozenCopy { location } = &info.data[0].method else {
        panic!("ext4 is captured by a copy: {:?}", info.data[0])
    };
    write_inside(&c, "state.txt", "after").await;
    std::fs::remove_dir_all(location).expect("lose the capture");

    let err = snapshot::restore(&lxd, &managed, &name, true).await.expect_err("capture lost");
    let SnapshotError::RestoreFailed(failure) = &err else { panic!("{err:?}") };
    let safety = failure.safety.as_deref().expect("a safety snapshot was taken");
    assert!(failure.restored.is_empty());
    let message = err.to_string();
    assert!(
        message.contains("is missing")
            && message.contains("left stopped")
            && message.contains(&format!("gbo snapshot restore {} {safety} --no-safety", c.name)),
        "{message}"
    );
    assert_eq!(std::fs::read_to_string(data.join("state.txt")).expect("read"), "after", "the host data was left alone");
    assert_eq!(lxd.instance(&c.name).await.expect("instance").status, "Stopped");

    // The advice works: the safety snapshot brings the state from before back.
    let safety = snapshot::snapshot_name(safety).expect("name");
    snapshot::restore(&lxd, &managed, &safety, false).await.expect("restore safety");
    lxd.set_state(&c.name, &lxd_client::StateChange::new(lxd_client::StateAction::Start)).await.expect("start");
    let out = c.lxd.exec_output(&c.name, &ExecRequest::new(["cat", "/opt/gbo/data/state.txt"])).await.expect("exec");
    assert_eq!(out.stdout_text(), "after");
}
