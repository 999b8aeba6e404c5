//! Typed device builders with client-side validation (`proxy`, `disk`), and the raw device map LXD stores.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::names::DeviceName;

/// A device as LXD stores it: string keys to string values (`type` included).
pub type DeviceConfig = BTreeMap<String, String>;

/// The protocol of a proxy address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// A unix socket path.
    Unix,
}

/// One side of a proxy device: `tcp:127.0.0.1:5432`, `udp:[::1]:53`, `tcp:0.0.0.0:8000-8010`,
/// `unix:/var/lib/gbo/lxd.sock`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProxyAddress {
    /// Protocol.
    pub protocol: ProxyProtocol,
    /// IP address (IPv6 without brackets) or, for unix, the socket path.
    pub address: String,
    /// First port (0 for unix).
    pub port: u16,
    /// Last port of a range (equal to `port` for a single port).
    pub port_end: u16,
}

impl ProxyAddress {
    /// A TCP address on one port.
    pub fn tcp(ip: impl Into<String>, port: u16) -> Self {
        Self { protocol: ProxyProtocol::Tcp, address: ip.into(), port, port_end: port }
    }

    /// A UDP address on one port.
    pub fn udp(ip: impl Into<String>, port: u16) -> Self {
        Self { protocol: ProxyProtocol::Udp, address: ip.into(), port, port_end: port }
    }

    /// A unix socket path.
    pub fn unix(path: impl Into<String>) -> Self {
        Self { protocol: ProxyProtocol::Unix, address: path.into(), port: 0, port_end: 0 }
    }
}

const ADDRESS_RULE: &str = "expected `tcp:<ip>:<port>[-<port>]`, `udp:<ip>:<port>[-<port>]` or `unix:<absolute path>` \
                            (IPv6 in brackets, ports 1-65535)";

impl FromStr for ProxyAddress {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("{s:?}: {ADDRESS_RULE}");
        let (proto, rest) = s.split_once(':').ok_or_else(bad)?;
        let protocol = match proto {
            "tcp" => ProxyProtocol::Tcp,
            "udp" => ProxyProtocol::Udp,
            "unix" => {
                if !rest.starts_with('/') && !rest.starts_with('@') {
                    return Err(bad());
                }
                return Ok(Self::unix(rest));
            }
            _ => return Err(bad()),
        };
        let (host, ports) = if let Some(stripped) = rest.strip_prefix('[') {
            let (host, after) = stripped.split_once(']').ok_or_else(bad)?;
            (host, after.strip_prefix(':').ok_or_else(bad)?)
        } else {
            let (host, ports) = rest.rsplit_once(':').ok_or_else(bad)?;
            if host.contains(':') {
                return Err(bad()); // IPv6 must be bracketed
            }
            (host, ports)
        };
        host.parse::<std::net::IpAddr>().map_err(|_| bad())?;
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (a, b),
            None => (ports, ports),
        };
        let port: u16 = first.parse().map_err(|_| bad())?;
        let port_end: u16 = last.parse().map_err(|_| bad())?;
        if port == 0 || port_end < port {
            return Err(bad());
        }
        Ok(Self { protocol, address: host.to_string(), port, port_end })
    }
}

impl fmt::Display for ProxyAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            ProxyProtocol::Tcp => "tcp",
            ProxyProtocol::Udp => "udp",
            ProxyProtocol::Unix => return write!(f, "unix:{}", self.address),
        };
        let host = if self.address.contains(':') { format!("[{}]", self.address) } else { self.address.clone() };
        if self.port_end != self.port {
            write!(f, "{proto}:{host}:{}-{}", self.port, self.port_end)
        } else {
            write!(f, "{proto}:{host}:{}", self.port)
        }
    }
}

/// Which side a proxy device listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProxyBind {
    /// Listen on the host, connect inside the instance (LXD's default).
    #[default]
    Host,
    /// Listen inside the instance, connect on the host.
    Instance,
}

/// A `proxy` device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyDevice {
    /// Where it listens.
    pub listen: ProxyAddress,
    /// Where it connects.
    pub connect: ProxyAddress,
    /// Which side listens.
    pub bind: ProxyBind,
    /// Owner uid of a unix listener.
    pub uid: Option<u32>,
    /// Owner gid of a unix listener.
    pub gid: Option<u32>,
    /// Mode of a unix listener (octal string such as `0660`).
    pub mode: Option<String>,
}

