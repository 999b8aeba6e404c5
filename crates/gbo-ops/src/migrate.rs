//! Verified PostgreSQL migration between a server on the host and a tenant's tables container, in either direction.
//!
//! Streamed end to end (no SQL file on disk): the schema's pre-data section (`pg_dump --section=pre-data`: schema
//! and grants) is applied first; then one job per table, `--jobs` at once, largest first: the table travels
//! as a `COPY ... TO STDOUT` → `COPY ... FROM STDIN WITH (FREEZE)` stream (`pg_restore -j` cannot read a pipe), the
//! source's stream is digested as it passes (rows and SHA-256), the target's is read back and digested where it lives
//! (inside the container: `psql | sha256sum`) while the table's indexes and keys from the post-data section are built
//! and it is analysed, overlapping the copy of the other tables. Large objects travel the same way (their contents as
//! one COPY stream). Then sequences are set and the rest of post-data (foreign keys, triggers, attachments) is
//! applied, and every sequence's value and the set of tables are compared. When two streams differ, an
//! order-independent content checksum on both sides decides (so a different row order or text rendering is not
//! mistaken for different content); a real difference fails the migration and names the tables. The source is only
//! ever read.
//!
//! Ownership: by default every migrated object (database, schemas, tables, sequences, views, functions, types, large
//! objects) is created by, and so owned by, the tenant's application role (`gbuser`): the restore runs under that
//! role. `keep_owners` keeps the source's owners instead (missing roles are created as plain `NOLOGIN` roles).
//! Either way the last check reads and writes every table as the application role, in a transaction that is rolled
//! back, and a table it cannot use fails the migration, named.
//!
//! Trust: a container is never trusted. When it is the source, nothing it prints is used: the host reads it through
//! its published port (the proxy device recorded on the tables container) with its own `pg_dump` and its own
//! PostgreSQL connections, logged in as a temporary role created for the run; every identifier read from it is
//! quoted by the host; sequence values are parsed as numbers; only COPY data is streamed into the host. The host
//! target restores through a session that is not a superuser (a temporary login that can only become the owner
//! role), so SQL defined by the container (a CHECK constraint, a trigger, an index expression) runs with no more
//! rights than the application has.
//!
//! The host side is addressed the libpq way: a connection string, or `PGHOST`/`PGPORT`/`PGUSER`/`PGPASSWORD`/
//! `PGSSLMODE`/`PGSSLROOTCERT`, or the local socket. TLS goes through OpenSSL with libpq's `sslmode` semantics. The
//! password never reaches an argv or an environment: host tools get it through a 0600 `PGPASSFILE`. The container
//! side, as a target, runs `psql` as `postgres` through LXD exec over the local socket.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt, TryStreamExt};
use lxd_client::{Client, ExecRequest, InstanceName};
use tokio::io::AsyncReadExt;

use crate::runner::{HostCommand, RunError};

/// The database the seed migrates.
pub const DEFAULT_DATABASE: &str = "botserver";
/// The tenant's application role: the role the tables role creates and botserver logs in as.
pub const DEFAULT_APP_ROLE: &str = gbo_components::render::postgres::APP_USER;
/// PostgreSQL's limit on a name (NAMEDATALEN - 1), in bytes.
pub const MAX_NAME_BYTES: usize = 63;

/// A migration that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// A connection string that does not parse, or a setting in it that cannot be used.
    #[error("invalid connection string: {0}; use `postgresql://user@host:port/db` or `host=... port=... user=...`")]
    ConnectionString(String),
    /// A database name that is not a plain PostgreSQL name.
    #[error("invalid --database `{value}`: {reason}; a database name is 1 to {MAX_NAME_BYTES} bytes, not only spaces, with no `=`, no `/` and no control characters (NUL, newline, tab)")]
    InvalidDatabase {
        /// The value given (control characters escaped).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host server cannot be reached.
    #[error("cannot connect to PostgreSQL at {target}: {message}")]
    Unreachable {
        /// host:port or socket.
        target: String,
        /// Cause.
        message: String,
    },
    /// The source database does not exist.
    #[error("database `{database}` does not exist on the source ({side})")]
    NoSuchDatabase {
        /// Database.
        database: String,
        /// Which side.
        side: String,
    },
    /// A dump does not restore into an older major version.
    #[error("the target runs PostgreSQL {target_major} but the source runs {source_major}: a dump does not restore into an older major version; upgrade the target first")]
    OlderTarget {
        /// Source major.
        source_major: u32,
        /// Target major.
        target_major: u32,
    },
    /// The target already holds data.
    #[error("the target database `{database}` on {side} already holds {contents}; pass --replace to snapshot it and replace it")]
    TargetNotEmpty {
        /// Database.
        database: String,
        /// Which side.
        side: String,
        /// What it holds.
        contents: Contents,
    },
    /// A side gave an answer that cannot be read: never taken as "empty" or "nothing".
    #[error("{side} gave an unreadable answer to {what}: `{answer}`")]
    Unreadable {
        /// Which side.
        side: String,
        /// The question.
        what: String,
        /// The answer (shortened).
        answer: String,
    },
    /// Verification found differences.
    #[error("verification failed; the source is unchanged. Tables that differ: {}", .differences.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "))]
    Mismatch {
        /// What differs.
        differences: Vec<Difference>,
    },
    /// The application role cannot use what was migrated.
    #[error("the application role `{role}` cannot use the migrated database on {side}: {}. The data was copied and verified; give `{role}` access (or migrate without --keep-owners), then check again", .problems.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "))]
    AppRole {
        /// The application role.
        role: String,
        /// The target.
        side: String,
        /// Each table (or object) and why.
        problems: Vec<Difference>,
    },
    /// `--keep-owners` from a container would give objects to roles the host already has.
    #[error("--keep-owners would give objects from the container to the existing role(s) {} on {side}; a container's objects may only go to roles this migration creates or to the application role `{app_role}`: migrate without --keep-owners", .roles.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", "))]
    ForeignOwners {
        /// The target.
        side: String,
        /// The roles.
        roles: Vec<String>,
        /// The application role.
        app_role: String,
    },
    /// The container publishes no host port for PostgreSQL, so it cannot be read from the host.
    #[error("container {container} publishes no host port for its PostgreSQL port {port} (a proxy device like `gbo-port-postgres`): container-to-local reads the container through that port with the host's own pg_dump; install the tables role with gbo or add the proxy device")]
    NoPublishedPort {
        /// The container.
        container: String,
        /// The port inside it.
        port: u16,
    },
    /// The temporary restore login cannot log in.
    #[error("cannot log in to {target} as the temporary restore role `{role}` ({message}): the restore into a host server runs as a role that is not a superuser, logging in with a password; allow password (scram-sha-256) authentication for it in pg_hba.conf (for example over 127.0.0.1), or connect gbo as a non-superuser that owns the target")]
    RestoreLogin {
        /// The server.
        target: String,
        /// The temporary role.
        role: String,
        /// The server's answer.
        message: String,
    },
    /// A SQL statement failed.
    #[error("{side}: {message}")]
    Sql {
        /// Which side.
        side: String,
        /// The server's message.
        message: String,
    },
    /// LXD failed.
    #[error(transparent)]
    Lxd(#[from] lxd_client::Error),
    /// A host tool failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The container is missing or has no PostgreSQL.
    #[error("{0}")]
    Container(String),
    /// Local I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The `--keep-sql` file cannot be written where asked.
    #[error("cannot keep the SQL file at {path}: {reason}")]
    KeepSql {
        /// The path given.
        path: String,
        /// Why not, and what is allowed.
        reason: String,
    },
    /// Taking the safety snapshot before --replace failed.
    #[error("snapshot before replacing the target failed: {0}")]
    Snapshot(#[from] crate::snapshot::SnapshotError),
}

/// What a target database holds that a user made (system catalogs, extension members and the `public` schema do not
/// count): any of it makes the target "not empty".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Contents {
    /// Tables, partitioned tables, views, materialized views, foreign tables and sequences no column owns.
    pub relations: u64,
    /// Functions, procedures and aggregates.
    pub functions: u64,
    /// Enums, composites, domains, ranges and base types (not the row and array types tables bring).
    pub types: u64,
    /// Large objects.
    pub large_objects: u64,
    /// Schemas other than `public`.
    pub schemas: u64,
    /// Extensions other than `plpgsql`.
    pub extensions: u64,
}

impl Contents {
    /// Whether nothing at all is there.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl std::fmt::Display for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            (self.relations, "relation(s) (tables, views or sequences)"),
            (self.functions, "function(s)"),
            (self.types, "type(s)"),
            (self.large_objects, "large object(s)"),
            (self.schemas, "schema(s)"),
            (self.extensions, "extension(s)"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// One table or sequence that differs between source and target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// `schema.table` or `schema.sequence`.
    pub object: String,
    /// What differs (`rows 10 vs 9`, `content checksum`, `missing on target`, `sequence 42 vs 1`).
    pub what: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.object, self.what)
    }
}

/// Check a database name before it reaches a connection string, an argv or a file name: 1 to 63 bytes, not only
/// whitespace, no `=` (libpq would read the name as a connection string), no `/` (a path separator in backup file
/// names; also how libpq recognises a URI), no control characters.
pub fn validate_database(name: &str) -> Result<(), MigrateError> {
    let bad = |reason: &str| MigrateError::InvalidDatabase {
        value: name.escape_debug().to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.trim().is_empty() {
        return Err(bad("it is only whitespace"));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(bad(&format!("it is {} bytes long", name.len())));
    }
    if name.contains('\0') {
        return Err(bad("it holds a NUL byte"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("it holds a control character"));
    }
    if name.contains('=') {
        return Err(bad("it holds `=`, which makes libpq read it as a connection string"));
    }
    if name.contains('/') {
        return Err(bad("it holds `/`, a path separator"));
    }
    Ok(())
}

/// libpq's `sslmode` (all of it but `allow`, which tries without TLS first and is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it (libpq's default); the certificate is verified only when a root certificate is
    /// configured.
    Prefer,
    /// TLS or nothing; the certificate is verified only when a root certificate is configured (as libpq does).
    Require,
    /// TLS with the server's certificate chain verified against the root certificate.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, MigrateError> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            "allow" => Err(MigrateError::ConnectionString(
                "sslmode=allow is not supported (it tries without TLS first); use disable, prefer, require, verify-ca or verify-full".into(),
            )),
            other => Err(MigrateError::ConnectionString(format!(
                "sslmode `{}` is not one of disable, prefer, require, verify-ca, verify-full",
                other.escape_debug()
            ))),
        }
    }

    /// libpq's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where the CAs that verify a server come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCert {
    /// A PEM file (`sslrootcert=FILE`).
    File(PathBuf),
    /// The system's trust store (`sslrootcert=system`).
    System,
}

/// TLS settings and the OpenSSL connector built from them (once, when the server is addressed).
#[derive(Clone)]
struct Tls {
    mode: SslMode,
    root: Option<RootCert>,
    connector: Option<postgres_openssl::MakeTlsConnector>,
}

impl Tls {
    fn disabled() -> Self {
        Self { mode: SslMode::Disable, root: None, connector: None }
    }

    /// libpq's rules: `verify-*` need a root certificate; with one configured, `prefer` and `require` verify the
    /// chain too; only `verify-full` checks the name.
    fn new(mode: SslMode, root: Option<RootCert>) -> Result<Self, MigrateError> {
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
        if mode == SslMode::Disable {
            return Ok(Self { mode, root, connector: None });
        }
        let verifying = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
        if verifying && root.is_none() {
            return Err(MigrateError::ConnectionString(format!(
                "sslmode={} needs the CA that signed the server's certificate: set sslrootcert=FILE (or PGSSLROOTCERT, \
                 or put it in ~/.postgresql/root.crt), or sslrootcert=system for the system's CAs",
                mode.as_str()
            )));
        }
        let openssl_error = |e: openssl::error::ErrorStack| MigrateError::ConnectionString(format!("TLS setup: {e}"));
        let mut builder = SslConnector::builder(SslMethod::tls()).map_err(openssl_error)?;
        match &root {
            Some(RootCert::File(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    MigrateError::ConnectionString(format!("cannot read sslrootcert {}: {e}", path.display()))
                })?;
                let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| {
                    MigrateError::ConnectionString(format!(
                        "sslrootcert {} holds no PEM certificate: {e}",
                        path.display()
                    ))
                })?;
                if certs.is_empty() {
                    return Err(MigrateError::ConnectionString(format!(
                        "sslrootcert {} holds no PEM certificate",
                        path.display()
                    )));
                }
                let mut store = openssl::x509::store::X509StoreBuilder::new().map_err(openssl_error)?;
                for cert in certs {
                    store.add_cert(cert).map_err(openssl_error)?;
                }
                builder.set_cert_store(store.build());
                builder.set_verify(SslVerifyMode::PEER);
            }
            Some(RootCert::System) => builder.set_verify(SslVerifyMode::PEER),
            None => builder.set_verify(SslVerifyMode::NONE),
        }
        let mut connector = postgres_openssl::MakeTlsConnector::new(builder.build());
        let check_name = mode == SslMode::VerifyFull;
        connector.set_callback(move |config, _domain| {
            if !check_name {
                config.set_verify_hostname(false);
            }
            Ok(())
        });
        Ok(Self { mode, root, connector: Some(connector) })
    }

    fn tokio_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// libpq's default root certificate, `~/.postgresql/root.crt`, when it exists.
