//! Snapshots of containers **and** their mounted host data, taken consistently, restored together, listed with
//! what they cover, pruned by tiered retention, and scheduled.
//!
//! A container snapshot goes through the LXD API. The host directories mounted into the container (PostgreSQL's
//! data lives in `<stack-dir>/tables/data`) are captured at the same moment: with the container frozen, each is
//! snapshotted by its filesystem (btrfs subvolume, ZFS dataset) or copied, then LXD takes its snapshot, then the
//! container is thawed. A manifest at `<stack-dir>/.snapshots/<container>/<snapshot>/manifest.json` records what
//! the snapshot covers; snapshots without one (plain `lxc snapshot`) are listed and restored as container-only.

pub mod data;
pub mod duration;
pub mod retention;
pub mod schedule;

use gbo_components::TenantName;
use std::path::PathBuf;
use std::time::Duration;

use lxd_client::{Client, InstanceName, InstanceStatus, ObjectName, SnapshotName, StateAction, StateChange};
use time::OffsetDateTime;

use crate::inventory::{self, ManagedInstance};
use crate::runner::RunError;

pub use data::{CaptureMethod, DataCapture};
pub use duration::{Span, SpanError};
pub use retention::{RetentionPolicy, Verdict};

/// Where snapshot manifests and copies go for containers that record no stack dir.
pub const FALLBACK_STORE: &str = "/var/lib/gbo/snapshots";
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";

/// A snapshot operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// No such container.
    #[error("container `{name}` does not exist (see `lxc list`)")]
    UnknownContainer {
        /// The name given.
        name: String,
    },
    /// The container belongs to no tenant (gbo's containers are named `{tenant}-{role}`).
    #[error(
        "container `{name}` belongs to no tenant: gbo works on `{{tenant}}-{{role}}` containers (see `gbo status`)"
    )]
    NoTenant {
        /// The name given.
        name: String,
    },
    /// No such snapshot.
    #[error("container `{container}` has no snapshot `{snapshot}` (see `gbo snapshot list {container}`)")]
    UnknownSnapshot {
        /// Container.
        container: String,
        /// Snapshot.
        snapshot: String,
    },
    /// A tenant without containers.
    #[error("tenant `{tenant}` has no containers")]
    EmptyTenant {
        /// Tenant.
        tenant: String,
    },
    /// The snapshot name is taken.
    #[error("container `{container}` already has a snapshot `{snapshot}`; choose another name or delete it first")]
    Exists {
        /// Container.
        container: String,
        /// Snapshot.
        snapshot: String,
    },
    /// A name that is not valid.
    #[error("invalid snapshot name `{value}`: use letters, digits, `-`, `_` and `.` (at most 63, starting with a letter or digit)")]
    InvalidName {
        /// The value.
        value: String,
    },
    /// A retention that keeps nothing.
    #[error(transparent)]
    Retention(#[from] retention::EmptyPolicy),
    /// LXD refused or failed.
    #[error(transparent)]
    Lxd(#[from] lxd_client::Error),
    /// A host tool failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Host file work was refused (something planted at a name gbo uses) or failed.
    #[error(transparent)]
    HostFs(#[from] crate::hostfs::HostFsError),
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A restore that failed after it began changing things. The container is left stopped (starting it on a half
    /// restored state could do harm); the state from before the restore is in the safety snapshot, when one was taken.
    #[error("{0}")]
    RestoreFailed(Box<RestoreFailure>),
    /// The captured copy of a host directory is gone (removed by hand?): nothing was touched.
    #[error("the captured data for {} is missing at {}: {} was left as it is", host_path.display(), location.display(), host_path.display())]
    CaptureMissing {
        /// Where the capture should be.
        location: PathBuf,
        /// The host directory it would restore.
        host_path: PathBuf,
    },
    /// A captured directory that is no longer inside the ZFS dataset it was captured from.
    #[error("{} is not inside the ZFS dataset `{dataset}` (mounted at {}) it was captured from: it cannot be restored from that dataset's snapshot", path.display(), mountpoint.display())]
    OutsideDataset {
        /// The host directory.
        path: PathBuf,
        /// The dataset.
        dataset: String,
        /// Its mountpoint when captured.
        mountpoint: PathBuf,
    },
    /// A host mount would hold its own snapshots.
    #[error("the snapshot store {} lies inside the mounted directory {}: set the stack dir elsewhere", store.display(), mount.display())]
    StoreInsideMount {
        /// The store.
        store: PathBuf,
        /// The mount.
        mount: PathBuf,
    },
}

/// What one snapshot holds, written next to its data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Container.
    pub container: String,
    /// Snapshot name.
    pub snapshot: String,
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    /// Whether the container was frozen while its data was captured.
    pub frozen: bool,
    /// The host directories captured.
    pub data: Vec<DataCapture>,
}

/// A snapshot as `gbo snapshot list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotInfo {
    /// Container.
    pub container: String,
    /// Snapshot name.
    pub name: String,
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    /// When LXD expires it (RFC 3339), if ever.
    pub expires_at: Option<String>,
    /// Size in bytes where LXD knows it.
    pub size: Option<i64>,
    /// `container+data` (with the manifest) or `container` (no host data captured).
    pub covers: String,
    /// The host directories captured, if any.
    pub data: Vec<DataCapture>,
    /// The custom volumes snapshotted with it (`storage = "volumes"`), as `pool/volume`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
}

/// Options of [`create`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Expire after this long (LXD deletes the container snapshot; gbo's prune removes the data).
    pub expires: Option<Span>,
}

