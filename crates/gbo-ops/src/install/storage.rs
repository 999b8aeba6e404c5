//! Where a tenant's role data, configuration and logs live: the one seam between the install engine and the
//! daemon's storage (`storage = "host" | "volumes"` in the tenant file).
//!
//! - [`Storage::Host`]: directories `<stack-dir>/<role>/{data,conf,logs}` on the daemon's host, mounted as disk
//!   devices, created and chowned through `hostfs`, files on them written on the host (the seed's layout; the
//!   default on a local daemon).
//! - [`Storage::Volumes`]: LXD custom volumes `<tenant>-<role>-{data,conf,logs}` on the tenant's pool, attached as
//!   disk devices `source=<volume> pool=<pool>`. gbo touches nothing on the daemon's host: volumes are created
//!   through the API (never deleted but by `uninstall --purge`), their mount points are chowned by an exec inside
//!   the container, files go through LXD's file API with their owner and mode (secrets 0600), health is checked
//!   from inside the container, and snapshots take the volumes with the instance. The default on a remote daemon
//!   or a cluster ([`default_for`]).
//!
//! The mode is recorded on each instance ([`KEY_STORAGE`]); a later run that asks for the other one is refused
//! (the data would stay behind in the old place).

use std::path::PathBuf;

use gbo_components::{Mount, Role, TenantName};
use lxd_client::{Client, DeviceConfig, DiskDevice, Endpoint, ObjectName};

pub use gbo_components::StorageMode;

use super::plan::{HostDir, VolumeDir};
use super::InstallError;
use crate::inventory::ManagedInstance;

/// `user.gbo.storage = "volumes"` on the instances of a tenant whose data lives in custom volumes (absent: host
/// directories, the layout of every install made before storage modes existed).
pub const KEY_STORAGE: &str = "user.gbo.storage";

/// The pool used when neither the tenant file nor the default profile names one.
pub const FALLBACK_POOL: &str = "default";

/// The storage mode a daemon gets when the tenant file does not choose: `volumes` for a remote daemon (HTTPS) or
/// a cluster member (its host directories are not this machine's, or not one machine's), `host` for a local
/// standalone daemon (the seed's layout).
pub async fn default_for(lxd: &Client) -> Result<StorageMode, InstallError> {
    if matches!(lxd.endpoint(), Endpoint::Https { .. }) {
        return Ok(StorageMode::Volumes);
    }
    let server = lxd.server().await.map_err(InstallError::lxd("reading the server's environment"))?;
    Ok(if server.environment.server_clustered { StorageMode::Volumes } else { StorageMode::Host })
}

/// The storage mode a run for `tenant` uses, as [`Storage::resolve`] picks it (without its checks): `asked` (the
/// tenant file's `storage`), else the mode its instances record, else the daemon's [`default_for`]. Commands that
/// work on this host's directories call this first to know whether they need the daemon's host at all
/// (`storage = "volumes"` needs nothing there, so it works through any remote).
pub async fn mode_for_run(
    lxd: &Client,
    tenant: &TenantName,
    asked: Option<StorageMode>,
) -> Result<StorageMode, InstallError> {
    if let Some(asked) = asked {
        return Ok(asked);
    }
    let instances = crate::inventory::tenant_instances(lxd, tenant)
        .await
        .map_err(InstallError::lxd(format!("listing the instances of tenant {tenant}")))?;
    match instances.iter().filter(|m| m.managed).map(recorded_mode).next() {
        Some(recorded) => Ok(recorded),
        None => default_for(lxd).await,
    }
}

/// The custom volume holding `role`'s mount of `kind` for `tenant`: `<tenant>-<role>-<kind>`.
pub fn volume_name(tenant: &TenantName, role: Role, kind: &str) -> String {
    format!("{}-{kind}", gbo_components::instance_name(tenant, role))
}

/// The mode recorded on an instance.
pub fn recorded_mode(instance: &ManagedInstance) -> StorageMode {
    match instance.instance.config.get(KEY_STORAGE).map(String::as_str) {
        Some("volumes") => StorageMode::Volumes,
        _ => StorageMode::Host,
    }
}

/// A tenant's storage, resolved for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Host directories under the stack dir.
    Host {
        /// The absolute stack dir.
        stack_dir: PathBuf,
    },
    /// Custom volumes on a pool.
    Volumes {
        /// The pool.
        pool: String,
    },
}

/// Where one mount of a role lives, and the device that attaches it.
pub(super) struct Placed {
    /// The disk device.
    pub(super) device: DeviceConfig,
    /// The host directory to create and chown (host mode).
    pub(super) host_dir: Option<HostDir>,
    /// The volume to create and chown (volumes mode).
    pub(super) volume: Option<VolumeDir>,
}

impl Storage {
    /// The mode.
    pub fn mode(&self) -> StorageMode {
        match self {
            Storage::Host { .. } => StorageMode::Host,
            Storage::Volumes { .. } => StorageMode::Volumes,
        }
    }