fn default_root_cert() -> Option<RootCert> {
    let home = std::env::var_os("HOME")?;
    let path = PathBuf::from(home).join(".postgresql").join("root.crt");
    path.is_file().then_some(RootCert::File(path))
}

/// Connection-string keywords gbo reads itself (tokio-postgres knows only some of their values).
const OWN_KEYWORDS: [&str; 2] = ["sslmode", "sslrootcert"];

/// Split gbo's own keywords out of a connection string (URL or `key=value`), returning the rest for tokio-postgres.
fn split_own_keywords(s: &str) -> Result<(String, BTreeMap<String, String>), MigrateError> {
    let mut own = BTreeMap::new();
    if s.starts_with("postgresql://") || s.starts_with("postgres://") {
        let Some((base, query)) = s.split_once('?') else {
            return Ok((s.to_string(), own));
        };
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part).decode_utf8().map(|c| c.into_owned()).map_err(|_| {
                MigrateError::ConnectionString("a URL parameter is not valid percent-encoded UTF-8".into())
            })
        };
        let mut kept = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').ok_or_else(|| {
                MigrateError::ConnectionString(format!("URL parameter `{}` has no value", param.escape_debug()))
            })?;
            let key = decode(key)?;
            if OWN_KEYWORDS.contains(&key.as_str()) {
                own.insert(key, decode(value)?);
            } else {
                kept.push(param);
            }
        }
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        return Ok((rest, own));
    }
    let mut rest = String::new();
    for (key, value) in keyword_values(s)? {
        if OWN_KEYWORDS.contains(&key.as_str()) {
            own.insert(key, value);
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            rest.push_str(&format!("{key}='{quoted}' "));
        }
    }
    Ok((rest.trim_end().to_string(), own))
}

/// libpq's `key = value` form: whitespace around `=`, values bare or in single quotes, backslash escapes.
/// Messages name keys, never values (a value may be a password).
fn keyword_values(s: &str) -> Result<Vec<(String, String)>, MigrateError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    };
    loop {
        skip_space(&mut chars);
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        skip_space(&mut chars);
        if chars.next() != Some('=') {
            return Err(MigrateError::ConnectionString(format!("`{}` is missing `=` and a value", key.escape_debug())));
        }
        skip_space(&mut chars);
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => break,
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(MigrateError::ConnectionString(format!(
                            "the value of `{}` has no closing quote",
                            key.escape_debug()
                        )))
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// libpq's environment: what pg_dump must not pick up from gbo's own environment (gbo sets what it means).
const LIBPQ_ENVIRONMENT: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGDATABASE",
    "PGUSER",
    "PGPASSWORD",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGSSLNEGOTIATION",
    "PGSSLCOMPRESSION",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLCERTMODE",
    "PGSSLROOTCERT",
    "PGSSLCRL",
    "PGSSLCRLDIR",
    "PGSSLSNI",
    "PGREQUIREPEER",
    "PGSSLMINPROTOCOLVERSION",
    "PGSSLMAXPROTOCOLVERSION",
    "PGGSSENCMODE",
    "PGKRBSRVNAME",
    "PGGSSLIB",
    "PGGSSDELEGATION",
    "PGCONNECT_TIMEOUT",
    "PGTARGETSESSIONATTRS",
    "PGLOADBALANCEHOSTS",
    "PGCHANNELBINDING",
    "PGREQUIREAUTH",
];

/// A server the host connects to itself: a server on the host addressed the libpq way, or a container's server
/// reached through its published port.
#[derive(Clone)]
pub struct HostServer {
    config: Box<tokio_postgres::Config>,
    tls: Tls,
    /// How to name it in messages, when it is not a plain host server.
    label: Option<String>,
}

impl std::fmt::Debug for HostServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "HostServer({}, sslmode={})", self.describe(), self.tls.mode.as_str())
    }
}

impl HostServer {
    /// From a connection string (URL or `key=value`) when given, with libpq's `PGHOST`, `PGPORT`, `PGUSER`,
    /// `PGPASSWORD`, `PGSSLMODE` and `PGSSLROOTCERT` filling what it leaves out, and the local socket
    /// `/var/run/postgresql` port 5432 otherwise. `sslmode` (default `prefer`) and `sslrootcert` (default
    /// `~/.postgresql/root.crt` when it exists; `system` for the system's CAs) have libpq's meaning.
    pub fn from_libpq(connection: Option<&str>) -> Result<Self, MigrateError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (rest, own) = match connection {
            Some(s) => split_own_keywords(s)?,
            None => (String::new(), BTreeMap::new()),
        };
        let given = if rest.trim().is_empty() {
            tokio_postgres::Config::new()
        } else {
            // tokio-postgres names the key (never the value) in the error's cause.
            rest.parse::<tokio_postgres::Config>().map_err(|e| MigrateError::ConnectionString(db_message(&e)))?
        };
        let mut config = tokio_postgres::Config::new();
        if given.get_hosts().is_empty() {
            let host = env("PGHOST").unwrap_or_else(|| "/var/run/postgresql".into());
            for h in host.split(',') {
                config.host(h);
            }
        } else {
            for h in given.get_hosts() {
                match h {
                    tokio_postgres::config::Host::Tcp(h) => config.host(h),
                    tokio_postgres::config::Host::Unix(p) => config.host_path(p),
                };
            }
        }
        for addr in given.get_hostaddrs() {
            config.hostaddr(*addr);
        }
        if given.get_ports().is_empty() {
            let port = env("PGPORT").unwrap_or_else(|| "5432".into());
            let port: u16 = port
                .parse()
                .map_err(|_| MigrateError::ConnectionString(format!("PGPORT `{port}` is not a port number")))?;
            config.port(port);
        } else {
            for p in given.get_ports() {
                config.port(*p);
            }
        }
        match given.get_user().map(str::to_string).or_else(|| env("PGUSER")).or_else(|| env("USER")) {
            Some(user) => config.user(&user),
            None => config.user("postgres"),
        };
        if let Some(password) =
            given.get_password().map(<[u8]>::to_vec).or_else(|| env("PGPASSWORD").map(String::into_bytes))
        {
            config.password(password);
        }
        if let Some(db) = given.get_dbname() {
            config.dbname(db);
        }
        let mode = match own.get("sslmode").cloned().or_else(|| env("PGSSLMODE")) {
            Some(m) => SslMode::parse(&m)?,
            None => SslMode::Prefer,
        };
        let root = match own.get("sslrootcert").cloned().or_else(|| env("PGSSLROOTCERT")) {
            Some(r) if r == "system" => Some(RootCert::System),
            Some(r) => Some(RootCert::File(PathBuf::from(r))),
            None => default_root_cert(),
        };
        let tls = Tls::new(mode, root)?;
        config.ssl_mode(tls.tokio_mode());
        config.application_name("gbo-migrate");
        config.connect_timeout(Duration::from_secs(10));
        Ok(Self { config: Box::new(config), tls, label: None })
    }

    /// A container's server through the port it publishes on the host, as `user` with `password`; no TLS (the
    /// tables role serves none; nothing the server says is trusted either way).
    fn published(address: &str, port: u16, user: &str, password: &[u8], label: String) -> Self {
        let mut config = tokio_postgres::Config::new();
        config.host(address);
        config.port(port);
        config.user(user);
        config.password(password);
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        config.application_name("gbo-migrate");
        config.connect_timeout(Duration::from_secs(10));
        Self { config: Box::new(config), tls: Tls::disabled(), label: Some(label) }
    }

    /// The same server, logging in as another role.
    fn as_login(&self, user: &str, password: &[u8]) -> Self {
        let mut other = self.clone();
        other.label = Some(format!("{} (restoring as {user})", self.side()));
        other.config.user(user);
        other.config.password(password);
        other
    }

    /// The database named in the connection string, if any.
    pub fn database(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// The `sslmode` in force.
    pub fn ssl_mode(&self) -> SslMode {
        self.tls.mode
    }

    /// `user@host:port`, without the password.
    pub fn describe(&self) -> String {
        if let Some(label) = &self.label {
            return label.clone();
        }
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "?".into(),
        };
        format!(
            "{}@{}:{}",
            self.config.get_user().unwrap_or("?"),
            host,
            self.config.get_ports().first().copied().unwrap_or(5432)
        )
    }

    fn side(&self) -> String {
        match &self.label {
            Some(label) => label.clone(),
            None => format!("host {}", self.describe()),
        }
    }

    async fn connect(&self, database: &str) -> Result<tokio_postgres::Client, MigrateError> {
        let mut config = (*self.config).clone();
        config.dbname(database);
        let connected = match &self.tls.connector {
            None => config.connect(tokio_postgres::NoTls).await.map(|(client, connection)| {
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "PostgreSQL connection ended");
                    }
                });
                client
            }),
            Some(tls) => config.connect(tls.clone()).await.map(|(client, connection)| {
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "PostgreSQL connection ended");
                    }
                });
                client
            }),
        };
        connected.map_err(|e| {
            let message = db_message(&e);
            if message.contains("does not exist") && message.contains("database") {
                MigrateError::NoSuchDatabase { database: database.to_string(), side: self.side() }
            } else {
                MigrateError::Unreachable { target: self.describe(), message }
            }
        })
    }

    /// Rows of a query (simple protocol), every value as text (NULL as empty).
    async fn rows(&self, database: &str, sql: &str) -> Result<Vec<Vec<String>>, MigrateError> {
        let client = self.connect(database).await?;
        host_rows(&client, sql, &self.side()).await
    }

    /// A `pg_dump` command for this server: none of gbo's own libpq environment, the settings it means set
    /// explicitly, the password through a 0600 PGPASSFILE (never argv or environment).
    fn pg_dump(&self, database: &str, passfile: &Option<tempfile_lite::PassFile>) -> HostCommand {
        let mut cmd = HostCommand::new(newest_pg_tool("pg_dump"))
            .install_hint("install it with `apt-get install postgresql-client`");
        for var in LIBPQ_ENVIRONMENT {
            cmd = cmd.env_remove(*var);
        }
        if let Some(host) = self.config.get_hosts().first() {
            let h = match host {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            };
            cmd = cmd.arg("--host").arg(h);
        }
        if let Some(addr) = self.config.get_hostaddrs().first() {
            cmd = cmd.env("PGHOSTADDR", addr.to_string());
        }
        if let Some(port) = self.config.get_ports().first() {
            cmd = cmd.arg("--port").arg(port.to_string());
        }
        if let Some(user) = self.config.get_user() {
            cmd = cmd.arg("--username").arg(user);
        }
        cmd = cmd.env("PGSSLMODE", self.tls.mode.as_str()).env("PGGSSENCMODE", "disable");
        match &self.tls.root {
            Some(RootCert::File(path)) => cmd = cmd.env("PGSSLROOTCERT", path.display().to_string()),
            Some(RootCert::System) => cmd = cmd.env("PGSSLROOTCERT", "system"),
            None => {}
        }
        cmd = cmd.arg("--no-password").arg("--dbname").arg(database);
        if let Some(pass) = passfile {
            cmd = cmd.env("PGPASSFILE", pass.path.display().to_string());
        }
        cmd
    }

    fn passfile(&self) -> Result<Option<tempfile_lite::PassFile>, MigrateError> {
        match self.config.get_password() {
            Some(p) => Ok(Some(tempfile_lite::PassFile::new(p)?)),
            None => Ok(None),
        }
    }

    /// One section of a dump taken with the host's own `pg_dump`; `owners` false leaves out ownership (the restoring
    /// role owns what it creates) and keeps the grants.
    async fn dump_section(&self, database: &str, section: &str, owners: bool) -> Result<String, MigrateError> {
        let passfile = self.passfile()?;
        // A section without --schema-only: pre-data is the schema and its grants, post-data includes the refresh of
        // materialized views; table data is the `data` section, which travels as COPY streams instead.
        let mut cmd = self.pg_dump(database, &passfile).arg(format!("--section={section}"));
        if !owners {
            cmd = cmd.arg("--no-owner");
        }
        let out = cmd.run_async().await?;
        drop(passfile);
        Ok(out)
    }
}

/// A tiny 0600 password file for libpq tools, removed on drop.
mod tempfile_lite {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::PathBuf;

    pub struct PassFile {
        pub path: PathBuf,
    }

    impl PassFile {
        pub fn new(password: &[u8]) -> std::io::Result<Self> {
            let dir = std::env::temp_dir();
            let path = dir.join(format!("gbo-pgpass-{}-{}", std::process::id(), rand::random::<u64>()));
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
            // hostname:port:database:username:password, escaping `:` and `\`.
            let escaped: Vec<u8> = password
                .iter()
                .flat_map(|b| if *b == b':' || *b == b'\\' { vec![b'\\', *b] } else { vec![*b] })
                .collect();
            file.write_all(b"*:*:*:*:")?;
            file.write_all(&escaped)?;
            file.write_all(b"\n")?;
            Ok(Self { path })
        }
    }

    impl Drop for PassFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The newest installed PostgreSQL client tool (`/usr/lib/postgresql/<v>/bin/<tool>`), else `<tool>` on PATH: a
/// dump must be taken with a client at least as new as the server.
pub fn newest_pg_tool(tool: &str) -> String {
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            if let Ok(v) = entry.file_name().to_string_lossy().parse::<u32>() {
                let path = entry.path().join("bin").join(tool);
                if path.exists() && best.as_ref().is_none_or(|(b, _)| v > *b) {
                    best = Some((v, path));
                }
            }
        }
    }
    best.map(|(_, p)| p.display().to_string()).unwrap_or_else(|| tool.to_string())
}