/// Validate a snapshot name (also a ZFS snapshot and a directory name).
pub fn snapshot_name(value: &str) -> Result<SnapshotName, SnapshotError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(SnapshotError::InvalidName { value: value.to_string() });
    }
    SnapshotName::new(value).map_err(|_| SnapshotError::InvalidName { value: value.to_string() })
}

/// A default snapshot name from the clock: `gbo-20240115-031500`.
pub fn default_name(now: OffsetDateTime) -> String {
    let now = now.to_offset(time::UtcOffset::UTC);
    format!(
        "gbo-{:04}{:02}{:02}-{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Find a container by name; unknown names are an error naming them.
pub async fn container(lxd: &Client, name: &str) -> Result<ManagedInstance, SnapshotError> {
    let unknown = || SnapshotError::UnknownContainer { name: name.to_string() };
    let instance_name = InstanceName::new(name).map_err(|_| unknown())?;
    let instance = lxd.instance_opt(&instance_name).await?.ok_or_else(unknown)?;
    inventory::describe(&instance).ok_or_else(|| SnapshotError::NoTenant { name: name.to_string() })
}

/// Every container of a tenant; a tenant without any is an error.
pub async fn tenant_containers(lxd: &Client, tenant: &TenantName) -> Result<Vec<ManagedInstance>, SnapshotError> {
    let found = inventory::tenant_instances(lxd, tenant).await?;
    if found.is_empty() {
        return Err(SnapshotError::EmptyTenant { tenant: tenant.to_string() });
    }
    Ok(found)
}

/// The directory holding a container's snapshot manifests and copies.
pub fn store_dir(container: &ManagedInstance) -> PathBuf {
    let root =
        container.stack_dir.as_ref().map(|d| d.join(".snapshots")).unwrap_or_else(|| PathBuf::from(FALLBACK_STORE));
    root.join(container.name.as_str())
}

fn lxd_name(container: &ManagedInstance) -> Result<InstanceName, SnapshotError> {
    InstanceName::new(container.name.as_str())
        .map_err(|_| SnapshotError::UnknownContainer { name: container.name.to_string() })
}

/// Read a snapshot's manifest, if it has one.
pub fn read_manifest(container: &ManagedInstance, snapshot: &str) -> Option<Manifest> {
    let path = store_dir(container).join(snapshot).join(MANIFEST);
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Take a snapshot of the container and its mounted host directories, consistently.
pub async fn create(
    lxd: &Client,
    container: &ManagedInstance,
    name: &SnapshotName,
    options: &CreateOptions,
) -> Result<SnapshotInfo, SnapshotError> {
    let span = tracing::info_span!("snapshot_create", container = %container.name, snapshot = %name);
    // The span is attached to the future (not entered): a guard held across `.await` would leak into whatever task
    // the executor polls next (create_many runs several of these concurrently).
    tracing::Instrument::instrument(create_one(lxd, container, name, options), span).await
}

async fn create_one(
    lxd: &Client,
    container: &ManagedInstance,
    name: &SnapshotName,
    options: &CreateOptions,
) -> Result<SnapshotInfo, SnapshotError> {
    let instance = lxd_name(container)?;
    if lxd.snapshots(&instance).await?.iter().any(|s| s.name == name.as_str()) {
        return Err(SnapshotError::Exists { container: container.name.to_string(), snapshot: name.to_string() });
    }
    let store = store_dir(container).join(name.as_str());
    for mount in &container.mounts {
        if store.starts_with(&mount.host_path) {
            return Err(SnapshotError::StoreInsideMount { store, mount: mount.host_path.clone() });
        }
    }
    // Decide every strategy before freezing: nothing slow happens while the container is stopped in time.
    let mut strategies = Vec::new();
    for mount in &container.mounts {
        let path = mount.host_path.clone();
        let strategy = tokio::task::spawn_blocking(move || data::strategy_for(&path)).await.map_err(join_error)??;
        strategies.push((mount.clone(), strategy));
    }
    // Custom volumes (`storage = "volumes"`) are snapshotted by LXD under the same name, in the same freeze.
    let volumes = crate::inventory::attached_volumes(&container.instance);
    for volume in &volumes {
        let (pool, name_of) = volume_names(volume)?;
        if lxd.volume_snapshots(&pool, &name_of).await?.iter().any(|s| s.name == name.as_str()) {
            return Err(SnapshotError::Exists {
                container: format!("{} (volume {})", container.name, volume.label()),
                snapshot: name.to_string(),
            });
        }
    }
    let now = OffsetDateTime::now_utc();
    let expires_at = options.expires.map(|span| rfc3339(now + span.as_time()));
    let running = lxd.instance(&instance).await?.is_running();
    let freeze = running && (!strategies.is_empty() || !volumes.is_empty());
    if freeze {
        lxd.set_state(&instance, &StateChange::new(StateAction::Freeze)).await?;
    }
    let tag = format!("{}@{}", container.name, name);
    let captured = async {
        let mut captures = Vec::new();
        if !strategies.is_empty() {
            crate::hostfs::HostDir::create_root(&store, 0o700)?;
        }
        for (mount, strategy) in &strategies {
            let (host, store, device, tag, strategy) =
                (mount.host_path.clone(), store.clone(), mount.device.clone(), tag.replace('@', "-"), strategy.clone());
            let method = tokio::task::spawn_blocking(move || data::capture(&host, &strategy, &store, &device, &tag))
                .await
                .map_err(join_error)??;
            captures.push(DataCapture {
                device: mount.device.clone(),
                host_path: mount.host_path.clone(),
                container_path: mount.container_path.clone(),
                method,
            });
        }
        for (done, volume) in volumes.iter().enumerate() {
            let (pool, volume_name) = volume_names(volume)?;
            if let Err(e) = lxd.create_volume_snapshot(&pool, &volume_name, name, expires_at.as_deref()).await {
                forget_volume_snapshots(lxd, &volumes[..done], name).await;
                return Err(e.into());
            }
        }
        if let Err(e) = lxd.create_snapshot(&instance, name, expires_at.as_deref()).await {
            forget_volume_snapshots(lxd, &volumes, name).await;
            return Err(e.into());
        }
        Ok::<_, SnapshotError>(captures)
    }
    .await;
    if freeze {
        // Thaw whatever happened above; a container left frozen is worse than a failed snapshot.
        if let Err(e) = lxd.set_state(&instance, &StateChange::new(StateAction::Unfreeze)).await {
            tracing::error!(error = %e, "could not unfreeze the container");
        }
    }
    let captures = match captured {
        Ok(c) => c,
        Err(e) => {
            let _ = data::remove_tree(&store);
            return Err(e);
        }
    };
    let manifest = Manifest {
        container: container.name.to_string(),
        snapshot: name.to_string(),
        taken_at: rfc3339(now),
        frozen: freeze,
        data: captures.clone(),
    };
    if !captures.is_empty() {
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| SnapshotError::Io { path: store.clone(), source: std::io::Error::other(e) })?;
        let store_dir = crate::hostfs::HostDir::open_root(&store)?;
        store_dir.write_file(std::path::Path::new(MANIFEST), text.as_bytes(), 0o600, None, 0o700)?;
    }
    Ok(SnapshotInfo {
        container: container.name.to_string(),
        name: name.to_string(),
        taken_at: manifest.taken_at,
        expires_at,
        size: None,
        covers: covers_label(!captures.is_empty() || !volumes.is_empty()),
        data: captures,
        volumes: volumes.iter().map(|v| v.label()).collect(),
    })
}

fn volume_names(volume: &crate::inventory::AttachedVolume) -> Result<(ObjectName, ObjectName), SnapshotError> {
    let pool = ObjectName::new(volume.pool.as_str()).map_err(SnapshotError::from)?;
    let name = ObjectName::new(volume.volume.as_str()).map_err(SnapshotError::from)?;
    Ok((pool, name))
}

/// Delete the snapshot `name` of `volumes` after a failed create (best effort: the error that stopped the create
/// is the one reported).
async fn forget_volume_snapshots(lxd: &Client, volumes: &[crate::inventory::AttachedVolume], name: &SnapshotName) {
    for volume in volumes {
        if let Ok((pool, volume_name)) = volume_names(volume) {
            if let Err(e) = lxd.delete_volume_snapshot(&pool, &volume_name, name).await {
                tracing::warn!(error = %e, volume = %volume.label(), "could not remove a volume snapshot");
            }
        }
    }
}

/// For each attached volume, the names of its snapshots.
async fn volume_snapshot_names(
    lxd: &Client,
    container: &ManagedInstance,
) -> Result<Vec<(crate::inventory::AttachedVolume, Vec<String>)>, SnapshotError> {
    let mut out = Vec::new();
    for volume in crate::inventory::attached_volumes(&container.instance) {
        let (pool, name) = volume_names(&volume)?;
        let names = lxd.volume_snapshots(&pool, &name).await?.into_iter().map(|s| s.name).collect();
        out.push((volume, names));
    }
    Ok(out)
}

/// Snapshot several containers at once under one name (a tenant): one result per container, in order.
pub async fn create_many(
    lxd: &Client,
    containers: &[ManagedInstance],
    name: &SnapshotName,
    options: &CreateOptions,
) -> Vec<Result<SnapshotInfo, SnapshotError>> {
    futures_util::future::join_all(containers.iter().map(|c| create(lxd, c, name, options))).await
}

fn covers_label(with_data: bool) -> String {
    if with_data { "container+data" } else { "container" }.to_string()
}

/// Every snapshot of a container, oldest first, with what each covers.
pub async fn list(lxd: &Client, container: &ManagedInstance) -> Result<Vec<SnapshotInfo>, SnapshotError> {
    let instance = lxd_name(container)?;
    let volume_snapshots = volume_snapshot_names(lxd, container).await?;
    let mut out: Vec<SnapshotInfo> = lxd
        .snapshots(&instance)
        .await?
        .into_iter()
        .map(|s| {
            let manifest = read_manifest(container, &s.name);
            let data = manifest.map(|m| m.data).unwrap_or_default();
            let volumes: Vec<String> =
                volume_snapshots.iter().filter(|(_, names)| names.contains(&s.name)).map(|(v, _)| v.label()).collect();
            SnapshotInfo {
                container: container.name.to_string(),
                covers: covers_label(!data.is_empty() || !volumes.is_empty()),
                volumes,
                expires_at: s.expiry().map(str::to_string),
                size: s.size,
                taken_at: s.created_at.clone(),
                name: s.name,
                data,
            }
        })
        .collect();
    out.sort_by(|a, b| parse_time(&a.taken_at).cmp(&parse_time(&b.taken_at)).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    /// Container.
    pub container: String,
    /// The snapshot restored.
    pub snapshot: String,
    /// The safety snapshot taken first, if any.
    pub safety_snapshot: Option<String>,
    /// Host directories brought back.
    pub data_restored: Vec<PathBuf>,
    /// Custom volumes brought back, as `pool/volume`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes_restored: Vec<String>,
    /// Whether the container was restarted.
    pub restarted: bool,
}

/// Bring a container and its captured host data back to a snapshot. Takes a data-inclusive safety snapshot first
/// unless `safety` is false.
pub async fn restore(
    lxd: &Client,
    container: &ManagedInstance,
    snapshot: &SnapshotName,
    safety: bool,
) -> Result<RestoreReport, SnapshotError> {
    let instance = lxd_name(container)?;
    let snaps = lxd.snapshots(&instance).await?;
    if !snaps.iter().any(|s| s.name == snapshot.as_str()) {
        return Err(SnapshotError::UnknownSnapshot {
            container: container.name.to_string(),
            snapshot: snapshot.to_string(),
        });
    }
    let manifest = read_manifest(container, snapshot.as_str());
    let volumes: Vec<crate::inventory::AttachedVolume> = volume_snapshot_names(lxd, container)
        .await?
        .into_iter()
        .filter(|(_, names)| names.iter().any(|n| n == snapshot.as_str()))
        .map(|(v, _)| v)
        .collect();
    let safety_snapshot = if safety {
        let base = format!("safety-{}", default_name(OffsetDateTime::now_utc()).trim_start_matches("gbo-"));
        let mut candidate = base.clone();
        let mut n = 1;
        while snaps.iter().any(|s| s.name == candidate) {
            n += 1;
            candidate = format!("{base}-{n}");
        }
        let name = snapshot_name(&candidate)?;
        create(lxd, container, &name, &CreateOptions::default()).await?;
        Some(candidate)
    } else {
        None
    };
    let running = lxd.instance(&instance).await?.is_running();
    if running {
        // Forced: the root filesystem and the captured data are about to be replaced (the safety snapshot holds
        // the current state), so a slow clean shutdown buys nothing.
        set_state_checked(lxd, &instance, StateAction::Stop, InstanceStatus::Stopped).await?;
    }
    let mut data_restored = Vec::new();
    let failed = |step: String, cause: SnapshotError, restored: &[PathBuf]| {
        SnapshotError::RestoreFailed(Box::new(RestoreFailure {
            container: container.name.to_string(),
            snapshot: snapshot.to_string(),
            step,
            cause,
            restored: restored.iter().map(|p| p.display().to_string()).collect(),
            safety: safety_snapshot.clone(),
        }))
    };
    if let Some(manifest) = &manifest {
        for capture in &manifest.data {
            let c = capture.clone();
            let result = match tokio::task::spawn_blocking(move || data::restore(&c)).await {
                Ok(r) => r,
                Err(e) => Err(join_error(e)),
            };
            if let Err(e) = result {
                return Err(failed(format!("restoring host data {}", capture.host_path.display()), e, &data_restored));
            }
            data_restored.push(capture.host_path.clone());
        }
    }
    let mut volumes_restored = Vec::new();
    for volume in &volumes {
        let result = match volume_names(volume) {
            Ok((pool, name)) => lxd.restore_volume_snapshot(&pool, &name, snapshot).await.map_err(SnapshotError::from),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let mut restored: Vec<PathBuf> = data_restored.clone();
            restored.extend(volumes_restored.iter().map(|v: &String| PathBuf::from(format!("volume {v}"))));
            return Err(failed(format!("restoring volume {}", volume.label()), e, &restored));
        }
        volumes_restored.push(volume.label());
    }
    if let Err(e) = lxd.restore_snapshot(&instance, snapshot).await {
        return Err(failed("restoring the container's root filesystem".into(), e.into(), &data_restored));
    }
    if running {
        set_state_checked(lxd, &instance, StateAction::Start, InstanceStatus::Running).await?;
    }
    Ok(RestoreReport {
        container: container.name.to_string(),
        snapshot: snapshot.to_string(),
        safety_snapshot,
        data_restored,
        volumes_restored,
        restarted: running,
    })
}

/// Where a restore stopped, and how to get back.
#[derive(Debug)]
pub struct RestoreFailure {
    /// Container.
    pub container: String,
    /// Snapshot being restored.
    pub snapshot: String,
    /// What was being done.
    pub step: String,
    /// The underlying error.
    pub cause: SnapshotError,
    /// Host directories already restored.
    pub restored: Vec<String>,
    /// The safety snapshot taken first.
    pub safety: Option<String>,
}

impl std::fmt::Display for RestoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "restoring `{}` to `{}` failed while {}: {}. The container is left stopped",
            self.container, self.snapshot, self.step, self.cause
        )?;
        if !self.restored.is_empty() {
            write!(f, "; host data already restored: {}", self.restored.join(", "))?;
        }
        match &self.safety {
            Some(s) => write!(f, "; the state from before is in snapshot `{s}`: `gbo snapshot restore {} {s} --no-safety` brings it back", self.container),
            None => write!(f, "; no safety snapshot was taken (--no-safety)"),
        }
    }
}

