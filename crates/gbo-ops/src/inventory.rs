//! What gbo owns in LXD, and how every command finds a tenant's containers, stack dir, mounts and ports from LXD
//! alone (no state file, no `--stack-dir` after install).
//!
//! The contract (written by the install engine, read by every other command):
//! - instance keys: [`KEY_TENANT`], [`KEY_ROLE`], [`KEY_STACK_DIR`], [`KEY_CATALOGUE`], [`KEY_SPEC_HASH`],
//!   [`KEY_PROVISIONED_HASH`], [`KEY_MANAGED`], [`KEY_ADOPTED`];
//! - devices gbo adds start with [`DEVICE_PREFIX`]: `gbo-data`, `gbo-conf`, `gbo-logs` (disks),
//!   `gbo-port-<name>` (proxy listening on the host: the allocated host port lives in its `listen`),
//!   `gbo-wire-<role>-<port>` (proxy with `bind=instance`: a dependency seen at 127.0.0.1 inside).
//!   Devices without the prefix were added by hand and are left alone.

use std::collections::BTreeMap;
use std::path::PathBuf;

use gbo_components::{Protocol, Role, TenantName};
use lxd_client::{Client, Instance, InstanceName, ProxyBind, ProxyDevice};

/// `user.gbo.managed = "true"` on every instance gbo created.
pub const KEY_MANAGED: &str = "user.gbo.managed";
/// `user.gbo.adopted = "true"` on an instance gbo did not create (a seed stack built by hand) and took over on its
/// first install: it keeps its own `security.privileged`, whatever the tenant file says.
pub const KEY_ADOPTED: &str = "user.gbo.adopted";
/// The tenant name.
pub const KEY_TENANT: &str = "user.gbo.tenant";
/// The role name (`tables`, `vector_db`, ...).
pub const KEY_ROLE: &str = "user.gbo.role";
/// Absolute path of the tenant's stack dir on the host.
pub const KEY_STACK_DIR: &str = "user.gbo.stack-dir";
/// Catalogue version the instance was built from.
pub const KEY_CATALOGUE: &str = "user.gbo.catalogue";
/// Hash of the rendered spec (desired state) at the last apply.
pub const KEY_SPEC_HASH: &str = "user.gbo.spec-hash";
/// Hash of what was last provisioned successfully (files, packages, init steps).
pub const KEY_PROVISIONED_HASH: &str = "user.gbo.provisioned-hash";
/// The host ports gbo allocated to the instance, `name=address:port` comma separated (`redis=127.0.0.1:26379`):
/// recorded beside the proxy devices, so that a device removed by hand is re-added with its own port (`gbo doctor
/// --fix`, `gbo install`) instead of a newly allocated one.
pub const KEY_PORTS: &str = "user.gbo.ports";
/// An upgrade under way (`gbo upgrade`): on the old container parked beside its replacement (`old <snapshot>`,
/// `replaced <snapshot>` once the new one was healthy) and on the new one while it is staged (`new`). Such an
/// instance is nobody's container for every other command ([`describe`] gives `None`): the next `gbo upgrade`
/// finishes or undoes what it stands for.
pub const KEY_UPGRADE: &str = "user.gbo.upgrade";
/// Prefix of every device gbo adds.
pub const DEVICE_PREFIX: &str = "gbo-";

/// A host port published by a proxy device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublishedPort {
    /// Device name (`gbo-port-postgres`).
    pub device: String,
    /// `tcp` or `udp`.
    pub protocol: Protocol,
    /// Host address it listens on.
    pub host_address: String,
    /// Host port.
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
}

/// A host directory mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// Device name.
    pub device: String,
    /// Host path.
    pub host_path: PathBuf,
    /// Path inside the container.
    pub container_path: String,
}

/// One container as gbo sees it.
#[derive(Debug, Clone)]
pub struct ManagedInstance {
    /// Instance name.
    pub name: InstanceName,
    /// Tenant (from `user.gbo.tenant`, or parsed from the name for containers gbo did not create).
    pub tenant: TenantName,
    /// Role (`None`: a `{tenant}-{suffix}` container whose suffix is no role of the catalogue).
    pub role: Option<Role>,
    /// Whether gbo manages it (`user.gbo.managed`: it created it, or took it over).
    pub managed: bool,
    /// Whether gbo did not create it: no `user.gbo.managed` yet (a seed stack built by hand), or taken over and
    /// marked [`KEY_ADOPTED`]. Such an instance keeps its own `security.privileged`.
    pub adopted: bool,
    /// Stack dir recorded on it.
    pub stack_dir: Option<PathBuf>,
    /// Host mounts (every disk device with a host source, gbo's or not).
    pub mounts: Vec<Mount>,
    /// Ports published on the host (proxy devices bound on the host).
    pub ports: Vec<PublishedPort>,
    /// The raw instance.
    pub instance: Instance,
}

/// One host port recorded under [`KEY_PORTS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedPort {
    /// The port's name in the catalogue (`postgres`, `redis`, `http`).
    pub name: String,
    /// Host address.
    pub address: std::net::IpAddr,
    /// Host port.
    pub port: u16,
}

