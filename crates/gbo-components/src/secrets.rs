//! Named secret values given to rendering, and the list of secrets each role needs.
//!
//! Generating secrets is `gbo-ops`' job (CSPRNG, stored 0600 under `<stack-dir>/.secrets/`, reused on re-runs);
//! this module only says what must exist and carries the values into rendered files, which are then marked
//! [`secret`](crate::RenderedFile::secret).

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};
use crate::names::Role;

/// The characters a generated secret is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SecretCharset {
    /// `A-Z a-z 0-9`: safe in URLs, TOML, INI, env files and SQL string literals without escaping.
    Alphanumeric,
    /// `0-9 a-f`.
    LowerHex,
}

impl SecretCharset {
    /// Whether `c` belongs to the charset.
    pub fn contains(self, c: char) -> bool {
        match self {
            SecretCharset::Alphanumeric => c.is_ascii_alphanumeric(),
            SecretCharset::LowerHex => c.is_ascii_digit() || ('a'..='f').contains(&c),
        }
    }

    /// All characters of the charset, for generators.
    pub fn alphabet(self) -> &'static str {
        match self {
            SecretCharset::Alphanumeric => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            SecretCharset::LowerHex => "0123456789abcdef",
        }
    }
}

/// What one secret is: its name (shared by every role that needs it), length and characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SecretSpec {
    /// The secret's name, also its file name under `<stack-dir>/.secrets/`.
    pub name: &'static str,
    /// Exact length in characters.
    pub length: usize,
    /// The characters it is made of.
    pub charset: SecretCharset,
    /// What it is for, one sentence.
    pub purpose: &'static str,
}

impl SecretSpec {
    /// Checks a value against the specification (without ever printing the value).
    pub fn check(&self, value: &str) -> Result<()> {
        if value.chars().count() != self.length {
            return Err(Error::InvalidSecret {
                name: self.name.to_owned(),
                rule: format!("it must be exactly {} characters long", self.length),
            });
        }
        if let Some(bad) = value.chars().position(|c| !self.charset.contains(c)) {
            return Err(Error::InvalidSecret {
                name: self.name.to_owned(),
                rule: format!("character {} is outside the {:?} charset", bad + 1, self.charset),
            });
        }
        Ok(())
    }
}

/// The PostgreSQL password of `gbuser` (tables, system).
pub const TABLES_PASSWORD: SecretSpec = SecretSpec {
    name: "tables-password",
    length: 32,
    charset: SecretCharset::Alphanumeric,
    purpose: "password of the PostgreSQL role gbuser (database botserver)",
};
/// The MinIO root user (drive, system).
pub const DRIVE_ACCESS_KEY: SecretSpec = SecretSpec {
    name: "drive-access-key",
    length: 20,
    charset: SecretCharset::Alphanumeric,
    purpose: "MinIO root user (S3 access key)",
};
/// The MinIO root password (drive, system).
pub const DRIVE_SECRET_KEY: SecretSpec = SecretSpec {
    name: "drive-secret-key",
    length: 40,
    charset: SecretCharset::Alphanumeric,
    purpose: "MinIO root password (S3 secret key)",
};
/// Stalwart's fallback administrator password (email).
pub const EMAIL_ADMIN_PASSWORD: SecretSpec = SecretSpec {
    name: "email-admin-password",
    length: 32,
    charset: SecretCharset::Alphanumeric,
    purpose: "password of Stalwart's fallback administrator 'admin'",
};
/// Forgejo's `SECRET_KEY` (alm).
pub const ALM_SECRET_KEY: SecretSpec = SecretSpec {
    name: "alm-secret-key",
    length: 64,
    charset: SecretCharset::Alphanumeric,
    purpose: "Forgejo [security] SECRET_KEY",
};
/// Forgejo's `INTERNAL_TOKEN` (alm).
pub const ALM_INTERNAL_TOKEN: SecretSpec = SecretSpec {
    name: "alm-internal-token",
    length: 64,
    charset: SecretCharset::Alphanumeric,
    purpose: "Forgejo [security] INTERNAL_TOKEN shared by the server and its git hooks",
};
/// The shared secret that registers the Forgejo runner with Forgejo (alm, alm-ci).
pub const ALM_RUNNER_SECRET: SecretSpec = SecretSpec {
    name: "alm-runner-secret",
    length: 40,
    charset: SecretCharset::LowerHex,
    purpose: "runner registration secret (forgejo-cli actions register / forgejo-runner create-runner-file)",
};
/// NocoDB's JWT signing secret (table-editor).
pub const TABLE_EDITOR_JWT_SECRET: SecretSpec = SecretSpec {
    name: "table-editor-jwt-secret",
    length: 48,
    charset: SecretCharset::Alphanumeric,
    purpose: "NocoDB NC_AUTH_JWT_SECRET",
};
/// Roundcube's `des_key`, exactly 24 characters (webmail).
pub const WEBMAIL_DES_KEY: SecretSpec = SecretSpec {
    name: "webmail-des-key",
    length: 24,
    charset: SecretCharset::Alphanumeric,
    purpose: "Roundcube des_key (session encryption), exactly 24 characters",
};
/// The password of Roundcube's own PostgreSQL role (`roundcube`) in the tenant's `-tables` (webmail; tables
/// creates the role with it). Alphanumeric, so it sits in Roundcube's DSN without escaping.
pub const WEBMAIL_DB_PASSWORD: SecretSpec = SecretSpec {
    name: "webmail-db-password",
    length: 32,
    charset: SecretCharset::Alphanumeric,
    purpose: "password of Roundcube's PostgreSQL role roundcube in -tables",
};

