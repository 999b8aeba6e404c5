//! `gbo doctor` on a tenant built by hand with plain `lxc` in the seed's production layout (the botserver stack
//! under /opt/gbo/bin/botserver-stack inside a privileged `-system`, no gbo keys): the seed's 6379 incident and a
//! root-owned botserver are found (exit 1), `--fix` repairs them; the seed's Valkey answers PING without a
//! password, which no fix of doctor's can change (exit 1) until the cache gets one by hand; then the next run
//! passes (exit 0). The privileged `-system` was not created by gbo: it keeps its flag, a warning only.

use std::process::Command;

use gbo_tests::InstanceGuard as Cleanup;

fn check<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_built_production_tenant_is_diagnosed_and_fixed() {
    let lxd = gbo_tests::lxd().await;
    gbo_tests::require_test_image(&lxd).await;
    let tenant = gbo_tests::unique_name("prod");
    let system = format!("{tenant}-system");
    let _cleanup = Cleanup(system.clone());
    gbo_tests::lxc_ok(&["launch", gbo_tests::TEST_IMAGE, &system, "-c", "security.privileged=true"]);
    let name = lxd_client::InstanceName::new(system.as_str()).expect("name");
    let container = gbo_tests::TestContainer { name, lxd: lxd.clone() };
    container.wait_for_systemd().await;
    std::mem::forget(container); // `_cleanup` deletes it
    let stack = "/opt/gbo/bin/botserver-stack";
    gbo_tests::lxc_ok(&["exec", &system, "--", "bash", "-c", &format!(
        "set -e; mkdir -p {stack}/bin/cache/bin {stack}/conf/vault; ln -s /usr/bin/redis-cli {stack}/bin/cache/bin/valkey-cli; \
         redis-server --port 6379 --bind 127.0.0.1 --daemonize yes; \
         printf '#!/bin/sh\\nexec sleep infinity\\n' > /opt/gbo/bin/botserver; chmod 755 /opt/gbo/bin/botserver; \
         iptables -A INPUT -p tcp --dport 6379 -j DROP"
    )]);

    let (code, stdout, stderr) = gbo_tests::gbo(&["doctor", "--tenant", &tenant, "--output", "json"]).parts();
    assert_eq!(code, 1, "problems found: {stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["layout"], "production");
    assert_eq!(check(&report, "system-privileged")["verdict"], "warn", "an adopted seed stack keeps its flag");
    assert_eq!(check(&report, "loopback-first")["verdict"], "fail");
    assert_eq!(check(&report, "cache-bind")["verdict"], "pass", "{report}");
    assert_eq!(check(&report, "cache-ping")["verdict"], "fail", "the incident: PING times out: {report}");
    assert_eq!(check(&report, "botserver-owner")["verdict"], "fail");
    assert!(check(&report, "botserver-owner")["evidence"].as_str().unwrap_or("").contains("root"));

    let (code, stdout, _) = gbo_tests::gbo(&["doctor", "--tenant", &tenant, "--fix", "--output", "json"]).parts();
    let fixed: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(code, 1, "the cache still answers without a password: {fixed}");
    assert_eq!(check(&fixed, "loopback-first")["fixed"], true);
    assert_eq!(check(&fixed, "cache-ping")["verdict"], "pass");
    assert_eq!(check(&fixed, "botserver-owner")["fixed"], true);
    let auth = check(&fixed, "cache-auth");
    assert_eq!(auth["verdict"], "fail", "{auth}");
    assert!(auth["evidence"].as_str().unwrap_or("").contains("answered PONG"), "{auth}");

    // The cache gets a password by hand (a fixed test password, as an operator would set one with redis-cli).
    let out = Command::new("lxc")
        .args([
            "exec",
            &system,
            "--",
            "sh",
            "-c",
            "printf 'CONFIG SET requirepass gbotPassword123\n' | redis-cli -h 127.0.0.1 -p 6379",
        ])
        .output()
        .expect("lxc exec");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"), "{out:?}");
    let (code, stdout, _) = gbo_tests::gbo(&["doctor", "--tenant", &tenant, "--output", "json"]).parts();
    let fixed: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(code, 0, "{fixed}");
    assert_eq!(check(&fixed, "cache-auth")["verdict"], "pass", "{fixed}");
    assert_eq!(check(&fixed, "cache-ping")["verdict"], "pass", "NOAUTH: reachable: {fixed}");
    let rules = gbo_tests::lxc_ok(&["exec", &system, "--", "iptables", "-S", "INPUT"]);
    assert!(rules.lines().nth(1).is_some_and(|l| l == "-A INPUT -i lo -j ACCEPT"), "{rules}");
    assert!(gbo_tests::lxc_ok(&["exec", &system, "--", "cat", "/etc/iptables/rules.v4"])
        .contains("-A INPUT -i lo -j ACCEPT"));

    let (code, stdout, _) = gbo_tests::gbo(&["doctor", "--tenant", &tenant]).parts();
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("production layout"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_on_an_unknown_tenant_is_an_error() {
    let (code, _, stderr) = gbo_tests::gbo(&["doctor", "--tenant", &gbo_tests::unique_name("ghost")]).parts();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no container belongs to tenant"), "{stderr}");
}
