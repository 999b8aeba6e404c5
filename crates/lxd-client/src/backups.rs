//! Instance and custom-volume backups: create, list, export as a stream, import from a tarball, delete.

use std::pin::Pin;
use std::time::Duration;

use futures_util::TryStreamExt;
use http::Method;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use crate::client::{encode, Client, Request};
use crate::error::{Error, Result};
use crate::instances::{instance_path, LIFECYCLE_TIMEOUT};
use crate::names::{BackupName, InstanceName, ObjectName};

/// How long backup creation and import may take by default.
pub const BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);

/// A backup as LXD reports it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Backup {
    /// Backup name.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Expiry time (RFC 3339).
    pub expires_at: String,
    /// Without snapshots.
    pub instance_only: bool,
    /// In the storage driver's own format.
    pub optimized_storage: bool,
}

/// How to make a backup ([`Client::create_backup`]). Build with [`BackupOptions::new`] and the setters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackupOptions {
    /// Leave the instance's snapshots out (default: they are included).
    pub instance_only: bool,
    /// In the storage driver's own format (faster, but restorable only on a pool of the same driver).
    pub optimized_storage: bool,
    /// When the daemon deletes the backup by itself (RFC 3339), if ever.
    pub expires_at: Option<String>,
    /// The tarball's compression (`none`, `gzip`, `zstd`, ...; needs `backup_compression_algorithm`), else the
    /// daemon's `backups.compression_algorithm`.
    pub compression_algorithm: Option<String>,
}

impl BackupOptions {
    /// Snapshots included, portable format, no expiry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leave the snapshots out (`true`) or include them.
    pub fn instance_only(mut self, instance_only: bool) -> Self {
        self.instance_only = instance_only;
        self
    }

    /// Use the storage driver's own format.
    pub fn optimized_storage(mut self, optimized: bool) -> Self {
        self.optimized_storage = optimized;
        self
    }

    /// Expire at `rfc3339` (e.g. `2030-01-31T00:00:00Z`).
    pub fn expires_at(mut self, rfc3339: impl Into<String>) -> Self {
        self.expires_at = Some(rfc3339.into());
        self
    }

    /// Compress the tarball with `algorithm` (`none` leaves it plain: a deduplicating store then finds what did
    /// not change since the last backup).
    pub fn compression(mut self, algorithm: impl Into<String>) -> Self {
        self.compression_algorithm = Some(algorithm.into());
        self
    }

    fn body(&self, name: &str, only_key: &str) -> serde_json::Value {
        let mut body = serde_json::json!({
            "name": name,
            only_key: self.instance_only,
            "optimized_storage": self.optimized_storage,
        });
        if let Some(expires_at) = &self.expires_at {
            body["expires_at"] = serde_json::Value::String(expires_at.clone());
        }
        if let Some(algorithm) = &self.compression_algorithm {
            body["compression_algorithm"] = serde_json::Value::String(algorithm.clone());
        }
        body
    }
}

fn backup_path(instance: &InstanceName, backup: &BackupName) -> String {
    format!("{}/backups/{}", instance_path(instance), encode(backup.as_str()))
}

