//! `gbo backup prune --keep-daily 7 --keep-weekly 4 ...`: restic's retention rules (`forget`), applied to whole
//! backups of a tenant (a backup is kept or forgotten with all its snapshots, decided by its time), then restic's
//! `prune` (data no snapshot uses removed). Only gbo's snapshots of the named tenant are ever considered.

use std::collections::BTreeSet;
use std::time::Duration;

use rustic_core::repofile::SnapshotFile;
use rustic_core::{KeepOptions, PruneOptions};

use super::list::tag_value;
use super::lock::{self, Mode};
use super::{join_error, BackupError, RepoAccess, META_ROLE, TAG_GBO};

/// How many backups to keep, per restic's rules (`--keep-last`, `--keep-hourly`, ...): the newest backup of each
/// of the last N hours/days/weeks/months/years that have one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    /// `--keep-last`.
    pub last: Option<u32>,
    /// `--keep-hourly`.
    pub hourly: Option<u32>,
    /// `--keep-daily`.
    pub daily: Option<u32>,
    /// `--keep-weekly`.
    pub weekly: Option<u32>,
    /// `--keep-monthly`.
    pub monthly: Option<u32>,
    /// `--keep-yearly`.
    pub yearly: Option<u32>,
}

impl Retention {
    /// Whether it keeps nothing (refused: prune would remove every backup).
    pub fn is_empty(&self) -> bool {
        [self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly]
            .iter()
            .all(|v| v.is_none_or(|n| n == 0))
    }

    fn keep_options(&self) -> KeepOptions {
        let n = |v: Option<u32>| v.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        let mut keep = KeepOptions::default();
        keep.keep_last = n(self.last);
        keep.keep_hourly = n(self.hourly);
        keep.keep_daily = n(self.daily);
        keep.keep_weekly = n(self.weekly);
        keep.keep_monthly = n(self.monthly);
        keep.keep_yearly = n(self.yearly);
        keep
    }
}

/// What prune decided and did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PruneReport {
    /// Backups kept, with restic's reasons.
    pub kept: Vec<(String, Vec<String>)>,
    /// Backups forgotten (their snapshots deleted), incomplete ones included.
    pub forgotten: Vec<String>,
    /// Snapshots deleted.
    pub snapshots_removed: usize,
    /// Whether anything was changed (false on a dry run).
    pub applied: bool,
}

/// Backups kept, each with restic's reasons.
pub type Kept = Vec<(String, Vec<String>)>;

/// Decide which backups of `tenant` stay: restic's rules on the complete backups (their meta snapshots);
/// incomplete backups (no meta snapshot: a killed run) go.
pub fn decide(
    snaps: &[SnapshotFile],
    tenant: &str,
    retention: &Retention,
) -> Result<(Kept, BTreeSet<String>), BackupError> {
    let ours: Vec<&SnapshotFile> = snaps
        .iter()
        .filter(|s| s.tags.contains(TAG_GBO) && tag_value(s, "tenant").as_deref() == Some(tenant))
        .collect();
    let metas: Vec<SnapshotFile> =
        ours.iter().filter(|s| tag_value(s, "role").as_deref() == Some(META_ROLE)).map(|s| (*s).clone()).collect();
    let now = rustic_core::jiff::Zoned::now();
    let decided =
        retention.keep_options().apply(metas, &now).map_err(BackupError::repository("applying the retention"))?;
    let mut kept = Vec::new();
    for item in decided.iter().filter(|f| f.keep) {
        if let Some(id) = tag_value(&item.snapshot, "backup") {
            kept.push((id, item.reasons.clone()));
        }
    }
    let keep_ids: BTreeSet<&String> = kept.iter().map(|(id, _)| id).collect();
    let forgotten: BTreeSet<String> =
        ours.iter().filter_map(|s| tag_value(s, "backup")).filter(|id| !keep_ids.contains(id)).collect();
    Ok((kept, forgotten))
}

/// Apply `retention` to `tenant`'s backups; `dry_run` decides without changing anything.
pub async fn prune(
    access: &RepoAccess,
    tenant: &str,
    retention: Retention,
    dry_run: bool,
    lock_wait: Duration,
) -> Result<PruneReport, BackupError> {
    if retention.is_empty() {
        return Err(BackupError::BadInput(
            "prune needs at least one --keep-* value above 0 (it would remove every backup)".into(),
        ));
    }
    if !access.exists() {
        return Err(BackupError::NoRepository { repo: access.repo.clone() });
    }
    let mode = if dry_run { Mode::Read } else { Mode::Exclusive };
    let mut repo_lock = lock::flock(&access.repo, mode, lock_wait).await?;
    let access = access.clone();
    let tenant = tenant.to_string();
    let (repo, snaps) = tokio::task::spawn_blocking({
        let access = access.clone();
        move || -> Result<_, BackupError> {
            let repo = access.open()?;
            let snaps = repo.get_all_snapshots().map_err(BackupError::repository("reading the snapshots"))?;
            Ok((repo, snaps))
        }
    })
    .await
    .map_err(join_error)??;
    let _stale_removed = repo_lock.add_restic_lock(&access.repo, &repo.key(), mode)?;
    let (kept, forgotten) = decide(&snaps, &tenant, &retention)?;
    let ids: Vec<_> = snaps
        .iter()
        .filter(|s| {
            s.tags.contains(TAG_GBO)
                && tag_value(s, "tenant").as_deref() == Some(tenant.as_str())
                && tag_value(s, "backup").is_some_and(|b| forgotten.contains(&b))
        })
        .map(|s| s.id)
        .collect();
    let removed = ids.len();
    if !dry_run && !ids.is_empty() {
        tokio::task::spawn_blocking(move || -> Result<(), BackupError> {
            repo.delete_snapshots(&ids).map_err(BackupError::repository("deleting snapshots"))?;
            let options = PruneOptions::default();
            let plan = repo.prune_plan(&options).map_err(BackupError::repository("planning the prune"))?;
            repo.prune(&options, plan).map_err(BackupError::repository("pruning unused data"))
        })
        .await
        .map_err(join_error)??;
    }
    Ok(PruneReport { kept, forgotten: forgotten.into_iter().collect(), snapshots_removed: removed, applied: !dry_run })
}
