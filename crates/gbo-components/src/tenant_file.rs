//! `gbo.toml`: the tenant file that describes one tenant's stack.
//!
//! ```toml
//! # gbo.toml
//! tenant = "mycompany"                 # [a-z][a-z0-9-]*, not ending in '-', at most 50 characters
//! roles = ["tables", "drive", "cache", "proxy", "system"]  # default: tables, drive, cache
//! stack_dir = "/srv/mycompany"         # host directory holding <role>/{data,conf,logs}; default:
//!                                      # ./botserver-stack for `default`, ./botserver-stack/<tenant> else
//! public_address = "203.0.113.10"      # where proxy, email and dns listen; default: all addresses
//! domains = ["chat.example.com", "git.example.com"]   # one Caddy site each
//! zones = ["example.com"]              # zones served by the dns role
//! storage = "volumes"                  # where each role's data, conf and logs live: "host" (directories under
//!                                      # stack_dir) or "volumes" (LXD custom volumes <tenant>-<role>-data, ...);
//!                                      # default: host on a local daemon, volumes on a remote or cluster
//! pool = "default"                     # the LXD storage pool of the volumes; default: the pool of the default
//!                                      # profile's root disk
//!
//! [routes]                             # which role a domain goes to; default: system (botui)
//! "git.example.com" = "alm"
//!
//! [limits.tables]                      # LXD limits.cpu / limits.memory
//! cpu = 2
//! memory = "4GB"
//!
//! [versions.vault]                     # override a pinned artifact
//! version = "1.15.4"
//! url = "http://127.0.0.1:8000/vault_1.15.4_linux_amd64.zip"   # https://, or http:// on loopback
//! # sha256 = "..."                     # 64 hex characters copied from the vendor's SHA256SUMS; the
//! #                                    # vendor's checksum file and signature are checked as for the pin
//!
//! [trust.mirror]                       # a key trusted beside the vendors' (a private mirror's)
//! minisign = "RW..."                   # or openpgp = """-----BEGIN PGP PUBLIC KEY BLOCK-----..."""
//! roles = ["drive"]                    # default: every artifact role
//!
//! [placement]                          # cluster member (or @group) of each role's container; default: LXD's
//! tables = "m1"                        # scheduler. `gbo install --target` places one run's new containers
//! proxy = "@edge"
//!
//! [webmail]                           # an existing mail server for webmail instead of gbo's email role
//! imap = "192.0.2.25:143"              # IP:port of its IMAP and SMTP submission listeners (both, or neither);
//! smtp = "192.0.2.25:587"              # webmail then does not need the email role
//!
//! [system]
//! privileged = false                   # default; true is the seed's privileged -system: root inside it is
//!                                      # root on the host
//! ```
//!
//! Every key is optional except none: an empty file is the default tenant with the default roles. Unknown keys
//! are rejected, so a typo never silently does nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::error::{Error, Result};
use crate::names::{Role, TenantName};

/// The stack directory used when the tenant file and the flags give none (the seed's `botserver-stack`).
pub const DEFAULT_STACK_DIR: &str = "./botserver-stack";

/// A validated DNS name (lower case, labels of `[a-z0-9-]` not starting or ending with `-`, at most 253
/// characters, at least two labels). Used for Caddy sites and CoreDNS zones.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainName(String);

