//! Desired state, observed state, and the pure diff between them: the plan.
//!
//! Nothing here does I/O: [`diff`] takes what the catalogue wants ([`Desired`]) and what LXD and the host have
//! ([`Observed`]) and returns the steps, each with the reason it is needed. Steps are idempotent and ordered; a
//! plan that is empty means the component is converged.

use std::collections::BTreeMap;
use std::path::PathBuf;

use gbo_components::{ComponentSpec, InitPhase, RenderedFile, Role};
use lxd_client::{DeviceConfig, Instance};
use sha2::{Digest, Sha256};

use crate::inventory::{self, DEVICE_PREFIX};

/// Config keys gbo manages besides `user.gbo.*`: a difference is drift, an extra one is removed.
pub const MANAGED_CONFIG_KEYS: &[&str] = &[
    "limits.cpu",
    "limits.memory",
    PRIVILEGED,
    "boot.autostart",
    "boot.autostart.priority",
    "boot.host_shutdown_timeout",
];

/// `security.privileged`: changing it on an existing instance is a [`Action::Remap`], never a plain config step.
pub const PRIVILEGED: &str = "security.privileged";

/// Artifacts installed in the container, recorded as `name@version:sha256` entries.
pub const KEY_ARTIFACTS: &str = "user.gbo.artifacts";

/// What a provisioning run owes (units to restart, [`OWED_RELOAD`]), comma separated: written before it changes
/// the files that call for them, removed when it records the provisioned hash. Once a file is written its diff is
/// gone, so without this a run killed between a file and its restart would leave the service on the old file and
/// every later plan empty; with it, the next plan restarts what is owed.
pub const KEY_OWED: &str = "user.gbo.owed";

/// The entries recorded under [`KEY_OWED`] in an instance's config.
pub fn owed_entries(config: &BTreeMap<String, String>) -> Vec<&str> {
    config.get(KEY_OWED).map(|s| s.split(',').filter(|x| !x.is_empty()).collect()).unwrap_or_default()
}

/// The [`KEY_OWED`] entry for `systemctl daemon-reload`.
pub const OWED_RELOAD: &str = "daemon-reload";

/// A host directory to create and chown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDir {
    /// Host path.
    pub path: PathBuf,
    /// Owner uid inside the container (the host owner is idmap base + this).
    pub uid: u32,
    /// Owner gid inside the container.
    pub gid: u32,
}

/// A custom volume to create and whose mount point to chown (`storage = "volumes"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDir {
    /// The pool.
    pub pool: String,
    /// The volume (`<tenant>-<role>-<kind>`).
    pub volume: String,
    /// Where it is mounted inside the container.
    pub path: String,
    /// Owner uid inside the container.
    pub uid: u32,
    /// Owner gid inside the container.
    pub gid: u32,
}

/// A rendered file and where it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedFile {
    /// The rendered file (path inside the container).
    pub file: RenderedFile,
    /// Where it is written on the host when it lives on a mount (`None`: pushed into the root filesystem).
    pub host_path: Option<PathBuf>,
}

/// What the catalogue wants for one component.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The role.
    pub role: Role,
    /// The instance name.
    pub instance: String,
    /// The image alias to create from.
    pub image: String,
    /// The tenant's stack dir: every host directory and host file below is reached from it without following a
    /// link (`hostfs`).
    pub stack_dir: PathBuf,
    /// The full spec.
    pub spec: ComponentSpec,
    /// Config keys gbo sets (`user.gbo.*` except the provisioned hash, limits, security).
    pub config: BTreeMap<String, String>,
    /// gbo's devices (`gbo-*`).
    pub devices: BTreeMap<String, DeviceConfig>,
    /// Host directories (data, conf, logs) in host mode.
    pub host_dirs: Vec<HostDir>,
    /// Custom volumes (data, conf, logs) in volumes mode.
    pub volumes: Vec<VolumeDir>,
    /// Rendered files, placed.
    pub files: Vec<PlacedFile>,
    /// Artifacts as `name@version:sha256` (sha256 of the verified download, or `unverified`).
    pub artifacts: Vec<String>,
    /// Hash of everything provisioning puts into the container.
    pub provisioned_hash: String,
}

/// The state of a file (host or container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid (container view).
    pub uid: u32,
    /// Owner gid (container view).
    pub gid: u32,
    /// Whether the path is a symlink (never written through: replaced).
    pub symlink: bool,
}

/// A systemd unit's state inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitState {
    /// `systemctl is-active` (`active`, `inactive`, `failed`, ...).
    pub active: String,
    /// `systemctl is-enabled` (`enabled`, `disabled`, `masked`, `not-found`, ...).
    pub enabled: String,
}

