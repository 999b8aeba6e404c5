//! Rendered files checked by the real tools that will read them: `fail2ban-regex` for the flood filter and
//! `caddy adapt` for the Caddyfiles (both from Debian; `cargo xtask test` installs them). A missing tool fails
//! the test, in CI and out of it: a test that does not run proves nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use gbo_components::render::{fail2ban, misc};
use gbo_components::{component, HostPorts, RenderContext, Role, Secrets, TenantFile};

fn tool(name: &str) -> PathBuf {
    gbo_tests::programs::require_program(name)
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gbo-components-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn write(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn log_line(ip: &str, status: u16, header: &str) -> String {
    format!(
        r#"{{"level":"info","ts":1700000000.1234567,"logger":"http.log.access.log0","msg":"handled request","request":{{"remote_ip":"{ip}","remote_port":"51234","proto":"HTTP/1.1","method":"GET","host":"chat.example.com","uri":"/x","headers":{{"User-Agent":["{header}"]}}}},"user_id":"","duration":0.0001,"size":0,"status":{status},"resp_headers":{{"Server":["Caddy"]}}}}"#
    )
}

#[test]
fn flood_filter_matches_4xx_only() {
    let regex = tool("fail2ban-regex");
    let dir = scratch("f2b");
    let filter = dir.join("caddy-http-flood.conf");
    write(&filter, &fail2ban::caddy_filter());
    let lines = [
        log_line("203.0.113.1", 404, "curl"),
        log_line("203.0.113.2", 400, "curl"),
        log_line("2001:db8::7", 429, "curl"),
        log_line("203.0.113.4", 200, "curl"),
        log_line("203.0.113.5", 301, "curl"),
        log_line("203.0.113.6", 502, "curl"),
        // A client cannot forge the keys: quotes inside request data are escaped in JSON.
        log_line("203.0.113.8", 200, r#"x\",\"status\":404,\"remote_ip\":\"198.51.100.9"#),
    ];
    let log = dir.join("access.log");
    write(&log, &(lines.join("\n") + "\n"));
    let output = Command::new(regex)
        .args(["--print-all-matched", "--print-no-missed"])
        .arg(&log)
        .arg(&filter)
        .output()
        .unwrap_or_else(|e| panic!("fail2ban-regex: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("Lines: 7 lines, 0 ignored, 3 matched, 4 missed"), "{stdout}");
    for matched in ["203.0.113.1", "203.0.113.2", "2001:db8::7"] {
        assert!(stdout.contains(&format!("\"remote_ip\":\"{matched}\"")), "{matched} should match:\n{stdout}");
    }
    assert!(stdout.contains("\"ts\":{EPOCH}"), "the date comes from ts:\n{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn caddy_adapt(caddy: &Path, dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    write(&path, text);
    let output = Command::new(caddy)
        .args(["adapt", "--adapter", "caddyfile", "--config"])
        .arg(&path)
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .output()
        .unwrap_or_else(|e| panic!("caddy: {e}"));
    assert!(output.status.success(), "{name}:\n{}\n{text}", String::from_utf8_lossy(&output.stderr));
    let json = String::from_utf8_lossy(&output.stdout);
    assert!(json.contains("/opt/gbo/data/caddy"), "{name}: storage kept:\n{json}");
}

#[test]
fn rendered_caddyfiles_adapt() {
    let caddy = tool("caddy");
    let dir = scratch("caddy");
    let tenant = common::full_tenant();
    let secrets = common::test_secrets();
    let ports = common::seed_ports(&tenant);
    let ctx = RenderContext { tenant: &tenant, secrets: &secrets, host_ports: &ports };
    let spec = component(Role::Proxy, &ctx).unwrap_or_else(|e| panic!("{e}"));
    let full = spec.file("/opt/gbo/conf/config").map(|f| f.content.clone()).unwrap_or_default();
    caddy_adapt(&caddy, &dir, "full", &full);

    let bare = TenantFile::parse("roles = [\"proxy\"]").unwrap_or_else(|e| panic!("{e}"));
    let none = Secrets::new();
    let ports = HostPorts::seed(&bare.roles);
    let ctx = RenderContext { tenant: &bare, secrets: &none, host_ports: &ports };
    let spec = component(Role::Proxy, &ctx).unwrap_or_else(|e| panic!("{e}"));
    let bare_file = spec.file("/opt/gbo/conf/config").map(|f| f.content.clone()).unwrap_or_default();
    caddy_adapt(&caddy, &dir, "bare", &bare_file);

    caddy_adapt(&caddy, &dir, "webmail", &misc::webmail_caddyfile(80));

    // And the site helper agrees with what was rendered.
    assert_eq!(
        gbo_components::caddyfile::site_addresses(&full).unwrap_or_default(),
        ["chat.example.com", "git.example.com", "mail.example.com", "example.com", "http://localhost"]
    );
    assert!(gbo_components::caddyfile::has_storage_block(&full));
    assert_eq!(gbo_components::caddyfile::site_addresses(&bare_file).unwrap_or_default(), [":80"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `program` as `user` (through `runuser`), returning its output.
fn run_as(user: &str, program: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", user, "--", program])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("runuser {program}: {e}"))
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"))
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what} not ready within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn postgres_bin() -> PathBuf {
    let bin = PathBuf::from(gbo_components::render::postgres::PG_BIN);
    tool("/usr/lib/postgresql/15/bin/initdb");
    tool("psql");
    tool("runuser");
    let usable = bin.join("initdb").is_file()
        // Only root can switch to the postgres user: the owner of /proc/self is our effective uid.
        && std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
        && Command::new("id").arg("postgres").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(usable, "PostgreSQL 15 server binaries, runuser, root and the postgres user are required by this test: run `cargo xtask test`");
    bin
}

/// The tables role's rendered files and init steps, run for real (paths moved to a scratch directory, port moved
/// to a free one): initdb, start, the init SQL (twice: idempotent), the seed's `psql -U gbuser botserver` as root
/// through the pg_ident map, and SCRAM over TCP with the generated password.
#[test]
fn tables_files_work_with_real_postgresql() {
    let bin = postgres_bin();
    let dir = scratch("pg");
    let (data, conf, run) = (dir.join("data"), dir.join("conf"), dir.join("run"));
    let port = free_port();
    let moved = |text: &str| {
        text.replace("/opt/gbo/data", &data.to_string_lossy())
            .replace("/opt/gbo/conf", &conf.to_string_lossy())
            .replace("/etc/gbo", &conf.to_string_lossy())
            .replace("/var/run/postgresql", &run.to_string_lossy())
            .replace("port = 5432", &format!("port = {port}"))
    };
    let postgres_ids = Command::new("id").args(["-u", "postgres"]).output().ok();
    let uid: u32 = postgres_ids.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(0);
    for d in [&dir, &data, &conf, &run] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::chown(d, Some(uid), None).unwrap_or_else(|e| panic!("{e}"));
    }

    let tenant = TenantFile::parse("roles = [\"tables\"]").unwrap_or_else(|e| panic!("{e}"));
    let secrets = common::test_secrets();
    let ports = HostPorts::seed(&tenant.roles);
    let ctx = RenderContext { tenant: &tenant, secrets: &secrets, host_ports: &ports };
    let spec = component(Role::Tables, &ctx).unwrap_or_else(|e| panic!("{e}"));
    for file in &spec.files {
        // Units and helper programs belong to the container's systemd, not to this run.
        if file.path.starts_with("/etc/systemd") || file.path.starts_with("/usr/local/") {
            continue;
        }
        let target = PathBuf::from(moved(&file.path));
        write(&target, &moved(&file.content));
        std::os::unix::fs::chown(&target, Some(uid), None).unwrap_or_else(|e| panic!("{e}"));
    }

    let initdb = &spec.init[0];
    let args: Vec<String> = initdb.command[1..].iter().map(|a| moved(a)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_as(initdb.user, &moved(&initdb.command[0]), &args);
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    assert!(Path::new(&moved(&initdb.creates)).exists(), "initdb creates its marker");

    let server = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join("postgres"))
        .args(["-D", &data.join("pgdata").to_string_lossy(), "-c"])
        .arg(format!("config_file={}", conf.join("postgresql.conf").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("postgres: {e}"));
    let _server = KillOnDrop(server);
    let socket = run.to_string_lossy().to_string();
    let port_text = port.to_string();
    wait_until("postgres", || {
        Command::new(bin.join("pg_isready"))
            .args(["-h", &socket, "-p", &port_text])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });

    let init = &spec.init[1];
    for _ in 0..2 {
        let mut args: Vec<String> = init.command[1..].iter().map(|a| moved(a)).collect();
        args.extend(["-h".to_owned(), socket.clone(), "-p".to_owned(), port_text.clone()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_as(init.user, &init.command[0], &args);
        assert!(out.status.success(), "init sql: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(Path::new(&moved(&init.creates)).exists(), "the init SQL leaves its marker");

    // The seed's command, as root: peer authentication through the gbo map, no password.
    let out = Command::new("psql")
        .args(["-X", "-At", "-h", &socket, "-p", &port_text, "-U", "gbuser", "botserver", "-c", "SELECT current_user"])
        .env_remove("PGPASSWORD")
        .output()
        .unwrap_or_else(|e| panic!("psql: {e}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "gbuser", "{}", String::from_utf8_lossy(&out.stderr));

    // TCP on loopback needs the generated password (SCRAM); a wrong one is refused.
    let password = secrets.get("tables-password").unwrap_or_default();
    let tcp = |password: &str| {
        Command::new("psql")
            .args(["-X", "-At", "-h", "127.0.0.1", "-p", &port_text, "-U", "gbuser", "botserver", "-c", "SELECT 1"])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"))
    };
    let good = tcp(password);
    assert_eq!(String::from_utf8_lossy(&good.stdout).trim(), "1", "{}", String::from_utf8_lossy(&good.stderr));
    let bad = tcp("wrong-password");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("password authentication failed"));
    drop(_server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One request to a Redis server on 127.0.0.1:`port`, as RESP arrays; returns the first reply line.
fn redis_request(port: u16, commands: &[&[&str]]) -> Option<String> {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(2))).ok()?;
    let mut request = Vec::new();
    for command in commands {
        request.extend(format!("*{}\r\n", command.len()).bytes());
        for arg in *command {
            request.extend(format!("${}\r\n{arg}\r\n", arg.len()).bytes());
        }
    }
    stream.write_all(&request).ok()?;
    let mut reader = std::io::BufReader::new(stream);
    let mut replies = String::new();
    for _ in commands {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        replies.push_str(&line);
    }
    Some(replies)
}

/// The cache role's files (redis.conf and the file holding the password), run for real under redis-server (data,
/// logs and /etc/gbo moved to a scratch directory, port moved): it starts, refuses an unauthenticated PING with
/// NOAUTH, refuses a wrong password, and answers PONG after AUTH with the generated password.
#[test]
fn cache_config_works_with_real_redis() {
    let redis = tool("redis-server");
    let dir = scratch("redis");
    let port = free_port();
    let moved = |text: &str| {
        text.replace("/opt/gbo/data", &dir.to_string_lossy())
            .replace("/opt/gbo/logs/cache.log", &dir.join("cache.log").to_string_lossy())
            .replace("/opt/gbo/conf", &dir.to_string_lossy())
            .replace("/etc/gbo", &dir.to_string_lossy())
            .replace("port 6379", &format!("port {port}"))
    };
    let tenant = TenantFile::parse("roles = [\"cache\"]").unwrap_or_else(|e| panic!("{e}"));
    let secrets = common::test_secrets();
    let ports = HostPorts::seed(&tenant.roles);
    let ctx = RenderContext { tenant: &tenant, secrets: &secrets, host_ports: &ports };
    let spec = component(Role::Cache, &ctx).unwrap_or_else(|e| panic!("{e}"));
    for file in spec.files.iter().filter(|f| f.path.starts_with("/opt/gbo/conf/") || f.path.starts_with("/etc/gbo/")) {
        let target = PathBuf::from(moved(&file.path));
        write(&target, &moved(&file.content));
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(file.mode))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let server = Command::new(redis)
        .arg(dir.join("redis.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("redis-server: {e}"));
    let _server = KillOnDrop(server);
    wait_until("redis", || redis_request(port, &[&["PING"]]).is_some());
    let log = std::fs::read_to_string(dir.join("cache.log")).unwrap_or_default();
    assert!(log.contains("Ready to accept connections"), "{log}");

    let anonymous = redis_request(port, &[&["PING"]]).unwrap_or_default();
    assert!(anonymous.starts_with("-NOAUTH"), "an unauthenticated PING must be refused, got {anonymous:?}");
    let wrong = redis_request(port, &[&["AUTH", "wrong-password"], &["PING"]]).unwrap_or_default();
    assert!(wrong.starts_with("-WRONGPASS") && wrong.contains("-NOAUTH"), "{wrong:?}");
    let password = secrets.get("cache-password").unwrap_or_else(|| panic!("no cache-password secret"));
    let good = redis_request(port, &[&["AUTH", password], &["PING"]]).unwrap_or_default();
    assert_eq!(good, "+OK\r\n+PONG\r\n");
    let log = std::fs::read_to_string(dir.join("cache.log")).unwrap_or_default();
    assert!(!log.contains(password), "the password is never logged");
    drop(_server);
    let _ = std::fs::remove_dir_all(&dir);
}
