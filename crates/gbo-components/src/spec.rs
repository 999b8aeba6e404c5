//! What a component is: the types [`component`](crate::component) returns.

use std::collections::BTreeMap;

use crate::names::Role;
use crate::secrets::Secrets;
use crate::tenant_file::{Limits, TenantFile};

/// Inside every container: binaries installed from artifacts.
pub const GBO_BIN: &str = "/opt/gbo/bin";
/// Inside every container: the persistent data mount.
pub const GBO_DATA: &str = "/opt/gbo/data";
/// Inside every container: the configuration mount.
pub const GBO_CONF: &str = "/opt/gbo/conf";
/// Inside every container: the log mount.
pub const GBO_LOGS: &str = "/opt/gbo/logs";

/// Everything rendering needs besides the role: the tenant's settings, its secrets and its host ports.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    /// The tenant's settings (tenant name, roles, domains, limits, version overrides).
    pub tenant: &'a TenantFile,
    /// The tenant's secrets; rendering reads the ones [`required_secrets`](crate::required_secrets) lists.
    pub secrets: &'a Secrets,
    /// Host ports allocated by `gbo-ops`, by role and port name. Rendering only reads them for documentation
    /// and cross-container URLs shown to users; containers themselves reach each other through [`Wire`]s.
    pub host_ports: &'a HostPorts,
}

/// Host ports allocated to a tenant, keyed by role and [`PortSpec::name`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPorts(pub BTreeMap<(Role, String), u16>);

impl HostPorts {
    /// The host port of `role`'s port `name`, if allocated.
    pub fn get(&self, role: Role, name: &str) -> Option<u16> {
        self.0.get(&(role, name.to_owned())).copied()
    }

    /// Records an allocation.
    pub fn insert(&mut self, role: Role, name: &str, port: u16) {
        self.0.insert((role, name.to_owned()), port);
    }

    /// The seed's mapping for the roles of `tenant`: every port with a [`PortSpec::seed_host_port`] gets it.
    /// This is the default tenant's layout; other tenants get ports from `gbo-ops`' allocator.
    pub fn seed(roles: &[Role]) -> Self {
        let mut ports = Self::default();
        for role in roles {
            for port in crate::catalogue::ports(*role) {
                if let Some(host) = port.seed_host_port {
                    ports.insert(*role, port.name, host);
                }
            }
        }
        ports
    }
}

/// How a role's software gets into its container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Install {
    /// Debian packages baked into the image by the one image builder (or installed at provisioning on an online
    /// host using `images:debian/12`).
    DebianPackages(Vec<&'static str>),
    /// A pinned upstream release, downloaded once into the host's cache, verified and pushed into the container.
    Artifact(Artifact),
}

/// A pinned upstream release artifact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Artifact {
    /// Short name (`minio`, `vault`, ...), also the cache file stem.
    pub name: &'static str,
    /// The pinned version.
    pub version: String,
    /// Where to download it (linux amd64).
    pub url: String,
    /// Lower-case hex SHA-256 of the download, quoted from the vendor's release material; `None` = unverified:
    /// the installer refuses it unless the user passes an explicit flag.
    pub sha256: Option<String>,
    /// How to get the installed file(s) out of the download.
    pub unpack: ArtifactKind,
    /// Where the binary (or directory, for [`ArtifactKind::ZipDirectory`]) goes inside the container.
    pub install_path: &'static str,
    /// How the vendor lets the download be checked: its checksum file and signature, beside the download.
    pub verification: Verification,
    /// The role the artifact belongs to (a `[trust]` key can be limited to roles).
    pub role: crate::names::Role,
}

impl Artifact {
    /// Whether the artifact carries a checksum pin.
    pub fn is_verified(&self) -> bool {
        self.sha256.is_some()
    }

    /// The file name of the download (the last segment of its URL).
    pub fn file_name(&self) -> &str {
        let path = self.url.split(['?', '#']).next().unwrap_or_default();
        path.rsplit('/').next().unwrap_or_default()
    }

