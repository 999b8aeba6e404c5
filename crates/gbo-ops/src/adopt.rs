//! `gbo adopt`: containers built by hand from the seed (`{tenant}-{role}` names, host directories
//! `<stack>/<role>/{data,conf,logs}` mounted at `/opt/gbo/{data,conf,logs}`, proxy devices publishing the role's
//! ports) become gbo-managed in place.
//!
//! Adopting reads what is there and changes nothing but names and records: each disk device that mounts one of
//! the role's catalogue directories is renamed to the catalogue's device (`gbo-data`, ...), each host proxy device
//! that reaches one of the role's catalogue ports to `gbo-port-<name>` (its listen address and port kept and
//! recorded in [`inventory::KEY_PORTS`]), and the ownership keys are written (`user.gbo.tenant`, `role`,
//! `stack-dir`, `managed`, and `adopted`, which keeps the container's own privileged flag). No container is
//! recreated, stopped or moved, and no host data is touched. A container that cannot be mapped is named with the
//! reason and left as it is. What the next `gbo install` would then change is computed by the install engine.

use std::collections::BTreeMap;
use std::path::PathBuf;

use gbo_components::{Protocol, Role, TenantName};
use lxd_client::{Client, InstanceName, ProxyBind, ProxyDevice};

use crate::install::{self, ComponentPlan, InstallError, InstallRequest};
use crate::inventory::{self, ManagedInstance, RecordedPort};

/// What adopting one container does (or did).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Adoption {
    /// The container.
    pub instance: String,
    /// Its role.
    pub role: Role,
    /// The stack dir its mounts live in.
    pub stack_dir: PathBuf,
    /// Devices renamed to the catalogue's names: `(from, to)`.
    pub renamed: Vec<(String, String)>,
    /// Ports recorded (the proxy devices' own).
    pub ports: Vec<String>,
    /// Devices left as they are (no catalogue counterpart), with why.
    pub left: Vec<String>,
}

/// A container that cannot be adopted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// The container.
    pub instance: String,
    /// Why.
    pub reason: String,
}

/// The result of `gbo adopt`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdoptReport {
    /// Tenant.
    pub tenant: String,
    /// Whether the changes were written (false: `--dry-run`).
    pub applied: bool,
    /// Containers adopted (or to adopt).
    pub adopted: Vec<Adoption>,
    /// Containers already managed by gbo.
    pub already: Vec<String>,
    /// Containers that cannot be adopted.
    pub refused: Vec<Refusal>,
    /// What the next `gbo install` of the adopted roles would change (after adoption; `None` on a dry run or when
    /// nothing was adopted).
    pub next_install: Option<Vec<ComponentPlan>>,
    /// Notes of that plan.
    pub notes: Vec<String>,
}

/// What to adopt.
#[derive(Debug, Clone)]
pub struct AdoptRequest {
    /// The install request the next install would use (its tenant file names the tenant, its image the image).
    pub install: InstallRequest,
    /// Roles (empty: every `{tenant}-{role}` container).
    pub roles: Vec<Role>,
    /// Write nothing; show the mapping.
    pub dry_run: bool,
}

/// The catalogue's mounts and ports of a role (rendered with placeholder secrets: nothing secret is needed).
fn catalogue_of(role: Role) -> Result<(Vec<gbo_components::Mount>, Vec<gbo_components::PortSpec>), InstallError> {
    let tenant = gbo_components::TenantFile { roles: gbo_components::with_dependencies(&[role]), ..Default::default() };
    let specs: Vec<_> =
        tenant.roles.iter().flat_map(|r| gbo_components::required_secrets(*r).iter().copied()).collect();
    let secrets = install::secrets::with_placeholders(gbo_components::Secrets::new(), &specs);
    let ports = gbo_components::HostPorts::seed(&tenant.roles);
    let ctx = gbo_components::RenderContext { tenant: &tenant, secrets: &secrets, host_ports: &ports };
    let spec = gbo_components::component(role, &ctx)?;
    Ok((spec.mounts, gbo_components::ports(role)))
}

