//! `gbo adopt` of a stack built with plain `lxc` commands as the seed writes them: `{tenant}-{role}` containers of
//! the (test) image, host directories `botserver-stack/<role>/{data,conf,logs}` mounted at `/opt/gbo/{data,conf,logs}`,
//! a proxy device publishing the role's port, data already in the data directory; no NIC. Adopt, then install:
//! the containers are the same (never recreated), the data is still there, the ports are the hand-made ones and
//! the plan is empty. A container that is no role is named with the reason.

use std::process::Command;

use gbo_tests::programs::require_program;
use gbo_tests::{free_port, gbo, lxd, require_test_image, TestTenant, TEST_IMAGE};

fn lxc(args: &[&str]) -> String {
    let out = Command::new(require_program("lxc")).args(args).output().expect("lxc");
    assert!(out.status.success(), "lxc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_built_by_hand_is_adopted_in_place_and_installs_to_an_empty_plan() {
    let client = lxd().await;
    require_test_image(&client).await;
    let t = TestTenant::new();
    let stack = t.stack.path().join("botserver-stack");
    let port = free_port();
    // The seed's layout, by hand.
    for (role, container_port, device) in [("tables", 5432, "postgres"), ("cache", 6379, "cache")] {
        let name = t.container(role);
        lxc(&["init", TEST_IMAGE, &name]);
        for kind in ["data", "conf", "logs"] {
            let dir = stack.join(role).join(kind);
            std::fs::create_dir_all(&dir).expect("mkdir");
            lxc(&[
                "config",
                "device",
                "add",
                &name,
                kind,
                "disk",
                &format!("source={}", dir.display()),
                &format!("path=/opt/gbo/{kind}"),
            ]);
        }
        let host_port = if role == "tables" { port } else { free_port() };
        lxc(&[
            "config",
            "device",
            "add",
            &name,
            device,
            "proxy",
            &format!("listen=tcp:127.0.0.1:{host_port}"),
            &format!("connect=tcp:127.0.0.1:{container_port}"),
        ]);
        lxc(&["start", &name]);
    }
    std::fs::write(stack.join("tables/data/hand-made.sql"), "-- the operator's data\n").expect("data");
    let odd = t.container("notarole");
    lxc(&["init", TEST_IMAGE, &odd]);
    let tables = t.container("tables");
    let uuid = lxc(&["config", "get", &tables, "volatile.uuid"]);

    let dry = gbo(&["adopt", "--tenant", &t.name, "--image", TEST_IMAGE, "--dry-run"]);
    assert_eq!(dry.code, 1, "{}", dry.all());
    assert!(
        dry.stdout.contains("would adopt") && dry.stdout.contains("device postgres -> gbo-port-postgres"),
        "{}",
        dry.all()
    );
    assert_eq!(lxc(&["config", "get", &tables, "user.gbo.managed"]), "", "a dry run wrote keys");

    let adopted = gbo(&["adopt", "--tenant", &t.name, "--image", TEST_IMAGE]);
    assert_eq!(adopted.code, 1, "a container was not adopted, so exit 1: {}", adopted.all());
    let out = adopted.stdout.clone();
    assert!(out.contains(&format!("cannot adopt {odd}: `notarole` is no role")), "{out}");
    assert!(out.contains(&format!("adopted {tables} as tables (stack dir {})", stack.display())), "{out}");
    assert!(out.contains("device data -> gbo-data") && out.contains(&format!("postgres=127.0.0.1:{port}")), "{out}");
    assert!(out.contains("The next `gbo install"), "{out}");
    assert_eq!(lxc(&["config", "get", &tables, "user.gbo.stack-dir"]), stack.display().to_string());

    lxc(&["delete", "--force", &odd]);
    let installed = gbo(&["install", "--tenant", &t.name, "--image", TEST_IMAGE, "tables", "cache"]);
    assert_eq!(installed.code, 0, "{}", installed.all());
    assert_eq!(lxc(&["config", "get", &tables, "volatile.uuid"]), uuid, "the container was recreated");
    assert_eq!(
        lxc(&["config", "device", "get", &tables, "gbo-port-postgres", "listen"]),
        format!("tcp:127.0.0.1:{port}")
    );
    assert_eq!(
        std::fs::read_to_string(stack.join("tables/data/hand-made.sql")).expect("the data is gone"),
        "-- the operator's data\n"
    );
    let pg = lxc(&["exec", &tables, "--", "psql", "-U", "gbuser", "botserver", "-tAc", "SELECT 1"]);
    assert_eq!(pg, "1");
    let plan = gbo(&["plan", "--tenant", &t.name, "--image", TEST_IMAGE, "tables", "cache"]);
    assert!(plan.stdout.contains("Nothing to do"), "{}", plan.all());
    let again = gbo(&["adopt", "--tenant", &t.name, "--image", TEST_IMAGE]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains("already managed by gbo"), "{}", again.all());
}
