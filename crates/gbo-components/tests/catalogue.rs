//! The catalogue's structure: dependencies, ports, wires, privileges, secrets and units.

mod common;

use std::collections::BTreeSet;

use gbo_components::secrets::ALL_SECRETS;
use gbo_components::{
    component, install_order, missing_dependencies, ports, required_secrets, with_dependencies, Error, Exposure,
    HealthCheck, Install, RenderContext, Role, Secrets, TenantFile,
};

fn specs() -> Vec<gbo_components::ComponentSpec> {
    let tenant = common::full_tenant();
    let secrets = common::test_secrets();
    let ports = common::seed_ports(&tenant);
    let ctx = RenderContext { tenant: &tenant, secrets: &secrets, host_ports: &ports };
    Role::ALL.into_iter().map(|r| component(r, &ctx).unwrap_or_else(|e| panic!("{r}: {e}"))).collect()
}

#[test]
fn dependencies_as_in_the_issue() {
    assert_eq!(Role::AlmCi.dependencies(), [Role::Alm]);
    assert_eq!(Role::Webmail.dependencies(), [Role::Tables, Role::Email]);
    // A tenant file naming its own mail server frees webmail from the email role (it keeps its state in tables).
    let own_mail =
        TenantFile::parse("roles = [\"webmail\"]\n[webmail]\nimap = \"127.0.0.1:1143\"\nsmtp = \"127.0.0.1:1025\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gbo_components::catalogue::tenant_dependencies(Role::Webmail, &own_mail), [Role::Tables]);
    assert_eq!(
        gbo_components::catalogue::with_tenant_dependencies(&[Role::Webmail], &own_mail),
        [Role::Tables, Role::Webmail]
    );
    assert_eq!(
        gbo_components::catalogue::tenant_dependencies(Role::Webmail, &TenantFile::default()),
        [Role::Tables, Role::Email]
    );
    assert_eq!(Role::TableEditor.dependencies(), [Role::Tables]);
    assert_eq!(Role::System.dependencies(), [Role::Tables, Role::Cache, Role::Drive]);
    assert!(Role::Tables.dependencies().is_empty());
}

#[test]
fn install_order_is_topological() {
    let waves = install_order(&Role::ALL);
    assert_eq!(waves.iter().map(Vec::len).sum::<usize>(), Role::ALL.len(), "every role exactly once");
    let position = |role: Role| waves.iter().position(|w| w.contains(&role));
    for role in Role::ALL {
        for dep in role.dependencies() {
            assert!(position(*dep) < position(role), "{dep} must come before {role}");
        }
    }
    assert_eq!(
        waves,
        vec![
            vec![
                Role::Tables,
                Role::Drive,
                Role::Cache,
                Role::Llm,
                Role::Email,
                Role::Vault,
                Role::VectorDb,
                Role::Proxy,
                Role::Dns,
                Role::Alm
            ],
            vec![Role::AlmCi, Role::TableEditor, Role::Webmail, Role::System],
        ]
    );
    // Only the given roles; dependencies outside the set are not waited for.
    assert_eq!(install_order(&[Role::System, Role::Cache]), vec![vec![Role::Cache], vec![Role::System]]);
    assert_eq!(install_order(&[Role::Webmail]), vec![vec![Role::Webmail]]);
    assert_eq!(install_order(&[]), Vec::<Vec<Role>>::new());
}

#[test]
fn dependency_closure() {
    assert_eq!(with_dependencies(&[Role::System]), [Role::Tables, Role::Drive, Role::Cache, Role::System]);
    assert_eq!(
        with_dependencies(&[Role::AlmCi, Role::Webmail]),
        [Role::Tables, Role::Email, Role::Alm, Role::AlmCi, Role::Webmail]
    );
    assert_eq!(
        missing_dependencies(&[Role::System, Role::Tables]),
        [(Role::System, Role::Cache), (Role::System, Role::Drive)]
    );
    assert!(missing_dependencies(&Role::DEFAULT_SET).is_empty());
}

#[test]
fn seed_port_table_for_the_default_tenant() {
    let tenant = TenantFile::default();
    let ports = gbo_components::HostPorts::seed(&tenant.roles);
    assert_eq!(ports.get(Role::Tables, "postgres"), Some(5432));
    assert_eq!(ports.get(Role::Drive, "api"), Some(9000));
    assert_eq!(ports.get(Role::Drive, "console"), Some(9001));
    assert_eq!(ports.get(Role::Cache, "redis"), Some(6379));
}

#[test]
fn ports_are_unique_and_public_only_for_network_roles() {
    for role in Role::ALL {
        let list = ports(role);
        let names: BTreeSet<&str> = list.iter().map(|p| p.name).collect();
        assert_eq!(names.len(), list.len(), "{role}: port names are unique");
        for port in &list {
            if port.exposure == Exposure::Public {
                assert!(
                    matches!(role, Role::Proxy | Role::Email | Role::Dns),
                    "{role}:{} must not be public",
                    port.name
                );
            }
        }
    }
    assert!(ports(Role::AlmCi).is_empty());
    // The seed's "never remove" list is covered by the network roles.
    let public: BTreeSet<u16> = Role::ALL
        .into_iter()
        .flat_map(ports)
        .filter(|p| p.exposure == Exposure::Public)
        .map(|p| p.container_port)
        .collect();
    assert_eq!(public, BTreeSet::from([25, 53, 80, 110, 143, 443, 465, 587, 993, 995, 4190]));
    // Seed host ports never collide among the default tenant's roles.
    let mut seen = BTreeSet::new();
    for role in Role::ALL {
        for port in ports(role) {
            if let Some(host) = port.seed_host_port {
                assert!(seen.insert((host, port.protocol)), "{role}:{} collides on {host}", port.name);
            }
        }
    }
}

#[test]
fn no_role_is_privileged_unless_the_tenant_file_asks_for_the_system_role() {
    for spec in specs() {
        assert!(!spec.privileged, "{}: privileged by default", spec.role);
        assert!(!spec.lxd_config.contains_key("security.privileged"), "{}", spec.role);
        assert!(!spec.lxd_config.contains_key("security.nesting"), "no role needs nesting");
    }
    let asked = TenantFile::parse(&format!("{}\n[system]\nprivileged = true\n", common::FULL_TENANT))
        .unwrap_or_else(|e| panic!("{e}"));
    let secrets = common::test_secrets();
    let ports = common::seed_ports(&asked);
    let ctx = RenderContext { tenant: &asked, secrets: &secrets, host_ports: &ports };
    for role in Role::ALL {
        let spec = component(role, &ctx).unwrap_or_else(|e| panic!("{role}: {e}"));
        let expected = role == Role::System;
        assert_eq!(spec.privileged, expected, "{role}");
        assert_eq!(spec.lxd_config.get("security.privileged").map(String::as_str), expected.then_some("true"));
    }
}

#[test]
fn wires_as_in_the_issue() {
    let specs = specs();
    let wired = |role: Role| -> Vec<(Role, u16)> {
        specs
            .iter()
            .find(|s| s.role == role)
            .map(|s| s.wires.iter().map(|w| (w.role, w.local_port)).collect())
            .unwrap_or_default()
    };
    let system = wired(Role::System);
    for expected in
        [(Role::Tables, 5432), (Role::Cache, 6379), (Role::Drive, 9000), (Role::Vault, 8200), (Role::VectorDb, 6333)]
    {
        assert!(system.contains(&expected), "system sees {expected:?}");
    }
    assert_eq!(wired(Role::TableEditor), [(Role::Tables, 5432)]);
    assert_eq!(
        wired(Role::Webmail),
        [(Role::Tables, 5432), (Role::Email, 143), (Role::Email, 587), (Role::Email, 4190)]
    );
    // With the tenant file's own mail server, webmail's IMAP and SMTP wires lead there (no Sieve).
    let own_mail = TenantFile::parse(
        "roles = [\"tables\", \"webmail\"]\n[webmail]\nimap = \"127.0.0.1:1143\"\nsmtp = \"127.0.0.1:1025\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let external: Vec<(Role, u16, Option<String>)> = gbo_components::wires(Role::Webmail, &own_mail)
        .into_iter()
        .map(|w| (w.role, w.local_port, w.external.map(|a| a.to_string())))
        .collect();
    assert_eq!(
        external,
        [
            (Role::Tables, 5432, None),
            (Role::Email, 143, Some("127.0.0.1:1143".to_string())),
            (Role::Email, 587, Some("127.0.0.1:1025".to_string()))
        ]
    );
    // The runner reaches Forgejo, and -system's sshd for its deploys (gbo ci connect).
    assert_eq!(wired(Role::AlmCi), [(Role::Alm, 3000), (Role::System, 22)]);
    // The proxy sees the roles its domains route to; webmail's port 80 moves to 20080 (Caddy owns 80 there).
    assert_eq!(wired(Role::Proxy), [(Role::System, 5859), (Role::Alm, 3000), (Role::Webmail, 20080)]);
    // Optional wires disappear when the tenant lacks the role.
    let small_tenant =
        TenantFile::parse("roles = [\"tables\", \"cache\", \"drive\", \"system\"]").unwrap_or_else(|e| panic!("{e}"));
    let small = gbo_components::wires(Role::System, &small_tenant);
    assert_eq!(small.len(), 3);
    assert!(small.iter().all(|w| w.required));
}

#[test]
fn alm_ci_has_no_cross_container_mounts() {
    let specs = specs();
    let Some(ci) = specs.iter().find(|s| s.role == Role::AlmCi) else { panic!("no alm-ci") };
    assert!(ci.mounts.iter().all(|m| m.host_subdir.starts_with("alm-ci/")));
}

#[test]
fn mounts_are_the_three_role_directories() {
    for spec in specs() {
        let mounts: Vec<(String, &str)> =
            spec.mounts.iter().map(|m| (m.host_subdir.clone(), m.container_path)).collect();
        let suffix = spec.role.container_suffix();
        assert_eq!(
            mounts,
            [
                (format!("{suffix}/data"), "/opt/gbo/data"),
                (format!("{suffix}/conf"), "/opt/gbo/conf"),
                (format!("{suffix}/logs"), "/opt/gbo/logs")
            ]
        );
    }
}

#[test]
fn every_role_has_its_unit_and_a_health_check_on_one_of_its_ports() {
    for spec in specs() {
        assert_eq!(spec.units.iter().filter(|u| **u == spec.role.unit_name()).count(), 1, "{}", spec.role);
        assert!(spec.file(&format!("/etc/systemd/system/{}", spec.role.unit_name())).is_some(), "{}", spec.role);
        match spec.health.port() {
            Some(port) => assert!(
                spec.ports.iter().any(|p| p.container_port == port),
                "{}: health port {port} is published",
                spec.role
            ),
            None => assert_eq!(spec.role, Role::AlmCi, "only alm-ci has no port"),
        }
        if spec.role != Role::AlmCi {
            assert!(!matches!(spec.health, HealthCheck::Tcp { .. }), "{}: a protocol-level check", spec.role);
        }
    }
}

#[test]
fn system_runs_system_and_ui_services() {
    let specs = specs();
    let Some(system) = specs.iter().find(|s| s.role == Role::System) else { panic!("no system") };
    assert!(system.units.contains(&"system.service".to_owned()));
    assert!(system.units.contains(&"ui.service".to_owned()));
    let ui = system.file("/etc/systemd/system/ui.service").map(|f| f.content.clone()).unwrap_or_default();
    assert!(ui.contains("Environment=BOTSERVER_URL=http://localhost:5858\n"), "{ui}");
}

#[test]
fn secrets_only_in_files_marked_secret_and_never_in_commands() {
    let secrets = common::test_secrets();
    let values: Vec<&str> = secrets.values().collect();
    for spec in specs() {
        for file in &spec.files {
            let holds = values.iter().any(|v| file.content.contains(v));
            assert_eq!(holds, file.secret, "{}: {} secret flag", spec.role, file.path);
            if file.secret {
                assert_eq!(
                    file.mode & 0o077,
                    if file.path.starts_with("/etc/roundcube") { 0o040 } else { 0 },
                    "{}",
                    file.path
                );
                assert!(!file.path.starts_with("/opt/gbo/"), "{}: secrets stay off the host mounts", file.path);
                assert!(!format!("{file:?}").contains(values[0]) || !file.content.contains(values[0]));
            }
        }
        for step in &spec.init {
            for arg in &step.command {
                assert!(
                    !values.iter().any(|v| arg.contains(v)),
                    "{}: secret in the command of {}",
                    spec.role,
                    step.name
                );
            }
        }
        let debug = format!("{spec:?}");
        assert!(!values.iter().any(|v| debug.contains(v)), "{}: Debug of a spec shows a secret", spec.role);
    }
}

#[test]
fn secrets_debug_and_display_redact() {
    let secrets = common::test_secrets();
    let shown = format!("{secrets:?} {secrets}");
    for value in secrets.values() {
        assert!(!shown.contains(value));
    }
    assert!(shown.contains("tables-password"));
    assert!(shown.contains("<redacted>"));
}

#[test]
fn missing_or_malformed_secret_is_an_error_naming_it() {
    let tenant = common::full_tenant();
    let ports = common::seed_ports(&tenant);
    let empty = Secrets::new();
    let ctx = RenderContext { tenant: &tenant, secrets: &empty, host_ports: &ports };
    assert_eq!(
        component(Role::Tables, &ctx).map(|_| ()).map_err(|e| e.to_string()),
        Err("missing secret \"tables-password\" needed by role tables".to_owned())
    );
    let short = Secrets::new().with("tables-password", "abc");
    let ctx = RenderContext { tenant: &tenant, secrets: &short, host_ports: &ports };
    let err = component(Role::Tables, &ctx).map(|_| ());
    assert!(matches!(&err, Err(Error::InvalidSecret { name, .. }) if name == "tables-password"), "{err:?}");
    assert!(!err.map_err(|e| e.to_string()).err().unwrap_or_default().contains("abc"), "the value is never shown");
    // Roles without secrets render without any; the cache has one now (loopback is not a trust boundary).
    let ctx = RenderContext { tenant: &tenant, secrets: &empty, host_ports: &ports };
    assert!(component(Role::Proxy, &ctx).is_ok());
    assert_eq!(
        component(Role::Cache, &ctx).map(|_| ()).map_err(|e| e.to_string()),
        Err("missing secret \"cache-password\" needed by role cache".to_owned())
    );
}

#[test]
fn required_secrets_are_known_and_well_formed() {
    let known: BTreeSet<&str> = ALL_SECRETS.iter().map(|s| s.name).collect();
    assert_eq!(known.len(), ALL_SECRETS.len(), "secret names are unique");
    for role in Role::ALL {
        for spec in required_secrets(role) {
            assert!(known.contains(spec.name));
        }
    }
    assert_eq!(required_secrets(Role::Tables)[0].name, "tables-password");
    assert_eq!(required_secrets(Role::Tables)[0].length, 32);
    let drive: Vec<&str> = required_secrets(Role::Drive).iter().map(|s| s.name).collect();
    assert_eq!(drive, ["drive-access-key", "drive-secret-key"]);
}

#[test]
fn install_methods() {
    for spec in specs() {
        let packages: Vec<&str> = spec
            .install
            .iter()
            .filter_map(|i| match i {
                Install::DebianPackages(p) => Some(p.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let artifacts: Vec<&gbo_components::Artifact> = spec
            .install
            .iter()
            .filter_map(|i| match i {
                Install::Artifact(a) => Some(a),
                _ => None,
            })
            .collect();
        match spec.role {
            Role::Tables => assert_eq!(packages, ["postgresql", "postgresql-client"]),
            Role::Cache => assert_eq!(packages, ["redis-server"]),
            Role::Proxy => assert!(packages.contains(&"caddy") && artifacts.is_empty()),
            Role::Webmail => assert!(packages.contains(&"roundcube-core") && artifacts.is_empty()),
            _ => assert!(!artifacts.is_empty(), "{} comes from an artifact", spec.role),
        }
        for artifact in artifacts {
            assert!(artifact.url.starts_with("https://"), "{}", artifact.url);
            assert!(artifact.install_path.starts_with("/opt/gbo/bin/"));
            // No checksum is compiled in unless quoted from release material; none is yet.
            assert!(artifact.sha256.is_none(), "{} has a checksum: say where it was quoted from", artifact.name);
        }
    }
}

#[test]
fn image_packages_and_users() {
    let packages = gbo_components::image_packages(&Role::ALL);
    assert_eq!(&packages[..4], gbo_components::BASE_PACKAGES);
    let unique: BTreeSet<&&str> = packages.iter().collect();
    assert_eq!(unique.len(), packages.len());
    assert_eq!(gbo_components::image_packages(&[]), gbo_components::BASE_PACKAGES);
    let users = gbo_components::SERVICE_USERS;
    assert_eq!(users[0].name, "gbuser");
    assert_eq!(users[0].uid, 1000);
    let ids: BTreeSet<u32> = users.iter().map(|u| u.uid).collect();
    assert_eq!(ids.len(), users.len());
    assert!(
        users.iter().all(|u| u.uid >= 1000 && u.uid < 60000 && u.uid == u.gid),
        "outside Debian's dynamic system range"
    );
}

#[test]
fn rendering_is_deterministic() {
    let a = specs();
    let b = specs();
    assert_eq!(a, b);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.spec_hash(), y.spec_hash());
    }
}

#[test]
fn systemd_units_have_no_shell_syntax() {
    for spec in specs() {
        for file in spec.files.iter().filter(|f| f.path.starts_with("/etc/systemd/system/")) {
            for line in file.content.lines().filter(|l| l.starts_with("ExecStart=") || l.starts_with("ExecReload=")) {
                for bad in ["&&", "||", "nohup", " &", "|", ">", "<", ";", "`", "$("] {
                    assert!(!line.contains(bad), "{}: {line:?} contains {bad:?}", file.path);
                }
            }
            assert!(file.content.contains("\nUser="), "{}", file.path);
            if !file.content.contains("Type=oneshot") {
                assert!(file.content.contains("\nRestart=on-failure\n"), "{}", file.path);
            }
        }
    }
}

#[test]
fn containers_start_with_the_host_in_dependency_order_and_the_proxy_last() {
    use gbo_components::catalogue::{boot_config, boot_priority, shutdown_timeout_secs};
    for role in Role::ALL {
        for dependency in role.dependencies() {
            assert!(boot_priority(*dependency) > boot_priority(role), "{dependency} must start before {role}");
        }
        let config = boot_config(role);
        assert_eq!(config["boot.autostart"], "true");
        assert_eq!(config["boot.autostart.priority"], boot_priority(role).to_string());
    }
    assert!(boot_priority(Role::Tables) > boot_priority(Role::System));
    assert!(boot_priority(Role::Cache) > boot_priority(Role::System));
    assert!(Role::ALL.iter().all(|r| *r == Role::Proxy || boot_priority(*r) >= boot_priority(Role::Proxy)));
    assert!(shutdown_timeout_secs(Role::Tables) >= 120, "PostgreSQL needs time to stop cleanly");
}
