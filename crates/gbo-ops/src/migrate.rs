//! Verified PostgreSQL migration between a server on the host and a tenant's tables container, in either direction.
//!
//! Streamed end to end (no SQL file on disk): the schema's pre-data section (`pg_dump --section=pre-data`: schema
//! and grants) is applied first; then one job per table, `--jobs` at once, largest first: the table travels
//! as a `COPY ... TO STDOUT` → `COPY ... FROM STDIN WITH (FREEZE)` stream (`pg_restore -j` cannot read a pipe), the
//! source's stream is digested as it passes (rows and SHA-256), the target's is read back and digested where it lives
//! (inside the container: `psql | sha256sum`) while the table's indexes and keys from the post-data section are built
//! and it is analysed, overlapping the copy of the other tables. Then sequences are set and the rest of post-data
//! (foreign keys, triggers, attachments) is applied, and every sequence's value and the set of tables are compared.
//! When two streams differ, an order-independent content checksum on both sides decides (so a different row order or
//! text rendering is not mistaken for different content); a real difference fails the migration and names the
//! tables. The source is only ever read.
//!
//! The host side is addressed the libpq way: a connection string, or `PGHOST`/`PGPORT`/`PGUSER`/`PGPASSWORD`, or the
//! local socket. The password never reaches an argv or an environment: host tools get it through a 0600
//! `PGPASSFILE`. The container side runs `psql`/`pg_dump` as `postgres` through LXD exec over the local socket.

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

/// A migration that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// A connection string that does not parse.
    #[error("invalid connection string: {0}; use `postgresql://user@host:port/db` or `host=... port=... user=...`")]
    ConnectionString(String),
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
    #[error("the target database `{database}` on {side} already holds {tables} relation(s) (tables, views or sequences); pass --replace to snapshot it and replace it")]
    TargetNotEmpty {
        /// Database.
        database: String,
        /// Which side.
        side: String,
        /// Relations found (tables, views, materialized views, foreign tables, free-standing sequences).
        tables: usize,
    },
    /// Verification found differences.
    #[error("verification failed; the source is unchanged. Tables that differ: {}", .differences.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "))]
    Mismatch {
        /// What differs.
        differences: Vec<Difference>,
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
    #[error("LXD: {0}")]
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

/// The host-side server, addressed the libpq way.
#[derive(Clone)]
pub struct HostServer {
    config: tokio_postgres::Config,
}

impl std::fmt::Debug for HostServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "HostServer({})", self.describe())
    }
}

impl HostServer {
    /// From a connection string (URL or `key=value`) when given, with libpq's `PGHOST`, `PGPORT`, `PGUSER` and
    /// `PGPASSWORD` filling what it leaves out, and the local socket `/var/run/postgresql` port 5432 otherwise.
    pub fn from_libpq(connection: Option<&str>) -> Result<Self, MigrateError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let given = match connection {
            Some(s) => {
                s.parse::<tokio_postgres::Config>().map_err(|e| MigrateError::ConnectionString(e.to_string()))?
            }
            None => tokio_postgres::Config::new(),
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
        config.application_name("gbo-migrate");
        config.connect_timeout(Duration::from_secs(10));
        Ok(Self { config })
    }

