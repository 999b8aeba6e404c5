//! Applying one component's plan. Every step is idempotent, so a run killed at any point is completed by the next
//! one (which plans again from live state).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use gbo_components::{InitPhase, Role, Secrets};
use lxd_client::{Client, CreateInstance, ExecRequest, FileOptions, InstanceName, StateAction, StateChange};

use super::artifact::{self, ArtifactPolicy};
use super::error::InstallError;
use super::fault::{self, Edge};
use super::observe;
use super::plan::{self, host_id, idmap_base, Action, Desired, Step, KEY_ARTIFACTS, KEY_OWED};
use super::{health, ComponentResult, InstallReport, InstallRequest, PlannedInstall};
use crate::events::{InstallEvent, InstallEventKind, Observer};
use crate::{hostfs, inventory};

/// Apply a plan made with `for_apply = true`.
pub async fn apply_planned(
    lxd: &Client,
    request: &InstallRequest,
    planned: &PlannedInstall,
    events: &dyn Observer<InstallEvent>,
) -> Result<InstallReport, InstallError> {
    let rewire_lock = tokio::sync::Mutex::new(());
    let ctx = ApplyContext {
        lxd,
        artifacts: &request.artifacts,
        events,
        secrets: &planned.secrets,
        image: &planned.image,
        targets: &planned.placements.targets,
        tenant: &planned.tenant,
        rewire_lock: &rewire_lock,
        public_on_member: planned.tenant.as_str() != gbo_components::TenantName::DEFAULT
            && request.tenant_file.public_address.is_none(),
    };
    for (desired, component) in planned.desired.iter().zip(planned.components.iter()) {
        events.event(&InstallEvent::new(&desired.instance, InstallEventKind::Planned { steps: component.steps.len() }));
    }
    let mut done: BTreeMap<Role, tokio::sync::watch::Sender<Option<bool>>> = BTreeMap::new();
    let mut receivers: BTreeMap<Role, tokio::sync::watch::Receiver<Option<bool>>> = BTreeMap::new();
    for d in &planned.desired {
        let (tx, rx) = tokio::sync::watch::channel(None);
        done.insert(d.role, tx);
        receivers.insert(d.role, rx);
    }
    let tasks = planned.desired.iter().zip(planned.components.iter()).map(|(desired, component)| {
        let ctx = &ctx;
        let receivers = &receivers;
        let done = &done;
        async move {
            let result = async {
                let on: Vec<String> = desired
                    .spec
                    .dependencies
                    .iter()
                    .filter(|d| receivers.contains_key(*d))
                    .map(|d| d.as_str().to_string())
                    .collect();
                if !on.is_empty() {
                    ctx.events.event(&InstallEvent::new(&desired.instance, InstallEventKind::Waiting { on }));
                }
                for dep in desired.spec.dependencies.iter() {
                    if let Some(rx) = receivers.get(dep) {
                        let mut rx = rx.clone();
                        let ok = loop {
                            if let Some(ok) = *rx.borrow() {
                                break ok;
                            }
                            if rx.changed().await.is_err() {
                                break false;
                            }
                        };
                        if !ok {
                            return Err(InstallError::DependencyFailed {
                                role: desired.role.to_string(),
                                dependency: dep.to_string(),
                            });
                        }
                    }
                }
                if !component.steps.is_empty() {
                    apply_component(ctx, desired, &component.steps).await?;
                }
                let health = match health::target_of(ctx.lxd, desired, &planned.allocations) {
                    Some(mut target) => {
                        // A rewire after a create may have moved the port onto its member's address.
                        if let Some(address) = live_address(ctx.lxd, desired, target.port).await {
                            target.address = address;
                        }
                        health::wait_healthy(&desired.spec.health, &target, &planned.secrets, request.health_timeout)
                            .await
                    }
                    None => health::unit_health(ctx.lxd, desired).await,
                };
                let detail = health.detail.clone();
                let kind = if health.healthy {
                    InstallEventKind::Healthy { detail }
                } else {
                    InstallEventKind::Unhealthy { detail }
                };
                ctx.events.event(&InstallEvent::new(&desired.instance, kind));
                if !health.healthy {
                    return Err(InstallError::Unhealthy {
                        instance: desired.instance.clone(),
                        waited_secs: request.health_timeout.as_secs(),
                        reason: health.detail,
                    });
                }
                Ok(ComponentResult {
                    role: desired.role,
                    instance: desired.instance.clone(),
                    steps: component.steps.len(),
                    health,
                })
            }
            .await;
            if let Err(e) = &result {
                ctx.events.event(&InstallEvent::new(
                    &desired.instance,
                    InstallEventKind::Failed { error: super::error::with_causes(e) },
                ));
            }
            if let Some(tx) = done.get(&desired.role) {
                let _ = tx.send(Some(result.is_ok()));
            }
            result
        }
    });
    let results = futures_util::future::join_all(tasks).await;
    let mut components = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(c) => components.push(c),
            Err(e) => errors.push(e),
        }
    }
    if errors.len() == 1 {
        return Err(errors.remove(0));
    }
    if !errors.is_empty() {
        return Err(InstallError::Several(errors));
    }
    Ok(InstallReport {
        tenant: planned.tenant.to_string(),
        stack_dir: planned.stack_dir.clone(),
        components,
        skipped: planned.skipped.iter().map(|(r, why)| (r.to_string(), why.clone())).collect(),
    })
}

