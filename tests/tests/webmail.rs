//! End to end, issue 14 item 2: the webmail role (Roundcube from Debian's packages, served by Caddy and PHP-FPM)
//! installed for real beside tables and proxy, its state in the tenant's PostgreSQL, and a login through the proxy
//! that reads a message delivered over SMTP.
//!
//! Stand-in for the email role: gbo's email role installs Stalwart, a vendor artifact that cannot be verified (so
//! is refused) on these machines. A real IMAP/SMTP server from Debian takes its place, Dovecot (IMAP) and Postfix
//! (SMTP) in a container of the test image: Stalwart speaks the same protocols. The tenant file's `[webmail]`
//! points webmail at it; its container publishes IMAP and SMTP on the host's loopback through proxy devices (no
//! NIC), as gbo publishes a role's ports, and webmail's wires reach those ports as they reach gbo's email role.

use gbo_tests::host_port;
use std::path::Path;
use std::process::{Command, Stdio};

use gbo_ops::install::status::TenantStatus;
use gbo_tests::programs::require_program;
use gbo_tests::{free_port, gbo, gbo_async, lxc_ok, TestContainer, TestTenant};

fn secret(t: &TestTenant, name: &str) -> String {
    std::fs::read_to_string(t.stack.path().join(".secrets").join(name)).expect("secret file").trim().to_string()
}

fn tenant_status(t: &TestTenant) -> TenantStatus {
    let run = gbo(&["status", "--tenant", &t.name, "--output", "json"]);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("status JSON does not parse: {e}\n{}", run.all()))
}

/// The text between `start` and the next `end` in `text`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// A browser's request through the proxy: curl with a cookie jar, the proxy's own CA, and the site's name resolved
/// to the proxy's published HTTPS port on loopback. Returns the status and the body.
struct Browser<'a> {
    curl: std::path::PathBuf,
    dir: &'a Path,
    site: String,
    port: u16,
}

