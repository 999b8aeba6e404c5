//! What a backup records of the tenant's PostgreSQL data, and the check a restore makes against it.
//!
//! At backup time, before the tables container's `CHECKPOINT` and freeze, every table of every database is locked
//! `IN SHARE MODE` by one `psql` session per database held open inside the container (reads go on; writers wait
//! until the container has been read and thawed), and each table's exact row count and order-independent content
//! checksum is recorded with the migration's own check ([`crate::migrate::table_checks`]). The locks are held
//! through the freeze, so what is recorded is what the frozen copy holds. The record goes into the backup's
//! description (`tenant.json`, per role).
//!
//! After a restore, the restored cluster is read the same way ([`crate::migrate::check_recorded`]): every recorded
//! table is there with the recorded count and checksum, and the application role (`gbuser`) reads and writes
//! every table of the application database and uses every sequence (in a transaction rolled back), as `gbo
//! migrate` checks a migrated database. A difference fails the restore, naming the table.
//!
//! Trust: the container computes the checksums; nothing it prints is run on the host (names travel hex-encoded and
//! are quoted on the host; counts are parsed as numbers).

use std::time::Duration;

use futures_util::StreamExt;
use lxd_client::{Client, ExecChunk, ExecRequest, ExecSession, ExecStdin, InstanceName};

use super::BackupError;
use crate::migrate::{self, ContainerServer, Difference, Endpoint, TableCheck};

/// PostgreSQL's port inside a tables container.
pub const PG_PORT: u16 = 5432;
/// How long the lock waits for a writer's transaction to end before the backup fails.
const LOCK_TIMEOUT_SECS: u64 = 120;
/// The line the locking session prints once every table is locked.
const LOCKED: &str = "gbo-tables-locked";

/// One database's tables as recorded at backup time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DatabaseRecord {
    /// Database.
    pub database: String,
    /// Its tables: `schema.table` (quoted), exact row count, order-independent checksum.
    pub tables: Vec<TableCheck>,
}

/// The locking sessions: every table of a database locked `IN SHARE MODE` in a transaction held open. Released
/// (end of file on psql's stdin: it rolls back and exits) by [`Locks::release`].
pub struct Locks {
    container: InstanceName,
    sessions: Vec<(String, ExecSession, ExecStdin)>,
}

fn quiesce(instance: &InstanceName, detail: String) -> BackupError {
    BackupError::Quiesce { container: instance.to_string(), detail }
}

fn sql_error(instance: &InstanceName, what: &str) -> impl FnOnce(migrate::MigrateError) -> BackupError {
    let container = instance.to_string();
    let what = what.to_string();
    move |e| BackupError::Quiesce { container, detail: format!("{what}: {e}") }
}

fn psql(database: &str) -> Vec<String> {
    migrate::psql_as_postgres(PG_PORT, database, &["-f", "-"])
}

