//! `gbo doctor --fix` re-adds a proxy device removed by hand (the seed's "never remove the proxy devices"
//! incident) from the port recorded on the container: the same address and host port, no restart; and `gbo
//! install` keeps that port too.

use gbo_tests::{gbo, lxd, require_test_image, TestTenant, TEST_IMAGE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_proxy_device_is_re_added_with_its_own_port() {
    let client = lxd().await;
    require_test_image(&client).await;
    let t = TestTenant::new();
    let installed = t.install(&["cache"]);
    assert_eq!(installed.code, 0, "{}", installed.all());
    let cache = t.container("cache");
    let listen = gbo_tests::lxc_ok(&["config", "device", "get", &cache, "gbo-port-redis", "listen"]);
    let pid_before =
        gbo_tests::lxc_ok(&["exec", &cache, "--", "systemctl", "show", "-p", "MainPID", "--value", "cache.service"]);

    gbo_tests::lxc_ok(&["config", "device", "remove", &cache, "gbo-port-redis"]);
    let found = gbo(&["doctor", "--tenant", &t.name, "--output", "json"]);
    assert_eq!(found.code, 1, "{}", found.all());
    let report: serde_json::Value = serde_json::from_str(&found.stdout).expect("json");
    let check = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == "port-devices" && c["target"] == cache.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no port-devices check for {cache}: {}", found.stdout));
    assert_eq!(check["verdict"], "fail", "{check}");
    assert!(check["evidence"].as_str().is_some_and(|e| e.contains("redis")), "{check}");

    let fixed = gbo(&["doctor", "--tenant", &t.name, "--fix", "--output", "json"]);
    let report: serde_json::Value = serde_json::from_str(&fixed.stdout).expect("json");
    let check = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == "port-devices" && c["target"] == cache.as_str())
        .cloned()
        .expect("the check");
    assert_eq!((check["verdict"].as_str(), check["fixed"].as_bool()), (Some("pass"), Some(true)), "{check}");
    assert_eq!(
        gbo_tests::lxc_ok(&["config", "device", "get", &cache, "gbo-port-redis", "listen"]),
        listen,
        "not its own port"
    );
    let pid_after =
        gbo_tests::lxc_ok(&["exec", &cache, "--", "systemctl", "show", "-p", "MainPID", "--value", "cache.service"]);
    assert_eq!(pid_after, pid_before, "the service was restarted");
    let port: u16 = listen.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "nothing answers on {listen}");

    // install also re-adds it with the recorded port, and then has nothing to do.
    gbo_tests::lxc_ok(&["config", "device", "remove", &cache, "gbo-port-redis"]);
    let again = gbo(&["install", "--tenant", &t.name, "--image", TEST_IMAGE, "cache"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(gbo_tests::lxc_ok(&["config", "device", "get", &cache, "gbo-port-redis", "listen"]), listen);
    let plan = gbo(&["plan", "--tenant", &t.name, "--image", TEST_IMAGE, "cache"]);
    assert!(plan.stdout.contains("Nothing to do"), "{}", plan.all());
}