/// A random password (32 bytes from the OS's CSPRNG, hex) and its SCRAM-SHA-256 verifier: the server is only ever
/// sent the verifier.
fn temporary_password() -> (String, String) {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let password = hex(&bytes);
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    (password, verifier)
}

/// A name for a temporary role: `<prefix>_<16 hex digits>`.
fn temporary_role(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// The container side: PostgreSQL inside the tenant's tables container. As a target it is reached through LXD exec
/// as `postgres` on the local socket; as a source, through the host port it publishes (see
/// [`ContainerServer::published`]), so that nothing the container prints is used on the host.
#[derive(Debug, Clone)]
pub struct ContainerServer {
    lxd: Client,
    instance: InstanceName,
    port: u16,
    published: Option<(String, u16)>,
}

impl ContainerServer {
    /// PostgreSQL in `instance`, on the local socket `/var/run/postgresql` and `port`.
    pub fn new(lxd: Client, instance: InstanceName, port: u16) -> Self {
        Self { lxd, instance, port, published: None }
    }

    /// The host address and port its PostgreSQL is published on (the tables role's proxy device); an unspecified
    /// address (`0.0.0.0`, `::`) is reached on loopback.
    pub fn published(mut self, address: &str, port: u16) -> Self {
        let address = match address.trim_matches(|c| c == '[' || c == ']') {
            "" | "0.0.0.0" => "127.0.0.1".to_string(),
            "::" => "::1".to_string(),
            other => other.to_string(),
        };
        self.published = Some((address, port));
        self
    }

    fn describe(&self) -> String {
        format!("container {}", self.instance)
    }

    fn psql_argv(&self, database: &str, extra: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> = [
            "runuser",
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "/var/run/postgresql",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(["-p".to_string(), self.port.to_string(), "-d".to_string(), database.to_string()]);
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    }

    /// Run SQL (from stdin, never argv) and return its unaligned, tab-separated rows.
    async fn query(&self, database: &str, sql: &str) -> Result<Vec<Vec<String>>, MigrateError> {
        let argv = self.psql_argv(database, &["-A", "-t", "-F", "\t", "-f", "-"]);
        let req = ExecRequest::new(argv).timeout(Duration::from_secs(3600)).stdin_bytes(sql.to_string());
        let out = self.lxd.exec_output(&self.instance, &req).await?;
        if !out.success() {
            let err = out.stderr_text();
            if err.contains("does not exist") && err.contains("database") {
                return Err(MigrateError::NoSuchDatabase { database: database.to_string(), side: self.describe() });
            }
            if err.contains("No such file") || err.contains("could not connect") || err.contains("connection to server")
            {
                return Err(MigrateError::Unreachable { target: self.describe(), message: err.trim().to_string() });
            }
            return Err(MigrateError::Sql { side: self.describe(), message: err.trim().to_string() });
        }
        Ok(out
            .stdout_text()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect())
    }

    async fn script(&self, database: &str, sql: &str) -> Result<(), MigrateError> {
        let argv = self.psql_argv(database, &["--single-transaction", "-f", "-"]);
        let req = ExecRequest::new(argv).timeout(Duration::from_secs(3600)).stdin_bytes(sql.to_string());
        let out = self.lxd.exec_output(&self.instance, &req).await?;
        if !out.success() {
            return Err(MigrateError::Sql { side: self.describe(), message: out.stderr_text().trim().to_string() });
        }
        Ok(())
    }
}

/// One end of a migration.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A server on the host.
    Host(HostServer),
    /// The tables container.
    Container(ContainerServer),
}

impl Endpoint {
    fn describe(&self) -> String {
        match self {
            Endpoint::Host(h) => h.side(),
            Endpoint::Container(c) => c.describe(),
        }
    }

    /// Rows of a query, every value as text (NULL as empty).
    pub async fn query(&self, database: &str, sql: &str) -> Result<Vec<Vec<String>>, MigrateError> {
        match self {
            Endpoint::Host(h) => h.rows(database, sql).await,
            Endpoint::Container(c) => c.query(database, sql).await,
        }
    }

    async fn major(&self) -> Result<u32, MigrateError> {
        let rows = self.query("postgres", "SHOW server_version_num;").await?;
        let num: u32 = single(&rows).and_then(|v| v.trim().parse().ok()).ok_or_else(|| MigrateError::Unreadable {
            side: self.describe(),
            what: "SHOW server_version_num".into(),
            answer: shorten(&rows),
        })?;
        Ok(num / 10000)
    }
}

/// The only value of a one-row, one-column answer.
fn single(rows: &[Vec<String>]) -> Option<&str> {
    match rows {
        [row] => match row.as_slice() {
            [value] => Some(value.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// An answer, shortened for a message.
fn shorten(rows: &[Vec<String>]) -> String {
    let text = rows.iter().map(|r| r.join("\t")).collect::<Vec<_>>().join("\n");
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push_str("...");
    }
    out.escape_debug().to_string()
}

/// A non-negative count.
fn count(side: &str, what: &str, value: Option<&str>, rows: &[Vec<String>]) -> Result<u64, MigrateError> {
    value.and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| MigrateError::Unreadable {
        side: side.to_string(),
        what: what.to_string(),
        answer: shorten(rows),
    })
}

async fn host_rows(client: &tokio_postgres::Client, sql: &str, side: &str) -> Result<Vec<Vec<String>>, MigrateError> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| MigrateError::Sql { side: side.to_string(), message: db_message(&e) })?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|i| row.get(i).unwrap_or("").to_string()).collect())
            }
            _ => None,
        })
        .collect())
}

fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                source = inner.source();
            }
            s
        }
    }
}

/// pg_dump 15.14+ frames its output with `\restrict KEY` / `\unrestrict KEY`: psql meta-commands that only psql
/// understands. Schema sections hold no other backslash lines.
fn without_meta_commands(sql: &str) -> String {
    sql.lines()
        .filter(|l| !(l.starts_with("\\restrict ") || l.starts_with("\\unrestrict ")))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Where the restore's statements run on the target, and the role they run as. On the host: connections logged in
/// as a role that is not a superuser (a temporary login, or the operator's own non-superuser), which first become
/// the owner role; in the container: `psql` as `postgres`, which first becomes the owner role (the source is the
/// host, which gbo trusts).
#[derive(Debug, Clone)]
enum Restore {
    Container { server: ContainerServer, role: Option<String> },
    Host { server: HostServer, role: Option<String> },
}

impl Restore {
    fn describe(&self) -> String {
        match self {
            Restore::Container { server, .. } => server.describe(),
            Restore::Host { server, .. } => server.side(),
        }
    }

    fn prelude(&self) -> String {
        let role = match self {
            Restore::Container { role, .. } | Restore::Host { role, .. } => role,
        };
        role.as_deref().map(|r| format!("SET ROLE {};\n", quote_ident(r))).unwrap_or_default()
    }

    /// Run a script in one transaction.
    async fn script(&self, database: &str, sql: &str) -> Result<(), MigrateError> {
        let prelude = self.prelude();
        match self {
            Restore::Container { server, .. } => server.script(database, &format!("{prelude}{sql}")).await,
            Restore::Host { server, .. } => {
                let client = server.connect(database).await?;
                let wrapped = format!("BEGIN;\n{prelude}{}\nCOMMIT;\n", without_meta_commands(sql));
                client
                    .batch_execute(&wrapped)
                    .await
                    .map_err(|e| MigrateError::Sql { side: self.describe(), message: db_message(&e) })
            }
        }
    }

    /// Rows of a query run as the restoring role.
    async fn query(&self, database: &str, sql: &str) -> Result<Vec<Vec<String>>, MigrateError> {
        let sql = format!("{}{sql}", self.prelude());
        match self {
            Restore::Container { server, .. } => server.query(database, &sql).await,
            Restore::Host { server, .. } => server.rows(database, &sql).await,
        }
    }
}

/// A temporary superuser login in a source container, for reading it through its published port; dropped at the end.
struct ContainerLogin {
    container: ContainerServer,
    role: String,
    server: HostServer,
}

impl ContainerLogin {
    async fn create(container: &ContainerServer) -> Result<Self, MigrateError> {
        let Some((address, port)) = container.published.clone() else {
            return Err(MigrateError::NoPublishedPort {
                container: container.instance.to_string(),
                port: container.port,
            });
        };
        let role = temporary_role("gbo_migrate");
        let (password, verifier) = temporary_password();
        // The container's own server: a superuser there gives nothing the container's root does not have already.
        container
            .query(
                "postgres",
                &format!("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {};", quote_ident(&role), quote_literal(&verifier)),
            )
            .await?;
        let label = format!("container {} (through {address}:{port})", container.instance);
        let server = HostServer::published(&address, port, &role, password.as_bytes(), label);
        let login = Self { container: container.clone(), role, server };
        if let Err(e) = login.server.connect("postgres").await {
            login.drop_role().await;
            return Err(e);
        }
        Ok(login)
    }

    async fn drop_role(&self) {
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {};\nDROP ROLE IF EXISTS {};",
            quote_literal(&self.role),
            quote_ident(&self.role)
        );
        if let Err(e) = self.container.query("postgres", &sql).await {
            tracing::warn!(role = %self.role, error = %e, "could not drop the temporary migration role in the container");
        }
    }
}

/// A temporary login on a host target that is not a superuser and may only become the owner role(s): the restore
/// runs through it, so SQL from the source runs with no more rights than those roles have.
struct RestoreLogin {
    admin: HostServer,
    role: String,
}

impl RestoreLogin {
    async fn create(admin: &HostServer) -> Result<(Self, HostServer), MigrateError> {
        let role = temporary_role("gbo_restore");
        let (password, verifier) = temporary_password();
        admin
            .rows(
                "postgres",
                &format!(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD {};",
                    quote_ident(&role),
                    quote_literal(&verifier)
                ),
            )
            .await?;
        let login = Self { admin: admin.clone(), role: role.clone() };
        let server = admin.as_login(&role, password.as_bytes());
        if let Err(e) = server.connect("postgres").await {
            login.finish(None, None).await;
            let message = match e {
                MigrateError::Unreachable { message, .. } => message,
                other => other.to_string(),
            };
            return Err(MigrateError::RestoreLogin { target: admin.describe(), role, message });
        }
        Ok((login, server))
    }

    /// Give what the login may own in `database` to `owner`, then drop it.
    async fn finish(&self, database: Option<&str>, owner: Option<&str>) -> Option<MigrateError> {
        let mut first = None;
        if let (Some(db), Some(owner)) = (database, owner) {
            let sql = format!(
                "REASSIGN OWNED BY {role} TO {owner}; DROP OWNED BY {role};",
                role = quote_ident(&self.role),
                owner = quote_ident(owner)
            );
            match self.admin.rows(db, &sql).await {
                Ok(_) | Err(MigrateError::NoSuchDatabase { .. }) => {}
                Err(e) => first = Some(e),
            }
        }
        let sql = format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {};\nDROP ROLE IF EXISTS {};",
            quote_literal(&self.role),
            quote_ident(&self.role)
        );
        if let Err(e) = self.admin.rows("postgres", &sql).await {
            tracing::warn!(role = %self.role, error = %e, "could not drop the temporary restore role");
            first.get_or_insert(e);
        }
        first
    }
}

/// Options of [`migrate`].
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Database name (the same on both sides).
    pub database: String,
    /// Concurrent per-table COPY streams (and verification queries).
    pub jobs: usize,
    /// Replace a target that holds data (after snapshotting it).
    pub replace: bool,
    /// Keep the source's owners (missing roles are created as plain `NOLOGIN` roles) instead of giving everything
    /// to the application role.
    pub keep_owners: bool,
    /// The tenant's application role: owner of everything by default, and the role the last check reads and writes
    /// every table as.
    pub app_role: String,
    /// Where a host target's backup goes before `--replace` drops it.
    pub backup_dir: PathBuf,
    /// Bytes copied so far, for progress display.
    pub progress: Arc<AtomicU64>,
    /// Also keep the migration as a plain SQL file here (`psql -f` restores it into an empty database), written only
    /// once verification passed; None streams with nothing on disk.
    pub keep_sql: Option<PathBuf>,
}

impl MigrateOptions {
    /// Defaults: `botserver`, 2 jobs, no replace, everything owned by `gbuser`.
    pub fn new(database: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            jobs: 2,
            replace: false,
            keep_owners: false,
            app_role: DEFAULT_APP_ROLE.to_string(),
            backup_dir: PathBuf::from("/var/backups/gbo"),
            progress: Arc::new(AtomicU64::new(0)),
            keep_sql: None,
        }
    }
}

/// A table's identity and verification data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableCheck {
    /// `schema.table`, quoted as SQL needs.
    pub table: String,
    /// Exact `count(*)`.
    pub rows: u64,
    /// Order-independent content checksum.
    pub checksum: String,
}

/// What a migration did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrateReport {
    /// Source description.
    pub source: String,
    /// Target description.
    pub target: String,
    /// Database.
    pub database: String,
    /// Who owns the migrated objects: the application role, or (with `keep_owners`) the source's owners.
    pub owner: String,
    /// The application role every table was read and written as.
    pub app_role: String,
    /// Roles the target lacked, created as plain `NOLOGIN` roles.
    pub created_roles: Vec<String>,
    /// Tables copied and verified.
    pub tables: Vec<TableCheck>,
    /// The large objects (their contents as one stream), verified, when the source has any.
    pub large_objects: Option<TableCheck>,
    /// Sequences and their values (`last_value is_called`), verified.
    pub sequences: BTreeMap<String, String>,
    /// Bytes of COPY data streamed.
    pub bytes: u64,
    /// Seconds taken.
    pub seconds: f64,
    /// The snapshot or backup taken of the target before replacing it.
    pub replaced_backup: Option<String>,
    /// The plain SQL file kept on disk (`--keep-sql`), when asked.
    pub kept_sql: Option<PathBuf>,
    /// Wall-clock seconds of each phase, in order (`prepare`, `schema`, `copy`, `post-data`, `verify`).
    pub phases: Vec<(String, f64)>,
}

