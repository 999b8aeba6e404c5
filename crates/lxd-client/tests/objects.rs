//! Everything around instances against the real daemon: snapshots, backups, images, devices (proxy, disk) on
//! instances and profiles, profiles, storage, projects, networks, events and the events-based wait.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{client, instance_name, lxc, lxc_status, unique, Cleanup, Container, IMAGE};
use futures_util::StreamExt;
use lxd_client::{
    BackupName, BackupOptions, CreateInstance, DeviceName, DiskDevice, ExecRequest, ImageImportOptions, InstanceSource,
    ObjectName, Profile, ProxyAddress, ProxyDevice, SnapshotName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rfc3339_in(seconds: u64) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("+{seconds} seconds"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn snapshots_with_expiry_rename_restore_delete() {
    let lxd = client().await;
    let c = Container::create(&lxd, "snap", false).await;
    lxd.patch_instance(&c.name, &serde_json::json!({ "config": { "user.gbot.version": "1" } })).await.expect("patch");
    let first = SnapshotName::new("before-upgrade").expect("name");
    let expires = rfc3339_in(86_400);
    lxd.create_snapshot(&c.name, &first, Some(&expires)).await.expect("snapshot");
    let listed = lxd.snapshots(&c.name).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "before-upgrade");
    let expiry = lxd.snapshot(&c.name, &first).await.expect("get").expiry().map(str::to_string).expect("has expiry");
    assert!(expiry.starts_with(&expires[..16]), "{expiry} vs {expires}");

    let renamed = SnapshotName::new("v1").expect("name");
    lxd.rename_snapshot(&c.name, &first, &renamed).await.expect("rename");
    assert!(lxd.snapshot(&c.name, &first).await.expect_err("old name").is_not_found());
    assert!(lxc(&["info", c.name.as_str()]).contains("v1"));

    lxd.patch_instance(&c.name, &serde_json::json!({ "config": { "user.gbot.version": "2" } })).await.expect("patch");
    lxd.restore_snapshot(&c.name, &renamed).await.expect("restore");
    assert_eq!(lxc(&["config", "get", c.name.as_str(), "user.gbot.version"]).trim(), "1", "restored");

    lxd.delete_snapshot(&c.name, &renamed).await.expect("delete");
    assert!(lxd.snapshots(&c.name).await.expect("list").is_empty());
}

#[tokio::test]
async fn backup_export_import_delete() {
    let lxd = client().await;
    let c = Container::create(&lxd, "backup", false).await;
    lxd.push_bytes(&c.name, "/root/marker", "backed up\n", lxd_client::FileOptions::root(0o600)).await.expect("marker");
    let b1 = BackupName::new("b1").expect("backup name");
    let options = BackupOptions::new().instance_only(true).expires_at(rfc3339_in(3600));
    lxd.create_backup(&c.name, &b1, &options).await.expect("create backup");
    assert_eq!(
        lxd.backups(&c.name).await.expect("list").iter().map(|b| b.name.as_str()).collect::<Vec<_>>(),
        vec!["b1"]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("backup.tar.gz");
    let mut file = tokio::fs::File::create(&path).await.expect("create");
    let bytes = lxd.export_backup_to(&c.name, &b1, &mut file).await.expect("export");
    file.flush().await.expect("flush");
    assert!(bytes > 1_000_000, "exported {bytes} bytes");
    lxd.delete_backup(&c.name, &b1).await.expect("delete backup");
    assert!(lxd.backups(&c.name).await.expect("list").is_empty());

    let restored = Container::guard(instance_name("restored"));
    let tarball = tokio::fs::File::open(&path).await.expect("open");
    lxd.import_backup(tarball, Some(&restored.name)).await.expect("import");
    assert_eq!(lxd.read_file(&restored.name, "/root/marker").await.expect("marker"), b"backed up\n");
}

#[tokio::test]
async fn image_import_alias_delete() {
    let lxd = client().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tag = unique("img");
    std::fs::create_dir_all(dir.path().join("rootfs/etc")).expect("rootfs");
    std::fs::write(dir.path().join("rootfs/etc/hostname"), &tag).expect("file");
    std::fs::write(dir.path().join("rootfs/etc/os-release"), "ID=gbot\n").expect("file");
    std::fs::write(
        dir.path().join("metadata.yaml"),
        format!("architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  description: {tag}\n  os: gbot\n"),
    )
    .expect("metadata");
    let tar = dir.path().join("image.tar.gz");
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .arg("-czf")
        .arg(&tar)
        .args(["metadata.yaml", "rootfs"])
        .status()
        .expect("tar");
    assert!(status.success());

    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress_sent = sent.clone();
    let progress: lxd_client::Progress =
        std::sync::Arc::new(move |n| progress_sent.store(n, std::sync::atomic::Ordering::Relaxed));
    let file = tokio::fs::File::open(&tar).await.expect("open");
    let fingerprint = lxd.import_image(file, &ImageImportOptions::new().progress(progress)).await.expect("import");
    let _cleanup = Cleanup::lxc(["image", "delete", fingerprint.as_str()]);
    assert_eq!(sent.load(std::sync::atomic::Ordering::Relaxed), std::fs::metadata(&tar).expect("size").len());
    assert_eq!(lxd.image(&fingerprint).await.expect("image").properties.get("description"), Some(&tag));
    // Importing the same tarball again gives the same fingerprint, not an error.
    let again = lxd
        .import_image(tokio::fs::File::open(&tar).await.expect("open"), &ImageImportOptions::new())
        .await
        .expect("re-import");
    assert_eq!(again, fingerprint);

    let alias = format!("{tag}/alias");
    lxd.set_image_alias(&alias, &fingerprint, "test").await.expect("alias");
    lxd.set_image_alias(&alias, &fingerprint, "test").await.expect("alias again");
    assert_eq!(lxd.image_by_alias(&alias).await.expect("by alias").expect("exists").fingerprint, fingerprint);
    assert!(lxc(&["image", "list", "--format", "csv"]).contains(&alias));
    lxd.delete_image_alias(&alias).await.expect("unalias");
    assert!(lxd.image_alias(&alias).await.expect("lookup").is_none());
    lxd.delete_image(&fingerprint).await.expect("delete image");
    assert!(lxd.image(&fingerprint).await.expect_err("gone").is_not_found());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

async fn http_get(port: u16) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn proxy_and_disk_devices_on_instances() {
    let lxd = client().await;
    let c = Container::create(&lxd, "proxy", true).await;
    // A web server inside, on the container's own loopback only (containers have no NIC here).
    let serve = ExecRequest::new([
        "sh",
        "-c",
        "cd /etc && nohup python3 -m http.server 8000 --bind 127.0.0.1 >/dev/null 2>&1 &",
    ]);
    assert_eq!(lxd.exec_output(&c.name, &serve).await.expect("start server").exit_code, 0);

    let port = free_port();
    let device = DeviceName::new("gbot-web").expect("device");
    let proxy = ProxyDevice::new(ProxyAddress::tcp("127.0.0.1", port), ProxyAddress::tcp("127.0.0.1", 8000));
    lxd.add_instance_device(&c.name, &device, proxy.to_config(&device).expect("valid")).await.expect("add proxy");
    assert!(lxc(&["config", "device", "show", c.name.as_str()]).contains(&format!("tcp:127.0.0.1:{port}")));
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        match http_get(port).await {
            Ok(page) if page.contains("200") => break page,
            other => {
                assert!(Instant::now() < deadline, "proxy never answered: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(page.contains("hostname"), "directory listing of /etc through the proxy: {page}");
    lxd.remove_instance_device(&c.name, &device).await.expect("remove proxy");
    assert!(http_get(port).await.is_err(), "nothing listens after removal");

    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("shared.txt"), "from the host\n").expect("write");
    let disk = DeviceName::new("gbot-data").expect("device");
    let config = DiskDevice::new(host.path().to_string_lossy(), "/mnt/gbot").to_config(&disk).expect("valid");
    lxd.add_instance_device(&c.name, &disk, config).await.expect("add disk");
    let out = lxd.exec_output(&c.name, &ExecRequest::new(["cat", "/mnt/gbot/shared.txt"])).await.expect("cat");
    assert_eq!(out.stdout_text(), "from the host\n");
    lxd.remove_instance_device(&c.name, &disk).await.expect("remove disk");
    let out = lxd.exec_output(&c.name, &ExecRequest::new(["test", "-e", "/mnt/gbot/shared.txt"])).await.expect("test");
    assert_ne!(out.exit_code, 0, "unmounted");
}

#[tokio::test]
async fn profiles_and_their_devices() {
    let lxd = client().await;
    let name = unique("prof");
    let _cleanup = Cleanup::lxc(["profile", "delete", name.as_str()]);
    let mut config = BTreeMap::new();
    config.insert("user.gbot.owner".to_string(), "tests".to_string());
    lxd.create_profile(&Profile { name: name.clone(), description: "gbot test".into(), config, ..Default::default() })
        .await
        .expect("create");
    assert!(lxd
        .create_profile(&Profile { name: name.clone(), ..Default::default() })
        .await
        .expect_err("twice")
        .is_conflict());
    assert!(lxd.profiles().await.expect("list").iter().any(|p| p.name == name));

    let profile = ObjectName::new(name.as_str()).expect("profile name");
    let device = DeviceName::new("gbot-tmp").expect("device");
    let disk = DiskDevice::new("/tmp", "/mnt/host-tmp").to_config(&device).expect("valid");
    assert!(lxd.add_profile_device(&profile, &device, disk.clone()).await.expect("add"));
    assert!(!lxd.add_profile_device(&profile, &device, disk).await.expect("again"), "idempotent");
    assert!(lxc(&["profile", "show", name.as_str()]).contains("/mnt/host-tmp"));
    assert!(lxd.remove_profile_device(&profile, &device).await.expect("remove"));
    assert!(!lxd.remove_profile_device(&profile, &device).await.expect("remove again"));
    assert_eq!(
        lxd.profile(&profile).await.expect("get").config.get("user.gbot.owner").map(String::as_str),
        Some("tests")
    );
    lxd.delete_profile(&profile).await.expect("delete");
    assert!(lxd.profile(&profile).await.expect_err("gone").is_not_found());
}

#[tokio::test]
async fn storage_projects_networks() {
    let lxd = client().await;
    let default = ObjectName::new("default").expect("pool name");
    let pools = lxd.storage_pools().await.expect("pools");
    assert!(pools.iter().any(|p| p.name == "default"), "{pools:?}");
    assert!(!lxd.storage_pool(&default).await.expect("pool").driver.is_empty());

    let volume = unique("vol");
    let _vol_cleanup = Cleanup::lxc(["storage", "volume", "delete", "default", volume.as_str()]);
    let volume_name = ObjectName::new(volume.as_str()).expect("volume name");
    lxd.create_storage_volume(&default, &volume_name, BTreeMap::new()).await.expect("create volume");
    assert!(lxd
        .storage_volumes(&default)
        .await
        .expect("volumes")
        .iter()
        .any(|v| v.name == volume && v.kind == "custom"));
    lxd.delete_storage_volume(&default, &volume_name).await.expect("delete volume");
    assert!(!lxd.storage_volumes(&default).await.expect("volumes").iter().any(|v| v.name == volume));

    let project = unique("proj");
    let _proj_cleanup = Cleanup::lxc(["project", "delete", project.as_str()]);
    let project_name = ObjectName::new(project.as_str()).expect("project name");
    lxd.create_project(&project_name, BTreeMap::new()).await.expect("create project");
    assert!(lxd.projects().await.expect("projects").iter().any(|p| p.name == project));
    assert!(lxd.project(&project_name).instances().await.expect("instances in project").is_empty());
    assert_eq!(lxd.project_info(&project_name).await.expect("get").name, project);
    lxd.delete_project(&project_name).await.expect("delete project");
    assert!(lxd.project_info(&project_name).await.expect_err("gone").is_not_found());

    // Interface names are at most 15 characters.
    let bridge = format!("gbot{}", std::process::id() % 10_000_000);
    let _net_cleanup = Cleanup::lxc(["network", "delete", bridge.as_str()]);
    let mut config = BTreeMap::new();
    config.insert("ipv4.address".to_string(), "none".to_string());
    config.insert("ipv6.address".to_string(), "none".to_string());
    let bridge_name = ObjectName::new(bridge.as_str()).expect("network name");
    match lxd.create_network(&bridge_name, "bridge", config).await {
        Ok(()) => {
            let network = lxd.network(&bridge_name).await.expect("get");
            assert!(network.managed && network.kind == "bridge");
            assert!(lxd.networks().await.expect("list").iter().any(|n| n.name == bridge));
            lxd.delete_network(&bridge_name).await.expect("delete");
            assert!(lxd.network(&bridge_name).await.expect_err("gone").is_not_found());
        }
        Err(e) => {
            // The `lxc` CLI must be refused the same way: then this is the daemon's rule, not our bug.
            let (ok, text) = lxc_status(&["network", "create", &bridge, "ipv4.address=none", "ipv6.address=none"]);
            panic!("creating bridge {bridge} failed: {e}; lxc says (ok={ok}): {text}");
        }
    }
}

#[tokio::test]
async fn events_and_events_based_wait() {
    let lxd = client().await;
    let events = lxd.events(&["lifecycle"]).await.expect("subscribe");
    let guard = Container::create(&lxd, "events", false).await;
    let wanted = format!("/1.0/instances/{}", guard.name);
    let seen = tokio::time::timeout(Duration::from_secs(60), async {
        futures_util::pin_mut!(events);
        while let Some(event) = events.next().await {
            let event = event.expect("event");
            if event.action() == Some("instance-created")
                && event.metadata.get("source").and_then(|s| s.as_str()) == Some(wanted.as_str())
            {
                return event;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("instance-created within 60 s");
    assert_eq!(seen.kind, "lifecycle");

    // Events-based wait: start an operation, wait on it through `operation` events.
    let other = Container::guard(instance_name("events-op"));
    let request = CreateInstance::container(other.name.clone(), InstanceSource::alias(IMAGE));
    let operation = lxd.create_instance_operation(&request).await.expect("start creating");
    let done = lxd.wait_operation_events(&operation.id, Duration::from_secs(300)).await.expect("wait via events");
    assert!(done.is_success());
    assert_eq!(lxd.instance(&other.name).await.expect("created").status, "Stopped");
    // Waiting on a finished operation returns at once from the refresh.
    let again = lxd.wait_operation_events(&operation.id, Duration::from_secs(10)).await.expect("already done");
    assert!(again.is_success());
    // A failing operation is an error through this path too.
    let duplicate = lxd.create_instance_operation(&request).await;
    match duplicate {
        Ok(op) => assert!(lxd.wait_operation_events(&op.id, Duration::from_secs(60)).await.is_err()),
        Err(e) => assert!(e.is_conflict() || matches!(e, lxd_client::Error::Api { .. }), "{e:?}"),
    }
}

#[tokio::test]
async fn custom_volume_snapshots_roll_back_the_volume_only() {
    let lxd = client().await;
    let pool = ObjectName::new("default").expect("pool name");
    let volume = unique("vsnap");
    let _vol_cleanup = Cleanup::lxc(["storage", "volume", "delete", "default", volume.as_str()]);
    let volume_name = ObjectName::new(volume.as_str()).expect("volume name");
    assert!(lxd.storage_volume(&pool, &volume_name).await.expect("get missing").is_none());
    lxd.create_storage_volume(&pool, &volume_name, BTreeMap::new()).await.expect("create volume");
    assert_eq!(lxd.storage_volume(&pool, &volume_name).await.expect("get").expect("exists").name, volume);

    let c = Container::guard(instance_name("vsnap"));
    let device = DeviceName::new("data").expect("device");
    let disk = DiskDevice::volume("default", volume.as_str(), "/mnt/v").to_config(&device).expect("valid");
    assert_eq!((disk["pool"].as_str(), disk["source"].as_str()), ("default", volume.as_str()));
    let request =
        CreateInstance::container(c.name.clone(), InstanceSource::alias(IMAGE)).device(&device, disk).start(true);
    lxd.create_instance(&request).await.expect("create with the volume");
    let write = |text: &'static str| {
        ExecRequest::new(["sh", "-c", "printf %s \"$1\" > /mnt/v/f", "sh", text]).timeout(Duration::from_secs(30))
    };
    assert!(lxd.exec_output(&c.name, &write("one")).await.expect("write").success());
    let snapshot = SnapshotName::new("s1").expect("name");
    lxd.create_volume_snapshot(&pool, &volume_name, &snapshot, None).await.expect("volume snapshot");
    let listed = lxd.volume_snapshots(&pool, &volume_name).await.expect("list");
    assert_eq!(listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["s1"]);
    assert!(lxd.exec_output(&c.name, &write("two")).await.expect("write").success());
    lxd.ensure_stopped(&c.name, Duration::from_secs(30)).await.expect("stop");
    lxd.restore_volume_snapshot(&pool, &volume_name, &snapshot).await.expect("restore");
    lxd.ensure_running(&c.name).await.expect("start");
    let read = lxd
        .exec_output(&c.name, &ExecRequest::new(["cat", "/mnt/v/f"]).timeout(Duration::from_secs(30)))
        .await
        .expect("read");
    assert_eq!(read.stdout_text(), "one", "the volume is back at its snapshot");
    lxd.delete_volume_snapshot(&pool, &volume_name, &snapshot).await.expect("delete snapshot");
    assert!(lxd.volume_snapshots(&pool, &volume_name).await.expect("list").is_empty());
    lxd.delete_instance_if_exists(&c.name).await.expect("delete the container");
    lxd.delete_storage_volume(&pool, &volume_name).await.expect("delete volume");
    assert!(lxd.storage_volume(&pool, &volume_name).await.expect("get").is_none());
}

#[tokio::test]
async fn custom_volume_refresh_replaces_the_content_and_keeps_the_snapshots() {
    let lxd = client().await;
    let pool = ObjectName::new("default").expect("pool name");
    let (target, source) = (unique("vref-t"), unique("vref-s"));
    let _target_cleanup = Cleanup::lxc(["storage", "volume", "delete", "default", target.as_str()]);
    let _source_cleanup = Cleanup::lxc(["storage", "volume", "delete", "default", source.as_str()]);
    let (target_name, source_name) =
        (ObjectName::new(target.as_str()).expect("volume name"), ObjectName::new(source.as_str()).expect("name"));
    for name in [&target_name, &source_name] {
        lxd.create_storage_volume(&pool, name, BTreeMap::new()).await.expect("create volume");
    }
    let c = Container::guard(instance_name("vref"));
    let (t_device, s_device) = (DeviceName::new("t").expect("device"), DeviceName::new("s").expect("device"));
    let request = CreateInstance::container(c.name.clone(), InstanceSource::alias(IMAGE))
        .device(&t_device, DiskDevice::volume("default", target.as_str(), "/mnt/t").to_config(&t_device).expect("t"))
        .device(&s_device, DiskDevice::volume("default", source.as_str(), "/mnt/s").to_config(&s_device).expect("s"))
        .start(true);
    lxd.create_instance(&request).await.expect("create with both volumes");
    let sh = |script: &'static str| ExecRequest::new(["sh", "-c", script]).timeout(Duration::from_secs(30));
    let wrote = lxd
        .exec_output(&c.name, &sh("echo old > /mnt/t/f && echo gone > /mnt/t/only-old && echo new > /mnt/s/f"))
        .await
        .expect("write");
    assert!(wrote.success(), "{}", wrote.stderr_text());
    let snapshot = SnapshotName::new("before").expect("name");
    lxd.create_volume_snapshot(&pool, &target_name, &snapshot, None).await.expect("volume snapshot");
    lxd.ensure_stopped(&c.name, Duration::from_secs(30)).await.expect("stop");

    lxd.refresh_storage_volume(&pool, &target_name, &source_name).await.expect("refresh");
    // The configuration is the target's own; a key set through update_storage_volume_config stays.
    let mut config = lxd.storage_volume(&pool, &target_name).await.expect("get").expect("exists").config;
    config.insert("user.gbot.refreshed".into(), "yes".into());
    lxd.update_storage_volume_config(&pool, &target_name, config).await.expect("update config");
    let after = lxd.storage_volume(&pool, &target_name).await.expect("get").expect("exists");
    assert_eq!(after.config.get("user.gbot.refreshed").map(String::as_str), Some("yes"), "{after:?}");
    let snapshots = lxd.volume_snapshots(&pool, &target_name).await.expect("list");
    assert_eq!(snapshots.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["before"], "the snapshot is kept");
    lxd.ensure_running(&c.name).await.expect("start");
    let read = lxd.exec_output(&c.name, &sh("cat /mnt/t/f; ls /mnt/t")).await.expect("read");
    assert_eq!(read.stdout_text(), "new\nf\n", "the target holds exactly the source's files");

    lxd.ensure_stopped(&c.name, Duration::from_secs(30)).await.expect("stop");
    lxd.restore_volume_snapshot(&pool, &target_name, &snapshot).await.expect("restore the kept snapshot");
    lxd.ensure_running(&c.name).await.expect("start");
    let read = lxd.exec_output(&c.name, &sh("cat /mnt/t/f /mnt/t/only-old")).await.expect("read");
    assert_eq!(read.stdout_text(), "old\ngone\n", "the snapshot taken before the refresh brings the old files back");
    lxd.delete_instance_if_exists(&c.name).await.expect("delete the container");
    for name in [&target_name, &source_name] {
        lxd.delete_storage_volume(&pool, name).await.expect("delete volume");
    }
}

#[tokio::test]
async fn custom_volume_backup_export_import_delete() {
    let lxd = client().await;
    let pool = ObjectName::new("default").expect("pool name");
    let volume = unique("vbak");
    let copy = unique("vbak-copy");
    let _vol_cleanup = Cleanup::lxc(["storage", "volume", "delete", "default", volume.as_str()]);
    let _copy_cleanup = Cleanup::lxc(["storage", "volume", "delete", "default", copy.as_str()]);
    let volume_name = ObjectName::new(volume.as_str()).expect("volume name");
    let copy_name = ObjectName::new(copy.as_str()).expect("volume name");
    lxd.create_storage_volume(&pool, &volume_name, BTreeMap::new()).await.expect("create volume");
    let c = Container::guard(instance_name("vbak"));
    let device = DeviceName::new("data").expect("device");
    let disk = DiskDevice::volume("default", volume.as_str(), "/mnt/v").to_config(&device).expect("valid");
    let request =
        CreateInstance::container(c.name.clone(), InstanceSource::alias(IMAGE)).device(&device, disk).start(true);
    lxd.create_instance(&request).await.expect("create with the volume");
    let write =
        ExecRequest::new(["sh", "-c", "printf 'backed up in a volume' > /mnt/v/f"]).timeout(Duration::from_secs(30));
    assert!(lxd.exec_output(&c.name, &write).await.expect("write").success());

    let b1 = BackupName::new("b1").expect("backup name");
    let options = BackupOptions::new().instance_only(true).compression("none").expires_at(rfc3339_in(3600));
    lxd.create_volume_backup(&pool, &volume_name, &b1, &options).await.expect("create volume backup");
    let listed = lxd.volume_backups(&pool, &volume_name).await.expect("list");
    assert_eq!(listed.iter().map(|b| (b.name.as_str(), b.volume_only)).collect::<Vec<_>>(), [("b1", true)]);
    let mut tarball = Vec::new();
    let bytes = lxd.export_volume_backup_to(&pool, &volume_name, &b1, &mut tarball).await.expect("export");
    assert_eq!(bytes as usize, tarball.len());
    // `compression_algorithm: none`: a plain tar (the `ustar` magic at 257), the file's bytes in it as they are.
    assert_eq!(&tarball[257..262], b"ustar", "a plain tar");
    assert!(tarball.windows(21).any(|w| w == b"backed up in a volume"), "the file's content is in the tarball");
    lxd.delete_volume_backup(&pool, &volume_name, &b1).await.expect("delete backup");
    assert!(lxd.volume_backups(&pool, &volume_name).await.expect("list").is_empty());

    lxd.import_volume_backup(&pool, std::io::Cursor::new(tarball), &copy_name).await.expect("import");
    assert!(lxd.storage_volume(&pool, &copy_name).await.expect("get").is_some());
    lxc(&[
        "config",
        "device",
        "add",
        c.name.as_str(),
        "copy",
        "disk",
        "pool=default",
        &format!("source={copy}"),
        "path=/mnt/w",
    ]);
    let read = lxd
        .exec_output(&c.name, &ExecRequest::new(["cat", "/mnt/w/f"]).timeout(Duration::from_secs(30)))
        .await
        .expect("read");
    assert_eq!(read.stdout_text(), "backed up in a volume", "the imported volume holds the file");
    lxd.delete_instance_if_exists(&c.name).await.expect("delete the container");
    lxd.delete_storage_volume(&pool, &copy_name).await.expect("delete the copy");
    lxd.delete_storage_volume(&pool, &volume_name).await.expect("delete volume");
}