    /// The database named in the connection string, if any.
    pub fn database(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// `user@host:port`, without the password.
    pub fn describe(&self) -> String {
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

    async fn connect(&self, database: &str) -> Result<tokio_postgres::Client, MigrateError> {
        let mut config = self.config.clone();
        config.dbname(database);
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| {
            let message = db_message(&e);
            if message.contains("does not exist") && message.contains("database") {
                MigrateError::NoSuchDatabase {
                    database: database.to_string(),
                    side: format!("host {}", self.describe()),
                }
            } else {
                MigrateError::Unreachable { target: self.describe(), message }
            }
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "host PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// A `pg_dump` command for this server, password through a 0600 PGPASSFILE (never argv or environment).
    fn pg_dump(&self, database: &str, passfile: &Option<tempfile_lite::PassFile>) -> HostCommand {
        let mut cmd = HostCommand::new(newest_pg_tool("pg_dump"))
            .install_hint("install it with `apt-get install postgresql-client`");
        if let Some(host) = self.config.get_hosts().first() {
            let h = match host {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            };
            cmd = cmd.arg("--host").arg(h);
        }
        if let Some(port) = self.config.get_ports().first() {
            cmd = cmd.arg("--port").arg(port.to_string());
        }
        if let Some(user) = self.config.get_user() {
            cmd = cmd.arg("--username").arg(user);
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

/// The container side: PostgreSQL inside the tenant's tables container, reached through LXD exec as `postgres`.
#[derive(Debug, Clone)]
pub struct ContainerServer {
    lxd: Client,
    instance: InstanceName,
    port: u16,
}

impl ContainerServer {
    /// PostgreSQL in `instance`, on the local socket `/var/run/postgresql` and `port`.
    pub fn new(lxd: Client, instance: InstanceName, port: u16) -> Self {
        Self { lxd, instance, port }
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
        let req = ExecRequest::new(argv).timeout(Duration::from_secs(3600));
        let out = self.lxd.exec_with_stdin(&self.instance, &req, sql.as_bytes()).await?;
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
        let req = ExecRequest::new(argv).timeout(Duration::from_secs(3600));
        let out = self.lxd.exec_with_stdin(&self.instance, &req, sql.as_bytes()).await?;
        if !out.success() {
            return Err(MigrateError::Sql { side: self.describe(), message: out.stderr_text().trim().to_string() });
        }
        Ok(())
    }

    async fn dump_section(&self, database: &str, section: &str, owners: bool) -> Result<String, MigrateError> {
        let mut argv: Vec<String> = ["runuser", "-u", "postgres", "--", "pg_dump", "-h", "/var/run/postgresql"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // A section without --schema-only: pre-data is the schema and its grants, post-data includes the refresh of
        // materialized views; table data is the `data` section, which travels as COPY streams instead.
        argv.extend(["-p".into(), self.port.to_string(), format!("--section={section}")]);
        if !owners {
            argv.push("--no-owner".into());
            argv.push("--no-privileges".into());
        }
        argv.push(database.to_string());
        let out = self.lxd.exec(&self.instance, &ExecRequest::new(argv).timeout(Duration::from_secs(600))).await?;
        if !out.success() {
            return Err(MigrateError::Sql { side: self.describe(), message: out.stderr_text().trim().to_string() });
        }
        Ok(out.stdout_text())
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
            Endpoint::Host(h) => format!("host {}", h.describe()),
            Endpoint::Container(c) => c.describe(),
        }
    }

    /// Rows of a query, every value as text (NULL as empty).
    pub async fn query(&self, database: &str, sql: &str) -> Result<Vec<Vec<String>>, MigrateError> {
        match self {
            Endpoint::Host(h) => {
                let client = h.connect(database).await?;
                host_rows(&client, sql, &self.describe()).await
            }
            Endpoint::Container(c) => c.query(database, sql).await,
        }
    }

    async fn script(&self, database: &str, sql: &str) -> Result<(), MigrateError> {
        match self {
            Endpoint::Host(h) => {
                let client = h.connect(database).await?;
                // pg_dump 15.14+ frames its output with `\restrict KEY` / `\unrestrict KEY`: psql meta-commands that
                // only psql understands. Schema-only sections hold no other backslash lines.
                let sql: String = sql
                    .lines()
                    .filter(|l| !(l.starts_with("\\restrict ") || l.starts_with("\\unrestrict ")))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let wrapped = format!("BEGIN;\n{sql}\nCOMMIT;\n");
                client
                    .batch_execute(&wrapped)
                    .await
                    .map_err(|e| MigrateError::Sql { side: self.describe(), message: db_message(&e) })
            }
            Endpoint::Container(c) => c.script(database, sql).await,
        }
    }

    async fn dump_section(&self, database: &str, section: &str, owners: bool) -> Result<String, MigrateError> {
        match self {
            Endpoint::Host(h) => {
                let passfile = h.passfile()?;
                let mut cmd = h.pg_dump(database, &passfile).arg(format!("--section={section}"));
                if !owners {
                    cmd = cmd.arg("--no-owner").arg("--no-privileges");
                }
                let out = cmd.run_async().await?;
                drop(passfile);
                Ok(out)
            }
            Endpoint::Container(c) => c.dump_section(database, section, owners).await,
        }
    }

    async fn major(&self) -> Result<u32, MigrateError> {
        let rows = self.query("postgres", "SHOW server_version_num;").await?;
        let num: u32 = rows.first().and_then(|r| r.first()).and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
            MigrateError::Sql { side: self.describe(), message: "cannot read server_version_num".into() }
        })?;
        Ok(num / 10000)
    }
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

/// Options of [`migrate`].
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Database name (the same on both sides).
    pub database: String,
    /// Concurrent per-table COPY streams (and verification queries).
    pub jobs: usize,
    /// Replace a target that holds data (after snapshotting it).
    pub replace: bool,
    /// Make everything owned by the target's connecting user instead of the source's owners.
    pub no_owner: bool,
    /// Where a host target's backup goes before `--replace` drops it.
    pub backup_dir: PathBuf,
    /// Bytes copied so far, for progress display.
    pub progress: Arc<AtomicU64>,
    /// Also keep the migration as a plain SQL file here (`psql -f` restores it into an empty database), written only
    /// once verification passed; None streams with nothing on disk.
    pub keep_sql: Option<PathBuf>,
}

impl MigrateOptions {
    /// Defaults: `botserver`, 2 jobs, no replace, owners kept.
    pub fn new(database: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            jobs: 2,
            replace: false,
            no_owner: false,
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
    /// Tables copied and verified.
    pub tables: Vec<TableCheck>,
    /// Sequences and their values, verified.
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

/// Tables of a database, largest first: (quoted `schema.table`, bytes). Plain tables and partitions: a partitioned
/// parent holds no rows of its own and `COPY` cannot read it, its partitions travel one by one.
async fn list_tables(side: &Endpoint, database: &str) -> Result<Vec<(String, u64)>, MigrateError> {
    let sql = "SELECT format('%I.%I', n.nspname, c.relname), pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
               ORDER BY 2 DESC, 1;";
    Ok(side
        .query(database, sql)
        .await?
        .into_iter()
        .filter_map(|r| Some((r.first()?.clone(), r.get(1)?.parse().unwrap_or(0))))
        .collect())
}

async fn list_sequences(side: &Endpoint, database: &str) -> Result<BTreeMap<String, String>, MigrateError> {
    let names = side
        .query(database, "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences ORDER BY 1;")
        .await?
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect::<Vec<_>>();
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let sql = names
        .iter()
        .map(|n| format!("SELECT {}, last_value, is_called FROM {n}", quote_literal(n)))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
        + ";";
    Ok(side
        .query(database, &sql)
        .await?
        .into_iter()
        .filter_map(|r| Some((r.first()?.clone(), format!("{} {}", r.get(1)?, r.get(2)?))))
        .collect())
}

/// Count and checksum one table, order-independently: the sum of the first 60 bits of each row's md5 as a
/// numeric, so it needs no sort. The slow path, used only when the fast comparison of COPY streams disagrees.
pub async fn check_table(side: &Endpoint, database: &str, table: &str) -> Result<TableCheck, MigrateError> {
    let sql = format!(
        "{STREAM_SESSION} SELECT count(*), coalesce(sum(('x' || substr(h, 1, 15))::bit(60)::bigint::numeric), 0) || ':' || coalesce(sum(('x' || substr(h, 16, 15))::bit(60)::bigint::numeric), 0) FROM (SELECT md5(t::text) AS h FROM {table} AS t) AS rows;"
    );
    let rows = side.query(database, &sql).await?;
    let row = rows.into_iter().next().unwrap_or_default();
    Ok(TableCheck {
        table: table.to_string(),
        rows: row.first().and_then(|v| v.parse().ok()).unwrap_or(0),
        checksum: row.get(1).cloned().unwrap_or_default(),
    })
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
                .exec_with_stdin(
                    &c.instance,
                    &ExecRequest::new(argv).timeout(Duration::from_secs(6 * 3600)),
                    sql.as_bytes(),
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

/// Compare one table. Fast path: the row count and SHA-256 of both COPY streams (the source's may be known already,
/// digested while it was copied). Only when the streams differ, the order-independent checksum decides, so a
/// different row order or text rendering is not mistaken for different content.
async fn compare_table(
    source: &Endpoint,
    target: &Endpoint,
    database: &str,
    table: &str,
    known: Option<StreamDigest>,
) -> Result<(TableCheck, Option<Difference>), MigrateError> {
    let (s, t) = match known {
        Some(s) => (s, digest_table(target, database, table).await?),
        None => {
            let (s, t) = tokio::join!(digest_table(source, database, table), digest_table(target, database, table));
            (s?, t?)
        }
    };
    if s == t {
        return Ok((
            TableCheck { table: table.to_string(), rows: s.rows, checksum: format!("sha256:{}", s.sha256) },
            None,
        ));
    }
    let (a, b) = tokio::join!(check_table(source, database, table), check_table(target, database, table));
    let (a, b) = (a?, b?);
    let difference = if a.rows != b.rows {
        Some(Difference { object: table.to_string(), what: format!("rows {} on source, {} on target", a.rows, b.rows) })
    } else if a.checksum != b.checksum {
        Some(Difference { object: table.to_string(), what: "same row count, different content checksum".into() })
    } else {
        None
    };
    Ok((a, difference))
}

/// Compare every table and sequence of `database` on both sides; returns the checks, the source's sequences and
/// the differences. `known` holds source digests already taken (while copying) and `checked` tables already
/// compared; the rest are compared here, `jobs` at a time.
pub async fn verify(
    source: &Endpoint,
    target: &Endpoint,
    database: &str,
    jobs: usize,
    checked: Vec<(TableCheck, Option<Difference>)>,
) -> Result<(Vec<TableCheck>, BTreeMap<String, String>, Vec<Difference>), MigrateError> {
    let source_tables = list_tables(source, database).await?;
    let target_tables: BTreeSet<String> = list_tables(target, database).await?.into_iter().map(|t| t.0).collect();
    let done: BTreeSet<String> = checked.iter().map(|(c, _)| c.table.clone()).collect();
    let mut differences = Vec::new();
    let mut present = Vec::new();
    for (t, _) in &source_tables {
        if !target_tables.contains(t) {
            differences.push(Difference { object: t.clone(), what: "missing on target".into() });
        } else if !done.contains(t) {
            present.push(t.clone());
        }
    }
    let compared: Vec<Result<(TableCheck, Option<Difference>), MigrateError>> =
        futures_util::stream::iter(present.iter().map(|t| compare_table(source, target, database, t, None)))
            .buffer_unordered(jobs.max(1))
            .collect()
            .await;
    let mut verified = Vec::new();
    for result in checked.into_iter().map(Ok).chain(compared) {
        let (check, difference) = result?;
        differences.extend(difference);
        verified.push(check);
    }
    verified.sort_by(|a, b| a.table.cmp(&b.table));
    let source_seq = list_sequences(source, database).await?;
    let target_seq = list_sequences(target, database).await?;
    for (name, value) in &source_seq {
        match target_seq.get(name) {
            Some(v) if v == value => {}
            Some(v) => differences
                .push(Difference { object: name.clone(), what: format!("sequence {value} on source, {v} on target") }),
            None => differences.push(Difference { object: name.clone(), what: "sequence missing on target".into() }),
        }
    }
    differences.sort_by(|a, b| a.object.cmp(&b.object));
    Ok((verified, source_seq, differences))
}

/// Which majors may migrate: the target must not be older.
pub fn check_versions(source_major: u32, target_major: u32) -> Result<(), MigrateError> {
    if target_major < source_major {
        Err(MigrateError::OlderTarget { source_major, target_major })
    } else {
        Ok(())
    }
}

/// Relations a user made (tables, partitioned tables, views, materialized views, foreign tables, and sequences no
/// column owns): any of them makes a target database "not empty".
async fn user_relations(side: &Endpoint, database: &str) -> Result<usize, MigrateError> {
    let sql = "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg_toast%' \
               AND (c.relkind IN ('r','p','v','m','f') OR (c.relkind = 'S' AND NOT EXISTS \
                    (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a','i'))));";
    let rows = side.query(database, sql).await?;
    Ok(rows.first().and_then(|r| r.first()).and_then(|v| v.trim().parse().ok()).unwrap_or(0))
}

async fn database_exists(side: &Endpoint, database: &str) -> Result<bool, MigrateError> {
    let rows = side
        .query("postgres", &format!("SELECT 1 FROM pg_database WHERE datname = {};", quote_literal(database)))
        .await?;
    Ok(!rows.is_empty())
}

/// `setval` statements that give each sequence its `last_value is_called` pair (as [`list_sequences`] reads them).
fn setval_sql(sequences: &BTreeMap<String, String>) -> String {
    sequences
        .iter()
        .map(|(name, value)| {
            let mut parts = value.split(' ');
            let last = parts.next().unwrap_or("1");
            let called = parts.next().unwrap_or("f") == "t";
            format!("SELECT pg_catalog.setval({}, {last}, {called});\n", quote_literal(name))
        })
        .collect()
}

/// SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Run a migration from `source` to `target`. `snapshot_target` is called before a target that holds data is
/// replaced (it returns where the snapshot or backup is).
pub async fn migrate(
    source: &Endpoint,
    target: &Endpoint,
    options: &MigrateOptions,
    tables_container: Option<&crate::inventory::ManagedInstance>,
    lxd: Option<&Client>,
) -> Result<MigrateReport, MigrateError> {
    let started = Instant::now();
    let mut phases: Vec<(String, f64)> = Vec::new();
    let mut mark = Instant::now();
    let mut phase = |name: &str, phases: &mut Vec<(String, f64)>| {
        phases.push((name.to_string(), mark.elapsed().as_secs_f64()));
        mark = Instant::now();
    };
    let db = options.database.as_str();
    // Observe: both servers answer, versions fit, the source database exists, the target is empty or replaceable.
    let (source_major, target_major) = tokio::try_join!(source.major(), target.major())?;
    check_versions(source_major, target_major)?;
    if !database_exists(source, db).await? {
        return Err(MigrateError::NoSuchDatabase { database: db.to_string(), side: source.describe() });
    }
    // Where a kept SQL file will go: checked before anything changes.
    let keep = options.keep_sql.as_deref().map(KeptSql::prepare).transpose()?;
    let mut replaced_backup = None;
    if database_exists(target, db).await? {
        let existing = user_relations(target, db).await?;
        if existing > 0 {
            if !options.replace {
                return Err(MigrateError::TargetNotEmpty {
                    database: db.to_string(),
                    side: target.describe(),
                    tables: existing,
                });
            }
            replaced_backup = Some(backup_target(target, db, options, tables_container, lxd).await?);
        }
        target.query("postgres", &format!("DROP DATABASE {} WITH (FORCE);", quote_ident(db))).await?;
    }
    // Roles the source has and the target lacks (owners, grantees), created without login, password or superuser
    // (a source superuser that owns objects becomes a plain owner role on the target).
    if !options.no_owner {
        let roles = source.query(db, "SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1;").await?;
        let existing: BTreeSet<String> = target
            .query("postgres", "SELECT rolname FROM pg_roles;")
            .await?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect();
        for role in roles.into_iter().filter_map(|r| r.into_iter().next()).filter(|r| !existing.contains(r)) {
            target.query("postgres", &format!("CREATE ROLE {} NOLOGIN;", quote_ident(&role))).await?;
        }
    }
    let owner = source
        .query(
            "postgres",
            &format!("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {};", quote_literal(db)),
        )
        .await?;
    let owner = owner.first().and_then(|r| r.first()).cloned().filter(|_| !options.no_owner);
    let create = match &owner {
        Some(o) => format!("CREATE DATABASE {} OWNER {};", quote_ident(db), quote_ident(o)),
        None => format!("CREATE DATABASE {};", quote_ident(db)),
    };
    target.query("postgres", &create).await?;
    phase("prepare", &mut phases);

    // Schema without indexes and constraints, then the data, then the rest: loading before indexing is faster.
    let owners = !options.no_owner;
    let pre = source.dump_section(db, "pre-data", owners).await?;
    target.script(db, &pre).await?;
    phase("schema", &mut phases);
    let tables = list_tables(source, db).await?;
    let post_text = source.dump_section(db, "post-data", owners).await?;
    let post = PostData::parse(&post_text);
    let mut per_table = post.table_bodies();
    // One job per table, `--jobs` at once, largest first: copy (the source's stream digested in flight), verify
    // (the target's stream read back while the data is still in cache), then build that table's indexes and keys
    // and ANALYZE it, so index builds overlap the copy of the other tables.
    let work: Vec<(String, String)> = tables
        .iter()
        .map(|(t, _)| {
            let mut body = per_table.remove(t.as_str()).unwrap_or_default();
            body.push_str(&format!("ANALYZE {t};\n"));
            (t.clone(), post.frame(&body))
        })
        .collect();
    let jobs: Vec<Result<(TableCheck, Option<Difference>), MigrateError>> =
        futures_util::stream::iter(work.iter().enumerate().map(|(i, (t, script))| {
            let progress = options.progress.clone();
            let keep = keep.as_ref();
            async move {
                let tee = keep.map(|k| k.part(i)).transpose()?;
                let digest = copy_table(source, target, db, t, progress, tee).await?;
                // Reading the table back and building its indexes both only read it: they run side by side (the
                // script builds plain indexes first; a key's ALTER TABLE then waits for the read to end).
                let (compared, built) =
                    tokio::join!(compare_table(source, target, db, t, Some(digest)), target.script(db, script));
                built?;
                compared
            }
        }))
        .buffer_unordered(options.jobs.max(1))
        .collect()
        .await;
    let checked = jobs.into_iter().collect::<Result<Vec<_>, _>>()?;
    phase("copy", &mut phases);
    let sequences = list_sequences(source, db).await?;
    if !sequences.is_empty() {
        target.script(db, &setval_sql(&sequences)).await?;
    }
    // Indexes of tables the listing did not return (none expected) and what depends on the keys (foreign keys,
    // triggers, index attachments, comments), in the dump's order.
    let mut rest: String = per_table.into_values().collect();
    rest.push_str(&post.rest_body());
    if !rest.trim().is_empty() {
        target.script(db, &post.frame(&rest)).await?;
    }
    phase("post-data", &mut phases);

    // Verify before declaring success: the tables compared while copying, whatever else the source has, sequences.
    let (checks, sequences, differences) = verify(source, target, db, options.jobs, checked).await?;
    phase("verify", &mut phases);
    if !differences.is_empty() {
        return Err(MigrateError::Mismatch { differences });
    }
    let kept_sql = match keep {
        Some(k) => Some(k.assemble(&pre, &tables, &sequences, &post_text)?),
        None => None,
    };
    Ok(MigrateReport {
        source: source.describe(),
        target: target.describe(),
        database: db.to_string(),
        tables: checks,
        sequences,
        bytes: options.progress.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        replaced_backup,
        phases,
        kept_sql,
    })
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

    fn assemble(
        self,
        pre: &str,
        tables: &[(String, u64)],
        sequences: &BTreeMap<String, String>,
        post: &str,
    ) -> Result<PathBuf, MigrateError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let partial = self.parts.join("assembled.sql");
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&partial)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        writeln!(out, "-- Written by gbo migrate --keep-sql: restore into an empty database with `psql -v ON_ERROR_STOP=1 -f FILE`.")?;
        // The settings the COPY data was written with.
        writeln!(out, "{}", STREAM_SESSION.replace("; ", ";\n"))?;
        out.write_all(pre.as_bytes())?;
        for (i, (table, _)) in tables.iter().enumerate() {
            writeln!(out, "\nCOPY {table} FROM stdin;")?;
            let mut part = std::fs::File::open(self.parts.join(format!("{i}.copy")))?;
            std::io::copy(&mut part, &mut out)?;
            writeln!(out, "\\.")?;
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

/// Copy one table; returns the digest of the source's COPY stream, taken as it passed.
///
/// The target side truncates the (new, empty) table and loads it with `COPY ... WITH (FREEZE)` in one transaction:
/// the rows are written frozen, so reading them back for verification does not rewrite every page to set hint bits.
async fn copy_table(
    source: &Endpoint,
    target: &Endpoint,
    db: &str,
    table: &str,
    progress: Arc<AtomicU64>,
    tee: Option<std::fs::File>,
) -> Result<StreamDigest, MigrateError> {
    let span = tracing::info_span!("copy_table", table);
    let _e = span.enter();
    let copy_out = format!("COPY {table} TO STDOUT");
    let copy_in = format!("COPY {table} FROM STDIN WITH (FREEZE)");
    let truncate = format!("TRUNCATE ONLY {table}");
    match (source, target) {
        (Endpoint::Host(h), Endpoint::Container(c)) => {
            let client = h.connect(db).await?;
            client
                .batch_execute(STREAM_SESSION)
                .await
                .map_err(|e| MigrateError::Sql { side: source.describe(), message: db_message(&e) })?;
            let stream = client.copy_out(copy_out.as_str()).await.map_err(|e| MigrateError::Sql {
                side: source.describe(),
                message: format!("{table}: {}", db_message(&e)),
            })?;
            let reader = tokio_util::io::StreamReader::new(stream.map_err(std::io::Error::other));
            let mut reader = Digesting { inner: Box::pin(reader), counter: progress, digest: Digester::teeing(tee) };
            let argv = c.psql_argv(db, &["-c", "BEGIN", "-c", &truncate, "-c", &copy_in, "-c", "COMMIT"]);
            let mut stderr = Vec::new();
            let code = c
                .lxd
                .exec_io(
                    &c.instance,
                    &ExecRequest::new(argv).timeout(Duration::from_secs(6 * 3600)),
                    Some(&mut reader),
                    tokio::io::sink(),
                    &mut stderr,
                )
                .await?;
            if code != 0 {
                return Err(MigrateError::Sql {
                    side: target.describe(),
                    message: format!("{table}: {}", String::from_utf8_lossy(&stderr).trim()),
                });
            }
            reader.digest.close_tee()?;
            Ok(reader.digest.finish())
        }
        (Endpoint::Container(c), Endpoint::Host(h)) => {
            let client = h.connect(db).await?;
            client.batch_execute(&format!("BEGIN; {truncate};")).await.map_err(|e| MigrateError::Sql {
                side: target.describe(),
                message: format!("{table}: {}", db_message(&e)),
            })?;
            let sink = client
                .copy_in::<_, bytes::Bytes>(copy_in.as_str())
                .await
                .map_err(|e| MigrateError::Sql { side: target.describe(), message: db_message(&e) })?;
            let (writer, mut reader) = tokio::io::duplex(1 << 20);
            let argv = c.psql_argv(db, &["-c", STREAM_SESSION, "-c", &copy_out]);
            let lxd = c.lxd.clone();
            let instance = c.instance.clone();
            let producer = async move {
                let mut stderr = Vec::new();
                let code = lxd
                    .exec_io(
                        &instance,
                        &ExecRequest::new(argv).timeout(Duration::from_secs(6 * 3600)),
                        None::<tokio::io::Empty>,
                        writer,
                        &mut stderr,
                    )
                    .await?;
                Ok::<_, MigrateError>((code, stderr))
            };
            let consumer = async move {
                let mut sink = Box::pin(sink);
                let mut digest = Digester::teeing(tee);
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = reader.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    progress.fetch_add(n as u64, Ordering::Relaxed);
                    digest.update(&buf[..n]);
                    sink.send(bytes::Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .map_err(|e| MigrateError::Sql { side: "host".into(), message: db_message(&e) })?;
                }
                Ok::<_, MigrateError>((sink, digest))
            };
            let (produced, consumed) = tokio::join!(producer, consumer);
            let (code, stderr) = produced?;
            if code != 0 {
                return Err(MigrateError::Sql {
                    side: source.describe(),
                    message: format!("{table}: {}", String::from_utf8_lossy(&stderr).trim()),
                });
            }
            let (mut sink, mut digest) = consumed?;
            digest.close_tee()?;
            sink.as_mut().finish().await.map_err(|e| MigrateError::Sql {
                side: target.describe(),
                message: format!("{table}: {}", db_message(&e)),
            })?;
            client.batch_execute("COMMIT;").await.map_err(|e| MigrateError::Sql {
                side: target.describe(),
                message: format!("{table}: {}", db_message(&e)),
            })?;
            Ok(digest.finish())
        }
        _ => Err(MigrateError::Container("a migration runs between the host and a container".into())),
    }
}

/// The post-data section of a dump (`pg_dump --section=post-data`), split into its entries so that index builds can
/// run in parallel.
#[derive(Debug, Default)]
struct PostData {
    /// The `SET` lines before the first entry.
    preamble: String,
    /// The key of pg_dump's `\restrict` framing (15.14+), put back around every part given to psql.
    restrict: Option<String>,
    /// (type, table, SQL) in dump order.
    entries: Vec<(String, Option<String>, String)>,
}

impl PostData {
    fn parse(dump: &str) -> Self {
        let mut out = PostData::default();
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
        let post = PostData::parse(POST_DATA);
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
        assert!(PostData::parse("SET x = 1;\n").rest_body().trim().is_empty());
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
