//! The firewall for real: iptables inside an unprivileged container (nf_tables backend), the seed's 6379 incident
//! reproduced (a DROP before any loopback ACCEPT makes the cache time out for local clients) and repaired, rules
//! persisted without duplicates and restored after a restart; the host path only renders into a root directory.

mod doctor_common;

use doctor_common::*;
use gbo_ops::firewall::{self, FirewallOptions, LOOPBACK_RULE};

#[tokio::test(flavor = "multi_thread")]
async fn loopback_first_drop_from_outside_persisted_idempotently_and_after_restart() {
    let mut tenant = Tenant::new("fw").await;
    let system = tenant.container("system", |r| r).await;
    let lxd = tenant.lxd.clone();
    // The incident: Redis on 127.0.0.1:6379 and a DROP for 6379 with no loopback ACCEPT.
    sh_ok(
        &lxd,
        &system,
        "redis-server --port 6379 --bind 127.0.0.1 --daemonize yes && sleep 0.5 && valkey-cli -h 127.0.0.1 ping",
    )
    .await;
    sh_ok(
        &lxd,
        &system,
        "iptables -A INPUT -p tcp --dport 6379 -j DROP && iptables -A INPUT -p tcp --dport 22 -j ACCEPT",
    )
    .await;
    let ping = sh(&lxd, &system, "timeout 3 valkey-cli -h 127.0.0.1 ping").await;
    assert_ne!(ping.stdout_text().trim(), "PONG", "the DROP blocks loopback traffic, as in the seed's incident");

    let report = firewall::apply(&lxd, &tenant.name, &FirewallOptions::default()).await.expect("apply");
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].input_rules[0], LOOPBACK_RULE, "{:?}", report[0].input_rules);
    assert!(report[0].persisted);
    assert_eq!(sh_ok(&lxd, &system, "timeout 3 valkey-cli -h 127.0.0.1 ping").await.trim(), "PONG");
    let saved = read(&lxd, &system, "/etc/iptables/rules.v4").await;

    // Twice more: nothing changes, no duplicates.
    for _ in 0..2 {
        let again = firewall::apply(&lxd, &tenant.name, &FirewallOptions::default()).await.expect("apply again");
        assert!(again[0].changes.is_empty() && !again[0].persisted, "{:?}", again[0]);
    }
    let rules = sh_ok(&lxd, &system, "iptables -S INPUT").await;
    assert_eq!(rules.matches("-i lo -j ACCEPT").count(), 1, "{rules}");
    assert_eq!(rules.matches("--dport 6379 -j DROP").count(), 1, "{rules}");
    assert!(rules.contains("--dport 22 -j ACCEPT"), "rules added by hand stay: {rules}");
    assert_eq!(read(&lxd, &system, "/etc/iptables/rules.v4").await, saved);

    // After a restart the boot unit restores them.
    lxd.set_state(&system, &lxd_client::StateChange::new(lxd_client::StateAction::Restart)).await.expect("restart");
    wait_for_systemd(&lxd, &system).await;
    let after = firewall::container_input_rules(&lxd, &system).await.expect("rules");
    assert_eq!(after.first().map(String::as_str), Some(LOOPBACK_RULE), "{after:?}");
    assert!(after.iter().any(|r| r.contains("--dport 6379 -j DROP")), "{after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_path_renders_into_a_root_directory_and_checks_ufw() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("etc/iptables")).expect("mkdir");
    std::fs::create_dir_all(root.path().join("etc/default")).expect("mkdir");
    std::fs::write(root.path().join("etc/iptables/rules.v4"), "*filter\n:INPUT DROP [5:10]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 6379 -j DROP\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n").expect("write");
    std::fs::write(root.path().join("etc/default/ufw"), "DEFAULT_FORWARD_POLICY=\"DROP\"\n").expect("write");
    let options = FirewallOptions { host: true, host_root: root.path().to_path_buf(), ..FirewallOptions::default() };
    let report = firewall::apply_host(&options).await.expect("render");
    assert_eq!(report.input_rules[0], LOOPBACK_RULE);
    assert_eq!(report.ufw.as_deref(), Some("DROP"));
    let text = std::fs::read_to_string(root.path().join("etc/iptables/rules.v4")).expect("read");
    assert!(text.contains(":INPUT DROP [0:0]"), "the policy is kept: {text}");
    assert!(firewall::apply_host(&options).await.expect("again").changes.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_without_a_system_container_is_bad_input() {
    let lxd = gbo_tests::lxd().await;
    let tenant = gbo_components::TenantName::new(&gbo_tests::unique_name("nofw")).expect("a tenant name");
    let err = firewall::apply(&lxd, &tenant, &FirewallOptions::default()).await.expect_err("nothing to do");
    assert!(matches!(&err, firewall::FirewallError::BadInput(m) if m.contains(tenant.as_str())), "{err}");
}