/// The ports recorded on an instance; entries that do not parse are left out (the devices stay the authority).
pub fn recorded_ports(config: &BTreeMap<String, String>) -> Vec<RecordedPort> {
    let Some(value) = config.get(KEY_PORTS) else { return Vec::new() };
    value
        .split(',')
        .filter_map(|entry| {
            let (name, socket) = entry.split_once('=')?;
            let socket: std::net::SocketAddr = socket.parse().ok()?;
            Some(RecordedPort { name: name.to_string(), address: socket.ip(), port: socket.port() })
        })
        .collect()
}

/// The [`KEY_PORTS`] value for `ports`.
pub fn format_ports(ports: &[RecordedPort]) -> String {
    ports
        .iter()
        .map(|p| format!("{}={}", p.name, std::net::SocketAddr::new(p.address, p.port)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Read gbo's view of one instance: `None` for an instance that is neither gbo's nor named `{tenant}-{suffix}` with a
/// valid tenant name (it belongs to no tenant).
pub fn describe(instance: &Instance) -> Option<ManagedInstance> {
    let config = &instance.config;
    if config.contains_key(KEY_UPGRADE) {
        return None;
    }
    let (tenant, role) = match (config.get(KEY_TENANT), config.get(KEY_ROLE)) {
        (Some(t), Some(r)) => (t.clone(), r.clone()),
        _ => split_name(&instance.name),
    };
    let name = InstanceName::new(instance.name.as_str()).ok()?;
    let tenant = TenantName::new(&tenant).ok()?;
    let role = role.parse::<Role>().ok();
    let mut mounts = Vec::new();
    let mut ports = Vec::new();
    for (device, dev) in &instance.expanded_devices {
        match dev.get("type").map(String::as_str) {
            Some("disk") => {
                if let (Some(source), Some(path)) = (dev.get("source"), dev.get("path")) {
                    if source.starts_with('/') && path != "/" {
                        mounts.push(Mount {
                            device: device.clone(),
                            host_path: PathBuf::from(source),
                            container_path: path.clone(),
                        });
                    }
                }
            }
            Some("proxy") => {
                if let Some(proxy) = ProxyDevice::from_config(dev) {
                    if proxy.bind == ProxyBind::Host && proxy.listen.port != 0 {
                        ports.push(PublishedPort {
                            device: device.clone(),
                            protocol: if proxy.listen.protocol == lxd_client::ProxyProtocol::Udp {
                                Protocol::Udp
                            } else {
                                Protocol::Tcp
                            },
                            host_address: proxy.listen.address.clone(),
                            host_port: proxy.listen.port,
                            container_port: proxy.connect.port,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    mounts.sort_by(|a, b| a.device.cmp(&b.device));
    ports.sort_by(|a, b| (a.host_port, &a.protocol).cmp(&(b.host_port, &b.protocol)));
    let managed = config.get(KEY_MANAGED).map(String::as_str) == Some("true");
    Some(ManagedInstance {
        name,
        tenant,
        role,
        managed,
        adopted: !managed || config.get(KEY_ADOPTED).map(String::as_str) == Some("true"),
        stack_dir: config.get(KEY_STACK_DIR).map(PathBuf::from),
        mounts,
        ports,
        instance: instance.clone(),
    })
}

/// A custom volume attached to an instance by a disk device (`pool` and `source` set, not the root disk).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttachedVolume {
    /// Device name.
    pub device: String,
    /// Storage pool.
    pub pool: String,
    /// Volume name.
    pub volume: String,
    /// Path inside the container.
    pub container_path: String,
}

impl AttachedVolume {
    /// `pool/volume`, for messages and reports.
    pub fn label(&self) -> String {
        format!("{}/{}", self.pool, self.volume)
    }

    /// `data`, `conf`, `logs`: the device name without gbo's prefix.
    pub fn kind(&self) -> &str {
        self.device.strip_prefix(DEVICE_PREFIX).unwrap_or(&self.device)
    }
}

/// The custom volumes gbo attached to an instance (its `gbo-` disk devices with a pool), sorted by device.
pub fn attached_volumes(instance: &Instance) -> Vec<AttachedVolume> {
    let mut out: Vec<AttachedVolume> = instance
        .expanded_devices
        .iter()
        .chain(instance.devices.iter())
        .filter(|(device, d)| {
            device.starts_with(DEVICE_PREFIX)
                && d.get("type").is_some_and(|t| t == "disk")
                && d.get("path").is_some_and(|p| p != "/")
        })
        .filter_map(|(device, d)| {
            let pool = d.get("pool").filter(|p| !p.is_empty())?;
            let volume = d.get("source").filter(|v| !v.is_empty() && !v.starts_with('/'))?;
            Some(AttachedVolume {
                device: device.clone(),
                pool: pool.clone(),
                volume: volume.clone(),
                container_path: d.get("path").cloned().unwrap_or_default(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.device.cmp(&b.device));
    out.dedup();
    out
}

impl ManagedInstance {
    /// The role's name, or the name's suffix when it is no role of the catalogue (for tables and JSON).
    pub fn role_label(&self) -> String {
        match self.role {
            Some(role) => role.as_str().to_string(),
            None => split_name(self.name.as_str()).1,
        }
    }
}

/// Split `{tenant}-{role}` for containers gbo did not create (the seed's hand-built layout). Role suffixes with a
/// hyphen (`alm-ci`, `table-editor`) are matched first.
pub fn split_name(name: &str) -> (String, String) {
    for suffix in ["-alm-ci", "-table-editor"] {
        if let Some(tenant) = name.strip_suffix(suffix) {
            return (tenant.to_string(), suffix[1..].to_string());
        }
    }
    match name.rsplit_once('-') {
        Some((tenant, role)) => {
            let role = if role == "vectordb" { "vector_db" } else { role };
            (tenant.to_string(), role.to_string())
        }
        None => (String::new(), name.to_string()),
    }
}

/// Every instance of a tenant: those gbo marked, plus those named `{tenant}-<role>` (hand-built layouts).
pub async fn tenant_instances(lxd: &Client, tenant: &TenantName) -> Result<Vec<ManagedInstance>, lxd_client::Error> {
    let mut out: Vec<ManagedInstance> =
        lxd.instances().await?.iter().filter_map(describe).filter(|m| &m.tenant == tenant).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// All tenants gbo manages on this daemon, with their instances.
pub async fn managed_tenants(lxd: &Client) -> Result<BTreeMap<TenantName, Vec<ManagedInstance>>, lxd_client::Error> {
    let mut map: BTreeMap<TenantName, Vec<ManagedInstance>> = BTreeMap::new();
    for instance in lxd.instances().await? {
        let Some(m) = describe(&instance) else { continue };
        if m.managed {
            map.entry(m.tenant.clone()).or_default().push(m);
        }
    }
    Ok(map)
}

/// The stack dir of a tenant, as recorded on any of its instances.
pub async fn tenant_stack_dir(lxd: &Client, tenant: &TenantName) -> Result<Option<PathBuf>, lxd_client::Error> {
    Ok(tenant_instances(lxd, tenant).await?.into_iter().find_map(|m| m.stack_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_tenant_and_role() {
        assert_eq!(split_name("default-tables"), ("default".into(), "tables".into()));
        assert_eq!(split_name("my-co-alm-ci"), ("my-co".into(), "alm-ci".into()));
        assert_eq!(split_name("acme-table-editor"), ("acme".into(), "table-editor".into()));
        assert_eq!(split_name("acme-vectordb"), ("acme".into(), "vector_db".into()));
    }

    #[test]
    fn instances_gbo_did_not_create_are_adopted() {
        let seed = Instance { name: "acme-system".into(), ..Default::default() };
        let described = describe(&seed).expect("a seed container");
        assert!(described.adopted && !described.managed);
        let mut taken = seed.clone();
        taken.config.insert(KEY_MANAGED.into(), "true".into());
        taken.config.insert(KEY_ADOPTED.into(), "true".into());
        let described = describe(&taken).expect("a taken-over container");
        assert!(described.adopted && described.managed);
    }

    #[test]
    fn describe_reads_keys_mounts_and_ports() {
        let mut instance = Instance { name: "acme-tables".into(), ..Default::default() };
        instance.config.insert(KEY_MANAGED.into(), "true".into());
        instance.config.insert(KEY_TENANT.into(), "acme".into());
        instance.config.insert(KEY_ROLE.into(), "tables".into());
        instance.config.insert(KEY_STACK_DIR.into(), "/srv/stack".into());
        let disk = BTreeMap::from([
            ("type".to_string(), "disk".to_string()),
            ("source".into(), "/srv/stack/tables/data".into()),
            ("path".into(), "/opt/gbo/data".into()),
        ]);
        let port = BTreeMap::from([
            ("type".to_string(), "proxy".to_string()),
            ("listen".into(), "tcp:127.0.0.1:15432".into()),
            ("connect".into(), "tcp:127.0.0.1:5432".into()),
        ]);
        let wire = BTreeMap::from([
            ("type".to_string(), "proxy".to_string()),
            ("listen".into(), "tcp:127.0.0.1:6379".into()),
            ("connect".into(), "tcp:127.0.0.1:16379".into()),
            ("bind".into(), "instance".into()),
        ]);
        instance.expanded_devices.insert("gbo-data".into(), disk);
        instance.expanded_devices.insert("gbo-port-postgres".into(), port);
        instance.expanded_devices.insert("gbo-wire-cache-6379".into(), wire);
        let m = describe(&instance).expect("gbo's container");
        assert!(m.managed && !m.adopted);
        assert_eq!((m.tenant.as_str(), m.role.map(|r| r.as_str())), ("acme", Some("tables")));
        assert_eq!(m.stack_dir, Some(PathBuf::from("/srv/stack")));
        assert_eq!(m.mounts.len(), 1);
        assert_eq!(
            m.ports,
            vec![PublishedPort {
                device: "gbo-port-postgres".into(),
                protocol: Protocol::Tcp,
                host_address: "127.0.0.1".into(),
                host_port: 15432,
                container_port: 5432
            }]
        );
    }
}
