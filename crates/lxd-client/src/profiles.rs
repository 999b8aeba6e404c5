//! Profiles, storage pools and volumes, networks and projects: the objects around instances.

use std::collections::BTreeMap;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::{encode, Client, Request};
use crate::devices::DeviceConfig;
use crate::error::{Error, Result};
use crate::names::{DeviceName, ObjectName, SnapshotName};

/// A profile.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Profile {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Configuration keys.
    pub config: BTreeMap<String, String>,
    /// Devices.
    pub devices: BTreeMap<String, DeviceConfig>,
    /// Instances using it (URLs).
    #[serde(skip_serializing, deserialize_with = "crate::client::null_as_default")]
    pub used_by: Vec<String>,
}

/// A storage pool.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct StoragePool {
    /// Name.
    pub name: String,
    /// `dir`, `btrfs`, `zfs`, `lvm`, `ceph`.
    pub driver: String,
    /// Driver configuration (`source`, `size`, ...).
    pub config: BTreeMap<String, String>,
    /// Description.
    pub description: String,
    /// `Created` etc.
    pub status: String,
    /// Users (URLs).
    #[serde(deserialize_with = "crate::client::null_as_default")]
    pub used_by: Vec<String>,
}

/// A custom storage volume.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct StorageVolume {
    /// Name.
    pub name: String,
    /// `custom`, `container`, `image`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Configuration.
    pub config: BTreeMap<String, String>,
    /// Description.
    pub description: String,
    /// `filesystem` or `block`.
    pub content_type: String,
    /// Users (URLs).
    #[serde(deserialize_with = "crate::client::null_as_default")]
    pub used_by: Vec<String>,
    /// The cluster member it is on (a pool local to each member), empty on a standalone daemon or a pool every
    /// member shares.
    pub location: String,
}

/// A snapshot of a custom volume.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct VolumeSnapshot {
    /// Snapshot name (without the volume prefix).
    pub name: String,
    /// Description.
    pub description: String,
    /// Configuration at snapshot time.
    pub config: BTreeMap<String, String>,
    /// Creation time (RFC 3339; newer daemons).
    pub created_at: Option<String>,
    /// Expiry time (RFC 3339; `0001-01-01T00:00:00Z` or absent when none).
    pub expires_at: Option<String>,
}

/// How long a volume operation (create, delete, snapshot, restore) may take.
const VOLUME_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

fn volume_path(pool: &ObjectName, volume: &ObjectName) -> String {
    format!("/1.0/storage-pools/{}/volumes/custom/{}", encode(pool.as_str()), encode(volume.as_str()))
}

/// A network.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Network {
    /// Name.
    pub name: String,
    /// `bridge`, `macvlan`, `physical`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Configuration.
    pub config: BTreeMap<String, String>,
    /// Whether LXD manages it.
    pub managed: bool,
    /// Description.
    pub description: String,
    /// Users (URLs).
    #[serde(deserialize_with = "crate::client::null_as_default")]
    pub used_by: Vec<String>,
}

/// A project.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Project {
    /// Name.
    pub name: String,
    /// Configuration (`features.images`, ...).
    pub config: BTreeMap<String, String>,
    /// Description.
    pub description: String,
    /// Users (URLs).
    #[serde(deserialize_with = "crate::client::null_as_default")]
    pub used_by: Vec<String>,
}

impl Client {
    /// All profiles.
    pub async fn profiles(&self) -> Result<Vec<Profile>> {
        self.sync(Request::new(Method::GET, "/1.0/profiles").query("recursion", "1")).await
    }

    /// One profile.
    pub async fn profile(&self, name: &ObjectName) -> Result<Profile> {
        self.get(&format!("/1.0/profiles/{}", encode(name.as_str()))).await
    }

    /// Create a profile.
    pub async fn create_profile(&self, profile: &Profile) -> Result<()> {
        ObjectName::new(profile.name.as_str())?;
        let _: serde_json::Value = self.sync(Request::new(Method::POST, "/1.0/profiles").json(profile)?).await?;
        Ok(())
    }

    /// Replace a profile's config, devices and description.
    pub async fn put_profile(&self, profile: &Profile) -> Result<()> {
        let body = serde_json::json!({ "config": profile.config, "devices": profile.devices, "description": profile.description });
        let name = ObjectName::new(profile.name.as_str())?;
        let req = Request::new(Method::PUT, format!("/1.0/profiles/{}", encode(name.as_str()))).json(&body)?;
        let _: serde_json::Value = self.sync(req).await?;
        Ok(())
    }

