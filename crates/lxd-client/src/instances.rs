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

/// How long lifecycle operations (create, start, stop, delete) may take by default, and how long a delete or state
/// change waits for another operation that holds the instance.
pub const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(300);

/// How many times [`Client::update_instance`] reads and writes before a concurrent writer's change is an error.
const UPDATE_ATTEMPTS: u32 = 20;
/// The pause before trying again when the instance is busy and no operation on it can be seen.
const BUSY_RETRY_PAUSE: Duration = Duration::from_millis(250);

/// An instance as `GET /1.0/instances/<name>` (or `recursion=1`/`2` lists) returns it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Instance {
    /// Name.
    pub name: String,
    /// Running, stopped, frozen, ...
    pub status: InstanceStatus,
    /// Numeric status (103 running, 102 stopped).
    pub status_code: i64,
    /// `container` or `virtual-machine`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Architecture.
    #[serde(deserialize_with = "null_as_default")]
    pub architecture: String,
    /// Local configuration keys (including the server's `volatile.*` and `image.*`).
    #[serde(deserialize_with = "null_as_default")]
    pub config: BTreeMap<String, String>,
    /// Local devices.
    #[serde(deserialize_with = "null_as_default")]
    pub devices: BTreeMap<String, DeviceConfig>,
    /// Configuration including profiles.
    #[serde(deserialize_with = "null_as_default")]
    pub expanded_config: BTreeMap<String, String>,
    /// Devices including profiles.
    #[serde(deserialize_with = "null_as_default")]
    pub expanded_devices: BTreeMap<String, DeviceConfig>,
    /// Profiles applied, in order.
    #[serde(deserialize_with = "null_as_default")]
    pub profiles: Vec<String>,
    /// Deleted when stopped.
    pub ephemeral: bool,
    /// Stateful.
    pub stateful: bool,
    /// Description.
    #[serde(deserialize_with = "null_as_default")]
    pub description: String,
    /// Creation time (RFC 3339).
    #[serde(deserialize_with = "null_as_default")]
    pub created_at: String,
    /// Last start (RFC 3339).
    #[serde(deserialize_with = "null_as_default")]
    pub last_used_at: String,
    /// Cluster member.
    #[serde(deserialize_with = "null_as_default")]
    pub location: String,
    /// Project.
    #[serde(deserialize_with = "null_as_default")]
    pub project: String,
    /// Live state, filled by `recursion=2` lists and [`Client::instance_full`].
    pub state: Option<InstanceState>,
}

/// A field LXD may send as `null` (an instance on an offline cluster member comes with null maps): its default.
fn null_as_default<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

impl Instance {
    /// Running.
    pub fn is_running(&self) -> bool {
        self.status == InstanceStatus::Running
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

/// The status of an instance, as LXD reports it (`Running`, `Stopped`, ...).
///
/// Compares with LXD's own text (`status == "Running"`) as well as with the variants. A status this crate does not
/// name is kept as [`InstanceStatus::Other`] with LXD's text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InstanceStatus {
    /// Running.
    Running,
    /// Stopped.
    Stopped,
    /// Frozen (its processes paused).
    Frozen,
    /// In error (LXD could not read its state).
    Error,
    /// Another status (`Starting`, `Stopping`, `Ready`, ...): LXD's text, empty when the answer had none.
    Other(String),
}

impl InstanceStatus {
    /// LXD's text for it.
    pub fn as_str(&self) -> &str {
        match self {
            InstanceStatus::Running => "Running",
            InstanceStatus::Stopped => "Stopped",
            InstanceStatus::Frozen => "Frozen",
            InstanceStatus::Error => "Error",
            InstanceStatus::Other(text) => text,
        }
    }

