//! `gbo upgrade`: rebuild a tenant's containers on a newer image, one role at a time in dependency order, keeping
//! everything that makes the container this tenant's (config keys, devices with their host mounts and recorded
//! ports, profiles, limits; secrets live in the stack dir), with a data-inclusive snapshot first and an automatic
//! way back.
//!
//! One role's upgrade:
//! 1. the new container is created beside the old one (`<name>-gbo-new`, stopped, marked [`KEY_UPGRADE`]) from
//!    the new image with the old one's config and devices; a PostgreSQL data directory of another major version
//!    than the new image serves is refused here, with the procedure, before anything else changes;
//! 2. the old container is stopped, snapshotted with its host data ([`crate::snapshot::create`]), marked and
//!    renamed `<name>-gbo-old`; the new one takes the name;
//! 3. the install engine converges it (files, units, init steps that the data does not already hold) and checks
//!    its health;
//! 4. healthy: the old container is deleted with its snapshot's host copies. Otherwise the new one is deleted, the
//!    old one takes its name back, its host data is restored from the snapshot and it starts again: the error names
//!    the role, the check that failed and the snapshot kept.
//!
//! Marked containers are invisible to every other command ([`crate::inventory::describe`]). A run killed at any
//! point leaves marks that the next run reads first: a staged new container is deleted; a parked old one means the
//! swap is undone (the new container deleted, the old one renamed back and its data restored) unless the mark says
//! the new one was already healthy, in which case the old one is just removed. Then the upgrade runs again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gbo_components::{Role, TenantName};
use lxd_client::{Client, CreateInstance, DeviceName, Instance, InstanceName, InstanceSource};

use crate::events::{InstallEvent, Observer, Outcome, Subject};
use crate::install::{self, InstallError, InstallRequest};
use crate::inventory::{self, ManagedInstance, KEY_UPGRADE};
use crate::snapshot::{self, SnapshotError};

/// Suffix of the old container while its replacement is tried.
pub const OLD_SUFFIX: &str = "-gbo-old";
/// Suffix of the new container while it is staged.
pub const NEW_SUFFIX: &str = "-gbo-new";
/// The key LXD records the image fingerprint a container was created from in.
pub const BASE_IMAGE: &str = "volatile.base_image";

/// Config keys of the old container that the new one does not inherit: LXD's own, and gbo's records of what was
/// provisioned in the old root filesystem (the new one is provisioned again).
fn inherited(key: &str) -> bool {
    !(key.starts_with("volatile.")
        || key.starts_with("image.")
        || key == inventory::KEY_PROVISIONED_HASH
        || key == install::plan::KEY_OWED
        || key == install::plan::KEY_ARTIFACTS
        || key == KEY_UPGRADE)
}

/// What an upgrade failed on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// Bad input (nothing was changed).
    #[error("{0}")]
    BadInput(String),
    /// A PostgreSQL data directory of another major version than the new image serves: refused before any change.
    #[error("{instance}: its data directory is PostgreSQL {data_major}, the image {image} serves PostgreSQL {image_majors}; a major upgrade is not done by rebuilding the container. Procedure: `gbo snapshot create {instance}`, dump the old cluster with the old version (`gbo migrate` from this tenant to a new tenant installed on the new image, or pg_dumpall inside {instance}), check the copy, then point botserver at it; the old tenant stays untouched until you uninstall it")]
    PostgresMajor {
        /// The container.
        instance: String,
        /// The data directory's major version.
        data_major: String,
        /// The majors the image carries, comma separated (`none`).
        image_majors: String,
        /// The image alias.
        image: String,
    },
    /// The new container failed and the old one was restored.
    #[error("{role}: the upgrade of {instance} failed: {check}; the previous container and its data were restored from snapshot `{snapshot}` (kept: `gbo snapshot list {instance}`){after}")]
    RolledBack {
        /// The role.
        role: Role,
        /// The container.
        instance: String,
        /// The check (or step) that failed.
        check: String,
        /// The snapshot kept.
        snapshot: String,
        /// The restored container's health, as a sentence beginning with `; `.
        after: String,
    },
    /// The new container failed and restoring the old one failed too.
    #[error("{role}: the upgrade of {instance} failed: {check}; restoring the previous container failed too: {restore}. The previous container is {parked} (or back at {instance}) and snapshot `{snapshot}` holds its data: `gbo upgrade` again undoes the swap, or `gbo snapshot restore {instance} {snapshot}`")]
    RollbackFailed {
        /// The role.
        role: Role,
        /// The container.
        instance: String,
        /// What failed first.
        check: String,
        /// Why the way back failed.
        restore: String,
        /// The parked name.
        parked: String,
        /// The snapshot.
        snapshot: String,
    },
    /// The install engine failed outside a role's swap.
    #[error(transparent)]
    Install(Box<InstallError>),
    /// A snapshot failed.
    #[error(transparent)]
    Snapshot(Box<SnapshotError>),
    /// LXD refused or failed.
    #[error("LXD: {context}")]
    Lxd {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: lxd_client::Error,
    },
}