impl Client {
    /// Create a backup named `name` and wait for it (at most [`BACKUP_TIMEOUT`]).
    ///
    /// ```no_run
    /// # async fn demo(lxd: &lxd_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use lxd_client::{BackupName, BackupOptions, InstanceName};
    /// let instance = InstanceName::new("default-tables")?;
    /// let name = BackupName::new("nightly")?;
    /// lxd.create_backup(&instance, &name, &BackupOptions::new().instance_only(true)).await?;
    /// let mut file = tokio::fs::File::create("/var/backups/default-tables.tar.gz").await?;
    /// lxd.export_backup_to(&instance, &name, &mut file).await?;
    /// lxd.delete_backup(&instance, &name).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_backup(
        &self,
        instance: &InstanceName,
        name: &BackupName,
        options: &BackupOptions,
    ) -> Result<()> {
        if options.compression_algorithm.is_some() {
            self.require_extension("backup_compression_algorithm", "leave the compression to the daemon's default")
                .await?;
        }
        let body = options.body(name.as_str(), "instance_only");
        let req = Request::new(Method::POST, format!("{}/backups", instance_path(instance))).json(&body)?;
        self.run_operation(req, BACKUP_TIMEOUT).await?;
        Ok(())
    }

    /// Backups of an instance.
    pub async fn backups(&self, instance: &InstanceName) -> Result<Vec<Backup>> {
        self.sync(Request::new(Method::GET, format!("{}/backups", instance_path(instance))).query("recursion", "1"))
            .await
    }

    /// Stream a backup's tarball (`GET .../backups/<name>/export`): nothing is held in memory.
    pub async fn export_backup(
        &self,
        instance: &InstanceName,
        name: &BackupName,
    ) -> Result<Pin<Box<dyn AsyncRead + Send>>> {
        self.stream_get(Request::new(Method::GET, format!("{}/export", backup_path(instance, name)))).await
    }

    /// Export a backup into a writer; returns the bytes written.
    pub async fn export_backup_to<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        instance: &InstanceName,
        name: &BackupName,
        out: &mut W,
    ) -> Result<u64> {
        let mut reader = self.export_backup(instance, name).await?;
        tokio::io::copy(&mut reader, out)
            .await
            .map_err(|e| Error::io(format!("exporting backup {name} of {instance}"), e))
    }

    /// Delete a backup.
    pub async fn delete_backup(&self, instance: &InstanceName, name: &BackupName) -> Result<()> {
        self.run_operation(Request::new(Method::DELETE, backup_path(instance, name)), LIFECYCLE_TIMEOUT).await?;
        Ok(())
    }

    /// Create an instance from a backup tarball (`POST /1.0/instances` with an octet-stream body), streamed.
    /// `new_name` renames it on import (needs `backup_override_name`); otherwise the name in the backup is used.
    pub async fn import_backup<R>(&self, tarball: R, new_name: Option<&InstanceName>) -> Result<()>
    where
        R: AsyncRead + Send + 'static,
    {
        let mut req = Request::new(Method::POST, "/1.0/instances")
            .stream(tarball, "application/octet-stream")
            .timeout(BACKUP_TIMEOUT);
        if let Some(name) = new_name {
            self.require_extension(
                "backup_override_name",
                "upgrade LXD to rename on import, or import under the original name",
            )
            .await?;
            req = req.header(&format!("{}name", self.flavor().header_prefix()), name.as_str())?;
        }
        self.run_operation(req, BACKUP_TIMEOUT).await?;
        Ok(())
    }
}

/// A custom volume's backup as LXD reports it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct VolumeBackup {
    /// Backup name.
    pub name: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Expiry time (RFC 3339).
    pub expires_at: String,
    /// Without the volume's snapshots.
    pub volume_only: bool,
    /// In the storage driver's own format.
    pub optimized_storage: bool,
}

fn custom_volume_path(pool: &ObjectName, volume: &ObjectName) -> String {
    format!("/1.0/storage-pools/{}/volumes/custom/{}", encode(pool.as_str()), encode(volume.as_str()))
}

fn volume_backup_path(pool: &ObjectName, volume: &ObjectName, backup: &BackupName) -> String {
    format!("{}/backups/{}", custom_volume_path(pool, volume), encode(backup.as_str()))
}

