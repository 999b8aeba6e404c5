//! `gbo backup create`: one backup of a whole tenant (see the module documentation of [`super`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gbo_components::TenantName;
use lxd_client::Client;
use rustic_core::{BackupOptions, IndexedIdsStatus, Repository, SnapshotOptions};

use super::capture::{self, Method};
use super::event::{BackupEvent, BackupEventKind};
use super::lock::{self, Mode};
use super::meta::{self, RoleMeta, TenantMeta};
use super::rows;
use super::source::{mount_path, TreeSource};
use super::volumes;
use super::{join_error, snapshot_path, BackupError, RepoAccess, META_ROLE, TAG_GBO};
use crate::events::Observer;
use crate::hostfs::{HostDir, PrivateDir};
use crate::inventory::{self, ManagedInstance};

/// Options of [`create`].
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The tenant file to store with the backup, if any.
    pub tenant_file: Option<PathBuf>,
    /// How long to wait for another run on the repository.
    pub lock_wait: Duration,
    /// Where a volumes-mode tenant's volume tarballs are exported before they are stored (a private directory
    /// is made there for each role and removed after it).
    pub staging_parent: PathBuf,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self { tenant_file: None, lock_wait: Duration::from_secs(60), staging_parent: std::env::temp_dir() }
    }
}

/// One role's snapshot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoleReport {
    /// Role.
    pub role: String,
    /// Container.
    pub container: String,
    /// restic snapshot id.
    pub snapshot: String,
    /// How it was made consistent.
    pub consistency: String,
    /// Files read.
    pub files: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Bytes added to the repository.
    pub added: u64,
}

/// What a backup stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CreateReport {
    /// Tenant.
    pub tenant: String,
    /// Repository.
    pub repo: PathBuf,
    /// The backup id (tag `backup=<id>`).
    pub backup: String,
    /// Whether the repository was created by this run.
    pub created_repository: bool,
    /// The meta snapshot's id.
    pub meta_snapshot: String,
    /// One per container.
    pub roles: Vec<RoleReport>,
    /// Containers found frozen (a killed earlier run) and thawed first.
    pub thawed: Vec<String>,
    /// Bytes added to the repository in total.
    pub added: u64,
}

/// A new backup id: the UTC time and 4 random hex digits (`20240115T031500Z-1a2b`).
pub fn new_backup_id(now: time::OffsetDateTime) -> String {
    use rand::Rng;
    let now = now.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{:04x}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        rand::rngs::OsRng.gen::<u16>()
    )
}

/// The tags of a role's snapshot.
pub fn tags(tenant: &str, role: &str, backup: &str) -> String {
    format!("{TAG_GBO},tenant={tenant},role={role},backup={backup}")
}

type Indexed = Arc<Repository<IndexedIdsStatus>>;

