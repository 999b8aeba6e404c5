//! Tenants, roles and the one rule that turns them into LXD instance names.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The longest tenant name accepted: with the longest container suffix (`-table-editor`, 13 characters) every
/// instance name stays within LXD's 63.
pub const TENANT_NAME_MAX: usize = 50;

/// A validated tenant name: `[a-z][a-z0-9-]*`, not ending in `-`, 1 to 50 characters.
///
/// ```
/// use gbo_components::TenantName;
/// assert_eq!(TenantName::default().as_str(), "default");
/// assert!("mycompany".parse::<TenantName>().is_ok());
/// assert!("MyCompany".parse::<TenantName>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantName(String);

impl TenantName {
    /// The tenant used when none is given: `default`, as in the seed's `default-tables`.
    pub const DEFAULT: &'static str = "default";

    /// Validates `value` against the naming rules; the error names the rule that failed.
    pub fn new(value: &str) -> Result<Self> {
        let fail = |rule| Err(Error::InvalidTenantName { value: value.to_owned(), rule });
        let Some(first) = value.chars().next() else {
            return fail("it is empty; a tenant name has 1 to 50 characters");
        };
        if value.chars().count() > TENANT_NAME_MAX {
            return fail("it is longer than 50 characters (every container name must fit LXD's 63)");
        }
        if first.is_ascii_digit() {
            return fail("it starts with a digit; it must start with a lower-case letter a-z");
        }
        if first == '-' {
            return fail("it starts with '-'; it must start with a lower-case letter a-z");
        }
        if !first.is_ascii_lowercase() {
            return fail("it must start with a lower-case letter a-z");
        }
        if value.chars().any(|c| c.is_ascii_uppercase()) {
            return fail("it contains upper case; only a-z, 0-9 and '-' are allowed");
        }
        if value.contains('_') {
            return fail(
                "it contains '_', which is not valid in an LXD instance name; only a-z, 0-9 and '-' are allowed",
            );
        }
        if !value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return fail("it contains a character other than a-z, 0-9 and '-'");
        }
        if value.ends_with('-') {
            return fail("it ends with '-'");
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TenantName {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl FromStr for TenantName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TenantName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for TenantName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TenantName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(&text).map_err(serde::de::Error::custom)
    }
}

/// Every component of the General Bots stack that gbo can deploy, one container each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// PostgreSQL (Debian 12: 15), port 5432.
    Tables,
    /// MinIO S3-compatible storage, ports 9000 (API) and 9001 (console).
    Drive,
    /// Valkey-compatible cache (Debian 12 provider: Redis 7), port 6379.
    Cache,
    /// llama.cpp server, ports 8081 (chat) and 8082 (embeddings). Optional.
    Llm,
    /// Stalwart mail server, the mail ports. Optional.
    Email,
    /// HashiCorp Vault, port 8200.
    Vault,
    /// Qdrant vector database, ports 6333 (REST) and 6334 (gRPC). Command name `vector_db`, container `vectordb`.
    VectorDb,
    /// Caddy reverse proxy, ports 80 and 443.
    Proxy,
    /// CoreDNS, port 53 over TCP and UDP.
    Dns,
    /// Forgejo (application lifecycle management: git, issues, CI server), port 3000.
    Alm,
    /// Forgejo runner: no ports, no cross-container mounts.
    AlmCi,
    /// NocoDB, port 8080.
    TableEditor,
    /// Roundcube webmail, port 80 (internal).
    Webmail,
    /// botserver (5858) and botui (5859): unprivileged unless the tenant file asks (`[system] privileged = true`).
    System,
}

impl Role {
    /// Every role, in the catalogue's canonical order.
    pub const ALL: [Role; 14] = [
        Role::Tables,
        Role::Drive,
        Role::Cache,
        Role::Llm,
        Role::Email,
        Role::Vault,
        Role::VectorDb,
        Role::Proxy,
        Role::Dns,
        Role::Alm,
        Role::AlmCi,
        Role::TableEditor,
        Role::Webmail,
        Role::System,
    ];

    /// The roles installed when none are named: the seed's automatic set.
    pub const DEFAULT_SET: [Role; 3] = [Role::Tables, Role::Drive, Role::Cache];