    /// Read LXD's text (case-insensitive for the named statuses).
    pub fn parse(text: &str) -> Self {
        match text.to_ascii_lowercase().as_str() {
            "running" => InstanceStatus::Running,
            "stopped" => InstanceStatus::Stopped,
            "frozen" => InstanceStatus::Frozen,
            "error" => InstanceStatus::Error,
            _ => InstanceStatus::Other(text.to_string()),
        }
    }
}

impl Default for InstanceStatus {
    /// An empty status: what a hand-built [`Instance`] starts with.
    fn default() -> Self {
        InstanceStatus::Other(String::new())
    }
}

impl std::fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for InstanceStatus {
    fn from(text: &str) -> Self {
        Self::parse(text)
    }
}

impl PartialEq<str> for InstanceStatus {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for InstanceStatus {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for InstanceStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for InstanceStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(deserializer)?))
    }
}

/// `GET /1.0/instances/<name>/state`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct InstanceState {
    /// Status.
    pub status: InstanceStatus,
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

/// What a state change does (`PUT /1.0/instances/<n>/state`).
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
    /// LXD's word for it (`start`, `stop`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            StateAction::Start => "start",
            StateAction::Stop => "stop",
            StateAction::Restart => "restart",
            StateAction::Freeze => "freeze",
            StateAction::Unfreeze => "unfreeze",
        }
    }
}

/// The default [`StateChange::timeout`]: how long a stop or restart waits for a clean shutdown.
pub const STATE_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A state change for [`Client::set_state`]: what to do, how long a stop or restart waits for the instance to shut
/// down cleanly, and whether to force it.
///
/// ```
/// use std::time::Duration;
/// use lxd_client::{StateAction, StateChange};
/// let stop = StateChange::new(StateAction::Stop).timeout(Duration::from_secs(10)).force(true);
/// assert_eq!((stop.action, stop.timeout, stop.force), (StateAction::Stop, Duration::from_secs(10), true));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateChange {
    /// What to do.
    pub action: StateAction,
    /// How long a stop or restart waits for a clean shutdown (the daemon counts whole seconds: rounded up).
    pub timeout: Duration,
    /// Kill instead of a clean shutdown (stop, restart).
    pub force: bool,
}

impl StateChange {
    /// `action`, not forced, with [`STATE_CHANGE_TIMEOUT`].
    pub fn new(action: StateAction) -> Self {
        Self { action, timeout: STATE_CHANGE_TIMEOUT, force: false }
    }