impl From<InstallError> for UpgradeError {
    fn from(e: InstallError) -> Self {
        UpgradeError::Install(Box::new(e))
    }
}

impl From<SnapshotError> for UpgradeError {
    fn from(e: SnapshotError) -> Self {
        UpgradeError::Snapshot(Box::new(e))
    }
}

impl UpgradeError {
    fn lxd(context: impl Into<String>) -> impl FnOnce(lxd_client::Error) -> UpgradeError {
        let context = context.into();
        move |source| UpgradeError::Lxd { context, source }
    }

    /// Whether the error is bad input (nothing changed).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, UpgradeError::BadInput(_)) || matches!(self, UpgradeError::Install(e) if e.is_bad_input())
    }
}

/// Set the version of artifact roles for this upgrade (`--version ROLE=VERSION`, each value as given): the install
/// request's tenant file gets `[versions.<role>]` with that version
/// ([`gbo_components::artifacts::pin_with_version`]). Bad input names the value and what is allowed; nothing is
/// changed (the request is only changed when every value is good).
pub fn with_versions(request: &mut UpgradeRequest, values: &[String]) -> Result<(), UpgradeError> {
    let mut file = request.install.tenant_file.clone();
    for value in values {
        let bad = |why: String| UpgradeError::BadInput(format!("--version {value:?}: {why}"));
        let (role, version) = value.split_once('=').ok_or_else(|| {
            bad("expected ROLE=VERSION, for example vault=1.15.5 (roles with an artifact: ".to_string()
                + &artifact_roles_text()
                + ")")
        })?;
        let role: Role = role
            .parse()
            .map_err(|_| bad(format!("{role:?} is not a role; roles with an artifact: {}", artifact_roles_text())))?;
        let pin = gbo_components::artifacts::pin_with_version(&file, role, version).map_err(bad)?;
        file.versions.insert(role, pin);
        if !request.roles.is_empty() && !request.roles.contains(&role) {
            request.roles.push(role);
        }
        if !request.version_roles.contains(&role) {
            request.version_roles.push(role);
        }
    }
    request.install.tenant_file = file;
    Ok(())
}

fn artifact_roles_text() -> String {
    gbo_components::artifacts::artifact_roles().iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
}

/// The artifact versions `instance` runs (`name@version`, from its `user.gbo.artifacts` record) that differ from
/// what `tenant` pins for `role`, as `name OLD -> NEW` (`none` when not recorded).
fn artifact_changes(instance: &Instance, role: Role, tenant: &gbo_components::TenantFile) -> Vec<String> {
    let recorded: Vec<(&str, &str)> = instance
        .config
        .get(install::plan::KEY_ARTIFACTS)
        .map(|s| {
            s.split(',')
                .filter_map(|e| e.split_once('@'))
                .map(|(name, rest)| (name, rest.split_once(':').map_or(rest, |(v, _)| v)))
                .collect()
        })
        .unwrap_or_default();
    gbo_components::artifacts::artifacts(role, tenant)
        .into_iter()
        .filter_map(|a| {
            let running = recorded.iter().find(|(n, _)| *n == a.name).map(|(_, v)| *v);
            (running != Some(a.version.as_str()))
                .then(|| format!("{} {} -> {}", a.name, running.unwrap_or("none"), a.version))
        })
        .collect()
}

/// What to upgrade.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    /// The install request the new containers are converged with: its tenant file names the tenant, its `image`
    /// (else `default_image`) the new image (a local alias), its health timeout how long a new container may take.
    pub install: InstallRequest,
    /// Roles to upgrade (empty: every installed role of the tenant).
    pub roles: Vec<Role>,
    /// Roles whose artifact version this run sets ([`with_versions`]): each must be installed.
    pub version_roles: Vec<Role>,
}

/// What the upgrade will do to one role.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RoleAction {
    /// It runs the image already.
    UpToDate,
    /// It is rebuilt on the image (the same image when only an artifact version changes).
    Rebuild {
        /// The fingerprint it runs (`unknown` when LXD recorded none).
        from: String,
        /// Artifact versions that change (`name OLD -> NEW`); empty when only the image changes.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        artifacts: Vec<String>,
    },
}

