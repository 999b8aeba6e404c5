//! Clusters: the members and their state (`GET /1.0/cluster`, `/1.0/cluster/members`), and moving an instance to
//! another member (`POST /1.0/instances/<name>?target=<member>` with `migration`, what `lxc move --target` sends).

use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::{Client, Request};
use crate::error::Result;
use crate::instances::{instance_path, LIFECYCLE_TIMEOUT};
use crate::names::InstanceName;

/// `GET /1.0/cluster`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ClusterInfo {
    /// Whether this daemon is a cluster member.
    pub enabled: bool,
    /// This member's name (empty when not clustered).
    pub server_name: String,
}

/// One member of a cluster, as `GET /1.0/cluster/members?recursion=1` returns it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ClusterMember {
    /// The member's name (the `location` of its instances, the `target=` of placements).
    pub server_name: String,
    /// Its API address (`https://host:port`).
    pub url: String,
    /// `Online`, `Offline`, `Evacuated`, `Blocked`, ...
    pub status: String,
    /// LXD's word on its state (`Fully operational`, `No heartbeat for ...`).
    pub message: String,
    /// Cluster groups it belongs to (placement `@group`).
    pub groups: Vec<String>,
    /// Roles (`database`, `database-leader`, ...).
    pub roles: Vec<String>,
    /// Failure domain.
    pub failure_domain: String,
}

impl ClusterMember {
    /// Whether LXD considers it usable for new instances and moves (`Online`).
    pub fn is_online(&self) -> bool {
        self.status == "Online"
    }

    /// The host part of its `url` (`127.0.0.3` of `https://127.0.0.3:8443`; brackets removed for IPv6).
    pub fn host(&self) -> Option<String> {
        let uri: http::Uri = self.url.parse().ok()?;
        let host = uri.host()?;
        Some(host.trim_start_matches('[').trim_end_matches(']').to_string())
    }
}

impl Client {
    /// `GET /1.0/cluster`: whether the daemon is clustered, and its member name.
    pub async fn cluster(&self) -> Result<ClusterInfo> {
        self.sync(Request::new(Method::GET, "/1.0/cluster").unscoped()).await
    }

    /// The cluster's members with their status; empty when the daemon is not clustered.
    pub async fn cluster_members(&self) -> Result<Vec<ClusterMember>> {
        if !self.cluster().await?.enabled {
            return Ok(Vec::new());
        }
        self.sync(Request::new(Method::GET, "/1.0/cluster/members").unscoped().query("recursion", "1")).await
    }

    /// Move a stopped instance to cluster member `member`, keeping its name (LXD copies its root volume and
    /// snapshots to the member's pool and removes them from the origin), and wait for it. Refused by LXD for a
    /// running container and when the origin or `member` is offline.
    pub async fn move_instance_to_member(&self, name: &InstanceName, member: &str) -> Result<()> {
        let body = serde_json::json!({ "name": name.as_str(), "migration": true, "live": false });
        let req = Request::new(Method::POST, instance_path(name)).query("target", member).json(&body)?;
        // The handle's own target (if any) must not be sent twice: the explicit query wins.
        self.untargeted().run_operation(req, LIFECYCLE_TIMEOUT).await?;
        Ok(())
    }
}
