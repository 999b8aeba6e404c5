//! Snapshot tests of every rendered file and of a whole tenant's spec summary.
//!
//! Update with `INSTA_UPDATE=always cargo test -p gbo-components`, then review the `.snap` files.

mod common;

use std::fmt::Write as _;

use gbo_components::render::{coredns, fail2ban, firewall};
use gbo_components::{component, tenant_components, HostPorts, Install, RenderContext, Role, Secrets, TenantFile};

fn snapshot_name(role: Role, path: &str) -> String {
    let cleaned: String = path
        .trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect();
    format!("{}__{cleaned}", role.container_suffix())
}

#[test]
fn every_rendered_file_of_a_full_tenant() {
    let tenant = common::full_tenant();
    let secrets = common::test_secrets();
    let ports = common::seed_ports(&tenant);
    let ctx = RenderContext { tenant: &tenant, secrets: &secrets, host_ports: &ports };
    for role in Role::ALL {
        let spec = component(role, &ctx).unwrap_or_else(|e| panic!("{role}: {e}"));
        for file in &spec.files {
            let header = format!(
                "path: {}\nmode: {:o}\nowner: {}:{}\nrestarts: {}\nsecret: {}\n---\n",
                file.path,
                file.mode,
                file.uid,
                file.gid,
                file.restarts.join(" "),
                file.secret
            );
            insta::assert_snapshot!(snapshot_name(role, &file.path), format!("{header}{}", file.content));
        }
    }
}

fn summary(specs: &[gbo_components::ComponentSpec]) -> String {
    let mut out = String::new();
    for spec in specs {
        let _ = writeln!(out, "{} ({})", spec.instance, spec.role);
        for install in &spec.install {
            match install {
                Install::DebianPackages(p) => {
                    let _ = writeln!(out, "  packages: {}", p.join(" "));
                }
                Install::Artifact(a) => {
                    let verified = if a.is_verified() { "verified" } else { "UNVERIFIED" };
                    let _ = writeln!(
                        out,
                        "  artifact: {} {} -> {} ({verified}) {}",
                        a.name, a.version, a.install_path, a.url
                    );
                }
            }
        }
        for port in &spec.ports {
            let _ = writeln!(
                out,
                "  port {}: {}/{} {:?} seed host {}",
                port.name,
                port.container_port,
                port.protocol.as_str(),
                port.exposure,
                port.seed_host_port.map_or("-".to_owned(), |p| p.to_string())
            );
        }
        for wire in &spec.wires {
            let _ = writeln!(
                out,
                "  wire 127.0.0.1:{} -> {}:{}{}",
                wire.local_port,
                wire.role,
                wire.port_name,
                if wire.required { "" } else { " (optional)" }
            );
        }
        let mounts: Vec<String> =
            spec.mounts.iter().map(|m| format!("{}->{} ({})", m.host_subdir, m.container_path, m.owner.name)).collect();
        let _ = writeln!(out, "  mounts: {}", mounts.join(", "));
        if !spec.lxd_config.is_empty() {
            let keys: Vec<String> = spec.lxd_config.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "  lxd config: {}", keys.join(" "));
        }
        if !spec.dependencies.is_empty() {
            let deps: Vec<&str> = spec.dependencies.iter().map(|r| r.as_str()).collect();
            let _ = writeln!(out, "  after: {}", deps.join(", "));
        }
        let _ = writeln!(out, "  units: {}", spec.units.join(" "));
        if !spec.masked_units.is_empty() {
            let _ = writeln!(out, "  masked: {}", spec.masked_units.join(" "));
        }
        for file in &spec.files {
            let _ = writeln!(out, "  file {} {:o}{}", file.path, file.mode, if file.secret { " secret" } else { "" });
        }
        for step in &spec.init {
            let _ = writeln!(
                out,
                "  init {:?} {} as {} unless {}: {}",
                step.phase,
                step.name,
                step.user,
                step.creates,
                step.command.join(" ")
            );
        }
        let _ = writeln!(out, "  health: {:?}", spec.health);
        for note in &spec.notes {
            let _ = writeln!(out, "  note: {note}");
        }
    }
    out
}

#[test]
fn whole_tenant_summary() {
    let tenant = common::full_tenant();
    let secrets = common::test_secrets();
    let ports = common::seed_ports(&tenant);
    let ctx = RenderContext { tenant: &tenant, secrets: &secrets, host_ports: &ports };
    let specs = tenant_components(&ctx).unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!("full_tenant_summary", summary(&specs));
}

#[test]
fn default_tenant_summary() {
    let tenant = TenantFile::default();
    let secrets = common::test_secrets();
    let ports = HostPorts::seed(&tenant.roles);
    let ctx = RenderContext { tenant: &tenant, secrets: &secrets, host_ports: &ports };
    let specs = tenant_components(&ctx).unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!("default_tenant_summary", summary(&specs));
}

#[test]
fn proxy_without_domains_answers_on_port_80() {
    let tenant = TenantFile::parse("roles = [\"proxy\"]").unwrap_or_else(|e| panic!("{e}"));
    let secrets = Secrets::new();
    let ports = HostPorts::seed(&tenant.roles);
    let ctx = RenderContext { tenant: &tenant, secrets: &secrets, host_ports: &ports };
    let spec = component(Role::Proxy, &ctx).unwrap_or_else(|e| panic!("{e}"));
    let caddyfile = spec.file("/opt/gbo/conf/config").map(|f| f.content.clone()).unwrap_or_default();
    insta::assert_snapshot!("proxy_without_domains", caddyfile);
}

#[test]
fn standalone_renderers() {
    insta::assert_snapshot!("host_sshd_jail", fail2ban::host_sshd_jail());
    insta::assert_snapshot!("iptables_rules_v4_several_ports", firewall::rules_v4(&[9000, 6379, 5432, 6379]));
    insta::assert_snapshot!("corefile_two_zones", coredns::corefile(&["example.com", "example.org"], 53));
    let records = coredns::derived_records(
        "example.org",
        &["example.org", "www.example.org", "other.net"],
        "2001:db8::10".parse().ok(),
        false,
    );
    insta::assert_snapshot!("zone_file_ipv6", coredns::zone_file("example.org", &records));
    let no_address = coredns::derived_records("example.org", &["www.example.org"], None, true);
    insta::assert_snapshot!("zone_file_without_address", coredns::zone_file("example.org", &no_address));
}
