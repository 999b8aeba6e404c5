//! The two ends of a migration. A server on the host, addressed the libpq way ([`HostServer`]); the tenant's
//! tables container ([`ContainerServer`]): as a target reached through LXD exec as `postgres` on its local socket,
//! as a source through the port its proxy device publishes on the host, so that nothing the container prints is
//! used on the host. Also the host's own `pg_dump`, which reads either through a host connection.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::Duration;

use lxd_client::{Client, ExecRequest, InstanceName};

use super::error::MigrateError;
use super::sql::{db_message, single, unreadable};
use super::tls::{split_own_keywords, SslMode, Tls};
use crate::inventory::ManagedInstance;
use crate::runner::HostCommand;

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
        write!(f, "HostServer({}, sslmode={})", self.describe(), self.tls.mode().as_str())
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
        let tls = Tls::from_libpq(&own)?;
        config.ssl_mode(tls.tokio_mode());
        config.application_name("gbo-migrate");
        config.connect_timeout(Duration::from_secs(10));
        Ok(Self { config: Box::new(config), tls, label: None })
    }

    /// A container's server through the port it publishes on the host, as `user` with `password`; no TLS (the
    /// tables role serves none; nothing the server says is trusted either way).
    pub(super) fn published(address: &str, port: u16, user: &str, password: &[u8], label: String) -> Self {
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
    pub(super) fn as_login(&self, user: &str, password: &[u8]) -> Self {
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
        self.tls.mode()
    }

    /// The role it logs in as.
    pub(super) fn user(&self) -> Option<&str> {
        self.config.get_user()
    }

    /// `user@host:port`, without the password.
    pub fn describe(&self) -> String {
        if let Some(label) = &self.label {
            return label.clone();
        }
        let host = self.config.get_hosts().first().map(host_text).unwrap_or_else(|| "?".into());
        format!(
            "{}@{}:{}",
            self.config.get_user().unwrap_or("?"),
            host,
            self.config.get_ports().first().copied().unwrap_or(5432)
        )
    }

    /// How messages name it: `host user@host:port`, or its label.
    pub(super) fn side(&self) -> String {
        match &self.label {
            Some(label) => label.clone(),
            None => format!("host {}", self.describe()),
        }
    }

    /// A connection to `database`.
    pub(super) async fn connect(&self, database: &str) -> Result<tokio_postgres::Client, MigrateError> {
        let mut config = (*self.config).clone();
        config.dbname(database);
        let connected = match self.tls.connector() {
            None => open(&config, tokio_postgres::NoTls).await,
            Some(tls) => open(&config, tls.clone()).await,
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
    pub(super) async fn rows(&self, database: &str, sql: &str) -> Result<Vec<Vec<String>>, MigrateError> {
        let client = self.connect(database).await?;
        let messages = client
            .simple_query(sql)
            .await
            .map_err(|e| MigrateError::Sql { side: self.side(), message: db_message(&e) })?;
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

    /// Run the host's own `pg_dump` on `database` with `args`: none of gbo's own libpq environment, the settings it
    /// means set explicitly, the password through a 0600 PGPASSFILE (never argv or environment). Its output.
    pub(super) async fn pg_dump(&self, database: &str, args: &[&OsStr]) -> Result<String, MigrateError> {
        let passfile = match self.config.get_password() {
            Some(p) => Some(tempfile_lite::PassFile::new(p)?),
            None => None,
        };
        let mut cmd = HostCommand::new(newest_pg_tool("pg_dump"))
            .install_hint("install it with `apt-get install postgresql-client`");
        for var in LIBPQ_ENVIRONMENT {
            cmd = cmd.env_remove(*var);
        }
        if let Some(host) = self.config.get_hosts().first() {
            cmd = cmd.arg("--host").arg(host_text(host));
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
        for (key, value) in self.tls.libpq_environment() {
            cmd = cmd.env(key, value);
        }
        cmd = cmd.env("PGGSSENCMODE", "disable").arg("--no-password").arg("--dbname").arg(database);
        if let Some(pass) = &passfile {
            cmd = cmd.env("PGPASSFILE", pass.path.display().to_string());
        }
        let out = cmd.args(args).run_async().await?;
        drop(passfile);
        Ok(out)
    }
}

/// A host as libpq names it: a name or address, or a socket directory.
fn host_text(host: &tokio_postgres::config::Host) -> String {
    match host {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    }
}

/// Connect with `tls`; the connection is driven by a task of its own.
async fn open<T>(config: &tokio_postgres::Config, tls: T) -> Result<tokio_postgres::Client, tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection ended");
        }
    });
    Ok(client)
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

/// The container side: PostgreSQL inside the tenant's tables container. As a target it is reached through LXD exec
/// as `postgres` on the local socket; as a source, through the host port it publishes (see
/// [`ContainerServer::published`]), so that nothing the container prints is used on the host.
#[derive(Debug, Clone)]
pub struct ContainerServer {
    pub(super) lxd: Client,
    pub(super) instance: InstanceName,
    /// PostgreSQL's port inside the container.
    pub(super) port: u16,
    /// Where the host reaches it: address and port.
    pub(super) published: Option<(String, u16)>,
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

    /// The tables container of `tenant` (or `container`, when named), its PostgreSQL on `port` and, when its proxy
    /// device publishes that port on the host, reached there; with gbo's record of it (for the snapshot before
    /// `--replace`).
    pub async fn of_tenant(
        lxd: &Client,
        tenant: &str,
        container: Option<&str>,
        port: u16,
    ) -> Result<(Self, ManagedInstance), MigrateError> {
        let name = match container {
            Some(c) => c.to_string(),
            None => {
                let tenant = gbo_components::TenantName::new(tenant).map_err(|e| MigrateError::InvalidTenant {
                    value: tenant.escape_debug().to_string(),
                    reason: e.to_string(),
                })?;
                gbo_components::instance_name(&tenant, gbo_components::Role::Tables)
            }
        };
        let managed = crate::snapshot::container(lxd, &name).await.map_err(MigrateError::TablesContainer)?;
        let instance = InstanceName::new(name.as_str()).map_err(|e| MigrateError::Container(e.to_string()))?;
        let mut server = Self::new(lxd.clone(), instance, port);
        if let Some(published) =
            managed.ports.iter().find(|p| p.protocol == gbo_components::Protocol::Tcp && p.container_port == port)
        {
            server = server.published(&published.host_address, published.host_port);
        }
        Ok((server, managed))
    }

    /// How messages name it.
    pub(super) fn describe(&self) -> String {
        format!("container {}", self.instance)
    }

    /// `psql` as `postgres` on the local socket, on `database`, with `extra` arguments.
    pub(super) fn psql_argv(&self, database: &str, extra: &[&str]) -> Vec<String> {
        psql_as_postgres(self.port, database, extra)
    }

    /// Run SQL (from stdin, never argv) and return its unaligned, tab-separated rows.
    pub(super) async fn query(&self, database: &str, sql: &str) -> Result<Vec<Vec<String>>, MigrateError> {
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

    /// Run a script (from stdin) in one transaction.
    pub(super) async fn script(&self, database: &str, sql: &str) -> Result<(), MigrateError> {
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
    /// How messages name it.
    pub(super) fn describe(&self) -> String {
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

    /// The server's major version.
    pub(super) async fn major(&self) -> Result<u32, MigrateError> {
        let rows = self.query("postgres", "SHOW server_version_num;").await?;
        let num: u32 = single(&rows)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| unreadable(&self.describe(), "SHOW server_version_num", &rows))?;
        Ok(num / 10000)
    }
}

/// `psql` as `postgres` inside a tables container, on its local socket at `port`, on `database`, stopping at the
/// first error, with `extra` arguments (SQL goes on stdin or in a file, never in this argv when it holds a secret).
pub(crate) fn psql_as_postgres(port: u16, database: &str, extra: &[&str]) -> Vec<String> {
    let port = port.to_string();
    ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "/var/run/postgresql", "-p"]
        .into_iter()
        .chain([port.as_str(), "-d", database])
        .chain(extra.iter().copied())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::sql::{quote_ident, quote_literal};
    use super::*;

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