impl DomainName {
    /// Validates a domain name; the error names the rule.
    pub fn new(value: &str) -> Result<Self> {
        let fail = |rule| Err(Error::InvalidDomain { value: value.to_owned(), rule });
        let name = value.strip_suffix('.').unwrap_or(value);
        if name.is_empty() {
            return fail("it is empty");
        }
        if name.len() > 253 {
            return fail("it is longer than 253 characters");
        }
        if name.chars().any(|c| c.is_ascii_uppercase()) {
            return fail("it contains upper case; write domain names in lower case");
        }
        let labels: Vec<&str> = name.split('.').collect();
        if labels.len() < 2 {
            return fail("it has a single label; a site or zone needs at least two (example.com)");
        }
        for label in &labels {
            if label.is_empty() {
                return fail("it has an empty label ('..' or a leading '.')");
            }
            if label.len() > 63 {
                return fail("a label is longer than 63 characters");
            }
            if !label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
                return fail("a label contains a character other than a-z, 0-9 and '-'");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return fail("a label starts or ends with '-'");
            }
        }
        if labels.last().is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit())) {
            return fail("the last label is numeric (an IP address is not a domain name)");
        }
        Ok(Self(name.to_owned()))
    }

    /// The name without a trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this name is `zone` or below it.
    pub fn is_within(&self, zone: &DomainName) -> bool {
        self.0 == zone.0 || self.0.ends_with(&format!(".{}", zone.0))
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for DomainName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl serde::Serialize for DomainName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// LXD resource limits of one container (`limits.cpu`, `limits.memory`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Number of CPUs (`limits.cpu`), 1 to 1024.
    pub cpu: Option<u32>,
    /// Memory in LXD's syntax (`limits.memory`): a number with a unit (`B`, `kB`, `MB`, `GB`, `TB`, `KiB`,
    /// `MiB`, `GiB`, `TiB`) or a percentage, for example `4GB` or `50%`.
    pub memory: Option<String>,
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }

    /// The LXD config keys these limits set, sorted.
    pub fn lxd_config(&self) -> BTreeMap<String, String> {
        let mut keys = BTreeMap::new();
        if let Some(cpu) = self.cpu {
            keys.insert("limits.cpu".to_owned(), cpu.to_string());
        }
        if let Some(memory) = &self.memory {
            keys.insert("limits.memory".to_owned(), memory.clone());
        }
        keys
    }
}

/// Validates a memory limit in LXD's syntax; `key` is used in the error.
pub fn validate_memory(key: &str, value: &str) -> Result<()> {
    const UNITS: &[&str] = &["kB", "MB", "GB", "TB", "PB", "KiB", "MiB", "GiB", "TiB", "PiB", "B", "%"];
    let digits_end = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(digits_end);
    let fail = |rule: &str| {
        Err(Error::TenantFileValue { key: key.to_owned(), value: value.to_owned(), rule: rule.to_owned() })
    };
    if number.is_empty() || number.parse::<u64>().map_or(true, |n| n == 0) {
        return fail("it must start with a positive whole number, for example 4GB or 512MiB");
    }
    if !UNITS.contains(&unit) {
        return fail("the unit must be one of B, kB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB or %");
    }
    if unit == "%" && number.parse::<u64>().map_or(true, |n| n > 100) {
        return fail("a percentage must be at most 100%");
    }
    Ok(())
}

/// An override of a role's pinned artifact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionPin {
    /// The version label (recorded on the instance, shown by status).
    pub version: String,
    /// Download URL (`https://`, or `http://` on a loopback address for tests).
    pub url: Option<String>,
    /// Lower-case hex SHA-256 of the download; without it the artifact is unverified.
    pub sha256: Option<String>,
}

/// A key the tenant trusts for artifact signatures (`[trust.<name>]`), e.g. a private mirror's: exactly one of
/// `minisign` (a minisign public key, base64) or `openpgp` (an armored OpenPGP public key block); `roles` limits
/// it to some roles (default: every artifact role).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrustEntry {
    /// The entry's name (the table key).
    pub name: String,
    /// The format.
    pub scheme: crate::spec::SignatureScheme,
    /// The key text.
    pub key: String,
    /// The roles it is trusted for; empty = all.
    pub roles: Vec<Role>,
}

impl TrustEntry {
    /// Whether the key is trusted for `role`.
    pub fn applies_to(&self, role: Role) -> bool {
        self.roles.is_empty() || self.roles.contains(&role)
    }
}

/// `[trust]` as the tenant file writes it: a table of entries by name.
fn serialize_trust<S: serde::Serializer>(trust: &[TrustEntry], serializer: S) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        minisign: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        openpgp: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        roles: Vec<&'static str>,
    }
    let mut map = serializer.serialize_map(Some(trust.len()))?;
    for t in trust {
        let key = t.key.as_str();
        let entry = Entry {
            minisign: (t.scheme == crate::spec::SignatureScheme::Minisign).then_some(key),
            openpgp: (t.scheme == crate::spec::SignatureScheme::OpenPgp).then_some(key),
            roles: t.roles.iter().map(|r| r.as_str()).collect(),
        };
        map.serialize_entry(&t.name, &entry)?;
    }
    map.end()
}

/// Settings of the system container (`[system]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SystemSettings {
    /// `privileged = true`: the seed's privileged `-system` (`security.privileged`). Off by default: gbo gives the
    /// mounts the container's own uids, so botserver owns `/opt/gbo` without it, and root in a privileged
    /// internet-facing container is root on the host. A container gbo did not create keeps its own flag.
    pub privileged: bool,
}