/// What one exec inside a running container reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// Root filesystem files by path (`None`: missing).
    pub files: BTreeMap<String, Option<FileState>>,
    /// Units by name.
    pub units: BTreeMap<String, UnitState>,
    /// Paths whose existence marks init steps done.
    pub creates: BTreeMap<String, bool>,
    /// Owners (container view) of volume mount points (`None`: missing or not a directory).
    pub dirs: BTreeMap<String, Option<(u32, u32)>>,
}

/// What LXD and the host have for one component.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The instance, when it exists.
    pub instance: Option<Instance>,
    /// The idmap base of the instance (host uid of container uid 0), when it exists.
    pub idmap_base: Option<u32>,
    /// Host directories: `None` missing, else host (uid, gid).
    pub host_dirs: BTreeMap<PathBuf, Option<(u32, u32)>>,
    /// Host-side files (on mounts), in container terms (uid/gid shifted back by the idmap base).
    pub host_files: BTreeMap<PathBuf, Option<FileState>>,
    /// Custom volumes by name: whether each exists on its pool.
    pub volumes: BTreeMap<String, bool>,
    /// The probe, when the container was running.
    pub probe: Option<Probe>,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Create a host directory.
    CreateHostDir {
        /// Host path.
        path: PathBuf,
    },
    /// Create a custom volume (`storage = "volumes"`).
    CreateVolume {
        /// Pool.
        pool: String,
        /// Volume.
        volume: String,
    },
    /// Give a volume's mount point to the role's service user (an exec of `chown` inside the container, which
    /// resolves the path there).
    ChownVolume {
        /// Mount point inside the container.
        path: String,
        /// Owner inside the container.
        uid: u32,
        /// Group inside the container.
        gid: u32,
    },
    /// Create the instance, stopped, with its config and devices.
    CreateInstance {
        /// Image alias.
        image: String,
    },
    /// Move an existing instance to (or from) privileged mode: stop it, set or unset `security.privileged`, shift
    /// the owners of its host directories from the old idmap base to the new one (LXD shifts only the root
    /// filesystem), start it again if it ran.
    Remap {
        /// The new value.
        privileged: bool,
    },
    /// Shift the owners of everything under a host directory from one idmap base to the instance's (a remap that
    /// was interrupted, or an instance whose idmap changed by hand): ids in the old base's range move, others stay.
    ShiftHostDir {
        /// Host path.
        path: PathBuf,
        /// The idmap base its owners were written for.
        from_base: u32,
    },
    /// Chown a host directory to the container's idmap.
    ChownHostDir {
        /// Host path.
        path: PathBuf,
        /// Owner inside the container.
        uid: u32,
        /// Group inside the container.
        gid: u32,
    },
    /// Set a config key.
    SetConfig {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Remove a config key.
    UnsetConfig {
        /// Key.
        key: String,
    },
    /// Add a device.
    AddDevice {
        /// Device name.
        name: String,
    },
    /// Replace a device whose settings differ.
    ReplaceDevice {
        /// Device name.
        name: String,
    },
    /// Remove a device gbo no longer wants.
    RemoveDevice {
        /// Device name.
        name: String,
    },
    /// Start the instance.
    StartInstance,
    /// Provision after start (the container was not running, so files were not compared yet).
    Provision,
    /// Write a file on a host mount.
    WriteHostFile {
        /// Path inside the container.
        path: String,
        /// Host path.
        host_path: PathBuf,
    },
    /// Push a file into the container's root filesystem.
    PushFile {
        /// Path inside the container.
        path: String,
    },
    /// Download, verify and push an artifact.
    InstallArtifact {
        /// Name.
        name: String,
        /// Version.
        version: String,
        /// Path inside the container.
        path: String,
    },
    /// Mask a vendor unit.
    MaskUnit {
        /// Unit.
        unit: String,
    },
    /// `systemctl daemon-reload`.
    DaemonReload,
    /// Run a one-time init step.
    RunInit {
        /// Step name.
        name: String,
        /// Before or after the services start.
        after_start: bool,
    },
    /// Enable and start a unit.
    StartUnit {
        /// Unit.
        unit: String,
    },
    /// Restart a unit whose inputs changed.
    RestartUnit {
        /// Unit.
        unit: String,
    },
    /// Record the provisioned hash (and artifacts) on the instance.
    RecordProvisioned,
}

/// A step and why it is needed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// What.
    #[serde(flatten)]
    pub action: Action,
    /// Why.
    pub reason: String,
}

