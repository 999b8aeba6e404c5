//! Brother mode: botserver inside the system container manages the host's LXD through the host's socket, exposed
//! by an `lxd-sock` proxy device (connect to the host's detected socket, `bind=instance` (the seed's
//! `bind=container`), uid 0, gid 0, mode 0660).
//!
//! Brother mode is host-root equivalent, privileged container or not: whoever holds the LXD socket can create a
//! privileged container with the host's `/` mounted, so root inside the system container (and anything that
//! takes over botserver) is root on the host. [`enable`] says so in its warnings every time.
//!
//! Two changes from the seed's recipe, both on purpose:
//! - The device lives on a dedicated profile attached only to the system container. The seed put it on the
//!   `default` profile, which hands every container root over the host's LXD; that needs an explicit flag.
//! - The socket listens under `/var/lib/gbo/` by default: a systemd container mounts a fresh `/tmp` at boot, so
//!   the seed's `/tmp/lxd.sock` disappears after the first restart. The seed's path stays available.

use gbo_components::TenantName;
use std::path::PathBuf;
use std::time::Duration;

use lxd_client::{
    Client, DeviceName, FileOptions, Flavor, InstanceName, ObjectName, Profile, ProxyAddress, ProxyDevice,
};

use crate::doctor::inside;
use crate::inventory;

/// The device name (the seed's).
pub const DEVICE: &str = "lxd-sock";
/// The dedicated profile.
pub const DEFAULT_PROFILE: &str = "gbo-brother";
/// Where the socket appears inside by default: survives restarts.
pub const DEFAULT_SOCKET_PATH: &str = "/var/lib/gbo/lxd.sock";
/// The seed's path (gone after a restart of a systemd container).
pub const SEED_SOCKET_PATH: &str = "/tmp/lxd.sock";

/// What failed. Every variant means exit code 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrotherError {
    /// Bad options or a missing container. Nothing was changed.
    #[error("{0}")]
    BadInput(String),
    /// The socket did not appear.
    #[error("{0}")]
    Failed(String),
    /// LXD failed.
    #[error(transparent)]
    Lxd(#[from] lxd_client::Error),
}

/// Options of [`enable`].
#[derive(Debug, Clone)]
pub struct BrotherOptions {
    /// The profile that carries the device.
    pub profile: String,
    /// Where the socket appears inside.
    pub socket_path: String,
    /// The host socket to connect to (detected when `None`: `LXD_SOCKET`, `LXD_DIR`, snap, Debian).
    pub host_socket: Option<PathBuf>,
    /// Allow the `default` profile (every container gets root over the host's LXD).
    pub allow_default_profile: bool,
}

impl Default for BrotherOptions {
    fn default() -> Self {
        Self {
            profile: DEFAULT_PROFILE.into(),
            socket_path: DEFAULT_SOCKET_PATH.into(),
            host_socket: None,
            allow_default_profile: false,
        }
    }
}

/// What [`enable`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BrotherReport {
    /// The profile carrying the device.
    pub profile: String,
    /// The system container it is attached to.
    pub instance: String,
    /// The host socket the device connects to.
    pub host_socket: String,
    /// The socket inside.
    pub socket_path: String,
    /// What to point botserver at.
    pub lxd_socket_env: String,
    /// Whether anything changed.
    pub changed: bool,
    /// Warnings for the user.
    pub warnings: Vec<String>,
}

/// The device's LXD configuration.
pub fn device_config(host_socket: &str, socket_path: &str) -> Result<lxd_client::DeviceConfig, lxd_client::Error> {
    let device = ProxyDevice::new(ProxyAddress::unix(socket_path), ProxyAddress::unix(host_socket))
        .bind_instance()
        .unix_owner(0, 0, "0660");
    device.to_config(&DeviceName::new(DEVICE)?)
}

fn check_options(options: &BrotherOptions) -> Result<Vec<String>, BrotherError> {
    let mut warnings = Vec::new();
    let path = &options.socket_path;
    if !path.starts_with('/') || path.ends_with('/') || path.contains(char::is_whitespace) || path.contains("..") {
        return Err(BrotherError::BadInput(format!(
            "--socket-path {path:?} must be an absolute file path without spaces or `..`"
        )));
    }
    if path.starts_with("/tmp/") || path.starts_with("/run/") {
        warnings.push(format!("{path} is on a tmpfs that systemd mounts fresh at boot: the socket disappears after a restart of the container (default: {DEFAULT_SOCKET_PATH})"));
    }
    if options.profile == "default" {
        if !options.allow_default_profile {
            return Err(BrotherError::BadInput(
                "refusing to put the LXD socket on the `default` profile: every container would get root over the host's LXD. \
                 Use the dedicated profile, or pass --allow-default-profile if that is really wanted"
                    .into(),
            ));
        }
        warnings.push(
            "the LXD socket is on the `default` profile: every container now has root over the host's LXD".into(),
        );
    }
    if lxd_client::ObjectName::new(options.profile.as_str()).is_err() {
        return Err(BrotherError::BadInput(format!("--profile {:?} is not a valid profile name", options.profile)));
    }
    Ok(warnings)
}

async fn system_container(lxd: &Client, tenant: &TenantName) -> Result<InstanceName, BrotherError> {
    let instances = inventory::tenant_instances(lxd, tenant).await?;
    let system = instances.into_iter().find(|m| m.role == Some(gbo_components::Role::System)).ok_or_else(|| {
        BrotherError::BadInput(format!("tenant {tenant:?} has no system container (`{tenant}-system`)"))
    })?;
    Ok(system.name.clone())
}

