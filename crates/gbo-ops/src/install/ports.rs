//! Host ports: the seed's table for the default tenant, one deterministic allocator for every other tenant.
//!
//! An allocation, once made, lives in the proxy device's `listen` and is read back on every later run, so ports
//! never move. New allocations skip every port another gbo instance publishes (whatever its tenant) and every
//! port a live listener holds on the host (checked by binding it).

use std::collections::{BTreeMap, BTreeSet};

use gbo_components::{Exposure, Protocol, Role};

use gbo_components::TenantName;
use lxd_client::Client;

use super::error::InstallError;
use crate::inventory::{self, ManagedInstance};

/// First port of the allocator's range.
pub const RANGE_START: u16 = 20000;
/// Last port of the allocator's range.
pub const RANGE_END: u16 = 59999;

/// One port to allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    /// The role.
    pub role: Role,
    /// The port's name in the catalogue.
    pub name: String,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Internal (127.0.0.1) or public (the tenant's public address).
    pub exposure: Exposure,
    /// The seed's host port (used as is for the default tenant).
    pub seed: Option<u16>,
}

/// Where a port is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// Host address (`127.0.0.1`, `0.0.0.0` or the public address).
    pub address: std::net::IpAddr,
    /// Host port.
    pub port: u16,
    /// Whether it was read back from an existing device (not newly chosen).
    pub existing: bool,
}

/// What the allocator needs to know about the world.
#[derive(Debug, Clone, Default)]
pub struct PortWorld {
    /// Ports this tenant already publishes, by (role, port name): kept as they are.
    pub existing: BTreeMap<(Role, String), u16>,
    /// Ports published by any other gbo-managed instance (any tenant), with the instance that holds them.
    pub taken: BTreeMap<(Protocol, u16), String>,
    /// Ports the user pinned with `--port role.name=PORT`.
    pub overrides: BTreeMap<(Role, String), u16>,
}

/// A seed derived from the tenant name (FNV-1a), so a tenant's first choice is stable across hosts and runs.
fn tenant_offset(tenant: &str) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in tenant.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let slots = u32::from((RANGE_END - RANGE_START + 1) / 100);
    // `slots` is 400, so the product stays below 40000 and fits a u16.
    u16::try_from((hash % slots) * 100).unwrap_or(0)
}

/// Whether `port` can be bound on `address` right now (a live listener makes it unusable).
pub fn is_free(protocol: Protocol, address: std::net::IpAddr, port: u16) -> bool {
    let addr = std::net::SocketAddr::new(address, port);
    match protocol {
        Protocol::Tcp => std::net::TcpListener::bind(addr).is_ok(),
        Protocol::Udp => std::net::UdpSocket::bind(addr).is_ok(),
    }
}

/// The process holding a local `port` (a TCP listener, or a bound UDP socket), as (command name, pid), read from
/// `/proc/net` and the processes' fds. None when it cannot be told (another network namespace, no permission).
pub fn port_holder(protocol: Protocol, port: u16) -> Option<(String, u32)> {
    let tables: &[&str] = match protocol {
        Protocol::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
        Protocol::Udp => &["/proc/net/udp", "/proc/net/udp6"],
    };
    let inodes: BTreeSet<u64> = tables
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|text| socket_inodes(&text, protocol, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let target = target.to_string_lossy();
            let inode =
                target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')).and_then(|t| t.parse::<u64>().ok());
            if inode.is_some_and(|i| inodes.contains(&i)) {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim().to_string();
                return Some((comm, pid));
            }
        }
    }
    None
}

/// The socket inodes of a `/proc/net/{tcp,udp}[6]` table bound to local `port` (TCP: listening only).
fn socket_inodes(table: &str, protocol: Protocol, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok())?;
            let listening = match protocol {
                Protocol::Tcp => *fields.get(3)? == "0A",
                Protocol::Udp => true,
            };
            (local_port == port && listening).then(|| fields.get(9)?.parse().ok()).flatten()
        })
        .collect()
}

/// The host address of a port with `exposure` for a tenant.
pub fn host_address(
    exposure: Exposure,
    is_default_tenant: bool,
    public_address: Option<std::net::IpAddr>,
) -> std::net::IpAddr {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    match exposure {
        Exposure::Internal => loopback,
        Exposure::Public => match public_address {
            Some(a) => a,
            None if is_default_tenant => std::net::IpAddr::from([0, 0, 0, 0]),
            None => loopback,
        },
    }
}