impl Step {
    fn new(action: Action, reason: impl Into<String>) -> Self {
        Self { action, reason: reason.into() }
    }

    /// One line for people: `+ create instance acme-tables from gbo/debian-12`.
    pub fn describe(&self) -> String {
        match &self.action {
            Action::CreateHostDir { path } => format!("+ host dir {}", path.display()),
            Action::CreateVolume { pool, volume } => format!("+ volume {volume} on pool {pool}"),
            Action::ChownVolume { path, uid, gid } => format!("~ chown volume at {path} to {uid}:{gid}"),
            Action::CreateInstance { image } => format!("+ create instance from {image}"),
            Action::Remap { privileged: true } => "~ make the instance privileged (stop, remap its data, start)".into(),
            Action::Remap { privileged: false } => {
                "~ make the instance unprivileged (stop, remap its data, start)".into()
            }
            Action::ShiftHostDir { path, from_base } => {
                format!("~ shift the owners under {} from idmap base {from_base}", path.display())
            }
            Action::ChownHostDir { path, uid, gid } => format!("~ chown {} to container {uid}:{gid}", path.display()),
            Action::SetConfig { key, value } => format!("~ config {key} = {value:?}"),
            Action::UnsetConfig { key } => format!("- config {key}"),
            Action::AddDevice { name } => format!("+ device {name}"),
            Action::ReplaceDevice { name } => format!("~ device {name}"),
            Action::RemoveDevice { name } => format!("- device {name}"),
            Action::StartInstance => "> start instance".to_string(),
            Action::Provision => "~ provision files and services after start".to_string(),
            Action::WriteHostFile { path, .. } => format!("~ file {path} (host mount)"),
            Action::PushFile { path } => format!("~ file {path}"),
            Action::InstallArtifact { name, version, path } => format!("+ artifact {name} {version} -> {path}"),
            Action::MaskUnit { unit } => format!("~ mask {unit}"),
            Action::DaemonReload => "> systemctl daemon-reload".to_string(),
            Action::RunInit { name, .. } => format!("> init: {name}"),
            Action::StartUnit { unit } => format!("> start {unit}"),
            Action::RestartUnit { unit } => format!("> restart {unit}"),
            Action::RecordProvisioned => "~ record provisioned hash".to_string(),
        }
    }
}

/// The plan of one component.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentPlan {
    /// Role.
    pub role: Role,
    /// Instance.
    pub instance: String,
    /// The cluster member it is on (or goes to: a member, `@group`, or LXD's scheduler); absent off a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Steps in order; empty when converged.
    pub steps: Vec<Step>,
}

/// The host uid of container uid `uid` for an idmap base.
pub fn host_id(base: u32, id: u32) -> u32 {
    base.saturating_add(id)
}

/// Parse the idmap base (host id of container uid 0) from an instance's `volatile.idmap.next` (or the last
/// state); privileged containers have none: 0.
pub fn idmap_base(instance: &Instance) -> Option<u32> {
    if instance.config.get("security.privileged").map(String::as_str) == Some("true") {
        return Some(0);
    }
    for key in ["volatile.last_state.idmap", "volatile.idmap.next"] {
        let Some(text) = instance.config.get(key) else { continue };
        let Ok(entries) = serde_json::from_str::<Vec<serde_json::Value>>(text) else { continue };
        for entry in entries {
            let is_uid = entry.get("Isuid").and_then(|v| v.as_bool()).unwrap_or(false);
            let ns = entry.get("Nsid").and_then(|v| v.as_u64());
            let host = entry.get("Hostid").and_then(|v| v.as_u64());
            if let (true, Some(0), Some(host)) = (is_uid, ns, host) {
                return u32::try_from(host).ok();
            }
        }
    }
    None
}

/// Hash of everything provisioning puts into a container: files (path, mode, owner, content), units, masked
/// units, init steps and artifacts.
pub fn provisioned_hash(spec: &ComponentSpec, artifacts: &[String]) -> String {
    let mut hasher = Sha256::new();
    for file in &spec.files {
        hasher.update(format!("file {} {:o} {}:{} {}\n", file.path, file.mode, file.uid, file.gid, file.sha256()));
    }
    for unit in &spec.units {
        hasher.update(format!("unit {unit}\n"));
    }
    for unit in &spec.masked_units {
        hasher.update(format!("mask {unit}\n"));
    }
    for step in &spec.init {
        hasher.update(format!("init {} {:?} {}\n", step.creates, step.phase, step.command.join(" ")));
    }
    for artifact in artifacts {
        hasher.update(format!("artifact {artifact}\n"));
    }
    hex::encode(hasher.finalize())
}