    /// Delete a profile.
    pub async fn delete_profile(&self, name: &ObjectName) -> Result<()> {
        let _: serde_json::Value =
            self.sync(Request::new(Method::DELETE, format!("/1.0/profiles/{}", encode(name.as_str())))).await?;
        Ok(())
    }

    /// Add (or replace) a device on a profile. Returns whether anything changed.
    pub async fn add_profile_device(
        &self,
        profile: &ObjectName,
        device: &DeviceName,
        config: DeviceConfig,
    ) -> Result<bool> {
        let mut current = self.profile(profile).await?;
        if current.devices.get(device.as_str()) == Some(&config) {
            return Ok(false);
        }
        current.devices.insert(device.to_string(), config);
        self.put_profile(&current).await?;
        Ok(true)
    }

    /// Remove a device from a profile. Returns whether it was there.
    pub async fn remove_profile_device(&self, profile: &ObjectName, device: &DeviceName) -> Result<bool> {
        let mut current = self.profile(profile).await?;
        if current.devices.remove(device.as_str()).is_none() {
            return Ok(false);
        }
        self.put_profile(&current).await?;
        Ok(true)
    }

    /// All storage pools.
    pub async fn storage_pools(&self) -> Result<Vec<StoragePool>> {
        self.sync(Request::new(Method::GET, "/1.0/storage-pools").query("recursion", "1")).await
    }

    /// One storage pool.
    pub async fn storage_pool(&self, name: &ObjectName) -> Result<StoragePool> {
        self.get(&format!("/1.0/storage-pools/{}", encode(name.as_str()))).await
    }

    /// Create a storage pool (`driver` `dir`, `btrfs`, `zfs`, ...; config such as `size=8GiB`).
    pub async fn create_storage_pool(
        &self,
        name: &ObjectName,
        driver: &str,
        config: BTreeMap<String, String>,
    ) -> Result<()> {
        let body = serde_json::json!({ "name": name, "driver": driver, "config": config });
        let _: serde_json::Value = self.sync(Request::new(Method::POST, "/1.0/storage-pools").json(&body)?).await?;
        Ok(())
    }

    /// Delete a storage pool.
    pub async fn delete_storage_pool(&self, name: &ObjectName) -> Result<()> {
        let _: serde_json::Value =
            self.sync(Request::new(Method::DELETE, format!("/1.0/storage-pools/{}", encode(name.as_str())))).await?;
        Ok(())
    }

    /// Volumes of a pool.
    pub async fn storage_volumes(&self, pool: &ObjectName) -> Result<Vec<StorageVolume>> {
        self.sync(
            Request::new(Method::GET, format!("/1.0/storage-pools/{}/volumes", encode(pool.as_str())))
                .query("recursion", "1"),
        )
        .await
    }

    /// Create a custom filesystem volume.
    pub async fn create_storage_volume(
        &self,
        pool: &ObjectName,
        name: &ObjectName,
        config: BTreeMap<String, String>,
    ) -> Result<()> {
        let body =
            serde_json::json!({ "name": name, "type": "custom", "content_type": "filesystem", "config": config });
        let req = Request::new(Method::POST, format!("/1.0/storage-pools/{}/volumes/custom", encode(pool.as_str())))
            .on_member()
            .json(&body)?;
        let answer = self.send(req).await?;
        if answer.envelope.kind == "async" {
            let op = crate::client::operation_from_answer("/1.0/storage-pools", answer.envelope)?;
            self.wait_operation(&op.id, std::time::Duration::from_secs(300)).await?;
        }
        Ok(())
    }

    /// Delete a custom volume.
    pub async fn delete_storage_volume(&self, pool: &ObjectName, name: &ObjectName) -> Result<()> {
        let path = format!("/1.0/storage-pools/{}/volumes/custom/{}", encode(pool.as_str()), encode(name.as_str()));
        let answer = self.send(Request::new(Method::DELETE, path.clone()).on_member()).await?;
        if answer.envelope.kind == "async" {
            let op = crate::client::operation_from_answer(&path, answer.envelope)?;
            self.wait_operation(&op.id, std::time::Duration::from_secs(300)).await?;
        }
        Ok(())
    }