impl Client {
    /// Create a backup of the custom volume `volume` on `pool` and wait for it (needs `custom_volume_backup`).
    /// [`BackupOptions::instance_only`] leaves the volume's snapshots out (`volume_only`).
    ///
    /// ```no_run
    /// # async fn demo(lxd: &lxd_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use lxd_client::{BackupName, BackupOptions, ObjectName};
    /// let (pool, volume) = (ObjectName::new("default")?, ObjectName::new("acme-tables-data")?);
    /// let name = BackupName::new("nightly")?;
    /// lxd.create_volume_backup(&pool, &volume, &name, &BackupOptions::new().instance_only(true).compression("none")).await?;
    /// let mut file = tokio::fs::File::create("/var/backups/acme-tables-data.tar").await?;
    /// lxd.export_volume_backup_to(&pool, &volume, &name, &mut file).await?;
    /// lxd.delete_volume_backup(&pool, &volume, &name).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_volume_backup(
        &self,
        pool: &ObjectName,
        volume: &ObjectName,
        name: &BackupName,
        options: &BackupOptions,
    ) -> Result<()> {
        self.require_extension("custom_volume_backup", "upgrade LXD to back up custom volumes").await?;
        if options.compression_algorithm.is_some() {
            self.require_extension("backup_compression_algorithm", "leave the compression to the daemon's default")
                .await?;
        }
        let body = options.body(name.as_str(), "volume_only");
        let req = Request::new(Method::POST, format!("{}/backups", custom_volume_path(pool, volume)))
            .on_member()
            .json(&body)?;
        self.run_operation(req, BACKUP_TIMEOUT).await?;
        Ok(())
    }

    /// Backups of a custom volume.
    pub async fn volume_backups(&self, pool: &ObjectName, volume: &ObjectName) -> Result<Vec<VolumeBackup>> {
        self.sync(
            Request::new(Method::GET, format!("{}/backups", custom_volume_path(pool, volume)))
                .on_member()
                .query("recursion", "1"),
        )
        .await
    }

    /// Stream a custom volume backup's tarball (`GET .../backups/<name>/export`): nothing is held in memory.
    pub async fn export_volume_backup(
        &self,
        pool: &ObjectName,
        volume: &ObjectName,
        name: &BackupName,
    ) -> Result<Pin<Box<dyn AsyncRead + Send>>> {
        let path = format!("{}/export", volume_backup_path(pool, volume, name));
        self.stream_get(Request::new(Method::GET, path).on_member()).await
    }

    /// Export a custom volume backup into a writer; returns the bytes written.
    pub async fn export_volume_backup_to<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        pool: &ObjectName,
        volume: &ObjectName,
        name: &BackupName,
        out: &mut W,
    ) -> Result<u64> {
        let mut reader = self.export_volume_backup(pool, volume, name).await?;
        tokio::io::copy(&mut reader, out)
            .await
            .map_err(|e| Error::io(format!("exporting backup {name} of volume {pool}/{volume}"), e))
    }

    /// Delete a custom volume backup.
    pub async fn delete_volume_backup(&self, pool: &ObjectName, volume: &ObjectName, name: &BackupName) -> Result<()> {
        let req = Request::new(Method::DELETE, volume_backup_path(pool, volume, name)).on_member();
        self.run_operation(req, LIFECYCLE_TIMEOUT).await?;
        Ok(())
    }

    /// Create the custom volume `name` on `pool` from a volume backup tarball (`POST
    /// /1.0/storage-pools/<pool>/volumes/custom` with an octet-stream body and the new name in a header),
    /// streamed. The volume must not exist.
    pub async fn import_volume_backup<R>(&self, pool: &ObjectName, tarball: R, name: &ObjectName) -> Result<()>
    where
        R: AsyncRead + Send + 'static,
    {
        self.require_extension("custom_volume_backup", "upgrade LXD to restore custom volumes").await?;
        let req = Request::new(Method::POST, format!("/1.0/storage-pools/{}/volumes/custom", encode(pool.as_str())))
            .on_member()
            .stream(tarball, "application/octet-stream")
            .timeout(BACKUP_TIMEOUT)
            .header(&format!("{}name", self.flavor().header_prefix()), name.as_str())?;
        self.run_operation(req, BACKUP_TIMEOUT).await?;
        Ok(())
    }

    async fn stream_get(&self, req: Request) -> Result<Pin<Box<dyn AsyncRead + Send>>> {
        let path = req.path.clone();
        let response = self.send_raw(req.timeout(BACKUP_TIMEOUT)).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.failure(response, "GET", &path).await);
        }
        let stream = http_body_util::BodyStream::new(response.into_body())
            .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) })
            .map_err(std::io::Error::other);
        Ok(Box::pin(tokio_util::io::StreamReader::new(stream)))
    }
}
