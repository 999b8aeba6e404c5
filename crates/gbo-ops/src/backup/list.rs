//! `gbo backup list`: the backups in a repository, grouped by their `backup=` tag.

use std::collections::BTreeMap;
use std::time::Duration;

use rustic_core::repofile::SnapshotFile;

use super::lock::{self, Mode};
use super::{join_error, BackupError, RepoAccess, META_ROLE, TAG_GBO};

/// One backup (a set of snapshots sharing a `backup=` tag).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupInfo {
    /// The backup id.
    pub backup: String,
    /// Tenant.
    pub tenant: String,
    /// When its first snapshot was taken (RFC 3339).
    pub time: String,
    /// Host that took it.
    pub hostname: String,
    /// The roles stored (`meta` included when complete).
    pub roles: Vec<String>,
    /// The snapshot id of each role.
    pub snapshots: BTreeMap<String, String>,
    /// Whether the tenant's description was stored (a backup killed half-way has none and cannot be restored).
    pub complete: bool,
    /// Bytes read for it.
    pub bytes: u64,
}

/// The value of a `key=value` tag of a snapshot.
pub fn tag_value(snap: &SnapshotFile, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    snap.tags.to_string().split(',').find_map(|t| t.strip_prefix(&prefix).map(str::to_string))
}

/// Group gbo's snapshots into backups, oldest first; only `tenant`'s when given.
pub fn group(snaps: Vec<SnapshotFile>, tenant: Option<&str>) -> Vec<BackupInfo> {
    let mut by_id: BTreeMap<String, BackupInfo> = BTreeMap::new();
    for snap in snaps {
        if !snap.tags.contains(TAG_GBO) {
            continue;
        }
        let (Some(id), Some(t), Some(role)) =
            (tag_value(&snap, "backup"), tag_value(&snap, "tenant"), tag_value(&snap, "role"))
        else {
            continue;
        };
        if tenant.is_some_and(|want| want != t) {
            continue;
        }
        let time = snap.time.timestamp().to_string();
        let entry = by_id.entry(id.clone()).or_insert_with(|| BackupInfo {
            backup: id,
            tenant: t,
            time: time.clone(),
            hostname: snap.hostname.clone(),
            roles: Vec::new(),
            snapshots: BTreeMap::new(),
            complete: false,
            bytes: 0,
        });
        if time < entry.time {
            entry.time = time;
        }
        entry.complete |= role == META_ROLE;
        entry.bytes += snap.summary.as_ref().map(|s| s.total_bytes_processed).unwrap_or(0);
        entry.snapshots.insert(role.clone(), snap.id.to_string());
        entry.roles.push(role);
    }
    let mut out: Vec<BackupInfo> = by_id.into_values().collect();
    for b in &mut out {
        b.roles.sort();
    }
    out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.backup.cmp(&b.backup)));
    out
}

/// The backups in the repository (of `tenant` when given), oldest first.
pub async fn list(access: &RepoAccess, tenant: Option<&str>) -> Result<Vec<BackupInfo>, BackupError> {
    if !access.exists() {
        return Err(BackupError::NoRepository { repo: access.repo.clone() });
    }
    let _lock = lock::flock(&access.repo, Mode::Read, Duration::from_secs(60)).await?;
    let access = access.clone();
    let snaps = tokio::task::spawn_blocking(move || -> Result<Vec<SnapshotFile>, BackupError> {
        let repo = access.open()?;
        repo.get_all_snapshots().map_err(BackupError::repository("reading the snapshots"))
    })
    .await
    .map_err(join_error)??;
    Ok(group(snaps, tenant))
}