/// Delete a snapshot and the host data it captured.
pub async fn delete(lxd: &Client, container: &ManagedInstance, snapshot: &SnapshotName) -> Result<(), SnapshotError> {
    let instance = lxd_name(container)?;
    let exists = lxd.snapshots(&instance).await?.iter().any(|s| s.name == snapshot.as_str());
    let manifest = read_manifest(container, snapshot.as_str());
    if !exists && manifest.is_none() {
        return Err(SnapshotError::UnknownSnapshot {
            container: container.name.to_string(),
            snapshot: snapshot.to_string(),
        });
    }
    for (volume, names) in volume_snapshot_names(lxd, container).await? {
        if names.iter().any(|n| n == snapshot.as_str()) {
            let (pool, name) = volume_names(&volume)?;
            lxd.delete_volume_snapshot(&pool, &name, snapshot).await?;
        }
    }
    if exists {
        lxd.delete_snapshot(&instance, snapshot).await?;
    }
    discard_data(container, snapshot.as_str(), manifest).await
}

async fn discard_data(
    container: &ManagedInstance,
    snapshot: &str,
    manifest: Option<Manifest>,
) -> Result<(), SnapshotError> {
    if let Some(manifest) = manifest {
        for capture in manifest.data {
            tokio::task::spawn_blocking(move || data::discard(&capture)).await.map_err(join_error)??;
        }
    }
    let dir = store_dir(container).join(snapshot);
    tokio::task::spawn_blocking(move || data::remove_tree(&dir)).await.map_err(join_error)?
}

