//! The install engine: observe LXD and the host, plan the diff against the catalogue, apply it concurrently in
//! dependency order, verify health. Also secrets, the port allocator, the tenant lock, uninstall and status.
//!
//! Every run computes its plan from live state (LXD and the host), never from "done" markers, so a run killed at
//! any point is completed by the next, and drift made by hand (a removed device, an edited file) shows up in the
//! plan by name and is repaired by the next install.

pub mod apply;
pub mod artifact;
pub mod error;
mod fault;
pub mod health;
pub mod idmap;
pub mod lock;
pub mod observe;
pub mod packages;
pub mod plan;
pub mod ports;
pub mod secrets;
pub mod setup;
pub mod status;
pub mod tenancy;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gbo_components::{
    component, install_order, instance_name, required_secrets, HealthCheck, HostPorts, RenderContext, Role, SecretSpec,
    Secrets, TenantFile, TenantName, CATALOGUE_VERSION,
};
use lxd_client::{Client, DeviceConfig, DeviceName, DiskDevice, InstanceSource, ProxyAddress, ProxyDevice};

pub use apply::{Progress, ProgressFn};
pub use artifact::ArtifactPolicy;
pub use error::InstallError;
pub use plan::{Action, ComponentPlan, Step};

use crate::hostfs;
use crate::inventory::{self, ManagedInstance};
use plan::{Desired, HostDir, PlacedFile};
use ports::{Allocation, PortRequest, PortWorld};

/// The image alias `gbo image build` creates and `gbo install` uses by default.
pub const DEFAULT_IMAGE: &str = "gbo/debian-12";

/// The image `gbo install` falls back to when [`DEFAULT_IMAGE`] does not exist: plain Debian 12 from the public
/// image server, whose containers get their roles' packages with apt-get at provisioning.
pub const FALLBACK_IMAGE: &str = "images:debian/12";

/// The built-in `images` remote (simplestreams), used when the `lxc` CLI's configuration does not define it.
pub const IMAGES_SERVER: &str = "https://images.linuxcontainers.org";

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

/// Resolve a possibly relative path against the working directory, without touching the file system.
pub fn absolute(path: &Path) -> Result<PathBuf, InstallError> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(InstallError::io("reading the working directory"))?.join(path)
    };
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

/// Check that `dir` can be used as a stack dir (creatable and writable) without leaving anything behind.
pub fn check_stack_dir(dir: &Path) -> Result<(), InstallError> {
    let fail = |reason: String| InstallError::StackDir { path: dir.to_path_buf(), reason };
    let mut existing = dir.to_path_buf();
    while !existing.exists() {
        if !existing.pop() {
            return Err(fail("no existing parent directory".into()));
        }
    }
    let meta = std::fs::metadata(&existing).map_err(|e| fail(format!("{}: {e}", existing.display())))?;
    if !meta.is_dir() {
        return Err(fail(format!("{} is not a directory", existing.display())));
    }
    let probe = existing.join(format!(".gbo-write-test-{}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            Ok(())
        }
        Err(e) => Err(fail(format!("{} is not writable: {e}", existing.display()))),
    }
}

fn all_secret_specs(roles: &[Role]) -> Vec<SecretSpec> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for role in roles {
        for spec in required_secrets(*role) {
            if seen.insert(spec.name) {
                out.push(*spec);
            }
        }
    }
    out
}

fn device(name: &str) -> Result<DeviceName, InstallError> {
    DeviceName::new(name.to_string()).map_err(InstallError::lxd(format!("device name {name}")))
}

fn proxy_config(name: &str, proxy: ProxyDevice) -> Result<DeviceConfig, InstallError> {
    proxy.to_config(&device(name)?).map_err(InstallError::lxd(format!("device {name}")))
}

fn address(protocol: gbo_components::Protocol, ip: std::net::IpAddr, port: u16) -> ProxyAddress {
    let ip = ip.to_string();
    match protocol {
        gbo_components::Protocol::Tcp => ProxyAddress::tcp(ip, port),
        gbo_components::Protocol::Udp => ProxyAddress::udp(ip, port),
    }
}

