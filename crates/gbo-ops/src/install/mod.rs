//! The install engine: observe LXD and the host, plan the diff against the catalogue, apply it concurrently in
//! dependency order, verify health. Also secrets, the port allocator, the tenant lock, uninstall and status.
//!
//! Every run computes its plan from live state (LXD and the host), never from "done" markers, so a run killed at
//! any point is completed by the next, and drift made by hand (a removed device, an edited file) shows up in the
//! plan by name and is repaired by the next install.

pub mod apply;
pub mod artifact;
pub mod desired;
pub mod error;
mod fault;
pub mod health;
pub mod idmap;
pub mod image_source;
pub mod limits;
pub mod lock;
pub mod observe;
pub mod packages;
pub mod placement;
pub mod plan;
pub mod ports;
mod scope;
pub mod secrets;
pub mod setup;
pub mod status;
pub mod storage;
pub mod tenancy;
mod uninstall;
pub mod verify;
pub mod wiring;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use gbo_components::{install_order, Role, Secrets, TenantFile, TenantName};
use lxd_client::Client;

pub use apply::apply_planned;
pub use artifact::ArtifactPolicy;
pub use error::InstallError;
pub use image_source::{resolve_image, Provenance, ResolvedImage, DEFAULT_IMAGE, FALLBACK_IMAGE, IMAGES_SERVER};
pub use plan::{Action, ComponentPlan, Step};
pub use scope::{absolute, check_stack_dir};
pub use uninstall::{uninstall, Uninstalled};

use crate::events::{InstallEvent, Observer};
use crate::hostfs;
use crate::inventory::ManagedInstance;
use desired::{all_secret_specs, desired_states};
use image_source::check_image;
use plan::Desired;
use ports::{existing_ports, taken_ports, Allocation, PortRequest, PortWorld};

/// What to install.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    /// The tenant file (defaults when none was given).
    pub tenant_file: TenantFile,
    /// The roles named on the command line; empty means the tenant file's roles.
    pub roles: Vec<Role>,
    /// Every role of the catalogue.
    pub all: bool,
    /// `--image`: `ALIAS` (local) or `REMOTE:ALIAS`; `None` for the default ([`InstallRequest::default_image`]
    /// when it exists, else [`InstallRequest::fallback_image`]).
    pub image: Option<String>,
    /// The local alias preferred when no image is named ([`DEFAULT_IMAGE`]).
    pub default_image: String,
    /// The image used when no image is named and the default one does not exist ([`FALLBACK_IMAGE`]).
    pub fallback_image: String,
    /// `--stack-dir`, overriding the tenant file.
    pub stack_dir: Option<PathBuf>,
    /// Install what can be installed and name the rest, instead of stopping.
    pub skip_unavailable: bool,
    /// How artifacts may be obtained.
    pub artifacts: ArtifactPolicy,
    /// Host ports pinned with `--port role.name=PORT`.
    pub ports: BTreeMap<(Role, String), u16>,
    /// How long to wait for another run's lock.
    pub lock_wait: Duration,
    /// How long to wait for a component to become healthy.
    pub health_timeout: Duration,
    /// `--target`: the cluster member (or `@group`) of every container this run creates, over the tenant file's
    /// `[placement]`.
    pub target: Option<gbo_components::Placement>,
}

impl InstallRequest {
    /// A request for `roles` of the tenant in `tenant_file`, with defaults for everything else.
    pub fn new(tenant_file: TenantFile, roles: Vec<Role>) -> Self {
        Self {
            tenant_file,
            roles,
            all: false,
            image: None,
            default_image: DEFAULT_IMAGE.to_string(),
            fallback_image: FALLBACK_IMAGE.to_string(),
            stack_dir: None,
            skip_unavailable: false,
            artifacts: ArtifactPolicy::default(),
            ports: BTreeMap::new(),
            lock_wait: Duration::from_secs(60),
            health_timeout: Duration::from_secs(90),
            target: None,
        }
    }
}

