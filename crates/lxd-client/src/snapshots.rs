//! Instance snapshots: create (with expiry), list, get, rename, delete, restore.

use std::time::Duration;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::{encode, Client, Request};
use crate::error::Result;
use crate::instances::{instance_path, LIFECYCLE_TIMEOUT};
use crate::names::{InstanceName, SnapshotName};

/// A snapshot as LXD reports it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Snapshot {
    /// Snapshot name (without the instance prefix).
    pub name: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Expiry time (RFC 3339; `0001-01-01T00:00:00Z` when none).
    pub expires_at: String,
    /// Stateful (with memory).
    pub stateful: bool,
    /// Configuration at snapshot time (including `user.*` keys).
    pub config: std::collections::BTreeMap<String, String>,
    /// Size in bytes, when the driver knows it (newer daemons).
    pub size: Option<i64>,
}

impl Snapshot {
    /// The expiry, or `None` when it never expires.
    pub fn expiry(&self) -> Option<&str> {
        (!self.expires_at.is_empty() && !self.expires_at.starts_with("0001-01-01")).then_some(self.expires_at.as_str())
    }
}

fn snapshot_path(instance: &InstanceName, snapshot: &SnapshotName) -> String {
    format!("{}/snapshots/{}", instance_path(instance), encode(snapshot.as_str()))
}

impl Client {
    /// Take a snapshot; `expires_at` is RFC 3339.
    pub async fn create_snapshot(
        &self,
        instance: &InstanceName,
        snapshot: &SnapshotName,
        expires_at: Option<&str>,
    ) -> Result<()> {
        let mut body = serde_json::json!({ "name": snapshot, "stateful": false });
        if let Some(expires_at) = expires_at {
            body["expires_at"] = serde_json::Value::String(expires_at.to_string());
        }
        let req = Request::new(Method::POST, format!("{}/snapshots", instance_path(instance))).json(&body)?;
        self.run_operation(req, LIFECYCLE_TIMEOUT).await?;
        Ok(())
    }

    /// All snapshots of an instance.
    pub async fn snapshots(&self, instance: &InstanceName) -> Result<Vec<Snapshot>> {
        let req = Request::new(Method::GET, format!("{}/snapshots", instance_path(instance))).query("recursion", "1");
        self.sync(req).await
    }

    /// One snapshot.
    pub async fn snapshot(&self, instance: &InstanceName, snapshot: &SnapshotName) -> Result<Snapshot> {
        self.get(&snapshot_path(instance, snapshot)).await
    }

    /// Rename a snapshot.
    pub async fn rename_snapshot(
        &self,
        instance: &InstanceName,
        snapshot: &SnapshotName,
        new_name: &SnapshotName,
    ) -> Result<()> {
        let req = Request::new(Method::POST, snapshot_path(instance, snapshot))
            .json(&serde_json::json!({ "name": new_name }))?;
        self.run_operation(req, LIFECYCLE_TIMEOUT).await?;
        Ok(())
    }

    /// Delete a snapshot.
    pub async fn delete_snapshot(&self, instance: &InstanceName, snapshot: &SnapshotName) -> Result<()> {
        self.run_operation(Request::new(Method::DELETE, snapshot_path(instance, snapshot)), LIFECYCLE_TIMEOUT).await?;
        Ok(())
    }

    /// Restore the instance to a snapshot (`PUT {"restore": name}`).
    pub async fn restore_snapshot(&self, instance: &InstanceName, snapshot: &SnapshotName) -> Result<()> {
        let req =
            Request::new(Method::PUT, instance_path(instance)).json(&serde_json::json!({ "restore": snapshot }))?;
        self.run_operation(req, LIFECYCLE_TIMEOUT + Duration::from_secs(300)).await?;
        Ok(())
    }
}
