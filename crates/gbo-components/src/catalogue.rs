//! The catalogue proper: for each role, its ports, wires, units, files, init steps and health check.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Result;
use crate::names::{instance_name, Role};
use crate::render::systemd::{ServiceType, Unit};
use crate::render::{self, botserver, caddy, coredns, fail2ban, firewall, forgejo, logs, misc, postgres, redis, sshd};
use crate::secrets::{self, required_secrets};
use crate::spec::{
    ComponentSpec, Exposure, HealthCheck, InitPhase, InitStep, Install, Mount, MountKind, PortSpec, Protocol,
    RenderContext, RenderedFile, StatusRange, Wire,
};
use crate::tenant_file::TenantFile;
use crate::users::{self, role_packages, service_user, ServiceUser, GBUSER};

const fn port(name: &'static str, container_port: u16, exposure: Exposure, seed: Option<u16>) -> PortSpec {
    PortSpec { name, container_port, protocol: Protocol::Tcp, exposure, seed_host_port: seed }
}

const fn internal(name: &'static str, p: u16) -> PortSpec {
    port(name, p, Exposure::Internal, Some(p))
}

const fn public(name: &'static str, p: u16) -> PortSpec {
    port(name, p, Exposure::Public, Some(p))
}

/// The ports of `role`. Services listen on 127.0.0.1 inside their container; proxy devices publish them.
pub fn ports(role: Role) -> Vec<PortSpec> {
    match role {
        Role::Tables => vec![internal("postgres", 5432)],
        Role::Drive => vec![internal("api", 9000), internal("console", 9001)],
        Role::Cache => vec![internal("redis", 6379)],
        Role::Llm => vec![internal("chat", 8081), internal("embeddings", 8082)],
        Role::Email => {
            let mut ports: Vec<PortSpec> = misc::MAIL_LISTENERS
                .iter()
                .filter(|(id, ..)| *id != "http")
                .map(|(id, p, ..)| public(id, *p))
                .collect();
            // Stalwart's web admin and health endpoint: internal, and 8080 would collide with table-editor.
            ports.push(port("http", 8080, Exposure::Internal, None));
            ports
        }
        Role::Vault => vec![internal("api", 8200)],
        Role::VectorDb => vec![internal("rest", 6333), internal("grpc", 6334)],
        Role::Proxy => vec![public("http", 80), public("https", 443)],
        Role::Dns => vec![
            public("dns-tcp", 53),
            PortSpec { protocol: Protocol::Udp, ..public("dns-udp", 53) },
            port("health", coredns::HEALTH_PORT, Exposure::Internal, None),
        ],
        Role::Alm => vec![internal("http", 3000)],
        Role::AlmCi => vec![],
        Role::TableEditor => vec![internal("http", 8080)],
        // Port 80 on the host's loopback would collide with the proxy on all addresses: always allocated.
        Role::Webmail => vec![port("http", 80, Exposure::Internal, None)],
        // sshd (the runner's deploys): on the host's loopback only, always allocated (22 is the host's own).
        Role::System => vec![
            internal("api", botserver::BOTSERVER_PORT),
            internal("ui", botserver::BOTUI_PORT),
            port("ssh", sshd::SSH_PORT, Exposure::Internal, None),
        ],
    }
}

/// The roles a proxy site can route to, and the port name it uses.
pub fn http_roles() -> &'static [Role] {
    &[Role::System, Role::Alm, Role::Webmail, Role::TableEditor, Role::Drive, Role::Email]
}

/// The port a proxy site of `role` forwards to.
pub fn http_port_name(role: Role) -> Option<&'static str> {
    match role {
        Role::System => Some("ui"),
        Role::Alm | Role::Webmail | Role::TableEditor | Role::Email => Some("http"),
        Role::Drive => Some("console"),
        _ => None,
    }
}

fn port_of(role: Role, name: &str) -> Option<u16> {
    ports(role).into_iter().find(|p| p.name == name).map(|p| p.container_port)
}

/// Every role `roles` needs, dependencies included, in canonical order.
pub fn with_dependencies(roles: &[Role]) -> Vec<Role> {
    with_tenant_dependencies(roles, &TenantFile::default())
}

/// The dependencies of `role` for `tenant`: [`Role::dependencies`], without the email role for webmail when the
/// tenant file names a mail server of its own (`[webmail]`).
pub fn tenant_dependencies(role: Role, tenant: &TenantFile) -> Vec<Role> {
    role.dependencies()
        .iter()
        .copied()
        .filter(|d| !(role == Role::Webmail && *d == Role::Email && tenant.webmail.mail_server.is_some()))
        .collect()
}

/// Every role `roles` needs for `tenant`, dependencies included ([`tenant_dependencies`]), in canonical order.
pub fn with_tenant_dependencies(roles: &[Role], tenant: &TenantFile) -> Vec<Role> {
    let mut set: BTreeSet<Role> = roles.iter().copied().collect();
    let mut stack: Vec<Role> = roles.to_vec();
    while let Some(role) = stack.pop() {
        for dep in tenant_dependencies(role, tenant) {
            if set.insert(dep) {
                stack.push(dep);
            }
        }
    }
    Role::ALL.into_iter().filter(|r| set.contains(r)).collect()
}

/// The dependencies of `roles` that are not among them: `(role, missing dependency)`.
pub fn missing_dependencies(roles: &[Role]) -> Vec<(Role, Role)> {
    roles.iter().flat_map(|r| r.dependencies().iter().filter(|d| !roles.contains(d)).map(move |d| (*r, *d))).collect()
}

/// LXD's start priority of a role's container after a host reboot (higher starts first): what a role depends on
/// starts before it (tables and cache before system), and the roles that face the network (proxy, dns, email,
/// webmail) start last, once what they front is up.
pub fn boot_priority(role: Role) -> u32 {
    fn depth(role: Role) -> u32 {
        role.dependencies().iter().map(|d| depth(*d) + 1).max().unwrap_or(0)
    }
    match role {
        // The front door opens last of all.
        Role::Proxy => 5,
        Role::Dns | Role::Email | Role::Webmail => 15u32.saturating_sub(3 * depth(role)).max(6),
        _ => 50u32.saturating_sub(10 * depth(role)).max(20),
    }
}