/// Back up every container of `tenant` into the repository (created when the directory is missing or empty).
pub async fn create(
    lxd: &Client,
    tenant: &TenantName,
    access: &RepoAccess,
    options: &CreateOptions,
    events: &dyn Observer<BackupEvent>,
) -> Result<CreateReport, BackupError> {
    let instances = inventory::tenant_instances(lxd, tenant).await?;
    if instances.is_empty() {
        return Err(BackupError::EmptyTenant { tenant: tenant.to_string() });
    }
    let tenant_file = match &options.tenant_file {
        Some(path) => Some(std::fs::read(path).map_err(BackupError::io(path))?),
        None => None,
    };
    let stack_dir = instances.iter().find_map(|m| m.stack_dir.clone());
    let _tenant_lock = match &stack_dir {
        Some(dir) if dir.is_dir() => {
            Some(crate::install::lock::acquire(dir, tenant.as_str(), options.lock_wait).await?)
        }
        _ => None,
    };

    events.event(&BackupEvent::step("repository", format!("locking {}", access.repo.display())));
    create_repo_dir(&access.repo)?;
    let mut repo_lock = lock::flock(&access.repo, Mode::Append, options.lock_wait).await?;
    let opened = access.clone();
    let chunker =
        super::repo::chunker_for(instances.iter().any(|m| !inventory::attached_volumes(&m.instance).is_empty()));
    let (repo, created) =
        tokio::task::spawn_blocking(move || opened.open_or_init(chunker)).await.map_err(join_error)??;
    for stale in repo_lock.add_restic_lock(&access.repo, &repo.key(), Mode::Append)? {
        events.event(&BackupEvent::step(
            "repository",
            format!("removed the stale lock {} (its process is gone)", stale.display()),
        ));
    }
    let repo: Indexed = Arc::new(
        tokio::task::spawn_blocking(move || repo.to_indexed_ids())
            .await
            .map_err(join_error)?
            .map_err(BackupError::repository("reading the repository's index"))?,
    );
    events.event(&BackupEvent::new(
        "repository",
        BackupEventKind::Done {
            detail: if created { "created and locked".into() } else { "opened and locked".into() },
        },
    ));

    let mut thawed = Vec::new();
    for instance in &instances {
        if capture::thaw_if_frozen(lxd, instance).await? {
            thawed.push(instance.name.to_string());
            events.event(&BackupEvent::step(
                instance.name.as_str(),
                "was frozen (a killed earlier run?): thawed before starting",
            ));
        }
    }
    let instances = inventory::tenant_instances(lxd, tenant).await?;

    let backup = new_backup_id(time::OffsetDateTime::now_utc());
    let mut roles = Vec::new();
    let mut role_metas = Vec::new();
    for instance in &instances {
        let subject = instance.name.to_string();
        match backup_role(lxd, &repo, tenant, instance, &backup, stack_dir.as_deref(), &options.staging_parent, events)
            .await
        {
            Ok((report, role_meta)) => {
                events.event(&BackupEvent::new(
                    subject,
                    BackupEventKind::Stored {
                        snapshot: report.snapshot.clone(),
                        files: report.files,
                        bytes: report.bytes,
                        added: report.added,
                    },
                ));
                roles.push(report);
                role_metas.push(role_meta);
            }
            Err(e) => {
                events.event(&BackupEvent::new(subject, BackupEventKind::Failed { error: e.to_string() }));
                return Err(e);
            }
        }
    }

    // The description last: a backup without it (a run killed half-way) is incomplete, and list/restore skip it.
    let meta = TenantMeta {
        format: meta::FORMAT,
        tenant: tenant.to_string(),
        backup: backup.clone(),
        taken_at: crate::snapshot::rfc3339(time::OffsetDateTime::now_utc()),
        gbo_version: env!("CARGO_PKG_VERSION").to_string(),
        stack_dir: stack_dir.clone(),
        roles: role_metas,
    };
    events.event(&BackupEvent::step("tenant", "storing the tenant's description and secrets"));
    let root = snapshot_path(tenant.as_str(), META_ROLE);
    let mut source = TreeSource::new();
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| BackupError::io(meta::FILE)(std::io::Error::other(e)))?;
    source.add_bytes(&root.join(meta::FILE), json, 0o600);
    if let Some(bytes) = tenant_file {
        source.add_bytes(&root.join(meta::TENANT_FILE), bytes, 0o600);
    }
    if let Some(dir) = &stack_dir {
        if let Some(stack) = HostDir::open_root_if_exists(dir)? {
            if let Some(secrets) = stack.open_dir(Path::new(".secrets"))? {
                source.add_tree(&root.join(meta::SECRETS), secrets)?;
            }
        }
    }
    source.finish();
    let (meta_snapshot, stats) = archive(&repo, source, &tags(tenant.as_str(), META_ROLE, &backup), root, None).await?;
    events.event(&BackupEvent::new(
        "tenant",
        BackupEventKind::Stored { snapshot: meta_snapshot.clone(), files: stats.0, bytes: stats.1, added: stats.2 },
    ));
    let added = roles.iter().map(|r| r.added).sum::<u64>() + stats.2;
    Ok(CreateReport {
        tenant: tenant.to_string(),
        repo: access.repo.clone(),
        backup,
        created_repository: created,
        meta_snapshot,
        roles,
        thawed,
        added,
    })
}

fn create_repo_dir(repo: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(repo).map_err(BackupError::io(repo))
}