    /// The URL of a file the vendor publishes beside the download: `template` with `{file}` (the download's file
    /// name) and `{version}` substituted, in the download's directory.
    pub fn beside(&self, template: &str) -> String {
        let path = self.url.split(['?', '#']).next().unwrap_or_default();
        let dir = path.rsplit_once('/').map_or(path, |(dir, _)| dir);
        format!("{dir}/{}", template.replace("{file}", self.file_name()).replace("{version}", &self.version))
    }
}

/// How a vendor publishes what checks its downloads: a checksum file and a signature, beside the download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// The checksum file (`sha256sum` lines, `HASH  NAME`), as a template for [`Artifact::beside`]; `None` when
    /// the vendor publishes none.
    pub sums: Option<&'static str>,
    /// The signature the vendor publishes; `None` when it signs nothing.
    pub signature: Option<SignatureRule>,
}

impl Verification {
    /// The vendor publishes neither a checksum file nor a signature.
    pub const NONE: Verification = Verification { sums: None, signature: None };
}

/// Where a vendor's signature is and what it signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SignatureRule {
    /// The signature format.
    pub scheme: SignatureScheme,
    /// What the signature covers.
    pub covers: Signed,
    /// The signature file, as a template for [`Artifact::beside`].
    pub file: &'static str,
    /// The vendor key gbo ships for it ([`crate::trust::vendor_key`]); `None` when gbo knows the vendor's key
    /// only by its fingerprint (a `[trust]` entry must then supply the key).
    pub vendor_key: Option<&'static str>,
}

/// A signature format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureScheme {
    /// Minisign (Ed25519), `.minisig`.
    Minisign,
    /// OpenPGP detached signature, binary or armored.
    OpenPgp,
}

impl SignatureScheme {
    /// Its name in messages and the tenant file.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureScheme::Minisign => "minisign",
            SignatureScheme::OpenPgp => "openpgp",
        }
    }
}

/// What a vendor's signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signed {
    /// The download itself.
    Download,
    /// The checksum file, which names the download's SHA-256.
    Sums,
}

/// The shape of an artifact download.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ArtifactKind {
    /// The download is the executable itself.
    SingleBinary,
    /// A `.tar.gz`; install the one member at this path (relative, as listed by `tar tzf`).
    TarGzMember {
        /// Member path inside the archive.
        member: &'static str,
    },
    /// A `.zip`; install the one member at this path.
    ZipMember {
        /// Member path inside the archive.
        member: &'static str,
    },
    /// A `.zip`; install every member under `prefix` (with the prefix stripped) into the directory `install_path`
    /// (for programs that ship shared libraries next to the executable).
    ZipDirectory {
        /// Directory inside the archive, ending in `/`.
        prefix: &'static str,
    },
}

/// Which of the three host subdirectories a mount is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// `<stack-dir>/<role>/data` on `/opt/gbo/data`.
    Data,
    /// `<stack-dir>/<role>/conf` on `/opt/gbo/conf`.
    Conf,
    /// `<stack-dir>/<role>/logs` on `/opt/gbo/logs`.
    Logs,
}

impl MountKind {
    /// All three, in order.
    pub const ALL: [MountKind; 3] = [MountKind::Data, MountKind::Conf, MountKind::Logs];

    /// `data`, `conf` or `logs`: the host subdirectory and the device name suffix.
    pub const fn as_str(self) -> &'static str {
        match self {
            MountKind::Data => "data",
            MountKind::Conf => "conf",
            MountKind::Logs => "logs",
        }
    }

    /// The path inside the container.
    pub const fn container_path(self) -> &'static str {
        match self {
            MountKind::Data => GBO_DATA,
            MountKind::Conf => GBO_CONF,
            MountKind::Logs => GBO_LOGS,
        }
    }
}

/// A host directory attached to the container before its service first starts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mount {
    /// Which subdirectory.
    pub kind: MountKind,
    /// Host path relative to the stack dir: `<role container suffix>/<kind>`.
    pub host_subdir: String,
    /// Path inside the container.
    pub container_path: &'static str,
    /// The container user (name, uid, gid) that must own the host directory (chowned to idmap base + id).
    pub owner: &'static crate::users::ServiceUser,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`, as LXD proxy devices spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a port is published on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exposure {
    /// On the host's 127.0.0.1 only (databases, caches, admin APIs).
    Internal,
    /// On the tenant's public address (proxy, email, dns).
    Public,
}

