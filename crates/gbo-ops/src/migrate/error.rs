//! What can go wrong in a migration, and the findings an error carries: what a target holds ([`Contents`]) and
//! what differs ([`Difference`]). The lowest room: every other one returns these.

use crate::runner::RunError;

/// PostgreSQL's limit on a name (NAMEDATALEN - 1), in bytes.
pub const MAX_NAME_BYTES: usize = 63;
/// The most concurrent COPY streams a migration runs.
pub const MAX_JOBS: usize = 64;

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
    /// `--jobs` out of range.
    #[error("invalid --jobs {0}: use a number from 1 to {MAX_JOBS}")]
    InvalidJobs(usize),
    /// A tenant name that is not one.
    #[error("invalid --tenant `{value}`: {reason}")]
    InvalidTenant {
        /// The value given (control characters escaped).
        value: String,
        /// Why it is not a tenant name.
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
    /// The tables container cannot be found or read.
    #[error(transparent)]
    TablesContainer(crate::snapshot::SnapshotError),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_name_every_kind_they_hold() {
        assert!(Contents::default().is_empty());
        let c = Contents { relations: 2, large_objects: 1, ..Contents::default() };
        assert!(!c.is_empty());
        assert_eq!(c.to_string(), "2 relation(s) (tables, views or sequences), 1 large object(s)");
        let c = Contents { functions: 1, types: 3, schemas: 1, extensions: 2, ..Contents::default() };
        assert_eq!(c.to_string(), "1 function(s), 3 type(s), 1 schema(s), 2 extension(s)");
    }
}
