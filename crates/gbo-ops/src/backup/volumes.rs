//! Tenants with `storage = "volumes"`: their roles' data, conf and logs live in LXD custom volumes that may be on
//! another machine, so they are read and written only through LXD's API, never the host filesystem.
//!
//! - **Backup**: while the role is quiesced (the same [`super::capture`] steps as host mode: PostgreSQL checkpoint
//!   and share locks, Redis `BGSAVE`, then the container frozen), LXD makes a backup of each volume (`POST
//!   .../volumes/custom/<vol>/backups`, `volume_only`, `compression_algorithm: none`); the container is thawed as
//!   soon as LXD has them. Each tarball is then exported (streamed into a private `0700` staging directory of
//!   gbo's) and stored in the role's snapshot as `volumes/<kind>.tar`; the LXD backups are deleted whatever
//!   happened. The tarballs are plain (uncompressed), so restic's content-defined chunking finds the unchanged
//!   files of the next backup: a small change adds little.
//! - **Restore**: each tarball is imported as a new volume `<tenant>-<role>-<kind>` on the target's pool (`POST
//!   .../volumes/custom` octet-stream, `X-LXD-name`) before the install engine creates the containers, which
//!   attach the volumes that exist. LXD shifts the files to the new container's idmap itself. Over an existing
//!   tenant (`--replace`, after the safety snapshot): imported beside the real volume ([`import_staged`]), then
//!   the real volume's content replaced by it ([`replace_content`]) while its containers are stopped.

use std::path::{Path, PathBuf};

use lxd_client::{BackupName, BackupOptions, Client, ObjectName};

use super::meta::VolumeMeta;
use super::BackupError;

/// The name of the LXD backups gbo takes of a role's volumes for backup `backup` (`gbo-<id>`, lower case).
pub fn lxd_backup_name(backup: &str) -> Result<BackupName, BackupError> {
    BackupName::new(format!("gbo-{}", backup.to_ascii_lowercase()))
        .map_err(|e| BackupError::BadInput(format!("backup name for LXD: {e}")))
}

fn names(volume: &VolumeMeta) -> Result<(ObjectName, ObjectName), BackupError> {
    let bad = |e: lxd_client::Error| BackupError::BadInput(format!("volume {}/{}: {e}", volume.pool, volume.volume));
    Ok((ObjectName::new(volume.pool.as_str()).map_err(bad)?, ObjectName::new(volume.volume.as_str()).map_err(bad)?))
}

/// Have LXD back up every volume of the role (called while the role is quiesced). On failure the backups already
/// taken are deleted.
pub async fn take(lxd: &Client, volumes: &[VolumeMeta], name: &BackupName) -> Result<(), BackupError> {
    let options = BackupOptions::new().instance_only(true).compression("none");
    for (i, volume) in volumes.iter().enumerate() {
        let (pool, vol) = names(volume)?;
        if let Err(e) = lxd.create_volume_backup(&pool, &vol, name, &options).await {
            drop_backups(lxd, &volumes[..i], name).await;
            return Err(e.into());
        }
    }
    Ok(())
}

/// Export the backups [`take`] made into `dir` (a private directory of gbo's): one `<kind>.tar` per volume.
pub async fn export(
    lxd: &Client,
    volumes: &[VolumeMeta],
    name: &BackupName,
    dir: &Path,
) -> Result<Vec<(VolumeMeta, PathBuf)>, BackupError> {
    let mut out = Vec::new();
    for volume in volumes {
        let (pool, vol) = names(volume)?;
        let path = dir.join(format!("{}.tar", volume.kind()));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(BackupError::io(&path))?;
        lxd.export_volume_backup_to(&pool, &vol, name, &mut file).await?;
        tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(BackupError::io(&path))?;
        out.push((volume.clone(), path));
    }
    Ok(out)
}

/// Delete the LXD backups named `name` of `volumes` (best effort: a failure is logged, the daemon's own expiry
/// is not relied on).
pub async fn drop_backups(lxd: &Client, volumes: &[VolumeMeta], name: &BackupName) {
    for volume in volumes {
        let Ok((pool, vol)) = names(volume) else { continue };
        if let Err(e) = lxd.delete_volume_backup(&pool, &vol, name).await {
            tracing::warn!(volume = %volume.volume, error = %e, "could not delete the LXD volume backup");
        }
    }
}