/// A mail server outside gbo that webmail uses instead of the email role (`[webmail]`): the host reaches both
/// addresses, and webmail's container sees them on its own loopback through proxy devices (no NIC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MailServer {
    /// Its IMAP listener.
    pub imap: SocketAddr,
    /// Its SMTP submission listener.
    pub smtp: SocketAddr,
}

/// Settings of the webmail container (`[webmail]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WebmailSettings {
    /// The mail server webmail reads and sends through; `None`: the tenant's email role. Written as the
    /// `imap` and `smtp` keys of `[webmail]`, as it is read.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub mail_server: Option<MailServer>,
}

/// Where a tenant's role data, configuration and logs live (`storage = "host" | "volumes"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageMode {
    /// Host directories `<stack_dir>/<role>/{data,conf,logs}` mounted as disk devices (the seed's layout).
    Host,
    /// LXD custom volumes `<tenant>-<role>-{data,conf,logs}` on the tenant's pool: nothing on the daemon's host
    /// filesystem is touched by gbo, so it works the same on a remote daemon or a cluster member.
    Volumes,
}

impl StorageMode {
    /// The word used in the tenant file.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageMode::Host => "host",
            StorageMode::Volumes => "volumes",
        }
    }
}

impl fmt::Display for StorageMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StorageMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "host" => Ok(StorageMode::Host),
            "volumes" => Ok(StorageMode::Volumes),
            other => Err(value_error("storage", other, "expected \"host\" or \"volumes\"")),
        }
    }
}

/// Where a role's container is created in a cluster (`[placement]`): a member, or any member of a cluster group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(into = "String")]
pub enum Placement {
    /// A member by name (`m1`).
    Member(String),
    /// Any member of a cluster group (`@edge`), chosen by LXD.
    Group(String),
}

impl Placement {
    /// Parses `NAME` or `@GROUP`; `key` names the setting in the error. Names are 1-63 characters of letters,
    /// digits, `-` and `.`, starting with a letter or digit (LXD's member and group names).
    pub fn parse(key: &str, value: &str) -> Result<Self> {
        let (group, name) = match value.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid {
            return Err(value_error(
                key,
                value,
                "expected a cluster member name (m1) or @GROUP: 1-63 letters, digits, '-' or '.', starting with a \
                 letter or digit",
            ));
        }
        Ok(if group { Self::Group(name.to_owned()) } else { Self::Member(name.to_owned()) })
    }

    /// LXD's `target=` value: `m1` or `@group`.
    pub fn target(&self) -> String {
        match self {
            Self::Member(m) => m.clone(),
            Self::Group(g) => format!("@{g}"),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.target())
    }
}

impl From<Placement> for String {
    fn from(p: Placement) -> String {
        p.target()
    }
}

/// A parsed, validated tenant file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantFile {
    /// The tenant.
    pub tenant: TenantName,
    /// The roles to install, without duplicates, in the order given.
    pub roles: Vec<Role>,
    /// The host directory holding `<role>/{data,conf,logs}`, when the file sets one; `None` is the default
    /// layout ([`TenantFile::tenant_stack_dir`]).
    pub stack_dir: Option<String>,
    /// The address network-facing roles listen on; `None` means all addresses (default tenant) or loopback.
    pub public_address: Option<IpAddr>,
    /// Sites of the proxy, one per domain.
    pub domains: Vec<DomainName>,
    /// Which role each domain is proxied to; domains not listed go to the system role's botui.
    pub routes: BTreeMap<DomainName, Role>,
    /// Zones the dns role serves.
    pub zones: Vec<DomainName>,
    /// Per-role LXD limits.
    pub limits: BTreeMap<Role, Limits>,
    /// Per-role artifact overrides.
    pub versions: BTreeMap<Role, VersionPin>,
    /// Keys trusted for artifact signatures beside the vendors' (`[trust.<name>]`).
    #[serde(serialize_with = "serialize_trust")]
    pub trust: Vec<TrustEntry>,
    /// The system container's settings.
    pub system: SystemSettings,
    /// The webmail container's settings.
    pub webmail: WebmailSettings,
    /// Where role data lives; `None` lets the caller choose (host on a local daemon, volumes on a remote or a
    /// cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageMode>,
    /// The storage pool of the tenant's volumes; `None`: the pool of the default profile's root disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Cluster placement of each role's container (`[placement]`); roles not listed go where LXD's scheduler puts
    /// them.
    pub placement: BTreeMap<Role, Placement>,
}