/// The infrastructure part of the plan: host dirs, instance, config, devices, start. Provisioning steps follow
/// from [`provision_steps`].
pub fn diff(desired: &Desired, observed: &Observed) -> Vec<Step> {
    let mut steps = Vec::new();
    for dir in &desired.host_dirs {
        if observed.host_dirs.get(&dir.path).copied().flatten().is_none() {
            steps.push(Step::new(Action::CreateHostDir { path: dir.path.clone() }, "missing on the host"));
        }
    }
    for volume in &desired.volumes {
        if !observed.volumes.get(&volume.volume).copied().unwrap_or(false) {
            steps.push(Step::new(
                Action::CreateVolume { pool: volume.pool.clone(), volume: volume.volume.clone() },
                format!("missing on pool {}", volume.pool),
            ));
        }
    }
    let Some(instance) = &observed.instance else {
        steps.push(Step::new(Action::CreateInstance { image: desired.image.clone() }, "no such instance"));
        for dir in &desired.host_dirs {
            steps.push(Step::new(
                Action::ChownHostDir { path: dir.path.clone(), uid: dir.uid, gid: dir.gid },
                "owned by the container's service user before the first start",
            ));
        }
        steps.push(Step::new(Action::StartInstance, "new instance"));
        steps.push(Step::new(Action::Provision, "new instance"));
        return steps;
    };
    if let Some(base) = observed.idmap_base {
        for dir in &desired.host_dirs {
            let want = (host_id(base, dir.uid), host_id(base, dir.gid));
            match observed.host_dirs.get(&dir.path).copied().flatten() {
                Some(have) if have == want => {}
                Some((uid, gid)) => match other_base(uid, gid, dir) {
                    // Owned by the same container ids under another idmap base: everything under it moves.
                    Some(from_base) => steps.push(Step::new(
                        Action::ShiftHostDir { path: dir.path.clone(), from_base },
                        format!("owned by host {uid}:{gid}, written under idmap base {from_base}; the instance's base is {base}"),
                    )),
                    None => steps.push(Step::new(
                        Action::ChownHostDir { path: dir.path.clone(), uid: dir.uid, gid: dir.gid },
                        format!("owned by host {uid}:{gid}, expected {}:{}", want.0, want.1),
                    )),
                },
                None => steps.push(Step::new(
                    Action::ChownHostDir { path: dir.path.clone(), uid: dir.uid, gid: dir.gid },
                    "created this run",
                )),
            }
        }
    }
    let privileged = |config: &BTreeMap<String, String>| config.get(PRIVILEGED).is_some_and(|v| v == "true");
    if privileged(&desired.config) != privileged(&instance.config) {
        let want = privileged(&desired.config);
        steps.push(Step::new(
            Action::Remap { privileged: want },
            if want {
                "the tenant file asks for a privileged container ([system] privileged = true)"
            } else {
                "privileged, but the tenant file does not ask for it (root inside would be root on the host)"
            },
        ));
    }
    for (key, value) in &desired.config {
        if key == PRIVILEGED && privileged(&desired.config) != privileged(&instance.config) {
            continue;
        }
        match instance.config.get(key) {
            Some(v) if v == value => {}
            Some(v) => {
                steps.push(Step::new(Action::SetConfig { key: key.clone(), value: value.clone() }, format!("is {v:?}")))
            }
            None => steps.push(Step::new(Action::SetConfig { key: key.clone(), value: value.clone() }, "not set")),
        }
    }
    for key in MANAGED_CONFIG_KEYS {
        if *key == PRIVILEGED && privileged(&desired.config) != privileged(&instance.config) {
            continue;
        }
        if instance.config.contains_key(*key) && !desired.config.contains_key(*key) {
            steps.push(Step::new(
                Action::UnsetConfig { key: (*key).to_string() },
                "set on the instance but not in the tenant file",
            ));
        }
    }
    for (name, config) in &desired.devices {
        match instance.devices.get(name) {
            Some(have) if have == config => {}
            Some(have) => steps.push(Step::new(
                Action::ReplaceDevice { name: name.clone() },
                format!("differs: {}", describe_device_change(have, config)),
            )),
            None => steps.push(Step::new(Action::AddDevice { name: name.clone() }, "missing (removed by hand?)")),
        }
    }
    for name in instance.devices.keys() {
        if name.starts_with(DEVICE_PREFIX) && !desired.devices.contains_key(name) {
            steps.push(Step::new(Action::RemoveDevice { name: name.clone() }, "gbo device no longer in the catalogue"));
        }
    }
    if !instance.is_running() {
        steps.push(Step::new(Action::StartInstance, format!("instance is {}", instance.status)));
        steps.push(Step::new(Action::Provision, "files and services are compared once it runs"));
        return steps;
    }
    match &observed.probe {
        Some(probe) => steps.extend(provision_steps(desired, observed, probe, instance)),
        None => steps.push(Step::new(Action::Provision, "not probed")),
    }
    steps
}

