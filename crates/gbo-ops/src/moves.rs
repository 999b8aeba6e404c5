//! Moving a tenant's containers between cluster members: `gbo move` (one container) and `gbo evacuate` (every gbo
//! container off one member, dependencies first).
//!
//! A move is: check both members are online (a container on an offline member cannot be read, so it is refused,
//! naming the member), snapshot (container and its data, through [`crate::snapshot`]), stop, copy its custom volumes
//! when they are on a member-local pool, move (LXD copies the root volume and its snapshots to the target member's
//! pool), rewire (its ports follow it to its new member's address and its dependents' wires are re-pointed:
//! [`crate::install::wiring::rewire`]), start, health, and only then delete the volumes left on the origin. If
//! anything after the stop fails, the container goes back to its origin and is started again there, with the
//! origin's volumes untouched and the copies deleted; the error says what failed and how the rollback went.
//!
//! Volumes (storage mode `volumes`) on a pool local to each member (btrfs, ZFS, dir, LVM: the cluster's usual case)
//! are copied through LXD's API alone, so the members may be other machines: LXD 5.0 has no volume copy between
//! members (`cluster_internal_custom_volume_copy` came later), so each volume is backed up on the origin
//! (`POST .../volumes/custom/<v>/backups?target=<from>`, snapshots included, in the driver's own format on btrfs and
//! ZFS, uncompressed), and the export's stream is the body of the import on the destination
//! (`POST .../volumes/custom?target=<to>`, same name: a member-local pool holds one name once per member). Nothing is
//! staged on the machine running gbo. The volumes' snapshots travel with them, so gbo's data snapshots (the move's
//! own included) stay restorable on the new member. Volumes on a remote pool (Ceph) are every member's and need
//! nothing.
//!
//! Host data (storage mode `host`) stays where it is: the members here share this machine's filesystem
//! ([`crate::site::Site::shares_host`]); containers with host mounts on members elsewhere are refused.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use gbo_components::{Role, TenantName};
use lxd_client::{BackupName, BackupOptions, Client, ClusterMember, InstanceName, ObjectName};
use tokio::io::{AsyncRead, ReadBuf};

use crate::events::{Observer, Outcome, Subject};
use crate::install::health::{self, Health};
use crate::inventory::{self, ManagedInstance};
use crate::site::Site;

/// Why a move or an evacuation did not happen or failed.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The request cannot be done as asked (nothing was changed).
    #[error("{0}")]
    Refused(String),
    /// LXD refused a request or could not be reached.
    #[error("LXD: {context}")]
    Lxd {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: lxd_client::Error,
    },
    /// The snapshot before the move failed (nothing was moved).
    #[error("snapshot of {container} before the move")]
    Snapshot {
        /// The container.
        container: String,
        /// The cause.
        #[source]
        source: crate::snapshot::SnapshotError,
    },
    /// The move failed after the container was stopped; `rollback` says how going back went.
    #[error("moving {container} to {to} failed: {reason}; rollback: {rollback}")]
    Failed {
        /// The container.
        container: String,
        /// The target member.
        to: String,
        /// What failed.
        reason: String,
        /// What the rollback did.
        rollback: String,
    },
}

fn lxd_error(context: impl Into<String>) -> impl FnOnce(lxd_client::Error) -> MoveError {
    let context = context.into();
    move |source| MoveError::Lxd { context, source }
}

/// What happens to one container during a move.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MoveEvent {
    /// The container.
    pub instance: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: MoveEventKind,
}

/// The kinds of [`MoveEvent`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MoveEventKind {
    /// A step begins (`snapshot gbo-move-...`, `stop`, `copy pool/volume m1 -> m2`, `move m1 -> m2`, `start`,
    /// `health`, `delete pool/volume on m1`).
    Step {
        /// The step.
        description: String,
    },
    /// Bytes of a volume's backup sent from the origin to the destination so far.
    Copying {
        /// `pool/volume`.
        volume: String,
        /// Bytes sent.
        bytes: u64,
    },
    /// Moved, started and healthy.
    Moved {
        /// Where it is now.
        member: String,
        /// Seconds the move took, snapshot included.
        seconds: f64,
    },
    /// Failed (rolled back when it could be).
    Failed {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for MoveEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            MoveEventKind::Step { description } => write!(f, "{}: {description}", self.instance),
            MoveEventKind::Copying { volume, bytes } => {
                write!(f, "{}: copy {volume}: {} sent", self.instance, crate::events::human_bytes(*bytes))
            }
            MoveEventKind::Moved { member, seconds } => {
                write!(f, "{}: on {member}, healthy ({seconds:.1} s)", self.instance)
            }
            MoveEventKind::Failed { reason } => write!(f, "{}: FAILED: {reason}", self.instance),
        }
    }
}

