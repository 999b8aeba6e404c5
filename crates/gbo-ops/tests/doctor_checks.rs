//! Doctor on a per-role tenant of real containers: each check with a real counterpart is broken, reported, fixed
//! (by `--fix` or by hand) and then passes.

mod doctor_common;

use std::sync::Arc;

use doctor_common::*;
use gbo_ops::doctor::{self, Check, DoctorOptions, DoctorReport, Verdict};
use gbo_ops::proxy::resolve::{Resolution, StaticResolver};

fn options(fix: bool, resolver: StaticResolver) -> DoctorOptions {
    DoctorOptions { fix, tenant_file: Default::default(), resolver: Arc::new(resolver), zfs_snapshot_percent: 30 }
}

fn find<'a>(report: &'a DoctorReport, id: &str, target: &str) -> &'a Check {
    report
        .checks
        .iter()
        .find(|c| c.id == id && (target.is_empty() || c.target == target))
        .unwrap_or_else(|| panic!("no {id} on {target}: {:#?}", report.checks))
}

fn alive() -> StaticResolver {
    StaticResolver::new()
        .with("a.test", Resolution::Found(vec!["192.0.2.1".parse().unwrap()]))
        .with("b.test", Resolution::Found(vec!["192.0.2.1".parse().unwrap()]))
}

