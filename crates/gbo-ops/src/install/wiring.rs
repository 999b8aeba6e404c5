//! Wiring across cluster members: which host address each published port listens on, and where each wire connects.
//!
//! A container reaches a dependency at 127.0.0.1 inside itself through a `bind=instance` proxy device (a wire,
//! `gbo-wire-<role>-<port>`) that connects, from the host of the member it runs on, to the dependency's published
//! port. On one machine that port listens on 127.0.0.1. When a container wires to a dependency on another cluster
//! member, the dependency's port listens on its member's address instead (the host part of the member's `url` in
//! `GET /1.0/cluster/members`) and every wire to it connects there; ports no container of another member wires to
//! stay on 127.0.0.1. Public ports of a tenant without `public_address` (other than the default tenant, whose
//! public ports listen on every address) listen on their member's address on a cluster.
//!
//! The plan computes this from the members each container is on or goes to ([`cross_member_ports`],
//! [`place_addresses`]). A container whose member is not known until LXD's scheduler places it is rewired right
//! after it is created ([`rewire`], which only widens during an install, so concurrent creates cannot undo each
//! other), and `gbo move` rewires the tenant after each move: a later plan computes the same devices.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use gbo_components::{Exposure, Role, TenantName, Wire};
use lxd_client::{Client, ClusterMember, DeviceConfig, ProxyAddress};

use super::error::InstallError;
use super::ports::{Allocation, PortRequest};
use crate::inventory::{self, ManagedInstance};

/// The loopback address wires and internal ports use on one member.
pub const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The address of each member: the host part of its `url`, when it is an IP address.
pub fn member_addresses(members: &[ClusterMember]) -> BTreeMap<String, IpAddr> {
    members.iter().filter_map(|m| Some((m.server_name.clone(), m.host()?.parse::<IpAddr>().ok()?))).collect()
}

/// The address of `member`, or an error naming it and why it has none.
pub fn address_of(members: &BTreeMap<String, IpAddr>, member: &str, why: &str) -> Result<IpAddr, InstallError> {
    members.get(member).copied().ok_or_else(|| {
        InstallError::BadInput(format!(
            "cluster member {member} has no IP address in its url (GET /1.0/cluster/members): {why} needs one"
        ))
    })
}

/// The published ports (role, port name) that a container on another member wires to, from the wires of each
/// role and the member each role is on (roles whose member is not known yet are left out).
pub fn cross_member_ports(
    wires: &BTreeMap<Role, Vec<Wire>>,
    locations: &BTreeMap<Role, String>,
) -> BTreeSet<(Role, String)> {
    let mut out = BTreeSet::new();
    for (role, role_wires) in wires {
        let Some(here) = locations.get(role) else { continue };
        for wire in role_wires.iter().filter(|w| w.external.is_none()) {
            if locations.get(&wire.role).is_some_and(|there| there != here) {
                out.insert((wire.role, wire.port_name.to_string()));
            }
        }
    }
    out
}

/// Put the ports in `cross` on their member's address, and, when `public_on_member`, every public port of a role
/// whose member is known.
pub fn place_addresses(
    allocations: &mut BTreeMap<(Role, String), Allocation>,
    requests: &[PortRequest],
    cross: &BTreeSet<(Role, String)>,
    locations: &BTreeMap<Role, String>,
    members: &BTreeMap<String, IpAddr>,
    public_on_member: bool,
) -> Result<(), InstallError> {
    for request in requests {
        let key = (request.role, request.name.clone());
        let Some(member) = locations.get(&request.role) else { continue };
        let why = if cross.contains(&key) {
            format!("{}.{} wired from another member", request.role, request.name)
        } else if public_on_member && request.exposure == Exposure::Public {
            format!("public port {}.{} (no public_address)", request.role, request.name)
        } else {
            continue;
        };
        let address = address_of(members, member, &why)?;
        if let Some(a) = allocations.get_mut(&key) {
            a.address = address;
        }
    }
    Ok(())
}

/// How [`rewire`] may change addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewireMode {
    /// During an install: only move ports onto their member's address where a container of another member wires
    /// to them (and public ports when the flag is set); never back to loopback.
    Widen {
        /// Public ports go on their member's address (a tenant without `public_address`, not the default one).
        public_on_member: bool,
    },
    /// After a move: every port where the wiring wants it now (back to 127.0.0.1 when no container of another
    /// member wires to it), and public ports that listened on a member's address follow their container.
    Full,
}

/// One device changed by [`rewire`], for the events and the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewired {
    /// The instance.
    pub instance: String,
    /// The device.
    pub device: String,
    /// Its new `listen` (a published port) or `connect` (a wire).
    pub value: String,
}

