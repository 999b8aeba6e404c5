//! End to end, issue 9 item 4 (loopback is not a trust boundary): `gbo install cache` against the real daemon and
//! the real Redis in the test image. Every user of the host reaches the cache's published port on 127.0.0.1, so an
//! unauthenticated PING through it is refused and the generated password works; the password never shows in LXD's
//! events (exec argv included), the install's output or the cache's logs; `gbo doctor` tells both states apart; a
//! tenant installed before the cache had a password gets one on the next install, and its data survives.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use gbo_ops::install::status::TenantStatus;
use gbo_tests::{events_for, gbo, gbo_async, lxd, require_test_image, EventRecorder, TestTenant, TEST_IMAGE};

fn secret_path(t: &TestTenant, name: &str) -> std::path::PathBuf {
    t.stack.path().join(".secrets").join(name)
}

fn secret(t: &TestTenant, name: &str) -> String {
    std::fs::read_to_string(secret_path(t, name)).expect("secret file").trim().to_string()
}

fn cache_port(t: &TestTenant) -> u16 {
    let run = gbo(&["status", "--tenant", &t.name, "--output", "json"]);
    let status: TenantStatus =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("status JSON does not parse: {e}\n{}", run.all()));
    status
        .components
        .iter()
        .find(|c| c.container == t.container("cache"))
        .and_then(|c| c.ports.iter().find(|p| p.container_port == 6379))
        .map(|p| p.host_port)
        .unwrap_or_else(|| panic!("the cache publishes no port: {status:?}"))
}

/// Commands as RESP arrays to 127.0.0.1:`port` (the proxy device's host port), as any client of the host would
/// send them; the first line of each reply.
async fn redis(port: u16, commands: &[&[&str]]) -> Vec<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let talk = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut request = String::new();
        for command in commands {
            request.push_str(&format!("*{}\r\n", command.len()));
            for arg in *command {
                request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
            }
        }
        stream.write_all(request.as_bytes()).await?;
        let mut reader = tokio::io::BufReader::new(stream);
        let mut lines = Vec::new();
        for _ in commands {
            let mut line = String::new();
            reader.read_line(&mut line).await?;
            lines.push(line.trim_end().to_string());
        }
        Ok::<_, std::io::Error>(lines)
    };
    tokio::time::timeout(Duration::from_secs(10), talk)
        .await
        .expect("the cache answers within 10 s")
        .expect("talking to the cache")
}

fn doctor(t: &TestTenant) -> (i32, serde_json::Value) {
    let run = gbo(&["doctor", "--tenant", &t.name, "--output", "json"]);
    let report = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("doctor JSON: {e}\n{}", run.all()));
    (run.code, report)
}

