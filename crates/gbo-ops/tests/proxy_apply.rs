//! `gbo proxy apply` / `reload` / `prune-dead-domains` against the real Caddy 2.6 from Debian, running as the
//! caddy user in a container; probes go to the host's 127.0.0.1 with the site's Host header (and SNI).

mod doctor_common;

use std::time::Duration;

use doctor_common::*;
use gbo_ops::proxy::resolve::{Resolution, StaticResolver};
use gbo_ops::proxy::{self, ApplyOptions, ProxyError, ProxyTarget, CADDYFILE_PATH};

fn quick() -> ApplyOptions {
    ApplyOptions { probe_timeout: Duration::from_secs(4), ..ApplyOptions::default() }
}

async fn backups(lxd: &lxd_client::Client, name: &lxd_client::InstanceName) -> Vec<String> {
    let out = sh(lxd, name, "ls /opt/gbo/conf/ | grep '^config.bak-' || true").await.stdout_text();
    out.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_backs_up_validates_reloads_probes_and_refuses_what_the_runbook_forbids() {
    let mut tenant = Tenant::new("proxyapply").await;
    let original = caddyfile(&["a.test", "b.test"], &["c.test"]);
    let (name, http, _https) = proxy_with_caddy(&mut tenant, &original).await;
    let lxd = tenant.lxd.clone();
    let target = ProxyTarget::find(&lxd, &tenant.name).await.expect("the proxy container is found");
    assert_eq!(target.instance, name);
    let pid_before = main_pid(&lxd, &name, "proxy.service").await;

    // A good change: one more site. Backup, validate as caddy, reload (same pid), every site probed.
    let grown = caddyfile(&["a.test", "b.test", "d.test"], &["c.test"]);
    let report = proxy::apply(&lxd, &target, &grown, &quick()).await.expect("apply succeeds");
    assert_eq!(report.action, "reload");
    assert_eq!(report.added, vec!["d.test"]);
    let backup = report.backup.clone().expect("a backup was made");
    assert!(backup.starts_with("/opt/gbo/conf/config.bak-"), "{backup}");
    assert_eq!(read(&lxd, &name, &backup).await, original, "the backup holds the previous file");
    assert_eq!(read(&lxd, &name, CADDYFILE_PATH).await, grown);
    assert_eq!(report.probes.len(), 4, "{:?}", report.probes);
    assert!(report.probes.iter().all(|p| p.status == Some(200)), "{:?}", report.probes);
    assert_eq!(http_get(http, "d.test").await, Ok((200, "site d.test".into())));
    assert_eq!(main_pid(&lxd, &name, "proxy.service").await, pid_before, "reloaded, not restarted");
    let stat = sh_ok(&lxd, &name, "stat -c %U /opt/gbo/conf/config").await;
    assert_eq!(stat.trim(), "caddy");

    // Applying the same file again changes nothing and makes no backup.
    let n = backups(&lxd, &name).await.len();
    let again = proxy::apply(&lxd, &target, &grown, &quick()).await.expect("no-op apply");
    assert!(!again.changed && again.backup.is_none() && again.action == "none");
    assert_eq!(backups(&lxd, &name).await.len(), n);

    // A partial config is refused, naming the lost sites; nothing changes.
    let partial = caddyfile(&["a.test"], &[]);
    match proxy::apply(&lxd, &target, &partial, &quick()).await {
        Err(ProxyError::Refused(m)) => {
            assert!(m.contains("b.test") && m.contains("c.test") && m.contains("d.test"), "{m}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(read(&lxd, &name, CADDYFILE_PATH).await, grown);
    assert_eq!(backups(&lxd, &name).await.len(), n);

    // Without the storage block: refused.
    let no_storage = grown.replacen("\tstorage file_system {\n\t\troot /opt/gbo/data/caddy\n\t}\n", "", 1);
    assert!(
        matches!(proxy::apply(&lxd, &target, &no_storage, &quick()).await, Err(ProxyError::Refused(m)) if m.contains("storage"))
    );

    // Text that does not parse, and text Caddy rejects: nothing changes, the old config keeps serving.
    assert!(
        matches!(proxy::apply(&lxd, &target, &format!("{grown}\nbroken.test {{\n"), &quick()).await, Err(ProxyError::BadInput(m)) if m.contains("does not parse"))
    );
    let rejected = grown.replace("respond \"site d.test\" 200", "no_such_directive 1");
    match proxy::apply(&lxd, &target, &rejected, &quick()).await {
        Err(ProxyError::Invalid { user, output, .. }) => {
            assert!(user == "caddy" && output.contains("no_such_directive"), "{output}")
        }
        other => panic!("expected caddy validate to reject it, got {other:?}"),
    }
    assert_eq!(read(&lxd, &name, CADDYFILE_PATH).await, grown);
    assert_eq!(backups(&lxd, &name).await.len(), n);
    assert!(
        sh(&lxd, &name, "test -e /opt/gbo/conf/config.gbo-candidate").await.exit_code != 0,
        "the candidate is cleaned up"
    );

    // Removal of a named site is allowed.
    let smaller = caddyfile(&["a.test", "b.test"], &["c.test"]);
    let report =
        proxy::apply(&lxd, &target, &smaller, &ApplyOptions { allow_removal: vec!["d.test".into()], ..quick() })
            .await
            .expect("allowed removal");
    assert_eq!(report.removed, vec!["d.test"]);

    // A config that validates and reloads but stops serving the sites (HTTP moved to 8080): probes fail, the
    // backup is restored and reloaded, the sites answer again.
    let moved = smaller.replacen("\tskip_install_trust\n", "\tskip_install_trust\n\thttp_port 8080\n", 1);
    match proxy::apply(&lxd, &target, &moved, &quick()).await {
        Err(ProxyError::RolledBack { reason, backup, restore_note, .. }) => {
            assert!(reason.contains("did not answer") && reason.contains("a.test"), "{reason}");
            assert_eq!(restore_note, "", "the restore itself worked");
            assert_eq!(read(&lxd, &name, &backup).await, smaller);
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert_eq!(read(&lxd, &name, CADDYFILE_PATH).await, smaller);
    assert_eq!(http_get(http, "a.test").await, Ok((200, "site a.test".into())));
    assert_eq!(main_pid(&lxd, &name, "proxy.service").await, pid_before, "never restarted");
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_and_prune_dead_domains() {
    let mut tenant = Tenant::new("proxyprune").await;
    let original = caddyfile(&["live.test", "dead.test", "flaky.test"], &[]);
    let (name, http, _) = proxy_with_caddy(&mut tenant, &original).await;
    let lxd = tenant.lxd.clone();
    let target = ProxyTarget::find(&lxd, &tenant.name).await.expect("found");

    // Reload after a hand edit: validated as caddy, reloaded, probed.
    let edited = caddyfile(&["live.test", "dead.test", "flaky.test", "new.test"], &[]);
    lxd.push_bytes(
        &name,
        CADDYFILE_PATH,
        edited.clone().into_bytes(),
        lxd_client::FileOptions::owned(1003, 1003, 0o640),
    )
    .await
    .expect("push");
    let report = proxy::reload(&lxd, &target, &quick()).await.expect("reload");
    assert_eq!(report.action, "reload");
    assert_eq!(http_get(http, "new.test").await, Ok((200, "site new.test".into())));

    // A resolver that knows nothing: every verdict is unknown, nothing is removed.
    let broken = StaticResolver::failing();
    let pruned = proxy::prune_dead_domains(&lxd, &target, &broken, &quick()).await.expect("prune");
    assert!(pruned.dead.is_empty() && pruned.apply.is_none());
    let only_nx = StaticResolver::new();
    let pruned = proxy::prune_dead_domains(&lxd, &target, &only_nx, &quick()).await.expect("prune");
    assert!(pruned.dead.is_empty(), "nothing resolved at all is never 'dead': {:?}", pruned.domains);

    let resolver = StaticResolver::new()
        .with("live.test", Resolution::Found(vec!["192.0.2.10".parse().unwrap()]))
        .with("new.test", Resolution::Found(vec!["192.0.2.10".parse().unwrap()]))
        .with("flaky.test", Resolution::Failed("timeout".into()));
    // Dry run: verdicts only.
    let dry = proxy::prune_dead_domains(&lxd, &target, &resolver, &ApplyOptions { dry_run: true, ..quick() })
        .await
        .expect("dry run");
    assert_eq!(dry.dead, vec!["dead.test"]);
    assert_eq!(read(&lxd, &name, CADDYFILE_PATH).await, edited);

    let pid_before = main_pid(&lxd, &name, "proxy.service").await;
    let pruned = proxy::prune_dead_domains(&lxd, &target, &resolver, &quick()).await.expect("prune");
    assert_eq!(pruned.dead, vec!["dead.test"]);
    let applied = pruned.apply.expect("a change");
    assert_eq!(applied.action, "restart");
    assert!(applied.backup.is_some());
    let now = read(&lxd, &name, CADDYFILE_PATH).await;
    assert!(!now.contains("dead.test") && now.contains("flaky.test") && now.contains("live.test"), "{now}");
    assert_ne!(main_pid(&lxd, &name, "proxy.service").await, pid_before, "restarted, as the seed says");
    wait_for_caddy(&lxd, &name).await;
    assert_eq!(http_get(http, "live.test").await.map(|r| r.0), Ok(200));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_without_a_proxy_container_is_bad_input() {
    let lxd = gbo_tests::lxd().await;
    let tenant = gbo_components::TenantName::new(&gbo_tests::unique_name("noproxy")).expect("a tenant name");
    match ProxyTarget::find(&lxd, &tenant).await {
        Err(ProxyError::BadInput(m)) => assert!(m.contains(tenant.as_str()) && m.contains("no proxy container"), "{m}"),
        other => panic!("{other:?}"),
    }
}