/// Create the volume `volume` on `pool` from the tarball `file` (refused, naming it, when it exists).
pub async fn import(lxd: &Client, pool: &str, volume: &str, file: &Path) -> Result<(), BackupError> {
    let bad = |e: lxd_client::Error| BackupError::BadInput(format!("volume {pool}/{volume}: {e}"));
    let (pool_name, name) = (ObjectName::new(pool).map_err(bad)?, ObjectName::new(volume).map_err(bad)?);
    if lxd.storage_volume(&pool_name, &name).await?.is_some() {
        return Err(BackupError::BadInput(format!(
            "custom volume {volume} exists on pool {pool} of this LXD (an uninstall without --purge keeps it): \
             add --replace, delete it, or restore --as NEW"
        )));
    }
    let tarball = tokio::fs::File::open(file).await.map_err(BackupError::io(file))?;
    lxd.import_volume_backup(&pool_name, tarball, &name).await?;
    Ok(())
}

/// The name `restore --replace` imports a backed-up volume under before it puts that content into the real one:
/// `<volume>-restoring` (no tenant's volume ends so: kinds are `data`, `conf`, `logs`).
pub fn staging_name(volume: &str) -> String {
    format!("{volume}-restoring")
}

fn object_names(pool: &str, volume: &str) -> Result<(ObjectName, ObjectName), BackupError> {
    let bad = |e: lxd_client::Error| BackupError::BadInput(format!("volume {pool}/{volume}: {e}"));
    Ok((ObjectName::new(pool).map_err(bad)?, ObjectName::new(volume).map_err(bad)?))
}

/// Whether the custom volume exists on `pool`.
pub async fn exists(lxd: &Client, pool: &str, volume: &str) -> Result<bool, BackupError> {
    let (pool, name) = object_names(pool, volume)?;
    Ok(lxd.storage_volume(&pool, &name).await?.is_some())
}

/// Import the tarball `file` under [`staging_name`]`(volume)` for `restore --replace`; returns that name. A volume
/// of that name is a leftover of an interrupted restore (a copy of a backed-up volume, which the repository still
/// holds): it is deleted first.
pub async fn import_staged(lxd: &Client, pool: &str, volume: &str, file: &Path) -> Result<String, BackupError> {
    let staged = staging_name(volume);
    let (pool_name, name) = object_names(pool, &staged)?;
    if lxd.storage_volume(&pool_name, &name).await?.is_some() {
        tracing::warn!(volume = %staged, "deleting the volume an interrupted restore left");
        lxd.delete_storage_volume(&pool_name, &name).await?;
    }
    let tarball = tokio::fs::File::open(file).await.map_err(BackupError::io(file))?;
    lxd.import_volume_backup(&pool_name, tarball, &name).await?;
    Ok(staged)
}

/// The key in which LXD records the idmap a custom volume's files are written in; when it differs from the
/// container's, LXD shifts the files at the next start.
const IDMAP_LAST: &str = "volatile.idmap.last";

/// Replace `volume`'s content with `staged`'s (LXD's refresh: the volume keeps its name, configuration and
/// snapshots, so the `pre-restore-*` snapshot stays on it), record the idmap the staged files are written in (the
/// imported volume's `volatile.idmap.last`, so LXD shifts them to the container's at the next start exactly as it
/// would for the imported volume itself), then delete `staged`. The containers using `volume` must be stopped.
pub async fn replace_content(lxd: &Client, pool: &str, volume: &str, staged: &str) -> Result<(), BackupError> {
    let (pool_name, name) = object_names(pool, volume)?;
    let (_, staged_name) = object_names(pool, staged)?;
    let source = lxd.storage_volume(&pool_name, &staged_name).await?.ok_or_else(|| {
        BackupError::BadInput(format!("the imported volume {staged} on pool {pool} is gone (deleted by hand?)"))
    })?;
    lxd.refresh_storage_volume(&pool_name, &name, &staged_name).await?;
    let mut config = lxd
        .storage_volume(&pool_name, &name)
        .await?
        .ok_or_else(|| BackupError::BadInput(format!("volume {volume} on pool {pool} is gone (deleted by hand?)")))?
        .config;
    let before = config.get(IDMAP_LAST).cloned();
    match source.config.get(IDMAP_LAST) {
        Some(map) => config.insert(IDMAP_LAST.to_string(), map.clone()),
        None => config.remove(IDMAP_LAST),
    };
    if config.get(IDMAP_LAST) != before.as_ref() {
        lxd.update_storage_volume_config(&pool_name, &name, config).await?;
    }
    lxd.delete_storage_volume(&pool_name, &staged_name).await?;
    Ok(())
}

/// Delete the volume if it exists (best effort: a failure is logged).
pub async fn remove_if_exists(lxd: &Client, pool: &str, volume: &str) {
    let Ok((pool_name, name)) = object_names(pool, volume) else { return };
    match lxd.storage_volume(&pool_name, &name).await {
        Ok(Some(_)) => {
            if let Err(e) = lxd.delete_storage_volume(&pool_name, &name).await {
                tracing::warn!(volume, error = %e, "could not delete a temporary volume");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(volume, error = %e, "could not read a temporary volume"),
    }
}
