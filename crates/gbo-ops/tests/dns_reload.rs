//! `gbo dns apply`: the Corefile installed in a real dns container and SIGHUP sent by pid to a real process that
//! stands in for CoreDNS (no CoreDNS is installable here): the unit's MainPID gets the signal, a decoy does not.

mod doctor_common;

use std::time::Duration;

use doctor_common::*;
use gbo_ops::dns::{self, DnsError, COREFILE_PATH};

const STAND_IN: &str = "#!/bin/bash\ntrap 'echo hup >> /run/hups' HUP\nwhile :; do sleep 0.1; done\n";

#[tokio::test(flavor = "multi_thread")]
async fn sighup_goes_to_the_coredns_pid_and_the_corefile_has_the_acl() {
    let mut tenant = Tenant::new("dns").await;
    let name = tenant.container("dns", |r| r).await;
    let lxd = tenant.lxd.clone();
    write(&lxd, &name, "/usr/local/bin/stand-in", STAND_IN, 0o755).await;
    sh_ok(&lxd, &name, "systemd-run --unit=dns.service /usr/local/bin/stand-in && systemd-run --unit=decoy.service /usr/local/bin/stand-in && sleep 0.3").await;
    let decoy_pid = main_pid(&lxd, &name, "decoy.service").await;
    let dns_pid = main_pid(&lxd, &name, "dns.service").await;

    let report = dns::apply(&lxd, &tenant.name, &["example.test".into()], 53).await.expect("apply");
    assert_eq!(report.reloaded_pid, Some(dns_pid));
    assert!(report.changed.contains(&COREFILE_PATH.to_string()), "{report:?}");
    let mut hups = String::new();
    for _ in 0..30 {
        hups = sh(&lxd, &name, "cat /run/hups 2>/dev/null").await.stdout_text();
        if !hups.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(hups, "hup\n", "exactly one SIGHUP reached the CoreDNS pid");
    assert_eq!(main_pid(&lxd, &name, "decoy.service").await, decoy_pid, "the decoy still runs, unsignalled");
    let corefile = read(&lxd, &name, COREFILE_PATH).await;
    assert!(dns::zones_without_acl(&corefile).is_empty(), "{corefile}");
    assert!(read(&lxd, &name, "/opt/gbo/data/example.test.zone").await.contains("SOA"));

    // Bad input: an invalid zone, a tenant without a dns container. Nothing changes.
    assert!(
        matches!(dns::apply(&lxd, &tenant.name, &["bad_zone..test".into()], 53).await, Err(DnsError::BadInput(m)) if m.contains("bad_zone..test"))
    );
    let other = gbo_components::TenantName::new(&gbo_tests::unique_name("nodns")).expect("a tenant name");
    assert!(
        matches!(dns::apply(&lxd, &other, &["example.test".into()], 53).await, Err(DnsError::BadInput(m)) if m.contains(other.as_str()))
    );
}