/// Map one container to the catalogue: the adoption, or why it cannot be.
fn map(m: &ManagedInstance, stack_flag: Option<&PathBuf>) -> Result<Adoption, String> {
    let Some(role) = m.role else {
        return Err(format!("`{}` is no role of the catalogue (see `gbo components`)", m.role_label()));
    };
    let (mounts, ports) = catalogue_of(role).map_err(|e| format!("the catalogue cannot render {role}: {e}"))?;
    let devices = &m.instance.devices;
    let mut renamed = Vec::new();
    let mut left = Vec::new();
    let mut stack_dirs: BTreeMap<PathBuf, String> = BTreeMap::new();
    for mount in &mounts {
        let want = format!("{}{}", inventory::DEVICE_PREFIX, mount.kind.as_str());
        let found: Vec<(&String, &lxd_client::DeviceConfig)> = devices
            .iter()
            .filter(|(_, d)| {
                d.get("type").map(String::as_str) == Some("disk")
                    && d.get("path").map(|p| p.trim_end_matches('/'))
                        == Some(mount.container_path.trim_end_matches('/'))
            })
            .collect();
        let Some((name, device)) = found.first() else { continue };
        if found.len() > 1 {
            return Err(format!("{} devices mount {}", found.len(), mount.container_path));
        }
        let source = device.get("source").cloned().unwrap_or_default();
        let source_path = PathBuf::from(source.trim_end_matches('/'));
        if !source_path.is_absolute() {
            return Err(format!("device {name} mounts {source:?} at {}: not a host directory", mount.container_path));
        }
        let Some(stack) = strip_tail(&source_path, &mount.host_subdir) else {
            return Err(format!(
                "device {name} mounts {} at {}; gbo expects <stack dir>/{} there",
                source_path.display(),
                mount.container_path,
                mount.host_subdir
            ));
        };
        stack_dirs.insert(stack, (*name).clone());
        if name.as_str() != want {
            if devices.contains_key(&want) {
                return Err(format!("device {name} mounts {}, but a device {want} exists too", mount.container_path));
            }
            renamed.push(((*name).clone(), want));
        }
    }
    let stack_dir =
        match (stack_dirs.len(), stack_flag) {
            (0, Some(flag)) => flag.clone(),
            (0, None) => return Err(
                "no mount tells where its stack dir is (no disk device at /opt/gbo/{data,conf,logs}); pass --stack-dir"
                    .into(),
            ),
            (1, flag) => {
                let found = stack_dirs.keys().next().cloned().unwrap_or_default();
                if let Some(flag) = flag {
                    if flag != &found {
                        return Err(format!(
                            "its mounts are under {}, not --stack-dir {}",
                            found.display(),
                            flag.display()
                        ));
                    }
                }
                found
            }
            _ => {
                return Err(format!(
                    "its mounts are under several stack dirs: {}",
                    stack_dirs.keys().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                ))
            }
        };
    let mut recorded = Vec::new();
    for (name, device) in devices {
        if device.get("type").map(String::as_str) != Some("proxy") || name.starts_with(inventory::DEVICE_PREFIX) {
            continue;
        }
        let Some(proxy) = ProxyDevice::from_config(device) else {
            left.push(format!("{name}: a proxy device gbo cannot read"));
            continue;
        };
        if proxy.bind != ProxyBind::Host {
            left.push(format!("{name}: listens inside the container (gbo wires dependencies itself)"));
            continue;
        }
        let protocol =
            if proxy.connect.protocol == lxd_client::ProxyProtocol::Udp { Protocol::Udp } else { Protocol::Tcp };
        let Some(spec) = ports.iter().find(|p| p.container_port == proxy.connect.port && p.protocol == protocol) else {
            left.push(format!("{name}: reaches port {} in the container, no port of {role}", proxy.connect.port));
            continue;
        };
        let want = format!("gbo-port-{}", spec.name);
        if devices.contains_key(&want) || renamed.iter().any(|(_, to)| to == &want) {
            left.push(format!("{name}: {want} exists already"));
            continue;
        }
        let address: std::net::IpAddr = proxy
            .listen
            .address
            .parse()
            .map_err(|_| format!("device {name} listens on {:?}, not an IP address", proxy.listen.address))?;
        recorded.push(RecordedPort { name: spec.name.to_string(), address, port: proxy.listen.port });
        renamed.push((name.clone(), want));
    }
    for name in devices.keys() {
        let handled =
            renamed.iter().any(|(from, _)| from == name) || left.iter().any(|l| l.starts_with(&format!("{name}:")));
        if !handled && !name.starts_with(inventory::DEVICE_PREFIX) {
            left.push(format!("{name}: no catalogue counterpart (left as it is)"));
        }
    }
    Ok(Adoption {
        instance: m.name.to_string(),
        role,
        stack_dir,
        renamed,
        ports: recorded
            .iter()
            .map(|p| format!("{}={}", p.name, std::net::SocketAddr::new(p.address, p.port)))
            .collect(),
        left,
    })
}

/// `path` without its trailing components `tail` (`/s/tables/data` minus `tables/data` is `/s`).
fn strip_tail(path: &std::path::Path, tail: &str) -> Option<PathBuf> {
    let mut out = path.to_path_buf();
    for part in tail.rsplit('/').filter(|p| !p.is_empty()) {
        if out.file_name()? != std::ffi::OsStr::new(part) {
            return None;
        }
        out.pop();
    }
    Some(out)
}