/// The idmap base under which host ids `(uid, gid)` are the container ids of `dir`, when that is one base for
/// both and not the instance's own (checked by the caller).
fn other_base(uid: u32, gid: u32, dir: &HostDir) -> Option<u32> {
    let base = uid.checked_sub(dir.uid)?;
    (gid.checked_sub(dir.gid) == Some(base)).then_some(base)
}

fn describe_device_change(have: &DeviceConfig, want: &DeviceConfig) -> String {
    let mut parts = Vec::new();
    for (k, v) in want {
        match have.get(k) {
            Some(h) if h == v => {}
            Some(h) => parts.push(format!("{k} {h} -> {v}")),
            None => parts.push(format!("{k} missing")),
        }
    }
    for k in have.keys() {
        if !want.contains_key(k) {
            parts.push(format!("{k} extra"));
        }
    }
    parts.join(", ")
}

/// Provisioning steps for a running container: files, artifacts, masks, init, units, record.
pub fn provision_steps(desired: &Desired, observed: &Observed, probe: &Probe, instance: &Instance) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut restarts: Vec<String> = Vec::new();
    let mut reload = false;
    let owed = owed_entries(&instance.config);
    for volume in &desired.volumes {
        match probe.dirs.get(&volume.path).copied().flatten() {
            Some(have) if have == (volume.uid, volume.gid) => {}
            have => steps.push(Step::new(
                Action::ChownVolume { path: volume.path.clone(), uid: volume.uid, gid: volume.gid },
                match have {
                    Some((uid, gid)) => format!("owned by {uid}:{gid}"),
                    None => "not a directory yet".to_string(),
                },
            )),
        }
    }
    for placed in &desired.files {
        let file = &placed.file;
        let have = match &placed.host_path {
            Some(host) => observed.host_files.get(host).cloned().flatten(),
            None => probe.files.get(&file.path).cloned().flatten(),
        };
        let reason = match have {
            None => Some("missing".to_string()),
            Some(s) if s.symlink => Some("is a symlink".to_string()),
            Some(s) if s.sha256 != file.sha256() => Some("content differs (changed by hand?)".to_string()),
            Some(s) if s.mode != file.mode => Some(format!("mode {:o}, expected {:o}", s.mode, file.mode)),
            Some(s) if (s.uid, s.gid) != (file.uid, file.gid) => {
                Some(format!("owner {}:{}, expected {}:{}", s.uid, s.gid, file.uid, file.gid))
            }
            Some(_) => None,
        };
        if let Some(reason) = reason {
            let action = match &placed.host_path {
                Some(host) => Action::WriteHostFile { path: file.path.clone(), host_path: host.clone() },
                None => Action::PushFile { path: file.path.clone() },
            };
            steps.push(Step::new(action, reason));
            restarts.extend(file.restarts.iter().cloned());
            if file.path.starts_with("/etc/systemd/") || file.path.starts_with("/usr/local/lib/systemd/") {
                reload = true;
            }
        }
    }
    let recorded: Vec<&str> = instance
        .config
        .get(KEY_ARTIFACTS)
        .map(|s| s.split(',').filter(|x| !x.is_empty()).collect())
        .unwrap_or_default();
    for artifact in artifact_list(&desired.spec) {
        let entry = desired.artifacts.iter().find(|e| e.starts_with(&format!("{}@", artifact.name)));
        let present = probe.files.get(artifact.install_path).is_some_and(|s| s.is_some());
        let reason = if !present {
            Some("not installed".to_string())
        } else if entry.is_some_and(|e| !recorded.contains(&e.as_str())) {
            Some(format!("recorded {:?}, wanted {:?}", recorded.join(","), entry.map(String::as_str).unwrap_or("")))
        } else {
            None
        };
        if let Some(reason) = reason {
            steps.push(Step::new(
                Action::InstallArtifact {
                    name: artifact.name.to_string(),
                    version: artifact.version.clone(),
                    path: artifact.install_path.to_string(),
                },
                reason,
            ));
            restarts.extend(desired.spec.units.iter().cloned());
        }
    }
    for unit in &desired.spec.masked_units {
        let state = probe.units.get(unit).cloned().unwrap_or_default();
        if state.enabled != "masked" {
            steps.push(Step::new(
                Action::MaskUnit { unit: unit.clone() },
                format!("is {}", if state.enabled.is_empty() { "unknown" } else { &state.enabled }),
            ));
        }
    }
    if reload {
        steps.push(Step::new(Action::DaemonReload, "a unit file changed"));
    } else if owed.contains(&OWED_RELOAD) {
        steps.push(Step::new(Action::DaemonReload, "owed by an interrupted run (a unit file changed)"));
    }
    for init in desired.spec.init.iter().filter(|i| i.phase == InitPhase::BeforeStart) {
        if !probe.creates.get(&init.creates).copied().unwrap_or(false) {
            steps.push(Step::new(
                Action::RunInit { name: init.name.to_string(), after_start: false },
                format!("{} does not exist", init.creates),
            ));
        }
    }
    for unit in &desired.spec.units {
        let state = probe.units.get(unit).cloned().unwrap_or_default();
        if state.active != "active" || state.enabled != "enabled" {
            steps.push(Step::new(
                Action::StartUnit { unit: unit.clone() },
                format!("is {} and {}", or_unknown(&state.active), or_unknown(&state.enabled)),
            ));
        } else if restarts.contains(unit) {
            steps.push(Step::new(Action::RestartUnit { unit: unit.clone() }, "its inputs changed"));
        } else if owed.contains(&unit.as_str()) {
            steps.push(Step::new(
                Action::RestartUnit { unit: unit.clone() },
                "owed by an interrupted run (its inputs changed)",
            ));
        }
    }
    // Units of the image that a rendered file configures (systemd-journald): restarted when their file changed, or
    // when an interrupted run owes it.
    let mut system_units: Vec<String> = restarts
        .iter()
        .cloned()
        .chain(owed.iter().filter(|o| o.ends_with(".service") && **o != OWED_RELOAD).map(|o| o.to_string()))
        .filter(|u| !desired.spec.units.contains(u))
        .collect();
    system_units.sort();
    system_units.dedup();
    for unit in system_units {
        steps.push(Step::new(Action::RestartUnit { unit }, "its configuration changed"));
    }
    for init in desired.spec.init.iter().filter(|i| i.phase == InitPhase::AfterStart) {
        if !probe.creates.get(&init.creates).copied().unwrap_or(false) {
            steps.push(Step::new(
                Action::RunInit { name: init.name.to_string(), after_start: true },
                format!("{} does not exist", init.creates),
            ));
        }
    }
    let recorded_hash = instance.config.get(inventory::KEY_PROVISIONED_HASH);
    let recorded_artifacts = instance.config.get(KEY_ARTIFACTS).cloned().unwrap_or_default();
    if !steps.is_empty()
        || recorded_hash != Some(&desired.provisioned_hash)
        || recorded_artifacts != desired.artifacts.join(",")
        || !owed.is_empty()
    {
        steps.push(Step::new(
            Action::RecordProvisioned,
            if steps.is_empty() { "recorded hash differs" } else { "after provisioning" },
        ));
    }
    steps
}