#[allow(clippy::too_many_arguments)]
async fn backup_role(
    lxd: &Client,
    repo: &Indexed,
    tenant: &TenantName,
    instance: &ManagedInstance,
    backup: &str,
    stack_dir: Option<&Path>,
    staging_parent: &Path,
    events: &dyn Observer<BackupEvent>,
) -> Result<(RoleReport, RoleMeta), BackupError> {
    let subject = instance.name.as_str();
    let role = instance.role_label();
    let method = capture::method_for(instance);
    let mut role_meta = RoleMeta::of(instance);
    role_meta.consistency = method.describe().to_string();
    match method {
        Method::PostgresCheckpoint => events.event(&BackupEvent::step(subject, "CHECKPOINT")),
        Method::RedisBgsave => events.event(&BackupEvent::step(subject, "BGSAVE")),
        _ => {}
    }
    // PostgreSQL: every table locked IN SHARE MODE (writers wait) and its rows recorded, the locks held through the
    // freeze, so the record is what the copy holds.
    let locks = if method == Method::PostgresCheckpoint {
        events.event(&BackupEvent::step(subject, "locking the tables (writers wait) and recording their rows"));
        let name = lxd_client::InstanceName::new(subject).map_err(|e| BackupError::BadInput(e.to_string()))?;
        let (locks, records) = rows::lock_and_record(lxd, &name).await?;
        let tables: usize = records.iter().map(|r| r.tables.len()).sum();
        events.event(&BackupEvent::step(subject, format!("{tables} tables recorded")));
        role_meta.databases = records;
        Some(locks)
    } else {
        None
    };
    // Volumes mode: LXD backs the volumes up while the role is quiesced; they are exported after the thaw.
    let volumes = role_meta.volumes.clone();
    let lxd_backup = volumes::lxd_backup_name(backup)?;
    let captured = async {
        capture::prepare(lxd, instance, method, stack_dir).await?;
        let frozen = capture::freeze(lxd, instance, method).await?;
        if frozen {
            events.event(&BackupEvent::step(subject, "frozen; reading"));
        }
        let result = if volumes.is_empty() {
            read_role(repo, tenant, instance, &role, backup, stack_dir, events).await.map(Some)
        } else {
            events.event(&BackupEvent::step(subject, format!("LXD backs up {} volume(s)", volumes.len())));
            volumes::take(lxd, &volumes, &lxd_backup).await.map(|()| None)
        };
        if frozen {
            // Whatever happened above: a container left frozen is worse than a failed backup.
            if let Err(e) = capture::thaw(lxd, instance).await {
                tracing::error!(container = %instance.name, error = %e, "could not thaw the container");
                if result.as_ref().is_ok_and(Option::is_none) {
                    volumes::drop_backups(lxd, &volumes, &lxd_backup).await;
                }
                return Err(e);
            }
        }
        match result? {
            Some(read) => Ok(read),
            None => {
                events.event(&BackupEvent::step(subject, "thawed; exporting the volumes"));
                let read = read_volumes(
                    lxd,
                    repo,
                    tenant,
                    &role,
                    backup,
                    &volumes,
                    &lxd_backup,
                    staging_parent,
                    (subject, events),
                )
                .await;
                volumes::drop_backups(lxd, &volumes, &lxd_backup).await;
                read
            }
        }
    }
    .await;
    if let Some(locks) = locks {
        locks.release().await;
    }
    let result = captured;
    let (snapshot, (files, bytes, added)) = result?;
    role_meta.snapshot = Some(snapshot.clone());
    Ok((
        RoleReport {
            role,
            container: instance.name.to_string(),
            snapshot,
            consistency: method.describe().to_string(),
            files,
            bytes,
            added,
        },
        role_meta,
    ))
}

/// Open a mounted host directory: below the stack dir through hostfs (no link followed below the operator's
/// root), anything else as a root the operator named.
pub(crate) fn open_mount(stack_dir: Option<&Path>, host_path: &Path) -> Result<Option<HostDir>, BackupError> {
    if let Some(stack) = stack_dir {
        if let Ok(rel) = host_path.strip_prefix(stack) {
            let Some(root) = HostDir::open_root_if_exists(stack)? else { return Ok(None) };
            return Ok(root.open_dir(rel)?);
        }
    }
    Ok(HostDir::open_root_if_exists(host_path)?)
}