/// The roles of a tenant: requested, already installed, and the dependencies of both.
#[derive(Clone)]
struct TenantScope {
    tenant: TenantName,
    stack_dir: PathBuf,
    to_install: Vec<Role>,
    all_roles: Vec<Role>,
    instances: Vec<ManagedInstance>,
    notes: Vec<String>,
}

async fn scope(lxd: &Client, request: &InstallRequest, extra: &[Role]) -> Result<TenantScope, InstallError> {
    let tenant = request.tenant_file.tenant.clone();
    let everything: Vec<ManagedInstance> = lxd
        .instances()
        .await
        .map_err(InstallError::lxd("listing instances"))?
        .iter()
        .map(inventory::describe)
        .collect();
    let claims = tenancy::Claims::of(&everything);
    let mut instances: Vec<ManagedInstance> = everything.into_iter().filter(|m| m.tenant == tenant.as_str()).collect();
    instances.sort_by(|a, b| a.name.cmp(&b.name));
    let recorded = instances.iter().find_map(|m| m.stack_dir.clone());
    let stack_dir = match (&request.stack_dir, &recorded) {
        (Some(flag), Some(recorded)) => {
            let flag = absolute(flag)?;
            if &flag != recorded {
                return Err(InstallError::BadInput(format!(
                    "tenant {tenant} already keeps its data in {} (recorded in LXD as {}); --stack-dir {} differs: uninstall first or drop the flag",
                    recorded.display(),
                    inventory::KEY_STACK_DIR,
                    flag.display()
                )));
            }
            flag
        }
        (Some(flag), None) => absolute(flag)?,
        (None, Some(recorded)) => recorded.clone(),
        (None, None) => absolute(Path::new(&request.tenant_file.tenant_stack_dir()))?,
    };
    let mut requested: Vec<Role> = if request.all {
        Role::ALL.to_vec()
    } else if request.roles.is_empty() {
        request.tenant_file.roles.clone()
    } else {
        request.roles.clone()
    };
    for role in extra {
        if !requested.contains(role) {
            requested.push(*role);
        }
    }
    requested.dedup();
    let installed: Vec<Role> =
        instances.iter().filter(|m| m.managed).filter_map(|m| m.role.parse::<Role>().ok()).collect();
    let mut notes = Vec::new();
    let with_deps = gbo_components::with_dependencies(&requested);
    for role in &with_deps {
        if !requested.contains(role) && !installed.contains(role) {
            notes.push(format!(
                "{role} added: a dependency of {}",
                requested
                    .iter()
                    .filter(|r| r.dependencies().contains(role))
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let to_install: Vec<Role> =
        with_deps.into_iter().filter(|r| requested.contains(r) || !installed.contains(r)).collect();
    let mut all: BTreeSet<Role> = to_install.iter().copied().collect();
    all.extend(installed.iter().copied());
    let role_dirs: Vec<PathBuf> = all.iter().map(|r| stack_dir.join(r.container_suffix())).collect();
    claims.check(tenant.as_str(), &stack_dir, &role_dirs)?;
    Ok(TenantScope { tenant, stack_dir, to_install, all_roles: all.into_iter().collect(), instances, notes })
}

/// Where an image comes from, as far as gbo can tell before creating a container from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    /// Built by gbo: the roles recorded in its `gbo.roles` property.
    Gbo(Vec<String>),
    /// Not built by gbo (a local image without `gbo.roles`, or an image of a simplestreams server such as
    /// `images:`): the roles' packages are installed with apt-get at provisioning.
    Foreign,
    /// Served by another LXD server: known once a container exists (its `image.gbo.roles` key).
    Unknown,
}

/// The image new containers are created from, resolved from `--image` or the default.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// As printed in plans: `gbo/debian-12`, `images:debian/12`.
    pub name: String,
    /// The server it is pulled from (`None`: an image of the local daemon).
    pub server: Option<String>,
    /// What LXD is asked to create containers from.
    pub source: InstanceSource,
    /// Whether gbo built it, and with which roles.
    pub provenance: Provenance,
    /// Why this image was chosen, when it is the fallback.
    pub note: Option<String>,
}

/// The command that builds a local image for `roles`: every one of them that has packages (tables, cache and proxy
/// when none has).
pub(super) fn build_fix(roles: &[Role], alias: &str) -> String {
    let packaged = |r: &Role| !gbo_components::users::role_packages(*r).is_empty();
    let mut names: Vec<&str> =
        Role::ALL.iter().filter(|r| roles.contains(r) && packaged(r)).map(|r| r.as_str()).collect();
    if names.is_empty() {
        names = vec!["tables", "cache", "proxy"];
    }
    if alias == DEFAULT_IMAGE {
        format!("gbo image build --components {}", names.join(","))
    } else {
        format!("gbo image build --components {} --alias {alias}", names.join(","))
    }
}

/// A local image by alias, resolved.
async fn local_image(lxd: &Client, alias: &str) -> Result<Option<ResolvedImage>, InstallError> {
    let Some(image) = lxd.image_by_alias(alias).await.map_err(InstallError::lxd(format!("reading image {alias}")))?
    else {
        return Ok(None);
    };
    let provenance = match image.properties.get(crate::image::ROLES_PROPERTY) {
        Some(roles) => Provenance::Gbo(crate::image::parse_roles(roles)),
        None => Provenance::Foreign,
    };
    Ok(Some(ResolvedImage {
        name: alias.to_string(),
        server: None,
        source: InstanceSource::alias(alias),
        provenance,
        note: None,
    }))
}

/// Resolve `value` (`ALIAS` or `REMOTE:ALIAS`) given with `flag`. A local alias must exist.
async fn named_image(lxd: &Client, value: &str, flag: &str, roles: &[Role]) -> Result<ResolvedImage, InstallError> {
    let bad = |why: String| InstallError::BadInput(format!("{flag} {value:?}: {why}"));
    let Some((remote, alias)) = value.split_once(':') else {
        if value.is_empty() {
            return Err(bad("expected ALIAS (a local image) or REMOTE:ALIAS, for example images:debian/12".into()));
        }
        return match local_image(lxd, value).await? {
            Some(image) => Ok(image),
            None => Err(InstallError::MissingImage { alias: value.to_string(), fix: build_fix(roles, value) }),
        };
    };
    if remote.is_empty() || alias.is_empty() {
        return Err(bad("expected ALIAS (a local image) or REMOTE:ALIAS, for example images:debian/12".into()));
    }
    let config_dir = lxd_client::Remote::default_config_dir();
    let from_config = match &config_dir {
        Some(dir) => InstanceSource::from_lxc_remote(dir, remote, alias).map_err(|e| bad(e.to_string()))?,
        None => None,
    };
    let source = match from_config {
        Some(source) => source,
        None if remote == "images" => InstanceSource::simplestreams(IMAGES_SERVER, alias),
        None => {
            let config = config_dir
                .map(|d| d.join("config.yml").display().to_string())
                .unwrap_or_else(|| "the lxc configuration".into());
            return Err(bad(format!(
                "no image remote {remote:?}: REMOTE is `images` ({IMAGES_SERVER}) or a remote of the lxc CLI in {config} (add one with `lxc remote add`)"
            )));
        }
    };
    let Some(server) = source.server.clone() else {
        // A unix-socket remote (`local:`): the alias is an image of this daemon.
        return match local_image(lxd, alias).await? {
            Some(image) => Ok(image),
            None => Err(InstallError::MissingImage { alias: alias.to_string(), fix: build_fix(roles, alias) }),
        };
    };
    let provenance =
        if source.protocol.as_deref() == Some("simplestreams") { Provenance::Foreign } else { Provenance::Unknown };
    Ok(ResolvedImage { name: value.to_string(), server: Some(server), source, provenance, note: None })
}

/// The image containers of `request` are created from: `--image`, else the local default alias when it exists,
/// else the fallback (with a note saying so). `roles` name the fix when a local alias is missing.
pub async fn resolve_image(
    lxd: &Client,
    request: &InstallRequest,
    roles: &[Role],
) -> Result<ResolvedImage, InstallError> {
    if let Some(image) = &request.image {
        return named_image(lxd, image, "--image", roles).await;
    }
    if let Some(image) = local_image(lxd, &request.default_image).await? {
        return Ok(image);
    }
    let mut image = named_image(lxd, &request.fallback_image, "--fallback-image", roles).await?;
    let from = image.server.as_deref().map(|s| format!(" from {s}")).unwrap_or_default();
    image.note = Some(format!(
        "no local image {}: containers come from the fallback {}{from}; for an offline image run `{}`",
        request.default_image,
        image.name,
        build_fix(roles, &request.default_image)
    ));
    Ok(image)
}

/// Check that the image can serve the roles: a gbo image must carry their packages; a plain image gets them with
/// apt-get at provisioning, which needs a network (refused here for images that certainly lack them).
async fn check_image(
    lxd: &Client,
    image: &ResolvedImage,
    tenant: &TenantName,
    roles: &[Role],
    notes: &mut Vec<String>,
) -> Result<(), InstallError> {
    let packaged: Vec<Role> =
        roles.iter().copied().filter(|r| !gbo_components::users::role_packages(*r).is_empty()).collect();
    let packages = |roles: &[Role]| {
        roles
            .iter()
            .flat_map(|r| gbo_components::users::role_packages(*r).iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let names = |roles: &[Role]| roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
    match &image.provenance {
        Provenance::Gbo(has) => {
            let lacking: Vec<Role> =
                packaged.iter().copied().filter(|r| !has.iter().any(|h| h == r.as_str())).collect();
            if !lacking.is_empty() {
                let mut wanted: Vec<Role> = has.iter().filter_map(|h| h.parse().ok()).collect();
                wanted.extend(lacking.iter().copied());
                return Err(InstallError::ImageLacksRoles {
                    alias: image.name.clone(),
                    roles: names(&lacking),
                    has: if has.is_empty() { "no gbo roles".into() } else { has.join(",") },
                    fix: build_fix(&wanted, &image.name),
                    removed: String::new(),
                });
            }
        }
        Provenance::Foreign if !packaged.is_empty() => {
            let default_profile = lxd_client::ObjectName::new("default").map_err(InstallError::lxd("profile name"))?;
            let profile =
                lxd.profile(&default_profile).await.map_err(InstallError::lxd("reading the default profile"))?;
            let nic = profile.devices.values().any(|d| d.get("type").map(String::as_str) == Some("nic"));
            if !nic && image.server.is_some() {
                return Err(InstallError::NoNetwork {
                    instance: packaged.iter().map(|r| instance_name(tenant, *r)).collect::<Vec<_>>().join(", "),
                    image: image.name.clone(),
                    role: names(&packaged),
                    packages: packages(&packaged),
                    removed: " (nothing was changed)".into(),
                });
            }
            notes.push(format!(
                "image {} was not built by gbo: the packages of {} ({}) are installed with apt-get when missing, at provisioning{}",
                image.name,
                names(&packaged),
                packages(&packaged),
                if nic { "" } else { "; the default profile has no network device, so they must be in the image already" }
            ));
        }
        Provenance::Foreign => {}
        Provenance::Unknown => {
            if !packaged.is_empty() {
                notes.push(format!(
                    "image {} is pulled from {}: unless gbo built it, the packages of {} ({}) are installed with apt-get at provisioning (containers need a network)",
                    image.name,
                    image.server.as_deref().unwrap_or("its server"),
                    names(&packaged),
                    packages(&packaged)
                ));
            }
        }
    }
    Ok(())
}

/// Ports published by other gbo tenants' instances.
async fn taken_ports(
    lxd: &Client,
    tenant: &TenantName,
) -> Result<BTreeMap<(gbo_components::Protocol, u16), String>, InstallError> {
    let tenants = inventory::managed_tenants(lxd).await.map_err(InstallError::lxd("listing instances"))?;
    let mut taken = BTreeMap::new();
    for (name, instances) in tenants {
        if name == tenant.as_str() {
            continue;
        }
        for m in instances {
            for p in &m.ports {
                let protocol =
                    if p.protocol == "udp" { gbo_components::Protocol::Udp } else { gbo_components::Protocol::Tcp };
                taken.insert((protocol, p.host_port), m.name.clone());
            }
        }
    }
    Ok(taken)
}

fn existing_ports(instances: &[ManagedInstance]) -> BTreeMap<(Role, String), u16> {
    let mut out = BTreeMap::new();
    for m in instances {
        let Ok(role) = m.role.parse::<Role>() else { continue };
        for p in &m.ports {
            if let Some(port_name) = p.device.strip_prefix("gbo-port-") {
                out.insert((role, port_name.to_string()), p.host_port);
            }
        }
    }
    out
}

/// Build the desired state of every role to install.
#[allow(clippy::too_many_arguments)]
fn desired_states(
    scope: &TenantScope,
    request: &InstallRequest,
    image: &ResolvedImage,
    secrets: &Secrets,
    allocations: &BTreeMap<(Role, String), Allocation>,
    artifacts: &BTreeMap<Role, Vec<String>>,
) -> Result<Vec<Desired>, InstallError> {
    let mut tenant_file = request.tenant_file.clone();
    tenant_file.roles = scope.all_roles.clone();
    tenant_file.stack_dir = Some(scope.stack_dir.display().to_string());
    let mut host_ports = HostPorts::default();
    for ((role, name), a) in allocations {
        host_ports.insert(*role, name, a.port);
    }
    let ctx = RenderContext { tenant: &tenant_file, secrets, host_ports: &host_ports };
    let mut out = Vec::new();
    for role in install_order(&scope.to_install).into_iter().flatten() {
        let spec = component(role, &ctx)?;
        let mut config = BTreeMap::new();
        config.insert(inventory::KEY_MANAGED.to_string(), "true".to_string());
        config.insert(inventory::KEY_TENANT.to_string(), scope.tenant.to_string());
        config.insert(inventory::KEY_ROLE.to_string(), role.as_str().to_string());
        config.insert(inventory::KEY_STACK_DIR.to_string(), scope.stack_dir.display().to_string());
        config.insert(inventory::KEY_CATALOGUE.to_string(), CATALOGUE_VERSION.to_string());
        config.insert(inventory::KEY_SPEC_HASH.to_string(), spec.spec_hash());
        config.extend(spec.lxd_config.clone());
        // An instance gbo did not create (a seed stack) is taken over as it is: it keeps its own privileged flag.
        if let Some(existing) = scope.instances.iter().find(|m| m.name == spec.instance && m.adopted) {
            config.insert(inventory::KEY_ADOPTED.to_string(), "true".to_string());
            match existing.instance.config.get(plan::PRIVILEGED) {
                Some(value) => config.insert(plan::PRIVILEGED.to_string(), value.clone()),
                None => config.remove(plan::PRIVILEGED),
            };
        }
        let mut devices = BTreeMap::new();
        let mut host_dirs = Vec::new();
        for mount in &spec.mounts {
            let host = scope.stack_dir.join(&mount.host_subdir);
            let name = format!("gbo-{}", mount.kind.as_str());
            devices.insert(
                name.clone(),
                DiskDevice::new(host.display().to_string(), mount.container_path)
                    .to_config(&device(&name)?)
                    .map_err(InstallError::lxd(format!("device {name}")))?,
            );
            host_dirs.push(HostDir { path: host, uid: mount.owner.uid, gid: mount.owner.gid });
        }
        for port in &spec.ports {
            let Some(a) = allocations.get(&(role, port.name.to_string())) else { continue };
            let name = format!("gbo-port-{}", port.name);
            let proxy = ProxyDevice::new(
                address(port.protocol, a.address, a.port),
                address(port.protocol, std::net::IpAddr::from([127, 0, 0, 1]), port.container_port),
            );
            devices.insert(name.clone(), proxy_config(&name, proxy)?);
        }
        for wire in &spec.wires {
            let target_port = gbo_components::ports(wire.role).into_iter().find(|p| p.name == wire.port_name);
            let (Some(target), Some(a)) = (target_port, allocations.get(&(wire.role, wire.port_name.to_string())))
            else {
                continue;
            };
            let name = format!("gbo-wire-{}-{}", wire.role.container_suffix(), wire.local_port);
            let connect_ip =
                if a.address.is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { a.address };
            let proxy = ProxyDevice::new(
                address(target.protocol, std::net::IpAddr::from([127, 0, 0, 1]), wire.local_port),
                address(target.protocol, connect_ip, a.port),
            )
            .bind_instance();
            devices.insert(name.clone(), proxy_config(&name, proxy)?);
        }
        let files = spec
            .files
            .iter()
            .map(|file| {
                let host_path = spec.mounts.iter().find_map(|m| {
                    file.path
                        .strip_prefix(m.container_path)
                        .and_then(|rest| rest.strip_prefix('/'))
                        .map(|rest| scope.stack_dir.join(&m.host_subdir).join(rest))
                });
                PlacedFile { file: file.clone(), host_path }
            })
            .collect();
        let artifact_entries = artifacts.get(&role).cloned().unwrap_or_default();
        let provisioned_hash = plan::provisioned_hash(&spec, &artifact_entries);
        out.push(Desired {
            role,
            instance: spec.instance.clone(),
            image: image.name.clone(),
            stack_dir: scope.stack_dir.clone(),
            spec,
            config,
            devices,
            host_dirs,
            files,
            artifacts: artifact_entries,
            provisioned_hash,
        });
    }
    Ok(out)
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
    let mut scope = scope(lxd, request, extra).await?;
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
    let allocations = ports::allocate(
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
        scope
            .notes
            .push(format!("tenant {} has no public_address: its public ports listen on 127.0.0.1 only", scope.tenant));
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
        if scope.instances.iter().any(|m| m.name == d.instance && m.adopted) {
            let kept = d.config.get(plan::PRIVILEGED).is_some_and(|v| v == "true");
            if kept != d.spec.privileged {
                scope.notes.push(format!(
                    "{} was not created by gbo: it keeps its own security.privileged={kept} (the tenant file does not change an adopted container's)",
                    d.instance
                ));
            }
        }
    }
    let installed_system = scope.instances.iter().find(|m| m.managed && m.role == Role::System.as_str()).cloned();
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
    let instances = observe::by_name(&scope.instances);
    let observed = futures_util::future::try_join_all(
        desired.iter().map(|d| observe::observe(lxd, d, instances.get(&d.instance))),
    )
    .await?;
    let components = desired
        .iter()
        .zip(observed.iter())
        .map(|(d, o)| ComponentPlan { role: d.role, instance: d.instance.clone(), steps: plan::diff(d, o) })
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
    })
}

/// The health target of a spec: the published port of its health check's container port.
fn health_target(desired: &Desired, allocations: &BTreeMap<(Role, String), Allocation>) -> Option<health::Target> {
    let port = desired.spec.health.port()?;
    let spec_port =
        desired.spec.ports.iter().find(|p| p.container_port == port && p.protocol == gbo_components::Protocol::Tcp)?;
    let a = allocations.get(&(desired.role, spec_port.name.to_string()))?;
    Some(health::Target { address: a.address, port: a.port })
}

/// Install: lock the tenant, plan, apply concurrently in dependency order, verify health.
pub async fn install(
    lxd: &Client,
    request: &InstallRequest,
    progress: ProgressFn<'_>,
) -> Result<InstallReport, InstallError> {
    // Validate and check everything that needs no change first (bad input leaves the host untouched).
    let preview = plan(lxd, request, false).await?;
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
    apply_planned(lxd, request, &planned, progress).await
}

/// Apply a plan made with `for_apply = true`.
pub async fn apply_planned(
    lxd: &Client,
    request: &InstallRequest,
    planned: &PlannedInstall,
    progress: ProgressFn<'_>,
) -> Result<InstallReport, InstallError> {
    let ctx = apply::ApplyContext {
        lxd,
        artifacts: &request.artifacts,
        progress,
        secrets: &planned.secrets,
        image: &planned.image,
    };
    for (desired, component) in planned.desired.iter().zip(planned.components.iter()) {
        let message = if component.steps.is_empty() {
            "up to date".to_string()
        } else {
            format!("{} step(s) planned", component.steps.len())
        };
        progress(Progress { instance: desired.instance.clone(), message });
    }
    let mut done: BTreeMap<Role, tokio::sync::watch::Sender<Option<bool>>> = BTreeMap::new();
    let mut receivers: BTreeMap<Role, tokio::sync::watch::Receiver<Option<bool>>> = BTreeMap::new();
    for d in &planned.desired {
        let (tx, rx) = tokio::sync::watch::channel(None);
        done.insert(d.role, tx);
        receivers.insert(d.role, rx);
    }
    let tasks = planned.desired.iter().zip(planned.components.iter()).map(|(desired, component)| {
        let ctx = &ctx;
        let receivers = &receivers;
        let done = &done;
        async move {
            let result = async {
                let waits: Vec<&str> = desired
                    .spec
                    .dependencies
                    .iter()
                    .filter(|d| receivers.contains_key(*d))
                    .map(|d| d.as_str())
                    .collect();
                if !waits.is_empty() {
                    (ctx.progress)(Progress {
                        instance: desired.instance.clone(),
                        message: format!("waiting for {}", waits.join(", ")),
                    });
                }
                for dep in desired.spec.dependencies.iter() {
                    if let Some(rx) = receivers.get(dep) {
                        let mut rx = rx.clone();
                        let ok = loop {
                            if let Some(ok) = *rx.borrow() {
                                break ok;
                            }
                            if rx.changed().await.is_err() {
                                break false;
                            }
                        };
                        if !ok {
                            return Err(InstallError::DependencyFailed {
                                role: desired.role.to_string(),
                                dependency: dep.to_string(),
                            });
                        }
                    }
                }
                if !component.steps.is_empty() {
                    apply::apply_component(ctx, desired, &component.steps).await?;
                }
                let health = match health_target(desired, &planned.allocations) {
                    Some(target) => {
                        health::wait_healthy(&desired.spec.health, &target, &planned.secrets, request.health_timeout)
                            .await
                    }
                    None => unit_health(ctx.lxd, desired).await,
                };
                (ctx.progress)(Progress {
                    instance: desired.instance.clone(),
                    message: if health.healthy {
                        format!("{HEALTHY}{})", health.detail)
                    } else {
                        format!("{UNHEALTHY}{})", health.detail)
                    },
                });
                if !health.healthy {
                    return Err(InstallError::Unhealthy {
                        instance: desired.instance.clone(),
                        waited_secs: request.health_timeout.as_secs(),
                        reason: health.detail,
                    });
                }
                Ok(ComponentResult {
                    role: desired.role,
                    instance: desired.instance.clone(),
                    steps: component.steps.len(),
                    health,
                })
            }
            .await;
            if let Err(e) = &result {
                (ctx.progress)(Progress {
                    instance: desired.instance.clone(),
                    message: format!("{FAILED}{}", error::with_causes(e)),
                });
            }
            if let Some(tx) = done.get(&desired.role) {
                let _ = tx.send(Some(result.is_ok()));
            }
            result
        }
    });
    let results = futures_util::future::join_all(tasks).await;
    let mut components = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(c) => components.push(c),
            Err(e) => errors.push(e),
        }
    }
    if errors.len() == 1 {
        return Err(errors.remove(0));
    }
    if !errors.is_empty() {
        return Err(InstallError::Several(errors));
    }
    Ok(InstallReport {
        tenant: planned.tenant.to_string(),
        stack_dir: planned.stack_dir.clone(),
        components,
        skipped: planned.skipped.iter().map(|(r, why)| (r.to_string(), why.clone())).collect(),
    })
}