impl Browser<'_> {
    fn request(&self, path: &str, extra: &[&str]) -> (u16, String) {
        let jar = self.dir.join("cookies");
        let body = self.dir.join("body");
        let url = format!("https://{}:{}{path}", self.site, self.port);
        let output = Command::new(&self.curl)
            .args(["-sS", "--max-time", "60", "--resolve"])
            .arg(format!("{}:{}:127.0.0.1", self.site, self.port))
            .arg("--cacert")
            .arg(self.dir.join("ca.crt"))
            .arg("-c")
            .arg(&jar)
            .arg("-b")
            .arg(&jar)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("curl");
        assert!(output.status.success(), "curl {url}: {}", String::from_utf8_lossy(&output.stderr));
        let code = String::from_utf8_lossy(&output.stdout).trim().parse().expect("an HTTP status");
        (code, std::fs::read_to_string(&body).unwrap_or_default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webmail_logs_in_through_the_proxy_and_lists_a_message_delivered_over_smtp() {
    let curl = require_program("curl");
    let started = std::time::Instant::now();

    // The mail server's container, started, its IMAP and SMTP published on loopback (which holds the ports).
    let peer = TestContainer::create("mailpeer", false).await;
    let peer_name = peer.name.to_string();
    lxc_ok(&["start", &peer_name]);
    let (imap, smtp) = (free_port(), free_port());
    for (device, port, inside) in [("imap", imap, 143), ("smtp", smtp, 25)] {
        lxc_ok(&[
            "config",
            "device",
            "add",
            &peer_name,
            device,
            "proxy",
            &format!("listen=tcp:127.0.0.1:{port}"),
            &format!("connect=tcp:127.0.0.1:{inside}"),
        ]);
    }

    // The tenant: tables, proxy and webmail, its mail server named in the tenant file (no email role). The install
    // runs while the mail server is set up: webmail's health check does not need it.
    let t = TestTenant::new();
    let site = "webmail.localhost";
    let file = t.stack.path().join("gbo.toml");
    std::fs::write(
        &file,
        format!(
            "tenant = \"{}\"\nroles = [\"tables\", \"proxy\", \"webmail\"]\ndomains = [\"{site}\"]\n\n[routes]\n\
             \"{site}\" = \"webmail\"\n\n[webmail]\nimap = \"127.0.0.1:{imap}\"\nsmtp = \"127.0.0.1:{smtp}\"\n",
            t.name
        ),
    )
    .expect("tenant file");
    // Tables and proxy first, webmail in a second run: the installed -tables is converged then to make Roundcube's
    // role and database.
    let install_args = |roles: &[&str]| {
        let mut args = t.args("install", roles);
        args.extend(["--file".to_string(), file.display().to_string()]);
        args
    };
    let (first, second) = (install_args(&["tables", "proxy"]), install_args(&[]));
    let install = tokio::spawn(async move {
        let first = gbo_async(first).await;
        assert_eq!(first.code, 0, "install tables and proxy: {}", first.all());
        gbo_async(second).await
    });

    // Dovecot and Postfix from Debian, a mailbox user whose password reaches chpasswd on stdin.
    peer.wait_for_systemd().await;
    let mail_password = format!("gbot{}x{}", std::process::id(), started.elapsed().as_nanos());
    lxc_ok(&["exec", &peer_name, "--", "useradd", "-m", "-s", "/usr/sbin/nologin", "gbotmail"]);
    let mut chpasswd = Command::new("lxc")
        .args(["exec", &peer_name, "--", "chpasswd"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("lxc exec chpasswd");
    {
        use std::io::Write;
        let mut stdin = chpasswd.stdin.take().expect("stdin");
        writeln!(stdin, "gbotmail:{mail_password}").expect("password to chpasswd");
    }
    assert!(chpasswd.wait().expect("chpasswd").success(), "chpasswd in {peer_name}");
    lxc_ok(&["exec", &peer_name, "--", "systemctl", "start", "dovecot.service", "postfix.service"]);

    let run = install.await.expect("install task");
    assert!(
        run.all().contains(&format!("[{}] > init: create webmail's role and database", t.container("tables"))),
        "the installed tables is converged for webmail: {}",
        run.all()
    );
    eprintln!("installed in {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(run.code, 0, "install tables, proxy and webmail: {}", run.all());
    assert!(!t.stack.path().join("email").exists(), "no email role was installed: {}", run.all());
    let status = tenant_status(&t);
    let webmail = status.components.iter().find(|c| c.role == "webmail").expect("webmail in status");
    let health = webmail.health.as_ref().expect("webmail has a health check");
    assert!(health.healthy && health.detail.contains("rcmloginuser"), "Roundcube's login page answers: {health:?}");
    assert!(status.components.iter().all(|c| c.role != "email"), "{status:?}");

    // Roundcube's tables live in the tenant's PostgreSQL, owned by its own role, which gbo made with a generated
    // password; the application role cannot even connect to that database.
    let pg_port = host_port(&status, &t.container("tables"), 5432);
    let connect = |user: &str, password: String, db: &str| {
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(pg_port).user(user).password(password).dbname(db);
        async move { config.connect(tokio_postgres::NoTls).await }
    };
    let db_password = secret(&t, "webmail-db-password");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(t.stack.path().join(".secrets/webmail-db-password")).expect("secret file").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "Roundcube's database password is stored 0600");
    assert!(db_password.len() >= 32 && !run.all().contains(&db_password), "never printed");
    let (pg, connection) = connect("roundcube", db_password, "roundcube").await.expect("login as roundcube");
    tokio::spawn(connection);
    let owned: Vec<(String, String)> = pg
        .query("SELECT tablename::text, tableowner::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", &[])
        .await
        .expect("Roundcube's tables")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for table in ["session", "system", "users"] {
        assert!(owned.iter().any(|(name, owner)| name == table && owner == "roundcube"), "{table}: {owned:?}");
    }
    let refused = match connect("gbuser", secret(&t, "tables-password"), "roundcube").await {
        Ok(_) => "connected".to_string(),
        Err(e) => e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string()),
    };
    assert!(refused.contains("permission denied"), "gbuser is kept out of roundcube: {refused}");

    // A message delivered over SMTP to the mail server.
    let dir = tempfile::tempdir().expect("tempdir");
    let subject = format!("gbo webmail check {}", std::process::id());
    let message = dir.path().join("message.eml");
    std::fs::write(
        &message,
        format!("From: Sender <sender@localhost>\r\nTo: gbotmail@localhost\r\nSubject: {subject}\r\n\r\nHello.\r\n"),
    )
    .expect("message");
    let sent = Command::new(&curl)
        .args(["-sS", "--max-time", "30", &format!("smtp://127.0.0.1:{smtp}")])
        .args(["--mail-from", "sender@localhost", "--mail-rcpt", "gbotmail@localhost", "--upload-file"])
        .arg(&message)
        .output()
        .expect("curl smtp");
    assert!(sent.status.success(), "SMTP delivery: {}", String::from_utf8_lossy(&sent.stderr));

    // A browser through the proxy: the login page, its request token and session cookie, the login form, then
    // Roundcube's own message-list request for the inbox.
    let ca = t.stack.path().join("proxy/data/caddy/pki/authorities/local/root.crt");
    std::fs::copy(&ca, dir.path().join("ca.crt")).unwrap_or_else(|e| panic!("the proxy's CA {}: {e}", ca.display()));
    let browser =
        Browser { curl, dir: dir.path(), site: site.to_string(), port: host_port(&status, &t.container("proxy"), 443) };
    let (code, page) = browser.request("/?_task=login", &[]);
    assert_eq!(code, 200, "login page: {page}");
    let token = between(&page, "name=\"_token\" value=\"", "\"").expect("the login form's request token").to_string();
    let form = dir.path().join("form");
    std::fs::write(
        &form,
        format!("_token={token}&_task=login&_action=login&_timezone=UTC&_url=&_user=gbotmail&_pass={mail_password}"),
    )
    .expect("form");
    let (code, body) = browser.request("/?_task=login", &["--data", &format!("@{}", form.display())]);
    assert_eq!(code, 302, "the login is accepted and redirects to the mail task: {body}");
    let (code, page) = browser.request("/?_task=mail&_mbox=INBOX", &[]);
    assert_eq!(code, 200, "mail page: {page}");
    let token = between(&page, "\"request_token\":\"", "\"").expect("the session's request token").to_string();
    let mut listed = String::new();
    for _ in 0..20 {
        let (code, body) = browser.request(
            "/?_task=mail&_action=list&_mbox=INBOX&_remote=1",
            &["-H", &format!("X-Roundcube-Request: {token}")],
        );
        assert_eq!(code, 200, "message list: {body}");
        listed = body;
        if listed.contains(&subject) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(listed.contains(&subject), "the inbox lists {subject:?}: {listed}");

    // The health check asks Roundcube itself: with PHP-FPM stopped, webmail.service (Caddy) is still active and
    // answers, but not with the login page, and status says so.
    let webmail = t.container("webmail");
    lxc_ok(&["exec", &webmail, "--", "systemctl", "stop", "php8.2-fpm.service"]);
    let active = gbo_tests::lxc(&["exec", &webmail, "--", "systemctl", "is-active", "webmail.service"]).code_output();
    assert_eq!(active.1.trim(), "active", "webmail.service keeps running");
    let after = tenant_status(&t);
    let health = after.components.iter().find(|c| c.role == "webmail").and_then(|c| c.health.clone());
    assert!(health.as_ref().is_some_and(|h| !h.healthy), "webmail is unhealthy without PHP: {health:?}");

    // Uninstalling webmail with --purge removes its state in tables too (before, database and role roundcube
    // stayed behind); a later install of webmail makes them again and is healthy.
    let tables = t.container("tables");
    let roundcube_left = || {
        let sql = "SELECT (SELECT count(*) FROM pg_database WHERE datname = 'roundcube') \
                   + (SELECT count(*) FROM pg_roles WHERE rolname = 'roundcube')";
        let out = gbo_tests::lxc(&[
            "exec", &tables, "--cwd", "/tmp", "--", "runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-c", sql,
        ])
        .code_output();
        assert_eq!(out.0, 0, "psql in {tables}: {out:?}");
        out.1.trim().to_string()
    };
    assert_eq!(roundcube_left(), "2", "database and role roundcube exist before the purge");
    let purge = gbo(&["uninstall", "--tenant", &t.name, "webmail", "--purge", "--yes"]);
    assert_eq!(purge.code, 0, "uninstall webmail --purge: {}", purge.all());
    assert!(
        purge.all().contains(&format!("database and role roundcube in {tables} removed")),
        "the purge says what it removed in tables: {}",
        purge.all()
    );
    assert_eq!(roundcube_left(), "0", "database and role roundcube are gone after the purge");
    let again = gbo(&install_args(&["webmail"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(again.code, 0, "webmail installed again: {}", again.all());
    assert_eq!(roundcube_left(), "2", "installing webmail again makes its database and role: {}", again.all());
    let health = tenant_status(&t).components.into_iter().find(|c| c.role == "webmail").and_then(|c| c.health);
    assert!(health.as_ref().is_some_and(|h| h.healthy), "webmail healthy after the reinstall: {health:?}");
    eprintln!("webmail end to end: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_bad_webmail_mail_server_is_refused_with_exit_2_and_nothing_created() {
    let t = TestTenant::new();
    let file = t.stack.path().join("gbo.toml");
    std::fs::write(
        &file,
        format!(
            "tenant = \"{}\"\nroles = [\"tables\", \"webmail\"]\n\n[webmail]\nimap = \"mail.example.com:143\"\nsmtp = \"127.0.0.1:25\"\n",
            t.name
        ),
    )
    .expect("tenant file");
    let mut args = t.args("install", &[]);
    args.extend(["--file".to_string(), file.display().to_string()]);
    let run = gbo(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("webmail.imap = \"mail.example.com:143\": an IP address and a port from 1 to 65535"),
        "names the key, the value and what is allowed: {}",
        run.stderr
    );
    let listed = lxc_ok(&["list", "--format", "csv", "-c", "n", &format!("^{}-", t.name)]);
    assert!(listed.trim().is_empty(), "no container: {listed}");
    assert!(!t.stack.path().join("tables").exists() && !t.stack.path().join(".secrets").exists(), "nothing on disk");
}