/// The cache's password (`requirepass`; cache, system): every host user reaches the cache's published port on
/// 127.0.0.1, so loopback is no protection.
pub const CACHE_PASSWORD: SecretSpec = SecretSpec {
    name: "cache-password",
    length: 40,
    charset: SecretCharset::Alphanumeric,
    purpose: "Redis/Valkey requirepass of the cache (botserver's CACHE_URL carries it)",
};
/// Qdrant's API key (vector_db, system).
pub const VECTOR_DB_API_KEY: SecretSpec = SecretSpec {
    name: "vector-db-api-key",
    length: 40,
    charset: SecretCharset::Alphanumeric,
    purpose: "Qdrant service.api_key (botserver's VECTORDB_API_KEY)",
};
/// The llama.cpp servers' API key (llm, system).
pub const LLM_API_KEY: SecretSpec = SecretSpec {
    name: "llm-api-key",
    length: 40,
    charset: SecretCharset::Alphanumeric,
    purpose: "llama.cpp server --api-key-file key of the chat and embeddings servers (botserver's LLM_KEY)",
};

/// Every secret the catalogue knows, for generators and for tests that grep output for leaked values.
pub const ALL_SECRETS: &[SecretSpec] = &[
    TABLES_PASSWORD,
    DRIVE_ACCESS_KEY,
    DRIVE_SECRET_KEY,
    EMAIL_ADMIN_PASSWORD,
    ALM_SECRET_KEY,
    ALM_INTERNAL_TOKEN,
    ALM_RUNNER_SECRET,
    TABLE_EDITOR_JWT_SECRET,
    WEBMAIL_DES_KEY,
    WEBMAIL_DB_PASSWORD,
    CACHE_PASSWORD,
    VECTOR_DB_API_KEY,
    LLM_API_KEY,
];

/// The secrets `role` needs to render its files. Names are tenant-wide: the system role reuses the tables, drive
/// and cache secrets rather than getting copies (and the vector_db and llm keys when the tenant has those roles,
/// which then generate them).
pub fn required_secrets(role: Role) -> &'static [SecretSpec] {
    match role {
        Role::Tables => &[TABLES_PASSWORD],
        Role::Drive => &[DRIVE_ACCESS_KEY, DRIVE_SECRET_KEY],
        Role::Email => &[EMAIL_ADMIN_PASSWORD],
        Role::Alm => &[ALM_SECRET_KEY, ALM_INTERNAL_TOKEN, ALM_RUNNER_SECRET],
        Role::AlmCi => &[ALM_RUNNER_SECRET],
        Role::TableEditor => &[TABLE_EDITOR_JWT_SECRET],
        Role::Webmail => &[WEBMAIL_DES_KEY, WEBMAIL_DB_PASSWORD],
        Role::System => &[TABLES_PASSWORD, DRIVE_ACCESS_KEY, DRIVE_SECRET_KEY, CACHE_PASSWORD],
        Role::Cache => &[CACHE_PASSWORD],
        Role::VectorDb => &[VECTOR_DB_API_KEY],
        Role::Llm => &[LLM_API_KEY],
        Role::Vault | Role::Proxy | Role::Dns => &[],
    }
}

/// Named secret values. `Debug` and `Display` print the names only, never a value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl Secrets {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// Builder form of [`insert`](Self::insert).
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The value of `spec`, or [`Error::MissingSecret`] naming the role that needs it; the value is checked
    /// against the spec.
    pub fn require(&self, spec: &SecretSpec, role: Role) -> Result<&str> {
        let value = self
            .get(spec.name)
            .ok_or_else(|| Error::MissingSecret { name: spec.name.to_owned(), role: role.as_str() })?;
        spec.check(value)?;
        Ok(value)
    }

    /// The names present, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// All values, for tests and tools that scan output for leaks.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.values().map(String::as_str)
    }

    /// Whether no secret is held.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.values.keys().map(|k| (k, "<redacted>"))).finish()
    }
}

impl fmt::Display for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.names().collect();
        write!(f, "{} secrets ({}), values redacted", names.len(), names.join(", "))
    }
}
