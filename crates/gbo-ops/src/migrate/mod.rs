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
//!
//! A migration passes through its rooms in order: `endpoint` (both servers answer, their versions fit; TLS settings
//! in `tls`), `session` (the login the source is read through), `contents` (the source exists, the target is empty
//! or replaceable, the roles the restore needs), `keep_sql` (where a kept file goes, checked before anything
//! changes), `session` again (the restore session on the target, and the empty database), `backup` (the target saved
//! before `--replace`), `dump` (the schema's sections), `copy` (each table's stream, with `verify` comparing it as
//! soon as it landed), `verify` (everything once more, and the application role), and `keep_sql` (the file
//! assembled). Beneath them: `error`, `event` (what the migration reports as it goes: [`MigrateEvent`]) and `sql`.
//! This module holds the entry point, its options and its report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use futures_util::StreamExt;
use lxd_client::Client;
use tracing::Instrument;

mod backup;
mod contents;
mod copy;
mod dump;
mod endpoint;
mod error;
mod event;
mod keep_sql;
mod session;
mod sql;
mod tls;
mod verify;

pub use contents::contents;
pub use copy::StreamDigest;
pub(crate) use endpoint::psql_as_postgres;
pub use endpoint::{newest_pg_tool, ContainerServer, Endpoint, HostServer};
pub use error::{Contents, Difference, MigrateError, MAX_JOBS, MAX_NAME_BYTES};
pub use event::{MigrateEvent, MigrateEventKind, Phase, PROGRESS_EVERY};
pub use sql::{quote_ident, quote_literal};
pub use tls::SslMode;
pub use verify::{check_recorded, check_table, databases, digest_table, table_check_sql, table_checks, TableCheck};

use crate::events::Observer;
use crate::inventory::ManagedInstance;
use copy::Unit;
use dump::DumpSection;
use keep_sql::KeptSql;
use session::{Restore, RestoreLogin};

/// The database the seed migrates.
pub const DEFAULT_DATABASE: &str = "botserver";
/// The tenant's application role: the role the tables role creates and botserver logs in as.
pub const DEFAULT_APP_ROLE: &str = gbo_components::render::postgres::APP_USER;

/// Which way `gbo migrate` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Host PostgreSQL → the tenant's tables container.
    LocalToContainer,
    /// The tenant's tables container → host PostgreSQL.
    ContainerToLocal,
}

impl Direction {
    /// The source and the target of a migration this way between `host` and `container`.
    pub fn ends(self, host: HostServer, container: ContainerServer) -> (Endpoint, Endpoint) {
        let (host, container) = (Endpoint::Host(host), Endpoint::Container(container));
        match self {
            Direction::LocalToContainer => (host, container),
            Direction::ContainerToLocal => (container, host),
        }
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
/// Options of [`migrate`].
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Database name (the same on both sides).
    pub database: String,
    /// Concurrent per-table COPY streams (and verification queries), 1 to [`MAX_JOBS`].
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
            keep_sql: None,
        }
    }

    /// Check the options before anything else happens: the database name (it reaches connection strings, argv and
    /// backup file names), the number of jobs, the application role's name.
    pub fn check(&self) -> Result<(), MigrateError> {
        validate_database(&self.database)?;
        if self.jobs == 0 || self.jobs > MAX_JOBS {
            return Err(MigrateError::InvalidJobs(self.jobs));
        }
        let app = &self.app_role;
        if app.is_empty() || app.len() > MAX_NAME_BYTES || app.contains('\0') {
            return Err(MigrateError::Container(format!("invalid application role `{}`", app.escape_debug())));
        }
        Ok(())
    }
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

/// Which majors may migrate: the target must not be older.
pub fn check_versions(source_major: u32, target_major: u32) -> Result<(), MigrateError> {
    if target_major < source_major {
        Err(MigrateError::OlderTarget { source_major, target_major })
    } else {
        Ok(())
    }
}

/// Run a migration from `source` to `target`, one on the host and one in a container, reporting its progress to
/// `events`. `tables_container` and `lxd` serve the safety snapshot of a container target before `--replace`.
pub async fn migrate(
    source: &Endpoint,
    target: &Endpoint,
    options: &MigrateOptions,
    tables_container: Option<&ManagedInstance>,
    lxd: Option<&Client>,
    events: &(dyn Observer<MigrateEvent> + Sync),
) -> Result<MigrateReport, MigrateError> {
    let span = tracing::info_span!("migrate", database = %options.database);
    let result = async {
        options.check()?;
        let (reader, login) = session::reader(source, target).await?;
        let run =
            Run { reader: &reader, from_container: login.is_some(), target, options, tables_container, lxd, events };
        let result = run.run().await;
        if let Some(login) = login {
            login.drop_role().await;
        }
        result
    }
    .instrument(span)
    .await;
    let kind = match &result {
        Ok(report) => {
            MigrateEventKind::Done { tables: report.tables.len(), bytes: report.bytes, seconds: report.seconds }
        }
        Err(e) => MigrateEventKind::Failed { error: e.to_string() },
    };
    events.event(&MigrateEvent::new(&options.database, kind));
    result
}

