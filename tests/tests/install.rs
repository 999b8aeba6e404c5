//! End to end: `gbo install` of tables, cache and proxy from the baked test image, against the real LXD daemon
//! and the real PostgreSQL, Redis and Caddy inside the containers.

use gbo_tests::{app_db as pg, host_port};

use gbo_ops::install::status::TenantStatus;
use gbo_tests::{events_for, gbo, gbo_async, lxd, require_test_image, EventRecorder, TestTenant, TEST_IMAGE};

fn secret(t: &TestTenant, name: &str) -> String {
    std::fs::read_to_string(t.stack.path().join(".secrets").join(name)).expect("secret file").trim().to_string()
}

fn status_json(t: &TestTenant) -> (i32, TenantStatus) {
    let run = gbo(&["status", "--tenant", &t.name, "--output", "json"]);
    let status: TenantStatus =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("status JSON does not parse: {e}\n{}", run.all()));
    (run.code, status)
}

/// `AUTH` with the cache's generated password, then `PING`: the answer to the PING.
async fn redis_ping(port: u16, password: &str) -> String {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let lines =
        gbo_ops::install::health::redis_command(addr, &[&["AUTH", password], &["PING"]]).await.expect("cache answers");
    assert!(lines.first().is_some_and(|l| l.starts_with("+OK")), "AUTH: {lines:?}");
    lines.get(1).cloned().unwrap_or_default()
}

