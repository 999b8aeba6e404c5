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
    /// Custom volumes deleted (`--purge`, `storage = "volumes"`), as `pool/volume`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub purged_volumes: Vec<String>,
    /// Custom volumes kept (their data is found again by the next install), as `pool/volume`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_volumes: Vec<String>,
    /// State the role keeps in another of the tenant's containers, removed (`--purge`): webmail's database and role
    /// `roundcube` in `-tables`, as `database roundcube in acme-tables`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub purged_elsewhere: Vec<String>,
    /// State the role keeps in another container, kept: without `--purge`, or when that container does not run
    /// (then the reason is named).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_elsewhere: Vec<String>,
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
    let labelled = tenant_volumes(lxd, tenant).await?;
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
        // Custom volumes: those its container attaches (gbo's devices only), and those labelled with the tenant and
        // the role (found again after the container is gone).
        let mut volumes: Vec<(String, String)> = found
            .map(|m| inventory::attached_volumes(&m.instance).into_iter().map(|v| (v.pool, v.volume)).collect())
            .unwrap_or_default();
        for (pool, volume, labelled_role) in &labelled {
            if labelled_role == role.as_str() && !volumes.iter().any(|(p, v)| p == pool && v == volume) {
                volumes.push((pool.clone(), volume.clone()));
            }
        }
        volumes.sort();
        plans.push((name, found.is_some(), role_stack, role_dir, dirs, volumes));
    }
    let mut out = Vec::new();
    for (name, exists, role_stack, role_dir, dirs, volumes) in plans {
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
        let mut purged_volumes = Vec::new();
        let mut kept_volumes = Vec::new();
        for (pool, volume) in volumes {
            if purge {
                let context = || format!("deleting volume {volume} on pool {pool}");
                let pool_name = lxd_client::ObjectName::new(pool.as_str()).map_err(InstallError::lxd(context()))?;
                let volume_name = lxd_client::ObjectName::new(volume.as_str()).map_err(InstallError::lxd(context()))?;
                match lxd.delete_storage_volume(&pool_name, &volume_name).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(InstallError::lxd(context())(e)),
                }
                purged_volumes.push(format!("{pool}/{volume}"));
            } else {
                kept_volumes.push(format!("{pool}/{volume}"));
            }
        }
        out.push(Uninstalled {
            instance: name,
            deleted,
            purged,
            kept,
            purged_volumes,
            kept_volumes,
            purged_elsewhere: Vec::new(),
            kept_elsewhere: Vec::new(),
        });
    }
    // Webmail keeps its state in the tenant's PostgreSQL (database and role `roundcube`): a purge removes it there
    // too, unless tables goes in the same run (its data goes with it).
    if roles.contains(&Role::Webmail) && !roles.contains(&Role::Tables) {
        let webmail = instance_name(tenant, Role::Webmail);
        let tables = instances.iter().find(|m| m.role == Some(Role::Tables)).map(|m| &m.instance);
        let what = |t: &str| format!("database and role {} in {t}", gbo_components::render::postgres::WEBMAIL_DATABASE);
        if let Some(entry) = out.iter_mut().find(|u| u.instance == webmail) {
            match tables {
                Some(t) if purge && t.is_running() => {
                    drop_webmail_database(lxd, &t.name).await?;
                    entry.purged_elsewhere.push(what(&t.name));
                }
                Some(t) if purge => entry.kept_elsewhere.push(format!("{} ({} is not running)", what(&t.name), t.name)),
                Some(t) => entry.kept_elsewhere.push(what(&t.name)),
                None => {}
            }
        }
    }
    Ok(out)
}

/// Drop Roundcube's database (ending its sessions) and role in `tables`, and the marker and password file its
/// creation left, so the next install of webmail creates them again.
async fn drop_webmail_database(lxd: &Client, tables: &str) -> Result<(), InstallError> {
    let context = || format!("dropping webmail's database in {tables}");
    let name = lxd_client::InstanceName::new(tables).map_err(InstallError::lxd(context()))?;
    let port = gbo_components::ports(Role::Tables)
        .into_iter()
        .find(|p| p.name == "postgres")
        .map_or(5432, |p| p.container_port);
    let argv = crate::migrate::psql_as_postgres(port, "postgres", &["-f", "-"]);
    let request = lxd_client::ExecRequest::new(argv)
        .stdin_bytes(gbo_components::render::postgres::webmail_db_drop_sql())
        .timeout(Duration::from_secs(120));
    let output = lxd.exec_output(&name, &request).await.map_err(InstallError::lxd(context()))?;
    super::apply::checked(&name, "psql (drop database roundcube)".into(), output)?;
    Ok(())
}

/// The custom volumes labelled with `tenant` ([`KEY_TENANT`](inventory::KEY_TENANT) in their config, set by
/// install when it creates them), on every pool: `(pool, volume, role)`.
async fn tenant_volumes(lxd: &Client, tenant: &TenantName) -> Result<Vec<(String, String, String)>, InstallError> {
    let mut out = Vec::new();
    for pool in lxd.storage_pools().await.map_err(InstallError::lxd("listing storage pools"))? {
        let Ok(name) = lxd_client::ObjectName::new(pool.name.as_str()) else { continue };
        let volumes = lxd
            .storage_volumes(&name)
            .await
            .map_err(InstallError::lxd(format!("listing volumes of pool {}", pool.name)))?;
        for volume in volumes {
            // Snapshots are listed as `volume/snapshot` with the volume's config: they go with their volume.
            if volume.kind != "custom"
                || volume.name.contains('/')
                || volume.config.get(inventory::KEY_TENANT) != Some(&tenant.to_string())
            {
                continue;
            }
            if let Some(role) = volume.config.get(inventory::KEY_ROLE) {
                out.push((pool.name.clone(), volume.name.clone(), role.clone()));
            }
        }
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
