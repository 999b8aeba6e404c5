//! Rendered files checked by the real tools that will read them: `fail2ban-regex` for the flood filter and
//! `caddy adapt` for the Caddyfiles (both from Debian; `cargo xtask test` installs them). Outside CI a missing
//! tool skips the test with a message; in CI (`CI` set) it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use gbo_components::render::{fail2ban, misc};
use gbo_components::{component, HostPorts, RenderContext, Role, Secrets, TenantFile};

fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()));
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "{name} is required in CI (Debian package providing it)");
        eprintln!("skipping: {name} is not installed");
    }
    found
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
    let Some(regex) = tool("fail2ban-regex") else { return };
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
    let Some(caddy) = tool("caddy") else { return };
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