/// The warning [`enable`] always gives.
pub fn host_root_warning(instance: &str) -> String {
    format!(
        "brother mode is host-root equivalent: {instance} holds the host's LXD socket, with which it can create a privileged container mounting the host's / (root in {instance}, or whoever takes over botserver, is root on the host)"
    )
}

/// Give the tenant's system container the host's LXD socket (see the module documentation: host-root equivalent).
pub async fn enable(
    lxd: &Client,
    tenant: &TenantName,
    options: &BrotherOptions,
) -> Result<BrotherReport, BrotherError> {
    let mut warnings = check_options(options)?;
    let instance = system_container(lxd, tenant).await?;
    warnings.insert(0, host_root_warning(instance.as_str()));
    let host_socket = match &options.host_socket {
        Some(p) => p.clone(),
        None => lxd_client::discover_socket(Flavor::Lxd)
            .map_err(|e| BrotherError::BadInput(format!("cannot find the host's LXD socket: {e}")))?,
    };
    let host_socket = host_socket.display().to_string();
    let config = device_config(&host_socket, &options.socket_path)?;
    let mut report = BrotherReport {
        profile: options.profile.clone(),
        instance: instance.to_string(),
        host_socket: host_socket.clone(),
        socket_path: options.socket_path.clone(),
        lxd_socket_env: format!("LXD_SOCKET={}", options.socket_path),
        warnings,
        ..Default::default()
    };
    // LXD does not create the listener's directory.
    if let Some((parent, _)) = options.socket_path.rsplit_once('/') {
        if !parent.is_empty() {
            lxd.mkdir_all(&instance, parent, FileOptions::root(0o755)).await?;
        }
    }
    let profiles = lxd.profiles().await?;
    if !profiles.iter().any(|p| p.name == options.profile) {
        let profile = Profile {
            name: options.profile.clone(),
            description: "gbo brother mode: the host's LXD socket for botserver".into(),
            ..Default::default()
        };
        lxd.create_profile(&profile).await?;
        report.changed = true;
    }
    let device = DeviceName::new(DEVICE)?;
    report.changed |= lxd.add_profile_device(&ObjectName::new(options.profile.as_str())?, &device, config).await?;
    let profile = options.profile.clone();
    report.changed |= lxd
        .update_instance(&instance, |put| {
            if !put.profiles.contains(&profile) {
                put.profiles.push(profile.clone());
            }
        })
        .await?;
    if !socket_present(lxd, &instance, &options.socket_path, Duration::from_secs(10)).await? {
        return Err(BrotherError::Failed(format!("the socket {} did not appear in {instance}", options.socket_path)));
    }
    Ok(report)
}

/// Remove the device from the profile and detach the profile from the system container (when it is not `default`).
pub async fn disable(lxd: &Client, tenant: &TenantName, profile: &str) -> Result<bool, BrotherError> {
    let instance = system_container(lxd, tenant).await?;
    let mut changed = false;
    if profile != "default" {
        let p = profile.to_string();
        changed |= lxd.update_instance(&instance, |put| put.profiles.retain(|x| *x != p)).await?;
    }
    if lxd.profiles().await?.iter().any(|x| x.name == profile) {
        changed |= lxd.remove_profile_device(&ObjectName::new(profile)?, &DeviceName::new(DEVICE)?).await?;
    }
    Ok(changed)
}

/// Whether a unix socket exists at `path` inside, waiting up to `wait`.
pub async fn socket_present(
    lxd: &Client,
    instance: &InstanceName,
    path: &str,
    wait: Duration,
) -> Result<bool, lxd_client::Error> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if inside::run(lxd, instance, &["test", "-S", path]).await?.success() {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `lxd-sock` device an instance sees (from its expanded devices: profiles included), as (listen path,
/// connect path).
pub fn brother_device(instance: &lxd_client::Instance) -> Option<(String, String)> {
    let config = instance.expanded_devices.get(DEVICE)?;
    let proxy = ProxyDevice::from_config(config)?;
    Some((proxy.listen.address.clone(), proxy.connect.address.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        assert!(check_options(&BrotherOptions::default()).expect("check_options").is_empty());
        let seed = BrotherOptions { socket_path: SEED_SOCKET_PATH.into(), ..Default::default() };
        assert!(check_options(&seed).expect("check_options")[0].contains("disappears after a restart"));
        let default = BrotherOptions { profile: "default".into(), ..Default::default() };
        assert!(
            matches!(check_options(&default), Err(BrotherError::BadInput(m)) if m.contains("--allow-default-profile"))
        );
        let allowed = BrotherOptions { allow_default_profile: true, ..default };
        assert!(check_options(&allowed).expect("check_options")[0].contains("every container"));
        assert!(check_options(&BrotherOptions { socket_path: "relative.sock".into(), ..Default::default() }).is_err());
        let config = device_config("/var/lib/lxd/unix.socket", DEFAULT_SOCKET_PATH).expect("device_config");
        assert_eq!(config.get("connect").map(String::as_str), Some("unix:/var/lib/lxd/unix.socket"));
        assert_eq!(config.get("listen").map(String::as_str), Some("unix:/var/lib/gbo/lxd.sock"));
        assert_eq!(
            (config.get("uid"), config.get("gid"), config.get("mode")),
            (Some(&"0".to_string()), Some(&"0".to_string()), Some(&"0660".to_string()))
        );
    }
}