/// Name of the large objects in reports.
const LARGE_OBJECTS: &str = "large objects";
/// The large objects and their contents, as one COPY source.
const LARGE_OBJECTS_SOURCE: &str =
    "(SELECT m.oid, pg_catalog.lo_get(m.oid) FROM pg_catalog.pg_largeobject_metadata m ORDER BY 1)";

/// One COPY stream of a migration: a table, or the large objects.
#[derive(Debug, Clone)]
struct Unit {
    /// `schema.table` quoted by the host, or [`LARGE_OBJECTS`].
    name: String,
    /// The table's raw schema and name; None for the large objects.
    ident: Option<(String, String)>,
    /// What `COPY ... TO STDOUT` reads.
    source: String,
}

impl Unit {
    /// Target statements: before the COPY, the COPY, after it (one transaction around them).
    fn target_statements(&self) -> (Vec<String>, String, Vec<String>) {
        match self.ident {
            Some(_) => (
                vec![format!("TRUNCATE ONLY {}", self.name)],
                format!("COPY {} FROM STDIN WITH (FREEZE)", self.name),
                vec![],
            ),
            None => (
                vec!["CREATE TEMP TABLE gbo_large_objects (id oid, data bytea) ON COMMIT DROP".into()],
                "COPY pg_temp.gbo_large_objects FROM STDIN".into(),
                vec!["SELECT pg_catalog.lo_put(id, 0, data) FROM pg_temp.gbo_large_objects".into()],
            ),
        }
    }
}

/// A sequence of the source and its value.
#[derive(Debug, Clone)]
struct Seq {
    ident: (String, String),
    quoted: String,
    last: i64,
    called: bool,
}

fn sql_error(side: &str) -> impl Fn(tokio_postgres::Error) -> MigrateError + '_ {
    move |e| MigrateError::Sql { side: side.to_string(), message: db_message(&e) }
}

/// Quote `schema.name` pairs with the host's own `quote_ident`, in order.
async fn quote_names(trusted: &HostServer, pairs: &[(String, String)]) -> Result<Vec<String>, MigrateError> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let client = trusted.connect("postgres").await?;
    let schemas: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
    let names: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
    let side = trusted.side();
    let rows = client
        .query(
            "SELECT pg_catalog.quote_ident(s) || '.' || pg_catalog.quote_ident(n) \
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(s, n, i) ORDER BY i",
            &[&schemas, &names],
        )
        .await
        .map_err(sql_error(&side))?;
    let quoted: Vec<String> =
        rows.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<_, _>>().map_err(sql_error(&side))?;
    if quoted.len() != pairs.len() {
        return Err(MigrateError::Unreadable {
            side,
            what: "quote_ident".into(),
            answer: format!("{} names for {}", quoted.len(), pairs.len()),
        });
    }
    Ok(quoted)
}

/// Raw (schema, name) pairs of a query's first two text columns, read through a host connection (typed: a value
/// that is not text is an error, whatever the server is).
async fn name_pairs(
    client: &tokio_postgres::Client,
    side: &str,
    sql: &str,
) -> Result<Vec<(String, String)>, MigrateError> {
    let rows = client.query(sql, &[]).await.map_err(sql_error(side))?;
    rows.iter()
        .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(sql_error(side))
}

/// The source's tables, largest first (plain tables and partitions: a partitioned parent holds no rows of its own
/// and `COPY` cannot read it, its partitions travel one by one), then its large objects when it has any.
async fn source_units(reader: &HostServer, trusted: &HostServer, database: &str) -> Result<Vec<Unit>, MigrateError> {
    let client = reader.connect(database).await?;
    let side = reader.side();
    let pairs = name_pairs(
        &client,
        &side,
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' \
         ORDER BY pg_catalog.pg_total_relation_size(c.oid) DESC, 1, 2",
    )
    .await?;
    let quoted = quote_names(trusted, &pairs).await?;
    let mut units: Vec<Unit> = pairs
        .into_iter()
        .zip(quoted)
        .map(|(ident, name)| Unit { source: name.clone(), name, ident: Some(ident) })
        .collect();
    let objects: i64 = client
        .query_one("SELECT count(*) FROM pg_catalog.pg_largeobject_metadata", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(sql_error(&side))?;
    if objects > 0 {
        units.push(Unit { name: LARGE_OBJECTS.into(), ident: None, source: LARGE_OBJECTS_SOURCE.into() });
    }
    Ok(units)
}

/// The source's sequences and their values (`last_value`, `is_called`), read as numbers.
async fn source_sequences(reader: &HostServer, trusted: &HostServer, database: &str) -> Result<Vec<Seq>, MigrateError> {
    let client = reader.connect(database).await?;
    let side = reader.side();
    let pairs = name_pairs(
        &client,
        &side,
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'S' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' ORDER BY 1, 2",
    )
    .await?;
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let quoted = quote_names(trusted, &pairs).await?;
    let sql = quoted
        .iter()
        .enumerate()
        .map(|(i, q)| format!("SELECT {i}::int4, last_value, is_called FROM {q}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows = client.query(sql.as_str(), &[]).await.map_err(sql_error(&side))?;
    let mut values: BTreeMap<usize, (i64, bool)> = BTreeMap::new();
    for row in &rows {
        let i: i32 = row.try_get(0).map_err(sql_error(&side))?;
        let last: i64 = row.try_get(1).map_err(sql_error(&side))?;
        let called: bool = row.try_get(2).map_err(sql_error(&side))?;
        let index = usize::try_from(i).ok().filter(|i| *i < quoted.len()).ok_or_else(|| MigrateError::Unreadable {
            side: side.clone(),
            what: "sequence values".into(),
            answer: format!("index {i}"),
        })?;
        values.insert(index, (last, called));
    }
    if values.len() != quoted.len() {
        return Err(MigrateError::Unreadable {
            side,
            what: "sequence values".into(),
            answer: format!("{} values for {} sequences", values.len(), quoted.len()),
        });
    }
    Ok(pairs
        .into_iter()
        .zip(quoted)
        .zip(values.into_values())
        .map(|((ident, quoted), (last, called))| Seq { ident, quoted, last, called })
        .collect())
}

/// Decode the hex of `encode(convert_to(x, 'UTF8'), 'hex')`.
fn unhex(side: &str, value: &str) -> Result<String, MigrateError> {
    let bad = || MigrateError::Unreadable {
        side: side.to_string(),
        what: "a name".into(),
        answer: value.escape_debug().to_string(),
    };
    let bytes = hex::decode(value.trim()).map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}

/// The raw (schema, name) pairs of relations of `kind` on a side; names travel hex-encoded, so no name can break the
/// answer's rows.
async fn relations(side: &Endpoint, database: &str, kind: char) -> Result<BTreeSet<(String, String)>, MigrateError> {
    let sql = format!(
        "SELECT encode(convert_to(n.nspname::text, 'UTF8'), 'hex'), encode(convert_to(c.relname::text, 'UTF8'), 'hex') \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = '{kind}' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema';"
    );
    let name = side.describe();
    side.query(database, &sql)
        .await?
        .iter()
        .map(|r| match r.as_slice() {
            [s, n] => Ok((unhex(&name, s)?, unhex(&name, n)?)),
            _ => Err(MigrateError::Unreadable {
                side: name.clone(),
                what: "the list of relations".into(),
                answer: shorten(std::slice::from_ref(r)),
            }),
        })
        .collect()
}

/// Values (`last_value`, `is_called`) of the sequences of `wanted` that exist on a side, by index in `wanted`.
async fn sequence_values(
    side: &Endpoint,
    database: &str,
    wanted: &[Seq],
) -> Result<BTreeMap<usize, (i64, bool)>, MigrateError> {
    let present = relations(side, database, 'S').await?;
    let parts: Vec<String> = wanted
        .iter()
        .enumerate()
        .filter(|(_, s)| present.contains(&s.ident))
        .map(|(i, s)| format!("SELECT {i}, last_value, is_called FROM {}", s.quoted))
        .collect();
    if parts.is_empty() {
        return Ok(BTreeMap::new());
    }
    let name = side.describe();
    let rows = side.query(database, &format!("{};", parts.join(" UNION ALL "))).await?;
    let mut out = BTreeMap::new();
    for row in &rows {
        let parsed = match row.as_slice() {
            [i, last, called] => match (i.parse::<usize>(), last.parse::<i64>(), called.as_str()) {
                (Ok(i), Ok(last), "t") if i < wanted.len() => Some((i, (last, true))),
                (Ok(i), Ok(last), "f") if i < wanted.len() => Some((i, (last, false))),
                _ => None,
            },
            _ => None,
        };
        let (i, value) = parsed.ok_or_else(|| MigrateError::Unreadable {
            side: name.clone(),
            what: "sequence values".into(),
            answer: shorten(std::slice::from_ref(row)),
        })?;
        out.insert(i, value);
    }
    Ok(out)
}

/// Count and checksum one COPY source, order-independently: the sum of the first 60 bits of each row's md5 as a
/// numeric, so it needs no sort. The slow path, used only when the fast comparison of COPY streams disagrees.
pub async fn check_table(side: &Endpoint, database: &str, table: &str) -> Result<TableCheck, MigrateError> {
    let sql = format!(
        "{STREAM_SESSION} SELECT count(*), coalesce(sum(('x' || substr(h, 1, 15))::bit(60)::bigint::numeric), 0) || ':' || coalesce(sum(('x' || substr(h, 16, 15))::bit(60)::bigint::numeric), 0) FROM (SELECT md5(t::text) AS h FROM {table} AS t) AS rows;"
    );
    let rows = side.query(database, &sql).await?;
    match rows.as_slice() {
        [row] => match row.as_slice() {
            [n, checksum] => Ok(TableCheck {
                table: table.to_string(),
                rows: count(&side.describe(), "a row count", Some(n), &rows)?,
                checksum: checksum.clone(),
            }),
            _ => Err(MigrateError::Unreadable {
                side: side.describe(),
                what: format!("the checksum of {table}"),
                answer: shorten(&rows),
            }),
        },
        _ => Err(MigrateError::Unreadable {
            side: side.describe(),
            what: format!("the checksum of {table}"),
            answer: shorten(&rows),
        }),
    }
}
/// A table's `COPY ... TO STDOUT` text stream, summarised: rows (one newline each: text format escapes newlines in
/// values) and the stream's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDigest {
    /// Rows in the stream.
    pub rows: u64,
    /// Hex SHA-256 of the stream.
    pub sha256: String,
}

/// Hashes and counts a COPY stream as it passes.
#[derive(Default)]
struct Digester {
    hasher: sha2::Sha256,
    rows: u64,
    /// A copy of the stream kept on disk (`--keep-sql`), written through the page cache, and its first error.
    tee: Option<std::io::BufWriter<std::fs::File>>,
    tee_error: Option<std::io::Error>,
}

impl Digester {
    fn teeing(file: Option<std::fs::File>) -> Self {
        Self { tee: file.map(|f| std::io::BufWriter::with_capacity(1 << 20, f)), ..Self::default() }
    }

    fn update(&mut self, data: &[u8]) {
        use sha2::Digest as _;
        use std::io::Write as _;
        self.hasher.update(data);
        self.rows += data.iter().filter(|b| **b == b'\n').count() as u64;
        if let (Some(tee), None) = (self.tee.as_mut(), self.tee_error.as_ref()) {
            if let Err(e) = tee.write_all(data) {
                self.tee_error = Some(e);
            }
        }
    }

    /// Flush the kept copy, if any, and report the first error writing it.
    fn close_tee(&mut self) -> std::io::Result<()> {
        use std::io::Write as _;
        if let Some(e) = self.tee_error.take() {
            return Err(e);
        }
        match self.tee.take() {
            Some(mut tee) => tee.flush(),
            None => Ok(()),
        }
    }

    fn finish(self) -> StreamDigest {
        use sha2::Digest as _;
        StreamDigest { rows: self.rows, sha256: hex(&self.hasher.finalize()) }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Session settings that make COPY's text output canonical on both sides, and a sequential scan that starts at the
/// table's first page (a synchronised scan may start in the middle when another scan of the table is running).
const STREAM_SESSION: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; SET synchronize_seqscans = off;";

/// Read a table back as its COPY stream and digest it, where the data lives: through the host connection, or inside
/// the container (`psql | sha256sum`, so the data does not cross LXD's websocket).
pub async fn digest_table(side: &Endpoint, database: &str, table: &str) -> Result<StreamDigest, MigrateError> {
    match side {
        Endpoint::Host(h) => {
            let client = h.connect(database).await?;
            client
                .batch_execute(STREAM_SESSION)
                .await
                .map_err(|e| MigrateError::Sql { side: side.describe(), message: db_message(&e) })?;
            let stream = client.copy_out(format!("COPY {table} TO STDOUT").as_str()).await.map_err(|e| {
                MigrateError::Sql { side: side.describe(), message: format!("{table}: {}", db_message(&e)) }
            })?;
            let mut stream = Box::pin(stream);
            let mut digest = Digester::default();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| MigrateError::Sql {
                    side: side.describe(),
                    message: format!("{table}: {}", db_message(&e)),
                })?;
                digest.update(&chunk);
            }
            Ok(digest.finish())
        }
        Endpoint::Container(c) => {
            // bash for pipefail and `wait` on a process substitution; the SQL (and the table's name) on stdin.
            let script = "set -o pipefail; exec 3>&1; \
                          runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p \"$0\" -d \"$1\" -f - \
                          | tee >(sha256sum >&3) | wc -l; rc=$?; wait $!; exit $rc";
            let argv = vec![
                "bash".to_string(),
                "-c".to_string(),
                script.to_string(),
                c.port.to_string(),
                database.to_string(),
            ];
            let sql = format!("{STREAM_SESSION}\nCOPY {table} TO STDOUT;\n");
            let out = c
                .lxd
                .exec_output(
                    &c.instance,
                    &ExecRequest::new(argv).timeout(Duration::from_secs(6 * 3600)).stdin_bytes(sql),
                )
                .await?;
            if !out.success() {
                return Err(MigrateError::Sql {
                    side: side.describe(),
                    message: format!("{table}: {}", out.stderr_text().trim()),
                });
            }
            let text = out.stdout_text();
            let mut rows = None;
            let mut sha = None;
            for line in text.lines() {
                let word = line.split_whitespace().next().unwrap_or("");
                if word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()) {
                    sha = Some(word.to_string());
                } else if let Ok(n) = word.parse::<u64>() {
                    rows = Some(n);
                }
            }
            match (rows, sha) {
                (Some(rows), Some(sha256)) => Ok(StreamDigest { rows, sha256 }),
                _ => Err(MigrateError::Sql {
                    side: side.describe(),
                    message: format!("{table}: unexpected digest output `{}`", text.trim()),
                }),
            }
        }
    }
}

/// Compare one unit. Fast path: the row count and SHA-256 of both COPY streams (the source's may be known already,
/// digested while it was copied). Only when the streams differ, the order-independent checksum decides, so a
/// different row order or text rendering is not mistaken for different content.
async fn compare_table(
    source: &Endpoint,
    target: &Endpoint,
    database: &str,
    unit: &Unit,
    known: Option<StreamDigest>,
) -> Result<(TableCheck, Option<Difference>), MigrateError> {
    let (s, t) = match known {
        Some(s) => (s, digest_table(target, database, &unit.source).await?),
        None => {
            let (s, t) = tokio::join!(
                digest_table(source, database, &unit.source),
                digest_table(target, database, &unit.source)
            );
            (s?, t?)
        }
    };
    if s == t {
        return Ok((
            TableCheck { table: unit.name.clone(), rows: s.rows, checksum: format!("sha256:{}", s.sha256) },
            None,
        ));
    }
    let (a, b) = tokio::join!(check_table(source, database, &unit.source), check_table(target, database, &unit.source));
    let (mut a, b) = (a?, b?);
    a.table = unit.name.clone();
    let difference = if a.rows != b.rows {
        Some(Difference { object: unit.name.clone(), what: format!("rows {} on source, {} on target", a.rows, b.rows) })
    } else if a.checksum != b.checksum {
        Some(Difference { object: unit.name.clone(), what: "same row count, different content checksum".into() })
    } else {
        None
    };
    Ok((a, difference))
}
/// Counts and digests the bytes passing through.
struct Digesting<R> {
    inner: R,
    counter: Arc<AtomicU64>,
    digest: Digester,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Digesting<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let added = &buf.filled()[before..];
        self.counter.fetch_add(added.len() as u64, Ordering::Relaxed);
        self.digest.update(added);
        poll
    }
}

