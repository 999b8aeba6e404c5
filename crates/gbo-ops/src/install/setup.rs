//! `gbo setup`: make a fresh LXD usable (a storage pool and the default profile's root disk; optionally a bridge)
//! and the catalogue's image specification for the one image builder.

use std::collections::BTreeMap;
use std::path::PathBuf;

use gbo_components::Role;
use lxd_client::{Client, DeviceName, DiskDevice, ObjectName};

use super::error::InstallError;
use crate::image::{FixedUser, ImageSpec};

/// What setup found or did, one line each.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SetupReport {
    /// The socket or endpoint used.
    pub endpoint: String,
    /// One line per check: what was there, what was created.
    pub lines: Vec<String>,
}

/// Options of `gbo setup`.
#[derive(Debug, Clone, Default)]
pub struct SetupOptions {
    /// Pool name to create when none exists (`default`).
    pub pool: String,
    /// Create a bridge `lxdbr0` for online hosts.
    pub network: bool,
}

/// Initialise what is missing: a storage pool (btrfs when `mkfs.btrfs` exists, else dir), the default profile's
/// root disk, and with `network` a bridge. Idempotent: a second run changes nothing.
pub async fn setup(lxd: &Client, options: &SetupOptions) -> Result<SetupReport, InstallError> {
    let server = lxd.server().await.map_err(InstallError::lxd("connecting to LXD"))?;
    let mut lines = vec![format!("LXD {} reachable", server.environment.server_version)];
    let pools = lxd.storage_pools().await.map_err(InstallError::lxd("listing storage pools"))?;
    let pool_name = if options.pool.is_empty() { "default".to_string() } else { options.pool.clone() };
    let pool = match pools.iter().find(|p| p.name == pool_name).or_else(|| pools.first()) {
        Some(p) => {
            lines.push(format!("storage pool {} ({}) exists", p.name, p.driver));
            p.name.clone()
        }
        None => {
            let driver = if crate::runner::which("mkfs.btrfs").is_some() { "btrfs" } else { "dir" };
            let mut config = BTreeMap::new();
            if driver == "btrfs" {
                config.insert("size".to_string(), "16GiB".to_string());
            }
            let pool_object =
                ObjectName::new(pool_name.as_str()).map_err(InstallError::lxd(format!("storage pool {pool_name}")))?;
            lxd.create_storage_pool(&pool_object, driver, config)
                .await
                .map_err(InstallError::lxd(format!("creating storage pool {pool_name}")))?;
            lines.push(format!("created storage pool {pool_name} ({driver})"));
            pool_name
        }
    };
    let default_profile = ObjectName::new("default").map_err(InstallError::lxd("profile name default"))?;
    let profile = lxd.profile(&default_profile).await.map_err(InstallError::lxd("reading the default profile"))?;
    if profile
        .devices
        .values()
        .any(|d| d.get("type").map(String::as_str) == Some("disk") && d.get("path").map(String::as_str) == Some("/"))
    {
        lines.push("default profile has a root disk".to_string());
    } else {
        let name = DeviceName::new("root").map_err(InstallError::lxd("device name root"))?;
        let config = DiskDevice::root(pool.clone()).to_config(&name).map_err(InstallError::lxd("root disk"))?;
        lxd.add_profile_device(&default_profile, &name, config)
            .await
            .map_err(InstallError::lxd("adding the root disk to the default profile"))?;
        lines.push(format!("added root disk on pool {pool} to the default profile"));
    }
    if options.network {
        let networks = lxd.networks().await.map_err(InstallError::lxd("listing networks"))?;
        if networks.iter().any(|n| n.name == "lxdbr0") {
            lines.push("network lxdbr0 exists".to_string());
        } else {
            let bridge = ObjectName::new("lxdbr0").map_err(InstallError::lxd("network name lxdbr0"))?;
            lxd.create_network(&bridge, "bridge", BTreeMap::new())
                .await
                .map_err(InstallError::lxd("creating network lxdbr0"))?;
            lines.push("created network lxdbr0".to_string());
        }
    }
    Ok(SetupReport { endpoint: format!("{:?}", lxd.endpoint()), lines })
}

/// The image specification for `roles` (every Debian-packaged role when empty), from the catalogue.
pub fn image_spec(roles: &[Role], alias: &str, force: bool) -> ImageSpec {
    let roles: Vec<Role> =
        if roles.is_empty() { gbo_components::users::debian_packaged_roles() } else { roles.to_vec() };
    ImageSpec {
        alias: alias.to_string(),
        roles: roles.iter().map(|r| r.as_str().to_string()).collect(),
        packages: gbo_components::image_packages(&roles).into_iter().map(str::to_string).collect(),
        users: gbo_components::SERVICE_USERS
            .iter()
            .map(|u| FixedUser {
                name: u.name.to_string(),
                uid: u.uid,
                gid: u.gid,
                home: u.home.to_string(),
                shell: u.shell.to_string(),
            })
            .collect(),
        mirror: "http://deb.debian.org/debian".to_string(),
        work_dir: PathBuf::from("/var/cache/gbo/images"),
        force,
    }
}
