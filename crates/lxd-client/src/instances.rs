//! Instances: list, get, create, update, delete, rename, state.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::{encode, Client, Request};
use crate::devices::DeviceConfig;
use crate::error::{Error, Result};
use crate::names::{DeviceName, InstanceName};

/// How long lifecycle operations (create, start, stop, delete) may take by default.
pub const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(300);

/// An instance as `GET /1.0/instances/<name>` (or `recursion=1`/`2` lists) returns it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Instance {
    /// Name.
    pub name: String,
    /// `Running`, `Stopped`, `Frozen`, `Error`.
    pub status: String,
    /// Numeric status (103 running, 102 stopped).
    pub status_code: i64,
    /// `container` or `virtual-machine`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Architecture.
    pub architecture: String,
    /// Local configuration keys (including the server's `volatile.*` and `image.*`).
    pub config: BTreeMap<String, String>,
    /// Local devices.
    pub devices: BTreeMap<String, DeviceConfig>,
    /// Configuration including profiles.
    pub expanded_config: BTreeMap<String, String>,
    /// Devices including profiles.
    pub expanded_devices: BTreeMap<String, DeviceConfig>,
    /// Profiles applied, in order.
    pub profiles: Vec<String>,
    /// Deleted when stopped.
    pub ephemeral: bool,
    /// Stateful.
    pub stateful: bool,
    /// Description.
    pub description: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last start (RFC 3339).
    pub last_used_at: String,
    /// Cluster member.
    pub location: String,
    /// Project.
    pub project: String,
    /// Live state, filled by `recursion=2` lists and [`Client::instance_full`].
    pub state: Option<InstanceState>,
}

impl Instance {
    /// Running.
    pub fn is_running(&self) -> bool {
        self.status == "Running"
    }

    /// The writable part, for a full-replace update.
    pub fn to_put(&self) -> InstancePut {
        InstancePut {
            architecture: self.architecture.clone(),
            config: self.config.clone(),
            devices: self.devices.clone(),
            ephemeral: self.ephemeral,
            profiles: self.profiles.clone(),
            stateful: self.stateful,
            description: self.description.clone(),
        }
    }
}

/// The writable fields of an instance (`PUT`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct InstancePut {
    /// Architecture.
    pub architecture: String,
    /// Configuration keys. Keep the server's `volatile.*` and `image.*` keys as read.
    pub config: BTreeMap<String, String>,
    /// Devices.
    pub devices: BTreeMap<String, DeviceConfig>,
    /// Ephemeral.
    pub ephemeral: bool,
    /// Profiles.
    pub profiles: Vec<String>,
    /// Stateful.
    pub stateful: bool,
    /// Description.
    pub description: String,
}

/// `GET /1.0/instances/<name>/state`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct InstanceState {
    /// Status text.
    pub status: String,
    /// Status code.
    pub status_code: i64,
    /// Init process pid (0 when stopped).
    pub pid: i64,
    /// Number of processes.
    pub processes: i64,
    /// Memory.
    pub memory: MemoryState,
    /// Disk usage by device.
    pub disk: Option<BTreeMap<String, DiskState>>,
    /// Network interfaces.
    pub network: Option<BTreeMap<String, serde_json::Value>>,
    /// CPU usage.
    pub cpu: serde_json::Value,
}

/// Memory counters.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct MemoryState {
    /// Bytes in use.
    pub usage: i64,
    /// Peak bytes.
    pub usage_peak: i64,
}

/// Disk counters.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct DiskState {
    /// Bytes used.
    pub usage: i64,
}

/// Where a new instance comes from.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InstanceSource {
    /// `image`, `copy`, `none`, `migration`, `backup`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Image alias.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Image fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// `pull` for a remote image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Remote server URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// `simplestreams` or `lxd`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The remote server's certificate (PEM), for `lxd` servers with a self-signed certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