/// What prune decided (and did) for one container.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PruneReport {
    /// Container.
    pub container: String,
    /// Every snapshot, newest first, with why it stays (empty `kept_by`: it goes).
    pub verdicts: Vec<Verdict>,
    /// Whether anything was deleted (false on a dry run).
    pub applied: bool,
    /// Host data left behind by snapshots LXD expired on its own, removed.
    pub orphaned_data_removed: Vec<String>,
}

/// Apply tiered retention to a container's snapshots (every snapshot, gbo's and hand-made). `dry_run` decides
/// without deleting.
pub async fn prune(
    lxd: &Client,
    container: &ManagedInstance,
    policy: RetentionPolicy,
    dry_run: bool,
) -> Result<PruneReport, SnapshotError> {
    policy.validate()?;
    let instance = lxd_name(container)?;
    let snaps = lxd.snapshots(&instance).await?;
    let pairs: Vec<(String, OffsetDateTime)> = snaps
        .iter()
        .map(|s| (s.name.clone(), parse_time(&s.created_at).unwrap_or(OffsetDateTime::UNIX_EPOCH)))
        .collect();
    let verdicts = retention::plan(&pairs, policy);
    // Data of snapshots LXD already expired (`expires_at`) stays on the host until someone removes it.
    let mut orphans = Vec::new();
    if let Ok(entries) = std::fs::read_dir(store_dir(container)) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !snaps.iter().any(|s| s.name == name) && entry.path().join(MANIFEST).exists() {
                orphans.push(name);
            }
        }
    }
    orphans.sort();
    if !dry_run {
        for verdict in verdicts.iter().filter(|v| !v.keep()) {
            let name = snapshot_name(&verdict.name).or_else(|_| {
                SnapshotName::new(verdict.name.as_str())
                    .map_err(|_| SnapshotError::InvalidName { value: verdict.name.clone() })
            })?;
            delete(lxd, container, &name).await?;
        }
        for orphan in &orphans {
            let manifest = read_manifest(container, orphan);
            discard_data(container, orphan, manifest).await?;
        }
    }
    Ok(PruneReport {
        container: container.name.to_string(),
        verdicts,
        applied: !dry_run,
        orphaned_data_removed: if dry_run { Vec::new() } else { orphans },
    })
}