/// Copy one unit; returns the digest of the source's COPY stream, taken as it passed.
///
/// The source is always read through a connection the host makes itself (a host server, or a container through
/// its published port): only the COPY data crosses to the target. A table is loaded after `TRUNCATE ONLY` with
/// `COPY ... WITH (FREEZE)` in one transaction: the rows are written frozen, so reading them back for verification
/// does not rewrite every page to set hint bits. Large objects land in a temporary table and are written into the
/// objects the schema created.
async fn copy_unit(
    reader: &HostServer,
    restore: &Restore,
    db: &str,
    unit: &Unit,
    progress: Arc<AtomicU64>,
    tee: Option<std::fs::File>,
) -> Result<StreamDigest, MigrateError> {
    let span = tracing::info_span!("copy", unit = %unit.name);
    let _e = span.enter();
    let source_side = reader.side();
    let client = reader.connect(db).await?;
    client.batch_execute(STREAM_SESSION).await.map_err(sql_error(&source_side))?;
    let stream = client.copy_out(format!("COPY {} TO STDOUT", unit.source).as_str()).await.map_err(|e| {
        MigrateError::Sql { side: source_side.clone(), message: format!("{}: {}", unit.name, db_message(&e)) }
    })?;
    let reader_stream = tokio_util::io::StreamReader::new(stream.map_err(std::io::Error::other));
    let mut reader = Digesting { inner: Box::pin(reader_stream), counter: progress, digest: Digester::teeing(tee) };
    let (before, copy_in, after) = unit.target_statements();
    let target_side = restore.describe();
    let failed =
        |message: String| MigrateError::Sql { side: target_side.clone(), message: format!("{}: {message}", unit.name) };
    match restore {
        Restore::Container { server: c, role } => {
            let mut statements: Vec<String> = Vec::new();
            if let Some(role) = role {
                statements.push(format!("SET ROLE {}", quote_ident(role)));
            }
            statements.push("BEGIN".into());
            statements.extend(before);
            statements.push(copy_in);
            statements.extend(after);
            statements.push("COMMIT".into());
            let mut args: Vec<&str> = Vec::new();
            for s in &statements {
                args.push("-c");
                args.push(s);
            }
            let argv = c.psql_argv(db, &args);
            let mut stderr = Vec::new();
            let code = c
                .lxd
                .exec(&c.instance, &ExecRequest::new(argv).timeout(Duration::from_secs(6 * 3600)).stdin_piped())
                .await?
                .relay(Some(&mut reader), tokio::io::sink(), &mut stderr)
                .await?;
            if code != 0 {
                return Err(failed(String::from_utf8_lossy(&stderr).trim().to_string()));
            }
        }
        Restore::Host { server, .. } => {
            let target = server.connect(db).await?;
            let mut start = restore.prelude();
            start.push_str("BEGIN;\n");
            for s in &before {
                start.push_str(s);
                start.push_str(";\n");
            }
            target.batch_execute(&start).await.map_err(|e| failed(db_message(&e)))?;
            let sink = target.copy_in::<_, bytes::Bytes>(copy_in.as_str()).await.map_err(|e| failed(db_message(&e)))?;
            let mut sink = Box::pin(sink);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = reader.read(&mut buf).await.map_err(|e| MigrateError::Sql {
                    side: source_side.clone(),
                    message: format!("{}: {e}", unit.name),
                })?;
                if n == 0 {
                    break;
                }
                sink.send(bytes::Bytes::copy_from_slice(&buf[..n])).await.map_err(|e| failed(db_message(&e)))?;
            }
            sink.as_mut().finish().await.map_err(|e| failed(db_message(&e)))?;
            let mut end = String::new();
            for s in &after {
                end.push_str(s);
                end.push_str(";\n");
            }
            end.push_str("COMMIT;");
            target.batch_execute(&end).await.map_err(|e| failed(db_message(&e)))?;
        }
    }
    reader.digest.close_tee()?;
    Ok(reader.digest.finish())
}

/// Compare every table, the large objects and every sequence on both sides; returns the table checks, the large
/// objects' check and the differences. `checked` holds what was compared while copying; the rest is compared here,
/// `jobs` at a time.
async fn verify(
    source: &Endpoint,
    target: &Endpoint,
    database: &str,
    jobs: usize,
    units: &[Unit],
    sequences: &[Seq],
    checked: Vec<(TableCheck, Option<Difference>)>,
) -> Result<(Vec<TableCheck>, Option<TableCheck>, Vec<Difference>), MigrateError> {
    let target_tables = relations(target, database, 'r').await?;
    let done: BTreeSet<String> = checked.iter().map(|(c, _)| c.table.clone()).collect();
    let mut differences = Vec::new();
    let mut present = Vec::new();
    for unit in units {
        match &unit.ident {
            Some(ident) if !target_tables.contains(ident) => {
                differences.push(Difference { object: unit.name.clone(), what: "missing on target".into() })
            }
            _ if !done.contains(&unit.name) => present.push(unit),
            _ => {}
        }
    }
    let compared: Vec<Result<(TableCheck, Option<Difference>), MigrateError>> =
        futures_util::stream::iter(present.iter().map(|u| compare_table(source, target, database, u, None)))
            .buffer_unordered(jobs.max(1))
            .collect()
            .await;
    let mut verified = Vec::new();
    let mut large_objects = None;
    for result in checked.into_iter().map(Ok).chain(compared) {
        let (check, difference) = result?;
        differences.extend(difference);
        if check.table == LARGE_OBJECTS {
            large_objects = Some(check);
        } else {
            verified.push(check);
        }
    }
    verified.sort_by(|a, b| a.table.cmp(&b.table));
    let values = sequence_values(target, database, sequences).await?;
    for (i, seq) in sequences.iter().enumerate() {
        match values.get(&i) {
            Some(v) if *v == (seq.last, seq.called) => {}
            Some((last, called)) => differences.push(Difference {
                object: seq.quoted.clone(),
                what: format!(
                    "sequence {} on source, {} on target",
                    seq_value(seq.last, seq.called),
                    seq_value(*last, *called)
                ),
            }),
            None => {
                differences.push(Difference { object: seq.quoted.clone(), what: "sequence missing on target".into() })
            }
        }
    }
    differences.sort_by(|a, b| a.object.cmp(&b.object));
    Ok((verified, large_objects, differences))
}

/// `last_value is_called`, as reports show a sequence.
fn seq_value(last: i64, called: bool) -> String {
    format!("{last} {}", if called { "t" } else { "f" })
}

/// Read and write every table as the application role, in one transaction that is rolled back: read a row, rewrite
/// one in place (`UPDATE ... SET c = c`), and an `INSERT` and a `DELETE` that touch no row (PostgreSQL checks a
/// statement's privileges before it runs); and take values of every sequence (privilege `USAGE`). Returns what the
/// role cannot do, by table or sequence.
async fn app_access(
    restore: &Restore,
    database: &str,
    app: &str,
    units: &[Unit],
    sequences: &[Seq],
) -> Result<Vec<Difference>, MigrateError> {
    let tables: Vec<&Unit> = units.iter().filter(|u| u.ident.is_some()).collect();
    let table_list = tables.iter().map(|u| quote_literal(&u.name)).collect::<Vec<_>>().join(", ");
    let sequence_list = sequences.iter().map(|s| quote_literal(&s.quoted)).collect::<Vec<_>>().join(", ");
    let body = format!(
        "DECLARE
  t text; i int := 0; cols text; first_col text;
BEGIN
  FOREACH t IN ARRAY ARRAY[{table_list}]::text[] LOOP
    BEGIN
      SELECT string_agg(pg_catalog.quote_ident(attname), ', ' ORDER BY attnum),
             (array_agg(pg_catalog.quote_ident(attname) ORDER BY attnum))[1]
        INTO cols, first_col
        FROM pg_catalog.pg_attribute
       WHERE attrelid = t::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
      EXECUTE 'SELECT 1 FROM ' || t || ' LIMIT 1';
      IF first_col IS NOT NULL THEN
        EXECUTE 'UPDATE ' || t || ' SET ' || first_col || ' = ' || first_col
             || ' WHERE ctid = (SELECT ctid FROM ' || t || ' LIMIT 1)';
        EXECUTE 'INSERT INTO ' || t || ' (' || cols || ') OVERRIDING SYSTEM VALUE SELECT ' || cols
             || ' FROM ' || t || ' WHERE false';
      END IF;
      EXECUTE 'DELETE FROM ' || t || ' WHERE false';
    EXCEPTION WHEN OTHERS THEN
      INSERT INTO pg_temp.gbo_app_check VALUES (i, SQLERRM);
    END;
    i := i + 1;
  END LOOP;
  FOREACH t IN ARRAY ARRAY[{sequence_list}]::text[] LOOP
    BEGIN
      IF NOT pg_catalog.has_sequence_privilege(t, 'USAGE') THEN
        INSERT INTO pg_temp.gbo_app_check VALUES (i, 'no USAGE privilege: nextval() is refused');
      END IF;
    EXCEPTION WHEN OTHERS THEN
      INSERT INTO pg_temp.gbo_app_check VALUES (i, SQLERRM);
    END;
    i := i + 1;
  END LOOP;
END"
    );
    let sql = format!(
        "BEGIN;
SET LOCAL ROLE {role};
CREATE TEMP TABLE gbo_app_check (n int, problem text);
DO {body};
SELECT n, translate(problem, E'\\t\\n\\r', '   ') FROM pg_temp.gbo_app_check ORDER BY n;
ROLLBACK;
",
        role = quote_ident(app),
        body = quote_literal(&body)
    );
    let side = restore.describe();
    let rows = restore.query(database, &sql).await?;
    let names: Vec<&str> =
        tables.iter().map(|u| u.name.as_str()).chain(sequences.iter().map(|s| s.quoted.as_str())).collect();
    rows.iter()
        .map(|row| match row.as_slice() {
            [n, problem] => match n.parse::<usize>().ok().and_then(|n| names.get(n)) {
                Some(name) => Ok(Difference { object: name.to_string(), what: problem.clone() }),
                None => Err(MigrateError::Unreadable {
                    side: side.clone(),
                    what: "the application role check".into(),
                    answer: shorten(std::slice::from_ref(row)),
                }),
            },
            _ => Err(MigrateError::Unreadable {
                side: side.clone(),
                what: "the application role check".into(),
                answer: shorten(std::slice::from_ref(row)),
            }),
        })
        .collect()
}