impl InstanceSource {
    /// A local image by alias.
    pub fn alias(alias: impl Into<String>) -> Self {
        Self {
            kind: "image".into(),
            alias: Some(alias.into()),
            fingerprint: None,
            mode: None,
            server: None,
            protocol: None,
            certificate: None,
        }
    }

    /// A local image by fingerprint.
    pub fn fingerprint(fp: impl Into<String>) -> Self {
        Self {
            kind: "image".into(),
            alias: None,
            fingerprint: Some(fp.into()),
            mode: None,
            server: None,
            protocol: None,
            certificate: None,
        }
    }

    /// An image pulled from a simplestreams server (e.g. `https://images.linuxcontainers.org`, `debian/12`).
    pub fn simplestreams(server: impl Into<String>, alias: impl Into<String>) -> Self {
        Self::pull("simplestreams", server.into(), alias.into(), None)
    }

    fn pull(protocol: &str, server: String, alias: String, certificate: Option<String>) -> Self {
        Self {
            kind: "image".into(),
            alias: Some(alias),
            fingerprint: None,
            mode: Some("pull".into()),
            server: Some(server),
            protocol: Some(protocol.into()),
            certificate,
        }
    }

    /// An image pulled from another LXD server over its REST API (`protocol: lxd`): `server` is its URL
    /// (`https://host:8443`), `certificate` its certificate (PEM) when it is self-signed. The daemon pulls as an
    /// untrusted client, so the image must be public on that server.
    pub fn lxd_server(server: impl Into<String>, alias: impl Into<String>, certificate: Option<String>) -> Self {
        Self::pull("lxd", server.into(), alias.into(), certificate)
    }

    /// The source of image `alias` on remote `remote` of the `lxc` CLI's configuration in `config_dir`
    /// (`config.yml`; for LXD servers also `servercerts/<remote>.crt` when present): a pull source for HTTPS
    /// remotes (simplestreams or LXD), a local alias for the local daemon's remote (`unix://`, such as `local`; a
    /// unix remote naming another socket is refused). `Ok(None)` when the configuration has no such remote or there
    /// is no configuration file.
    pub fn from_lxc_remote(config_dir: &Path, remote: &str, alias: &str) -> Result<Option<Self>> {
        let config_path = config_dir.join("config.yml");
        let text = match std::fs::read_to_string(&config_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Config { message: format!("cannot read {}: {e}", config_path.display()) }),
        };
        let config: LxcImageRemotes = serde_yaml::from_str(&text)
            .map_err(|e| Error::Config { message: format!("{}: {e}", config_path.display()) })?;
        let Some(entry) = config.remotes.get(remote) else { return Ok(None) };
        if let Some(socket) = entry.addr.strip_prefix("unix://") {
            // `unix://` is the local daemon. A unix remote with its own socket is the daemon there: its images are
            // not this daemon's, and a daemon cannot pull from a unix socket, so it is refused rather than read
            // as a local alias (an explicit remote is never replaced by another daemon).
            let local = crate::transport::discover_socket(crate::transport::Flavor::Lxd).ok();
            let same = |path: &Path| path.canonicalize().ok() == local.as_ref().and_then(|l| l.canonicalize().ok());
            if socket.is_empty() || (local.is_some() && same(Path::new(socket))) {
                return Ok(Some(Self::alias(alias)));
            }
            return Err(Error::Config {
                message: format!(
                    "remote `{remote}` is the daemon at the unix socket {socket}, not the one in use: copy the image \
                     into this daemon first (`lxc image copy {remote}:{alias} local:`)"
                ),
            });
        }
        if !entry.addr.starts_with("https://") {
            return Err(Error::Config {
                message: format!("remote `{remote}` has an unsupported address {:?}", entry.addr),
            });
        }
        let server = entry.addr.trim_end_matches('/').to_string();
        match entry.protocol.as_str() {
            "simplestreams" => Ok(Some(Self::simplestreams(server, alias))),
            "" | "lxd" => {
                let cert_path = config_dir.join("servercerts").join(format!("{remote}.crt"));
                let certificate =
                    if cert_path.exists() {
                        Some(std::fs::read_to_string(&cert_path).map_err(|e| Error::Config {
                            message: format!("cannot read {}: {e}", cert_path.display()),
                        })?)
                    } else {
                        None
                    };
                Ok(Some(Self::lxd_server(server, alias, certificate)))
            }
            other => Err(Error::Config {
                message: format!(
                    "remote `{remote}` speaks `{other}`: images come from `lxd` or `simplestreams` servers"
                ),
            }),
        }
    }

    /// No root filesystem (an empty instance).
    pub fn none() -> Self {
        Self {
            kind: "none".into(),
            alias: None,
            fingerprint: None,
            mode: None,
            server: None,
            protocol: None,
            certificate: None,
        }
    }
}