    /// The command name of the role (`vector_db`, `alm-ci`, ...), as the seed's `botserver install ROLE` uses it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Tables => "tables",
            Role::Drive => "drive",
            Role::Cache => "cache",
            Role::Llm => "llm",
            Role::Email => "email",
            Role::Vault => "vault",
            Role::VectorDb => "vector_db",
            Role::Proxy => "proxy",
            Role::Dns => "dns",
            Role::Alm => "alm",
            Role::AlmCi => "alm-ci",
            Role::TableEditor => "table-editor",
            Role::Webmail => "webmail",
            Role::System => "system",
        }
    }

    /// The suffix of the role's container name: the command name, except `vectordb` for `vector_db` (`_` is not
    /// valid in an LXD instance name).
    pub const fn container_suffix(self) -> &'static str {
        match self {
            Role::VectorDb => "vectordb",
            other => other.as_str(),
        }
    }

    /// The name of the systemd unit running the role's main service, `{role}.service` (`vector_db.service` is
    /// spelled with the container suffix: `vectordb.service`).
    pub fn unit_name(self) -> String {
        format!("{}.service", self.container_suffix())
    }

    /// The roles that must be installed and healthy before this one starts. Webmail keeps its state in the
    /// tables role and reads mail from the email role, unless the tenant file names another mail server
    /// ([`crate::catalogue::tenant_dependencies`]).
    pub const fn dependencies(self) -> &'static [Role] {
        match self {
            Role::AlmCi => &[Role::Alm],
            Role::Webmail => &[Role::Tables, Role::Email],
            Role::TableEditor => &[Role::Tables],
            Role::System => &[Role::Tables, Role::Cache, Role::Drive],
            _ => &[],
        }
    }

    fn allowed_list() -> String {
        Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    /// Accepts the command name (`vector_db`) or the container suffix (`vectordb`).
    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s || r.container_suffix() == s)
            .ok_or_else(|| Error::UnknownRole { value: s.to_owned(), allowed: Role::allowed_list() })
    }
}

impl serde::Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// THE naming rule: the LXD instance of `role` for `tenant` is `{tenant}-{container suffix}`.
///
/// ```
/// use gbo_components::{instance_name, Role, TenantName};
/// assert_eq!(instance_name(&TenantName::default(), Role::Tables), "default-tables");
/// assert_eq!(instance_name(&TenantName::default(), Role::VectorDb), "default-vectordb");
/// ```
pub fn instance_name(tenant: &TenantName, role: Role) -> String {
    format!("{}-{}", tenant.as_str(), role.container_suffix())
}

/// The inverse of [`instance_name`]: `None` when `name` is not a valid tenant followed by `-` and a container
/// suffix.
///
/// The split is unambiguous: no container suffix ends with `-` followed by another suffix (`alm-ci` ends in `ci`,
/// `table-editor` in `editor`, and neither is a role), so the longest matching suffix wins.
pub fn parse_instance_name(name: &str) -> Option<(TenantName, Role)> {
    try_parse_instance_name(name).ok()
}

/// Like [`parse_instance_name`], with an error that says why the name was rejected.
pub fn try_parse_instance_name(name: &str) -> Result<(TenantName, Role)> {
    let mut roles = Role::ALL;
    roles.sort_by_key(|r| std::cmp::Reverse(r.container_suffix().len()));
    for role in roles {
        let suffix = role.container_suffix();
        let Some(prefix) = name.strip_suffix(suffix).and_then(|p| p.strip_suffix('-')) else {
            continue;
        };
        return match TenantName::new(prefix) {
            Ok(tenant) => Ok((tenant, role)),
            Err(Error::InvalidTenantName { rule, .. }) => Err(Error::InvalidInstanceName {
                value: name.to_owned(),
                rule: format!("its tenant part {prefix:?} is invalid: {rule}"),
            }),
            Err(other) => Err(other),
        };
    }
    Err(Error::InvalidInstanceName {
        value: name.to_owned(),
        rule: format!(
            "it does not end in '-' and a role's container suffix ({})",
            Role::ALL.iter().map(|r| r.container_suffix()).collect::<Vec<_>>().join(", ")
        ),
    })
}