/// One migration: what every step of it needs.
struct Run<'a> {
    /// The source, as the host reads it.
    reader: &'a HostServer,
    /// Whether the source is a container (read through a temporary login).
    from_container: bool,
    target: &'a Endpoint,
    options: &'a MigrateOptions,
    tables_container: Option<&'a ManagedInstance>,
    lxd: Option<&'a Client>,
    events: &'a dyn Observer<MigrateEvent>,
}

/// The phases of a run, timed and reported.
struct Phases<'a> {
    database: &'a str,
    events: &'a dyn Observer<MigrateEvent>,
    current: Option<(Phase, Instant)>,
    done: Vec<(String, f64)>,
}

impl<'a> Phases<'a> {
    fn new(database: &'a str, events: &'a dyn Observer<MigrateEvent>) -> Self {
        Self { database, events, current: None, done: Vec::new() }
    }

    /// The current phase ends and `phase` starts.
    fn start(&mut self, phase: Phase) {
        self.end();
        self.events.event(&MigrateEvent::new(self.database, MigrateEventKind::PhaseStarted { phase }));
        self.current = Some((phase, Instant::now()));
    }

    /// The current phase ends.
    fn end(&mut self) {
        if let Some((phase, started)) = self.current.take() {
            let seconds = started.elapsed().as_secs_f64();
            self.done.push((phase.as_str().to_string(), seconds));
            self.events.event(&MigrateEvent::new(self.database, MigrateEventKind::PhaseDone { phase, seconds }));
        }
    }
}

/// What the restore and its verification left for the end of the run.
struct Restored {
    report: MigrateReport,
    pre: String,
    post: String,
    units: Vec<Unit>,
    sequences: Vec<copy::Seq>,
}