/// Allocate every request. `free` says whether a port can be bound (injected so planning stays testable).
pub fn allocate(
    tenant: &str,
    is_default_tenant: bool,
    public_address: Option<std::net::IpAddr>,
    requests: &[PortRequest],
    world: &PortWorld,
    free: &dyn Fn(Protocol, std::net::IpAddr, u16) -> bool,
) -> Result<BTreeMap<(Role, String), Allocation>, InstallError> {
    let mut out = BTreeMap::new();
    let mut chosen: BTreeSet<(Protocol, u16)> = BTreeSet::new();
    // Existing allocations first, so new ones never take a port this tenant already uses.
    for request in requests {
        let key = (request.role, request.name.clone());
        if let Some(port) = world.existing.get(&key) {
            if world.overrides.get(&key).is_none_or(|o| o == port) {
                chosen.insert((request.protocol, *port));
            }
        }
    }
    for request in requests {
        let key = (request.role, request.name.clone());
        let address = host_address(request.exposure, is_default_tenant, public_address);
        let in_use = |port: u16| -> Option<String> {
            if let Some(holder) = world.taken.get(&(request.protocol, port)) {
                return Some(format!(", by instance {holder}"));
            }
            if !free(request.protocol, address, port) {
                return Some(match port_holder(request.protocol, port) {
                    Some((comm, pid)) if comm == "systemd-resolve" || comm == "systemd-resolved" => format!(
                        " by systemd-resolved (pid {pid}), whose stub listener holds 127.0.0.53:53 (set DNSStubListener=no in \
                         /etc/systemd/resolved.conf and restart it)"
                    ),
                    Some((comm, pid)) => format!(" by {comm} (pid {pid})"),
                    None => " by another program on this host".to_string(),
                });
            }
            None
        };
        let existing = world.existing.get(&key).copied();
        let pinned = world.overrides.get(&key).copied();
        let port = match (pinned, existing) {
            (Some(p), Some(e)) if p == e => {
                out.insert(key, Allocation { address, port: e, existing: true });
                continue;
            }
            (None, Some(e)) => {
                out.insert(key, Allocation { address, port: e, existing: true });
                continue;
            }
            (Some(p), _) => Some(p),
            (None, None) if is_default_tenant => request.seed,
            (None, None) => None,
        };
        if let Some(port) = port {
            if let Some(holder) = in_use(port).or_else(|| {
                chosen.contains(&(request.protocol, port)).then(|| " by another port of this tenant".to_string())
            }) {
                return Err(InstallError::PortInUse {
                    role: request.role.as_str().to_string(),
                    name: request.name.clone(),
                    address: address.to_string(),
                    port,
                    holder,
                });
            }
            chosen.insert((request.protocol, port));
            out.insert(key, Allocation { address, port, existing: false });
            continue;
        }
        let span = RANGE_END - RANGE_START + 1;
        let start = tenant_offset(tenant);
        let mut found = None;
        for i in 0..span {
            let candidate = RANGE_START + (start + i) % span;
            if chosen.contains(&(request.protocol, candidate)) || in_use(candidate).is_some() {
                continue;
            }
            found = Some(candidate);
            break;
        }
        let Some(port) = found else {
            return Err(InstallError::PortsExhausted {
                role: request.role.as_str().to_string(),
                name: request.name.clone(),
                range: format!("{RANGE_START}-{RANGE_END}"),
            });
        };
        chosen.insert((request.protocol, port));
        out.insert(key, Allocation { address, port, existing: false });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(role: Role, name: &str, seed: u16) -> PortRequest {
        PortRequest { role, name: name.into(), protocol: Protocol::Tcp, exposure: Exposure::Internal, seed: Some(seed) }
    }

    #[test]
    fn proc_net_tables_give_the_listening_sockets_of_a_port() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 3500007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 17330 1 0000000000000000 100 0 0 10 5
   1: 0100007F:0035 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 99999 1 0000000000000000 20 4 30 10 -1
";
        assert_eq!(socket_inodes(tcp, Protocol::Tcp, 53), vec![17330], "established sockets are not holders");
        assert!(socket_inodes(tcp, Protocol::Tcp, 5432).is_empty());
        assert_eq!(socket_inodes(tcp, Protocol::Udp, 53), vec![17330, 99999]);
    }

    #[test]
    fn the_holder_of_a_bound_port_is_named() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = socket.local_addr().expect("addr").port();
        let (comm, pid) = port_holder(Protocol::Udp, port).expect("this process holds it");
        assert_eq!(pid, std::process::id());
        assert!(!comm.is_empty());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(port_holder(Protocol::Tcp, port).map(|h| h.1), Some(std::process::id()));
        drop(listener);
        assert_eq!(port_holder(Protocol::Tcp, port), None);
    }

    #[test]
    fn default_tenant_gets_seed_ports_and_others_get_distinct_stable_ones() {
        let requests = [req(Role::Tables, "postgres", 5432), req(Role::Cache, "redis", 6379)];
        let all_free = |_: Protocol, _: std::net::IpAddr, _: u16| true;
        let seed = allocate("default", true, None, &requests, &PortWorld::default(), &all_free).expect("seed");
        assert_eq!(seed[&(Role::Tables, "postgres".into())].port, 5432);
        let a = allocate("acme", false, None, &requests, &PortWorld::default(), &all_free).expect("acme");
        let again = allocate("acme", false, None, &requests, &PortWorld::default(), &all_free).expect("acme again");
        assert_eq!(a, again, "deterministic");
        let ports: BTreeSet<u16> = a.values().map(|x| x.port).collect();
        assert_eq!(ports.len(), 2);
        assert!(ports.iter().all(|p| (RANGE_START..=RANGE_END).contains(p)));
    }

    #[test]
    fn taken_ports_are_skipped_and_existing_ones_kept() {
        let requests = [req(Role::Tables, "postgres", 5432)];
        let all_free = |_: Protocol, _: std::net::IpAddr, _: u16| true;
        let first = allocate("acme", false, None, &requests, &PortWorld::default(), &all_free).expect("first")
            [&(Role::Tables, "postgres".into())]
            .port;
        let mut world = PortWorld::default();
        world.taken.insert((Protocol::Tcp, first), "other-tables".into());
        let second = allocate("acme", false, None, &requests, &world, &all_free).expect("second")
            [&(Role::Tables, "postgres".into())]
            .port;
        assert_ne!(first, second);
        let busy = |_: Protocol, _: std::net::IpAddr, p: u16| p != second;
        let third = allocate("acme", false, None, &requests, &world, &busy).expect("third")
            [&(Role::Tables, "postgres".into())]
            .port;
        assert!(third != first && third != second);
        world.existing.insert((Role::Tables, "postgres".into()), 31000);
        let kept = allocate("acme", false, None, &requests, &world, &|_, _, _| false).expect("kept")
            [&(Role::Tables, "postgres".into())];
        assert_eq!((kept.port, kept.existing), (31000, true));
    }

    #[test]
    fn a_seed_or_pinned_port_in_use_is_bad_input_naming_it() {
        let requests = [req(Role::Tables, "postgres", 5432)];
        let err = allocate("default", true, None, &requests, &PortWorld::default(), &|_, _, p| p != 5432)
            .expect_err("in use");
        assert!(err.is_bad_input());
        assert!(err.to_string().contains("127.0.0.1:5432"), "{err}");
        let mut world = PortWorld::default();
        world.overrides.insert((Role::Tables, "postgres".into()), 25000);
        world.taken.insert((Protocol::Tcp, 25000), "x-tables".into());
        let err = allocate("acme", false, None, &requests, &world, &|_, _, _| true).expect_err("pinned taken");
        assert!(err.to_string().contains("by instance x-tables"), "{err}");
    }
}

