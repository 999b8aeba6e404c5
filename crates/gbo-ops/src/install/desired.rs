//! The desired state of each role to install: its spec rendered for the tenant, the config keys and devices gbo
//! owns (mounts, published ports, wiring), its host directories and files.

use std::collections::{BTreeMap, BTreeSet};

use gbo_components::{
    component, install_order, required_secrets, HostPorts, RenderContext, Role, SecretSpec, Secrets, CATALOGUE_VERSION,
};
use lxd_client::{DeviceConfig, DeviceName, ProxyAddress, ProxyDevice};

use super::image_source::ResolvedImage;
use super::plan::{self, Desired, PlacedFile};
use super::ports::Allocation;
use super::scope::TenantScope;
use super::{InstallError, InstallRequest};
use crate::inventory;

pub(super) fn all_secret_specs(roles: &[Role]) -> Vec<SecretSpec> {
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

pub(super) fn device(name: &str) -> Result<DeviceName, InstallError> {
    DeviceName::new(name.to_string()).map_err(InstallError::lxd(format!("device name {name}")))
}

pub(super) fn proxy_config(name: &str, proxy: ProxyDevice) -> Result<DeviceConfig, InstallError> {
    proxy.to_config(&device(name)?).map_err(InstallError::lxd(format!("device {name}")))
}

pub(super) fn address(protocol: gbo_components::Protocol, ip: std::net::IpAddr, port: u16) -> ProxyAddress {
    let ip = ip.to_string();
    match protocol {
        gbo_components::Protocol::Tcp => ProxyAddress::tcp(ip, port),
        gbo_components::Protocol::Udp => ProxyAddress::udp(ip, port),
    }
}

/// The proxy device that publishes `role`'s port `name` on the host at `address:port` (`gbo-port-<name>`, connecting
/// to the port inside the container), or `None` when the role has no such port.
pub fn published_port_device(
    role: Role,
    name: &str,
    address_ip: std::net::IpAddr,
    port: u16,
) -> Result<Option<(String, DeviceConfig)>, InstallError> {
    let Some(spec) = gbo_components::ports(role).into_iter().find(|p| p.name == name) else { return Ok(None) };
    let device = format!("gbo-port-{name}");
    let proxy = ProxyDevice::new(
        address(spec.protocol, address_ip, port),
        address(spec.protocol, std::net::IpAddr::from([127, 0, 0, 1]), spec.container_port),
    );
    let config = proxy_config(&device, proxy)?;
    Ok(Some((device, config)))
}

/// Build the desired state of every role to install.
#[allow(clippy::too_many_arguments)]
pub(super) fn desired_states(
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
        if let Some(existing) = scope.instances.iter().find(|m| m.name.as_str() == spec.instance && m.adopted) {
            config.insert(inventory::KEY_ADOPTED.to_string(), "true".to_string());
            match existing.instance.config.get(plan::PRIVILEGED) {
                Some(value) => config.insert(plan::PRIVILEGED.to_string(), value.clone()),
                None => config.remove(plan::PRIVILEGED),
            };
        }
        if scope.storage.mode() == super::storage::StorageMode::Volumes {
            config.insert(super::storage::KEY_STORAGE.to_string(), "volumes".to_string());
        }
        let mut devices = BTreeMap::new();
        let mut host_dirs = Vec::new();
        let mut volumes = Vec::new();
        for mount in &spec.mounts {
            let placed = scope.storage.place(&scope.tenant, role, mount)?;
            devices.insert(format!("gbo-{}", mount.kind.as_str()), placed.device);
            host_dirs.extend(placed.host_dir);
            volumes.extend(placed.volume);
        }
        let mut recorded = Vec::new();
        for port in &spec.ports {
            let Some(a) = allocations.get(&(role, port.name.to_string())) else { continue };
            recorded.push(inventory::RecordedPort { name: port.name.to_string(), address: a.address, port: a.port });
            if let Some((name, config)) = published_port_device(role, port.name, a.address, a.port)? {
                devices.insert(name, config);
            }
        }
        if !recorded.is_empty() {
            config.insert(inventory::KEY_PORTS.to_string(), inventory::format_ports(&recorded));
        }
        for wire in &spec.wires {
            let Some(target) = gbo_components::ports(wire.role).into_iter().find(|p| p.name == wire.port_name) else {
                continue;
            };
            // A server outside gbo (the tenant file's `[webmail]`) is reached at its own address; a role of the
            // tenant at its published port.
            let (connect_ip, connect_port) =
                match (wire.external, allocations.get(&(wire.role, wire.port_name.to_string()))) {
                    (Some(external), _) => (external.ip(), external.port()),
                    (None, Some(a)) => (
                        if a.address.is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { a.address },
                        a.port,
                    ),
                    (None, None) => continue,
                };
            let name = format!("gbo-wire-{}-{}", wire.role.container_suffix(), wire.local_port);
            let proxy = ProxyDevice::new(
                address(target.protocol, std::net::IpAddr::from([127, 0, 0, 1]), wire.local_port),
                address(target.protocol, connect_ip, connect_port),
            )
            .bind_instance();
            devices.insert(name.clone(), proxy_config(&name, proxy)?);
        }
        let files = spec
            .files
            .iter()
            .map(|file| PlacedFile { file: file.clone(), host_path: scope.storage.host_path(&spec.mounts, &file.path) })
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
            volumes,
            files,
            artifacts: artifact_entries,
            provisioned_hash,
        });
    }
    Ok(out)
}