/// One role of an upgrade plan.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RolePlan {
    /// Role.
    pub role: Role,
    /// Container.
    pub instance: String,
    /// What happens.
    #[serde(flatten)]
    pub action: RoleAction,
    /// Marks an interrupted upgrade left on this role, undone first.
    pub interrupted: Option<String>,
}

/// An upgrade plan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpgradePlan {
    /// Tenant.
    pub tenant: String,
    /// The image alias.
    pub image: String,
    /// The fingerprint it points at.
    pub fingerprint: String,
    /// Roles in dependency order.
    pub roles: Vec<RolePlan>,
}

impl UpgradePlan {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.roles.iter().all(|r| r.action == RoleAction::UpToDate && r.interrupted.is_none())
    }
}

/// What happened to one role.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoleResult {
    /// Role.
    pub role: Role,
    /// Container.
    pub instance: String,
    /// Whether it was rebuilt.
    pub rebuilt: bool,
    /// Seconds its service was down (stop of the old container to the new one's health), when rebuilt.
    pub downtime_secs: Option<f64>,
    /// The new container's health.
    pub health: Option<String>,
}

/// The result of an upgrade.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpgradeReport {
    /// Tenant.
    pub tenant: String,
    /// Image alias.
    pub image: String,
    /// Roles in the order they were done.
    pub roles: Vec<RoleResult>,
}

/// What happens to one container during `gbo upgrade`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UpgradeEvent {
    /// The container.
    pub instance: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: UpgradeEventKind,
}

/// The kinds of [`UpgradeEvent`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum UpgradeEventKind {
    /// A step of the upgrade.
    Step {
        /// What is done.
        description: String,
    },
    /// Up to date (ends the container).
    UpToDate,
    /// Rebuilt and healthy (ends the container).
    Upgraded {
        /// The health check's answer.
        detail: String,
    },
    /// Failed (ends the container).
    Failed {
        /// The error.
        error: String,
    },
}

impl std::fmt::Display for UpgradeEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            UpgradeEventKind::Step { description } => write!(f, "{description}"),
            UpgradeEventKind::UpToDate => write!(f, "up to date"),
            UpgradeEventKind::Upgraded { detail } => write!(f, "upgraded, healthy ({detail})"),
            UpgradeEventKind::Failed { error } => write!(f, "failed: {error}"),
        }
    }
}

impl Subject for UpgradeEvent {
    fn subject(&self) -> &str {
        &self.instance
    }

    fn finished(&self) -> Option<Outcome> {
        match self.kind {
            UpgradeEventKind::Step { .. } => None,
            UpgradeEventKind::UpToDate | UpgradeEventKind::Upgraded { .. } => Some(Outcome::Succeeded),
            UpgradeEventKind::Failed { .. } => Some(Outcome::Failed),
        }
    }
}

/// The fingerprint a container was created from, when LXD recorded it.
pub fn base_image(instance: &Instance) -> Option<&str> {
    instance.config.get(BASE_IMAGE).map(String::as_str).filter(|f| !f.is_empty())
}

/// A line saying that `instance` runs another image than `alias` (pointing at `fingerprint`), or `None`.
pub fn behind_note(instance: &Instance, alias: &str, fingerprint: &str) -> Option<String> {
    let running = base_image(instance)?;
    (running != fingerprint).then(|| {
        format!(
            "runs image {}, older than {alias} ({}): `gbo upgrade` rebuilds it on the current one",
            short(running),
            short(fingerprint)
        )
    })
}

fn short(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

/// The mark on a container of an upgrade under way.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mark {
    /// The old container, parked; `replaced`: the new one was healthy.
    Old { snapshot: String, replaced: bool },
    /// The new container, staged.
    New,
}

impl Mark {
    fn parse(value: &str) -> Option<Mark> {
        let mut parts = value.split_whitespace();
        match (parts.next()?, parts.next()) {
            ("old", Some(s)) => Some(Mark::Old { snapshot: s.to_string(), replaced: false }),
            ("replaced", Some(s)) => Some(Mark::Old { snapshot: s.to_string(), replaced: true }),
            ("new", None) => Some(Mark::New),
            _ => None,
        }
    }

    fn value(&self) -> String {
        match self {
            Mark::Old { snapshot, replaced: false } => format!("old {snapshot}"),
            Mark::Old { snapshot, replaced: true } => format!("replaced {snapshot}"),
            Mark::New => "new".to_string(),
        }
    }
}

fn mark_of(instance: &Instance) -> Option<Mark> {
    instance.config.get(KEY_UPGRADE).and_then(|v| Mark::parse(v))
}

fn lxd_name(name: &str) -> Result<InstanceName, UpgradeError> {
    InstanceName::new(name).map_err(|_| {
        UpgradeError::BadInput(format!(
            "{name:?} is too long for a container name (the upgrade's temporary names add {OLD_SUFFIX})"
        ))
    })
}