/// A catalog condition: the object (`oid` of class `class`) is not a member of an extension.
fn not_extension_member(class: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.{class}'::regclass AND d.objid = {oid} AND d.deptype = 'e')"
    )
}

/// Objects in the target database that the application role does not own (schemas other than `public`, relations,
/// functions, types, large objects; extension members aside). Names travel hex-encoded.
async fn foreign_owned(target: &Endpoint, database: &str, app: &str) -> Result<Vec<Difference>, MigrateError> {
    let system = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";
    let sql = format!(
        "SELECT kind, encode(convert_to(name, 'UTF8'), 'hex'), encode(convert_to(owner, 'UTF8'), 'hex') FROM (
  SELECT 'schema' AS kind, pg_catalog.quote_ident(n.nspname) AS name, pg_catalog.pg_get_userbyid(n.nspowner)::text AS owner
    FROM pg_catalog.pg_namespace n WHERE {system} AND n.nspname <> 'public' AND {ns}
  UNION ALL SELECT 'relation', c.oid::regclass::text, pg_catalog.pg_get_userbyid(c.relowner)::text
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE {system} AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {rel}
  UNION ALL SELECT 'function', p.oid::regprocedure::text, pg_catalog.pg_get_userbyid(p.proowner)::text
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE {system} AND {proc}
  UNION ALL SELECT 'type', t.oid::regtype::text, pg_catalog.pg_get_userbyid(t.typowner)::text
    FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
   WHERE {system} AND t.typrelid = 0 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.typarray = t.oid) AND {typ}
  UNION ALL SELECT 'large object', m.oid::text, pg_catalog.pg_get_userbyid(m.lomowner)::text
    FROM pg_catalog.pg_largeobject_metadata m
) AS o WHERE owner <> {app} ORDER BY 1, 2;",
        ns = not_extension_member("pg_namespace", "n.oid"),
        rel = not_extension_member("pg_class", "c.oid"),
        proc = not_extension_member("pg_proc", "p.oid"),
        typ = not_extension_member("pg_type", "t.oid"),
        app = quote_literal(app),
    );
    let side = target.describe();
    target
        .query(database, &sql)
        .await?
        .iter()
        .map(|row| match row.as_slice() {
            [kind, name, owner] => Ok(Difference {
                object: format!("{kind} {}", unhex(&side, name)?),
                what: format!("owned by {}, not by {app}", unhex(&side, owner)?),
            }),
            _ => Err(MigrateError::Unreadable {
                side: side.clone(),
                what: "the owners".into(),
                answer: shorten(std::slice::from_ref(row)),
            }),
        })
        .collect()
}

/// What a target database holds (see [`Contents`]). The only query of a migration that reads `pg_depend` on the
/// target before anything changes.
pub async fn contents(side: &Endpoint, database: &str) -> Result<Contents, MigrateError> {
    let system = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";
    let sql = format!(
        "SELECT
 (SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE {system} AND {rel} AND (c.relkind IN ('r', 'p', 'v', 'm', 'f') OR (c.relkind = 'S' AND NOT EXISTS
     (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))))),
 (SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE {system} AND {proc}),
 (SELECT count(*) FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
   WHERE {system} AND {typ} AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.typarray = t.oid)
     AND (t.typrelid = 0 OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c'))),
 (SELECT count(*) FROM pg_catalog.pg_largeobject_metadata),
 (SELECT count(*) FROM pg_catalog.pg_namespace n WHERE {system} AND n.nspname <> 'public' AND {ns}),
 (SELECT count(*) FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql');",
        rel = not_extension_member("pg_class", "c.oid"),
        proc = not_extension_member("pg_proc", "p.oid"),
        typ = not_extension_member("pg_type", "t.oid"),
        ns = not_extension_member("pg_namespace", "n.oid"),
    );
    let rows = side.query(database, &sql).await?;
    let name = side.describe();
    let what = format!("what database `{database}` holds");
    let values = match rows.as_slice() {
        [row] if row.len() == 6 => {
            row.iter().map(|v| count(&name, &what, Some(v), &rows)).collect::<Result<Vec<u64>, _>>()?
        }
        _ => return Err(MigrateError::Unreadable { side: name, what, answer: shorten(&rows) }),
    };
    Ok(Contents {
        relations: values[0],
        functions: values[1],
        types: values[2],
        large_objects: values[3],
        schemas: values[4],
        extensions: values[5],
    })
}

async fn database_exists(side: &Endpoint, database: &str) -> Result<bool, MigrateError> {
    let rows = side
        .query(
            "postgres",
            &format!("SELECT count(*) FROM pg_catalog.pg_database WHERE datname = {};", quote_literal(database)),
        )
        .await?;
    match single(&rows) {
        Some("0") => Ok(false),
        Some("1") => Ok(true),
        _ => Err(MigrateError::Unreadable {
            side: side.describe(),
            what: format!("whether database `{database}` exists"),
            answer: shorten(&rows),
        }),
    }
}

/// Of `names`, the roles a side lacks, in order.
async fn missing_roles(side: &Endpoint, names: &[String]) -> Result<Vec<String>, MigrateError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let list = names.iter().map(|n| quote_literal(n)).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT i FROM unnest(ARRAY[{list}]::text[]) WITH ORDINALITY AS u(name, i) \
         WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = u.name) ORDER BY i;"
    );
    let rows = side.query("postgres", &sql).await?;
    rows.iter()
        .map(|row| {
            single(std::slice::from_ref(row))
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| names.get(i).cloned())
                .ok_or_else(|| MigrateError::Unreadable {
                    side: side.describe(),
                    what: "which roles exist".into(),
                    answer: shorten(std::slice::from_ref(row)),
                })
        })
        .collect()
}

/// Roles referenced in the source database by grants and policies (raw names).
const GRANTEES_SQL: &str = "SELECT DISTINCT r.rolname::text FROM pg_catalog.pg_shdepend d \
     JOIN pg_catalog.pg_roles r ON r.oid = d.refobjid \
     WHERE d.refclassid = 'pg_catalog.pg_authid'::regclass AND d.deptype IN ('a', 'r') \
     AND d.dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
     AND r.rolname !~ '^pg_' ORDER BY 1";

/// Roles that own something in the source database (raw names).
fn owners_sql() -> String {
    let system = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";
    format!(
        "SELECT DISTINCT pg_catalog.pg_get_userbyid(o)::text FROM (
  SELECT n.nspowner AS o FROM pg_catalog.pg_namespace n WHERE {system} AND n.nspname <> 'public' AND {ns}
  UNION SELECT c.relowner FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {system} AND {rel}
  UNION SELECT p.proowner FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE {system} AND {proc}
  UNION SELECT t.typowner FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE {system} AND {typ}
  UNION SELECT m.lomowner FROM pg_catalog.pg_largeobject_metadata m
  UNION SELECT a.defaclrole FROM pg_catalog.pg_default_acl a
  UNION SELECT datdba FROM pg_catalog.pg_database WHERE datname = current_database()
) AS owners WHERE pg_catalog.pg_get_userbyid(o) !~ '^pg_' ORDER BY 1",
        ns = not_extension_member("pg_namespace", "n.oid"),
        rel = not_extension_member("pg_class", "c.oid"),
        proc = not_extension_member("pg_proc", "p.oid"),
        typ = not_extension_member("pg_type", "t.oid"),
    )
}

/// Role names from a one-column query on the source, without gbo's own temporary roles.
async fn source_roles(reader: &HostServer, database: &str, sql: &str) -> Result<Vec<String>, MigrateError> {
    let client = reader.connect(database).await?;
    let side = reader.side();
    let rows = client.query(sql, &[]).await.map_err(sql_error(&side))?;
    let names: Vec<String> =
        rows.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<_, _>>().map_err(sql_error(&side))?;
    Ok(names.into_iter().filter(|n| !n.starts_with("gbo_migrate_") && !n.starts_with("gbo_restore_")).collect())
}

/// Which majors may migrate: the target must not be older.
pub fn check_versions(source_major: u32, target_major: u32) -> Result<(), MigrateError> {
    if target_major < source_major {
        Err(MigrateError::OlderTarget { source_major, target_major })
    } else {
        Ok(())
    }
}

/// `setval` statements that give each sequence its value, from numbers read as numbers.
fn setval_sql(sequences: &[Seq]) -> String {
    sequences
        .iter()
        .map(|s| format!("SELECT pg_catalog.setval({}, {}, {});\n", quote_literal(&s.quoted), s.last, s.called))
        .collect()
}

/// SQL string literal (the `E''` form when it holds a backslash, so it means the same whatever
/// `standard_conforming_strings` is).
pub fn quote_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// SQL identifier, always quoted.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Run a migration from `source` to `target`, one on the host and one in a container. `tables_container` and `lxd`
/// serve the safety snapshot of a container target before `--replace`.
pub async fn migrate(
    source: &Endpoint,
    target: &Endpoint,
    options: &MigrateOptions,
    tables_container: Option<&crate::inventory::ManagedInstance>,
    lxd: Option<&Client>,
) -> Result<MigrateReport, MigrateError> {
    validate_database(&options.database)?;
    if options.app_role.is_empty() || options.app_role.len() > MAX_NAME_BYTES || options.app_role.contains('\0') {
        return Err(MigrateError::Container(format!("invalid application role `{}`", options.app_role.escape_debug())));
    }
    let (reader, login) = match (source, target) {
        (Endpoint::Host(h), Endpoint::Container(_)) => (h.clone(), None),
        (Endpoint::Container(c), Endpoint::Host(_)) => {
            let login = ContainerLogin::create(c).await?;
            (login.server.clone(), Some(login))
        }
        _ => return Err(MigrateError::Container("a migration runs between the host and a container".into())),
    };
    let result = run(&reader, login.is_some(), target, options, tables_container, lxd).await;
    if let Some(login) = login {
        login.drop_role().await;
    }
    result
}

/// What the restore and its verification left for the end of the run.
struct Restored {
    report: MigrateReport,
    pre: String,
    post: String,
    units: Vec<Unit>,
    sequences: Vec<Seq>,
}

async fn run(
    reader: &HostServer,
    from_container: bool,
    target: &Endpoint,
    options: &MigrateOptions,
    tables_container: Option<&crate::inventory::ManagedInstance>,
    lxd: Option<&Client>,
) -> Result<MigrateReport, MigrateError> {
    let db = options.database.as_str();
    let app = options.app_role.as_str();
    let source = Endpoint::Host(reader.clone());
    // Identifiers are quoted by the host's own server: the source when it is on the host, else the target.
    let trusted = match target {
        Endpoint::Host(h) if from_container => h.clone(),
        _ => reader.clone(),
    };
    // Observe: both servers answer, versions fit, the source database exists, the target is empty or replaceable.
    let (source_major, target_major) = tokio::try_join!(source.major(), target.major())?;
    check_versions(source_major, target_major)?;
    if !database_exists(&source, db).await? {
        return Err(MigrateError::NoSuchDatabase { database: db.to_string(), side: source.describe() });
    }
    // Where a kept SQL file will go: checked before anything changes.
    let keep = options.keep_sql.as_deref().map(KeptSql::prepare).transpose()?;
    let target_exists = database_exists(target, db).await?;
    let mut replace = false;
    if target_exists {
        let held = contents(target, db).await?;
        if !held.is_empty() {
            if !options.replace {
                return Err(MigrateError::TargetNotEmpty {
                    database: db.to_string(),
                    side: target.describe(),
                    contents: held,
                });
            }
            replace = true;
        }
    }
    // Roles: grantees always (grants travel), owners with --keep-owners.
    let grantees = source_roles(reader, db, GRANTEES_SQL).await?;
    let owners = if options.keep_owners { source_roles(reader, db, &owners_sql()).await? } else { Vec::new() };
    let source_owner = {
        let client = reader.connect(db).await?;
        client
            .query_one(
                "SELECT pg_catalog.pg_get_userbyid(datdba)::text FROM pg_catalog.pg_database WHERE datname = current_database()",
                &[],
            )
            .await
            .and_then(|r| r.try_get::<_, String>(0))
            .map_err(sql_error(&reader.side()))?
    };
    if options.keep_owners && from_container {
        // A container's objects go only to roles this run creates, or to the application role.
        let missing: BTreeSet<String> = missing_roles(target, &owners).await?.into_iter().collect();
        let foreign: Vec<String> =
            owners.iter().filter(|o| !missing.contains(*o) && o.as_str() != app).cloned().collect();
        if !foreign.is_empty() {
            return Err(MigrateError::ForeignOwners {
                side: target.describe(),
                roles: foreign,
                app_role: app.to_string(),
            });
        }
    }
    let database_owner = if options.keep_owners { source_owner } else { app.to_string() };
    // The restore session, set up before anything changes: a login that cannot work changes nothing.
    let owner_role = (!options.keep_owners).then(|| app.to_string());
    let (restore, restore_login) = match target {
        Endpoint::Container(c) => (Restore::Container { server: c.clone(), role: owner_role }, None),
        Endpoint::Host(admin) => {
            let rows = admin
                .rows("postgres", "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user;")
                .await?;
            match single(&rows) {
                Some("t") => {
                    let (login, server) = RestoreLogin::create(admin).await?;
                    (Restore::Host { server, role: owner_role }, Some(login))
                }
                Some("f") => {
                    let me = admin.config.get_user().unwrap_or_default().to_string();
                    (Restore::Host { server: admin.clone(), role: owner_role.filter(|r| *r != me) }, None)
                }
                _ => {
                    return Err(MigrateError::Unreadable {
                        side: target.describe(),
                        what: "whether the connecting role is a superuser".into(),
                        answer: shorten(&rows),
                    })
                }
            }
        }
    };
    let restored = restore_and_verify(RestoreRun {
        reader,
        trusted: &trusted,
        source: &source,
        target,
        restore: &restore,
        restore_login: restore_login.as_ref(),
        options,
        target_exists,
        replace,
        grantees,
        owners,
        database_owner: &database_owner,
        tables_container,
        lxd,
        keep: keep.as_ref(),
    })
    .await;
    if let Some(login) = &restore_login {
        let error = login.finish(Some(db), Some(&database_owner)).await;
        if let (Some(e), Ok(_)) = (error, &restored) {
            return Err(e);
        }
    }
    let mut restored = restored?;
    if !options.keep_owners {
        // Everything belongs to the application role; anything that does not (created by a role the restore left)
        // is named.
        let problems = foreign_owned(target, db, app).await?;
        if !problems.is_empty() {
            return Err(MigrateError::AppRole { role: app.to_string(), side: target.describe(), problems });
        }
    }
    if let Some(k) = keep {
        restored.report.kept_sql =
            Some(k.assemble(&restored.pre, &restored.units, &restored.sequences, &restored.post)?);
    }
    Ok(restored.report)
}