/// One port of a role, published on the host through an LXD proxy device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortSpec {
    /// Name, unique within the role (`postgres`, `api`, `console`, `smtp`, ...); device names derive from it.
    pub name: &'static str,
    /// The port the service listens on inside the container (on 127.0.0.1 there).
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Where it is published on the host.
    pub exposure: Exposure,
    /// The default tenant's host port (the seed's table); `None` when the allocator must choose even for the
    /// default tenant (for example webmail's internal port 80, which would collide with the proxy's).
    pub seed_host_port: Option<u16>,
}

/// A port of another role that this container sees on its own 127.0.0.1, through a `bind=instance` proxy device
/// (listen inside this container, connect to the target's host port on the host).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Wire {
    /// The role whose port is wired in.
    pub role: Role,
    /// The target's [`PortSpec::name`].
    pub port_name: &'static str,
    /// The port it appears on inside this container, on 127.0.0.1 (usually the target's container port).
    pub local_port: u16,
    /// Whether the wire is needed: `false` for optional services (wired only when the tenant has the role).
    pub required: bool,
    /// An address outside gbo to connect to instead of the role's published port (webmail's `[webmail]` mail
    /// server); `None`: the target role's port on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<std::net::SocketAddr>,
}

/// A file rendered into the container.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct RenderedFile {
    /// Absolute path inside the container. Missing parent directories are created root-owned, mode 0755
    /// (`/etc/gbo/` holds secret files readable only by their owner, so the directory itself needs no secrecy).
    pub path: String,
    /// The full content.
    pub content: String,
    /// Unix permission bits.
    pub mode: u32,
    /// Owner uid inside the container.
    pub uid: u32,
    /// Owner gid inside the container.
    pub gid: u32,
    /// systemd units to restart (or reload) when this file changes.
    pub restarts: Vec<String>,
    /// Whether the content holds a secret: never print it, never log it, push it 0600.
    pub secret: bool,
}

impl RenderedFile {
    /// Lower-case hex SHA-256 of the content, for "push only what changed" and the provisioned hash.
    pub fn sha256(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(self.content.as_bytes()))
    }
}

impl std::fmt::Debug for RenderedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("RenderedFile");
        s.field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("restarts", &self.restarts)
            .field("secret", &self.secret);
        if self.secret {
            s.field("content", &"<redacted>");
        } else {
            s.field("content", &self.content);
        }
        s.finish()
    }
}

/// When an [`InitStep`] runs relative to the role's services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InitPhase {
    /// After files are pushed, before the services start (for example `initdb`).
    BeforeStart,
    /// After the services are healthy (for example creating the database role).
    AfterStart,
}

/// A one-time command, run as `user` inside the container unless `creates` exists. Never holds a secret: secrets
/// reach commands through rendered files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InitStep {
    /// Short name, for plans and progress.
    pub name: &'static str,
    /// Program and arguments, no shell.
    pub command: Vec<String>,
    /// The path whose existence marks the step done (the command creates it).
    pub creates: String,
    /// The container user to run as.
    pub user: &'static str,
    /// When to run it.
    pub phase: InitPhase,
}

/// Expected HTTP status codes, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StatusRange {
    /// Lowest accepted status.
    pub min: u16,
    /// Highest accepted status.
    pub max: u16,
}

impl StatusRange {
    /// Exactly `200`.
    pub const OK: StatusRange = StatusRange { min: 200, max: 200 };
    /// Any 2xx.
    pub const SUCCESS: StatusRange = StatusRange { min: 200, max: 299 };
    /// Any 2xx or 3xx (a redirect is an answer from a running server).
    pub const SUCCESS_OR_REDIRECT: StatusRange = StatusRange { min: 200, max: 399 };

