//! Uninstall: delete a tenant's containers; with `--purge`, only the host directories its own containers record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gbo_components::{instance_name, Role, TenantName};
use lxd_client::Client;

use super::{lock, tenancy, InstallError};
use crate::hostfs;
use crate::inventory::{self, ManagedInstance};

/// What uninstall did for one role.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Uninstalled {
    /// Instance.
    pub instance: String,
    /// Whether an instance was deleted.
    pub deleted: bool,
    /// Host data removed (`--purge`), or kept.
    pub purged: Option<PathBuf>,
    /// Host data kept.
    pub kept: Option<PathBuf>,
}

/// Delete the instances of `roles`; with `purge`, also their host directories (secrets are kept: they belong to
/// the tenant). Without purge a later install finds the data.
///
/// Holds the tenant lock. `--purge` removes only directories recorded on the tenant's own containers (the mounts
/// of the role's container, or, once it is gone, the role's directory under the stack dir its other containers
/// record), never one that another tenant's containers use (refused before anything is deleted), and never
/// follows a link (`hostfs`).
pub async fn uninstall(
    lxd: &Client,
    tenant: &TenantName,
    roles: &[Role],
    purge: bool,
    lock_wait: Duration,
) -> Result<Vec<Uninstalled>, InstallError> {
    let _lock = lock::acquire_recorded(lxd, tenant, lock_wait).await?;
    let everything: Vec<ManagedInstance> = lxd
        .instances()
        .await
        .map_err(InstallError::lxd("listing instances"))?
        .iter()
        .filter_map(inventory::describe)
        .collect();
    let claims = tenancy::Claims::of(&everything);
    let instances: Vec<&ManagedInstance> = everything.iter().filter(|m| &m.tenant == tenant).collect();
    let stack_dir = instances.iter().find_map(|m| m.stack_dir.clone());
    // What each role's purge removes: decided (and refused) before anything is deleted.
    let mut plans = Vec::new();
    for role in roles {
        let name = instance_name(tenant, *role);
        let found = instances.iter().find(|m| m.name.as_str() == name).copied();
        let role_stack = found.and_then(|m| m.stack_dir.clone()).or_else(|| stack_dir.clone());
        let role_dir = role_stack.as_ref().map(|s| s.join(role.container_suffix()));
        let mut dirs: Vec<PathBuf> = match found {
            // gbo's own mounts only: a disk added by hand (a shared directory) is never purged.
            Some(m) => m
                .mounts
                .iter()
                .filter(|mount| mount.device.starts_with(inventory::DEVICE_PREFIX))
                .map(|mount| mount.host_path.clone())
                .collect(),
            None => Vec::new(),
        };
        if let Some(dir) = &role_dir {
            dirs.push(dir.clone());
        }
        if purge {
            for dir in &dirs {
                if let Some(claim) = claims.used_by_another(tenant.as_str(), dir) {
                    return Err(InstallError::BadInput(format!(
                        "--purge of {name} would remove {}, which tenant {} uses ({} on its container {});                          nothing was changed",
                        dir.display(),
                        claim.tenant,
                        claim.path.display(),
                        claim.instance
                    )));
                }
            }
        }
        plans.push((name, found.is_some(), role_stack, role_dir, dirs));
    }
    let mut out = Vec::new();
    for (name, exists, role_stack, role_dir, dirs) in plans {
        let mut deleted = false;
        if exists {
            let n = lxd_client::InstanceName::new(name.clone())
                .map_err(InstallError::lxd(format!("instance name {name}")))?;
            deleted = lxd.delete_instance_if_exists(&n).await.map_err(InstallError::lxd(format!("deleting {name}")))?;
        }
        let present = role_dir.as_ref().filter(|d| d.exists()).cloned();
        let (purged, kept) = match (present, purge) {
            (Some(dir), true) => {
                for path in &dirs {
                    remove_recorded(role_stack.as_deref(), path)?;
                }
                (Some(dir), None)
            }
            (Some(dir), false) => (None, Some(dir)),
            (None, _) => (None, None),
        };
        out.push(Uninstalled { instance: name, deleted, purged, kept });
    }
    Ok(out)
}

/// Remove a recorded host directory without following a link: from the stack dir when it lies below it, else
/// from its parent (both recorded by gbo, never by a container).
pub(super) fn remove_recorded(stack_dir: Option<&Path>, path: &Path) -> Result<(), InstallError> {
    let (root, rel) = match stack_dir.filter(|s| path.starts_with(s) && path != *s) {
        Some(stack) => (stack, path.strip_prefix(stack).unwrap_or(path)),
        None => match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => (parent, Path::new(name)),
            _ => return Err(InstallError::BadInput(format!("{} cannot be purged", path.display()))),
        },
    };
    if let Some(root) = hostfs::HostDir::open_root_if_exists(root)? {
        root.remove(rel)?;
    }
    Ok(())
}