/// The start of a progress message that ends a component's line as healthy (the message goes on with the
/// check's detail and a closing parenthesis).
const HEALTHY: &str = "healthy (";
/// ... as unhealthy.
const UNHEALTHY: &str = "UNHEALTHY (";
/// ... as failed (the message goes on with the error).
const FAILED: &str = "failed: ";

/// How a component's progress ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Installed and healthy.
    Healthy,
    /// Installed, but its health check failed.
    Unhealthy,
    /// Its install failed (or a dependency's did).
    Failed,
}

impl Progress {
    /// Whether this message of [`install`] is the last of its component, and how the component ended.
    pub fn finished(&self) -> Option<Finished> {
        if self.message.starts_with(HEALTHY) {
            Some(Finished::Healthy)
        } else if self.message.starts_with(UNHEALTHY) {
            Some(Finished::Unhealthy)
        } else if self.message.starts_with(FAILED) {
            Some(Finished::Failed)
        } else {
            None
        }
    }
}

/// Health of a component without a published probe port: its unit is active (websocket exec, read-only).
async fn unit_health(lxd: &Client, desired: &Desired) -> health::Health {
    let unit = match &desired.spec.health {
        HealthCheck::UnitActive { unit, .. } => unit.to_string(),
        _ => desired.role.unit_name(),
    };
    let Ok(name) = lxd_client::InstanceName::new(desired.instance.clone()) else {
        return health::Health { healthy: false, detail: "invalid instance name".into() };
    };
    let request =
        lxd_client::ExecRequest::new(["systemctl", "is-active", unit.as_str()]).timeout(Duration::from_secs(30));
    match lxd.exec_output(&name, &request).await {
        Ok(out) if out.success() => health::Health { healthy: true, detail: format!("{unit} is active") },
        Ok(out) => health::Health { healthy: false, detail: format!("{unit} is {}", out.stdout_text().trim()) },
        Err(e) => health::Health { healthy: false, detail: format!("systemctl is-active {unit}: {e}") },
    }
}

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
    let _lock = lock::acquire_recorded(lxd, tenant.as_str(), lock_wait).await?;
    let everything: Vec<ManagedInstance> = lxd
        .instances()
        .await
        .map_err(InstallError::lxd("listing instances"))?
        .iter()
        .map(inventory::describe)
        .collect();
    let claims = tenancy::Claims::of(&everything);
    let instances: Vec<&ManagedInstance> = everything.iter().filter(|m| m.tenant == tenant.as_str()).collect();
    let stack_dir = instances.iter().find_map(|m| m.stack_dir.clone());
    // What each role's purge removes: decided (and refused) before anything is deleted.
    let mut plans = Vec::new();
    for role in roles {
        let name = instance_name(tenant, *role);
        let found = instances.iter().find(|m| m.name == name).copied();
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
fn remove_recorded(stack_dir: Option<&Path>, path: &Path) -> Result<(), InstallError> {
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

/// The health check and target of an observed instance, from the catalogue and its published ports.
pub fn health_of(m: &ManagedInstance) -> Option<(HealthCheck, health::Target)> {
    let role: Role = m.role.parse().ok()?;
    let check = status::health_check(role)?;
    let port = check.port()?;
    let published = m.ports.iter().find(|p| p.container_port == port && p.protocol == "tcp")?;
    let address = published.host_address.parse().ok()?;
    Some((check, health::Target { address, port: published.host_port }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_fix_names_every_role_that_has_packages() {
        let fix = build_fix(&[Role::System, Role::Cache, Role::Drive], DEFAULT_IMAGE);
        let roles: Vec<&str> = fix.trim_start_matches("gbo image build --components ").split(',').collect();
        assert!(roles.contains(&"system") && roles.contains(&"cache") && !roles.contains(&"drive"), "{fix}");
        assert_eq!(build_fix(&[Role::Email], "mine"), "gbo image build --components email --alias mine");
        assert_eq!(build_fix(&[Role::Drive], DEFAULT_IMAGE), "gbo image build --components tables,cache,proxy");
    }
}