    /// Wait at most `timeout` for a clean shutdown.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Force it (`true`): kill rather than shut down cleanly.
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// The timeout in the daemon's unit: whole seconds, rounded up.
    fn timeout_seconds(&self) -> i64 {
        let seconds = self.timeout.as_secs() + u64::from(self.timeout.subsec_nanos() > 0);
        i64::try_from(seconds).unwrap_or(i64::MAX)
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
    ///
    /// ```no_run
    /// # async fn demo(lxd: &lxd_client::Client) -> lxd_client::Result<()> {
    /// use lxd_client::{CreateInstance, InstanceName, InstanceSource};
    /// let name = InstanceName::new("default-cache")?;
    /// let request = CreateInstance::container(name.clone(), InstanceSource::alias("gbo/debian-12"))
    ///     .config("user.gbo.role", "cache")
    ///     .start(true);
    /// lxd.create_instance(&request).await?;
    /// assert!(lxd.instance(&name).await?.is_running());
    /// # Ok(()) }
    /// ```
    pub async fn create_instance(&self, request: &CreateInstance) -> Result<()> {
        if request.start && !self.has_extension("instance_create_start").await? {
            let stopped = request.clone().start(false);
            let req = Request::new(Method::POST, "/1.0/instances").json(&stopped)?;
            self.run_operation(req, LIFECYCLE_TIMEOUT).await?;
            return self.set_state(&request.name, &StateChange::new(StateAction::Start)).await;
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

    /// Read-modify-write with the ETag: `change` edits the writable fields; retried (up to 20 times) when a
    /// concurrent writer changed the instance first (a stale ETag, or LXD refusing a write that met a concurrent update).
    /// Returns whether anything changed (no request is sent when nothing did).
    ///
    /// ```no_run
    /// # async fn demo(lxd: &lxd_client::Client, name: &lxd_client::InstanceName) -> lxd_client::Result<()> {
    /// let changed = lxd
    ///     .update_instance(name, |put| {
    ///         put.config.insert("limits.cpu".into(), "2".into());
    ///     })
    ///     .await?;
    /// # let _ = changed; Ok(()) }
    /// ```
    pub async fn update_instance<F>(&self, name: &InstanceName, mut change: F) -> Result<bool>
    where
        F: FnMut(&mut InstancePut),
    {
        for attempt in 0..UPDATE_ATTEMPTS {
            let (instance, etag) = self.instance_with_etag(name).await?;
            let before = instance.to_put();
            let mut after = before.clone();
            change(&mut after);
            if after == before {
                return Ok(false);
            }
            match self.put_instance(name, &after, etag.as_deref()).await {
                // Another writer got there first: read its result and apply the change to it, after a pause that
                // grows a little with each attempt so that writers in step fall out of it.
                Err(e) if (e.is_precondition_failed() || e.is_superseded()) && attempt + 1 < UPDATE_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(10 * (u64::from(attempt) + 1))).await;
                    continue;
                }
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

    /// Change the state and wait for it. When another operation holds the instance (LXD answers "Instance is busy
    /// running a ... operation"), this waits for it to finish (at most [`LIFECYCLE_TIMEOUT`]) and tries again.
    ///
    /// Starting a running instance or stopping a stopped one is an error from the daemon: use
    /// [`Client::ensure_running`] and [`Client::ensure_stopped`] to be idempotent.
    ///
    /// ```no_run
    /// # async fn demo(lxd: &lxd_client::Client) -> lxd_client::Result<()> {
    /// use std::time::Duration;
    /// use lxd_client::{InstanceName, StateAction, StateChange};
    /// let name = InstanceName::new("default-cache")?;
    /// lxd.set_state(&name, &StateChange::new(StateAction::Restart).timeout(Duration::from_secs(60))).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_state(&self, name: &InstanceName, change: &StateChange) -> Result<()> {
        self.when_not_busy(name, || self.set_state_once(name, change)).await
    }

    async fn set_state_once(&self, name: &InstanceName, change: &StateChange) -> Result<()> {
        let body = serde_json::json!({
            "action": change.action.as_str(),
            "timeout": change.timeout_seconds(),
            "force": change.force,
        });
        let req = Request::new(Method::PUT, format!("{}/state", instance_path(name))).json(&body)?;
        self.run_operation(req, LIFECYCLE_TIMEOUT.max(change.timeout + Duration::from_secs(60))).await?;
        Ok(())
    }

    /// Run `attempt`; when the daemon refuses it while another operation holds the instance (LXD says "Instance is
    /// busy running a ... operation", or judges by a state that operation is about to change: "The instance is
    /// already running" while it stops), wait for the instance's operations to finish and run it again, within
    /// [`LIFECYCLE_TIMEOUT`] in all. A refusal with no operation in flight is returned as it is.
    async fn when_not_busy<T, F, Fut>(&self, name: &InstanceName, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + LIFECYCLE_TIMEOUT;
        loop {
            let error = match attempt().await {
                Err(e @ (Error::OperationFailed { .. } | Error::Api { .. } | Error::Conflict { .. })) => e,
                other => return other,
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(error);
            }
            if self.wait_instance_tasks(name, left).await? {
                tracing::debug!(instance = %name, %error, "refused while an operation held the instance: trying again");
                continue;
            }
            if !error.is_instance_busy() {
                return Err(error);
            }
            // Busy, with no operation anyone can see: the daemon holds the instance's lock past the end of an
            // operation (a container's stop hook runs after its stop operation has finished) or for a shutdown
            // begun inside it. There is nothing to wait on but the lock itself, so try again shortly.
            tracing::debug!(instance = %name, %error, "instance busy without a visible operation: trying again");
            tokio::time::sleep(BUSY_RETRY_PAUSE.min(left)).await;
        }
    }

    /// Live state.
    pub async fn instance_state(&self, name: &InstanceName) -> Result<InstanceState> {
        self.get(&format!("{}/state", instance_path(name))).await
    }

    /// Start unless running (unfreeze when frozen). Returns whether it changed anything.
    pub async fn ensure_running(&self, name: &InstanceName) -> Result<bool> {
        self.when_not_busy(name, || async {
            let instance = self.instance(name).await?;
            match instance.status {
                InstanceStatus::Running => Ok(false),
                InstanceStatus::Frozen => {
                    self.set_state_once(name, &StateChange::new(StateAction::Unfreeze)).await.map(|_| true)
                }
                _ => self.set_state_once(name, &StateChange::new(StateAction::Start)).await.map(|_| true),
            }
        })
        .await
    }

    /// Stop unless stopped: a clean shutdown within `timeout`, forced when that fails. Returns whether it stopped
    /// it.
    pub async fn ensure_stopped(&self, name: &InstanceName, timeout: Duration) -> Result<bool> {
        self.when_not_busy(name, || async {
            let instance = self.instance(name).await?;
            if instance.status == InstanceStatus::Stopped {
                return Ok(false);
            }
            if instance.status == InstanceStatus::Frozen {
                self.set_state_once(name, &StateChange::new(StateAction::Unfreeze)).await?;
            }
            let stop = StateChange::new(StateAction::Stop).timeout(timeout);
            match self.set_state_once(name, &stop).await {
                Ok(()) => Ok(true),
                Err(e) if e.is_instance_busy() => Err(e),
                Err(Error::OperationFailed { .. }) => self.set_state_once(name, &stop.force(true)).await.map(|_| true),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Delete an instance, stopping it first when running (`?force=true` where the daemon has
    /// `instance_force_delete`; LXD 5.0.2 lacks it, so it is stopped first). When another operation holds the
    /// instance (a stop in flight), this waits for it (at most [`LIFECYCLE_TIMEOUT`]) and tries again.
    pub async fn delete_instance(&self, name: &InstanceName) -> Result<()> {
        self.when_not_busy(name, || self.delete_instance_once(name)).await
    }

    async fn delete_instance_once(&self, name: &InstanceName) -> Result<()> {
        let instance = self.instance(name).await?;
        if instance.status != InstanceStatus::Stopped {
            if self.has_extension("instance_force_delete").await? {
                let req = Request::new(Method::DELETE, instance_path(name)).query("force", "true");
                self.run_operation(req, LIFECYCLE_TIMEOUT).await?;
                return Ok(());
            }
            let kill = StateChange::new(StateAction::Stop).timeout(Duration::ZERO).force(true);
            self.set_state_once(name, &kill).await?;
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

    /// The console log of a container (`GET /1.0/instances/<name>/console`, what `lxc console --show-log` prints):
    /// what its init wrote to the console, kept by LXD also while it is stopped, at most
    /// [`crate::ReadLimits::collected`].
    pub async fn console_log(&self, name: &InstanceName) -> Result<Vec<u8>> {
        let path = format!("{}/console", instance_path(name));
        self.read_raw(Request::new(Method::GET, path), || format!("the console log of {name}")).await
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

#[cfg(test)]
mod null_fields {
    #[test]
    fn an_instance_on_an_offline_member_with_null_maps_decodes() {
        // As LXD 5.0 lists an instance whose member is offline.
        let json = r#"{"name":"a","status":"Error","config":null,"devices":null,"expanded_config":null,
            "expanded_devices":null,"profiles":null,"location":"m3","architecture":null}"#;
        let i: super::Instance = serde_json::from_str(json).expect("decodes");
        assert_eq!(i.location, "m3");
        assert!(i.config.is_empty() && i.profiles.is_empty());
    }
}