/// The address the instance's published port `port` listens on now (its proxy device), when it can be read.
async fn live_address(lxd: &Client, desired: &Desired, port: u16) -> Option<std::net::IpAddr> {
    let name = InstanceName::new(desired.instance.clone()).ok()?;
    let instance = lxd.instance(&name).await.ok()?;
    instance
        .devices
        .iter()
        .filter(|(device, _)| device.starts_with("gbo-port-"))
        .filter_map(|(_, config)| lxd_client::ProxyDevice::from_config(config))
        .find(|proxy| proxy.listen.port == port)
        .and_then(|proxy| proxy.listen.address.trim_start_matches('[').trim_end_matches(']').parse().ok())
}

/// Shared inputs of apply.
pub struct ApplyContext<'a> {
    /// The daemon.
    pub lxd: &'a Client,
    /// Artifact policy.
    pub artifacts: &'a ArtifactPolicy,
    /// Where the components' events go.
    pub events: &'a dyn Observer<InstallEvent>,
    /// Secrets (for nothing but health checks; files already hold what they need).
    pub secrets: &'a Secrets,
    /// The image new containers are created from (a local alias or another server's pull source).
    pub image: &'a super::ResolvedImage,
    /// The cluster member (`target=`) of each container to create, by instance name; absent: LXD's scheduler.
    pub targets: &'a BTreeMap<String, String>,
    /// The tenant (whose wiring a new container may change: see `wiring`).
    pub tenant: &'a gbo_components::TenantName,
    /// Held while the tenant is rewired after a create, so concurrent creates rewire one at a time.
    pub rewire_lock: &'a tokio::sync::Mutex<()>,
    /// Whether public ports listen on their member's address on a cluster (no `public_address`, not the default
    /// tenant).
    pub public_on_member: bool,
}

fn instance_name(desired: &Desired) -> Result<InstanceName, InstallError> {
    InstanceName::new(desired.instance.clone())
        .map_err(InstallError::lxd(format!("instance name {}", desired.instance)))
}

async fn exec_checked(lxd: &Client, name: &InstanceName, request: ExecRequest) -> Result<String, InstallError> {
    let command = request.command.join(" ");
    let output =
        lxd.exec_output(name, &request).await.map_err(InstallError::lxd(format!("exec `{command}` in {name}")))?;
    checked(name, command, output)
}

/// The stdout of a finished exec, or the error naming the command, its exit code and the end of its stderr.
pub(super) fn checked(
    name: &InstanceName,
    command: String,
    output: lxd_client::ExecOutput,
) -> Result<String, InstallError> {
    if !output.success() {
        return Err(InstallError::Command {
            instance: name.to_string(),
            command,
            code: output.exit_code,
            stderr: observe::tail(&output.stderr_text()),
        });
    }
    Ok(output.stdout_text())
}

/// [`exec_checked`] in recorded mode, for init steps: the command belongs to a daemon task, not to our connection,
/// so it runs to its end even when this process dies. Over websockets LXD kills the command when the connection
/// drops, and a killed init step can leave its `creates` path behind half done (`initdb` writes `PG_VERSION`
/// first): the next run would take it as done. A run that finds the task still running waits for it before
/// planning (`wait_instance_idle`), then sees the finished result.
async fn exec_detached_checked(
    lxd: &Client,
    name: &InstanceName,
    request: ExecRequest,
) -> Result<String, InstallError> {
    let command = request.command.join(" ");
    let output =
        lxd.exec_recorded(name, &request).await.map_err(InstallError::lxd(format!("exec `{command}` in {name}")))?;
    checked(name, command, output)
}