impl ProxyDevice {
    /// A proxy from `listen` to `connect`, bound on the host.
    pub fn new(listen: ProxyAddress, connect: ProxyAddress) -> Self {
        Self { listen, connect, bind: ProxyBind::Host, uid: None, gid: None, mode: None }
    }

    /// Listen inside the instance instead (container-to-host wiring).
    pub fn bind_instance(mut self) -> Self {
        self.bind = ProxyBind::Instance;
        self
    }

    /// Owner and mode of a unix listener.
    pub fn unix_owner(mut self, uid: u32, gid: u32, mode: &str) -> Self {
        self.uid = Some(uid);
        self.gid = Some(gid);
        self.mode = Some(mode.to_string());
        self
    }

    /// Check the pair and produce LXD's string map.
    pub fn to_config(&self, name: &DeviceName) -> Result<DeviceConfig> {
        let invalid = |message: String| Error::InvalidDevice { device: name.to_string(), message };
        // The fields are public: a range built by hand may run backwards.
        let span = |address: &ProxyAddress| {
            address.port_end.checked_sub(address.port).ok_or_else(|| {
                invalid(format!(
                    "{address}: the port range ends ({}) before it starts ({})",
                    address.port_end, address.port
                ))
            })
        };
        let listen_span = span(&self.listen)?;
        let connect_span = span(&self.connect)?;
        if self.connect.protocol != ProxyProtocol::Unix && connect_span != 0 && connect_span != listen_span {
            return Err(invalid(format!(
                "connect range {} must be one port or as long as the listen range {}",
                self.connect, self.listen
            )));
        }
        if (self.listen.protocol == ProxyProtocol::Udp) != (self.connect.protocol == ProxyProtocol::Udp) {
            return Err(invalid(format!(
                "cannot proxy between {} and {}: UDP only maps to UDP",
                self.listen, self.connect
            )));
        }
        if let Some(mode) = &self.mode {
            if !(3..=4).contains(&mode.len()) || !mode.chars().all(|c| ('0'..='7').contains(&c)) {
                return Err(invalid(format!("mode {mode:?} must be octal like `0660`")));
            }
        }
        let mut map = DeviceConfig::new();
        map.insert("type".into(), "proxy".into());
        map.insert("listen".into(), self.listen.to_string());
        map.insert("connect".into(), self.connect.to_string());
        if self.bind == ProxyBind::Instance {
            map.insert("bind".into(), "instance".into());
        }
        if let Some(uid) = self.uid {
            map.insert("uid".into(), uid.to_string());
        }
        if let Some(gid) = self.gid {
            map.insert("gid".into(), gid.to_string());
        }
        if let Some(mode) = &self.mode {
            map.insert("mode".into(), mode.clone());
        }
        Ok(map)
    }

    /// Read a proxy device back from LXD's map (`None` when it is not a well-formed proxy).
    pub fn from_config(config: &DeviceConfig) -> Option<Self> {
        if config.get("type").map(String::as_str) != Some("proxy") {
            return None;
        }
        let listen = config.get("listen")?.parse().ok()?;
        let connect = config.get("connect")?.parse().ok()?;
        let bind = match config.get("bind").map(String::as_str) {
            Some("instance") | Some("container") => ProxyBind::Instance,
            _ => ProxyBind::Host,
        };
        Some(Self {
            listen,
            connect,
            bind,
            uid: config.get("uid").and_then(|v| v.parse().ok()),
            gid: config.get("gid").and_then(|v| v.parse().ok()),
            mode: config.get("mode").cloned(),
        })
    }
}

/// A `disk` device: a host path (or pool volume) mounted into the instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskDevice {
    /// Host path, or volume name when `pool` is set.
    pub source: String,
    /// Path inside the instance.
    pub path: String,
    /// Mount read-only.
    pub readonly: bool,
    /// Storage pool of a custom volume.
    pub pool: Option<String>,
    /// Shift uids with idmapped mounts (needs kernel support).
    pub shift: bool,
}

impl DiskDevice {
    /// Mount host `source` at `path`.
    pub fn new(source: impl Into<String>, path: impl Into<String>) -> Self {
        Self { source: source.into(), path: path.into(), readonly: false, pool: None, shift: false }
    }