/// The remotes of the `lxc` CLI's `config.yml`, as image sources.
#[derive(Deserialize)]
struct LxcImageRemotes {
    #[serde(default)]
    remotes: BTreeMap<String, LxcImageRemote>,
}

#[derive(Deserialize)]
struct LxcImageRemote {
    addr: String,
    #[serde(default)]
    protocol: String,
}

/// `POST /1.0/instances`.
#[derive(Debug, Clone, Serialize)]
pub struct CreateInstance {
    name: InstanceName,
    #[serde(rename = "type")]
    kind: String,
    profiles: Vec<String>,
    config: BTreeMap<String, String>,
    devices: BTreeMap<String, DeviceConfig>,
    source: InstanceSource,
    start: bool,
    ephemeral: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
}

impl CreateInstance {
    /// A container named `name` from `source`, with the `default` profile, not started.
    pub fn container(name: InstanceName, source: InstanceSource) -> Self {
        Self {
            name,
            kind: "container".into(),
            profiles: vec!["default".into()],
            config: BTreeMap::new(),
            devices: BTreeMap::new(),
            source,
            start: false,
            ephemeral: false,
            description: String::new(),
        }
    }

    /// Set a configuration key.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    /// Add a device.
    pub fn device(mut self, name: &DeviceName, config: DeviceConfig) -> Self {
        self.devices.insert(name.to_string(), config);
        self
    }

    /// Replace the profiles.
    pub fn profiles(mut self, profiles: Vec<String>) -> Self {
        self.profiles = profiles;
        self
    }

    /// Start it once created.
    pub fn start(mut self, start: bool) -> Self {
        self.start = start;
        self
    }

    /// Delete it when stopped.
    pub fn ephemeral(mut self, ephemeral: bool) -> Self {
        self.ephemeral = ephemeral;
        self
    }

    /// Describe it.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The instance name.
    pub fn name(&self) -> &InstanceName {
        &self.name
    }
}

/// A state change (`PUT /1.0/instances/<n>/state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAction {
    /// Start.
    Start,
    /// Stop.
    Stop,
    /// Restart.
    Restart,
    /// Freeze.
    Freeze,
    /// Unfreeze.
    Unfreeze,
}

impl StateAction {
    fn as_str(self) -> &'static str {
        match self {
            StateAction::Start => "start",
            StateAction::Stop => "stop",
            StateAction::Restart => "restart",
            StateAction::Freeze => "freeze",
            StateAction::Unfreeze => "unfreeze",
        }
    }
}

pub(crate) fn instance_path(name: &InstanceName) -> String {
    format!("/1.0/instances/{}", encode(name.as_str()))
}

impl Client {
    /// Names of all instances.
    pub async fn instance_names(&self) -> Result<Vec<String>> {
        let urls: Vec<String> = self.get("/1.0/instances").await?;
        Ok(urls
            .into_iter()
            .filter_map(|u| u.rsplit('/').next().map(|s| s.split('?').next().unwrap_or(s).to_string()))
            .collect())
    }

    /// All instances with their configuration and status (`recursion=1`: one request, no per-instance cost).
    pub async fn instances(&self) -> Result<Vec<Instance>> {
        self.sync(Request::new(Method::GET, "/1.0/instances").query("recursion", "1")).await
    }