/// Wait until systemd inside reports it is up (`running` or `degraded`).
pub async fn wait_for_systemd(lxd: &Client, name: &InstanceName) -> Result<(), InstallError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let request = ExecRequest::new(["systemctl", "is-system-running", "--wait"]).timeout(Duration::from_secs(60));
        if let Ok(out) = lxd.exec_output(name, &request).await {
            let state = out.stdout_text();
            if state.contains("running") || state.contains("degraded") {
                return Ok(());
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(InstallError::Unhealthy {
                instance: name.to_string(),
                waited_secs: 90,
                reason: "systemd did not come up".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Write `content` to `path` (below `stack_dir`) atomically with `mode`, owned by host `uid:gid`, never following
/// a link below the stack dir (see `hostfs`): the mounts are writable by the container.
pub fn write_host_file(
    stack_dir: &Path,
    path: &Path,
    content: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), InstallError> {
    Ok(hostfs::write_below(stack_dir, path, content, mode, Some(hostfs::Owner::new(uid, gid)), 0o755)?)
}

async fn push_file(
    lxd: &Client,
    name: &InstanceName,
    file: &gbo_components::RenderedFile,
    replace_symlink: bool,
) -> Result<(), InstallError> {
    if replace_symlink {
        lxd.delete_file(name, &file.path)
            .await
            .map_err(InstallError::lxd(format!("removing symlink {} in {name}", file.path)))?;
    }
    let options = FileOptions::owned(file.uid, file.gid, file.mode);
    let bytes = bytes_of(&file.content);
    match push_bytes_retrying(lxd, name, &file.path, &bytes, options).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => {
            if let Some((parent, _)) = file.path.rsplit_once('/') {
                if !parent.is_empty() {
                    lxd.mkdir_all(name, parent, FileOptions::root(0o755))
                        .await
                        .map_err(InstallError::lxd(format!("creating {parent} in {name}")))?;
                }
            }
            push_bytes_retrying(lxd, name, &file.path, &bytes, options)
                .await
                .map_err(InstallError::lxd(format!("pushing {} into {name}", file.path)))
        }
        Err(e) => Err(InstallError::lxd(format!("pushing {} into {name}", file.path))(e)),
    }
}

/// Push a whole file, again when LXD's file helper inside the container went away under the request: LXD 5.0.2
/// serves the file API of a running container through a `forkfile` process that exits when idle, and a request
/// that reaches it as it exits fails with "forkfile.sock: ... connection reset by peer" (seen converging a
/// running `-tables` in the webmail test). The push replaces the whole file, so sending it again is safe.
async fn push_bytes_retrying(
    lxd: &Client,
    name: &InstanceName,
    path: &str,
    bytes: &[u8],
    options: FileOptions,
) -> Result<(), lxd_client::Error> {
    let mut attempt = 1;
    loop {
        match lxd.push_bytes(name, path, bytes.to_vec(), options).await {
            Err(e) if attempt < 3 && e.to_string().contains("forkfile") => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

fn bytes_of(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// The crash tests' hook at a step boundary (see `fault`: nothing happens unless its variables are set).
fn boundary(edge: Edge, desired: &Desired, step: &Step) -> Result<(), InstallError> {
    fault::boundary(edge, &desired.instance, || step.describe())
}

/// Apply the infrastructure steps of a plan, then provision. Returns after the component is provisioned (health
/// is checked by the caller).
pub async fn apply_component(ctx: &ApplyContext<'_>, desired: &Desired, steps: &[Step]) -> Result<(), InstallError> {
    let name = instance_name(desired)?;
    let say = |description: String| {
        ctx.events.event(&InstallEvent::new(&desired.instance, InstallEventKind::Step { description }))
    };
    let mut config_changes: Vec<&Step> = Vec::new();
    let mut deferred_volumes: Vec<(String, String)> = Vec::new();
    let mut provision_now: Vec<Step> = Vec::new();
    let mut must_provision = false;
    for step in steps {
        match &step.action {
            Action::CreateHostDir { path } => {
                boundary(Edge::Before, desired, step)?;
                let root = hostfs::HostDir::create_root(&desired.stack_dir, 0o755)?;
                root.ensure_dir(root.relative(path)?, 0o755, None)?;
                boundary(Edge::After, desired, step)?;
            }
            Action::CreateVolume { pool, volume } => {
                // On a cluster a volume of a member-local pool must be on the instance's member: an instance
                // still to create is created first, where LXD places it, and its volumes follow it there.
                let member = member_for_volumes(ctx.lxd, pool, &name).await?;
                if member == Some(None) {
                    deferred_volumes.push((pool.clone(), volume.clone()));
                    continue;
                }
                boundary(Edge::Before, desired, step)?;
                say(step.describe());
                create_volume(ctx.lxd, pool, volume, &desired.config, member.flatten().as_deref()).await?;
                boundary(Edge::After, desired, step)?;
            }
            Action::CreateInstance { image } => {
                boundary(Edge::Before, desired, step)?;
                let server = ctx.image.server.as_deref();
                say(format!("creating from {image}{}", server.map(|s| format!(" ({s})")).unwrap_or_default()));
                let mut request = CreateInstance::container(name.clone(), ctx.image.source.clone()).start(false);
                for (k, v) in &desired.config {
                    request = request.config(k.clone(), v.clone());
                }
                let deferred_device = |config: &lxd_client::DeviceConfig| {
                    deferred_volumes
                        .iter()
                        .any(|(pool, volume)| config.get("pool") == Some(pool) && config.get("source") == Some(volume))
                };
                for (device, config) in &desired.devices {
                    if deferred_device(config) {
                        continue;
                    }
                    let device = lxd_client::DeviceName::new(device.clone())
                        .map_err(InstallError::lxd(format!("device name {device}")))?;
                    request = request.device(&device, config.clone());
                }
                let context = match server {
                    Some(server) => format!(
                        "creating {name} from {image} (pulled from {server}; if this host cannot reach it, build a local image with `gbo image build`)"
                    ),
                    None => format!("creating {name}"),
                };
                let lxd = match ctx.targets.get(&desired.instance) {
                    Some(target) => ctx.lxd.target(target.clone()),
                    None => ctx.lxd.clone(),
                };
                lxd.create_instance(&request).await.map_err(InstallError::lxd(context))?;
                if !deferred_volumes.is_empty() {
                    let created =
                        ctx.lxd.instance(&name).await.map_err(InstallError::lxd(format!("reading {name}")))?;
                    for (pool, volume) in deferred_volumes.drain(..) {
                        say(format!("+ volume {volume} on pool {pool} (member {})", created.location));
                        create_volume(ctx.lxd, &pool, &volume, &desired.config, Some(created.location.as_str()))
                            .await?;
                    }
                    let devices = desired.devices.clone();
                    ctx.lxd
                        .update_instance(&name, |put| {
                            for (device, config) in &devices {
                                put.devices.entry(device.clone()).or_insert_with(|| config.clone());
                            }
                        })
                        .await
                        .map_err(InstallError::lxd(format!("attaching the volumes of {name}")))?;
                }
                // Where LXD put it decides where its dependencies listen and where its wires connect (before it
                // starts): a dependency on another member is reached at that member's address.
                rewire_widen(ctx).await?;
                boundary(Edge::After, desired, step)?;
            }
            Action::Remap { privileged } => {
                flush_config(ctx, desired, &name, &mut config_changes).await?;
                boundary(Edge::Before, desired, step)?;
                say(step.describe());
                remap(ctx, desired, &name, *privileged).await?;
                boundary(Edge::After, desired, step)?;
            }
            Action::ShiftHostDir { path, from_base } => {
                boundary(Edge::Before, desired, step)?;
                say(step.describe());
                let base = current_base(ctx.lxd, &name).await?;
                let ran = stop_for_remap(ctx, &name).await?;
                super::idmap::shift_trees(std::slice::from_ref(path), *from_base, base)?;
                if ran {
                    start_after_remap(ctx, &name).await?;
                }
                boundary(Edge::After, desired, step)?;
            }
            Action::ChownHostDir { path, uid, gid } => {
                boundary(Edge::Before, desired, step)?;
                let base = current_base(ctx.lxd, &name).await?;
                let root = hostfs::HostDir::open_root(&desired.stack_dir)?;
                let dir = root.open_dir(root.relative(path)?)?.ok_or_else(|| {
                    InstallError::BadInput(format!("{}: missing when it was to be chowned", path.display()))
                })?;
                dir.chown(hostfs::Owner::new(host_id(base, *uid), host_id(base, *gid)))?;
                boundary(Edge::After, desired, step)?;
            }
            Action::SetConfig { .. }
            | Action::UnsetConfig { .. }
            | Action::AddDevice { .. }
            | Action::ReplaceDevice { .. }
            | Action::RemoveDevice { .. } => {
                config_changes.push(step);
            }
            Action::StartInstance => {
                flush_config(ctx, desired, &name, &mut config_changes).await?;
                boundary(Edge::Before, desired, step)?;
                say("starting".into());
                ctx.lxd.ensure_running(&name).await.map_err(InstallError::lxd(format!("starting {name}")))?;
                wait_for_systemd(ctx.lxd, &name).await?;
                boundary(Edge::After, desired, step)?;
            }
            Action::Provision => must_provision = true,
            _ => provision_now.push(step.clone()),
        }
    }
    flush_config(ctx, desired, &name, &mut config_changes).await?;
    if must_provision {
        let instance = ctx.lxd.instance(&name).await.map_err(InstallError::lxd(format!("reading {name}")))?;
        let observed = observe::observe(ctx.lxd, desired, Some(&instance)).await?;
        let probe = observed.probe.clone().unwrap_or_default();
        provision_now = plan::provision_steps(desired, &observed, &probe, &instance);
        run_provision(ctx, desired, &name, &provision_now, &probe).await
    } else if !provision_now.is_empty() {
        let instance = ctx.lxd.instance(&name).await.map_err(InstallError::lxd(format!("reading {name}")))?;
        let observed = observe::observe(ctx.lxd, desired, Some(&instance)).await?;
        let probe = observed.probe.clone().unwrap_or_default();
        run_provision(ctx, desired, &name, &provision_now, &probe).await
    } else {
        Ok(())
    }
}

/// Create a custom volume unless it exists (a run killed after the create finds it, and so does a reinstall:
/// the data of an uninstalled tenant is kept in its volumes).
/// The volume is labelled with the tenant and role (`user.gbo.tenant`, `user.gbo.role`), which is what `uninstall
/// --purge` finds it by once its container is gone.
async fn create_volume(
    lxd: &Client,
    pool: &str,
    volume: &str,
    labels: &BTreeMap<String, String>,
    member: Option<&str>,
) -> Result<(), InstallError> {
    let targeted;
    let lxd = match member {
        Some(member) => {
            targeted = lxd.target(member);
            &targeted
        }
        None => lxd,
    };
    let context = || format!("creating volume {volume} on pool {pool}");
    let pool_name = lxd_client::ObjectName::new(pool).map_err(InstallError::lxd(context()))?;
    let volume_name = lxd_client::ObjectName::new(volume).map_err(InstallError::lxd(context()))?;
    if lxd.storage_volume(&pool_name, &volume_name).await.map_err(InstallError::lxd(context()))?.is_some() {
        return Ok(());
    }
    let config: BTreeMap<String, String> = [inventory::KEY_TENANT, inventory::KEY_ROLE]
        .iter()
        .filter_map(|k| labels.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    match lxd.create_storage_volume(&pool_name, &volume_name, config).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_conflict() => Ok(()),
        Err(e) => Err(InstallError::lxd(context())(e)),
    }
}

/// Where the volumes of `instance` on `pool` go: `None` on a standalone daemon or a pool every member shares
/// (no target), `Some(Some(member))` on a cluster when the instance exists (its member), `Some(None)` on a cluster
/// when it does not exist yet (create it first, then its volumes on its member).
async fn member_for_volumes(
    lxd: &Client,
    pool: &str,
    instance: &InstanceName,
) -> Result<Option<Option<String>>, InstallError> {
    let server = lxd.server().await.map_err(InstallError::lxd("reading the server's environment"))?;
    if !server.environment.server_clustered {
        return Ok(None);
    }
    let pool_name = lxd_client::ObjectName::new(pool).map_err(InstallError::lxd(format!("pool {pool}")))?;
    let driver = lxd.storage_pool(&pool_name).await.map_err(InstallError::lxd(format!("reading pool {pool}")))?.driver;
    if matches!(driver.as_str(), "ceph" | "cephfs" | "cephobject") {
        return Ok(None);
    }
    match lxd.instance_opt(instance).await.map_err(InstallError::lxd(format!("reading {instance}")))? {
        Some(existing) if !existing.location.is_empty() => Ok(Some(Some(existing.location))),
        Some(_) => Ok(None),
        None => Ok(Some(None)),
    }
}

/// Stop the instance (if it runs) so nothing inside can touch its data while owners move; whether it ran.
async fn stop_for_remap(ctx: &ApplyContext<'_>, name: &InstanceName) -> Result<bool, InstallError> {
    let instance = ctx.lxd.instance(name).await.map_err(InstallError::lxd(format!("reading {name}")))?;
    if !instance.is_running() {
        return Ok(false);
    }
    ctx.lxd
        .ensure_stopped(name, Duration::from_secs(60))
        .await
        .map_err(InstallError::lxd(format!("stopping {name} to remap its data")))?;
    Ok(true)
}

async fn start_after_remap(ctx: &ApplyContext<'_>, name: &InstanceName) -> Result<(), InstallError> {
    ctx.lxd.ensure_running(name).await.map_err(InstallError::lxd(format!("starting {name}")))?;
    wait_for_systemd(ctx.lxd, name).await
}

/// [`Action::Remap`]: stop, set or unset `security.privileged` (LXD computes the new idmap and shifts the root
/// filesystem at the next start), shift the host directories' owners from the old base to the new one, start
/// again if it ran. Interrupted anywhere, the next plan finds what is left: the flag (a remap again), or
/// directories still under the old base (a [`Action::ShiftHostDir`] each, roots shifted last), or a stopped
/// instance (a start).
async fn remap(
    ctx: &ApplyContext<'_>,
    desired: &Desired,
    name: &InstanceName,
    privileged: bool,
) -> Result<(), InstallError> {
    let before = ctx.lxd.instance(name).await.map_err(InstallError::lxd(format!("reading {name}")))?;
    let from = idmap_base(&before)
        .ok_or_else(|| InstallError::BadInput(format!("{name}: cannot read its idmap (volatile.idmap.next)")))?;
    let ran = stop_for_remap(ctx, name).await?;
    ctx.lxd
        .update_instance(name, |put| {
            if privileged {
                put.config.insert(plan::PRIVILEGED.to_string(), "true".to_string());
            } else {
                put.config.remove(plan::PRIVILEGED);
            }
        })
        .await
        .map_err(InstallError::lxd(format!("setting {} on {name}", plan::PRIVILEGED)))?;
    let to = current_base(ctx.lxd, name).await?;
    let dirs: Vec<std::path::PathBuf> = desired.host_dirs.iter().map(|d| d.path.clone()).collect();
    super::idmap::shift_trees(&dirs, from, to)?;
    if ran {
        start_after_remap(ctx, name).await?;
    }
    Ok(())
}

async fn current_base(lxd: &Client, name: &InstanceName) -> Result<u32, InstallError> {
    let instance = lxd.instance(name).await.map_err(InstallError::lxd(format!("reading {name}")))?;
    idmap_base(&instance)
        .ok_or_else(|| InstallError::BadInput(format!("{name}: cannot read its idmap (volatile.idmap.next)")))
}

async fn flush_config(
    ctx: &ApplyContext<'_>,
    desired: &Desired,
    name: &InstanceName,
    changes: &mut Vec<&Step>,
) -> Result<(), InstallError> {
    if changes.is_empty() {
        return Ok(());
    }
    let say = |description: String| {
        ctx.events.event(&InstallEvent::new(&desired.instance, InstallEventKind::Step { description }))
    };
    for step in changes.iter() {
        say(step.describe());
    }
    let steps: Vec<Step> = changes.drain(..).cloned().collect();
    // The changes go to LXD in one update: one step for the fault hook, described by all of them.
    let batch = || steps.iter().map(Step::describe).collect::<Vec<_>>().join(", ");
    fault::boundary(Edge::Before, &desired.instance, batch)?;
    ctx.lxd
        .update_instance(name, |put| {
            for step in &steps {
                match &step.action {
                    Action::SetConfig { key, value } => {
                        put.config.insert(key.clone(), value.clone());
                    }
                    Action::UnsetConfig { key } => {
                        put.config.remove(key);
                    }
                    Action::AddDevice { name } | Action::ReplaceDevice { name } => {
                        if let Some(config) = desired.devices.get(name) {
                            put.devices.insert(name.clone(), config.clone());
                        }
                    }
                    Action::RemoveDevice { name } => {
                        put.devices.remove(name);
                    }
                    _ => {}
                }
            }
        })
        .await
        .map_err(InstallError::lxd(format!("updating {name}")))?;
    fault::boundary(Edge::After, &desired.instance, batch)?;
    // The plan's wires and ports were computed before this run created anything: a create placed by LXD's
    // scheduler may have moved a port onto its member's address since. Rewiring again puts them where they belong.
    let wiring = |name: &str| name.starts_with("gbo-wire-") || name.starts_with("gbo-port-");
    if steps
        .iter()
        .any(|s| matches!(&s.action, Action::AddDevice { name } | Action::ReplaceDevice { name } if wiring(name)))
    {
        rewire_widen(ctx).await?;
    }
    Ok(())
}

/// [`super::wiring::rewire`] in [`super::wiring::RewireMode::Widen`], one at a time, each change an event.
async fn rewire_widen(ctx: &ApplyContext<'_>) -> Result<(), InstallError> {
    let _rewiring = ctx.rewire_lock.lock().await;
    let mode = super::wiring::RewireMode::Widen { public_on_member: ctx.public_on_member };
    for r in super::wiring::rewire(ctx.lxd, ctx.tenant, mode).await? {
        ctx.events.event(&InstallEvent::new(
            &r.instance,
            InstallEventKind::Step { description: format!("~ device {} -> {}", r.device, r.value) },
        ));
    }
    Ok(())
}

async fn run_provision(
    ctx: &ApplyContext<'_>,
    desired: &Desired,
    name: &InstanceName,
    steps: &[Step],
    probe: &plan::Probe,
) -> Result<(), InstallError> {
    let say = |description: String| {
        ctx.events.event(&InstallEvent::new(&desired.instance, InstallEventKind::Step { description }))
    };
    let lxd = ctx.lxd;
    // An image gbo did not build gets the fixed-uid users and the role's packages first (see `packages`).
    super::packages::ensure(ctx, desired, name).await?;
    // Record the restarts (and reload) this run owes before it changes the files that call for them, so a run
    // killed in between leaves them to the next plan (see `plan::KEY_OWED`).
    if let Some(owed) = plan::owed(steps) {
        lxd.update_instance(name, |put| {
            let mut entries: Vec<String> = plan::owed_entries(&put.config).into_iter().map(str::to_string).collect();
            for entry in &owed {
                if !entries.contains(entry) {
                    entries.push(entry.clone());
                }
            }
            put.config.insert(KEY_OWED.to_string(), entries.join(","));
        })
        .await
        .map_err(InstallError::lxd(format!("recording the restarts owed on {name}")))?;
    }
    for step in steps {
        boundary(Edge::Before, desired, step)?;
        match &step.action {
            Action::WriteHostFile { path, host_path } => {
                let Some(placed) = desired.files.iter().find(|f| &f.file.path == path) else { continue };
                let base = current_base(lxd, name).await?;
                say(step.describe());
                write_host_file(
                    &desired.stack_dir,
                    host_path,
                    placed.file.content.as_bytes(),
                    placed.file.mode,
                    host_id(base, placed.file.uid),
                    host_id(base, placed.file.gid),
                )?;
            }
            Action::ChownVolume { path, uid, gid } => {
                say(step.describe());
                // Inside the container: the path is resolved there, never on the daemon's host; `-h` changes a
                // link itself, not what it points to.
                let request = ExecRequest::new([
                    "sh".to_string(),
                    "-c".to_string(),
                    r#"chown -h "$1:$2" "$3" && chmod 0755 "$3""#.to_string(),
                    "gbo-chown".to_string(),
                    uid.to_string(),
                    gid.to_string(),
                    path.clone(),
                ])
                .timeout(Duration::from_secs(60));
                exec_checked(lxd, name, request).await?;
            }
            Action::PushFile { path } => {
                let Some(placed) = desired.files.iter().find(|f| &f.file.path == path) else { continue };
                say(step.describe());
                let symlink = probe.files.get(path).and_then(|s| s.as_ref()).is_some_and(|s| s.symlink);
                push_file(lxd, name, &placed.file, symlink).await?;
            }
            Action::InstallArtifact { name: artifact_name, path, .. } => {
                let Some(artifact) = plan::artifact_list(&desired.spec).into_iter().find(|a| a.name == artifact_name)
                else {
                    continue;
                };
                say(step.describe());
                let download = artifact::fetch(ctx.artifacts, artifact).await?;
                let scratch = tempfile_dir()?;
                let file = artifact::unpack(artifact, &download, scratch.path()).await?;
                if let Some((parent, _)) = path.rsplit_once('/') {
                    lxd.mkdir_all(name, parent, FileOptions::owned(1000, 1000, 0o755))
                        .await
                        .map_err(InstallError::lxd(format!("creating {parent} in {name}")))?;
                }
                let reader = tokio::fs::File::open(&file)
                    .await
                    .map_err(InstallError::io(format!("opening {}", file.display())))?;
                lxd.push_file(name, path, reader, FileOptions::owned(1000, 1000, 0o755))
                    .await
                    .map_err(InstallError::lxd(format!("pushing {path} into {name}")))?;
            }
            Action::MaskUnit { unit } => {
                say(step.describe());
                exec_checked(lxd, name, ExecRequest::new(["systemctl", "mask", "--now", unit.as_str()])).await?;
            }
            Action::DaemonReload => {
                exec_checked(lxd, name, ExecRequest::new(["systemctl", "daemon-reload"])).await?;
            }
            Action::RunInit { name: init_name, after_start } => {
                let phase = if *after_start { InitPhase::AfterStart } else { InitPhase::BeforeStart };
                let Some(init) = desired.spec.init.iter().find(|i| i.name == init_name && i.phase == phase) else {
                    continue;
                };
                say(step.describe());
                let user = gbo_components::users::service_user(init.user).ok_or_else(|| {
                    InstallError::BadInput(format!("init step {init_name}: unknown user {}", init.user))
                })?;
                let request = ExecRequest::new(init.command.clone())
                    .user(user.uid, user.gid)
                    .cwd("/")
                    .env("HOME", user.home)
                    .timeout(Duration::from_secs(300));
                exec_detached_checked(lxd, name, request).await?;
            }
            Action::StartUnit { unit } => {
                say(step.describe());
                exec_checked(lxd, name, ExecRequest::new(["systemctl", "enable", unit.as_str()])).await?;
                exec_checked(lxd, name, ExecRequest::new(["systemctl", "restart", unit.as_str()])).await?;
            }
            Action::RestartUnit { unit } => {
                say(step.describe());
                exec_checked(lxd, name, ExecRequest::new(["systemctl", "restart", unit.as_str()])).await?;
            }
            Action::RecordProvisioned => {
                let hash = desired.provisioned_hash.clone();
                let artifacts = desired.artifacts.join(",");
                lxd.update_instance(name, |put| {
                    put.config.insert(inventory::KEY_PROVISIONED_HASH.to_string(), hash.clone());
                    put.config.remove(KEY_OWED);
                    if artifacts.is_empty() {
                        put.config.remove(KEY_ARTIFACTS);
                    } else {
                        put.config.insert(KEY_ARTIFACTS.to_string(), artifacts.clone());
                    }
                })
                .await
                .map_err(InstallError::lxd(format!("recording the provisioned hash on {name}")))?;
            }
            _ => {}
        }
        boundary(Edge::After, desired, step)?;
    }
    Ok(())
}

/// A fresh private (0700, random name) scratch directory for an artifact's download, removed on drop.
fn tempfile_dir() -> Result<hostfs::PrivateDir, InstallError> {
    Ok(hostfs::PrivateDir::new(&std::env::temp_dir(), "gbo-artifact-")?)
}

/// Stop, start or restart an instance (idempotent: reads the state first).
pub async fn set_state(lxd: &Client, name: &InstanceName, action: StateAction) -> Result<bool, InstallError> {
    let context = format!("{action:?} {name}");
    match action {
        StateAction::Start => lxd.ensure_running(name).await.map_err(InstallError::lxd(context)),
        StateAction::Stop => {
            lxd.ensure_stopped(name, Duration::from_secs(30)).await.map_err(InstallError::lxd(context))
        }
        other => lxd.set_state(name, &StateChange::new(other)).await.map(|_| true).map_err(InstallError::lxd(context)),
    }
}