impl Subject for MoveEvent {
    fn subject(&self) -> &str {
        &self.instance
    }

    fn finished(&self) -> Option<Outcome> {
        match &self.kind {
            MoveEventKind::Moved { .. } => Some(Outcome::Succeeded),
            MoveEventKind::Failed { .. } => Some(Outcome::Failed),
            MoveEventKind::Step { .. } | MoveEventKind::Copying { .. } => None,
        }
    }

    fn progress(&self) -> Option<(u64, Option<u64>)> {
        match &self.kind {
            MoveEventKind::Copying { bytes, .. } => Some((*bytes, None)),
            _ => None,
        }
    }
}

/// One planned move.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedMove {
    /// The container.
    pub container: String,
    /// Its role.
    pub role: Option<Role>,
    /// Where it is.
    pub from: String,
    /// Where it goes.
    pub to: String,
}

/// The result of one move.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Moved {
    /// The container.
    pub container: String,
    /// Where it was.
    pub from: String,
    /// Where it is now.
    pub to: String,
    /// The snapshot taken before the move (`None`: already there, nothing done).
    pub snapshot: Option<String>,
    /// Health after the start.
    pub health: Option<Health>,
    /// Seconds for the whole move.
    pub seconds: f64,
    /// The custom volumes copied to the new member (`pool/volume`; none when it has none on a member-local pool).
    pub volumes: Vec<String>,
    /// Bytes of volume backups sent from the origin to the new member.
    pub copied_bytes: u64,
    /// What could not be cleaned up after the move succeeded (a volume left on the origin, and why).
    pub notes: Vec<String>,
}

/// How long a moved container may take to become healthy.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(90);

/// The cluster's members, or a refusal when the daemon is no cluster.
async fn members(lxd: &Client) -> Result<(Site, Vec<ClusterMember>), MoveError> {
    let site = Site::observe(lxd, None).await.map_err(lxd_error("reading the cluster state"))?;
    if !site.clustered {
        return Err(MoveError::Refused(format!(
            "{} is not a cluster: there is no other member to move to",
            lxd.endpoint().describe()
        )));
    }
    let members = site.members.clone();
    Ok((site, members))
}