async fn read_role(
    repo: &Indexed,
    tenant: &TenantName,
    instance: &ManagedInstance,
    role: &str,
    backup: &str,
    stack_dir: Option<&Path>,
    events: &dyn Observer<BackupEvent>,
) -> Result<(String, (u64, u64, u64)), BackupError> {
    let root = snapshot_path(tenant.as_str(), role);
    let mounts: Vec<_> =
        instance.mounts.iter().filter(|m| m.device.starts_with(inventory::DEVICE_PREFIX)).cloned().collect();
    let stack = stack_dir.map(Path::to_path_buf);
    let list_root = root.clone();
    let source = tokio::task::spawn_blocking(move || -> Result<TreeSource, BackupError> {
        let mut source = TreeSource::new();
        for mount in &mounts {
            let Some(dir) = open_mount(stack.as_deref(), &mount.host_path)? else { continue };
            source.add_tree(&mount_path(&list_root, &mount.device), dir)?;
        }
        source.finish();
        Ok(source)
    })
    .await
    .map_err(join_error)??;
    archive(repo, source, &tags(tenant.as_str(), role, backup), root, Some((instance.name.as_str(), events))).await
}

/// Export the LXD backups of a role's volumes into a private staging directory and store them as
/// `/gbo/<tenant>/<role>/volumes/<kind>.tar`.
#[allow(clippy::too_many_arguments)]
async fn read_volumes(
    lxd: &Client,
    repo: &Indexed,
    tenant: &TenantName,
    role: &str,
    backup: &str,
    volumes: &[meta::VolumeMeta],
    lxd_backup: &lxd_client::BackupName,
    staging_parent: &Path,
    (subject, events): (&str, &dyn Observer<BackupEvent>),
) -> Result<(String, (u64, u64, u64)), BackupError> {
    let staging = PrivateDir::new(staging_parent, "gbo-backup-")?;
    let files = volumes::export(lxd, volumes, lxd_backup, staging.path()).await?;
    let root = snapshot_path(tenant.as_str(), role);
    let mut source = TreeSource::new();
    source.add_dir(&root.join("volumes"), 0o700);
    for (volume, file) in &files {
        let at = root.join("volumes").join(format!("{}.tar", volume.kind()));
        source.add_private_file(&at, file).map_err(BackupError::io(file))?;
    }
    source.finish();
    let stored = archive(repo, source, &tags(tenant.as_str(), role, backup), root, Some((subject, events))).await;
    drop(staging);
    stored
}

/// How often a running archive reports the bytes read.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Store `source` as a snapshot at `root` with `tags`: its id and (files, bytes read, bytes added). While it
/// runs, `progress` (a subject and the observer) gets a [`BackupEventKind::Progress`] every [`PROGRESS_EVERY`]
/// with the bytes read of the bytes listed, and once more when it ends.
async fn archive(
    repo: &Indexed,
    source: TreeSource,
    tags: &str,
    root: PathBuf,
    progress: Option<(&str, &dyn Observer<BackupEvent>)>,
) -> Result<(String, (u64, u64, u64)), BackupError> {
    let (read, total) = (source.read_counter(), source.bytes());
    let work = archive_blocking(repo, source, tags, root);
    let Some((subject, events)) = progress else { return work.await };
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    let report = |bytes: u64| {
        events.event(&BackupEvent::new(subject, BackupEventKind::Progress { bytes, total: Some(total) }));
    };
    loop {
        tokio::select! {
            done = &mut work => {
                // The last count (all of it, when the archive succeeded).
                report(read.load(std::sync::atomic::Ordering::Relaxed));
                return done;
            }
            _ = tick.tick() => report(read.load(std::sync::atomic::Ordering::Relaxed)),
        }
    }
}

async fn archive_blocking(
    repo: &Indexed,
    source: TreeSource,
    tags: &str,
    root: PathBuf,
) -> Result<(String, (u64, u64, u64)), BackupError> {
    let repo = repo.clone();
    let tags = tags.to_string();
    tokio::task::spawn_blocking(move || {
        let fail = BackupError::repository(format!("storing {}", root.display()));
        let snap = SnapshotOptions::default()
            .add_tags(&tags)
            .and_then(|o| o.to_snapshot())
            .map_err(BackupError::repository("preparing the snapshot"))?;
        let snap = repo.archive(&BackupOptions::default(), &source, snap, std::slice::from_ref(&root)).map_err(fail)?;
        let summary = snap.summary.clone().unwrap_or_default();
        Ok((
            snap.id.to_string(),
            (summary.total_files_processed, summary.total_bytes_processed, summary.data_added_packed),
        ))
    })
    .await
    .map_err(join_error)?
}