/// Everything [`restore_and_verify`] needs.
struct RestoreRun<'a> {
    reader: &'a HostServer,
    trusted: &'a HostServer,
    source: &'a Endpoint,
    target: &'a Endpoint,
    restore: &'a Restore,
    restore_login: Option<&'a RestoreLogin>,
    options: &'a MigrateOptions,
    target_exists: bool,
    replace: bool,
    grantees: Vec<String>,
    owners: Vec<String>,
    database_owner: &'a str,
    tables_container: Option<&'a crate::inventory::ManagedInstance>,
    lxd: Option<&'a Client>,
    keep: Option<&'a KeptSql>,
}

async fn restore_and_verify(r: RestoreRun<'_>) -> Result<Restored, MigrateError> {
    let RestoreRun { reader, trusted, source, target, restore, options, .. } = r;
    let started = Instant::now();
    let mut phases: Vec<(String, f64)> = Vec::new();
    let mut mark = Instant::now();
    let mut phase = |name: &str, phases: &mut Vec<(String, f64)>| {
        phases.push((name.to_string(), mark.elapsed().as_secs_f64()));
        mark = Instant::now();
    };
    let db = options.database.as_str();
    let app = options.app_role.as_str();
    let replaced_backup =
        if r.replace { Some(backup_target(target, db, options, r.tables_container, r.lxd).await?) } else { None };
    if r.target_exists {
        target.query("postgres", &format!("DROP DATABASE {} WITH (FORCE);", quote_ident(db))).await?;
    }
    // Roles the target lacks (grantees; owners with --keep-owners; the application role), created without login,
    // password or superuser (a source superuser that owns objects becomes a plain owner role on the target).
    let mut wanted: Vec<String> = vec![app.to_string()];
    for role in r.grantees.iter().chain(&r.owners) {
        if !wanted.contains(role) {
            wanted.push(role.clone());
        }
    }
    let created = missing_roles(target, &wanted).await?;
    for role in &created {
        target.query("postgres", &format!("CREATE ROLE {} NOLOGIN;", quote_ident(role))).await?;
    }
    if let Some(login) = r.restore_login {
        // The temporary login may become the owner role(s), nothing else.
        let mut members = vec![app.to_string()];
        members.extend(r.owners.iter().filter(|o| o.as_str() != app).cloned());
        for role in members {
            target.query("postgres", &format!("GRANT {} TO {};", quote_ident(&role), quote_ident(&login.role))).await?;
        }
    }
    target
        .query("postgres", &format!("CREATE DATABASE {} OWNER {};", quote_ident(db), quote_ident(r.database_owner)))
        .await?;
    phase("prepare", &mut phases);

    // Schema without indexes and constraints, then the data, then the rest: loading before indexing is faster.
    let owners = options.keep_owners;
    let pre_text = reader.dump_section(db, "pre-data", owners).await?;
    let pre = if owners {
        pre_text
    } else {
        // Default privileges belong to the roles that set them; under the application role they cannot be set for
        // another role, and its objects are its own.
        let parsed = DumpSection::parse(&pre_text);
        parsed.frame(&parsed.body_without("DEFAULT ACL"))
    };
    restore.script(db, &pre).await?;
    phase("schema", &mut phases);
    let units = source_units(reader, trusted, db).await?;
    let post_text = reader.dump_section(db, "post-data", owners).await?;
    let post = DumpSection::parse(&post_text);
    let mut per_table = post.table_bodies();
    // One job per table, `--jobs` at once, largest first: copy (the source's stream digested in flight), verify
    // (the target's stream read back while the data is still in cache), then build that table's indexes and keys
    // and ANALYZE it, so index builds overlap the copy of the other tables.
    let work: Vec<(&Unit, Option<String>)> = units
        .iter()
        .map(|u| match u.ident {
            Some(_) => {
                let mut body = per_table.remove(u.name.as_str()).unwrap_or_default();
                body.push_str(&format!("ANALYZE {};\n", u.name));
                (u, Some(post.frame(&body)))
            }
            None => (u, None),
        })
        .collect();
    let jobs: Vec<Result<(TableCheck, Option<Difference>), MigrateError>> =
        futures_util::stream::iter(work.iter().enumerate().map(|(i, (unit, script))| {
            let progress = options.progress.clone();
            let keep = r.keep;
            async move {
                let tee = keep.map(|k| k.part(i)).transpose()?;
                let digest = copy_unit(reader, restore, db, unit, progress, tee).await?;
                // Reading the table back and building its indexes both only read it: they run side by side (the
                // script builds plain indexes first; a key's ALTER TABLE then waits for the read to end).
                let build = async {
                    match script {
                        Some(s) => restore.script(db, s).await,
                        None => Ok(()),
                    }
                };
                let (compared, built) = tokio::join!(compare_table(source, target, db, unit, Some(digest)), build);
                built?;
                compared
            }
        }))
        .buffer_unordered(options.jobs.max(1))
        .collect()
        .await;
    let checked = jobs.into_iter().collect::<Result<Vec<_>, _>>()?;
    phase("copy", &mut phases);
    let sequences = source_sequences(reader, trusted, db).await?;
    if !sequences.is_empty() {
        restore.script(db, &setval_sql(&sequences)).await?;
    }
    // Indexes of tables the listing did not return (none expected) and what depends on the keys (foreign keys,
    // triggers, index attachments, comments), in the dump's order.
    let mut rest: String = per_table.into_values().collect();
    rest.push_str(&post.rest_body());
    if !rest.trim().is_empty() {
        restore.script(db, &post.frame(&rest)).await?;
    }
    phase("post-data", &mut phases);

    // Verify before declaring success: the tables compared while copying, the rest, sequences; then the
    // application role reads and writes every table.
    let (checks, large_objects, differences) =
        verify(source, target, db, options.jobs, &units, &sequences, checked).await?;
    if !differences.is_empty() {
        return Err(MigrateError::Mismatch { differences });
    }
    let problems = app_access(restore, db, app, &units, &sequences).await?;
    phase("verify", &mut phases);
    if !problems.is_empty() {
        return Err(MigrateError::AppRole { role: app.to_string(), side: target.describe(), problems });
    }
    let report = MigrateReport {
        source: source.describe(),
        target: target.describe(),
        database: db.to_string(),
        owner: if owners { "the source's owners".into() } else { app.to_string() },
        app_role: app.to_string(),
        created_roles: created,
        tables: checks,
        large_objects,
        sequences: sequences.iter().map(|s| (s.quoted.clone(), seq_value(s.last, s.called))).collect(),
        bytes: options.progress.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        replaced_backup,
        phases,
        kept_sql: None,
    };
    Ok(Restored { report, pre, post: post_text, units, sequences })
}

/// A `--keep-sql` file in the making: each table's COPY stream is written to its own part (0600, in a 0700 directory
/// beside the file) as it passes; once verification passed the parts are assembled into a psql script (pre-data,
/// `COPY ... FROM stdin` blocks, sequence values, post-data) and renamed into place. Removed on failure.
struct KeptSql {
    path: PathBuf,
    parts: PathBuf,
}

impl KeptSql {
    fn prepare(path: &std::path::Path) -> Result<Self, MigrateError> {
        let bad = |reason: &str| MigrateError::KeepSql { path: path.display().to_string(), reason: reason.to_string() };
        if path.exists() {
            return Err(bad("the file exists; name a new file (it is never overwritten)"));
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(bad("its directory does not exist"));
        }
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| bad("it names no file"))?;
        let parts = parent.join(format!(".{name}.parts-{}", std::process::id()));
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&parts)
            .map_err(|e| bad(&format!("its directory is not writable ({e})")))?;
        Ok(Self { path: path.to_path_buf(), parts })
    }

    fn part(&self, index: usize) -> Result<std::fs::File, MigrateError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        Ok(std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.parts.join(format!("{index}.copy")))?)
    }

    fn assemble(self, pre: &str, units: &[Unit], sequences: &[Seq], post: &str) -> Result<PathBuf, MigrateError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let partial = self.parts.join("assembled.sql");
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&partial)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        writeln!(out, "-- Written by gbo migrate --keep-sql: restore into an empty database with `psql -v ON_ERROR_STOP=1 -f FILE`.")?;
        // The settings the COPY data was written with.
        writeln!(out, "{}", STREAM_SESSION.replace("; ", ";\n"))?;
        out.write_all(pre.as_bytes())?;
        for (i, unit) in units.iter().enumerate() {
            let (_, copy_in, after) = unit.target_statements();
            if unit.ident.is_some() {
                writeln!(out, "\nCOPY {} FROM stdin;", unit.name)?;
            } else {
                // Large objects: the schema created them empty; their contents go through a temporary table.
                writeln!(out, "\nCREATE TEMP TABLE gbo_large_objects (id oid, data bytea);")?;
                writeln!(out, "{};", copy_in.replace("FROM STDIN", "FROM stdin"))?;
            }
            let mut part = std::fs::File::open(self.parts.join(format!("{i}.copy")))?;
            std::io::copy(&mut part, &mut out)?;
            writeln!(out, "\\.")?;
            for statement in after {
                writeln!(out, "{statement};")?;
            }
            if unit.ident.is_none() {
                writeln!(out, "DROP TABLE pg_temp.gbo_large_objects;")?;
            }
        }
        writeln!(out)?;
        out.write_all(setval_sql(sequences).as_bytes())?;
        out.write_all(post.as_bytes())?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        // Never over a file that appeared meanwhile.
        std::fs::hard_link(&partial, &self.path)
            .map_err(|e| MigrateError::KeepSql { path: self.path.display().to_string(), reason: e.to_string() })?;
        Ok(self.path.clone())
    }
}

impl Drop for KeptSql {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.parts);
    }
}

async fn backup_target(
    target: &Endpoint,
    db: &str,
    options: &MigrateOptions,
    tables_container: Option<&crate::inventory::ManagedInstance>,
    lxd: Option<&Client>,
) -> Result<String, MigrateError> {
    match target {
        Endpoint::Container(c) => {
            // A data-inclusive gbo snapshot of the tables container.
            let lxd = lxd.cloned().unwrap_or_else(|| c.lxd.clone());
            let managed = match tables_container {
                Some(m) => m.clone(),
                None => crate::snapshot::container(&lxd, c.instance.as_str()).await?,
            };
            let name = crate::snapshot::snapshot_name(&format!(
                "before-migrate-{}",
                crate::snapshot::default_name(time::OffsetDateTime::now_utc()).trim_start_matches("gbo-")
            ))?;
            crate::snapshot::create(&lxd, &managed, &name, &crate::snapshot::CreateOptions::default()).await?;
            Ok(format!("snapshot {}/{}", c.instance, name))
        }
        Endpoint::Host(h) => {
            // A full copy of the database: a 0700 directory and a 0600 file, created new (never over another backup).
            use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&options.backup_dir)?;
            let stamp = crate::snapshot::default_name(time::OffsetDateTime::now_utc());
            let stamp = stamp.trim_start_matches("gbo-");
            let mut attempt = 0u32;
            let file = loop {
                let name = if attempt == 0 {
                    format!("{db}-before-migrate-{stamp}.dump")
                } else {
                    format!("{db}-before-migrate-{stamp}-{attempt}.dump")
                };
                let path = options.backup_dir.join(name);
                match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                    Ok(_) => break path,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => attempt += 1,
                    Err(e) => return Err(e.into()),
                }
            };
            // The directory may have existed with looser permissions: the file itself stays private.
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            let passfile = h.passfile()?;
            if let Err(e) = h.pg_dump(db, &passfile).arg("--format=custom").arg("--file").arg(&file).run_async().await {
                let _ = std::fs::remove_file(&file);
                return Err(e.into());
            }
            Ok(format!("pg_dump archive {}", file.display()))
        }
    }
}