/// How long LXD waits for a role's container to stop cleanly when the host shuts down: PostgreSQL flushes and
/// checkpoints, so the tables role gets two minutes (LXD's default is 30 s); every other role one.
pub fn shutdown_timeout_secs(role: Role) -> u32 {
    if role == Role::Tables {
        120
    } else {
        60
    }
}

/// The `boot.*` keys of a role's container: started with the host, in [`boot_priority`] order, stopped within
/// [`shutdown_timeout_secs`].
pub fn boot_config(role: Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("boot.autostart".to_owned(), "true".to_owned()),
        ("boot.autostart.priority".to_owned(), boot_priority(role).to_string()),
        ("boot.host_shutdown_timeout".to_owned(), shutdown_timeout_secs(role).to_string()),
    ])
}

/// One role of the catalogue as `gbo components` lists it (`--output json`: this shape).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoleSummary {
    /// The role.
    pub role: &'static str,
    /// Its container's name pattern (`{tenant}-tables`).
    pub container: String,
    /// Its software: the pinned artifacts, or `debian: <packages>`.
    pub software: String,
    /// Its ports inside the container (`5432/tcp`).
    pub ports: Vec<String>,
    /// The roles it depends on.
    pub dependencies: Vec<&'static str>,
    /// Its Debian packages.
    pub debian_packages: &'static [&'static str],
    /// How its software gets into the container.
    pub install: String,
    /// How gbo verifies that software.
    pub verified: String,
}

/// How gbo verifies a pinned artifact, in a few words (`gbo components`; `docs/artifacts.md` has the detail).
pub fn verification_summary(pin: &crate::artifacts::Pin) -> String {
    if pin.version == crate::artifacts::UNPINNED {
        return "unverified: no versioned release (pin url+sha256 in [versions])".to_owned();
    }
    let sums = if pin.verification.sums.is_some() { " + vendor sums" } else { "" };
    let pinned = if pin.sha256.is_some() { " + sha256 pin" } else { "" };
    match pin.verification.signature {
        Some(rule) => {
            let covers = match rule.covers {
                crate::spec::Signed::Download => "binary",
                crate::spec::Signed::Sums => "sums",
            };
            let id = rule.vendor_key.unwrap_or("vendor");
            if rule.vendor_key.and_then(crate::trust::vendor_key).is_some() {
                format!("{} signature of {covers}, key {id}{sums}{pinned}", rule.scheme.as_str())
            } else if pin.sha256.is_some() {
                format!("sha256 pin{sums} ({} key {id} not shipped)", rule.scheme.as_str())
            } else {
                format!("unverified: {} key {id} not shipped (add under [trust]){sums}", rule.scheme.as_str())
            }
        }
        None if pin.sha256.is_some() => format!("sha256 pin{sums}"),
        None if pin.verification.sums.is_some() => "unverified: unsigned vendor sums only".to_owned(),
        None => "unverified: vendor publishes no sums or signature".to_owned(),
    }
}

/// The summary of `role`.
pub fn summary(role: Role) -> RoleSummary {
    let ports = ports(role).iter().map(|p| format!("{}/{}", p.container_port, p.protocol.as_str())).collect();
    let debian_packages = role_packages(role);
    let artifacts = crate::artifacts::pinned_artifacts(role);
    let software = if artifacts.is_empty() {
        format!("debian: {}", debian_packages.join(" "))
    } else {
        artifacts.iter().map(|a| format!("{} {}", a.name, a.version)).collect::<Vec<_>>().join(", ")
    };
    let (install, verified) = if artifacts.is_empty() {
        ("debian packages (image)".to_owned(), "apt: Debian archive signatures".to_owned())
    } else {
        ("artifact download".to_owned(), artifacts.iter().map(verification_summary).collect::<Vec<_>>().join(" | "))
    };
    RoleSummary {
        install,
        verified,
        role: role.as_str(),
        container: format!("{{tenant}}-{}", role.container_suffix()),
        software,
        ports,
        dependencies: role.dependencies().iter().map(|r| r.as_str()).collect(),
        debian_packages,
    }
}

/// Topological order of `roles` in waves: every role's dependencies (those among `roles`) are in earlier waves,
/// and roles within a wave are independent (install them concurrently). Each wave is in canonical order.
pub fn install_order(roles: &[Role]) -> Vec<Vec<Role>> {
    let mut remaining: Vec<Role> = Role::ALL.into_iter().filter(|r| roles.contains(r)).collect();
    let mut done: BTreeSet<Role> = BTreeSet::new();
    let mut waves = Vec::new();
    while !remaining.is_empty() {
        let wave: Vec<Role> = remaining
            .iter()
            .copied()
            .filter(|r| r.dependencies().iter().all(|d| done.contains(d) || !roles.contains(d)))
            .collect();
        // The dependency table is acyclic (tested); this guard only keeps a future mistake from looping forever.
        if wave.is_empty() {
            waves.push(std::mem::take(&mut remaining));
            break;
        }
        remaining.retain(|r| !wave.contains(r));
        done.extend(wave.iter().copied());
        waves.push(wave);
    }
    waves
}

/// The container user that owns `role`'s mounts and runs its main service.
pub fn service_user_of(role: Role) -> &'static ServiceUser {
    let name = match role {
        Role::Tables => "postgres",
        Role::Cache => "redis",
        Role::Proxy => "caddy",
        Role::Webmail => "www-data",
        _ => "gbuser",
    };
    service_user(name).unwrap_or(&GBUSER)
}