const READ_ONLY_ACTIONS: &[&str] = &["instance-exec", "instance-file-retrieved", "instance-log-retrieved"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tables_cache_proxy_install_converge_repair_and_keep_data() {
    let client = lxd().await;
    require_test_image(&client).await;
    let t = TestTenant::new();

    // First install.
    let first = gbo_async(t.args("install", &["tables", "cache", "proxy"])).await;
    assert_eq!(first.code, 0, "first install failed:\n{}", first.all());
    for c in ["tables", "cache", "proxy"] {
        assert!(first.stdout.contains(&t.container(c)), "{}", first.stdout);
    }

    // Status (JSON, deserialised) and the protocol checks from the host.
    let (code, status) = status_json(&t);
    assert_eq!(code, 0, "status must be healthy: {status:?}");
    assert_eq!(status.components.len(), 3);
    assert!(
        status.components.iter().all(|c| c.state == "Running" && c.health.as_ref().is_some_and(|h| h.healthy)),
        "{status:?}"
    );
    assert_eq!(status.stack_dir.as_deref(), Some(t.stack.path()));
    let pg_port = host_port(&status, &t.container("tables"), 5432);
    let cache_port = host_port(&status, &t.container("cache"), 6379);
    let http_port = host_port(&status, &t.container("proxy"), 80);
    let password = secret(&t, "tables-password");
    let cache_password = secret(&t, "cache-password");
    let db = pg(pg_port, &password).await;
    db.batch_execute("CREATE TABLE keep_me (v text); INSERT INTO keep_me VALUES ('survives')")
        .await
        .expect("create table");
    drop(db);
    assert_eq!(redis_ping(cache_port, &cache_password).await.trim_end(), "+PONG");
    let page = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", http_port)).expect("connect proxy");
        s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
    .await
    .expect("http");
    assert!(page.starts_with("HTTP/1.1 2") || page.starts_with("HTTP/1.0 2"), "{page}");

    // The seed's commands inside.
    let (code, out) = gbo_tests::lxc(&[
        "exec",
        &t.container("tables"),
        "--",
        "psql",
        "-U",
        "gbuser",
        "botserver",
        "-tAc",
        "SELECT v FROM keep_me",
    ])
    .code_output();
    assert_eq!((code, out.trim()), (0, "survives"), "psql -U gbuser botserver as root (pg_ident)");
    let (code, out) =
        gbo_tests::lxc(&["exec", &t.container("tables"), "--", "journalctl", "-u", "tables", "--no-pager"])
            .code_output();
    assert!(code == 0 && out.contains("PostgreSQL"), "journalctl -u tables: {out}");
    let (code, out) = gbo_tests::lxc(&["exec", &t.container("cache"), "--", "valkey-cli", "ping"]).code_output();
    assert_eq!((code, out.trim()), (0, "PONG"));
    // Data sits on the host, owned through the idmap.
    assert!(t.stack.path().join("tables/data/pgdata/PG_VERSION").is_file());
    assert!(t.stack.path().join("cache/conf/redis.conf").is_file());

    // A second install plans nothing and causes no write event.
    let plan = gbo(&["plan", "--tenant", &t.name, "--image", TEST_IMAGE, "tables", "cache", "proxy"]);
    assert!(plan.code == 0 && plan.stdout.contains("Nothing to do"), "{}", plan.all());
    let recorder = EventRecorder::start(&client).await;
    let started = std::time::Instant::now();
    let second = gbo_async(t.args("install", &["tables", "cache", "proxy"])).await;
    let rerun = started.elapsed();
    let events = recorder.stop().await;
    assert_eq!(second.code, 0, "{}", second.all());
    let ours = events_for(&events, &t.name);
    let writes: Vec<_> = ours
        .iter()
        .filter(|e| !READ_ONLY_ACTIONS.contains(&e.action().unwrap_or_default()))
        .map(|e| e.action().unwrap_or_default().to_string())
        .collect();
    assert!(writes.is_empty(), "second install caused write events: {writes:?}");
    eprintln!("idempotent re-run: {rerun:?}, {} read events", ours.len());

    // No generated secret in output, logs or events.
    let event_text = serde_json::to_string(&events.iter().map(|e| &e.metadata).collect::<Vec<_>>()).expect("json");
    for value in [password.as_str(), cache_password.as_str()] {
        for (what, text) in [
            ("first install", first.all()),
            ("second install", second.all()),
            ("plan", plan.all()),
            ("events", event_text.clone()),
        ] {
            assert!(!text.contains(value), "a secret leaked into {what}");
        }
    }
    let (_, journal) =
        gbo_tests::lxc(&["exec", &t.container("tables"), "--", "journalctl", "--no-pager"]).code_output();
    assert!(!journal.contains(&password), "a secret leaked into the journal");

    // Drift: a device removed by hand and a file edited by hand are named by plan and repaired by install.
    let (code, out) =
        gbo_tests::lxc(&["config", "device", "remove", &t.container("cache"), "gbo-port-redis"]).code_output();
    assert_eq!(code, 0, "{out}");
    std::fs::write(t.stack.path().join("cache/conf/redis.conf"), "# edited by hand\n").expect("edit");
    let plan = gbo(&["plan", "--tenant", &t.name, "--image", TEST_IMAGE, "cache"]);
    assert!(plan.stdout.contains("+ device gbo-port-redis"), "{}", plan.all());
    assert!(plan.stdout.contains("/opt/gbo/conf/redis.conf"), "{}", plan.all());
    let repair = gbo_async(t.args("install", &["cache"])).await;
    assert_eq!(repair.code, 0, "{}", repair.all());
    let (_, status) = status_json(&t);
    assert_eq!(host_port(&status, &t.container("cache"), 6379), cache_port, "the port is kept");
    assert_eq!(redis_ping(cache_port, &cache_password).await.trim_end(), "+PONG");

    // A stopped service is reported unhealthy (exit 1).
    let (code, _) = gbo_tests::lxc(&["exec", &t.container("cache"), "--", "systemctl", "stop", "cache"]).code_output();
    assert_eq!(code, 0);
    let (code, status) = status_json(&t);
    assert_eq!(code, 1);
    let cache = status.components.iter().find(|c| c.role == "cache").expect("cache");
    assert!(cache.health.as_ref().is_some_and(|h| !h.healthy), "{cache:?}");

    // Delete the container by hand, reinstall: the data is found again.
    let (code, out) = gbo_tests::lxc(&["delete", "--force", &t.container("tables")]).code_output();
    assert_eq!(code, 0, "{out}");
    let again = gbo_async(t.args("install", &["tables", "cache"])).await;
    assert_eq!(again.code, 0, "{}", again.all());
    let db = pg(pg_port, &password).await;
    let row = db.query_one("SELECT v FROM keep_me", &[]).await.expect("table survived");
    assert_eq!(row.get::<_, String>(0), "survives");
    drop(db);

    // Uninstall keeps the host data.
    let un = gbo(&["uninstall", "--tenant", &t.name, "proxy"]);
    assert_eq!(un.code, 0, "{}", un.all());
    assert!(un.stdout.contains("host data kept"), "{}", un.stdout);
    assert!(t.stack.path().join("proxy/conf").is_dir());
    let (code, _) = gbo_tests::lxc(&["info", &t.container("proxy")]).code_output();
    assert_ne!(code, 0, "the proxy container is gone");
}
