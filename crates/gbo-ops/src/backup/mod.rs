//! Whole-tenant backups in a **restic-format repository** (written with `rustic_core`, readable by `restic`):
//! `create`, `list`, `verify`, `restore`, `prune`, `schedule`.
//!
//! One backup of a tenant is a set of restic snapshots sharing the tag `backup=<id>`: one per role (tags `gbo`,
//! `tenant=T`, `role=R`; path `/gbo/T/R` holding the role's `data`, `conf` and `logs`) and one for the tenant's
//! description (`role=meta`, path `/gbo/T/meta`: `tenant.json` with the containers' `user.gbo.*` keys, devices,
//! port allocations, idmap bases and image identity; the tenant file when given; the tenant's `.secrets`). The
//! rooms:
//!
//! - [`repo`]: the password file (0600, never argv or environment), opening or creating a repository, gbo's own
//!   cache dir;
//! - [`lock`]: writers never overlap: a `flock` in the repository plus a restic lock file in `locks/`;
//! - [`source`]: the role directories read through [`crate::hostfs`] (no link followed, links stored as links);
//! - [`volumes`]: `storage = "volumes"` tenants: their custom volumes through LXD's volume backup export/import;
//! - [`capture`]: consistency per role (PostgreSQL `CHECKPOINT` then freeze, Redis `BGSAVE` then freeze, others
//!   frozen) with a thaw that always runs;
//! - [`rows`]: the tables' row counts and checksums recorded under a share lock held through the freeze, and the
//!   check of a restored database against them (the migration's own verification);
//! - [`mod@create`], [`mod@list`], [`mod@verify`], [`mod@restore`], [`mod@prune`], [`schedule`].

pub mod capture;
pub mod create;
pub mod event;
pub mod list;
pub mod lock;
pub mod meta;
pub mod prune;
pub mod repo;
pub mod restore;
pub mod rows;
pub mod schedule;
pub mod source;
pub mod verify;
pub mod volumes;

use std::path::PathBuf;

pub use create::{create, CreateOptions, CreateReport};
pub use event::{BackupEvent, BackupEventKind};
pub use list::{list, BackupInfo};
pub use meta::TenantMeta;
pub use prune::{prune, PruneReport, Retention};
pub use repo::RepoAccess;
pub use restore::{restore, RestoreOptions, RestoreReport};
pub use verify::{verify, VerifyReport};

/// The tag every gbo snapshot carries.
pub const TAG_GBO: &str = "gbo";
/// The role name of the snapshot holding the tenant's description and secrets.
pub const META_ROLE: &str = "meta";