fn check_online(members: &[ClusterMember], name: &str, what: &str) -> Result<(), MoveError> {
    match members.iter().find(|m| m.server_name == name) {
        None => Err(MoveError::Refused(format!(
            "{what} {name} is not a member of the cluster (members: {})",
            members.iter().map(|m| m.server_name.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        Some(m) if !m.is_online() => Err(MoveError::Refused(format!(
            "{what} {name} is {} ({}): nothing can be moved {} it until it is back online; nothing was changed",
            m.status,
            m.message,
            if what == "source member" { "away from" } else { "to" }
        ))),
        Some(_) => Ok(()),
    }
}

/// Move `container` to member `to`: snapshot, stop, move, start, health; back to its origin on failure.
pub async fn move_container(
    lxd: &Client,
    container: &ManagedInstance,
    to: &str,
    events: &dyn Observer<MoveEvent>,
) -> Result<Moved, MoveError> {
    let started = Instant::now();
    let (site, members) = members(lxd).await?;
    let name = container.name.clone();
    // Where the listing saw it: a member that is not online cannot even be read (LXD answers 500).
    check_online(&members, &container.instance.location, "source member")?;
    // Read it again: where it is now.
    let instance = lxd.instance(&name).await.map_err(lxd_error(format!("reading {name}")))?;
    let from = instance.location.clone();
    check_online(&members, &from, "source member")?;
    check_online(&members, to, "target member")?;
    if from == to {
        return Ok(Moved {
            container: name.to_string(),
            from: from.clone(),
            to: to.to_string(),
            snapshot: None,
            health: None,
            seconds: 0.0,
            volumes: Vec::new(),
            copied_bytes: 0,
            notes: Vec::new(),
        });
    }
    if !container.mounts.is_empty() && !site.shares_host() {
        return Err(MoveError::Refused(format!(
            "{name} has host mounts and member {to} may be another machine: it needs storage = \"volumes\""
        )));
    }
    let volumes = local_volumes(lxd, container).await?;
    check_volumes(lxd, &name, &volumes, &from, to).await?;
    let say = |description: String| {
        events.event(&MoveEvent { instance: name.to_string(), kind: MoveEventKind::Step { description } })
    };
    let snapshot_label = format!("gbo-move-{}", time::OffsetDateTime::now_utc().unix_timestamp());
    let backup = BackupName::new(snapshot_label.clone())
        .map_err(|e| MoveError::Refused(format!("backup name {snapshot_label}: {e}")))?;
    let snapshot = crate::snapshot::snapshot_name(&snapshot_label)
        .map_err(|source| MoveError::Snapshot { container: name.to_string(), source })?;
    say(format!(
        "snapshot {snapshot} (container and {})",
        if container.mounts.is_empty() { "its data" } else { "host data" }
    ));
    crate::snapshot::create(lxd, container, &snapshot, &crate::snapshot::CreateOptions::default())
        .await
        .map_err(|source| MoveError::Snapshot { container: name.to_string(), source })?;
    let was_running = instance.is_running();
    say("stop".to_string());
    lxd.ensure_stopped(&name, Duration::from_secs(120)).await.map_err(lxd_error(format!("stopping {name}")))?;
    let mut copied_bytes = 0u64;
    // The copies this move made on `to` (a failure deletes these, and only these).
    let mut imported: Vec<LocalVolume> = Vec::new();
    let attempt = async {
        for volume in &volumes {
            say(format!("copy {} {from} -> {to} (volume backup, snapshots included)", volume.label()));
            copied_bytes += copy_volume(lxd, volume, &from, to, &backup, &name, events).await?;
            imported.push(volume.clone());
        }
        fault("copied")?;
        say(format!("move {from} -> {to}"));
        lxd.move_instance_to_member(&name, to).await.map_err(|e| format!("LXD move: {e}"))?;
        fault("moved")?;
        // Before it starts on `to`: its published ports follow it to its new member's address (or back to
        // loopback), and the wires of its dependents and its own wires connect where their targets listen now.
        for r in rewire(lxd, &container.tenant).await.map_err(|e| format!("rewiring after the move: {e}"))? {
            say(format!("rewire {} {} -> {}", r.instance, r.device, r.value));
        }
        if was_running {
            say("start".to_string());
            lxd.ensure_running(&name).await.map_err(|e| format!("start on {to}: {e}"))?;
            say("health".to_string());
            // Read again: its ports may listen elsewhere now.
            let now = lxd.instance(&name).await.map_err(|e| format!("reading {name} on {to}: {e}"))?;
            let moved = inventory::describe(&now).unwrap_or_else(|| container.clone());
            let health = health::wait_container(lxd, &site, &moved, HEALTH_TIMEOUT).await;
            if let Some(h) = &health {
                if !h.healthy {
                    return Err(format!("unhealthy on {to}: {}", h.detail));
                }
            }
            Ok(health)
        } else {
            Ok(None)
        }
    }
    .await;
    match attempt {
        Ok(health) => {
            // Only now, moved, started and healthy: the origin's volumes go (with their snapshots; the copies on
            // `to` have them too).
            let mut notes = Vec::new();
            for volume in &volumes {
                say(format!("delete {} on {from}", volume.label()));
                if let Err(e) = lxd.target(from.as_str()).delete_storage_volume(&volume.pool, &volume.volume).await {
                    notes.push(format!(
                        "volume {} was left on {from} ({e}): delete it with `lxc storage volume delete {} {} --target {from}`",
                        volume.label(),
                        volume.pool,
                        volume.volume
                    ));
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            events.event(&MoveEvent {
                instance: name.to_string(),
                kind: MoveEventKind::Moved { member: to.to_string(), seconds },
            });
            Ok(Moved {
                container: name.to_string(),
                from,
                to: to.to_string(),
                snapshot: Some(snapshot.to_string()),
                health,
                seconds,
                volumes: volumes.iter().map(LocalVolume::label).collect(),
                copied_bytes,
                notes,
            })
        }
        Err(reason) => {
            let copies = Copies { volumes: &imported, on: to };
            let rollback = rollback(lxd, &name, &from, was_running, &container.tenant, &copies).await;
            events.event(&MoveEvent {
                instance: name.to_string(),
                kind: MoveEventKind::Failed { reason: format!("{reason}; rollback: {rollback}") },
            });
            Err(MoveError::Failed { container: name.to_string(), to: to.to_string(), reason, rollback })
        }
    }
}

/// A gbo volume of a container (`gbo-*` disk device with a `pool`) on a pool local to each member: it is copied to
/// the destination member with the container.
#[derive(Debug, Clone)]
struct LocalVolume {
    pool: ObjectName,
    volume: ObjectName,
    /// The pool's driver: btrfs and ZFS back up in their own format (`btrfs send`, `zfs send`: snapshots as
    /// increments, restorable on the same driver, which every member of one pool has).
    driver: String,
}

impl LocalVolume {
    fn label(&self) -> String {
        format!("{}/{}", self.pool, self.volume)
    }

    fn backup_options(&self) -> BackupOptions {
        // Snapshots included (`volume_only: false`): gbo's data snapshots stay usable on the new member. Plain:
        // compressing costs CPU on both members and saves nothing on a cluster's network worth the time.
        BackupOptions::new()
            .instance_only(false)
            .optimized_storage(matches!(self.driver.as_str(), "btrfs" | "zfs"))
            .compression("none")
    }
}

/// The gbo volumes of `container` that live on a member-local pool (none on Ceph: every member has those).
async fn local_volumes(lxd: &Client, container: &ManagedInstance) -> Result<Vec<LocalVolume>, MoveError> {
    let mut local = Vec::new();
    for attached in crate::inventory::attached_volumes(&container.instance) {
        let bad = |e: lxd_client::Error| {
            MoveError::Refused(format!(
                "{}: volume {} of device {}: {e}",
                container.name,
                attached.label(),
                attached.device
            ))
        };
        let (pool, volume) = (
            ObjectName::new(attached.pool.as_str()).map_err(bad)?,
            ObjectName::new(attached.volume.as_str()).map_err(bad)?,
        );
        let driver = lxd.storage_pool(&pool).await.map_err(lxd_error(format!("reading pool {pool}")))?.driver;
        if !matches!(driver.as_str(), "ceph" | "cephfs") {
            local.push(LocalVolume { pool, volume, driver });
        }
    }
    local.sort_by_key(LocalVolume::label);
    Ok(local)
}

/// Before anything changes: the daemon can back up and import custom volumes, each volume is on `from`, and none of
/// that name is on `to` yet (gbo never overwrites a volume it did not create in this move).
async fn check_volumes(
    lxd: &Client,
    name: &InstanceName,
    volumes: &[LocalVolume],
    from: &str,
    to: &str,
) -> Result<(), MoveError> {
    if volumes.is_empty() {
        return Ok(());
    }
    for (extension, what) in [
        ("custom_volume_backup", "back up and import custom volumes"),
        ("backup_compression_algorithm", "choose a backup's compression"),
    ] {
        if !lxd.has_extension(extension).await.map_err(lxd_error("reading the server's API extensions"))? {
            return Err(MoveError::Refused(format!(
                "{name} keeps its data in custom volumes on member {from} ({}), which gbo moves through LXD's volume \
                 backups, and this LXD cannot {what} (API extension {extension} missing); nothing was changed",
                volumes.iter().map(LocalVolume::label).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    for volume in volumes {
        let context = |member: &str| format!("reading volume {} on {member}", volume.label());
        if lxd
            .target(from)
            .storage_volume(&volume.pool, &volume.volume)
            .await
            .map_err(lxd_error(context(from)))?
            .is_none()
        {
            return Err(MoveError::Refused(format!(
                "{name} uses volume {} but it is not on its member {from}; nothing was changed",
                volume.label()
            )));
        }
        if lxd.target(to).storage_volume(&volume.pool, &volume.volume).await.map_err(lxd_error(context(to)))?.is_some()
        {
            return Err(MoveError::Refused(format!(
                "a custom volume {} already exists on member {to} (left by an earlier run?) and gbo does not overwrite \
                 it: check what it holds, delete it (`lxc storage volume delete {} {} --target {to}`) or move to \
                 another member; nothing was changed",
                volume.label(),
                volume.pool,
                volume.volume
            )));
        }
    }
    Ok(())
}

/// A reader that counts the bytes read through it.
struct Counting {
    inner: Pin<Box<dyn AsyncRead + Send>>,
    bytes: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = self.inner.as_mut().poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before) as u64;
        self.bytes.fetch_add(read, Ordering::Relaxed);
        result
    }
}

/// How often a volume copy reports its bytes.
const COPY_PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// Copy `volume` from member `from` to member `to` under the same name: LXD backs it up on `from` (snapshots
/// included), and the export's stream is the body of the import on `to` (nothing staged here). The backup on
/// `from` is deleted whatever happened. Returns the bytes sent.
async fn copy_volume(
    lxd: &Client,
    volume: &LocalVolume,
    from: &str,
    to: &str,
    backup: &BackupName,
    instance: &InstanceName,
    events: &dyn Observer<MoveEvent>,
) -> Result<u64, String> {
    let (source, target) = (lxd.target(from), lxd.target(to));
    let label = volume.label();
    source
        .create_volume_backup(&volume.pool, &volume.volume, backup, &volume.backup_options())
        .await
        .map_err(|e| format!("backup of volume {label} on {from}: {e}"))?;
    let copied = async {
        let export = source
            .export_volume_backup(&volume.pool, &volume.volume, backup)
            .await
            .map_err(|e| format!("export of volume {label} from {from}: {e}"))?;
        let bytes = Arc::new(AtomicU64::new(0));
        let reader = Counting { inner: export, bytes: bytes.clone() };
        let import = target.import_volume_backup(&volume.pool, reader, &volume.volume);
        tokio::pin!(import);
        let mut tick = tokio::time::interval(COPY_PROGRESS_EVERY);
        tick.tick().await;
        let report = |bytes: u64| {
            events.event(&MoveEvent {
                instance: instance.to_string(),
                kind: MoveEventKind::Copying { volume: label.clone(), bytes },
            })
        };
        loop {
            tokio::select! {
                done = &mut import => {
                    done.map_err(|e| format!("import of volume {label} on {to}: {e}"))?;
                    break;
                }
                _ = tick.tick() => report(bytes.load(Ordering::Relaxed)),
            }
        }
        let total = bytes.load(Ordering::Relaxed);
        report(total);
        Ok(total)
    }
    .await;
    if let Err(e) = source.delete_volume_backup(&volume.pool, &volume.volume, backup).await {
        tracing::warn!(volume = %label, member = from, error = %e, "could not delete the LXD volume backup of a move");
    }
    copied
}

/// Test hook: `GBO_FAULT_MOVE=copied` (after the volume copies) or `GBO_FAULT_MOVE=moved` (after LXD moved the
/// instance, before it starts) makes the move fail there with an error, so its rollback runs on the real daemon.
/// Unset, nothing happens.
pub const ENV_FAULT: &str = "GBO_FAULT_MOVE";

fn fault(stage: &str) -> Result<(), String> {
    match std::env::var(ENV_FAULT) {
        Ok(value) if value == stage => Err(format!("{ENV_FAULT}={stage}: failure injected for a test")),
        _ => Ok(()),
    }
}

/// The copies a failed move made on member `on`.
struct Copies<'a> {
    volumes: &'a [LocalVolume],
    on: &'a str,
}

impl Copies<'_> {
    /// Delete the copies (those still there); says what was done.
    async fn delete(&self, lxd: &Client) -> Option<String> {
        let target = lxd.target(self.on);
        let (mut deleted, mut failed) = (0, Vec::new());
        for volume in self.volumes {
            match target.storage_volume(&volume.pool, &volume.volume).await {
                Ok(None) => {}
                Ok(Some(_)) => match target.delete_storage_volume(&volume.pool, &volume.volume).await {
                    Ok(()) => deleted += 1,
                    Err(e) => failed.push(format!("{} ({e})", volume.label())),
                },
                Err(e) => failed.push(format!("{} ({e})", volume.label())),
            }
        }
        match (deleted, failed.is_empty()) {
            (0, true) => None,
            (n, true) => Some(format!("deleted its {n} volume cop{} on {}", if n == 1 { "y" } else { "ies" }, self.on)),
            (_, false) => Some(format!(
                "could not delete the volume copies on {}: {} (delete them with `lxc storage volume delete POOL NAME --target {}`)",
                self.on,
                failed.join(", "),
                self.on
            )),
        }
    }
}

/// [`crate::install::wiring::rewire`] of the whole tenant, as after a move.
async fn rewire(lxd: &Client, tenant: &TenantName) -> Result<Vec<crate::install::wiring::Rewired>, String> {
    crate::install::wiring::rewire(lxd, tenant, crate::install::wiring::RewireMode::Full)
        .await
        .map_err(|e| crate::install::error::with_causes(&e))
}

/// Put `name` back on `origin` (stopped first), delete the volume copies the move made, and start it again when it
/// ran. The origin's volumes were never touched.
async fn rollback(
    lxd: &Client,
    name: &InstanceName,
    origin: &str,
    was_running: bool,
    tenant: &TenantName,
    copies: &Copies<'_>,
) -> String {
    let mut done = Vec::new();
    let location = match lxd.instance(name).await {
        Ok(i) => i.location,
        Err(e) => {
            return format!(
                "could not read {name} ({e}); check it with `gbo status`; volume copies on {} kept",
                copies.on
            )
        }
    };
    if location != origin {
        if let Err(e) = lxd.ensure_stopped(name, Duration::from_secs(120)).await {
            return format!("could not stop it on {location} ({e}); volume copies on {} kept", copies.on);
        }
        if let Err(e) = lxd.move_instance_to_member(name, origin).await {
            return format!("could not move it back from {location} to {origin} ({e}); volumes on both members kept",);
        }
        done.push(format!("moved back to {origin}"));
        match rewire(lxd, tenant).await {
            Ok(changed) if !changed.is_empty() => done.push(format!("rewired ({} devices)", changed.len())),
            Ok(_) => {}
            Err(e) => done.push(format!("could not rewire the tenant ({e}); `gbo install` does")),
        }
    } else {
        done.push(format!("still on {origin}"));
    }
    // On its origin again: the copies are nobody's now.
    done.extend(copies.delete(lxd).await);
    if was_running {
        match lxd.ensure_running(name).await {
            Ok(_) => done.push("started".to_string()),
            Err(e) => done.push(format!("could not start it ({e})")),
        }
    }
    done.join(", ")
}

/// The moves that empty member `member` of tenant containers gbo manages, dependencies first, each to the online
/// member (other than `member`) with the fewest instances at that point. Refused when `member` is unknown, or when
/// no other member is online.
pub async fn plan_evacuation(lxd: &Client, member: &str) -> Result<Vec<PlannedMove>, MoveError> {
    let (_, members) = members(lxd).await?;
    if !members.iter().any(|m| m.server_name == member) {
        return Err(MoveError::Refused(format!(
            "{member} is not a member of the cluster (members: {})",
            members.iter().map(|m| m.server_name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let instances = lxd.instances().await.map_err(lxd_error("listing instances"))?;
    let mut load: std::collections::BTreeMap<String, usize> = members
        .iter()
        .filter(|m| m.is_online() && m.server_name != member)
        .map(|m| (m.server_name.clone(), 0))
        .collect();
    if load.is_empty() {
        return Err(MoveError::Refused(format!("no other member is online to take the containers of {member}")));
    }
    for i in &instances {
        if let Some(n) = load.get_mut(&i.location) {
            *n += 1;
        }
    }
    let mut on_member: Vec<ManagedInstance> = instances
        .iter()
        .filter(|i| i.location == member)
        .filter_map(inventory::describe)
        .filter(|m| m.managed)
        .collect();
    // Dependencies first: the install order's waves (a role's dependencies come before it), then names.
    let waves: Vec<Role> = gbo_components::install_order(&Role::ALL).into_iter().flatten().collect();
    let order = |m: &ManagedInstance| m.role.and_then(|r| waves.iter().position(|x| *x == r)).unwrap_or(usize::MAX);
    on_member.sort_by(|a, b| (order(a), a.name.as_str()).cmp(&(order(b), b.name.as_str())));
    let mut moves = Vec::new();
    for m in on_member {
        let Some((to, _)) = load.iter().min_by_key(|(name, n)| (**n, (*name).clone())).map(|(k, v)| (k.clone(), *v))
        else {
            break;
        };
        *load.entry(to.clone()).or_default() += 1;
        moves.push(PlannedMove { container: m.name.to_string(), role: m.role, from: member.to_string(), to });
    }
    Ok(moves)
}

/// The managed container of `role` in `tenant`.
pub async fn tenant_container(lxd: &Client, tenant: &TenantName, role: Role) -> Result<ManagedInstance, MoveError> {
    let instances = inventory::tenant_instances(lxd, tenant).await.map_err(lxd_error("listing instances"))?;
    instances
        .into_iter()
        .find(|m| m.role == Some(role))
        .ok_or_else(|| MoveError::Refused(format!("tenant {tenant} has no {role} container")))
}