/// Adopt a tenant's hand-built containers (see the module's documentation).
pub async fn adopt(lxd: &Client, request: &AdoptRequest) -> Result<AdoptReport, InstallError> {
    let tenant: TenantName = request.install.tenant_file.tenant.clone();
    let instances = inventory::tenant_instances(lxd, &tenant).await.map_err(InstallError::lxd("listing instances"))?;
    let selected: Vec<&ManagedInstance> = instances
        .iter()
        .filter(|m| request.roles.is_empty() || m.role.is_some_and(|r| request.roles.contains(&r)))
        .collect();
    for role in &request.roles {
        if !instances.iter().any(|m| m.role == Some(*role)) {
            return Err(InstallError::BadInput(format!(
                "tenant {tenant} has no container {}",
                gbo_components::instance_name(&tenant, *role)
            )));
        }
    }
    if selected.is_empty() {
        return Err(InstallError::BadInput(format!("tenant {tenant} has no containers named {tenant}-<role>")));
    }
    let mut adopted = Vec::new();
    let mut already = Vec::new();
    let mut refused = Vec::new();
    let flag = request.install.stack_dir.as_ref().map(|p| install::absolute(p)).transpose()?;
    let recorded_stack = instances.iter().filter(|m| m.managed).find_map(|m| m.stack_dir.clone());
    for m in selected {
        if m.managed {
            already.push(m.name.to_string());
            continue;
        }
        match map(m, flag.as_ref().or(recorded_stack.as_ref())) {
            Ok(a) => adopted.push((m, a)),
            Err(reason) => refused.push(Refusal { instance: m.name.to_string(), reason }),
        }
    }
    // One tenant, one stack dir.
    let dirs: std::collections::BTreeSet<PathBuf> =
        adopted.iter().map(|(_, a)| a.stack_dir.clone()).chain(recorded_stack.iter().cloned()).collect();
    if dirs.len() > 1 {
        let (keep, moved): (Vec<_>, Vec<_>) =
            adopted.into_iter().partition(|(_, a)| Some(&a.stack_dir) == dirs.iter().next());
        adopted = keep;
        for (_, a) in moved {
            refused.push(Refusal {
                instance: a.instance.clone(),
                reason: format!(
                    "its mounts are under {}, the tenant's other containers under {}: a tenant has one stack dir",
                    a.stack_dir.display(),
                    dirs.iter().next().map(|d| d.display().to_string()).unwrap_or_default()
                ),
            });
        }
    }
    if let Some(dir) = dirs.iter().next() {
        // Tenants never share a directory: refused before anything is written.
        let everything: Vec<ManagedInstance> = lxd
            .instances()
            .await
            .map_err(InstallError::lxd("listing instances"))?
            .iter()
            .filter_map(inventory::describe)
            .collect();
        let role_dirs: Vec<PathBuf> = adopted.iter().map(|(_, a)| dir.join(a.role.container_suffix())).collect();
        install::tenancy::Claims::of(&everything).check(tenant.as_str(), dir, &role_dirs)?;
    }
    if !request.dry_run {
        for (m, a) in &adopted {
            write(lxd, m, a, &tenant).await?;
        }
    }
    let (next_install, notes) = if !request.dry_run && !adopted.is_empty() {
        let mut install_request = request.install.clone();
        install_request.roles = adopted.iter().map(|(_, a)| a.role).collect();
        install_request.stack_dir = None;
        let planned = install::plan(lxd, &install_request, false).await?;
        (Some(planned.components.clone()), planned.notes.clone())
    } else {
        (None, Vec::new())
    };
    Ok(AdoptReport {
        tenant: tenant.to_string(),
        applied: !request.dry_run,
        adopted: adopted.into_iter().map(|(_, a)| a).collect(),
        already,
        refused,
        next_install,
        notes,
    })
}

/// Rename the mapped devices and write the ownership keys, in one update of the instance (nothing restarts).
async fn write(lxd: &Client, m: &ManagedInstance, a: &Adoption, tenant: &TenantName) -> Result<(), InstallError> {
    let name = InstanceName::new(m.name.as_str()).map_err(InstallError::lxd(format!("instance name {}", m.name)))?;
    let ports = a.ports.join(",");
    lxd.update_instance(&name, |put| {
        for (from, to) in &a.renamed {
            if let Some(device) = put.devices.remove(from) {
                put.devices.insert(to.clone(), device);
            }
        }
        put.config.insert(inventory::KEY_TENANT.to_string(), tenant.to_string());
        put.config.insert(inventory::KEY_ROLE.to_string(), a.role.as_str().to_string());
        put.config.insert(inventory::KEY_STACK_DIR.to_string(), a.stack_dir.display().to_string());
        put.config.insert(inventory::KEY_MANAGED.to_string(), "true".to_string());
        put.config.insert(inventory::KEY_ADOPTED.to_string(), "true".to_string());
        if !ports.is_empty() {
            put.config.insert(inventory::KEY_PORTS.to_string(), ports.clone());
        }
    })
    .await
    .map_err(InstallError::lxd(format!("adopting {}", m.name)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_dir_is_the_mount_source_without_the_role_subdir() {
        assert_eq!(
            strip_tail(std::path::Path::new("/srv/botserver-stack/tables/data"), "tables/data"),
            Some(PathBuf::from("/srv/botserver-stack"))
        );
        assert_eq!(strip_tail(std::path::Path::new("/srv/other/data"), "tables/data"), None);
    }
}