#[tokio::test(flavor = "multi_thread")]
async fn per_role_checks_break_report_fix_pass() {
    let mut tenant = Tenant::new("doc").await;
    let full = caddyfile(&["a.test", "b.test"], &[]);
    let (proxy, _, _) = proxy_with_caddy(&mut tenant, &full).await;
    let system = tenant.container("system", |r| r).await;
    let dns = tenant.container("dns", |r| tcp_port(r, "gbo-port-dns-tcp", gbo_tests::free_port(), 53)).await;
    let source = tempfile::tempdir().expect("tempdir");
    let source_path = source.path().display().to_string();
    let almci = tenant.instance("alm-ci");
    let lxd = tenant.lxd.clone();
    let disk = lxd_client::DiskDevice::new(source_path.as_str(), "/mnt/system-bin");
    let request =
        lxd_client::CreateInstance::container(almci.clone(), lxd_client::InstanceSource::alias(gbo_tests::TEST_IMAGE))
            .config("user.gbo.test", "true")
            .device(
                &lxd_client::DeviceName::new("cross").unwrap(),
                disk.to_config(&lxd_client::DeviceName::new("cross").unwrap()).unwrap(),
            )
            .start(false);
    let _almci_guard = {
        lxd.create_instance(&request).await.expect("alm-ci created");
        gbo_tests::InstanceGuard(almci.to_string())
    };

    // Break things.
    write(
        &lxd,
        &system,
        "/etc/systemd/system/ui.service",
        "[Service]\nEnvironment=BOTSERVER_URL=https://chat.example.test\nExecStart=/bin/sleep infinity\n",
        0o644,
    )
    .await;
    sh_ok(&lxd, &system, "systemctl daemon-reload && systemctl start ui.service && printf '#!/bin/sh\\n' > /opt/gbo/bin/botserver && chmod 755 /opt/gbo/bin/botserver && iptables -A INPUT -p tcp --dport 6379 -j DROP").await;
    // The seed's acl taken literally: ANY from 127.0.0.0/8, which through the proxy device is every client.
    write(
        &lxd,
        &dns,
        "/opt/gbo/conf/Corefile",
        "zone.example.test:53 {\n\tfile /opt/gbo/data/zone.example.test.zone\n\tacl {\n\t\tallow type ANY net 10.0.0.0/8 127.0.0.0/8\n\t\tallow type A net 0.0.0.0/0\n\t\tallow type AAAA net 0.0.0.0/0\n\t\tallow type MX net 0.0.0.0/0\n\t\tblock\n\t}\n\tcache\n\terrors\n}\n",
        0o644,
    )
    .await;
    let bigger = caddyfile(&["a.test", "b.test", "gone.test"], &[]);
    lxd.push_bytes(
        &proxy,
        "/opt/gbo/conf/config.bak-29990101000000",
        bigger.into_bytes(),
        lxd_client::FileOptions::owned(1003, 1003, 0o640),
    )
    .await
    .expect("backup");
    lxd.remove_instance_device(&proxy, &lxd_client::DeviceName::new("gbo-port-https").unwrap())
        .await
        .expect("remove 443");
    let dead = alive().with("b.test", Resolution::NoRecord);

    let report = doctor::run(&lxd, &tenant.name, &options(false, dead.clone())).await.expect("doctor runs");
    assert_eq!(report.layout, "per-role");
    assert_eq!(report.exit_code(), 1);
    let s = system.as_str();
    for (id, target) in [
        ("loopback-first", s),
        ("botui-url", s),
        ("botserver-owner", s),
        ("caddy-sites", proxy.as_str()),
        ("dead-domains", proxy.as_str()),
        ("proxy-devices", proxy.as_str()),
        ("fail2ban", proxy.as_str()),
        ("coredns-acl", dns.as_str()),
    ] {
        assert_eq!(
            find(&report, id, target).verdict,
            Verdict::Fail,
            "{id} on {target}: {:#?}",
            find(&report, id, target)
        );
    }
    // A host mount of the runner that no other container shares is worth a look; one shared with another container
    // fails (doctor's unit test and tests/tests/ci_path.rs).
    let mounts = find(&report, "alm-ci-mounts", almci.as_str());
    assert_eq!(mounts.verdict, Verdict::Warn, "{mounts:#?}");
    assert!(mounts.evidence.contains("/mnt/system-bin"), "{mounts:#?}");
    assert_eq!(find(&report, "caddy-storage", proxy.as_str()).verdict, Verdict::Pass);
    // Unprivileged is what the (default) tenant file asks.
    assert_eq!(
        find(&report, "system-privileged", s).verdict,
        Verdict::Pass,
        "{:#?}",
        find(&report, "system-privileged", s)
    );
    assert!(find(&report, "coredns-acl", "").evidence.contains("allows ANY from loopback"));
    assert!(find(&report, "caddy-sites", "").evidence.contains("gone.test"));
    assert!(find(&report, "dead-domains", "").evidence.contains("b.test"));
    assert!(find(&report, "proxy-devices", "").evidence.contains("443"));
    assert!(find(&report, "botui-url", "").evidence.contains("https://chat.example.test"));

    // --fix: the safe ones.
    let fixed = doctor::run(&lxd, &tenant.name, &options(true, dead)).await.expect("doctor --fix");
    for (id, target) in [("loopback-first", s), ("botui-url", s), ("botserver-owner", s), ("fail2ban", proxy.as_str())]
    {
        let c = find(&fixed, id, target);
        assert!(c.verdict == Verdict::Pass && c.fixed, "{c:#?}");
    }
    assert_eq!(find(&fixed, "dead-domains", "").verdict, Verdict::Fail, "not a safe fix");

    // By hand: the rest.
    sh_ok(&lxd, &proxy, "rm /opt/gbo/conf/config.bak-29990101000000").await;
    let https_name = lxd_client::DeviceName::new("gbo-port-https").unwrap();
    let https = lxd_client::ProxyDevice::new(
        lxd_client::ProxyAddress::tcp("127.0.0.1", gbo_tests::free_port()),
        lxd_client::ProxyAddress::tcp("127.0.0.1", 443),
    );
    lxd.add_instance_device(&proxy, &https_name, https.to_config(&https_name).unwrap()).await.expect("re-add 443");
    gbo_ops::dns::apply(&lxd, &tenant.name, &["zone.example.test".into()], 53).await.expect("dns apply");
    lxd.remove_instance_device(&almci, &lxd_client::DeviceName::new("cross").unwrap()).await.expect("remove the mount");

    let report = doctor::run(&lxd, &tenant.name, &options(false, alive())).await.expect("doctor runs");
    let failing: Vec<&Check> = report.checks.iter().filter(|c| c.verdict == Verdict::Fail).collect();
    assert!(failing.is_empty(), "{failing:#?}");
    assert_eq!(report.exit_code(), 0);
    assert!(find(&report, "coredns-acl", "").evidence.contains("refuses ANY"));

    // A privileged system container gbo did not create (the seed's) keeps its flag: a note, not a problem.
    lxd.update_instance(&system, |put| {
        put.config.insert("security.privileged".into(), "true".into());
    })
    .await
    .expect("privileged");
    let report = doctor::run(&lxd, &tenant.name, &options(false, alive())).await.expect("doctor runs");
    let privileged = find(&report, "system-privileged", s);
    assert_eq!(privileged.verdict, Verdict::Warn, "{privileged:#?}");
    assert!(privileged.evidence.contains("did not create"), "{privileged:#?}");
    assert_eq!(report.exit_code(), 0);
}