/// Wires of `role` for `tenant`: optional targets only when the tenant has them; for the proxy, the roles its
/// domains route to.
pub fn wires(role: Role, tenant: &TenantFile) -> Vec<Wire> {
    let roles = &tenant.roles;
    let wire = |target: Role, port_name: &'static str, required: bool| {
        port_of(target, port_name).map(|p| Wire { role: target, port_name, local_port: p, required, external: None })
    };
    let mut out: Vec<Wire> = match role {
        Role::System => [
            wire(Role::Tables, "postgres", true),
            wire(Role::Cache, "redis", true),
            wire(Role::Drive, "api", true),
            wire(Role::Vault, "api", false),
            wire(Role::VectorDb, "rest", false),
            wire(Role::Llm, "chat", false),
            wire(Role::Llm, "embeddings", false),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Role::TableEditor => wire(Role::Tables, "postgres", true).into_iter().collect(),
        Role::Webmail => match tenant.webmail.mail_server {
            // A mail server of the tenant's own: its addresses, on the ports gbo's email role would have.
            Some(server) => [
                (Role::Tables, "postgres", None),
                (Role::Email, "imap", Some(server.imap)),
                (Role::Email, "submission", Some(server.smtp)),
            ]
            .into_iter()
            .filter_map(|(target, port_name, external)| {
                port_of(target, port_name).map(|p| Wire {
                    role: target,
                    port_name,
                    local_port: p,
                    required: true,
                    external,
                })
            })
            .collect(),
            None => [
                wire(Role::Tables, "postgres", true),
                wire(Role::Email, "imap", true),
                wire(Role::Email, "submission", true),
                wire(Role::Email, "sieve", true),
            ]
            .into_iter()
            .flatten()
            .collect(),
        },
        // The runner deploys to -system over SSH through this wire (seed: no cross-container disk mounts).
        Role::AlmCi => {
            [wire(Role::Alm, "http", true), wire(Role::System, "ssh", false)].into_iter().flatten().collect()
        }
        Role::Proxy => proxy_wires(tenant),
        _ => Vec::new(),
    };
    // Optional wires only exist when the tenant has the role.
    out.retain(|w| w.required || roles.contains(&w.role));
    out
}

/// Local ports used inside the proxy container by Caddy itself.
const PROXY_OWN_PORTS: &[u16] = &[80, 443, 2019];

fn proxy_wires(tenant: &TenantFile) -> Vec<Wire> {
    let routed: BTreeSet<Role> = tenant.domains.iter().map(|d| tenant.route_for(d)).collect();
    let mut used: Vec<u16> = PROXY_OWN_PORTS.to_vec();
    let mut out = Vec::new();
    for role in http_roles() {
        if !tenant.roles.contains(role) || !routed.contains(role) {
            continue;
        }
        let Some(name) = http_port_name(*role) else { continue };
        let Some(target) = port_of(*role, name) else { continue };
        // Keep the target's port where it is free; otherwise move it to 20000 + port (webmail's 80 -> 20080).
        let mut local = target;
        while used.contains(&local) {
            local = local.saturating_add(20000);
        }
        used.push(local);
        out.push(Wire { role: *role, port_name: name, local_port: local, required: true, external: None });
    }
    out
}

fn mounts(role: Role) -> Vec<Mount> {
    let owner = service_user_of(role);
    MountKind::ALL
        .into_iter()
        .map(|kind| Mount {
            kind,
            host_subdir: format!("{}/{}", role.container_suffix(), kind.as_str()),
            container_path: kind.container_path(),
            owner,
        })
        .collect()
}

fn unit_file(unit: &Unit) -> RenderedFile {
    render::root_file(unit.path(), unit.render(), 0o644, &[unit.name.as_str()])
}

/// Files, units, init steps, masked units and notes of a role, built together.
#[derive(Default)]
struct Parts {
    files: Vec<RenderedFile>,
    units: Vec<String>,
    init: Vec<InitStep>,
    notes: Vec<&'static str>,
}

impl Parts {
    fn unit(&mut self, unit: &Unit) {
        self.files.push(unit_file(unit));
        self.units.push(unit.name.clone());
    }
}

fn secret_file(path: &str, content: String, owner: &ServiceUser, restarts: &[&str]) -> RenderedFile {
    render::file(path, content, 0o600, owner, restarts, true)
}

fn conf_file(path: &str, content: String, owner: &ServiceUser, restarts: &[&str]) -> RenderedFile {
    render::file(path, content, 0o644, owner, restarts, false)
}

