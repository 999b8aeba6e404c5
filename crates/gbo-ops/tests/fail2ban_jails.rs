//! fail2ban: the `caddy-http-flood` filter checked by the real `fail2ban-regex` against the access log of a real
//! Caddy (4xx lines match, 2xx and 5xx do not); the jails installed and running in real containers; the host's
//! sshd jail rendered into a root directory (the host itself is never changed by tests).

mod doctor_common;

use doctor_common::*;
use gbo_ops::fail2ban::{self, Fail2banOptions};
use gbo_ops::runner::HostCommand;

fn matched(output: &str) -> (usize, usize) {
    // "Lines: 5 lines, 0 ignored, 2 matched, 3 missed"
    let line = output.lines().find(|l| l.starts_with("Lines:")).unwrap_or_else(|| panic!("no summary in:\n{output}"));
    let num = |word: &str| -> usize {
        let words: Vec<&str> = line.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()).collect();
        let i = words.iter().position(|w| *w == word).unwrap_or_else(|| panic!("{word} in {line}"));
        words[i - 1].parse().expect("a count")
    };
    (num("matched"), num("missed"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_flood_filter_matches_4xx_of_real_caddy_logs_and_the_jails_run() {
    let mut tenant = Tenant::new("f2b").await;
    let config = format!(
        "{CADDY_GLOBAL}\nhttp://flood.test {{\n\tlog {{\n\t\toutput file /opt/gbo/logs/access.log\n\t\tformat json\n\t}}\n\thandle /missing {{\n\t\trespond 404\n\t}}\n\thandle /forbidden {{\n\t\trespond 403\n\t}}\n\thandle /down {{\n\t\treverse_proxy 127.0.0.1:9\n\t}}\n\thandle /boom {{\n\t\trespond 500\n\t}}\n\thandle {{\n\t\trespond \"ok\" 200\n\t}}\n}}\n"
    );
    let (proxy, http, _) = proxy_with_caddy(&mut tenant, &config).await;
    let lxd = tenant.lxd.clone();
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let mut expected = Vec::new();
    for (path, status) in [
        ("/", 200),
        ("/missing", 404),
        ("/forbidden", 403),
        ("/down", 502),
        ("/boom", 500),
        ("/missing?x=%22status%22:200", 404),
    ] {
        let r = client
            .get(format!("http://127.0.0.1:{http}{path}"))
            .header("Host", "flood.test")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), status, "{path}");
        expected.push(status);
    }
    // Caddy writes the access log asynchronously: wait for all lines.
    let mut log = String::new();
    for _ in 0..50 {
        log = read(&lxd, &proxy, "/opt/gbo/logs/access.log").await;
        if log.lines().count() >= expected.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(log.lines().count(), expected.len(), "{log}");
    assert!(log.contains("\"remote_ip\":\"127.0.0.1\""), "Caddy 2.6 logs remote_ip: {log}");

    // The real fail2ban-regex on the host, against the real lines.
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let filter = write("caddy-http-flood.conf", &fail2ban::caddy_filter());
    let all = write("access.log", &log);
    let out = HostCommand::new("fail2ban-regex").arg(&all).arg(&filter).run().expect("fail2ban-regex runs");
    assert_eq!(matched(&out), (3, 3), "three 4xx match; 200, 502 and 500 do not:\n{out}");
    for line in log.lines() {
        let status: u16 =
            line.split("\"status\":").nth(1).and_then(|s| s.get(..3)).and_then(|s| s.parse().ok()).expect("status");
        let one = write("one.log", &format!("{line}\n"));
        let out = HostCommand::new("fail2ban-regex").arg(&one).arg(&filter).run().expect("fail2ban-regex runs");
        let want = if (400..500).contains(&status) { (1, 0) } else { (0, 1) };
        assert_eq!(matched(&out), want, "status {status}: {line}\n{out}");
    }

    // The jails: proxy and email containers. Debian's sshd jail is disabled (it stops fail2ban in containers).
    let email = tenant.container("email", |r| r).await;
    let report = fail2ban::apply(&lxd, &tenant.name, &Fail2banOptions::default()).await.expect("apply");
    assert_eq!(report.len(), 2, "{report:?}");
    for r in &report {
        assert_eq!(r.action, "restart", "{r:?}");
        assert!(!r.jails.iter().any(|j| j == "sshd"), "{r:?}");
    }
    assert_eq!(report.iter().find(|r| r.target == proxy.as_str()).expect("proxy").jails, vec!["caddy-http-flood"]);
    assert_eq!(report.iter().find(|r| r.target == email.as_str()).expect("email").jails, vec!["stalwart-auth"]);
    let status = sh_ok(&lxd, &proxy, "fail2ban-client status caddy-http-flood").await;
    assert!(status.contains("/opt/gbo/logs/access.log"), "{status}");
    let conf = sh_ok(&lxd, &proxy, "fail2ban-client get caddy-http-flood maxretry; fail2ban-client get caddy-http-flood findtime; fail2ban-client get caddy-http-flood bantime").await;
    assert_eq!(conf.split_whitespace().collect::<Vec<_>>(), vec!["100", "60", "3600"]);

    // Idempotent: a second run writes nothing and restarts nothing.
    let again = fail2ban::apply(&lxd, &tenant.name, &Fail2banOptions::default()).await.expect("apply again");
    assert!(again.iter().all(|r| r.changed.is_empty() && r.action == "none"), "{again:?}");

    // The host path only renders into a root directory here.
    let root = tempfile::tempdir().expect("tempdir");
    let host = fail2ban::apply_host(root.path(), false).expect("host render");
    let jail = std::fs::read_to_string(root.path().join("etc/fail2ban/jail.d/gbo-sshd.conf")).expect("host jail");
    assert!(jail.contains("[sshd]\nenabled  = true") && host.changed.len() == 1);
    assert!(fail2ban::apply_host(root.path(), false).expect("again").changed.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_without_proxy_or_email_is_bad_input() {
    let lxd = gbo_tests::lxd().await;
    let tenant = gbo_components::TenantName::new(&gbo_tests::unique_name("nof2b")).expect("a tenant name");
    let err = fail2ban::apply(&lxd, &tenant, &Fail2banOptions::default()).await.expect_err("nothing to do");
    assert!(matches!(&err, fail2ban::Fail2banError::BadInput(m) if m.contains(tenant.as_str())), "{err}");
}