impl Run<'_> {
    async fn run(&self) -> Result<MigrateReport, MigrateError> {
        let db = self.options.database.as_str();
        let app = self.options.app_role.as_str();
        let (options, target) = (self.options, self.target);
        // Observe: both servers answer, versions fit, the source database exists, the target is empty or
        // replaceable.
        let source = Endpoint::Host(self.reader.clone());
        let (source_major, target_major) = tokio::try_join!(source.major(), target.major())?;
        check_versions(source_major, target_major)?;
        let observed =
            contents::observe(self.reader, target, db, app, options.replace, options.keep_owners, self.from_container)
                .await?;
        // Where a kept SQL file will go: checked before anything changes.
        let keep = options.keep_sql.as_deref().map(KeptSql::prepare).transpose()?;
        // The restore session, set up before anything changes: a login that cannot work changes nothing.
        let owner_role = (!options.keep_owners).then(|| app.to_string());
        let (restore, restore_login) = Restore::open(target, owner_role).await?;
        let restored =
            self.restore_and_verify(&source, &restore, restore_login.as_ref(), &observed, keep.as_ref()).await;
        if let Some(login) = &restore_login {
            let error = login.finish(Some(db), Some(&observed.database_owner)).await;
            if let (Some(e), Ok(_)) = (error, &restored) {
                return Err(e);
            }
        }
        let mut restored = restored?;
        if !options.keep_owners {
            // Everything belongs to the application role; anything that does not (created by a role the restore
            // left) is named.
            let problems = verify::foreign_owned(target, db, app).await?;
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

    async fn restore_and_verify(
        &self,
        source: &Endpoint,
        restore: &Restore,
        login: Option<&RestoreLogin>,
        observed: &contents::Observed,
        keep: Option<&KeptSql>,
    ) -> Result<Restored, MigrateError> {
        let (reader, target, options, events) = (self.reader, self.target, self.options, self.events);
        // Identifiers are quoted by the host's own server: the source when it is on the host, else the target.
        let trusted = match target {
            Endpoint::Host(h) if self.from_container => h,
            _ => reader,
        };
        let started = Instant::now();
        let db = options.database.as_str();
        let app = options.app_role.as_str();
        let mut phases = Phases::new(db, events);
        phases.start(Phase::Prepare);
        let replaced_backup = match observed.replace {
            true => {
                let saved =
                    backup::backup_target(target, db, &options.backup_dir, self.tables_container, self.lxd).await?;
                events.event(&MigrateEvent::new(db, MigrateEventKind::Saved { backup: saved.clone() }));
                Some(saved)
            }
            false => None,
        };
        // Roles the target lacks (grantees; owners with --keep-owners; the application role); the temporary login
        // may become the owner role(s).
        let mut wanted: Vec<String> = vec![app.to_string()];
        for role in observed.grantees.iter().chain(&observed.owners) {
            if !wanted.contains(role) {
                wanted.push(role.clone());
            }
        }
        let mut owners = vec![app.to_string()];
        owners.extend(observed.owners.iter().filter(|o| o.as_str() != app).cloned());
        let created = session::prepare_target(
            target,
            db,
            observed.target_exists,
            &wanted,
            &owners,
            login,
            &observed.database_owner,
        )
        .await?;

        // Schema without indexes and constraints, then the data, then the rest: loading before indexing is faster.
        phases.start(Phase::Schema);
        let keep_owners = options.keep_owners;
        let pre_text = dump::dump_section(reader, db, "pre-data", keep_owners).await?;
        let pre = if keep_owners {
            pre_text
        } else {
            // Default privileges belong to the roles that set them; under the application role they cannot be set
            // for another role, and its objects are its own.
            let parsed = DumpSection::parse(&pre_text);
            parsed.frame(&parsed.body_without("DEFAULT ACL"))
        };
        restore.script(db, &pre).await?;
        phases.start(Phase::Copy);
        let units = copy::source_units(reader, trusted, db).await?;
        let post_text = dump::dump_section(reader, db, "post-data", keep_owners).await?;
        let post = DumpSection::parse(&post_text);
        let mut per_table = post.table_bodies();
        // One job per table (see `table`), `--jobs` at once, largest first, so index builds overlap the copy of the
        // other tables.
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
        // Each table's job runs in a span of its own, a child of the migration's (named as the parent: the jobs are
        // created while other jobs' futures are in flight).
        let run_span = tracing::Span::current();
        let jobs: Vec<Result<_, MigrateError>> =
            futures_util::stream::iter(work.iter().enumerate().map(|(i, (unit, script))| {
                let span = tracing::info_span!(parent: &run_span, "copy", unit = %unit.name);
                async move {
                    let tee = keep.map(|k| k.part(i)).transpose()?;
                    self.table(source, restore, unit, script.as_deref(), tee).await
                }
                .instrument(span)
            }))
            .buffer_unordered(options.jobs.max(1))
            .collect()
            .await;
        let mut checked = Vec::with_capacity(jobs.len());
        let mut bytes = 0;
        for job in jobs {
            let (compared, copied) = job?;
            checked.push(compared);
            bytes += copied;
        }
        phases.start(Phase::PostData);
        let sequences = copy::source_sequences(reader, trusted, db).await?;
        if !sequences.is_empty() {
            restore.script(db, &copy::setval_sql(&sequences)).await?;
        }
        // Indexes of tables the listing did not return (none expected) and what depends on the keys (foreign keys,
        // triggers, index attachments, comments), in the dump's order.
        let mut rest: String = per_table.into_values().collect();
        rest.push_str(&post.rest_body());
        if !rest.trim().is_empty() {
            restore.script(db, &post.frame(&rest)).await?;
        }

        // Verify before declaring success: the tables compared while copying, the rest, sequences; then the
        // application role reads and writes every table.
        phases.start(Phase::Verify);
        let (checks, large_objects, differences) =
            verify::verify(source, target, db, options.jobs, &units, &sequences, checked, events).await?;
        if !differences.is_empty() {
            return Err(MigrateError::Mismatch { differences });
        }
        let problems = verify::app_access(restore, db, app, &units, &sequences).await?;
        events.event(&MigrateEvent::new(
            db,
            MigrateEventKind::AppRoleChecked { role: app.to_string(), problems: problems.len() },
        ));
        phases.end();
        if !problems.is_empty() {
            return Err(MigrateError::AppRole { role: app.to_string(), side: target.describe(), problems });
        }
        let report = MigrateReport {
            source: source.describe(),
            target: target.describe(),
            database: db.to_string(),
            owner: if keep_owners { "the source's owners".into() } else { app.to_string() },
            app_role: app.to_string(),
            created_roles: created,
            tables: checks,
            large_objects,
            sequences: sequences.iter().map(|s| (s.quoted.clone(), verify::seq_value(s.last, s.called))).collect(),
            bytes,
            seconds: started.elapsed().as_secs_f64(),
            replaced_backup,
            phases: phases.done,
            kept_sql: None,
        };
        Ok(Restored { report, pre, post: post_text, units, sequences })
    }

    /// One table's job: copy it (its stream digested in flight, and kept in `tee` with `--keep-sql`), then compare
    /// it (the target's stream read back while the data is still in cache) while its indexes and keys are built and
    /// it is analysed (`script`). Returns the comparison and the bytes copied.
    async fn table(
        &self,
        source: &Endpoint,
        restore: &Restore,
        unit: &Unit,
        script: Option<&str>,
        tee: Option<std::fs::File>,
    ) -> Result<((TableCheck, Option<Difference>), u64), MigrateError> {
        let db = self.options.database.as_str();
        let copied = copy::copy_unit(self.reader, restore, db, unit, tee, self.events).await?;
        // Reading the table back and building its indexes both only read it: they run side by side (the script
        // builds plain indexes first; a key's ALTER TABLE then waits for the read to end).
        let build = async {
            match script {
                Some(s) => restore.script(db, s).await,
                None => Ok(()),
            }
        };
        let (compared, built) =
            tokio::join!(verify::compare_table(source, self.target, db, unit, Some(copied.digest)), build);
        let compared = compared?;
        verify::report(self.events, &compared);
        built?;
        Ok((compared, copied.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