    /// Mount custom volume `volume` of `pool` at `path`.
    pub fn volume(pool: impl Into<String>, volume: impl Into<String>, path: impl Into<String>) -> Self {
        Self { source: volume.into(), path: path.into(), readonly: false, pool: Some(pool.into()), shift: false }
    }

    /// The instance's root disk on `pool`.
    pub fn root(pool: impl Into<String>) -> Self {
        Self { source: String::new(), path: "/".into(), readonly: false, pool: Some(pool.into()), shift: false }
    }

    /// Check and produce LXD's string map.
    pub fn to_config(&self, name: &DeviceName) -> Result<DeviceConfig> {
        let invalid = |message: String| Error::InvalidDevice { device: name.to_string(), message };
        if !self.path.starts_with('/') {
            return Err(invalid(format!("path {:?} must be absolute", self.path)));
        }
        if self.pool.is_none() && !self.source.starts_with('/') {
            return Err(invalid(format!("source {:?} must be an absolute host path", self.source)));
        }
        let mut map = DeviceConfig::new();
        map.insert("type".into(), "disk".into());
        map.insert("path".into(), self.path.clone());
        if !self.source.is_empty() {
            map.insert("source".into(), self.source.clone());
        }
        if let Some(pool) = &self.pool {
            map.insert("pool".into(), pool.clone());
        }
        if self.readonly {
            map.insert("readonly".into(), "true".into());
        }
        if self.shift {
            map.insert("shift".into(), "true".into());
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str) -> DeviceName {
        DeviceName::new(name).expect("new")
    }

    #[test]
    fn proxy_addresses_round_trip() {
        for s in ["tcp:127.0.0.1:5432", "udp:[::1]:53", "tcp:0.0.0.0:8000-8010", "unix:/var/lib/lxd/unix.socket"] {
            let parsed: ProxyAddress = s.parse().expect("parse");
            assert_eq!(parsed.to_string(), s);
        }
    }

    #[test]
    fn bad_proxy_addresses_name_the_rule() {
        for s in [
            "127.0.0.1:5432",
            "tcp:localhost:80",
            "tcp:127.0.0.1",
            "tcp:127.0.0.1:0",
            "tcp:1.2.3.4:9-3",
            "unix:relative",
            "sctp:1.1.1.1:1",
            "tcp:::1:80",
        ] {
            let err = s.parse::<ProxyAddress>().unwrap_err();
            assert!(err.contains("expected `tcp:"), "{s}: {err}");
        }
    }

    #[test]
    fn proxy_config_and_back() {
        let p = ProxyDevice::new(ProxyAddress::tcp("127.0.0.1", 15432), ProxyAddress::tcp("127.0.0.1", 5432));
        let map = p.to_config(&dev("gbo-port-5432")).expect("to_config");
        assert_eq!(map["listen"], "tcp:127.0.0.1:15432");
        assert!(!map.contains_key("bind"));
        assert_eq!(ProxyDevice::from_config(&map).expect("from_config"), p);
        let wired = p.clone().bind_instance().to_config(&dev("w")).expect("to_config");
        assert_eq!(wired["bind"], "instance");
    }

    #[test]
    fn proxy_rejects_mismatched_pairs() {
        let udp_tcp = ProxyDevice::new(ProxyAddress::udp("127.0.0.1", 53), ProxyAddress::tcp("127.0.0.1", 53));
        assert!(udp_tcp.to_config(&dev("d")).is_err());
        let ranges = ProxyDevice::new(
            "tcp:127.0.0.1:80-82".parse().expect("parse"),
            "tcp:127.0.0.1:90-91".parse().expect("parse"),
        );
        assert!(ranges.to_config(&dev("d")).is_err());
        let mode = ProxyDevice::new(ProxyAddress::unix("/a"), ProxyAddress::unix("/b")).unix_owner(0, 0, "rw");
        assert!(mode.to_config(&dev("d")).unwrap_err().to_string().contains("octal"));
    }

    #[test]
    fn disk_devices_need_absolute_paths() {
        assert!(DiskDevice::new("/srv/a", "/opt/gbo/data").to_config(&dev("gbo-data")).is_ok());
        assert!(DiskDevice::new("srv/a", "/x").to_config(&dev("d")).is_err());
        assert!(DiskDevice::new("/srv/a", "x").to_config(&dev("d")).is_err());
        let root = DiskDevice::root("default").to_config(&dev("root")).expect("to_config");
        assert_eq!(root["pool"], "default");
    }
}
