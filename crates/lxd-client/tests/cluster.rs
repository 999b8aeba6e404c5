//! The cluster calls against the real three-member cluster of `cargo xtask lxd-cluster up` (lxc remote
//! `gbot-cluster`): members and their status, creation on a chosen member, a move between members, and custom
//! volumes of one name on two members of a member-local pool, each addressed with `target=`.

mod common;

use common::{instance_name, unique, Cleanup, IMAGE};
use lxd_client::{BackupName, BackupOptions, Client, CreateInstance, InstanceSource, ObjectName, SnapshotName};

fn cluster() -> Client {
    Client::from_lxc_remote("gbot-cluster")
        .unwrap_or_else(|e| panic!("no lxc remote gbot-cluster ({e}); run `cargo xtask lxd-cluster up`"))
}

#[tokio::test]
async fn members_are_listed_and_a_stopped_instance_moves_to_another_member() {
    let lxd = cluster();
    let info = lxd.cluster().await.expect("GET /1.0/cluster");
    assert!(info.enabled, "gbot-cluster is a cluster");
    let members = lxd.cluster_members().await.expect("members");
    let names: Vec<&str> = members.iter().map(|m| m.server_name.as_str()).collect();
    for wanted in ["m1", "m2", "m3"] {
        assert!(names.contains(&wanted), "member {wanted} in {names:?}");
    }
    let m2 = members.iter().find(|m| m.server_name == "m2").expect("m2");
    assert_eq!(m2.host().as_deref(), Some("127.0.0.3"));
    assert!(m2.groups.iter().any(|g| g == "default"), "{:?}", m2.groups);

    let name = instance_name("mv");
    let _cleanup = Cleanup::lxc(["delete", "--force", &format!("gbot-cluster:{name}")]);
    let request = CreateInstance::container(name.clone(), InstanceSource::alias(IMAGE));
    lxd.target("m1").create_instance(&request).await.expect("create on m1");
    assert_eq!(lxd.instance(&name).await.expect("get").location, "m1");
    lxd.move_instance_to_member(&name, "m2").await.expect("move to m2");
    let moved = lxd.instance(&name).await.expect("get after the move");
    assert_eq!(moved.location, "m2", "LXD reports the new member");
    // The same handle with a target of its own still moves where it is told.
    lxd.target("m1").move_instance_to_member(&name, "m3").await.expect("move to m3");
    assert_eq!(lxd.instance(&name).await.expect("get").location, "m3");
    lxd.delete_instance(&name).await.expect("delete");

    // A standalone daemon is no cluster and has no members.
    let solo = Client::from_lxc_remote("gbot-solo").expect("remote gbot-solo");
    assert!(!solo.cluster().await.expect("solo cluster").enabled);
    assert!(solo.cluster_members().await.expect("solo members").is_empty());
}

/// A custom volume is copied from m1 to m2 under the same name by streaming its backup export straight into an
/// import (what `gbo move` does for member-local volumes): every volume call of a targeted handle carries
/// `target=` (reads, snapshots, backups, export, import, delete), so two volumes of one name on two members of the
/// btrfs pool are each reached, and the snapshot travels in the optimized (btrfs send) backup.
#[tokio::test]
async fn a_volume_of_one_name_on_two_members_is_addressed_by_target_and_copied_by_backup() {
    let lxd = cluster();
    let pool = ObjectName::new("default").expect("pool name");
    let volume = ObjectName::new(unique("vol")).expect("volume name");
    let _m1 = Cleanup::lxc(["storage", "volume", "delete", "gbot-cluster:default", volume.as_str(), "--target", "m1"]);
    let _m2 = Cleanup::lxc(["storage", "volume", "delete", "gbot-cluster:default", volume.as_str(), "--target", "m2"]);
    let (m1, m2) = (lxd.target("m1"), lxd.target("m2"));
    let labels = [("user.gbot".to_string(), "moved".to_string())].into_iter().collect();
    m1.create_storage_volume(&pool, &volume, labels).await.expect("create on m1");
    assert!(m2.storage_volume(&pool, &volume).await.expect("read on m2").is_none(), "not on m2 yet");
    let on_m1 = m1.storage_volume(&pool, &volume).await.expect("read on m1").expect("on m1");
    assert_eq!(on_m1.location, "m1");
    let snapshot = SnapshotName::new("s1").expect("snapshot name");
    m1.create_volume_snapshot(&pool, &volume, &snapshot, None).await.expect("snapshot on m1");

    let backup = BackupName::new("gbot-copy").expect("backup name");
    let options = BackupOptions::new().instance_only(false).optimized_storage(true).compression("none");
    m1.create_volume_backup(&pool, &volume, &backup, &options).await.expect("backup on m1");
    assert_eq!(m1.volume_backups(&pool, &volume).await.expect("backups on m1").len(), 1);
    let export = m1.export_volume_backup(&pool, &volume, &backup).await.expect("export from m1");
    m2.import_volume_backup(&pool, export, &volume).await.expect("import on m2 under the same name");
    m1.delete_volume_backup(&pool, &volume, &backup).await.expect("delete the backup on m1");

    // Both exist now, one per member; each targeted read finds its own.
    let on_m2 = m2.storage_volume(&pool, &volume).await.expect("read on m2").expect("on m2");
    assert_eq!(on_m2.location, "m2");
    assert_eq!(on_m2.config.get("user.gbot").map(String::as_str), Some("moved"), "config travels: {:?}", on_m2.config);
    // A snapshot on m2's copy only: each member's list is its own (LXD 5.0 answers the snapshot list from the
    // member the request reaches, m1 here, whatever `target=` says).
    let later = SnapshotName::new("s2").expect("snapshot name");
    m2.create_volume_snapshot(&pool, &volume, &later, None).await.expect("snapshot on m2");
    let names = |list: Vec<lxd_client::VolumeSnapshot>| list.into_iter().map(|s| s.name).collect::<Vec<_>>();
    assert_eq!(names(m2.volume_snapshots(&pool, &volume).await.expect("snapshots on m2")), ["s1", "s2"]);
    assert_eq!(names(m1.volume_snapshots(&pool, &volume).await.expect("snapshots on m1")), ["s1"]);
    assert_eq!(m1.storage_volume(&pool, &volume).await.expect("read on m1").expect("on m1").location, "m1");
    // Untargeted, LXD cannot tell which one is meant.
    let ambiguous = lxd.storage_volume(&pool, &volume).await.expect_err("two members have it");
    assert!(ambiguous.to_string().contains("More than one cluster member"), "{ambiguous}");

    m1.delete_storage_volume(&pool, &volume).await.expect("delete on m1");
    assert!(m1.storage_volume(&pool, &volume).await.expect("read on m1").is_none(), "gone from m1");
    assert_eq!(lxd.storage_volume(&pool, &volume).await.expect("read").expect("on m2").location, "m2");
    // Untargeted, through m1, of the volume now only on m2: its snapshots, not an empty list.
    assert_eq!(names(lxd.volume_snapshots(&pool, &volume).await.expect("snapshots")), ["s1", "s2"]);
    m2.delete_storage_volume(&pool, &volume).await.expect("delete on m2");
}