#[cfg(test)]
#[path = "ports_properties.rs"]
mod properties;

/// Ports published by other gbo tenants' instances.
pub(super) async fn taken_ports(
    lxd: &Client,
    tenant: &TenantName,
) -> Result<BTreeMap<(gbo_components::Protocol, u16), String>, InstallError> {
    let tenants = inventory::managed_tenants(lxd).await.map_err(InstallError::lxd("listing instances"))?;
    let mut taken = BTreeMap::new();
    for (name, instances) in tenants {
        if &name == tenant {
            continue;
        }
        for m in instances {
            for p in &m.ports {
                taken.insert((p.protocol, p.host_port), m.name.to_string());
            }
        }
    }
    Ok(taken)
}

pub(super) fn existing_ports(instances: &[ManagedInstance]) -> BTreeMap<(Role, String), u16> {
    let mut out = BTreeMap::new();
    for m in instances {
        let Some(role) = m.role else { continue };
        // What the instance recorded first: a device removed by hand keeps its port.
        for p in inventory::recorded_ports(&m.instance.config) {
            out.insert((role, p.name), p.port);
        }
        for p in &m.ports {
            if let Some(port_name) = p.device.strip_prefix("gbo-port-") {
                out.insert((role, port_name.to_string()), p.host_port);
            }
        }
    }
    out
}