impl TenantFile {
    /// The tenant's own stack dir: `stack_dir` as written when the file sets it; otherwise
    /// [`DEFAULT_STACK_DIR`] for the `default` tenant (the seed's layout) and `DEFAULT_STACK_DIR/<tenant>` for any
    /// other, so that two tenants installed from one working directory never share a data directory.
    pub fn tenant_stack_dir(&self) -> String {
        match &self.stack_dir {
            Some(dir) => dir.clone(),
            None if self.tenant.as_str() == TenantName::DEFAULT => DEFAULT_STACK_DIR.to_owned(),
            None => format!("{DEFAULT_STACK_DIR}/{}", self.tenant),
        }
    }
}

impl Default for TenantFile {
    fn default() -> Self {
        Self {
            tenant: TenantName::default(),
            roles: Role::DEFAULT_SET.to_vec(),
            stack_dir: None,
            public_address: None,
            domains: Vec::new(),
            routes: BTreeMap::new(),
            zones: Vec::new(),
            limits: BTreeMap::new(),
            versions: BTreeMap::new(),
            trust: Vec::new(),
            system: SystemSettings::default(),
            webmail: WebmailSettings::default(),
            storage: None,
            pool: None,
            placement: BTreeMap::new(),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenantFile {
    tenant: Option<String>,
    roles: Option<Vec<String>>,
    stack_dir: Option<String>,
    public_address: Option<String>,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    routes: BTreeMap<String, String>,
    #[serde(default)]
    zones: Vec<String>,
    #[serde(default)]
    limits: BTreeMap<String, RawLimits>,
    #[serde(default)]
    versions: BTreeMap<String, RawVersion>,
    #[serde(default)]
    trust: BTreeMap<String, RawTrust>,
    system: Option<RawSystem>,
    webmail: Option<RawWebmail>,
    storage: Option<String>,
    pool: Option<String>,
    #[serde(default)]
    placement: BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    minisign: Option<String>,
    openpgp: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystem {
    privileged: Option<bool>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebmail {
    imap: Option<String>,
    smtp: Option<String>,
}

/// A mail server's listener: an IP address and a port other than 0 (`127.0.0.1:143`, `[::1]:143`).
fn mail_address(key: &str, value: &str) -> Result<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 => Ok(addr),
        _ => Err(value_error(
            key,
            value,
            "an IP address and a port from 1 to 65535 (e.g. 192.0.2.25:143, or [2001:db8::25]:143 for IPv6)",
        )),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    cpu: Option<i64>,
    memory: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersion {
    version: String,
    url: Option<String>,
    sha256: Option<String>,
}

fn value_error(key: impl Into<String>, value: impl Into<String>, rule: impl Into<String>) -> Error {
    Error::TenantFileValue { key: key.into(), value: value.into(), rule: rule.into() }
}

fn role_key(section: &str, name: &str) -> Result<Role> {
    name.parse::<Role>().map_err(|e| match e {
        Error::UnknownRole { allowed, .. } => {
            value_error(format!("{section}.{name}"), name, format!("not a role; expected one of {allowed}"))
        }
        other => other,
    })
}

fn domain(key: &str, value: &str) -> Result<DomainName> {
    DomainName::new(value).map_err(|e| match e {
        Error::InvalidDomain { rule, .. } => value_error(key, value, rule),
        other => other,
    })
}

/// Checks an artifact URL: `https://`, or `http://` only on a loopback host (tests serve artifacts locally).
pub fn validate_artifact_url(key: &str, url: &str) -> Result<()> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(value_error(key, url, "a URL must not contain whitespace or control characters"));
    }
    if let Some(rest) = url.strip_prefix("https://") {
        if rest.is_empty() || rest.starts_with('/') {
            return Err(value_error(key, url, "the URL has no host"));
        }
        return Ok(());
    }
    if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        if host == "127.0.0.1" || host == "localhost" || host == "[::1]" || host.starts_with("127.") {
            return Ok(());
        }
        return Err(value_error(key, url, "plain http:// is only allowed on a loopback host; use https://"));
    }
    Err(value_error(key, url, "the URL must start with https:// (or http:// on a loopback host)"))
}

/// Checks a SHA-256 pin: 64 lower-case hex characters.
pub fn validate_sha256(key: &str, value: &str) -> Result<()> {
    if value.len() != 64 || !value.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
        return Err(value_error(key, value, "a SHA-256 is 64 lower-case hexadecimal characters"));
    }
    Ok(())
}

impl TenantFile {
    /// Parses and validates the text of a `gbo.toml`.
    pub fn parse(text: &str) -> Result<Self> {
        let raw: RawTenantFile = toml::from_str(text)
            .map_err(|e| Error::TenantFileSyntax { message: e.to_string().trim_end().to_owned() })?;
        let mut file = TenantFile::default();

        if let Some(tenant) = raw.tenant {
            file.tenant = TenantName::new(&tenant).map_err(|e| match e {
                Error::InvalidTenantName { rule, .. } => value_error("tenant", &tenant, rule),
                other => other,
            })?;
        }
        if let Some(roles) = raw.roles {
            if roles.is_empty() {
                return Err(value_error(
                    "roles",
                    "[]",
                    "list at least one role, or leave the key out for the default set",
                ));
            }
            file.roles.clear();
            for name in roles {
                let role = name.parse::<Role>().map_err(|e| match e {
                    Error::UnknownRole { allowed, .. } => {
                        value_error("roles", &name, format!("not a role; expected one of {allowed}"))
                    }
                    other => other,
                })?;
                if file.roles.contains(&role) {
                    return Err(value_error("roles", &name, "listed twice"));
                }
                file.roles.push(role);
            }
        }
        if let Some(dir) = raw.stack_dir {
            if dir.trim().is_empty() {
                return Err(value_error("stack_dir", &dir, "must not be empty"));
            }
            if dir.contains('\0') || dir.contains('\n') {
                return Err(value_error("stack_dir", &dir, "must not contain NUL or newline"));
            }
            file.stack_dir = Some(dir);
        }
        if let Some(address) = raw.public_address {
            let ip: IpAddr = address
                .parse()
                .map_err(|_| value_error("public_address", &address, "must be an IPv4 or IPv6 address"))?;
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(value_error("public_address", &address, "must be a unicast address of this host"));
            }
            file.public_address = Some(ip);
        }
        for name in &raw.domains {
            let d = domain("domains", name)?;
            if file.domains.contains(&d) {
                return Err(value_error("domains", name, "listed twice"));
            }
            file.domains.push(d);
        }
        for (name, target) in &raw.routes {
            let d = domain(&format!("routes.{name}"), name)?;
            if !file.domains.contains(&d) {
                return Err(value_error(format!("routes.{name}"), name, "a route's domain must be listed in domains"));
            }
            let role = role_key("routes", target).map_err(|_| {
                value_error(
                    format!("routes.{name}"),
                    target,
                    format!("not a role; expected one of {}", http_roles_list()),
                )
            })?;
            if !crate::catalogue::http_roles().contains(&role) {
                return Err(value_error(
                    format!("routes.{name}"),
                    target,
                    format!("this role serves no HTTP site; expected one of {}", http_roles_list()),
                ));
            }
            file.routes.insert(d, role);
        }
        for name in &raw.zones {
            let z = domain("zones", name)?;
            if file.zones.contains(&z) {
                return Err(value_error("zones", name, "listed twice"));
            }
            file.zones.push(z);
        }
        for (name, limits) in raw.limits {
            let role = role_key("limits", &name)?;
            let key = format!("limits.{name}");
            let cpu = match limits.cpu {
                None => None,
                Some(n) if (1..=1024).contains(&n) => u32::try_from(n).ok(),
                Some(n) => {
                    return Err(value_error(
                        format!("{key}.cpu"),
                        n.to_string(),
                        "must be a whole number from 1 to 1024",
                    ))
                }
            };
            if let Some(memory) = &limits.memory {
                validate_memory(&format!("{key}.memory"), memory)?;
            }
            file.limits.insert(role, Limits { cpu, memory: limits.memory });
        }
        for (name, pin) in raw.versions {
            let role = role_key("versions", &name)?;
            let key = format!("versions.{name}");
            if crate::artifacts::pinned_artifacts(role).is_empty() {
                return Err(value_error(
                    &key,
                    &name,
                    "this role is installed from Debian packages in the image; it has no artifact to override",
                ));
            }
            if pin.version.is_empty() || pin.version.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(value_error(
                    format!("{key}.version"),
                    &pin.version,
                    "must be non-empty, without spaces or '/'",
                ));
            }
            match &pin.url {
                Some(url) => validate_artifact_url(&format!("{key}.url"), url)?,
                None if !crate::artifacts::pinned_artifacts(role)
                    .first()
                    .is_some_and(crate::artifacts::version_in_url) =>
                {
                    return Err(value_error(
                        format!("{key}.url"),
                        "",
                        "the pinned URL of this role holds no version to substitute; give the url of this version",
                    ));
                }
                None => {}
            }
            if let Some(sha) = &pin.sha256 {
                validate_sha256(&format!("{key}.sha256"), sha)?;
            }
            file.versions.insert(role, VersionPin { version: pin.version, url: pin.url, sha256: pin.sha256 });
        }
        if let Some(storage) = raw.storage {
            file.storage = Some(storage.parse()?);
        }
        if let Some(pool) = raw.pool {
            let ok = !pool.is_empty()
                && pool.len() <= 63
                && pool.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && pool.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(value_error(
                    "pool",
                    &pool,
                    "a storage pool name is 1 to 63 characters of a-z, A-Z, 0-9, '-', '_' or '.', starting with a letter or digit",
                ));
            }
            file.pool = Some(pool);
        }
        for (name, entry) in raw.trust {
            let key = format!("trust.{name}");
            let (scheme, text) = match (entry.minisign, entry.openpgp) {
                (Some(k), None) => {
                    let k = k.trim().to_owned();
                    if !(k.len() == 56
                        && k.starts_with("RW")
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
                    {
                        return Err(value_error(
                            format!("{key}.minisign"),
                            &k,
                            "a minisign public key is the 56-character base64 line starting with RW (the second line of minisign.pub)",
                        ));
                    }
                    (crate::spec::SignatureScheme::Minisign, k)
                }
                (None, Some(k)) => {
                    if !k.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
                        return Err(value_error(
                            format!("{key}.openpgp"),
                            k.lines().next().unwrap_or_default(),
                            "an OpenPGP key is an armored public key block (-----BEGIN PGP PUBLIC KEY BLOCK-----)",
                        ));
                    }
                    (crate::spec::SignatureScheme::OpenPgp, k)
                }
                _ => return Err(value_error(
                    &key,
                    &name,
                    "give exactly one of minisign = \"RW...\" or openpgp = \"-----BEGIN PGP PUBLIC KEY BLOCK-----...\"",
                )),
            };
            let mut roles = Vec::new();
            for role in &entry.roles {
                let role = role_key(&format!("{key}.roles"), role)?;
                if crate::artifacts::pinned_artifacts(role).is_empty() {
                    return Err(value_error(
                        format!("{key}.roles"),
                        role.as_str(),
                        "this role is installed from Debian packages in the image; it has no artifact to sign",
                    ));
                }
                roles.push(role);
            }
            file.trust.push(TrustEntry { name, scheme, key: text, roles });
        }
        if let Some(system) = raw.system {
            file.system.privileged = system.privileged.unwrap_or(false);
        }
        if let Some(webmail) = raw.webmail {
            file.webmail.mail_server = match (webmail.imap, webmail.smtp) {
                (Some(imap), Some(smtp)) => Some(MailServer {
                    imap: mail_address("webmail.imap", &imap)?,
                    smtp: mail_address("webmail.smtp", &smtp)?,
                }),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(value_error(
                        "webmail.smtp",
                        "(missing)",
                        "give smtp = \"IP:port\" beside imap, or neither",
                    ))
                }
                (None, Some(_)) => {
                    return Err(value_error(
                        "webmail.imap",
                        "(missing)",
                        "give imap = \"IP:port\" beside smtp, or neither",
                    ))
                }
            };
        }
        for (name, value) in raw.placement {
            let role = role_key("placement", &name)?;
            file.placement.insert(role, Placement::parse(&format!("placement.{name}"), &value)?);
        }
        Ok(file)
    }

    /// The limits set for `role` (empty when none).
    pub fn limits_for(&self, role: Role) -> Limits {
        self.limits.get(&role).cloned().unwrap_or_default()
    }

    /// The role a domain's site proxies to: its route, or the system role.
    pub fn route_for(&self, domain: &DomainName) -> Role {
        self.routes.get(domain).copied().unwrap_or(Role::System)
    }
}

fn http_roles_list() -> String {
    crate::catalogue::http_roles().iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
}
