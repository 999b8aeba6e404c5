//! Moving a tenant's containers between cluster members: `gbo move` (one container) and `gbo evacuate` (every gbo
//! container off one member, dependencies first).
//!
//! A move is: check both members are online (a container on an offline member cannot be read, so it is refused,
//! naming the member), snapshot (container and host data, through [`crate::snapshot`]), stop, move (LXD copies the
//! root volume and its snapshots to the target member's pool), rewire (its ports follow it to its new member's
//! address and its dependents' wires are re-pointed: [`crate::install::wiring::rewire`]), start, health. If anything after the stop fails, the
//! container goes back to its origin and is started again there; the error says what failed and how the rollback
//! went.
//!
//! Host data (storage mode `host`) stays where it is: the members here share this machine's filesystem
//! ([`crate::site::Site::shares_host`]); containers with host mounts on members elsewhere are refused.

use std::time::{Duration, Instant};

use gbo_components::{Role, TenantName};
use lxd_client::{Client, ClusterMember, InstanceName};

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
    /// A step begins (`snapshot gbo-move-...`, `stop`, `move m1 -> m2`, `start`, `health`).
    Step {
        /// The step.
        description: String,
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
            MoveEventKind::Step { .. } => None,
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

/// The health of a container after a move: its probe through the published port when the members are on this
/// machine, else its unit from inside.
async fn health_after(lxd: &Client, site: &Site, container: &ManagedInstance) -> Option<Health> {
    let role = container.role?;
    if site.shares_host() {
        if let Some((check, target)) = health::health_of(lxd, container) {
            let specs: Vec<_> = gbo_components::secrets::ALL_SECRETS.to_vec();
            let secrets = match &container.stack_dir {
                Some(dir) => crate::install::secrets::read_existing(dir, &specs).unwrap_or_default(),
                None => gbo_components::Secrets::new(),
            };
            return Some(health::wait_healthy(&check, &target, &secrets, HEALTH_TIMEOUT).await);
        }
    }
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    loop {
        let h = health::unit_inside(lxd, &container.name, &role.unit_name()).await;
        if h.healthy || Instant::now() >= deadline {
            return Some(h);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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
        });
    }
    if !container.mounts.is_empty() && !site.shares_host() {
        return Err(MoveError::Refused(format!(
            "{name} has host mounts and member {to} may be another machine: it needs storage = \"volumes\""
        )));
    }
    refuse_local_volumes(lxd, container, &from).await?;
    let say = |description: String| {
        events.event(&MoveEvent { instance: name.to_string(), kind: MoveEventKind::Step { description } })
    };
    let snapshot_label = format!("gbo-move-{}", time::OffsetDateTime::now_utc().unix_timestamp());
    let snapshot = crate::snapshot::snapshot_name(&snapshot_label)
        .map_err(|source| MoveError::Snapshot { container: name.to_string(), source })?;
    say(format!("snapshot {snapshot} (container and host data)"));
    crate::snapshot::create(lxd, container, &snapshot, &crate::snapshot::CreateOptions::default())
        .await
        .map_err(|source| MoveError::Snapshot { container: name.to_string(), source })?;
    let was_running = instance.is_running();
    say("stop".to_string());
    lxd.ensure_stopped(&name, Duration::from_secs(120)).await.map_err(lxd_error(format!("stopping {name}")))?;
    let attempt = async {
        say(format!("move {from} -> {to}"));
        lxd.move_instance_to_member(&name, to).await.map_err(|e| format!("LXD move: {e}"))?;
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
            let health = health_after(lxd, &site, &moved).await;
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
            })
        }
        Err(reason) => {
            let rollback = rollback(lxd, &name, &from, was_running, &container.tenant).await;
            events.event(&MoveEvent {
                instance: name.to_string(),
                kind: MoveEventKind::Failed { reason: format!("{reason}; rollback: {rollback}") },
            });
            Err(MoveError::Failed { container: name.to_string(), to: to.to_string(), reason, rollback })
        }
    }
}

/// Refuse (nothing changed) a container whose gbo volumes (`storage = "volumes"`) are on a member-local pool: LXD
/// moves the instance only, and refuses it while a volume it uses stays on the origin ("Failed loading custom
/// volume"). Volumes on a remote pool (Ceph) are every member's and move with nothing to do.
async fn refuse_local_volumes(lxd: &Client, container: &ManagedInstance, from: &str) -> Result<(), MoveError> {
    let mut local = Vec::new();
    for (device, config) in &container.instance.devices {
        let (Some(pool), Some(source)) = (config.get("pool"), config.get("source")) else { continue };
        if !device.starts_with(crate::inventory::DEVICE_PREFIX)
            || config.get("type").map(String::as_str) != Some("disk")
        {
            continue;
        }
        let name = lxd_client::ObjectName::new(pool.as_str())
            .map_err(|e| MoveError::Refused(format!("{}: pool {pool:?} of device {device}: {e}", container.name)))?;
        let driver = lxd.storage_pool(&name).await.map_err(lxd_error(format!("reading pool {pool}")))?.driver;
        if !matches!(driver.as_str(), "ceph" | "cephfs") {
            local.push(format!("{pool}/{source}"));
        }
    }
    if local.is_empty() {
        return Ok(());
    }
    Err(MoveError::Refused(format!(
        "{} keeps its data in custom volumes on member {from} ({}; storage = \"volumes\" on a member-local pool): \
         gbo move does not move volumes yet, and LXD refuses to move an instance whose volumes stay behind; \
         nothing was changed",
        container.name,
        local.join(", ")
    )))
}

/// [`crate::install::wiring::rewire`] of the whole tenant, as after a move.
async fn rewire(lxd: &Client, tenant: &TenantName) -> Result<Vec<crate::install::wiring::Rewired>, String> {
    crate::install::wiring::rewire(lxd, tenant, crate::install::wiring::RewireMode::Full)
        .await
        .map_err(|e| crate::install::error::with_causes(&e))
}

/// Put `name` back on `origin` (stopped first), started again when it ran.
async fn rollback(lxd: &Client, name: &InstanceName, origin: &str, was_running: bool, tenant: &TenantName) -> String {
    let mut done = Vec::new();
    let location = match lxd.instance(name).await {
        Ok(i) => i.location,
        Err(e) => return format!("could not read {name} ({e}); check it with `gbo status`"),
    };
    if location != origin {
        if let Err(e) = lxd.ensure_stopped(name, Duration::from_secs(120)).await {
            return format!("could not stop it on {location} ({e})");
        }
        if let Err(e) = lxd.move_instance_to_member(name, origin).await {
            return format!("could not move it back from {location} to {origin} ({e})");
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