/// The [`KEY_OWED`] entries of provisioning `steps`: the units they restart and, when they reload systemd, the
/// reload (`None`: they owe nothing, nothing needs recording). Units they start are not owed: a start comes after
/// every file of the run, and a unit that is not running is started by the next plan anyway.
pub fn owed(steps: &[Step]) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for step in steps {
        let entry = match &step.action {
            Action::RestartUnit { unit } => unit.as_str(),
            Action::DaemonReload => OWED_RELOAD,
            _ => continue,
        };
        if !out.iter().any(|e| e == entry) {
            out.push(entry.to_string());
        }
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "unknown"
    } else {
        s
    }
}

/// The artifacts of a spec.
pub fn artifact_list(spec: &ComponentSpec) -> Vec<&gbo_components::Artifact> {
    spec.install
        .iter()
        .filter_map(|i| match i {
            gbo_components::Install::Artifact(a) => Some(a),
            _ => None,
        })
        .collect()
}

/// The Debian packages of a spec.
pub fn packages(spec: &ComponentSpec) -> Vec<&'static str> {
    spec.install
        .iter()
        .flat_map(|i| match i {
            gbo_components::Install::DebianPackages(p) => p.clone(),
            _ => Vec::new(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gbo_components::{component, HostPorts, RenderContext, Secrets, TenantFile};

    fn desired_cache() -> Desired {
        let tenant = TenantFile::parse("tenant = \"acme\"\nroles = [\"cache\"]\n").expect("tenant file");
        let ports = HostPorts::seed(&tenant.roles);
        let secrets = Secrets::new().with("cache-password", "c".repeat(40));
        let spec = component(Role::Cache, &RenderContext { tenant: &tenant, secrets: &secrets, host_ports: &ports })
            .expect("spec");
        let mut devices = BTreeMap::new();
        devices.insert(
            "gbo-port-redis".to_string(),
            DeviceConfig::from([
                ("type".to_string(), "proxy".to_string()),
                ("listen".into(), "tcp:127.0.0.1:26379".into()),
                ("connect".into(), "tcp:127.0.0.1:6379".into()),
            ]),
        );
        let files = spec.files.iter().map(|f| PlacedFile { file: f.clone(), host_path: None }).collect();
        let provisioned_hash = provisioned_hash(&spec, &[]);
        Desired {
            role: Role::Cache,
            instance: "acme-cache".into(),
            image: "gbo/debian-12".into(),
            stack_dir: PathBuf::from("/srv/gbo-test-stack"),
            config: BTreeMap::from([(inventory::KEY_MANAGED.to_string(), "true".to_string())]),
            devices,
            host_dirs: Vec::new(),
            volumes: Vec::new(),
            files,
            artifacts: Vec::new(),
            provisioned_hash,
            spec,
        }
    }

    fn converged(desired: &Desired) -> (Observed, Instance) {
        let mut instance = Instance { name: desired.instance.clone(), status: "Running".into(), ..Default::default() };
        instance.config = desired.config.clone();
        instance.config.insert(inventory::KEY_PROVISIONED_HASH.into(), desired.provisioned_hash.clone());
        instance.devices = desired.devices.clone();
        let mut probe = Probe::default();
        for f in &desired.files {
            probe.files.insert(
                f.file.path.clone(),
                Some(FileState {
                    sha256: f.file.sha256(),
                    mode: f.file.mode,
                    uid: f.file.uid,
                    gid: f.file.gid,
                    symlink: false,
                }),
            );
        }
        for u in &desired.spec.units {
            probe.units.insert(u.clone(), UnitState { active: "active".into(), enabled: "enabled".into() });
        }
        for u in &desired.spec.masked_units {
            probe.units.insert(u.clone(), UnitState { active: "inactive".into(), enabled: "masked".into() });
        }
        (
            Observed {
                instance: Some(instance.clone()),
                idmap_base: Some(100000),
                probe: Some(probe),
                ..Default::default()
            },
            instance,
        )
    }

    #[test]
    fn a_missing_instance_is_created_started_and_provisioned() {
        let desired = desired_cache();
        let steps = diff(&desired, &Observed::default());
        let actions: Vec<&Action> = steps.iter().map(|s| &s.action).collect();
        assert!(matches!(actions[0], Action::CreateInstance { .. }), "{actions:?}");
        assert!(actions.contains(&&Action::StartInstance));
        assert!(actions.contains(&&Action::Provision));
    }

    #[test]
    fn volumes_are_created_before_the_instance_and_their_mount_points_chowned_inside() {
        let mut desired = desired_cache();
        let volume = |kind: &str| VolumeDir {
            pool: "default".into(),
            volume: format!("acme-cache-{kind}"),
            path: format!("/opt/gbo/{kind}"),
            uid: 1002,
            gid: 1002,
        };
        desired.volumes = vec![volume("data"), volume("conf")];
        let steps = diff(&desired, &Observed::default());
        let text: Vec<String> = steps.iter().map(Step::describe).collect();
        assert_eq!(
            text[..3],
            [
                "+ volume acme-cache-data on pool default",
                "+ volume acme-cache-conf on pool default",
                "+ create instance from gbo/debian-12"
            ],
            "{text:?}"
        );
        // Kept volumes (a reinstall) are not created again.
        let mut observed = Observed::default();
        observed.volumes.insert("acme-cache-data".into(), true);
        observed.volumes.insert("acme-cache-conf".into(), true);
        assert!(matches!(diff(&desired, &observed)[0].action, Action::CreateInstance { .. }));
        // Running: a mount point owned by root is chowned, one owned right is left alone.
        let (mut observed, _) = converged(&desired);
        observed.volumes.insert("acme-cache-data".into(), true);
        observed.volumes.insert("acme-cache-conf".into(), true);
        if let Some(probe) = observed.probe.as_mut() {
            probe.dirs.insert("/opt/gbo/data".into(), Some((0, 0)));
            probe.dirs.insert("/opt/gbo/conf".into(), Some((1002, 1002)));
        }
        let text: Vec<String> = diff(&desired, &observed).iter().map(Step::describe).collect();
        assert_eq!(text, ["~ chown volume at /opt/gbo/data to 1002:1002", "~ record provisioned hash"]);
    }

    #[test]
    fn a_converged_component_plans_nothing_and_drift_is_named() {
        let desired = desired_cache();
        let (observed, _) = converged(&desired);
        assert_eq!(diff(&desired, &observed), Vec::<Step>::new());

        let (mut observed, mut instance) = converged(&desired);
        instance.devices.remove("gbo-port-redis");
        instance.config.insert("limits.cpu".into(), "4".into());
        observed.instance = Some(instance);
        let unit_path = "/etc/systemd/system/cache.service";
        if let Some(probe) = observed.probe.as_mut() {
            probe.files.insert(
                unit_path.into(),
                Some(FileState { sha256: "edited".into(), mode: 0o644, uid: 0, gid: 0, symlink: false }),
            );
        }
        let steps = diff(&desired, &observed);
        let text: Vec<String> = steps.iter().map(Step::describe).collect();
        assert!(text.contains(&"+ device gbo-port-redis".to_string()), "{text:?}");
        assert!(text.contains(&"- config limits.cpu".to_string()), "{text:?}");
        assert!(text.contains(&format!("~ file {unit_path}")), "{text:?}");
        assert!(text.contains(&"> systemctl daemon-reload".to_string()), "{text:?}");
        assert!(text.contains(&"> restart cache.service".to_string()), "{text:?}");
    }

    #[test]
    fn a_privileged_flag_the_tenant_file_does_not_ask_for_is_a_remap_not_a_config_step() {
        let desired = desired_cache();
        let (mut observed, mut instance) = converged(&desired);
        instance.config.insert(PRIVILEGED.into(), "true".into());
        observed.instance = Some(instance);
        let steps = diff(&desired, &observed);
        assert_eq!(steps.first().map(|s| &s.action), Some(&Action::Remap { privileged: false }), "{steps:?}");
        assert!(
            !steps.iter().any(|s| matches!(&s.action, Action::UnsetConfig { key } | Action::SetConfig { key, .. } if key == PRIVILEGED)),
            "{steps:?}"
        );
        // And the other way: asked for, not set.
        let mut asked = desired_cache();
        asked.config.insert(PRIVILEGED.into(), "true".into());
        let (observed, _) = converged(&desired_cache());
        let steps = diff(&asked, &observed);
        assert_eq!(steps.first().map(|s| &s.action), Some(&Action::Remap { privileged: true }), "{steps:?}");
    }

    #[test]
    fn host_data_left_under_another_idmap_base_is_shifted() {
        let mut desired = desired_cache();
        let path = PathBuf::from("/srv/stack/cache/data");
        desired.host_dirs = vec![HostDir { path: path.clone(), uid: 1002, gid: 1002 }];
        let (mut observed, _) = converged(&desired);
        // A remap to unprivileged was interrupted: the instance's base is 100000, the data is still under 0.
        observed.host_dirs.insert(path.clone(), Some((1002, 1002)));
        let steps = diff(&desired, &observed);
        assert_eq!(steps[0].action, Action::ShiftHostDir { path: path.clone(), from_base: 0 }, "{steps:?}");
        // Owned by someone else entirely: a plain chown of the directory.
        observed.host_dirs.insert(path.clone(), Some((0, 0)));
        let steps = diff(&desired, &observed);
        assert_eq!(steps[0].action, Action::ChownHostDir { path, uid: 1002, gid: 1002 }, "{steps:?}");
    }

    #[test]
    fn restarts_owed_by_an_interrupted_run_are_planned_until_the_hash_is_recorded() {
        let desired = desired_cache();
        // A file changed: the plan restarts the unit and reloads systemd, and that is what the run owes.
        let (mut observed, _) = converged(&desired);
        if let Some(probe) = observed.probe.as_mut() {
            probe.files.insert("/etc/systemd/system/cache.service".into(), None);
        }
        let steps = diff(&desired, &observed);
        assert_eq!(owed(&steps), Some(vec![OWED_RELOAD.to_string(), "cache.service".to_string()]), "{steps:?}");
        // The run wrote the file, recorded what it owes and was killed: the files match, the debt is planned.
        let (mut observed, mut killed) = converged(&desired);
        killed.config.insert(KEY_OWED.into(), format!("{OWED_RELOAD},cache.service"));
        observed.instance = Some(killed);
        let text: Vec<String> = diff(&desired, &observed).iter().map(Step::describe).collect();
        assert_eq!(text, ["> systemctl daemon-reload", "> restart cache.service", "~ record provisioned hash"]);
        // Converged and owing nothing: nothing to record.
        assert_eq!(owed(&diff(&desired, &converged(&desired).0)), None);
    }
}
