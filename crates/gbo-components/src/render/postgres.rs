//! PostgreSQL 15 (Debian 12) configuration: `postgresql.conf`, `pg_hba.conf`, `pg_ident.conf` and the
//! idempotent SQL that creates `gbuser` and the `botserver` database.

use std::fmt::Write as _;

/// Debian 12's PostgreSQL major version.
pub const PG_MAJOR: u32 = 15;
/// Directory of the server binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The cluster's data directory, on the data mount.
pub const PGDATA: &str = "/opt/gbo/data/pgdata";
/// The application role.
pub const APP_USER: &str = "gbuser";
/// The application database.
pub const APP_DATABASE: &str = "botserver";
/// The `pg_ident` map name used by local peer authentication.
pub const IDENT_MAP: &str = "gbo";
/// The marker the init SQL leaves behind once it ran.
pub const INIT_MARKER: &str = "/opt/gbo/data/.gbo-tables-initialised";
/// Roundcube's PostgreSQL role (webmail's state lives in the tenant's tables).
pub const WEBMAIL_USER: &str = "roundcube";
/// Roundcube's database, owned by [`WEBMAIL_USER`].
pub const WEBMAIL_DATABASE: &str = "roundcube";
/// Left by [`webmail_db_sql`] once webmail's role and database exist.
pub const WEBMAIL_DB_MARKER: &str = "/opt/gbo/data/.gbo-webmail-db-created";

/// `postgresql.conf`: loopback only, data under the data mount, logs to stderr (the journal of `tables.service`).
pub fn postgresql_conf(port: u16) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", super::HEADER);
    let _ = writeln!(
        out,
        "# Only loopback: other containers and the host reach this port through LXD proxy devices.
listen_addresses = '127.0.0.1'
port = {port}
data_directory = '{PGDATA}'
hba_file = '/opt/gbo/conf/pg_hba.conf'
ident_file = '/opt/gbo/conf/pg_ident.conf'
unix_socket_directories = '/var/run/postgresql'
max_connections = 100
shared_buffers = 128MB
password_encryption = scram-sha-256
log_destination = 'stderr'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
datestyle = 'iso, mdy'
lc_messages = 'C.UTF-8'
default_text_search_config = 'pg_catalog.english'"
    );
    out
}

/// `pg_hba.conf`: local connections by peer identity through the `gbo` map, TCP from loopback with SCRAM.
/// Never `trust`.
pub fn pg_hba_conf() -> String {
    format!(
        "{}
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 peer map={IDENT_MAP}
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
",
        super::HEADER
    )
}

/// `pg_ident.conf`: root may act as gbuser (the seed's `psql -U gbuser botserver`) and as postgres; each service
/// user as itself.
pub fn pg_ident_conf() -> String {
    format!(
        "{}
# MAPNAME  SYSTEM-USERNAME  PG-USERNAME
{IDENT_MAP}        root             {APP_USER}
{IDENT_MAP}        root             postgres
{IDENT_MAP}        postgres         postgres
{IDENT_MAP}        gbuser           gbuser
",
        super::HEADER
    )
}

/// The SQL run once after the first start (as `postgres`, over the socket): creates or updates `gbuser` with its
/// password and creates `botserver` owned by it, then leaves [`INIT_MARKER`]. Idempotent. Holds the password: a
/// secret file, never a command argument.
pub fn init_sql(password: &str) -> String {
    format!(
        "-- Rendered by gbo; holds a secret. Run once with psql -f as postgres.
\\set ON_ERROR_STOP on
DO $gbo$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_USER}') THEN
    CREATE ROLE {APP_USER} LOGIN PASSWORD '{password}';
  ELSE
    ALTER ROLE {APP_USER} LOGIN PASSWORD '{password}';
  END IF;
END
$gbo$;
SELECT 'CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{APP_DATABASE}') \\gexec
\\! touch {INIT_MARKER}
"
    )
}

/// The SQL that removes what [`webmail_db_sql`] made (`uninstall webmail --purge`): Roundcube's database (its
/// sessions ended first), its role, the marker and the rendered file that holds the role's password, so a later
/// install of webmail creates them again. Idempotent; no secret. Run with `psql -f -` as postgres.
pub fn webmail_db_drop_sql() -> String {
    format!(
        "\\set ON_ERROR_STOP on
DROP DATABASE IF EXISTS {WEBMAIL_DATABASE} WITH (FORCE);
DROP ROLE IF EXISTS {WEBMAIL_USER};
\\! rm -f {WEBMAIL_DB_MARKER} {WEBMAIL_DB_SQL_PATH}
"
    )
}

/// Where tables keeps [`webmail_db_sql`] (a secret file, 0600 postgres).
pub const WEBMAIL_DB_SQL_PATH: &str = "/etc/gbo/webmail-db.sql";

/// The SQL that creates (or re-passwords) Roundcube's login role [`WEBMAIL_USER`] and its database
/// [`WEBMAIL_DATABASE`] owned by it, closed to every other role, then leaves [`WEBMAIL_DB_MARKER`]. Idempotent. Holds
/// the password: a secret file, run with `psql -f` as postgres.
pub fn webmail_db_sql(password: &str) -> String {
    format!(
        "-- Rendered by gbo; holds a secret. Run once with psql -f as postgres.
\\set ON_ERROR_STOP on
DO $gbo$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{WEBMAIL_USER}') THEN
    CREATE ROLE {WEBMAIL_USER} LOGIN PASSWORD '{password}';
  ELSE
    ALTER ROLE {WEBMAIL_USER} LOGIN PASSWORD '{password}';
  END IF;
END
$gbo$;
SELECT 'CREATE DATABASE {WEBMAIL_DATABASE} OWNER {WEBMAIL_USER}'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{WEBMAIL_DATABASE}') \\gexec
REVOKE ALL ON DATABASE {WEBMAIL_DATABASE} FROM PUBLIC;
\\! touch {WEBMAIL_DB_MARKER}
"
    )
}