fn parse_ip(address: &ProxyAddress) -> Option<IpAddr> {
    address.address.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Bring the tenant's published ports and wires in line with the members its containers are on now (see the module
/// documentation). Does nothing on a daemon that is no cluster. Returns the devices it changed.
pub async fn rewire(lxd: &Client, tenant: &TenantName, mode: RewireMode) -> Result<Vec<Rewired>, InstallError> {
    let info = lxd.cluster().await.map_err(InstallError::lxd("reading the cluster state"))?;
    if !info.enabled {
        return Ok(Vec::new());
    }
    let members = lxd.cluster_members().await.map_err(InstallError::lxd("listing the cluster's members"))?;
    let addresses = member_addresses(&members);
    let member_ips: BTreeSet<IpAddr> = addresses.values().copied().collect();
    let instances: Vec<ManagedInstance> = inventory::tenant_instances(lxd, tenant)
        .await
        .map_err(InstallError::lxd(format!("listing the instances of tenant {tenant}")))?
        .into_iter()
        .filter(|m| m.managed && m.role.is_some())
        .collect();
    // Published ports: (instance index, device) -> (role, port name, listen).
    let mut ports: BTreeMap<(usize, String), (Role, String, ProxyAddress)> = BTreeMap::new();
    for (i, m) in instances.iter().enumerate() {
        let Some(role) = m.role else { continue };
        for (device, config) in &m.instance.devices {
            let Some(name) = device.strip_prefix("gbo-port-") else { continue };
            let Some(proxy) = lxd_client::ProxyDevice::from_config(config) else { continue };
            ports.insert((i, device.clone()), (role, name.to_string(), proxy.listen));
        }
    }
    // Wires: which published port each one connects to, and from which member.
    let mut wired: BTreeMap<(usize, String), Vec<(usize, String)>> = BTreeMap::new();
    for (i, m) in instances.iter().enumerate() {
        for (device, config) in &m.instance.devices {
            let Some(rest) = device.strip_prefix("gbo-wire-") else { continue };
            let Some((suffix, _)) = rest.rsplit_once('-') else { continue };
            let Ok(target_role) = suffix.parse::<Role>() else { continue };
            let Some(proxy) = lxd_client::ProxyDevice::from_config(config) else { continue };
            let target = ports.iter().find(|((j, _), (role, _, listen))| {
                *role == target_role
                    && instances[*j].role == Some(target_role)
                    && listen.port == proxy.connect.port
                    && listen.protocol == proxy.connect.protocol
            });
            if let Some((key, _)) = target {
                wired.entry(key.clone()).or_default().push((i, device.clone()));
            }
        }
    }
    let is_default = tenant.as_str() == TenantName::DEFAULT;
    let mut listen_changes: BTreeMap<(usize, String), ProxyAddress> = BTreeMap::new();
    let mut final_listen: BTreeMap<(usize, String), IpAddr> = BTreeMap::new();
    let mut wire_changes: BTreeMap<(usize, String), (ProxyAddress, ProxyAddress)> = BTreeMap::new();
    for (key, (role, name, listen)) in &ports {
        let (i, _) = key;
        let here = &instances[*i].instance.location;
        let current = parse_ip(listen);
        let from = wired.get(key).cloned().unwrap_or_default();
        let cross = from.iter().any(|(j, _)| &instances[*j].instance.location != here);
        let exposure = gbo_components::ports(*role).into_iter().find(|p| p.name == name).map(|p| p.exposure);
        let wanted = match (exposure, mode) {
            (Some(Exposure::Public), RewireMode::Widen { public_on_member: true }) if !is_default => {
                Some(address_of(&addresses, here, &format!("public port {role}.{name}"))?)
            }
            (Some(Exposure::Public), RewireMode::Full)
                if !is_default && current.is_some_and(|c| member_ips.contains(&c)) =>
            {
                Some(address_of(&addresses, here, &format!("public port {role}.{name}"))?)
            }
            (Some(Exposure::Public), _) => None,
            (_, _) if cross => Some(address_of(&addresses, here, &format!("{role}.{name} wired from another member"))?),
            (_, RewireMode::Full) if current.is_some_and(|c| member_ips.contains(&c)) => Some(LOOPBACK),
            _ => None,
        };
        let listen_ip = match wanted {
            Some(ip) if Some(ip) != current => {
                let mut next = listen.clone();
                next.address = ip.to_string();
                listen_changes.insert(key.clone(), next);
                ip
            }
            _ => current.unwrap_or(LOOPBACK),
        };
        final_listen.insert(key.clone(), listen_ip);
        let connect_ip = if listen_ip.is_unspecified() { LOOPBACK } else { listen_ip };
        for (j, device) in from {
            let Some(proxy) = lxd_client::ProxyDevice::from_config(&instances[j].instance.devices[&device]) else {
                continue;
            };
            if parse_ip(&proxy.connect) != Some(connect_ip) {
                let mut next = proxy.connect.clone();
                next.address = connect_ip.to_string();
                wire_changes.insert((j, device), (proxy.connect, next));
            }
        }
    }
    let mut changed = Vec::new();
    for (i, m) in instances.iter().enumerate() {
        let listens: Vec<(&String, &ProxyAddress)> =
            listen_changes.iter().filter(|((j, _), _)| *j == i).map(|((_, d), a)| (d, a)).collect();
        let connects: Vec<(&String, &ProxyAddress)> =
            wire_changes.iter().filter(|((j, _), _)| *j == i).map(|((_, d), (_, a))| (d, a)).collect();
        // `user.gbo.ports` records where each port listens: brought in line with the devices.
        let port_names: BTreeMap<String, IpAddr> = final_listen
            .iter()
            .filter(|((j, _), _)| *j == i)
            .filter_map(|((_, d), ip)| Some((d.strip_prefix("gbo-port-")?.to_string(), *ip)))
            .collect();
        let recorded_differs = inventory::recorded_ports(&m.instance.config)
            .iter()
            .any(|p| port_names.get(&p.name).is_some_and(|ip| *ip != p.address));
        if listens.is_empty() && connects.is_empty() && !recorded_differs {
            continue;
        }
        let set = |devices: &mut BTreeMap<String, DeviceConfig>, device: &str, key: &str, value: &ProxyAddress| {
            if let Some(config) = devices.get_mut(device) {
                config.insert(key.to_string(), value.to_string());
            }
        };
        lxd.update_instance(&m.name, |put| {
            for (device, address) in &listens {
                set(&mut put.devices, device, "listen", address);
            }
            for (device, address) in &connects {
                set(&mut put.devices, device, "connect", address);
            }
            if !port_names.is_empty() {
                let recorded: Vec<inventory::RecordedPort> = inventory::recorded_ports(&put.config)
                    .into_iter()
                    .map(|mut p| {
                        if let Some(ip) = port_names.get(&p.name) {
                            p.address = *ip;
                        }
                        p
                    })
                    .collect();
                if !recorded.is_empty() {
                    put.config.insert(inventory::KEY_PORTS.to_string(), inventory::format_ports(&recorded));
                }
            }
        })
        .await
        .map_err(InstallError::lxd(format!("rewiring {}", m.name)))?;
        for (device, address) in listens {
            changed.push(Rewired { instance: m.name.to_string(), device: device.clone(), value: address.to_string() });
        }
        for (device, address) in connects {
            changed.push(Rewired { instance: m.name.to_string(), device: device.clone(), value: address.to_string() });
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gbo_components::Protocol;

    fn wire(role: Role, port_name: &'static str, local_port: u16) -> Wire {
        Wire { role, port_name, local_port, required: true, external: None }
    }

    #[test]
    fn only_ports_wired_from_another_member_leave_loopback() {
        let wires = BTreeMap::from([
            (Role::TableEditor, vec![wire(Role::Tables, "postgres", 5432)]),
            (Role::System, vec![wire(Role::Tables, "postgres", 5432), wire(Role::Cache, "redis", 6379)]),
        ]);
        let mut locations = BTreeMap::from([
            (Role::Tables, "m1".to_string()),
            (Role::Cache, "m1".to_string()),
            (Role::TableEditor, "m1".to_string()),
        ]);
        assert!(cross_member_ports(&wires, &locations).is_empty(), "one member: everything on loopback");
        // The system container's member is not known yet (LXD's scheduler): nothing decided for it.
        locations.insert(Role::TableEditor, "m2".to_string());
        assert_eq!(cross_member_ports(&wires, &locations), BTreeSet::from([(Role::Tables, "postgres".to_string())]));
        locations.insert(Role::System, "m1".to_string());
        assert_eq!(cross_member_ports(&wires, &locations).len(), 1, "cache is wired from m1 only");

        let requests = [
            PortRequest {
                role: Role::Tables,
                name: "postgres".into(),
                protocol: Protocol::Tcp,
                exposure: Exposure::Internal,
                seed: None,
            },
            PortRequest {
                role: Role::Cache,
                name: "redis".into(),
                protocol: Protocol::Tcp,
                exposure: Exposure::Internal,
                seed: None,
            },
        ];
        let mut allocations: BTreeMap<(Role, String), Allocation> = requests
            .iter()
            .map(|r| ((r.role, r.name.clone()), Allocation { address: LOOPBACK, port: 30000, existing: false }))
            .collect();
        let members = BTreeMap::from([("m1".to_string(), IpAddr::from([127, 0, 0, 2]))]);
        let cross = cross_member_ports(&wires, &locations);
        place_addresses(&mut allocations, &requests, &cross, &locations, &members, false).expect("placed");
        assert_eq!(allocations[&(Role::Tables, "postgres".into())].address, IpAddr::from([127, 0, 0, 2]));
        assert_eq!(allocations[&(Role::Cache, "redis".into())].address, LOOPBACK);
        // A member without an IP address in its url is named.
        locations.insert(Role::Tables, "far".to_string());
        let err =
            place_addresses(&mut allocations, &requests, &cross, &locations, &members, false).expect_err("no address");
        assert!(err.to_string().contains("member far"), "{err}");
    }
}
