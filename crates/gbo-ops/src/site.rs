//! Where the daemon is: this machine or another one, one daemon or a cluster and its members.
//!
//! gbo's host storage mode keeps every role's data, configuration and logs in directories of the machine gbo runs
//! on, and probes health through published ports on 127.0.0.1. Both hold only when the containers run on this
//! machine: a unix socket is always this machine's daemon, and an HTTPS daemon or cluster member at a loopback
//! address (127.0.0.0/8, ::1) is too (loopback reaches nothing else). Any other address is another machine, where
//! host paths mean nothing: commands that need them refuse it, naming the command (see [`Site::require_host`]).

use std::net::IpAddr;

use lxd_client::{Client, ClusterMember, Endpoint};

/// What gbo knows of the daemon it talks to.
#[derive(Debug, Clone, Default)]
pub struct Site {
    /// The endpoint as people read it (socket path or `host:port`), and the remote's name when one was given.
    pub label: String,
    /// Whether the daemon's own address is this machine.
    pub local_endpoint: bool,
    /// Whether the daemon is a cluster member.
    pub clustered: bool,
    /// The cluster's members (empty when not clustered).
    pub members: Vec<ClusterMember>,
}

/// Whether `host` (an IP address or name) is this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Site {
    /// Read it from the daemon (`GET /1.0/cluster` and, for a cluster, its members).
    pub async fn observe(lxd: &Client, remote: Option<&str>) -> lxd_client::Result<Self> {
        let (describe, local_endpoint) = match lxd.endpoint() {
            Endpoint::Unix(path) => (path.display().to_string(), true),
            Endpoint::Https { address, .. } => {
                let host = address.rsplit_once(':').map_or(address.as_str(), |(h, _)| h);
                (address.clone(), is_loopback_host(host))
            }
        };
        let label = match remote {
            Some(name) => format!("remote `{name}` ({describe})"),
            None => describe,
        };
        let info = lxd.cluster().await?;
        let members = if info.enabled { lxd.cluster_members().await? } else { Vec::new() };
        Ok(Self { label, local_endpoint, clustered: info.enabled, members })
    }

    /// Whether every container this daemon runs is on this machine (so host directories and 127.0.0.1 are theirs).
    pub fn shares_host(&self) -> bool {
        self.local_endpoint && self.members.iter().all(|m| m.host().as_deref().is_some_and(is_loopback_host))
    }

    /// The members that are on another machine.
    pub fn remote_members(&self) -> Vec<&str> {
        self.members
            .iter()
            .filter(|m| !m.host().as_deref().is_some_and(is_loopback_host))
            .map(|m| m.server_name.as_str())
            .collect()
    }

    /// `Ok` when `command` can use this host's filesystem for the daemon's containers; otherwise why not.
    pub fn require_host(&self, command: &str) -> Result<(), String> {
        if self.shares_host() {
            return Ok(());
        }
        let where_ = if self.local_endpoint {
            format!("cluster members {} are on other machines", self.remote_members().join(", "))
        } else {
            "its containers run on another machine".to_string()
        };
        Err(format!(
            "{command} cannot run against {}: {where_}, and it works on this host's directories (host storage: \
             data, configuration and secrets under the stack dir, health through 127.0.0.1); it needs \
             storage = \"volumes\" there",
            self.label
        ))
    }

    /// `Ok` when a command on a tenant whose storage mode is `mode` can run against this daemon: always for
    /// `volumes` (nothing of it is on the daemon's host: volumes, files and health all go through the API), and
    /// for `host` only when [`Site::require_host`] allows it.
    pub fn require_host_for(&self, command: &str, mode: gbo_components::StorageMode) -> Result<(), String> {
        match mode {
            gbo_components::StorageMode::Volumes => Ok(()),
            gbo_components::StorageMode::Host => self.require_host(command),
        }
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<&ClusterMember> {
        self.members.iter().find(|m| m.server_name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, url: &str) -> ClusterMember {
        ClusterMember { server_name: name.into(), url: url.into(), status: "Online".into(), ..Default::default() }
    }

    #[test]
    fn loopback_members_share_the_host_and_others_do_not() {
        assert!(is_loopback_host("127.0.0.4"));
        assert!(is_loopback_host("[::1]"));
        assert!(!is_loopback_host("10.0.0.5"));
        let mut site = Site {
            label: "remote `c`".into(),
            local_endpoint: true,
            clustered: true,
            members: vec![member("m1", "https://127.0.0.2:8443"), member("m2", "https://127.0.0.3:8443")],
        };
        assert!(site.shares_host());
        assert!(site.require_host("gbo snapshot").is_ok());
        site.members.push(member("far", "https://192.0.2.7:8443"));
        assert!(!site.shares_host());
        let err = site.require_host("gbo snapshot").expect_err("far member");
        assert!(err.contains("gbo snapshot") && err.contains("far") && err.contains("volumes"), "{err}");
        let remote = Site { label: "remote `x`".into(), local_endpoint: false, ..Default::default() };
        assert!(remote.require_host("gbo install").expect_err("remote").contains("remote `x`"));
        // A tenant in volumes needs nothing on the daemon's host: any daemon will do; host mode is refused there,
        // naming the command, the remote and the way out.
        use gbo_components::StorageMode;
        assert!(remote.require_host_for("gbo install", StorageMode::Volumes).is_ok());
        let err = remote.require_host_for("gbo install", StorageMode::Host).expect_err("host mode elsewhere");
        assert!(err.contains("gbo install") && err.contains("remote `x`") && err.contains("volumes"), "{err}");
    }
}