/// A section of a dump (`pg_dump --section=pre-data` or `post-data`), split into its entries: post-data so that index
/// builds can run in parallel, pre-data so that entries of one kind can be left out.
#[derive(Debug, Default)]
struct DumpSection {
    /// The `SET` lines before the first entry.
    preamble: String,
    /// The key of pg_dump's `\restrict` framing (15.14+), put back around every part given to psql.
    restrict: Option<String>,
    /// (type, table, SQL) in dump order.
    entries: Vec<(String, Option<String>, String)>,
}

impl DumpSection {
    fn parse(dump: &str) -> Self {
        let mut out = DumpSection::default();
        let mut current: Option<(String, String)> = None;
        for line in dump.lines() {
            if let Some(key) = line.strip_prefix("\\restrict ") {
                out.restrict = Some(key.trim().to_string());
                continue;
            }
            if line.starts_with("\\unrestrict ") || line.starts_with("-- PostgreSQL database dump complete") {
                continue;
            }
            if let Some(header) = line.strip_prefix("-- Name: ") {
                if let Some((kind, text)) = current.take() {
                    let table = entry_table(&kind, &text);
                    out.entries.push((kind, table, text));
                }
                let kind = header.split("; Type: ").nth(1).and_then(|t| t.split(';').next()).unwrap_or("").to_string();
                current = Some((kind, format!("{line}\n")));
                continue;
            }
            match current.as_mut() {
                Some((_, text)) => {
                    text.push_str(line);
                    text.push('\n');
                }
                None => {
                    out.preamble.push_str(line);
                    out.preamble.push('\n');
                }
            }
        }
        if let Some((kind, text)) = current.take() {
            let table = entry_table(&kind, &text);
            out.entries.push((kind, table, text));
        }
        out
    }

    fn frame(&self, body: &str) -> String {
        // A larger sort memory than the default 64MB for index builds, within what a small container affords.
        let mut script = String::new();
        if let Some(key) = &self.restrict {
            script.push_str(&format!("\\restrict {key}\n"));
        }
        script.push_str(&self.preamble);
        script.push_str("SET maintenance_work_mem = '128MB';\n");
        script.push_str(body);
        if let Some(key) = &self.restrict {
            script.push_str(&format!("\\unrestrict {key}\n"));
        }
        script
    }

    fn parallel(kind: &str, table: &Option<String>) -> bool {
        table.is_some() && (kind == "INDEX" || kind == "CONSTRAINT")
    }

    /// The indexes and keys of each table (unframed SQL), by table: plain indexes first (`CREATE INDEX` shares the
    /// table with readers), then keys (`ALTER TABLE ... ADD CONSTRAINT` locks it exclusively).
    fn table_bodies(&self) -> BTreeMap<String, String> {
        let mut bodies: BTreeMap<String, String> = BTreeMap::new();
        for first in ["INDEX", "CONSTRAINT"] {
            for (kind, table, text) in &self.entries {
                if let (true, true, Some(t)) = (kind == first, Self::parallel(kind, table), table) {
                    bodies.entry(t.clone()).or_default().push_str(text);
                }
            }
        }
        bodies
    }

    /// Every entry but those of `kind` (unframed SQL), in dump order.
    fn body_without(&self, kind: &str) -> String {
        self.entries.iter().filter(|(k, _, _)| k != kind).map(|(_, _, text)| text.as_str()).collect()
    }

    /// Everything else (unframed SQL), in dump order.
    fn rest_body(&self) -> String {
        self.entries.iter().filter(|(k, t, _)| !Self::parallel(k, t)).map(|(_, _, text)| text.as_str()).collect()
    }
}

/// The table an index or key entry belongs to, as the dump spells it (`public.events`).
fn entry_table(kind: &str, text: &str) -> Option<String> {
    let after = |line: &str, marker: &str| {
        line.split_once(marker)
            .map(|(_, rest)| rest.trim_start_matches("ONLY ").split_whitespace().next().unwrap_or("").to_string())
    };
    let found = match kind {
        "INDEX" => text
            .lines()
            .find(|l| l.starts_with("CREATE INDEX ") || l.starts_with("CREATE UNIQUE INDEX "))
            .and_then(|l| after(l, " ON ")),
        "CONSTRAINT" => text.lines().find(|l| l.starts_with("ALTER TABLE ")).and_then(|l| after(l, "ALTER TABLE ")),
        _ => None,
    };
    // pg_dump quotes identifiers the way `format('%I.%I')` does, so the name matches `list_tables`.
    found.filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST_DATA: &str = "--
-- PostgreSQL database dump
--

\\restrict abc123

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: public; Owner: gbot
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);


--
-- Name: events_user; Type: INDEX; Schema: public; Owner: gbot
--

CREATE INDEX events_user ON public.events USING btree (user_id);


--
-- Name: users_email; Type: INDEX; Schema: public; Owner: gbot
--

CREATE UNIQUE INDEX users_email ON public.users USING btree (email);


--
-- Name: events events_user_fk; Type: FK CONSTRAINT; Schema: public; Owner: gbot
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_user_fk FOREIGN KEY (user_id) REFERENCES public.users(id);


--
-- PostgreSQL database dump complete
--

\\unrestrict abc123

";

    #[test]
    fn post_data_splits_into_per_table_index_groups_and_the_rest() {
        let post = DumpSection::parse(POST_DATA);
        assert_eq!(post.restrict.as_deref(), Some("abc123"));
        assert_eq!(post.entries.len(), 4);
        let kinds: Vec<(&str, Option<&str>)> =
            post.entries.iter().map(|(k, t, _)| (k.as_str(), t.as_deref())).collect();
        assert_eq!(
            kinds,
            vec![
                ("CONSTRAINT", Some("public.users")),
                ("INDEX", Some("public.events")),
                ("INDEX", Some("public.users")),
                ("FK CONSTRAINT", None)
            ]
        );
        let bodies = post.table_bodies();
        assert_eq!(bodies.len(), 2);
        assert!(
            bodies["public.events"].contains("events_user ON public.events")
                && !bodies["public.events"].contains("users_pkey")
        );
        let users = &bodies["public.users"];
        assert!(
            users.find("users_email").zip(users.find("users_pkey")).is_some_and(|(index, key)| index < key),
            "plain indexes before keys: {users}"
        );
        for b in bodies.values() {
            assert!(!b.contains("FOREIGN KEY"));
        }
        let framed = post.frame(&bodies["public.users"]);
        assert!(
            framed.starts_with("\\restrict abc123\n") && framed.trim_end().ends_with("\\unrestrict abc123"),
            "{framed}"
        );
        assert!(framed.contains("set_config('search_path', '', false)") && framed.contains("maintenance_work_mem"));
        let rest = post.rest_body();
        assert!(rest.contains("FOREIGN KEY") && !rest.contains("CREATE INDEX"));
        assert!(DumpSection::parse("SET x = 1;\n").rest_body().trim().is_empty());
    }

    #[test]
    fn a_digest_counts_rows_and_hashes_the_stream_in_any_chunking() {
        let mut one = Digester::default();
        one.update(b"1\ta\\nb\n2\tc\n");
        let mut two = Digester::default();
        two.update(b"1\ta\\n");
        two.update(b"b\n2\t");
        two.update(b"c\n");
        let (a, b) = (one.finish(), two.finish());
        assert_eq!(a, b);
        assert_eq!(a.rows, 2, "an escaped newline inside a value is not a row");
        assert_eq!(a.sha256.len(), 64);
    }

    #[test]
    fn older_targets_are_refused() {
        assert!(check_versions(15, 15).is_ok());
        assert!(check_versions(14, 16).is_ok());
        let err = check_versions(16, 15).expect_err("older");
        assert!(err.to_string().contains("target runs PostgreSQL 15 but the source runs 16"), "{err}");
    }

    #[test]
    fn database_names_are_checked_before_use() {
        for good in ["botserver", "Bot Server", "naïve", &"d".repeat(63)] {
            assert!(validate_database(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("  \u{3000}", "only whitespace"),
            ("a=b", "`=`"),
            ("host=x dbname=y", "`=`"),
            ("../etc/x", "`/`"),
            ("postgresql://h/db", "`/`"),
            ("a\0b", "NUL"),
            ("a\nb", "control character"),
        ] {
            let err = validate_database(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.contains(&format!("invalid --database `{}`", bad.escape_debug())), "{err}");
            assert!(err.contains("63 bytes") && err.contains("no `=`, no `/`"), "{err}");
        }
        let long = "é".repeat(32);
        assert!(validate_database(&long).expect_err("64 bytes").to_string().contains("64 bytes long"));
    }

    #[test]
    fn own_connection_keywords_are_split_out_of_both_forms() {
        let (rest, own) = split_own_keywords(
            "postgresql://u:p%40ss@127.0.0.1:5433/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20dir%2Fca.crt",
        )
        .expect("url");
        assert_eq!(rest, "postgresql://u:p%40ss@127.0.0.1:5433/db?application_name=x");
        assert_eq!(own.get("sslmode").map(String::as_str), Some("verify-full"));
        assert_eq!(own.get("sslrootcert").map(String::as_str), Some("/tmp/ca dir/ca.crt"));
        let (rest, own) = split_own_keywords("postgresql://u@h/db").expect("plain url");
        assert_eq!((rest.as_str(), own.len()), ("postgresql://u@h/db", 0));

        let (rest, own) =
            split_own_keywords("host=/tmp  port = 7000 password='it\\'s \\\\ x' sslmode=require sslrootcert='/a b/c'")
                .expect("key=value");
        assert_eq!(own.get("sslmode").map(String::as_str), Some("require"));
        assert_eq!(own.get("sslrootcert").map(String::as_str), Some("/a b/c"));
        let config: tokio_postgres::Config = rest.parse().expect("the rest still parses");
        assert_eq!(config.get_password(), Some(&b"it's \\ x"[..]));
        assert_eq!(config.get_ports(), &[7000]);
        for bad in ["host", "password='unterminated", "postgresql://h/db?sslmode"] {
            let err = split_own_keywords(bad).expect_err(bad).to_string();
            assert!(!err.contains("unterminated"), "values are never echoed: {err}");
        }
    }

    #[test]
    fn sslmode_follows_libpq_and_refuses_what_it_cannot_do() {
        for (mode, tokio) in [
            ("disable", tokio_postgres::config::SslMode::Disable),
            ("prefer", tokio_postgres::config::SslMode::Prefer),
            ("require", tokio_postgres::config::SslMode::Require),
        ] {
            let s =
                HostServer::from_libpq(Some(&format!("host=127.0.0.1 sslmode={mode} sslrootcert=system"))).expect(mode);
            assert_eq!(s.ssl_mode().as_str(), mode);
            assert_eq!(s.config.get_ssl_mode(), tokio);
        }
        let s = HostServer::from_libpq(Some("host=127.0.0.1 sslmode=verify-full sslrootcert=system")).expect("system");
        assert_eq!(s.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        let err = HostServer::from_libpq(Some("host=127.0.0.1 sslmode=allow")).expect_err("allow").to_string();
        assert!(err.contains("sslmode=allow is not supported"), "{err}");
        let err = HostServer::from_libpq(Some("host=127.0.0.1 sslmode=maybe")).expect_err("maybe").to_string();
        assert!(err.contains("sslmode `maybe` is not one of"), "{err}");
        let err = HostServer::from_libpq(Some("host=127.0.0.1 sslmode=verify-ca sslrootcert=/nonexistent/ca.crt"))
            .expect_err("missing file")
            .to_string();
        assert!(err.contains("cannot read sslrootcert /nonexistent/ca.crt"), "{err}");
        let err = HostServer::from_libpq(Some("host=127.0.0.1 sslcert=/x.crt")).expect_err("client certs").to_string();
        assert!(err.contains("sslcert"), "a setting gbo cannot use is refused, not ignored: {err}");
    }

    #[test]
    fn contents_name_every_kind_they_hold() {
        assert!(Contents::default().is_empty());
        let c = Contents { relations: 2, large_objects: 1, ..Contents::default() };
        assert!(!c.is_empty());
        assert_eq!(c.to_string(), "2 relation(s) (tables, views or sequences), 1 large object(s)");
        let c = Contents { functions: 1, types: 3, schemas: 1, extensions: 2, ..Contents::default() };
        assert_eq!(c.to_string(), "1 function(s), 3 type(s), 1 schema(s), 2 extension(s)");
    }

    #[test]
    fn literals_mean_the_same_whatever_standard_conforming_strings_is() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
        assert_eq!(quote_ident("a\"; DROP TABLE x; --"), "\"a\"\"; DROP TABLE x; --\"");
    }

    #[test]
    fn libpq_addressing_prefers_the_connection_string_and_hides_the_password() {
        let s = HostServer::from_libpq(Some("postgresql://alice:s3cret@127.0.0.1:6543/other")).expect("parse");
        assert_eq!(s.describe(), "alice@127.0.0.1:6543");
        assert_eq!(s.database(), Some("other"));
        assert!(!format!("{s:?}").contains("s3cret"));
        let kv = HostServer::from_libpq(Some("host=/tmp port=7000 user=bob")).expect("parse");
        assert_eq!(kv.describe(), "bob@/tmp:7000");
        let err = HostServer::from_libpq(Some("host=a port=notaport")).expect_err("bad");
        assert!(err.to_string().contains("invalid connection string"), "{err}");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