    /// Whether `status` is in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

/// A protocol-level readiness and health probe. Ports are container ports: the prober reaches them through the
/// role's published port of the same container port.
///
/// A bare TCP connect through an LXD proxy device succeeds even when nothing listens inside (the device accepts
/// first), so [`HealthCheck::Tcp`] is used only where no protocol probe is possible.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum HealthCheck {
    /// Log in with the generated password (secret `tables-password`) and run `SELECT 1`.
    Postgres {
        /// Container port.
        port: u16,
        /// User to log in as.
        user: &'static str,
        /// Database to connect to.
        database: &'static str,
        /// The secret holding the password.
        password_secret: &'static str,
    },
    /// Log in with `AUTH` and the generated password (secret `cache-password`), send `PING`, expect `+PONG`.
    RedisPing {
        /// Container port.
        port: u16,
        /// The secret holding the password.
        password_secret: &'static str,
    },
    /// `GET path` with `Host: localhost`, expect a status in `expect`.
    Http {
        /// Container port.
        port: u16,
        /// Path and query.
        path: &'static str,
        /// Accepted statuses.
        expect: StatusRange,
    },
    /// `GET path` with `Host: localhost`, expect a status in `expect` and a page (at most 256 KiB read) that
    /// contains `contains`: the application itself answered, not only its web server.
    HttpPage {
        /// Container port.
        port: u16,
        /// Path and query.
        path: &'static str,
        /// Accepted statuses.
        expect: StatusRange,
        /// Text the page must contain.
        contains: &'static str,
    },
    /// Read the server's greeting and expect it to start with `prefix` (SMTP: `220`).
    Banner {
        /// Container port.
        port: u16,
        /// Expected start of the first line.
        prefix: &'static str,
    },
    /// A TCP connection is accepted.
    Tcp {
        /// Container port.
        port: u16,
    },
    /// The unit is active (`systemctl is-active`, through a non-recorded exec): only for roles with no port at
    /// all (alm-ci, whose runner only makes outgoing requests).
    UnitActive {
        /// The systemd unit.
        unit: &'static str,
    },
}

impl HealthCheck {
    /// The container port the probe talks to (`None` for [`HealthCheck::UnitActive`]).
    pub fn port(&self) -> Option<u16> {
        match self {
            HealthCheck::Postgres { port, .. }
            | HealthCheck::RedisPing { port, .. }
            | HealthCheck::Http { port, .. }
            | HealthCheck::HttpPage { port, .. }
            | HealthCheck::Banner { port, .. }
            | HealthCheck::Tcp { port } => Some(*port),
            HealthCheck::UnitActive { .. } => None,
        }
    }
}

/// Everything the catalogue says about one role of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComponentSpec {
    /// The role.
    pub role: Role,
    /// The LXD instance name, from [`instance_name`](crate::instance_name).
    pub instance: String,
    /// How the software is installed (packages and/or artifacts).
    pub install: Vec<Install>,
    /// Host directories to attach before the first start.
    pub mounts: Vec<Mount>,
    /// Ports published on the host.
    pub ports: Vec<PortSpec>,
    /// LXD limits from the tenant file.
    pub limits: Limits,
    /// Whether the container is privileged (only the system role, and only when the tenant file asks).
    pub privileged: bool,
    /// LXD config keys the role needs (security settings, limits), sorted.
    pub lxd_config: BTreeMap<String, String>,
    /// Roles that must be installed and healthy first.
    pub dependencies: Vec<Role>,
    /// Other roles' ports this container sees on its 127.0.0.1.
    pub wires: Vec<Wire>,
    /// Files rendered into the container, sorted by path.
    pub files: Vec<RenderedFile>,
    /// The role's systemd units (the main one is `{role}.service`), in start order.
    pub units: Vec<String>,
    /// Debian's own units that would compete with the role's (same port or program): stopped and masked.
    pub masked_units: Vec<String>,
    /// One-time initialisation commands.
    pub init: Vec<InitStep>,
    /// The health check.
    pub health: HealthCheck,
    /// Notes for operators (for example known limitations), shown by `gbo components`.
    pub notes: Vec<&'static str>,
}

impl ComponentSpec {
    /// Lower-case hex SHA-256 over everything that shapes the container (for the `user.gbo.*` spec hash).
    pub fn spec_hash(&self) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        // serde_json of our own types cannot fail: every map key is a string or a tuple rendered by us.
        let json = serde_json::to_string(self).unwrap_or_default();
        hasher.update(json.as_bytes());
        hex::encode(hasher.finalize())
    }

    /// The rendered file at `path`, if any.
    pub fn file(&self, path: &str) -> Option<&RenderedFile> {
        self.files.iter().find(|f| f.path == path)
    }
}