    /// One custom volume, or `None` when the pool has no such volume.
    pub async fn storage_volume(&self, pool: &ObjectName, name: &ObjectName) -> Result<Option<StorageVolume>> {
        match self.sync(Request::new(Method::GET, volume_path(pool, name)).on_member()).await {
            Ok(volume) => Ok(Some(volume)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Snapshot a custom volume (`expires_at` RFC 3339, or never).
    pub async fn create_volume_snapshot(
        &self,
        pool: &ObjectName,
        volume: &ObjectName,
        snapshot: &SnapshotName,
        expires_at: Option<&str>,
    ) -> Result<()> {
        let mut body = serde_json::json!({ "name": snapshot });
        if let Some(expires_at) = expires_at {
            body["expires_at"] = serde_json::Value::String(expires_at.to_string());
        }
        let req =
            Request::new(Method::POST, format!("{}/snapshots", volume_path(pool, volume))).on_member().json(&body)?;
        self.run_operation(req, VOLUME_TIMEOUT).await?;
        Ok(())
    }

    /// The snapshots of a custom volume (names without the volume prefix).
    ///
    /// On a cluster, LXD 5.0 answers `GET .../volumes/custom/<v>/snapshots` from the member that receives it, with
    /// that member's snapshots only, whatever `target=` says: for a volume on another member it answers an empty
    /// list (and for a name on two members, the receiving member's). So there the snapshots are found in the pool's
    /// volume list, which covers every member (`<v>/<snapshot>` rows with their `location`), on the volume's member
    /// (this handle's target, else where LXD says the volume is), then each is read by name (LXD forwards those).
    pub async fn volume_snapshots(&self, pool: &ObjectName, volume: &ObjectName) -> Result<Vec<VolumeSnapshot>> {
        if self.server().await?.environment.server_clustered {
            return self.volume_snapshots_on_cluster(pool, volume).await;
        }
        let req = Request::new(Method::GET, format!("{}/snapshots", volume_path(pool, volume)))
            .on_member()
            .query("recursion", "1");
        let mut out: Vec<VolumeSnapshot> = self.sync(req).await?;
        for snapshot in &mut out {
            if let Some((_, short)) = snapshot.name.rsplit_once('/') {
                snapshot.name = short.to_string();
            }
        }
        Ok(out)
    }

    async fn volume_snapshots_on_cluster(&self, pool: &ObjectName, volume: &ObjectName) -> Result<Vec<VolumeSnapshot>> {
        let location = match self.current_target() {
            Some(member) => member.to_string(),
            None => match self.storage_volume(pool, volume).await? {
                Some(found) => found.location,
                None => {
                    return Err(Error::NotFound {
                        path: volume_path(pool, volume),
                        message: format!("custom volume {volume} on pool {pool}"),
                    })
                }
            },
        };
        let listed: Vec<StorageVolume> = self
            .sync(
                Request::new(Method::GET, format!("/1.0/storage-pools/{}/volumes/custom", encode(pool.as_str())))
                    .query("recursion", "1"),
            )
            .await?;
        let prefix = format!("{volume}/");
        let mut out = Vec::new();
        for row in listed {
            let Some(short) = row.name.strip_prefix(&prefix) else { continue };
            // A pool every member shares (Ceph) has no location: its volumes are everyone's.
            if !row.location.is_empty() && !location.is_empty() && row.location != location {
                continue;
            }
            let name = SnapshotName::new(short)?;
            let path = format!("{}/snapshots/{}", volume_path(pool, volume), encode(name.as_str()));
            let mut snapshot: VolumeSnapshot = self.sync(Request::new(Method::GET, path).on_member()).await?;
            snapshot.name = short.to_string();
            out.push(snapshot);
        }
        Ok(out)
    }

    /// Delete a snapshot of a custom volume.
    pub async fn delete_volume_snapshot(
        &self,
        pool: &ObjectName,
        volume: &ObjectName,
        snapshot: &SnapshotName,
    ) -> Result<()> {
        let path = format!("{}/snapshots/{}", volume_path(pool, volume), encode(snapshot.as_str()));
        self.run_operation(Request::new(Method::DELETE, path).on_member(), VOLUME_TIMEOUT).await?;
        Ok(())
    }

    /// Bring a custom volume back to one of its snapshots (`PUT {"restore": name}`). LXD refuses while a running
    /// instance uses the volume: stop it first.
    pub async fn restore_volume_snapshot(
        &self,
        pool: &ObjectName,
        volume: &ObjectName,
        snapshot: &SnapshotName,
    ) -> Result<()> {
        let current = self.storage_volume(pool, volume).await?.ok_or_else(|| Error::NotFound {
            path: volume_path(pool, volume),
            message: format!("custom volume {volume} on pool {pool}"),
        })?;
        let body = serde_json::json!({ "config": current.config, "restore": snapshot });
        let req = Request::new(Method::PUT, volume_path(pool, volume)).on_member().json(&body)?;
        let answer = self.send(req).await?;
        if answer.envelope.kind == "async" {
            let op = crate::client::operation_from_answer(&volume_path(pool, volume), answer.envelope)?;
            self.wait_operation(&op.id, VOLUME_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Replace the content of the custom volume `target` with the content of `source`, both on `pool` (`POST
    /// .../volumes/custom` with a `copy` source, `refresh` and `volume_only`): afterwards `target` holds exactly
    /// `source`'s files (files only in `target` are gone) and keeps its name, its configuration and its own
    /// snapshots (without `volume_only` LXD would drop the snapshots `source` lacks). Stop the instances using
    /// `target` first: its files change under them.
    pub async fn refresh_storage_volume(
        &self,
        pool: &ObjectName,
        target: &ObjectName,
        source: &ObjectName,
    ) -> Result<()> {
        self.require_extension("custom_volume_refresh", "upgrade LXD to refresh a custom volume from another").await?;
        let body = serde_json::json!({
            "name": target,
            "type": "custom",
            "content_type": "filesystem",
            "source": { "type": "copy", "pool": pool, "name": source, "volume_only": true, "refresh": true },
        });
        let req = Request::new(Method::POST, format!("/1.0/storage-pools/{}/volumes/custom", encode(pool.as_str())))
            .json(&body)?;
        let answer = self.send(req).await?;
        if answer.envelope.kind == "async" {
            let op = crate::client::operation_from_answer("/1.0/storage-pools", answer.envelope)?;
            self.wait_operation(&op.id, VOLUME_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Replace a custom volume's configuration (`PUT`, its description kept). LXD accepts its own `volatile.*`
    /// keys here (`volatile.idmap.last` tells it which idmap the files are written in).
    pub async fn update_storage_volume_config(
        &self,
        pool: &ObjectName,
        volume: &ObjectName,
        config: BTreeMap<String, String>,
    ) -> Result<()> {
        let current = self.storage_volume(pool, volume).await?.ok_or_else(|| Error::NotFound {
            path: volume_path(pool, volume),
            message: format!("custom volume {volume} on pool {pool}"),
        })?;
        let body = serde_json::json!({ "config": config, "description": current.description });
        let _: serde_json::Value = self.sync(Request::new(Method::PUT, volume_path(pool, volume)).json(&body)?).await?;
        Ok(())
    }

    /// All networks.
    pub async fn networks(&self) -> Result<Vec<Network>> {
        self.sync(Request::new(Method::GET, "/1.0/networks").query("recursion", "1")).await
    }

    /// One network.
    pub async fn network(&self, name: &ObjectName) -> Result<Network> {
        self.get(&format!("/1.0/networks/{}", encode(name.as_str()))).await
    }

    /// Create a managed network (e.g. a `bridge` with `ipv4.address=none`).
    pub async fn create_network(&self, name: &ObjectName, kind: &str, config: BTreeMap<String, String>) -> Result<()> {
        let body = serde_json::json!({ "name": name, "type": kind, "config": config });
        let _: serde_json::Value = self.sync(Request::new(Method::POST, "/1.0/networks").json(&body)?).await?;
        Ok(())
    }

    /// Delete a network.
    pub async fn delete_network(&self, name: &ObjectName) -> Result<()> {
        let _: serde_json::Value =
            self.sync(Request::new(Method::DELETE, format!("/1.0/networks/{}", encode(name.as_str())))).await?;
        Ok(())
    }

    /// All projects.
    pub async fn projects(&self) -> Result<Vec<Project>> {
        self.sync(Request::new(Method::GET, "/1.0/projects").unscoped().query("recursion", "1")).await
    }

    /// One project.
    pub async fn project_info(&self, name: &ObjectName) -> Result<Project> {
        self.sync(Request::new(Method::GET, format!("/1.0/projects/{}", encode(name.as_str()))).unscoped()).await
    }

    /// Create a project.
    pub async fn create_project(&self, name: &ObjectName, config: BTreeMap<String, String>) -> Result<()> {
        let body = serde_json::json!({ "name": name, "config": config });
        let _: serde_json::Value =
            self.sync(Request::new(Method::POST, "/1.0/projects").unscoped().json(&body)?).await?;
        Ok(())
    }

    /// Delete a project.
    pub async fn delete_project(&self, name: &ObjectName) -> Result<()> {
        let _: serde_json::Value = self
            .sync(Request::new(Method::DELETE, format!("/1.0/projects/{}", encode(name.as_str()))).unscoped())
            .await?;
        Ok(())
    }
}