/// A backup operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The password file is missing, unreadable, empty or readable by others.
    #[error("password file {}: {reason}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No key of the repository opens with the password.
    #[error("wrong password for the repository {}: no key opens with the password in {}", repo.display(), password_file.display())]
    WrongPassword {
        /// Repository.
        repo: PathBuf,
        /// Password file.
        password_file: PathBuf,
    },
    /// The path holds something that is not a restic repository.
    #[error("{} is not a restic repository (no `config` file) and not empty: name an empty or new directory to create one", repo.display())]
    NotARepository {
        /// Repository.
        repo: PathBuf,
    },
    /// The repository does not exist (read-only commands never create one).
    #[error("no repository at {}", repo.display())]
    NoRepository {
        /// Repository.
        repo: PathBuf,
    },
    /// Another gbo run holds the repository.
    #[error("the repository {} is in use by {holder} (waited {waited_secs} s)", repo.display())]
    Locked {
        /// Repository.
        repo: PathBuf,
        /// Who holds it.
        holder: String,
        /// How long we waited.
        waited_secs: u64,
    },
    /// A restic process (or another tool) holds a lock in `locks/` that conflicts.
    #[error("the repository {} is locked by {detail} (lock file {}); if that process is gone, `restic unlock` removes stale locks", repo.display(), file.display())]
    ForeignLock {
        /// Repository.
        repo: PathBuf,
        /// The lock file.
        file: PathBuf,
        /// Who holds it, as the lock says.
        detail: String,
    },
    /// A tenant without containers.
    #[error("tenant `{tenant}` has no containers (see `gbo status --tenant {tenant}`)")]
    EmptyTenant {
        /// Tenant.
        tenant: String,
    },
    /// No backup of the tenant in the repository.
    #[error("the repository {} holds no backup of tenant `{tenant}`{}", repo.display(), id.as_ref().map(|i| format!(" with id `{i}`")).unwrap_or_default())]
    NoBackup {
        /// Tenant.
        tenant: String,
        /// Repository.
        repo: PathBuf,
        /// The id asked for.
        id: Option<String>,
    },
    /// Bad input (a value and what is allowed).
    #[error("{0}")]
    BadInput(String),
    /// A restore onto a tenant that exists, without `--replace`.
    #[error("tenant `{tenant}` exists on this LXD ({containers}); add --replace to snapshot it and restore over it, or --as NEW to restore beside it")]
    TenantExists {
        /// Tenant.
        tenant: String,
        /// Its containers.
        containers: String,
    },
    /// Making a role consistent failed (nothing was read).
    #[error("{container}: {detail}")]
    Quiesce {
        /// Container.
        container: String,
        /// What failed.
        detail: String,
    },
    /// The restored PostgreSQL data differs from what the backup recorded (or the application role cannot use it).
    #[error("the restored data of {container} does not match backup {backup}: {}{}", differences.iter().map(|d| format!("{}: {}", d.object, d.what)).collect::<Vec<_>>().join("; "), if *left_in_place { "; the restored tenant is left in place for inspection" } else { "" })]
    RowsDiffer {
        /// The restored tables container.
        container: String,
        /// The backup.
        backup: String,
        /// What differs, by table.
        differences: Vec<crate::migrate::Difference>,
        /// Whether the restored tenant stays as restored (a `--replace` over volumes is undone instead).
        left_in_place: bool,
    },
    /// A restore over a tenant (`--replace` of a volumes-mode backup) left a component unhealthy.
    #[error("after the restore over tenant `{tenant}`, not healthy: {detail}")]
    Unhealthy {
        /// Tenant.
        tenant: String,
        /// The unhealthy components and why.
        detail: String,
    },
    /// A `--replace` restore over volumes failed after it changed things, and the tenant was put back.
    #[error("{cause}; the restore was undone: tenant `{tenant}` was put back from snapshot {snapshot} (its containers, volumes and secrets as they were before); {health}")]
    ReplaceUndone {
        /// Tenant.
        tenant: String,
        /// The safety snapshot it was put back from.
        snapshot: String,
        /// The put-back containers' health (`healthy again: ...`, or the ones that are not yet and why).
        health: String,
        /// Why the restore failed.
        cause: Box<BackupError>,
    },
    /// A `--replace` restore over volumes failed, and putting the tenant back failed too.
    #[error("{cause}; putting tenant `{tenant}` back from snapshot {snapshot} failed too: {undo}; `gbo snapshot restore CONTAINER {snapshot} --no-safety` brings each of its containers and their volumes back")]
    ReplaceUndoFailed {
        /// Tenant.
        tenant: String,
        /// The safety snapshot.
        snapshot: String,
        /// Why the restore failed.
        cause: Box<BackupError>,
        /// Why putting it back failed.
        undo: Box<BackupError>,
    },
    /// The repository library failed.
    #[error("{context}")]
    Repository {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: Box<rustic_core::RusticError>,
    },
    /// LXD refused or failed.
    #[error(transparent)]
    Lxd(#[from] lxd_client::Error),
    /// Host file work was refused (something planted) or failed.
    #[error(transparent)]
    HostFs(#[from] crate::hostfs::HostFsError),
    /// Install (used by restore) failed.
    #[error(transparent)]
    Install(Box<crate::install::InstallError>),
    /// A snapshot (restore --replace) failed.
    #[error(transparent)]
    Snapshot(Box<crate::snapshot::SnapshotError>),
    /// A host tool failed.
    #[error(transparent)]
    Run(#[from] crate::runner::RunError),
    /// A file operation failed.
    #[error("{}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::install::InstallError> for BackupError {
    fn from(e: crate::install::InstallError) -> Self {
        BackupError::Install(Box::new(e))
    }
}

impl From<crate::snapshot::SnapshotError> for BackupError {
    fn from(e: crate::snapshot::SnapshotError) -> Self {
        BackupError::Snapshot(Box::new(e))
    }
}

impl BackupError {
    /// Wrap a repository library error with what was being done.
    pub fn repository(context: impl Into<String>) -> impl FnOnce(Box<rustic_core::RusticError>) -> BackupError {
        let context = context.into();
        move |source| BackupError::Repository { context, source }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BackupError {
        let path = path.into();
        move |source| BackupError::Io { path, source }
    }
}

pub(crate) fn join_error(e: tokio::task::JoinError) -> BackupError {
    BackupError::Io { path: PathBuf::from("<blocking task>"), source: std::io::Error::other(e.to_string()) }
}

/// The virtual path of a role in the snapshots of a tenant: `/gbo/<tenant>/<role>`.
pub fn snapshot_path(tenant: &str, role: &str) -> PathBuf {
    PathBuf::from("/gbo").join(tenant).join(role)
}