fn check<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_refuses_anonymous_clients_and_an_old_tenant_gets_its_password_on_the_next_install() {
    let client = lxd().await;
    require_test_image(&client).await;
    let t = TestTenant::new();
    let cache = t.container("cache");

    let recorder = EventRecorder::start(&client).await;
    let first = gbo_async(t.args("install", &["cache"])).await;
    let events = recorder.stop().await;
    assert_eq!(first.code, 0, "install failed:\n{}", first.all());

    // Through the proxy device's host port, as any user of the host: an anonymous PING is refused.
    let port = cache_port(&t);
    let anonymous = redis(port, &[&["PING"]]).await;
    assert!(anonymous[0].starts_with("-NOAUTH"), "an unauthenticated PING must be refused: {anonymous:?}");

    // A generated password, stored like every secret (0600 in the 0700 secrets dir), works.
    let password = secret(&t, "cache-password");
    assert_eq!(password.len(), 40);
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()), "alphanumeric");
    let mode = std::fs::metadata(secret_path(&t, "cache-password")).expect("secret").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let wrong = redis(port, &[&["AUTH", "not-the-password"], &["PING"]]).await;
    assert!(wrong[0].starts_with("-WRONGPASS") && wrong[1].starts_with("-NOAUTH"), "{wrong:?}");
    assert_eq!(redis(port, &[&["AUTH", &password], &["PING"]]).await, ["+OK", "+PONG"]);

    // Inside: the seed's habit works for root, from the 0600 file; another user is refused.
    let (code, out) = gbo_tests::lxc(&["exec", &cache, "--", "valkey-cli", "ping"]).code_output();
    assert_eq!((code, out.trim()), (0, "PONG"), "valkey-cli ping as root");
    let (_, out) = gbo_tests::lxc(&["exec", &cache, "--user", "1000", "--group", "1000", "--", "valkey-cli", "ping"])
        .code_output();
    assert!(out.contains("NOAUTH"), "gbuser cannot read the password file: {out}");
    let (_, out) =
        gbo_tests::lxc(&["exec", &cache, "--", "stat", "-c", "%a %U %G", "/etc/gbo/cache-auth.conf"]).code_output();
    assert_eq!(out.trim(), "600 redis redis");
    let (_, conf) =
        gbo_tests::lxc(&["exec", &cache, "--", "stat", "-c", "%a", "/opt/gbo/conf/redis.conf"]).code_output();
    assert_eq!(conf.trim(), "640", "the main config includes the password file and holds none");

    // The password is nowhere else: not in LXD's events (exec argv included), the install's output, the cache's
    // log on the host, the journal, or any process's command line or environment inside.
    let event_text = serde_json::to_string(&events.iter().map(|e| &e.metadata).collect::<Vec<_>>()).expect("json");
    let execs: Vec<_> =
        events_for(&events, &t.name).into_iter().filter(|e| e.action() == Some("instance-exec")).collect();
    assert!(!execs.is_empty(), "the recorder saw the install's execs");
    assert!(execs.iter().all(|e| e.metadata["context"]["command"].is_array()), "exec events carry their argv");
    let log = std::fs::read_to_string(t.stack.path().join("cache/logs/cache.log")).unwrap_or_default();
    assert!(log.contains("Ready to accept connections"), "{log}");
    let (_, journal) = gbo_tests::lxc(&["exec", &cache, "--", "journalctl", "--no-pager"]).code_output();
    let (_, processes) = gbo_tests::lxc(&[
        "exec",
        &cache,
        "--",
        "sh",
        "-c",
        "cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ | tr '\\0' ' '",
    ])
    .code_output();
    let plan = gbo(&["plan", "--tenant", &t.name, "--image", TEST_IMAGE, "cache"]);
    for (what, text) in [
        ("events", event_text.as_str()),
        ("install output", first.all().as_str()),
        ("plan output", plan.all().as_str()),
        ("cache.log", log.as_str()),
        ("journal", journal.as_str()),
        ("process argv and environment", processes.as_str()),
    ] {
        assert!(!text.contains(&password), "the cache password leaked into the {what}");
    }

    // Health (AUTH + PING) and doctor: the unauthenticated PING is refused.
    let status = gbo(&["status", "--tenant", &t.name]);
    assert_eq!(status.code, 0, "{}", status.all());
    let (_, report) = doctor(&t);
    assert_eq!(check(&report, "cache-auth")["verdict"], "pass", "{report}");
    assert!(check(&report, "cache-auth")["evidence"].as_str().unwrap_or("").contains("NOAUTH"));
    assert_eq!(check(&report, "cache-ping")["verdict"], "pass", "{report}");

    // Data written now must survive what follows.
    assert_eq!(redis(port, &[&["AUTH", &password], &["SET", "gbot-key", "survives"]]).await, ["+OK", "+OK"]);

    // A tenant installed before the cache had a password: the old redis.conf (no include), no password file,
    // no stored secret.
    let conf_path = t.stack.path().join("cache/conf/redis.conf");
    let old: String = std::fs::read_to_string(&conf_path)
        .expect("redis.conf")
        .lines()
        .filter(|l| !l.starts_with("include "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&conf_path, old).expect("old redis.conf");
    std::fs::remove_file(secret_path(&t, "cache-password")).expect("rm secret");
    let (code, out) =
        gbo_tests::lxc(&["exec", &cache, "--", "sh", "-c", "rm /etc/gbo/cache-auth.conf && systemctl restart cache"])
            .code_output();
    assert_eq!(code, 0, "{out}");
    let mut answer = Vec::new();
    for _ in 0..50 {
        answer = redis(port, &[&["PING"]]).await;
        if answer.first().is_some_and(|a| a.starts_with("+PONG")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answer, ["+PONG"], "the old tenant answers anyone");
    assert_eq!(redis(port, &[&["GET", "gbot-key"]]).await, ["$8"], "the data is there");
    let (code, report) = doctor(&t);
    assert_eq!(code, 1, "a cache answering PONG without AUTH is a problem: {report}");
    let auth = check(&report, "cache-auth");
    assert_eq!(auth["verdict"], "fail", "{auth}");
    assert!(auth["fix"].as_str().unwrap_or("").contains("gbo install"), "{auth}");

    // The plan names the drift; the next install gives the tenant a new password and keeps its data.
    let plan = gbo(&["plan", "--tenant", &t.name, "--image", TEST_IMAGE, "cache"]);
    assert!(
        plan.stdout.contains("/etc/gbo/cache-auth.conf") && plan.stdout.contains("/opt/gbo/conf/redis.conf"),
        "{}",
        plan.all()
    );
    let again = gbo_async(t.args("install", &["cache"])).await;
    assert_eq!(again.code, 0, "{}", again.all());
    let new_password = secret(&t, "cache-password");
    assert_ne!(new_password, password, "a new password was generated");
    assert!(!again.all().contains(&new_password));
    assert!(redis(port, &[&["PING"]]).await[0].starts_with("-NOAUTH"));
    assert_eq!(
        redis(port, &[&["AUTH", &new_password], &["GET", "gbot-key"]]).await,
        ["+OK", "$8"],
        "the data survived the new password"
    );
    let (_, report) = doctor(&t);
    assert_eq!(check(&report, "cache-auth")["verdict"], "pass", "{report}");
}