    /// Resolve the storage of `tenant` for a run: the tenant file's choice, else what its instances record, else
    /// the daemon's default; a choice that differs from the recorded one is refused (nothing changed). The pool is
    /// the tenant file's, else the one its volumes are on, else the default profile's root disk pool; a pool that
    /// does not exist is refused naming it.
    pub async fn resolve(
        lxd: &Client,
        tenant: &TenantName,
        asked: Option<StorageMode>,
        asked_pool: Option<&str>,
        stack_dir: &std::path::Path,
        instances: &[ManagedInstance],
    ) -> Result<Storage, InstallError> {
        let recorded = instances.iter().filter(|m| m.managed).map(recorded_mode).next();
        let mode = match (asked, recorded) {
            (Some(asked), Some(recorded)) if asked != recorded => {
                return Err(InstallError::BadInput(format!(
                    "tenant {tenant} keeps its data in {} (recorded in LXD as {KEY_STORAGE}); storage = \"{asked}\" differs: uninstall first (its data stays unless --purge) or drop the setting",
                    describe(recorded)
                )))
            }
            (Some(asked), _) => asked,
            (None, Some(recorded)) => recorded,
            (None, None) => default_for(lxd).await?,
        };
        if mode == StorageMode::Host {
            return Ok(Storage::Host { stack_dir: stack_dir.to_path_buf() });
        }
        let recorded_pool = instances.iter().find_map(|m| {
            m.instance.devices.iter().find_map(|(name, d)| {
                (name.starts_with(crate::inventory::DEVICE_PREFIX) && d.get("type").is_some_and(|t| t == "disk"))
                    .then(|| d.get("pool").cloned())
                    .flatten()
            })
        });
        let pool = match (asked_pool, recorded_pool) {
            (Some(asked), Some(recorded)) if asked != recorded => {
                return Err(InstallError::BadInput(format!(
                    "tenant {tenant} keeps its volumes on pool {recorded}; pool = \"{asked}\" differs: uninstall first or drop the setting"
                )))
            }
            (Some(asked), _) => asked.to_string(),
            (None, Some(recorded)) => recorded,
            (None, None) => default_pool(lxd).await?,
        };
        let name = ObjectName::new(pool.as_str())
            .map_err(|_| InstallError::BadInput(format!("pool = {pool:?}: not a valid storage pool name")))?;
        match lxd.storage_pool(&name).await {
            Ok(_) => Ok(Storage::Volumes { pool }),
            Err(e) if e.is_not_found() => {
                let pools = lxd.storage_pools().await.map_err(InstallError::lxd("listing storage pools"))?;
                let names: Vec<String> = pools.into_iter().map(|p| p.name).collect();
                Err(InstallError::BadInput(format!(
                    "storage pool {pool} does not exist on this daemon (it has: {})",
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                )))
            }
            Err(e) => Err(InstallError::lxd(format!("reading storage pool {pool}"))(e)),
        }
    }

    /// Place one mount of `role`: the disk device and what must exist for it.
    pub(super) fn place(&self, tenant: &TenantName, role: Role, mount: &Mount) -> Result<Placed, InstallError> {
        let name = format!("gbo-{}", mount.kind.as_str());
        let device_name = super::desired::device(&name)?;
        match self {
            Storage::Host { stack_dir } => {
                let host = stack_dir.join(&mount.host_subdir);
                let device = DiskDevice::new(host.display().to_string(), mount.container_path)
                    .to_config(&device_name)
                    .map_err(InstallError::lxd(format!("device {name}")))?;
                Ok(Placed {
                    device,
                    host_dir: Some(HostDir { path: host, uid: mount.owner.uid, gid: mount.owner.gid }),
                    volume: None,
                })
            }
            Storage::Volumes { pool } => {
                let volume = volume_name(tenant, role, mount.kind.as_str());
                let device = DiskDevice::volume(pool.clone(), volume.clone(), mount.container_path)
                    .to_config(&device_name)
                    .map_err(InstallError::lxd(format!("device {name}")))?;
                Ok(Placed {
                    device,
                    host_dir: None,
                    volume: Some(VolumeDir {
                        pool: pool.clone(),
                        volume,
                        path: mount.container_path.to_string(),
                        uid: mount.owner.uid,
                        gid: mount.owner.gid,
                    }),
                })
            }
        }
    }

    /// Where a rendered file at `path` (inside the container) is written on the host, when it lies on a host
    /// mount; `None` when it goes through LXD's file API (the root filesystem, or any file in volumes mode).
    pub(super) fn host_path(&self, mounts: &[Mount], path: &str) -> Option<PathBuf> {
        let Storage::Host { stack_dir } = self else { return None };
        mounts.iter().find_map(|m| {
            path.strip_prefix(m.container_path)
                .and_then(|rest| rest.strip_prefix('/'))
                .map(|rest| stack_dir.join(&m.host_subdir).join(rest))
        })
    }
}

/// "host directories" or "custom volumes".
pub fn describe(mode: StorageMode) -> &'static str {
    match mode {
        StorageMode::Host => "host directories",
        StorageMode::Volumes => "custom volumes",
    }
}

/// The pool of the default profile's root disk, else [`FALLBACK_POOL`].
async fn default_pool(lxd: &Client) -> Result<String, InstallError> {
    let name = ObjectName::new("default").map_err(InstallError::lxd("profile name default"))?;
    let profile = match lxd.profile(&name).await {
        Ok(p) => p,
        Err(e) if e.is_not_found() => return Ok(FALLBACK_POOL.to_string()),
        Err(e) => return Err(InstallError::lxd("reading the default profile")(e)),
    };
    Ok(profile
        .devices
        .values()
        .find(|d| d.get("type").is_some_and(|t| t == "disk") && d.get("path").is_some_and(|p| p == "/"))
        .and_then(|d| d.get("pool").cloned())
        .unwrap_or_else(|| FALLBACK_POOL.to_string()))
}
