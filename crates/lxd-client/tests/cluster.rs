//! The cluster calls against the real three-member cluster of `cargo xtask lxd-cluster up` (lxc remote
//! `gbot-cluster`): members and their status, creation on a chosen member, and a move between members.

mod common;

use common::{instance_name, Cleanup, IMAGE};
use lxd_client::{Client, CreateInstance, InstanceSource};

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