/// Change state; when the request fails (a lost operation, a slow daemon), accept it if the instance did reach
/// the wanted state.
async fn set_state_checked(
    lxd: &Client,
    instance: &InstanceName,
    action: StateAction,
    wanted: InstanceStatus,
) -> Result<(), SnapshotError> {
    let force = action == StateAction::Stop;
    match lxd.set_state(instance, &StateChange::new(action).timeout(Duration::from_secs(60)).force(force)).await {
        Ok(()) => Ok(()),
        Err(e) => {
            let status = lxd.instance(instance).await?.status;
            if status == wanted {
                tracing::debug!(error = %e, "state change reported an error but the instance is {wanted}");
                Ok(())
            } else {
                Err(e.into())
            }
        }
    }
}

fn join_error(e: tokio::task::JoinError) -> SnapshotError {
    SnapshotError::Io { path: PathBuf::from("<blocking task>"), source: std::io::Error::other(e.to_string()) }
}

/// Format a time as RFC 3339.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parse an RFC 3339 time as LXD writes it.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// The path of a snapshot's manifest (for messages and tests).
pub fn manifest_path(container: &ManagedInstance, snapshot: &str) -> PathBuf {
    store_dir(container).join(snapshot).join(MANIFEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_checked_and_defaulted() {
        assert!(snapshot_name("backup-2024-01-15").is_ok());
        for bad in ["", "-x", "a b", "a/b", "a@b", &"x".repeat(64)] {
            let err = snapshot_name(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        assert_eq!(default_name(time::macros::datetime!(2024-01-15 03:15:00 UTC)), "gbo-20240115-031500");
    }
}