/// A computed plan, with what apply needs.
#[derive(Debug)]
pub struct PlannedInstall {
    /// The tenant.
    pub tenant: TenantName,
    /// The absolute stack dir.
    pub stack_dir: PathBuf,
    /// The roles that will be installed, in install order (waves flattened).
    pub roles: Vec<Role>,
    /// Roles left out (`--skip-unavailable`) and why.
    pub skipped: Vec<(Role, String)>,
    /// Notes for the user (dependencies added, loopback fallbacks).
    pub notes: Vec<String>,
    /// The plan of each component, in install order.
    pub components: Vec<ComponentPlan>,
    desired: Vec<Desired>,
    secrets: Secrets,
    allocations: BTreeMap<(Role, String), Allocation>,
    image: ResolvedImage,
    /// Why the system role must be converged with this run although it was not asked for (see [`plan`]).
    reconverge_system: Option<String>,
    /// Where each component is or goes in a cluster.
    pub placements: placement::Placements,
}

impl PlannedInstall {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.components.iter().all(|c| c.steps.is_empty())
    }

    /// Number of steps.
    pub fn step_count(&self) -> usize {
        self.components.iter().map(|c| c.steps.len()).sum()
    }
}

/// The result of one component's install.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentResult {
    /// Role.
    pub role: Role,
    /// Instance.
    pub instance: String,
    /// Steps applied.
    pub steps: usize,
    /// Health after the install.
    pub health: health::Health,
}

/// The result of an install.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstallReport {
    /// Tenant.
    pub tenant: String,
    /// Stack dir.
    pub stack_dir: PathBuf,
    /// Components.
    pub components: Vec<ComponentResult>,
    /// Roles skipped, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Compute the plan. `for_apply` generates missing secrets (stored 0600) instead of using placeholders; without
/// it nothing on the host or in LXD is changed.
///
/// When the cache is installed and the tenant's system container, not asked for, would render a different
/// botserver environment (the cache's password is new: a tenant installed before the cache had one), the system
/// role is converged in the same run, with a note: otherwise botserver would lose the cache. If it cannot be (its
/// artifacts are unavailable and `--skip-unavailable` skips it), the cache is skipped with it.
pub async fn plan(lxd: &Client, request: &InstallRequest, for_apply: bool) -> Result<PlannedInstall, InstallError> {
    let first = plan_with(lxd, request, for_apply, &[]).await?;
    let Some(note) = first.reconverge_system.clone() else { return Ok(first) };
    let mut second = plan_with(lxd, request, for_apply, &[Role::System]).await?;
    second.notes.push(note);
    Ok(second)
}

/// Whether the installed system container holds another botserver environment than `system` renders: by the
/// probe's digest of the file (nothing of the container's content comes back but a hash). `None` when the
/// container is not running (nothing can be compared).
async fn system_env_differs(
    lxd: &Client,
    system: &Desired,
    instance: &ManagedInstance,
) -> Result<Option<bool>, InstallError> {
    let Some(want) = system.spec.file(gbo_components::render::botserver::SYSTEM_ENV_PATH) else {
        return Ok(Some(false));
    };
    if !instance.instance.is_running() {
        return Ok(None);
    }
    let probe = observe::probe(lxd, system).await?;
    Ok(Some(probe.files.get(&want.path).cloned().flatten().is_none_or(|have| have.sha256 != want.sha256())))
}

