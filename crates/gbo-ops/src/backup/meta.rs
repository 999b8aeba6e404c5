//! The tenant's description stored with every backup (`/gbo/<tenant>/meta/tenant.json`): what a restore needs to
//! recreate the containers somewhere else.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::inventory::{self, ManagedInstance, Mount, PublishedPort};

/// The file name of the description in the meta snapshot.
pub const FILE: &str = "tenant.json";
/// The directory of the tenant's secrets in the meta snapshot.
pub const SECRETS: &str = "secrets";
/// The tenant file, when one was given.
pub const TENANT_FILE: &str = "gbo.toml";
/// The version of this description's shape.
pub const FORMAT: u32 = 1;

/// A tenant as backed up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TenantMeta {
    /// The shape's version ([`FORMAT`]).
    pub format: u32,
    /// Tenant.
    pub tenant: String,
    /// The backup's id (shared by its snapshots' `backup=` tag).
    pub backup: String,
    /// When (RFC 3339).
    pub taken_at: String,
    /// The gbo that wrote it.
    pub gbo_version: String,
    /// The stack dir recorded on the containers.
    pub stack_dir: Option<PathBuf>,
    /// One entry per container.
    pub roles: Vec<RoleMeta>,
}

/// One container as backed up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoleMeta {
    /// Role (`tables`, `cache`, ...).
    pub role: String,
    /// Container name.
    pub container: String,
    /// Image identity: the container's `image.*` keys (fingerprint, description, gbo roles...).
    pub image: BTreeMap<String, String>,
    /// The idmap base its host data was written under (0: privileged).
    pub idmap_base: Option<u32>,
    /// Its `user.gbo.*` keys and the other keys gbo sets (limits, boot, security), `volatile.*` left out.
    pub config: BTreeMap<String, String>,
    /// Its devices (`gbo-` ones and others), as LXD holds them.
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
    /// Host ports published.
    pub ports: Vec<PublishedPort>,
    /// Host directories mounted (stored in the role's snapshot as `data`, `conf`, `logs`).
    pub mounts: Vec<Mount>,
    /// What "consistent" meant for this role in this backup.
    pub consistency: String,
    /// The role's restic snapshot id.
    pub snapshot: Option<String>,
    /// The tables role's PostgreSQL data as recorded at backup time, checked after a restore (empty for other
    /// roles, a stopped container, and backups written before gbo recorded it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<super::rows::DatabaseRecord>,
    /// The LXD custom volumes mounted (`storage = "volumes"`), stored in the role's snapshot as
    /// `volumes/<data|conf|logs>.tar` (LXD volume backup tarballs); empty in host mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeMeta>,
}

/// One custom volume of a role, as backed up (the device attaching it, its pool and name, where it is mounted):
/// the inventory's description, serialised as it is.
pub type VolumeMeta = inventory::AttachedVolume;

impl RoleMeta {
    /// The description of `instance`.
    pub fn of(instance: &ManagedInstance) -> RoleMeta {
        let lxd = &instance.instance;
        let image = lxd
            .config
            .iter()
            .filter(|(k, _)| k.starts_with("image.") || k.as_str() == "volatile.base_image")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let config = lxd
            .config
            .iter()
            .filter(|(k, _)| !k.starts_with("volatile.") && !k.starts_with("image."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        RoleMeta {
            role: instance.role_label(),
            container: instance.name.to_string(),
            image,
            idmap_base: crate::install::plan::idmap_base(lxd),
            config,
            devices: lxd.devices.clone(),
            ports: instance.ports.clone(),
            mounts: instance.mounts.clone(),
            consistency: String::new(),
            snapshot: None,
            databases: Vec::new(),
            volumes: inventory::attached_volumes(lxd),
        }
    }

    /// The gbo-owned mounts (the ones backed up).
    pub fn gbo_mounts(&self) -> impl Iterator<Item = &Mount> {
        self.mounts.iter().filter(|m| m.device.starts_with(inventory::DEVICE_PREFIX))
    }
}