    /// All instances with full live state (`recursion=2`; the daemon spends about 25 ms per instance on state).
    pub async fn instances_full(&self) -> Result<Vec<Instance>> {
        self.sync(Request::new(Method::GET, "/1.0/instances").query("recursion", "2")).await
    }

    /// Instances matching a server-side filter (e.g. `config.user.gbo.tenant eq acme`; needs `api_filtering`).
    pub async fn instances_filtered(&self, filter: &str) -> Result<Vec<Instance>> {
        self.sync(Request::new(Method::GET, "/1.0/instances").query("recursion", "1").query("filter", filter)).await
    }

    /// One instance.
    pub async fn instance(&self, name: &InstanceName) -> Result<Instance> {
        self.get(&instance_path(name)).await
    }

    /// One instance, `None` when it does not exist.
    pub async fn instance_opt(&self, name: &InstanceName) -> Result<Option<Instance>> {
        match self.instance(name).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One instance with its live state (`recursion=1` on the instance).
    pub async fn instance_full(&self, name: &InstanceName) -> Result<Instance> {
        self.sync(Request::new(Method::GET, instance_path(name)).query("recursion", "1")).await
    }

    /// One instance and its ETag, for a safe read-modify-write.
    pub async fn instance_with_etag(&self, name: &InstanceName) -> Result<(Instance, Option<String>)> {
        let path = instance_path(name);
        let answer = self.send(Request::new(Method::GET, path.clone())).await?;
        let instance = crate::client::decode_metadata(&path, answer.envelope.metadata)?;
        Ok((instance, answer.etag))
    }

    /// Create an instance and wait for it (`start` in the request decides whether it also starts).
    ///
    /// Daemons without the `instance_create_start` extension (LXD 5.0.x) silently ignore `start`; there the
    /// instance is created stopped and then started, as `lxc launch` does.
    pub async fn create_instance(&self, request: &CreateInstance) -> Result<()> {
        if request.start && !self.has_extension("instance_create_start").await? {
            let stopped = request.clone().start(false);
            let req = Request::new(Method::POST, "/1.0/instances").json(&stopped)?;
            self.run_operation(req, LIFECYCLE_TIMEOUT).await?;
            return self.set_state(&request.name, StateAction::Start, 30, false).await;
        }
        let req = Request::new(Method::POST, "/1.0/instances").json(request)?;
        self.run_operation(req, LIFECYCLE_TIMEOUT).await?;
        Ok(())
    }

    /// Send the creation request and return its operation without waiting (wait with
    /// [`Client::wait_operation`] or [`Client::wait_operation_events`]). `start` is sent as given: daemons without
    /// `instance_create_start` ignore it.
    pub async fn create_instance_operation(&self, request: &CreateInstance) -> Result<crate::operation::Operation> {
        self.start_operation(Request::new(Method::POST, "/1.0/instances").json(request)?).await
    }

    /// Replace the writable fields (`PUT`), guarded by `etag` when given (a stale one gives
    /// [`Error::PreconditionFailed`]).
    pub async fn put_instance(&self, name: &InstanceName, put: &InstancePut, etag: Option<&str>) -> Result<()> {
        let mut req = Request::new(Method::PUT, instance_path(name)).json(put)?;
        if let Some(etag) = etag {
            req = req.header("If-Match", etag)?;
        }
        self.run_operation(req, LIFECYCLE_TIMEOUT).await?;
        Ok(())
    }

    /// Read-modify-write with the ETag: `change` edits the writable fields; retried once on a concurrent change.
    /// Returns whether anything changed (no request is sent when nothing did).
    pub async fn update_instance<F>(&self, name: &InstanceName, mut change: F) -> Result<bool>
    where
        F: FnMut(&mut InstancePut),
    {
        for attempt in 0..3 {
            let (instance, etag) = self.instance_with_etag(name).await?;
            let before = instance.to_put();
            let mut after = before.clone();
            change(&mut after);
            if after == before {
                return Ok(false);
            }
            match self.put_instance(name, &after, etag.as_deref()).await {
                Err(e) if e.is_precondition_failed() && attempt < 2 => continue,
                other => return other.map(|_| true),
            }
        }
        Ok(true)
    }

    /// Merge fields (`PATCH`): e.g. `{"config": {"limits.cpu": "2"}}`.
    pub async fn patch_instance(&self, name: &InstanceName, patch: &serde_json::Value) -> Result<()> {
        let req = Request::new(Method::PATCH, instance_path(name)).json(patch)?;
        let answer = self.send(req).await?;
        if answer.envelope.kind == "async" {
            let op = crate::client::operation_from_answer(&instance_path(name), answer.envelope)?;
            self.wait_operation(&op.id, LIFECYCLE_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Add (or replace) a device on an instance.
    pub async fn add_instance_device(
        &self,
        name: &InstanceName,
        device: &DeviceName,
        config: DeviceConfig,
    ) -> Result<()> {
        let device = device.to_string();
        self.update_instance(name, |put| {
            put.devices.insert(device.clone(), config.clone());
        })
        .await?;
        Ok(())
    }

    /// Remove a device from an instance (no error when absent).
    pub async fn remove_instance_device(&self, name: &InstanceName, device: &DeviceName) -> Result<()> {
        let device = device.to_string();
        self.update_instance(name, |put| {
            put.devices.remove(&device);
        })
        .await?;
        Ok(())
    }

    /// Change the state and wait. `timeout` is the daemon-side timeout for stop/restart (seconds).
    pub async fn set_state(&self, name: &InstanceName, action: StateAction, timeout: i64, force: bool) -> Result<()> {
        let body = serde_json::json!({ "action": action.as_str(), "timeout": timeout, "force": force });
        let req = Request::new(Method::PUT, format!("{}/state", instance_path(name))).json(&body)?;
        self.run_operation(req, LIFECYCLE_TIMEOUT).await?;
        Ok(())
    }

    /// Live state.
    pub async fn instance_state(&self, name: &InstanceName) -> Result<InstanceState> {
        self.get(&format!("{}/state", instance_path(name))).await
    }

    /// Start unless running. Returns whether it was started.
    pub async fn ensure_running(&self, name: &InstanceName) -> Result<bool> {
        let instance = self.instance(name).await?;
        match instance.status.as_str() {
            "Running" => Ok(false),
            "Frozen" => self.set_state(name, StateAction::Unfreeze, 30, false).await.map(|_| true),
            _ => self.set_state(name, StateAction::Start, 30, false).await.map(|_| true),
        }
    }

    /// Stop unless stopped (clean shutdown within `timeout` seconds, then forced). Returns whether it was stopped.
    pub async fn ensure_stopped(&self, name: &InstanceName, timeout: i64) -> Result<bool> {
        let instance = self.instance(name).await?;
        if instance.status == "Stopped" {
            return Ok(false);
        }
        if instance.status == "Frozen" {
            self.set_state(name, StateAction::Unfreeze, 30, false).await?;
        }
        match self.set_state(name, StateAction::Stop, timeout, false).await {
            Ok(()) => Ok(true),
            Err(Error::OperationFailed { .. }) => {
                self.set_state(name, StateAction::Stop, timeout, true).await.map(|_| true)
            }
            Err(e) => Err(e),
        }
    }

    /// Delete an instance, stopping it first when running (`?force=true` where the daemon has
    /// `instance_force_delete`; LXD 5.0.2 lacks it, so we stop it ourselves).
    pub async fn delete_instance(&self, name: &InstanceName) -> Result<()> {
        let instance = self.instance(name).await?;
        if instance.status != "Stopped" {
            if self.has_extension("instance_force_delete").await? {
                let req = Request::new(Method::DELETE, instance_path(name)).query("force", "true");
                self.run_operation(req, LIFECYCLE_TIMEOUT).await?;
                return Ok(());
            }
            self.set_state(name, StateAction::Stop, 0, true).await?;
        }
        self.run_operation(Request::new(Method::DELETE, instance_path(name)), LIFECYCLE_TIMEOUT).await?;
        Ok(())
    }

    /// Delete when present; `Ok(false)` when there was nothing to delete.
    pub async fn delete_instance_if_exists(&self, name: &InstanceName) -> Result<bool> {
        match self.delete_instance(name).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Rename a stopped instance.
    pub async fn rename_instance(&self, name: &InstanceName, new_name: &InstanceName) -> Result<()> {
        let req = Request::new(Method::POST, instance_path(name)).json(&serde_json::json!({ "name": new_name }))?;
        self.run_operation(req, LIFECYCLE_TIMEOUT).await?;
        Ok(())
    }

    /// An instance's log files (`lxc console --show-log` reads `lxc.log`).
    pub async fn instance_logs(&self, name: &InstanceName) -> Result<Vec<String>> {
        let urls: Vec<String> = self.get(&format!("{}/logs", instance_path(name))).await?;
        Ok(urls.into_iter().filter_map(|u| u.rsplit('/').next().map(str::to_string)).collect())
    }

    /// Read one instance log file (`lxc.log`, `lxc.conf`, exec outputs), at most [`crate::ReadLimits::collected`].
    pub async fn instance_log(&self, name: &InstanceName, file: &str) -> Result<Vec<u8>> {
        let path = format!("{}/logs/{}", instance_path(name), encode(file));
        self.read_raw(Request::new(Method::GET, path), || format!("log {file} of {name}")).await
    }

    /// Fetch a raw (non-JSON) body whole, at most [`crate::ReadLimits::collected`]; `what` names it past the limit.
    pub(crate) async fn read_raw(&self, req: Request, what: impl FnOnce() -> String) -> Result<Vec<u8>> {
        let path = req.path.clone();
        let method = req.method.to_string();
        let response = self.send_raw(req).await?;
        if !response.status().is_success() {
            return Err(self.failure(response, &method, &path).await);
        }
        Ok(self.read_collected(response.into_body(), &method, &path, what).await?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_sources_from_lxc_remotes() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(InstanceSource::from_lxc_remote(dir.path(), "images", "debian/12").expect("no file"), None);
        std::fs::write(
            dir.path().join("config.yml"),
            "remotes:\n  images:\n    addr: https://images.linuxcontainers.org/\n    protocol: simplestreams\n  local:\n    addr: unix://\n  srv:\n    addr: https://127.0.0.1:8443\n    protocol: lxd\n  odd:\n    addr: https://h\n    protocol: oci\n",
        )
        .expect("write");
        let images =
            InstanceSource::from_lxc_remote(dir.path(), "images", "debian/12").expect("images").expect("known");
        assert_eq!(images, InstanceSource::simplestreams("https://images.linuxcontainers.org", "debian/12"));
        assert_eq!(
            InstanceSource::from_lxc_remote(dir.path(), "local", "gbo/x").expect("local"),
            Some(InstanceSource::alias("gbo/x"))
        );
        let srv = InstanceSource::from_lxc_remote(dir.path(), "srv", "a").expect("srv").expect("known");
        assert_eq!(srv.certificate, None);
        std::fs::create_dir_all(dir.path().join("servercerts")).expect("mkdir");
        std::fs::write(dir.path().join("servercerts/srv.crt"), "PEM").expect("write");
        let srv = InstanceSource::from_lxc_remote(dir.path(), "srv", "a").expect("srv").expect("known");
        assert_eq!(srv, InstanceSource::lxd_server("https://127.0.0.1:8443", "a", Some("PEM".into())));
        let json = serde_json::to_value(&srv).expect("json");
        assert_eq!(json["protocol"], "lxd");
        assert_eq!(json["mode"], "pull");
        assert_eq!(json["certificate"], "PEM");
        assert!(InstanceSource::from_lxc_remote(dir.path(), "odd", "a").expect_err("oci").to_string().contains("oci"));
        assert_eq!(InstanceSource::from_lxc_remote(dir.path(), "nope", "a").expect("unknown"), None);
    }
}