/// Lock every table of `database` in a session held open; returns once the locks are held.
async fn lock_database(
    lxd: &Client,
    instance: &InstanceName,
    database: &str,
) -> Result<(ExecSession, ExecStdin), BackupError> {
    use tokio::io::AsyncWriteExt;
    let request = ExecRequest::new(psql(database)).stdin_piped().timeout(Duration::from_secs(24 * 3600));
    let mut session = lxd.exec(instance, &request).await?;
    let mut stdin = session.stdin().ok_or_else(|| quiesce(instance, "no stdin for the locking session".into()))?;
    let mut output =
        session.output_stream().ok_or_else(|| quiesce(instance, "no output for the locking session".into()))?;
    let sql = format!(
        "BEGIN;\nSET LOCAL lock_timeout = '{LOCK_TIMEOUT_SECS}s';\n\
         DO $gbo$ DECLARE r record; BEGIN FOR r IN SELECT c.oid::regclass AS t FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') \
         AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' LOOP \
         EXECUTE 'LOCK TABLE ' || r.t::text || ' IN SHARE MODE'; END LOOP; END $gbo$;\n\\warn {LOCKED}\n"
    );
    stdin.write_all(sql.as_bytes()).await.map_err(|e| quiesce(instance, format!("locking {database}: {e}")))?;
    // The marker goes to stderr (unbuffered); an error ends psql (ON_ERROR_STOP) and so the output.
    let mut stderr = Vec::new();
    let waited = tokio::time::timeout(Duration::from_secs(LOCK_TIMEOUT_SECS + 30), async {
        while let Some(chunk) = output.next().await {
            if let ExecChunk::Stderr(data) = chunk {
                stderr.extend_from_slice(&data);
                if String::from_utf8_lossy(&stderr).contains(LOCKED) {
                    return true;
                }
            }
        }
        false
    })
    .await;
    if waited == Ok(true) {
        // The session stays open (stdin held) until `release`; its further output is not needed.
        drop(output);
        return Ok((session, stdin));
    }
    drop(stdin);
    let _ = session.kill().await;
    let said: String = String::from_utf8_lossy(&stderr).trim().chars().take(300).collect();
    Err(quiesce(
        instance,
        match waited {
            Err(_) => format!("locking the tables of {database} took longer than {LOCK_TIMEOUT_SECS} s"),
            _ => format!("locking the tables of {database} failed: {said}"),
        },
    ))
}

/// Lock every table of every database of the tables container `instance` and record each table's row count and
/// checksum. The locks stay held until [`Locks::release`] (after the container was read and thawed).
pub async fn lock_and_record(
    lxd: &Client,
    instance: &InstanceName,
) -> Result<(Locks, Vec<DatabaseRecord>), BackupError> {
    let server = Endpoint::Container(ContainerServer::new(lxd.clone(), instance.clone(), PG_PORT));
    let databases = migrate::databases(&server).await.map_err(sql_error(instance, "listing the databases"))?;
    let mut locks = Locks { container: instance.clone(), sessions: Vec::new() };
    let mut records = Vec::new();
    for database in databases {
        match lock_database(lxd, instance, &database).await {
            Ok((session, stdin)) => locks.sessions.push((database.clone(), session, stdin)),
            Err(e) => {
                locks.release().await;
                return Err(e);
            }
        }
        match migrate::table_checks(&server, &database).await {
            Ok(tables) => records.push(DatabaseRecord { database, tables }),
            Err(e) => {
                locks.release().await;
                return Err(sql_error(instance, &format!("recording the tables of {database}"))(e));
            }
        }
    }
    Ok((locks, records))
}

impl Locks {
    /// End every locking session: end of file on psql's stdin rolls its transaction back and ends it.
    pub async fn release(self) {
        for (database, session, stdin) in self.sessions {
            drop(stdin);
            match tokio::time::timeout(Duration::from_secs(60), session.wait()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(container = %self.container, %database, error = %e, "locking session ended badly")
                }
                Err(_) => tracing::warn!(container = %self.container, %database, "locking session did not end in 60 s"),
            }
        }
    }
}

/// Compare the restored tables container `instance` with what the backup recorded: every recorded table with its
/// row count and checksum, and the application role's access to every table of the application database. Returns
/// the differences, each naming `database.schema.table`.
pub async fn check(
    lxd: &Client,
    instance: &InstanceName,
    recorded: &[DatabaseRecord],
) -> Result<Vec<Difference>, BackupError> {
    let server = ContainerServer::new(lxd.clone(), instance.clone(), PG_PORT);
    let mut differences = Vec::new();
    for record in recorded {
        let app = (record.database == gbo_components::render::postgres::APP_DATABASE)
            .then_some(gbo_components::render::postgres::APP_USER);
        let found = migrate::check_recorded(&server, &record.database, &record.tables, app)
            .await
            .map_err(sql_error(instance, &format!("checking the restored tables of {}", record.database)))?;
        differences.extend(
            found
                .into_iter()
                .map(|d| Difference { object: format!("{}: {}", record.database, d.object), what: d.what }),
        );
    }
    Ok(differences)
}