/// Where the containers of one role stand.
struct RoleState {
    role: Role,
    name: String,
    current: Option<Instance>,
    old: Option<Instance>,
    new: Option<Instance>,
}

impl RoleState {
    fn interrupted(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(old) = &self.old {
            match mark_of(old) {
                Some(Mark::Old { replaced: true, .. }) => parts.push(format!("{} (replaced: removed)", old.name)),
                _ => parts.push(format!("{} (the swap is undone)", old.name)),
            }
        }
        if let Some(new) = &self.new {
            parts.push(format!("{} (staged: removed)", new.name));
        }
        if let Some(current) = &self.current {
            if mark_of(current) == Some(Mark::New) {
                parts.push(format!("{} (renamed, not converged)", current.name));
            }
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// The resolved request: tenant, stack dir, image and the roles' states.
struct Resolved {
    tenant: TenantName,
    stack_dir: PathBuf,
    alias: String,
    fingerprint: String,
    states: Vec<RoleState>,
}

async fn resolve(lxd: &Client, request: &UpgradeRequest) -> Result<Resolved, UpgradeError> {
    let tenant = request.install.tenant_file.tenant.clone();
    let alias = request.install.image.clone().unwrap_or_else(|| request.install.default_image.clone());
    if alias.contains(':') {
        return Err(UpgradeError::BadInput(format!(
            "--image {alias}: upgrade rebuilds from an image of this LXD; copy it here first (`lxc image copy {alias} local: --alias NAME`)"
        )));
    }
    let image =
        lxd.image_by_alias(&alias).await.map_err(UpgradeError::lxd(format!("reading image {alias}")))?.ok_or_else(
            || {
                UpgradeError::BadInput(format!(
                    "image {alias:?} not found in LXD (see `gbo image list`; `gbo image build` makes one)"
                ))
            },
        )?;
    let everything = lxd.instances().await.map_err(UpgradeError::lxd("listing instances"))?;
    let managed: Vec<ManagedInstance> =
        everything.iter().filter_map(inventory::describe).filter(|m| m.tenant == tenant && m.managed).collect();
    let installed: Vec<Role> = managed.iter().filter_map(|m| m.role).collect();
    // Roles whose upgrade was interrupted have no visible container of their own when killed mid-swap.
    let mut interrupted: Vec<Role> = Vec::new();
    for i in &everything {
        if !i.config.contains_key(KEY_UPGRADE) {
            continue;
        }
        let (Some(t), Some(r)) = (i.config.get(inventory::KEY_TENANT), i.config.get(inventory::KEY_ROLE)) else {
            continue;
        };
        if t == tenant.as_str() {
            if let Ok(role) = r.parse::<Role>() {
                interrupted.push(role);
            }
        }
    }
    for role in &request.version_roles {
        if !installed.contains(role) && !interrupted.contains(role) {
            return Err(UpgradeError::BadInput(format!(
                "--version {role}=...: {role} is not installed for tenant {tenant}; `gbo install` installs it"
            )));
        }
    }
    let wanted: Vec<Role> = if request.roles.is_empty() {
        let mut all = installed.clone();
        all.extend(interrupted.iter().copied());
        all
    } else {
        for role in &request.roles {
            if !installed.contains(role) && !interrupted.contains(role) {
                return Err(UpgradeError::BadInput(format!(
                    "{role} is not installed for tenant {tenant} (installed: {}); `gbo install` installs it",
                    if installed.is_empty() {
                        "none".to_string()
                    } else {
                        installed.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                    }
                )));
            }
        }
        request.roles.clone()
    };
    if wanted.is_empty() {
        return Err(UpgradeError::BadInput(format!("tenant {tenant} has no containers installed by gbo")));
    }
    let stack_dir = everything
        .iter()
        .filter(|i| i.config.get(inventory::KEY_TENANT).map(String::as_str) == Some(tenant.as_str()))
        .find_map(|i| i.config.get(inventory::KEY_STACK_DIR).map(PathBuf::from))
        .ok_or_else(|| UpgradeError::BadInput(format!("tenant {tenant}: no stack dir recorded in LXD")))?;
    let order: Vec<Role> = gbo_components::catalogue::install_order(&wanted).into_iter().flatten().collect();
    let by_name: BTreeMap<&str, &Instance> = everything.iter().map(|i| (i.name.as_str(), i)).collect();
    let states = order
        .into_iter()
        .filter(|r| wanted.contains(r))
        .map(|role| {
            let name = gbo_components::instance_name(&tenant, role);
            let get = |n: &str| by_name.get(n).map(|i| (*i).clone());
            RoleState {
                role,
                current: get(&name),
                old: get(&format!("{name}{OLD_SUFFIX}")).filter(|i| matches!(mark_of(i), Some(Mark::Old { .. }))),
                new: get(&format!("{name}{NEW_SUFFIX}")).filter(|i| mark_of(i) == Some(Mark::New)),
                name,
            }
        })
        .collect();
    Ok(Resolved { tenant, stack_dir, alias, fingerprint: image.fingerprint, states })
}

fn action_of(state: &RoleState, fingerprint: &str, tenant: &gbo_components::TenantFile) -> RoleAction {
    // A swap that is undone brings the old container back: it is rebuilt again.
    let running = if state.old.as_ref().is_some_and(|o| !matches!(mark_of(o), Some(Mark::Old { replaced: true, .. }))) {
        state.old.as_ref()
    } else {
        state.current.as_ref()
    };
    let artifacts = running.map(|i| artifact_changes(i, state.role, tenant)).unwrap_or_default();
    match running.and_then(base_image) {
        Some(f) if f == fingerprint && artifacts.is_empty() => RoleAction::UpToDate,
        Some(f) => RoleAction::Rebuild { from: f.to_string(), artifacts },
        None => RoleAction::Rebuild { from: "unknown".to_string(), artifacts },
    }
}

/// The plan: what each role would undergo (changes nothing).
pub async fn plan(lxd: &Client, request: &UpgradeRequest) -> Result<UpgradePlan, UpgradeError> {
    let resolved = resolve(lxd, request).await?;
    Ok(plan_of(&resolved, &request.install.tenant_file))
}

fn plan_of(resolved: &Resolved, tenant: &gbo_components::TenantFile) -> UpgradePlan {
    UpgradePlan {
        tenant: resolved.tenant.to_string(),
        image: resolved.alias.clone(),
        fingerprint: resolved.fingerprint.clone(),
        roles: resolved
            .states
            .iter()
            .map(|s| RolePlan {
                role: s.role,
                instance: s.name.clone(),
                action: action_of(s, &resolved.fingerprint, tenant),
                interrupted: s.interrupted(),
            })
            .collect(),
    }
}

/// Upgrade: lock the tenant, finish or undo what an interrupted run left, then rebuild each role that runs another
/// image, in dependency order, stopping at the first failure (rolled back).
pub async fn upgrade(
    lxd: &Client,
    request: &UpgradeRequest,
    events: &dyn Observer<UpgradeEvent>,
) -> Result<UpgradeReport, UpgradeError> {
    let first = resolve(lxd, request).await?;
    let _lock = install::lock::acquire(&first.stack_dir, first.tenant.as_str(), request.install.lock_wait).await?;
    // Read again under the lock: another run may have moved things.
    let resolved = resolve(lxd, request).await?;
    // Every artifact of a role to rebuild is downloaded and verified before anything changes (a new version's
    // vendor checksum file and signature, as `gbo install` checks them).
    for state in &resolved.states {
        if action_of(state, &resolved.fingerprint, &request.install.tenant_file) == RoleAction::UpToDate {
            continue;
        }
        for artifact in gbo_components::artifacts::artifacts(state.role, &request.install.tenant_file) {
            install::artifact::fetch(&request.install.artifacts, &artifact).await?;
        }
    }
    let mut results = Vec::new();
    for state in &resolved.states {
        let say = |description: String| {
            events.event(&UpgradeEvent { instance: state.name.clone(), kind: UpgradeEventKind::Step { description } })
        };
        recover(lxd, state, &say).await.inspect_err(|e| {
            events.event(&UpgradeEvent {
                instance: state.name.clone(),
                kind: UpgradeEventKind::Failed { error: e.to_string() },
            });
        })?;
        let current = lxd
            .instance_opt(&lxd_name(&state.name)?)
            .await
            .map_err(UpgradeError::lxd(format!("reading {}", state.name)))?;
        let Some(current) = current else {
            return Err(UpgradeError::BadInput(format!(
                "{} does not exist (after undoing an interrupted upgrade): `gbo install {}` installs it",
                state.name, state.role
            )));
        };
        if base_image(&current) == Some(resolved.fingerprint.as_str())
            && artifact_changes(&current, state.role, &request.install.tenant_file).is_empty()
        {
            events.event(&UpgradeEvent { instance: state.name.clone(), kind: UpgradeEventKind::UpToDate });
            results.push(RoleResult {
                role: state.role,
                instance: state.name.clone(),
                rebuilt: false,
                downtime_secs: None,
                health: None,
            });
            continue;
        }
        match rebuild(lxd, request, &resolved, state.role, &state.name, &current, &say).await {
            Ok(result) => {
                events.event(&UpgradeEvent {
                    instance: state.name.clone(),
                    kind: UpgradeEventKind::Upgraded { detail: result.health.clone().unwrap_or_default() },
                });
                results.push(result);
            }
            Err(e) => {
                events.event(&UpgradeEvent {
                    instance: state.name.clone(),
                    kind: UpgradeEventKind::Failed { error: e.to_string() },
                });
                return Err(e);
            }
        }
    }
    Ok(UpgradeReport { tenant: resolved.tenant.to_string(), image: resolved.alias, roles: results })
}

/// Finish or undo what an interrupted upgrade of one role left behind.
async fn recover(lxd: &Client, state: &RoleState, say: &(dyn Fn(String) + Sync)) -> Result<(), UpgradeError> {
    if let Some(new) = &state.new {
        say(format!("removing {} staged by an interrupted upgrade", new.name));
        delete(lxd, &new.name).await?;
    }
    let Some(old) = &state.old else {
        if let Some(current) = &state.current {
            if mark_of(current) == Some(Mark::New) {
                // Renamed into place, but the old one is gone: nothing to go back to; it is converged like any.
                unmark(lxd, &current.name).await?;
            }
        }
        return Ok(());
    };
    let Some(Mark::Old { snapshot, replaced }) = mark_of(old) else { return Ok(()) };
    if replaced {
        say(format!("removing {}, replaced by a healthy container before an interruption", old.name));
        if let Some(current) = &state.current {
            if mark_of(current) == Some(Mark::New) {
                unmark(lxd, &current.name).await?;
            }
        }
        return finish(lxd, &state.name, &old.name, &snapshot).await;
    }
    say(format!("undoing an interrupted upgrade: {} comes back from snapshot {snapshot}", old.name));
    undo(lxd, &state.name, &old.name, &snapshot).await
}

/// Delete the new container (if any), give the old one its name back and restore its data from `snapshot`, then
/// start it.
async fn undo(lxd: &Client, name: &str, parked: &str, snapshot: &str) -> Result<(), UpgradeError> {
    let target = lxd_name(name)?;
    if lxd.instance_opt(&target).await.map_err(UpgradeError::lxd(format!("reading {name}")))?.is_some() {
        delete(lxd, name).await?;
    }
    let parked_name = lxd_name(parked)?;
    lxd.ensure_stopped(&parked_name, Duration::from_secs(120))
        .await
        .map_err(UpgradeError::lxd(format!("stopping {parked}")))?;
    lxd.rename_instance(&parked_name, &target)
        .await
        .map_err(UpgradeError::lxd(format!("renaming {parked} to {name}")))?;
    unmark(lxd, name).await?;
    let instance = lxd.instance(&target).await.map_err(UpgradeError::lxd(format!("reading {name}")))?;
    let managed = inventory::describe(&instance)
        .ok_or_else(|| UpgradeError::BadInput(format!("{name} belongs to no tenant after its rename")))?;
    let snapshot = snapshot::snapshot_name(snapshot)?;
    snapshot::restore(lxd, &managed, &snapshot, false).await?;
    lxd.ensure_running(&target).await.map_err(UpgradeError::lxd(format!("starting {name}")))?;
    Ok(())
}

/// Remove the old container and the host copies its snapshot made (the new one is healthy).
async fn finish(lxd: &Client, name: &str, parked: &str, snapshot: &str) -> Result<(), UpgradeError> {
    delete(lxd, parked).await?;
    // The snapshot's host copies are kept under the container's name (it was taken before the rename).
    let target = lxd_name(name)?;
    if let Some(instance) = lxd.instance_opt(&target).await.map_err(UpgradeError::lxd(format!("reading {name}")))? {
        if let Some(managed) = inventory::describe(&instance) {
            if snapshot::read_manifest(&managed, snapshot).is_some() {
                let snapshot = snapshot::snapshot_name(snapshot)?;
                snapshot::delete(lxd, &managed, &snapshot).await?;
            }
        }
    }
    Ok(())
}

async fn delete(lxd: &Client, name: &str) -> Result<(), UpgradeError> {
    let n = lxd_name(name)?;
    lxd.ensure_stopped(&n, Duration::from_secs(60)).await.map_err(UpgradeError::lxd(format!("stopping {name}")))?;
    lxd.delete_instance_if_exists(&n).await.map_err(UpgradeError::lxd(format!("deleting {name}")))?;
    Ok(())
}

async fn set_mark(lxd: &Client, name: &str, mark: Option<&Mark>) -> Result<(), UpgradeError> {
    let n = lxd_name(name)?;
    let value = mark.map(Mark::value);
    lxd.update_instance(&n, |put| {
        match &value {
            Some(v) => put.config.insert(KEY_UPGRADE.to_string(), v.clone()),
            None => put.config.remove(KEY_UPGRADE),
        };
    })
    .await
    .map_err(UpgradeError::lxd(format!("marking {name}")))?;
    Ok(())
}

async fn unmark(lxd: &Client, name: &str) -> Result<(), UpgradeError> {
    set_mark(lxd, name, None).await
}

/// The PostgreSQL major version of a tables container's data directory (`PG_VERSION` on its data mount).
fn data_major(old: &ManagedInstance) -> Result<Option<String>, UpgradeError> {
    let Some(mount) = old.mounts.iter().find(|m| m.container_path == "/opt/gbo/data") else { return Ok(None) };
    let Some(dir) = crate::hostfs::HostDir::open_root_if_exists(&mount.host_path).map_err(SnapshotError::from)? else {
        return Ok(None);
    };
    let Some(bytes) = dir.read_file(Path::new("pgdata/PG_VERSION"), 64).map_err(SnapshotError::from)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    Ok((!text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.')).then_some(text))
}

/// The PostgreSQL majors a (stopped) container's root filesystem carries (`/usr/lib/postgresql/<major>`).
async fn image_majors(lxd: &Client, name: &InstanceName) -> Result<Vec<String>, UpgradeError> {
    match lxd.pull(name, "/usr/lib/postgresql").await {
        Ok(pulled) => match pulled.content {
            lxd_client::FileContent::Directory(entries) => {
                Ok(entries.into_iter().filter(|e| e.chars().all(|c| c.is_ascii_digit())).collect())
            }
            _ => Ok(Vec::new()),
        },
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(UpgradeError::lxd(format!("listing /usr/lib/postgresql in {name}"))(e)),
    }
}

#[allow(clippy::too_many_arguments)]
async fn rebuild(
    lxd: &Client,
    request: &UpgradeRequest,
    resolved: &Resolved,
    role: Role,
    name: &str,
    current: &Instance,
    say: &(dyn Fn(String) + Sync),
) -> Result<RoleResult, UpgradeError> {
    let old =
        inventory::describe(current).ok_or_else(|| UpgradeError::BadInput(format!("{name} belongs to no tenant")))?;
    let target = lxd_name(name)?;
    let staged = format!("{name}{NEW_SUFFIX}");
    let parked = format!("{name}{OLD_SUFFIX}");
    let staged_name = lxd_name(&staged)?;
    let parked_name = lxd_name(&parked)?;
    // 1. Stage the new container beside the old one, with its config and devices.
    say(format!("staging {staged} from {} ({})", resolved.alias, short(&resolved.fingerprint)));
    let mut create = CreateInstance::container(staged_name.clone(), InstanceSource::fingerprint(&resolved.fingerprint))
        .profiles(current.profiles.clone())
        .description(current.description.clone());
    for (k, v) in current.config.iter().filter(|(k, _)| inherited(k)) {
        create = create.config(k.clone(), v.clone());
    }
    create = create.config(KEY_UPGRADE, Mark::New.value());
    for (device, config) in &current.devices {
        let device = DeviceName::new(device.clone()).map_err(UpgradeError::lxd(format!("device {device}")))?;
        create = create.device(&device, config.clone());
    }
    lxd.create_instance(&create).await.map_err(UpgradeError::lxd(format!("creating {staged}")))?;
    // A PostgreSQL data directory the new image cannot serve is refused before the old container is touched.
    if role == Role::Tables {
        if let Some(major) = data_major(&old)? {
            let majors = image_majors(lxd, &staged_name).await?;
            let want = gbo_components::render::postgres::PG_MAJOR.to_string();
            let major_only = major.split('.').next().unwrap_or(&major).to_string();
            if !majors.contains(&major_only) || major_only != want {
                delete(lxd, &staged).await?;
                return Err(UpgradeError::PostgresMajor {
                    instance: name.to_string(),
                    data_major: major,
                    image_majors: if majors.is_empty() { "none".into() } else { majors.join(", ") },
                    image: resolved.alias.clone(),
                });
            }
        }
    }
    // 2. Stop the old one, snapshot it with its data, park it, and put the new one in its place.
    let stopped_at = std::time::Instant::now();
    say(format!("stopping {name}"));
    lxd.ensure_stopped(&target, Duration::from_secs(180))
        .await
        .map_err(UpgradeError::lxd(format!("stopping {name}")))?;
    let snapshot_name =
        format!("upgrade-{}", snapshot::default_name(time::OffsetDateTime::now_utc()).trim_start_matches("gbo-"));
    let snap = snapshot::snapshot_name(&snapshot_name)?;
    say(format!("snapshot {snapshot_name} (container and data)"));
    if let Err(e) = snapshot::create(lxd, &old, &snap, &snapshot::CreateOptions::default()).await {
        // Nothing swapped yet: the old container runs again, the staged one goes.
        let _ = lxd.ensure_running(&target).await;
        let _ = delete(lxd, &staged).await;
        return Err(e.into());
    }
    set_mark(lxd, name, Some(&Mark::Old { snapshot: snapshot_name.clone(), replaced: false })).await?;
    say(format!("swapping: {name} -> {parked}, {staged} -> {name}"));
    lxd.rename_instance(&target, &parked_name).await.map_err(UpgradeError::lxd(format!("renaming {name}")))?;
    lxd.rename_instance(&staged_name, &target).await.map_err(UpgradeError::lxd(format!("renaming {staged}")))?;
    unmark(lxd, name).await?;
    // 3. Converge and check the new container.
    let mut install_request = request.install.clone();
    install_request.roles = vec![role];
    install_request.all = false;
    install_request.image = Some(resolved.alias.clone());
    install_request.stack_dir = None;
    let relay = |event: &InstallEvent| {
        if event.instance == name {
            say(event.to_string());
        }
    };
    let converged = async {
        let planned = install::plan(lxd, &install_request, true).await?;
        install::apply_planned(lxd, &install_request, &planned, &relay).await
    }
    .await;
    match converged {
        Ok(report) => {
            let health = report.components.iter().find(|c| c.role == role).map(|c| c.health.detail.clone());
            let downtime = stopped_at.elapsed().as_secs_f64();
            set_mark(lxd, &parked, Some(&Mark::Old { snapshot: snapshot_name.clone(), replaced: true })).await?;
            say(format!("removing {parked}"));
            finish(lxd, name, &parked, &snapshot_name).await?;
            Ok(RoleResult { role, instance: name.to_string(), rebuilt: true, downtime_secs: Some(downtime), health })
        }
        Err(e) => {
            let check = match &e {
                InstallError::Unhealthy { reason, waited_secs, .. } => {
                    format!("health check failed after {waited_secs} s: {reason}")
                }
                other => install::error::with_causes(other),
            };
            say(format!("rolling back: {check}"));
            match undo(lxd, name, &parked, &snapshot_name).await {
                Ok(()) => {
                    let after = restored_health(lxd, name, &resolved.stack_dir, request.install.health_timeout).await;
                    Err(UpgradeError::RolledBack {
                        role,
                        instance: name.to_string(),
                        check,
                        snapshot: snapshot_name,
                        after,
                    })
                }
                Err(restore) => Err(UpgradeError::RollbackFailed {
                    role,
                    instance: name.to_string(),
                    check,
                    restore: restore.to_string(),
                    parked,
                    snapshot: snapshot_name,
                }),
            }
        }
    }
}

/// The restored container's health, as `; it is healthy again (...)`.
async fn restored_health(lxd: &Client, name: &str, stack_dir: &Path, wait: Duration) -> String {
    let Ok(target) = InstanceName::new(name) else { return String::new() };
    let Ok(instance) = lxd.instance(&target).await else { return String::new() };
    let Some(managed) = inventory::describe(&instance) else { return String::new() };
    let Some((check, probe_target)) = install::health::health_of(lxd, &managed) else { return String::new() };
    let specs: Vec<_> = gbo_components::secrets::ALL_SECRETS.to_vec();
    let secrets = install::secrets::read_existing(stack_dir, &specs).unwrap_or_default();
    let health = install::health::wait_healthy(&check, &probe_target, &secrets, wait).await;
    if health.healthy {
        format!("; it is healthy again ({})", health.detail)
    } else {
        format!("; it is NOT healthy yet ({})", health.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_read_back() {
        for mark in [
            Mark::New,
            Mark::Old { snapshot: "upgrade-1".into(), replaced: false },
            Mark::Old { snapshot: "upgrade-2".into(), replaced: true },
        ] {
            assert_eq!(Mark::parse(&mark.value()), Some(mark));
        }
        assert_eq!(Mark::parse("old"), None);
        assert_eq!(Mark::parse(""), None);
    }

    #[test]
    fn the_new_container_inherits_config_but_not_records_of_the_old_root_filesystem() {
        assert!(inherited("limits.memory"));
        assert!(inherited(inventory::KEY_PORTS));
        assert!(inherited("boot.autostart.priority"));
        assert!(!inherited("volatile.base_image"));
        assert!(!inherited("image.gbo.roles"));
        assert!(!inherited(inventory::KEY_PROVISIONED_HASH));
        assert!(!inherited(KEY_UPGRADE));
    }
}