/// Builds the full spec of `role` for the tenant in `ctx`. Fails only when a secret the role needs is missing or
/// malformed.
pub fn component(role: Role, ctx: &RenderContext<'_>) -> Result<ComponentSpec> {
    let tenant = ctx.tenant;
    let roles = &tenant.roles;
    let secrets = ctx.secrets;
    for spec in required_secrets(role) {
        secrets.require(spec, role)?;
    }
    let user = service_user_of(role);
    let main = role.unit_name();
    let main_unit = main.as_str();
    let mut parts = Parts::default();
    let health;

    match role {
        Role::Tables => {
            let postgres = service_user("postgres").unwrap_or(user);
            let pg_port = port_of(role, "postgres").unwrap_or(5432);
            parts.files.push(conf_file(
                "/opt/gbo/conf/postgresql.conf",
                postgres::postgresql_conf(pg_port),
                postgres,
                &[main_unit],
            ));
            parts.files.push(render::file(
                "/opt/gbo/conf/pg_hba.conf",
                postgres::pg_hba_conf(),
                0o640,
                postgres,
                &[main_unit],
                false,
            ));
            parts.files.push(render::file(
                "/opt/gbo/conf/pg_ident.conf",
                postgres::pg_ident_conf(),
                0o640,
                postgres,
                &[main_unit],
                false,
            ));
            let password = secrets.require(&secrets::TABLES_PASSWORD, role)?;
            parts.files.push(secret_file("/etc/gbo/tables-init.sql", postgres::init_sql(password), postgres, &[]));
            let mut unit = Unit::new(
                main_unit,
                "PostgreSQL 15 (gbo tables)",
                "postgres",
                &[
                    &format!("{}/postgres", postgres::PG_BIN),
                    "-D",
                    postgres::PGDATA,
                    "-c",
                    "config_file=/opt/gbo/conf/postgresql.conf",
                ],
            );
            unit.service_type = ServiceType::Notify;
            unit.runtime_directory = Some("postgresql".to_owned());
            unit.postgres_style_stop = true;
            unit.exec_reload = Some(vec!["/bin/kill".to_owned(), "-HUP".to_owned(), "$MAINPID".to_owned()]);
            parts.unit(&unit);
            parts.init.push(InitStep {
                name: "initdb",
                command: vec![
                    format!("{}/initdb", postgres::PG_BIN),
                    "--pgdata".to_owned(),
                    postgres::PGDATA.to_owned(),
                    "--username=postgres".to_owned(),
                    "--auth-local=peer".to_owned(),
                    "--auth-host=scram-sha-256".to_owned(),
                    "--encoding=UTF8".to_owned(),
                    "--locale=C.UTF-8".to_owned(),
                ],
                creates: format!("{}/PG_VERSION", postgres::PGDATA),
                user: "postgres",
                phase: InitPhase::BeforeStart,
            });
            parts.init.push(InitStep {
                name: "create gbuser and botserver",
                command: vec![
                    "/usr/bin/psql".to_owned(),
                    "-X".to_owned(),
                    "--no-password".to_owned(),
                    "-d".to_owned(),
                    "postgres".to_owned(),
                    "-f".to_owned(),
                    "/etc/gbo/tables-init.sql".to_owned(),
                ],
                creates: postgres::INIT_MARKER.to_owned(),
                user: "postgres",
                phase: InitPhase::AfterStart,
            });
            if roles.contains(&Role::Webmail) {
                // Roundcube keeps its state here: its own role and database, made before webmail's schema step.
                let webmail = secrets.require(&secrets::WEBMAIL_DB_PASSWORD, role)?;
                parts.files.push(secret_file(
                    postgres::WEBMAIL_DB_SQL_PATH,
                    postgres::webmail_db_sql(webmail),
                    postgres,
                    &[],
                ));
                parts.init.push(InitStep {
                    name: "create webmail's role and database",
                    command: [
                        "/usr/bin/psql",
                        "-X",
                        "--no-password",
                        "-d",
                        "postgres",
                        "-f",
                        postgres::WEBMAIL_DB_SQL_PATH,
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                    creates: postgres::WEBMAIL_DB_MARKER.to_owned(),
                    user: "postgres",
                    phase: InitPhase::AfterStart,
                });
            }
            parts
                .notes
                .push("Debian's own postgresql.service is masked: tables.service runs the cluster on the data mount.");
            health = HealthCheck::Postgres {
                port: pg_port,
                user: postgres::APP_USER,
                database: postgres::APP_DATABASE,
                password_secret: secrets::TABLES_PASSWORD.name,
            };
        }
        Role::Cache => {
            let p = port_of(role, "redis").unwrap_or(6379);
            let password = secrets.require(&secrets::CACHE_PASSWORD, role)?;
            parts.files.push(render::file(
                "/opt/gbo/conf/redis.conf",
                redis::redis_conf(p),
                0o640,
                user,
                &[main_unit],
                false,
            ));
            parts.files.push(secret_file(redis::AUTH_CONF_PATH, redis::auth_conf(password), user, &[main_unit]));
            parts.files.push(render::root_file("/usr/local/bin/valkey-cli", redis::valkey_cli(), 0o755, &[]));
            parts.files.push(render::root_file(
                "/usr/local/bin/valkey-server",
                redis::valkey_alias("redis-server"),
                0o755,
                &[],
            ));
            let mut unit = Unit::new(
                main_unit,
                "Valkey-compatible cache (Redis 7, gbo cache)",
                "redis",
                &["/usr/bin/redis-server", "/opt/gbo/conf/redis.conf"],
            );
            unit.service_type = ServiceType::Notify;
            unit.limit_nofile = Some(65536);
            parts.unit(&unit);
            parts.notes.push(
                "Valkey is not packaged for Debian 12: Redis 7 provides it; valkey-cli and valkey-server are wrappers.",
            );
            parts.notes.push("The cache requires the generated password (requirepass, from /etc/gbo/cache-auth.conf, 0600): valkey-cli inside logs in from that file; botserver's CACHE_URL carries it.");
            health = HealthCheck::RedisPing { port: p, password_secret: secrets::CACHE_PASSWORD.name };
        }
        Role::Drive => {
            let access = secrets.require(&secrets::DRIVE_ACCESS_KEY, role)?;
            let secret = secrets.require(&secrets::DRIVE_SECRET_KEY, role)?;
            parts.files.push(secret_file(misc::DRIVE_ENV_PATH, misc::minio_env(access, secret), user, &[main_unit]));
            let mut unit = Unit::new(
                main_unit,
                "MinIO S3 storage (gbo drive)",
                user.name,
                &[
                    "/opt/gbo/bin/minio",
                    "server",
                    "--address",
                    "127.0.0.1:9000",
                    "--console-address",
                    "127.0.0.1:9001",
                    "/opt/gbo/data",
                ],
            );
            unit.environment_file = Some(misc::DRIVE_ENV_PATH.to_owned());
            unit.limit_nofile = Some(65536);
            parts.unit(&unit);
            health = HealthCheck::Http { port: 9000, path: "/minio/health/live", expect: StatusRange::OK };
        }
        Role::Llm => {
            let key = secrets.require(&secrets::LLM_API_KEY, role)?;
            parts.files.push(secret_file(misc::LLM_API_KEY_PATH, misc::llm_api_key_file(key), user, &[main_unit]));
            let lib = "/opt/gbo/bin/llama.cpp";
            for (name, description, model, port_name, extra) in [
                (main.clone(), "llama.cpp chat server (gbo llm)", "/opt/gbo/data/models/chat.gguf", "chat", None),
                (
                    "llm-embeddings.service".to_owned(),
                    "llama.cpp embeddings server (gbo llm)",
                    "/opt/gbo/data/models/embeddings.gguf",
                    "embeddings",
                    Some("--embeddings"),
                ),
            ] {
                let p = port_of(role, port_name).unwrap_or(8081).to_string();
                let binary = format!("{lib}/llama-server");
                let mut args = vec![
                    binary.as_str(),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    p.as_str(),
                    "--model",
                    model,
                    "--api-key-file",
                    misc::LLM_API_KEY_PATH,
                ];
                args.extend(extra);
                let mut unit = Unit::new(name, description, user.name, &args);
                unit.environment = vec![("LD_LIBRARY_PATH".to_owned(), lib.to_owned())];
                unit.working_directory = Some("/opt/gbo/data".to_owned());
                parts.unit(&unit);
            }
            parts
                .notes
                .push("Models are not downloaded: put chat.gguf and embeddings.gguf in <stack-dir>/llm/data/models/.");
            parts.notes.push("Both servers require the generated API key (--api-key-file /etc/gbo/llm-api-key, 0600); /health stays open.");
            health = HealthCheck::Http { port: 8081, path: "/health", expect: StatusRange::OK };
        }
        Role::Email => {
            let password = secrets.require(&secrets::EMAIL_ADMIN_PASSWORD, role)?;
            let hostname = tenant
                .zones
                .first()
                .map(|z| format!("mail.{z}"))
                .unwrap_or_else(|| format!("mail.{}.invalid", tenant.tenant));
            parts.files.push(secret_file(
                misc::STALWART_CONFIG_PATH,
                misc::stalwart_toml(&hostname, password),
                user,
                &[main_unit],
            ));
            let mut unit = Unit::new(
                main_unit,
                "Stalwart mail server (gbo email)",
                user.name,
                &["/opt/gbo/bin/stalwart-mail", "--config", misc::STALWART_CONFIG_PATH],
            );
            unit.bind_low_ports = true;
            unit.limit_nofile = Some(65536);
            unit.working_directory = Some("/opt/gbo/data".to_owned());
            parts.unit(&unit);
            parts.files.push(render::root_file(
                fail2ban::MAIL_FILTER_PATH,
                fail2ban::mail_filter(),
                0o644,
                &["fail2ban.service"],
            ));
            parts.files.push(render::root_file(
                fail2ban::MAIL_JAIL_PATH,
                fail2ban::mail_jail(misc::STALWART_LOG_GLOB),
                0o644,
                &["fail2ban.service"],
            ));
            parts.files.push(render::root_file(
                fail2ban::DEFAULTS_DEBIAN_PATH,
                fail2ban::defaults_debian_without_sshd(),
                0o644,
                &["fail2ban.service"],
            ));
            parts.units.push("fail2ban.service".to_owned());
            parts.notes.push("The stalwart-auth filter follows Stalwart 0.10's auth.failed log events; no Stalwart binary was available to test it.");
            parts.notes.push(
                "Behind LXD proxy devices without proxy_protocol every client is 127.0.0.1, which fail2ban never bans.",
            );
            health = HealthCheck::Banner { port: 25, prefix: "220" };
        }
        Role::Vault => {
            let p = port_of(role, "api").unwrap_or(8200);
            parts.files.push(conf_file(misc::VAULT_HCL_PATH, misc::vault_hcl(p), user, &[main_unit]));
            let mut unit = Unit::new(
                main_unit,
                "HashiCorp Vault (gbo vault)",
                user.name,
                &["/opt/gbo/bin/vault", "server", "-config=/opt/gbo/conf/vault.hcl"],
            );
            unit.exec_reload = Some(vec!["/bin/kill".to_owned(), "-HUP".to_owned(), "$MAINPID".to_owned()]);
            unit.limit_nofile = Some(65536);
            parts.unit(&unit);
            parts.notes.push("Vault starts sealed and uninitialised: `gbo vault init` (5 shares, threshold 3) and unseal are separate steps.");
            health = HealthCheck::Http {
                port: p,
                path: "/v1/sys/health?uninitcode=200&sealedcode=200&standbycode=200",
                expect: StatusRange::OK,
            };
        }
        Role::VectorDb => {
            let rest = port_of(role, "rest").unwrap_or(6333);
            let grpc = port_of(role, "grpc").unwrap_or(6334);
            let key = secrets.require(&secrets::VECTOR_DB_API_KEY, role)?;
            parts.files.push(secret_file(
                misc::QDRANT_CONFIG_PATH,
                misc::qdrant_yaml(rest, grpc, key),
                user,
                &[main_unit],
            ));
            let mut unit = Unit::new(
                main_unit,
                "Qdrant vector database (gbo vector_db)",
                user.name,
                &["/opt/gbo/bin/qdrant", "--config-path", misc::QDRANT_CONFIG_PATH],
            );
            unit.working_directory = Some("/opt/gbo/data".to_owned());
            unit.limit_nofile = Some(65536);
            parts.unit(&unit);
            parts.notes.push("Qdrant requires the generated API key (service.api_key in /etc/gbo/qdrant.yaml, 0600); /healthz stays open.");
            health = HealthCheck::Http { port: rest, path: "/healthz", expect: StatusRange::OK };
        }
        Role::Proxy => {
            let wires = proxy_wires(tenant);
            let sites: Vec<caddy::Site> = tenant
                .domains
                .iter()
                .map(|domain| {
                    let target = tenant.route_for(domain);
                    caddy::Site {
                        address: domain.to_string(),
                        upstream: wires
                            .iter()
                            .find(|w| w.role == target)
                            .map(|w| format!("127.0.0.1:{}", w.local_port)),
                        role: target.as_str(),
                    }
                })
                .collect();
            parts.files.push(conf_file(
                caddy::CADDYFILE_PATH,
                caddy::caddyfile(tenant.tenant.as_str(), &sites, false),
                user,
                &[main_unit],
            ));
            let config = caddy::CADDYFILE_PATH;
            let mut unit = Unit::new(
                main_unit,
                "Caddy reverse proxy (gbo proxy)",
                user.name,
                &["/usr/bin/caddy", "run", "--config", config, "--adapter", "caddyfile"],
            );
            unit.exec_reload = Some(
                ["/usr/bin/caddy", "reload", "--config", config, "--adapter", "caddyfile", "--force"]
                    .map(str::to_owned)
                    .to_vec(),
            );
            unit.environment = vec![
                ("XDG_DATA_HOME".to_owned(), "/opt/gbo/data".to_owned()),
                ("XDG_CONFIG_HOME".to_owned(), "/opt/gbo/data".to_owned()),
            ];
            unit.bind_low_ports = true;
            unit.limit_nofile = Some(1_048_576);
            parts.unit(&unit);
            parts.files.push(render::root_file(
                fail2ban::CADDY_FILTER_PATH,
                fail2ban::caddy_filter(),
                0o644,
                &["fail2ban.service"],
            ));
            parts.files.push(render::root_file(
                fail2ban::CADDY_JAIL_PATH,
                fail2ban::caddy_jail(caddy::ACCESS_LOG),
                0o644,
                &["fail2ban.service"],
            ));
            parts.files.push(render::root_file(
                fail2ban::DEFAULTS_DEBIAN_PATH,
                fail2ban::defaults_debian_without_sshd(),
                0o644,
                &["fail2ban.service"],
            ));
            parts.units.push("fail2ban.service".to_owned());
            // fail2ban refuses to start while a jail's log file is missing, and Caddy creates it only once it
            // runs: create it first, as the user Caddy writes it as.
            parts.init.push(InitStep {
                name: "create the access log",
                command: vec!["/usr/bin/touch".to_owned(), caddy::ACCESS_LOG.to_owned()],
                creates: caddy::ACCESS_LOG.to_owned(),
                user: "caddy",
                phase: InitPhase::BeforeStart,
            });
            parts.notes.push("Debian's caddy.service is masked: proxy.service runs Caddy with /opt/gbo/conf/config.");
            parts.notes.push("Change the Caddyfile with `gbo proxy apply` (backup, no lost sites, validate, reload).");
            parts.notes.push("Behind LXD proxy devices without proxy_protocol every client is 127.0.0.1, which fail2ban never bans: the flood jail only acts when the real client address reaches Caddy.");
            health = HealthCheck::Http { port: 80, path: "/health", expect: StatusRange::SUCCESS_OR_REDIRECT };
        }
        Role::Dns => {
            let zones: Vec<&str> = tenant.zones.iter().map(|z| z.as_str()).collect();
            parts.files.push(conf_file(coredns::COREFILE_PATH, coredns::corefile(&zones, 53), user, &[main_unit]));
            let domains: Vec<&str> = tenant.domains.iter().map(|d| d.as_str()).collect();
            for zone in &zones {
                let records =
                    coredns::derived_records(zone, &domains, tenant.public_address, roles.contains(&Role::Email));
                parts.files.push(conf_file(
                    &coredns::zone_file_path(zone),
                    coredns::zone_file(zone, &records),
                    user,
                    &[],
                ));
            }
            let mut unit = Unit::new(
                main_unit,
                "CoreDNS (gbo dns)",
                user.name,
                &["/opt/gbo/bin/coredns", "-conf", coredns::COREFILE_PATH],
            );
            unit.exec_reload = Some(vec!["/bin/kill".to_owned(), "-HUP".to_owned(), "$MAINPID".to_owned()]);
            unit.bind_low_ports = true;
            unit.working_directory = Some("/opt/gbo/data".to_owned());
            parts.unit(&unit);
            parts.notes.push("Through an LXD proxy device every query comes from 127.0.0.1, so the acl decides nothing by source: ANY is refused for everyone, the zones' record types are answered to anyone, and nothing is resolved outside the zones.");
            health = HealthCheck::Http { port: coredns::HEALTH_PORT, path: "/health", expect: StatusRange::OK };
        }
        Role::Alm => {
            let p = port_of(role, "http").unwrap_or(3000);
            let root_url = tenant
                .domains
                .iter()
                .find(|d| tenant.route_for(d) == Role::Alm)
                .map(|d| format!("https://{d}/"))
                .unwrap_or_else(|| format!("http://localhost:{}/", ctx.host_ports.get(role, "http").unwrap_or(p)));
            let key = secrets.require(&secrets::ALM_SECRET_KEY, role)?;
            let token = secrets.require(&secrets::ALM_INTERNAL_TOKEN, role)?;
            parts.files.push(secret_file(
                forgejo::APP_INI_PATH,
                forgejo::app_ini(&root_url, p, key, token),
                user,
                &[main_unit],
            ));
            let mut unit = Unit::new(
                main_unit,
                "Forgejo (gbo alm)",
                user.name,
                &["/opt/gbo/bin/forgejo", "web", "--config", forgejo::APP_INI_PATH, "--work-path", "/opt/gbo/data"],
            );
            unit.environment =
                vec![("HOME".to_owned(), "/opt/gbo/data".to_owned()), ("USER".to_owned(), "gbuser".to_owned())];
            unit.working_directory = Some("/opt/gbo/data".to_owned());
            parts.unit(&unit);
            health = HealthCheck::Http { port: p, path: "/api/healthz", expect: StatusRange::OK };
        }
        Role::AlmCi => {
            parts.files.push(conf_file(forgejo::RUNNER_CONFIG_PATH, forgejo::runner_config(1), user, &[main_unit]));
            let mut unit = Unit::new(
                main_unit,
                "Forgejo runner (gbo alm-ci)",
                user.name,
                &["/opt/gbo/bin/forgejo-runner", "daemon", "--config", forgejo::RUNNER_CONFIG_PATH],
            );
            unit.working_directory = Some("/opt/gbo/data".to_owned());
            unit.after.push("network-online.target".to_owned());
            parts.unit(&unit);
            parts
                .notes
                .push("alm-ci has no cross-container disk mounts (seed rule): it reaches Forgejo through a wire only.");
            parts.notes.push(
                "The runner registers with the alm-runner-secret; registration (the .runner file) is done by gbo-ops.",
            );
            parts.notes.push("`gbo ci connect` gives the runner its deploy key (made inside -alm-ci), the ssh alias `system` and -system's host key: -system is reached through a wire to its sshd.");
            health = HealthCheck::UnitActive { unit: "alm-ci.service" };
        }
        Role::TableEditor => {
            let p = port_of(role, "http").unwrap_or(8080);
            let jwt = secrets.require(&secrets::TABLE_EDITOR_JWT_SECRET, role)?;
            parts.files.push(secret_file(misc::TABLE_EDITOR_ENV_PATH, misc::nocodb_env(p, jwt), user, &[main_unit]));
            let mut unit = Unit::new(main_unit, "NocoDB (gbo table-editor)", user.name, &["/opt/gbo/bin/nocodb"]);
            unit.environment_file = Some(misc::TABLE_EDITOR_ENV_PATH.to_owned());
            unit.working_directory = Some("/opt/gbo/data".to_owned());
            parts.unit(&unit);
            health = HealthCheck::Http { port: p, path: "/api/v1/health", expect: StatusRange::OK };
        }
        Role::Webmail => {
            let p = port_of(role, "http").unwrap_or(80);
            let key = secrets.require(&secrets::WEBMAIL_DES_KEY, role)?;
            let db_password = secrets.require(&secrets::WEBMAIL_DB_PASSWORD, role)?;
            let www = service_user("www-data").unwrap_or(user);
            let wired = |name: &str, default: u16| {
                tenant.webmail.mail_server.map_or_else(|| port_of(Role::Email, name).unwrap_or(default), |_| default)
            };
            let sieve = tenant.webmail.mail_server.is_none().then(|| wired("sieve", 4190));
            let config = misc::RoundcubeConfig {
                des_key: key,
                db_password,
                db_port: port_of(Role::Tables, "postgres").unwrap_or(5432),
                imap_port: wired("imap", 143),
                smtp_port: wired("submission", 587),
                sieve_port: sieve,
            };
            let mut config =
                render::file(misc::ROUNDCUBE_CONFIG_PATH, config.render(), 0o640, www, &["php8.2-fpm.service"], true);
            config.uid = 0;
            parts.files.push(config);
            parts.files.push(conf_file(misc::WEBMAIL_CADDYFILE_PATH, misc::webmail_caddyfile(p), www, &[main_unit]));
            let mut unit = Unit::new(
                main_unit,
                "Roundcube webmail via Caddy and PHP-FPM (gbo webmail)",
                www.name,
                &["/usr/bin/caddy", "run", "--config", misc::WEBMAIL_CADDYFILE_PATH, "--adapter", "caddyfile"],
            );
            unit.wants = vec!["php8.2-fpm.service".to_owned()];
            unit.after.push("php8.2-fpm.service".to_owned());
            unit.environment = vec![
                ("XDG_DATA_HOME".to_owned(), "/opt/gbo/data".to_owned()),
                ("XDG_CONFIG_HOME".to_owned(), "/opt/gbo/data".to_owned()),
            ];
            unit.bind_low_ports = true;
            parts.units.push("php8.2-fpm.service".to_owned());
            parts.unit(&unit);
            // Roundcube's schema through its own library, reading the DSN from its config (no secret on a command
            // line), into the database the tables role made for it.
            parts.files.push(conf_file(misc::ROUNDCUBE_SCHEMA_SCRIPT_PATH, misc::roundcube_schema_script(), www, &[]));
            parts.init.push(InitStep {
                name: "roundcube schema",
                command: vec!["/usr/bin/php".to_owned(), misc::ROUNDCUBE_SCHEMA_SCRIPT_PATH.to_owned()],
                creates: misc::ROUNDCUBE_SCHEMA_MARKER.to_owned(),
                user: "www-data",
                phase: InitPhase::BeforeStart,
            });
            parts.notes.push("Debian's caddy.service is masked; Roundcube is served by webmail.service.");
            parts
                .notes
                .push("Roundcube's state lives in the tenant's PostgreSQL: database and role roundcube in -tables.");
            if tenant.webmail.mail_server.is_some() {
                parts
                    .notes
                    .push("Mail is read and sent through the tenant file's [webmail] server, not the email role.");
            }
            // Roundcube's login page, rendered by PHP with its session in PostgreSQL: the form's user field.
            health = HealthCheck::HttpPage {
                port: p,
                path: "/?_task=login",
                expect: StatusRange::OK,
                contains: misc::ROUNDCUBE_LOGIN_MARKER,
            };
        }
        Role::System => {
            let env = botserver::SystemEnv {
                tables_password: secrets.require(&secrets::TABLES_PASSWORD, role)?,
                drive_access_key: secrets.require(&secrets::DRIVE_ACCESS_KEY, role)?,
                drive_secret_key: secrets.require(&secrets::DRIVE_SECRET_KEY, role)?,
                cache_password: secrets.require(&secrets::CACHE_PASSWORD, role)?,
                vault: roles.contains(&Role::Vault),
                vector_db_api_key: if roles.contains(&Role::VectorDb) {
                    Some(secrets.require(&secrets::VECTOR_DB_API_KEY, role)?)
                } else {
                    None
                },
                llm_api_key: if roles.contains(&Role::Llm) {
                    Some(secrets.require(&secrets::LLM_API_KEY, role)?)
                } else {
                    None
                },
            };
            parts.files.push(secret_file(botserver::SYSTEM_ENV_PATH, botserver::system_env(&env), user, &[main_unit]));
            parts.files.push(render::root_file(
                firewall::RULES_V4_PATH,
                firewall::rules_v4(firewall::DEFAULT_DROPPED_PORTS),
                0o644,
                &["gbo-firewall.service"],
            ));
            parts.unit(&firewall::firewall_unit());
            let mut server =
                Unit::new(main_unit, "botserver (gbo system)", user.name, &["/opt/gbo/bin/botserver", "--noconsole"]);
            server.environment_file = Some(botserver::SYSTEM_ENV_PATH.to_owned());
            server.working_directory = Some("/opt/gbo".to_owned());
            server.after.push("gbo-firewall.service".to_owned());
            server.limit_nofile = Some(65536);
            parts.unit(&server);
            let mut ui = Unit::new("ui.service", "botui (gbo system)", user.name, &["/opt/gbo/bin/botui"]);
            ui.environment = vec![
                ("BOTSERVER_URL".to_owned(), botserver::BOTSERVER_URL.to_owned()),
                ("PORT".to_owned(), botserver::BOTUI_PORT.to_string()),
            ];
            ui.working_directory = Some("/opt/gbo".to_owned());
            ui.after.push(main.clone());
            ui.wants.push(main.clone());
            parts.unit(&ui);
            // sshd for the runner's deploys: Debian's ssh.service with gbo's drop-in and a host key made here.
            parts.files.push(render::root_file(sshd::SSHD_DROP_IN_PATH, sshd::sshd_config(), 0o644, &["ssh.service"]));
            parts.init.push(InitStep {
                name: "ssh host key",
                command: ["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", sshd::HOST_KEY_PATH]
                    .map(str::to_owned)
                    .to_vec(),
                creates: sshd::HOST_KEY_PATH.to_owned(),
                user: "root",
                phase: InitPhase::BeforeStart,
            });
            parts.units.push("ssh.service".to_owned());
            if tenant.system.privileged {
                parts.notes.push("Privileged because the tenant file asks ([system] privileged = true): root in this container is root on the host.");
            } else {
                parts.notes.push("Unprivileged: the mounts belong to the container's own uids, so botserver owns /opt/gbo without privileges ([system] privileged = true asks for the seed's privileged mode, in which root inside is root on the host).");
            }
            parts.notes.push("botserver is managed by system.service: deploys restart it through the unit.");
            parts.notes.push("sshd listens on 127.0.0.1:22 inside, key only, gbuser only; `gbo ci connect` authorises the runner's key (and gbo-ci's root steps through sudo).");
            health =
                HealthCheck::Http { port: botserver::BOTSERVER_PORT, path: "/api/health", expect: StatusRange::OK };
        }
    }

    // Every container: a capped journal, and the log files under /opt/gbo/logs kept under their cap.
    parts.files.push(render::root_file(
        logs::JOURNALD_CONF_PATH,
        logs::journald_conf(),
        0o644,
        &["systemd-journald.service"],
    ));
    parts.files.push(render::root_file(logs::LOGCAP_PATH, logs::logcap_script(), 0o755, &[]));
    parts.files.push(render::root_file(
        format!("{}/{}", logs::AUX_UNIT_DIR, logs::LOGCAP_SERVICE),
        logs::logcap_service(),
        0o644,
        &[],
    ));
    parts.files.push(render::root_file(
        format!("{}/{}", logs::AUX_UNIT_DIR, logs::LOGCAP_TIMER),
        logs::logcap_timer(),
        0o644,
        &[logs::LOGCAP_TIMER],
    ));
    parts.units.push(logs::LOGCAP_TIMER.to_string());

    let mut install = Vec::new();
    let packages = role_packages(role);
    if !packages.is_empty() {
        install.push(Install::DebianPackages(packages.to_vec()));
    }
    install.extend(crate::artifacts::artifacts(role, tenant).into_iter().map(Install::Artifact));

    let limits = tenant.limits_for(role);
    // The seed made -system privileged only so botserver could own the /opt/gbo mounts; gbo chowns mounts to the
    // container's own uids, so that reason is gone. Privileged only when the tenant file asks.
    let privileged = role == Role::System && tenant.system.privileged;
    let mut lxd_config: BTreeMap<String, String> = limits.lxd_config();
    lxd_config.extend(boot_config(role));
    if privileged {
        lxd_config.insert("security.privileged".to_owned(), "true".to_owned());
    }

    parts.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(ComponentSpec {
        role,
        instance: instance_name(&tenant.tenant, role),
        install,
        mounts: mounts(role),
        ports: ports(role),
        limits,
        privileged,
        lxd_config,
        dependencies: role.dependencies().to_vec(),
        wires: wires(role, tenant),
        files: parts.files,
        units: parts.units,
        masked_units: masked_units(role).iter().map(|s| (*s).to_owned()).collect(),
        init: parts.init,
        health,
        notes: parts.notes,
    })
}

/// Debian units that would compete with the role's own unit (same port or same program): gbo masks them.
pub fn masked_units(role: Role) -> &'static [&'static str] {
    match role {
        Role::Tables => &["postgresql.service"],
        Role::Cache => &["redis-server.service"],
        Role::Proxy | Role::Webmail => &["caddy.service"],
        _ => &[],
    }
}

/// Every role's spec for the tenant in `ctx`, in install order.
pub fn tenant_components(ctx: &RenderContext<'_>) -> Result<Vec<ComponentSpec>> {
    install_order(&ctx.tenant.roles).into_iter().flatten().map(|role| component(role, ctx)).collect()
}

/// The users every image must have, for the image builder (re-exported for convenience).
pub fn image_users() -> &'static [ServiceUser] {
    users::SERVICE_USERS
}