async fn plan_with(
    lxd: &Client,
    request: &InstallRequest,
    for_apply: bool,
    extra: &[Role],
) -> Result<PlannedInstall, InstallError> {
    let mut scope = scope::scope(lxd, request, extra).await?;
    check_stack_dir(&scope.stack_dir)?;
    // Artifacts: stop before changing anything when some cannot be obtained (unless skipping them).
    let mut skipped = Vec::new();
    let mut artifacts: BTreeMap<Role, Vec<String>> = BTreeMap::new();
    {
        let probe_file = {
            let mut t = request.tenant_file.clone();
            t.roles = scope.all_roles.clone();
            t
        };
        let mut unavailable: Vec<(Role, String)> = Vec::new();
        for role in &scope.to_install {
            for a in gbo_components::artifacts::artifacts(*role, &probe_file) {
                if let Some(reason) = artifact::unavailable_reason(&request.artifacts, &a) {
                    unavailable.push((*role, reason));
                }
                if request.artifacts.allow_unverified {
                    if let Some(gap) = verify::verification_gap(&request.artifacts, &a) {
                        scope.notes.push(format!("not verified (--allow-unverified): {gap}"));
                    }
                }
                artifacts.entry(*role).or_default().push(format!(
                    "{}@{}:{}",
                    a.name,
                    a.version,
                    a.sha256.as_deref().unwrap_or("unverified")
                ));
            }
        }
        if !unavailable.is_empty() {
            let roles: BTreeSet<Role> = unavailable.iter().map(|(r, _)| *r).collect();
            if !request.skip_unavailable {
                return Err(InstallError::Unavailable {
                    roles: roles.iter().map(|r| r.as_str().to_string()).collect(),
                    details: unavailable.iter().map(|(r, why)| format!("  {r}: {why}")).collect(),
                });
            }
            // Dependents of a skipped role are skipped too.
            let mut out: BTreeSet<Role> = roles.clone();
            loop {
                let more: Vec<Role> = scope
                    .to_install
                    .iter()
                    .copied()
                    .filter(|r| !out.contains(r) && r.dependencies().iter().any(|d| out.contains(d)))
                    .collect();
                if more.is_empty() {
                    break;
                }
                out.extend(more);
            }
            for (role, why) in &unavailable {
                skipped.push((*role, why.clone()));
            }
            // The system role converged only for the cache's new password: the cache waits for it.
            if extra.contains(&Role::System) && out.contains(&Role::System) && scope.to_install.contains(&Role::Cache) {
                out.insert(Role::Cache);
            }
            for role in out.iter().filter(|r| !roles.contains(r)) {
                let why = if *role == Role::Cache && extra.contains(&Role::System) {
                    "its password would lock out the system container, which is skipped"
                } else {
                    "a dependency is unavailable"
                };
                skipped.push((*role, why.to_string()));
            }
            scope.to_install.retain(|r| !out.contains(r));
        }
    }
    let image = resolve_image(lxd, request, &scope.to_install).await?;
    if let Some(note) = &image.note {
        scope.notes.push(note.clone());
    }
    check_image(lxd, &image, &scope.tenant, &scope.to_install, &mut scope.notes).await?;
    // Ports.
    let mut requests = Vec::new();
    for role in &scope.all_roles {
        for p in gbo_components::ports(*role) {
            requests.push(PortRequest {
                role: *role,
                name: p.name.to_string(),
                protocol: p.protocol,
                exposure: p.exposure,
                seed: p.seed_host_port,
            });
        }
    }
    for (role, name) in request.ports.keys() {
        if !requests.iter().any(|r| r.role == *role && &r.name == name) {
            let names: Vec<String> = gbo_components::ports(*role).iter().map(|p| p.name.to_string()).collect();
            return Err(InstallError::BadInput(format!(
                "--port {role}.{name}: {role} has no port named {name:?} (it has: {})",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )));
        }
    }
    let world = PortWorld {
        existing: existing_ports(&scope.instances),
        taken: taken_ports(lxd, &scope.tenant).await?,
        overrides: request.ports.clone(),
    };
    let is_default = scope.tenant.as_str() == TenantName::DEFAULT;
    // Where each container is or goes (a cluster), before the ports: a port wired from another member listens on
    // its member's address (see `wiring`).
    let wanted: Vec<(String, Role)> = install_order(&scope.to_install)
        .into_iter()
        .flatten()
        .map(|r| (gbo_components::instance_name(&scope.tenant, r), r))
        .collect();
    let placements = placement::resolve(
        lxd,
        request.target.as_ref(),
        &request.tenant_file.placement,
        &wanted,
        &scope.instances,
        &mut scope.notes,
    )
    .await?;
    let mut allocations = ports::allocate(
        scope.tenant.as_str(),
        is_default,
        request.tenant_file.public_address,
        &requests,
        &world,
        &ports::is_free,
    )?;
    if !is_default
        && request.tenant_file.public_address.is_none()
        && scope
            .to_install
            .iter()
            .any(|r| gbo_components::ports(*r).iter().any(|p| p.exposure == gbo_components::Exposure::Public))
    {
        scope.notes.push(if placements.members.is_empty() {
            format!("tenant {} has no public_address: its public ports listen on 127.0.0.1 only", scope.tenant)
        } else {
            format!("tenant {} has no public_address: its public ports listen on their member's address", scope.tenant)
        });
    }
    if !placements.members.is_empty() {
        let locations = wiring_locations(&scope, &placements);
        let mut all_file = request.tenant_file.clone();
        all_file.roles = scope.all_roles.clone();
        let wires: BTreeMap<Role, Vec<gbo_components::Wire>> =
            scope.all_roles.iter().map(|r| (*r, gbo_components::wires(*r, &all_file))).collect();
        let cross = wiring::cross_member_ports(&wires, &locations);
        wiring::place_addresses(
            &mut allocations,
            &requests,
            &cross,
            &locations,
            &wiring::member_addresses(&placements.members),
            !is_default && request.tenant_file.public_address.is_none(),
        )?;
    }
    // Secrets.
    let specs = all_secret_specs(&scope.all_roles);
    let secrets = if for_apply {
        secrets::load_or_generate(&scope.stack_dir, &specs)?
    } else {
        let existing = secrets::read_existing(&scope.stack_dir, &specs)?;
        if existing.names().count() < specs.len() {
            scope.notes.push(
                "secrets that do not exist yet are generated by install (placeholders used for this plan)".to_string(),
            );
        }
        secrets::with_placeholders(existing, &specs)
    };
    let desired = desired_states(&scope, request, &image, &secrets, &allocations, &artifacts)?;
    for d in &desired {
        if scope.instances.iter().any(|m| m.name.as_str() == d.instance && m.adopted) {
            let kept = d.config.get(plan::PRIVILEGED).is_some_and(|v| v == "true");
            if kept != d.spec.privileged {
                scope.notes.push(format!(
                    "{} was not created by gbo: it keeps its own security.privileged={kept} (the tenant file does not change an adopted container's)",
                    d.instance
                ));
            }
        }
    }
    let installed_system = scope.instances.iter().find(|m| m.managed && m.role == Some(Role::System)).cloned();
    let reconverge_system = match installed_system {
        Some(instance)
            if extra.is_empty()
                && scope.to_install.contains(&Role::Cache)
                && !scope.to_install.contains(&Role::System) =>
        {
            let mut system_scope = scope.clone();
            system_scope.to_install = vec![Role::System];
            let system = desired_states(&system_scope, request, &image, &secrets, &allocations, &BTreeMap::new())?;
            let differs = match system.first() {
                Some(system) => system_env_differs(lxd, system, &instance).await?,
                None => Some(false),
            };
            match differs {
                Some(true) => Some(format!(
                    "system added: botserver's environment must follow the cache ({} gets the cache's password)",
                    gbo_components::render::botserver::SYSTEM_ENV_PATH
                )),
                Some(false) => None,
                None => {
                    scope.notes.push(format!(
                        "{} is not running: once it runs, `gbo install system` gives botserver the cache's password",
                        instance.name
                    ));
                    None
                }
            }
        }
        _ => None,
    };
    if let Some(fingerprint) = &image.fingerprint {
        for m in scope.instances.iter().filter(|m| m.managed && m.role.is_some_and(|r| scope.to_install.contains(&r))) {
            if let Some(note) = crate::upgrade::behind_note(&m.instance, &image.name, fingerprint) {
                scope.notes.push(format!("{} {note}", m.name));
            }
        }
    }
    let instances = observe::by_name(&scope.instances);
    let observed = futures_util::future::try_join_all(
        desired.iter().map(|d| observe::observe(lxd, d, instances.get(&d.instance))),
    )
    .await?;
    let components = desired
        .iter()
        .zip(observed.iter())
        .map(|(d, o)| ComponentPlan {
            role: d.role,
            instance: d.instance.clone(),
            member: placements.shown.get(&d.instance).cloned(),
            steps: plan::diff(d, o),
        })
        .collect();
    Ok(PlannedInstall {
        tenant: scope.tenant,
        stack_dir: scope.stack_dir,
        roles: desired.iter().map(|d| d.role).collect(),
        skipped,
        notes: scope.notes,
        components,
        desired,
        secrets,
        allocations,
        image,
        reconverge_system,
        placements,
    })
}

/// The member each of the tenant's roles is on (existing containers) or goes to (a placement on one member); roles
/// placed by LXD's scheduler or on a group are left out until they exist.
fn wiring_locations(scope: &scope::TenantScope, placements: &placement::Placements) -> BTreeMap<Role, String> {
    let mut out = BTreeMap::new();
    for role in &scope.all_roles {
        let instance = gbo_components::instance_name(&scope.tenant, *role);
        let existing = scope.instances.iter().find(|m| m.name.as_str() == instance).map(|m| &m.instance.location);
        match (existing, placements.targets.get(&instance)) {
            (Some(location), _) if !location.is_empty() => {
                out.insert(*role, location.clone());
            }
            (None, Some(target)) if !target.starts_with('@') => {
                out.insert(*role, target.clone());
            }
            _ => {}
        }
    }
    out
}

/// Install: lock the tenant, plan, apply concurrently in dependency order, verify health.
pub async fn install(
    lxd: &Client,
    request: &InstallRequest,
    events: &dyn Observer<InstallEvent>,
) -> Result<InstallReport, InstallError> {
    // Validate and check everything that needs no change first (bad input leaves the host untouched).
    let preview = plan(lxd, request, false).await?;
    // Every artifact is downloaded and verified before anything is created: a refused artifact leaves no
    // container and no host directory behind.
    // A role whose artifact cannot be downloaded (no network) is named with the others and the offline ways.
    let mut unreachable: Vec<(Role, String)> = Vec::new();
    for role in &preview.roles {
        for artifact in gbo_components::artifacts::artifacts(*role, &request.tenant_file) {
            match artifact::fetch_verified(&request.artifacts, &artifact).await {
                Ok(_) => {}
                Err(e @ InstallError::Download { .. }) => unreachable.push((*role, e.to_string())),
                Err(e) => return Err(e),
            }
        }
    }
    if !unreachable.is_empty() {
        let mut roles: Vec<String> = unreachable.iter().map(|(r, _)| r.to_string()).collect();
        roles.dedup();
        return Err(InstallError::Unavailable {
            roles,
            details: unreachable.iter().map(|(r, why)| format!("  {r}: {why}")).collect(),
        });
    }
    hostfs::HostDir::create_root(&preview.stack_dir, 0o755)?;
    let _lock = lock::acquire(&preview.stack_dir, preview.tenant.as_str(), request.lock_wait).await?;
    // A run killed mid-request leaves its operation (a create, a start) running in the daemon: let it finish
    // before observing, so the plan starts from settled state instead of failing with "instance is busy".
    for component in &preview.components {
        let context = format!("waiting for running operations on {}", component.instance);
        let name =
            lxd_client::InstanceName::new(component.instance.as_str()).map_err(InstallError::lxd(context.clone()))?;
        lxd.wait_instance_idle(&name, std::time::Duration::from_secs(300)).await.map_err(InstallError::lxd(context))?;
    }
    let planned = plan(lxd, request, true).await?;
    apply::apply_planned(lxd, request, &planned, events).await
}
