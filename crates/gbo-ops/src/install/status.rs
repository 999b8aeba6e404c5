//! `gbo status`: per component, the container, its state and image, published ports, mounts and live health,
//! all read from LXD (no state file) and probed over TCP from the host.

use std::path::PathBuf;

use gbo_components::{HealthCheck, Role, TenantFile, TenantName};
use lxd_client::{Client, InstanceStatus};

use super::error::InstallError;
use super::health::{self, Health};
use super::secrets;
use crate::inventory::{self, Mount, PublishedPort};

/// One component's status. Serialised as the `components[]` entries of `gbo status --output json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ComponentStatus {
    /// Instance name.
    pub container: String,
    /// Tenant.
    pub tenant: String,
    /// Role.
    pub role: String,
    /// Whether gbo created it.
    pub managed: bool,
    /// LXD status (`Running`, `Stopped`, ...; JSON: LXD's text).
    pub state: InstanceStatus,
    /// Image description (or base image fingerprint).
    pub image: String,
    /// Host ports.
    pub ports: Vec<PublishedPort>,
    /// Host mounts.
    pub mounts: Vec<Mount>,
    /// Custom volumes (`storage = "volumes"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<inventory::AttachedVolume>,
    /// Live health (`None` when the role has no probe or no published port).
    pub health: Option<Health>,
    /// Set when the container runs another image than the one its tenant's containers are built from now (the
    /// alias's current target): what `gbo upgrade` would change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<String>,
    /// The cluster member it is on (absent off a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

/// The status of a tenant. Serialised as `gbo status --output json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TenantStatus {
    /// Tenant.
    pub tenant: String,
    /// Stack dir recorded in LXD.
    pub stack_dir: Option<PathBuf>,
    /// Components, by container name.
    pub components: Vec<ComponentStatus>,
}

impl TenantStatus {
    /// Whether every component runs and is healthy.
    pub fn all_healthy(&self) -> bool {
        self.components.iter().all(|c| c.state == InstanceStatus::Running && c.health.as_ref().is_none_or_healthy())
    }
}

trait HealthExt {
    fn is_none_or_healthy(&self) -> bool;
}

impl HealthExt for Option<&Health> {
    fn is_none_or_healthy(&self) -> bool {
        self.is_none_or(|h| h.healthy)
    }
}

/// The catalogue's health check of `role` (rendered with placeholder secrets: checks hold no secret values).
pub fn health_check(role: Role) -> Option<HealthCheck> {
    let tenant = TenantFile { roles: gbo_components::with_dependencies(&[role]), ..TenantFile::default() };
    let specs: Vec<_> =
        tenant.roles.iter().flat_map(|r| gbo_components::required_secrets(*r).iter().copied()).collect();
    let secrets = secrets::with_placeholders(gbo_components::Secrets::new(), &specs);
    let ports = gbo_components::HostPorts::seed(&tenant.roles);
    let ctx = gbo_components::RenderContext { tenant: &tenant, secrets: &secrets, host_ports: &ports };
    gbo_components::component(role, &ctx).ok().map(|s| s.health)
}

/// The journal of a role's unit inside its container, as the seed reads it (`journalctl -u <role>`): the last
/// `lines` lines, following with `follow`.
pub fn journal_request(role: Role, lines: u32, follow: bool) -> lxd_client::ExecRequest {
    let mut command = vec![
        "journalctl".to_string(),
        "--no-pager".into(),
        "-u".into(),
        role.unit_name(),
        "-n".into(),
        lines.to_string(),
    ];
    if follow {
        command.push("-f".into());
    }
    let limit = if follow { 7 * 24 * 3600 } else { 120 };
    lxd_client::ExecRequest::new(command).timeout(std::time::Duration::from_secs(limit))
}

/// Where every role keeps its log files inside its container (the host's `<stack>/<role>/logs`).
pub const LOG_DIR: &str = "/opt/gbo/logs";

/// The path of log file `file` of a container: `access` is `/opt/gbo/logs/access.log`, `access.log.1` is itself.
/// Only a plain file name is accepted (letters, digits, `.`, `_`, `-`; no `/`, not starting with `.`): the path is
/// resolved inside the container by its own `tail`, never on the host.
pub fn log_file_path(file: &str) -> Result<String, InstallError> {
    let ok = !file.is_empty()
        && file.len() <= 128
        && !file.starts_with('.')
        && file.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(InstallError::BadInput(format!(
            "--file {file:?}: give a file name under {LOG_DIR} (letters, digits, '.', '_', '-'; e.g. access, error, postgresql)"
        )));
    }
    Ok(if file.contains('.') { format!("{LOG_DIR}/{file}") } else { format!("{LOG_DIR}/{file}.log") })
}

/// Follow (or print the end of) a log file under [`LOG_DIR`] inside a container, as the seed does (`tail -f
/// /opt/gbo/logs/access.log`), with `tail -F` so a rotated file is followed too.
pub fn log_file_request(path: &str, lines: u32, follow: bool) -> lxd_client::ExecRequest {
    let mut command = vec!["tail".to_string(), "-n".into(), lines.to_string()];
    if follow {
        command.push("-F".into());
    }
    command.push("--".into());
    command.push(path.to_string());
    let limit = if follow { 7 * 24 * 3600 } else { 120 };
    lxd_client::ExecRequest::new(command).timeout(std::time::Duration::from_secs(limit))
}

/// The log files a container has under [`LOG_DIR`] (read through LXD's file API; empty when there is none).
pub async fn log_files(lxd: &Client, name: &lxd_client::InstanceName) -> Result<Vec<String>, InstallError> {
    match lxd.pull(name, LOG_DIR).await {
        Ok(pulled) => Ok(match pulled.content {
            lxd_client::FileContent::Directory(mut entries) => {
                entries.sort();
                entries
            }
            _ => Vec::new(),
        }),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(InstallError::lxd(format!("listing {LOG_DIR} in {name}"))(e)),
    }
}

/// Status of every instance of a tenant (`roles` empty: all), with containers running another image than
/// [`super::DEFAULT_IMAGE`] pointed out.
pub async fn tenant_status(lxd: &Client, tenant: &TenantName, roles: &[Role]) -> Result<TenantStatus, InstallError> {
    tenant_status_against(lxd, tenant, roles, super::DEFAULT_IMAGE).await
}

/// Status of every instance of a tenant (`roles` empty: all), with the containers that run another image than the
/// local alias `image` points at now marked for `gbo upgrade` (none when the alias does not exist).
///
/// In a cluster, a container on a member that is not online is reported `Unknown`, its health naming the member
/// (nothing about it can be known until the member is back). When the daemon's containers are not on this machine
/// ([`crate::site::Site::shares_host`]), health is checked from inside each container (its unit is active), since
/// the published ports listen on the members' own addresses and the secrets live there.
pub async fn tenant_status_against(
    lxd: &Client,
    tenant: &TenantName,
    roles: &[Role],
    alias: &str,
) -> Result<TenantStatus, InstallError> {
    let current = lxd
        .image_by_alias(alias)
        .await
        .map_err(InstallError::lxd(format!("reading image {alias}")))?
        .map(|i| i.fingerprint);
    let site = crate::site::Site::observe(lxd, None).await.map_err(InstallError::lxd("reading the cluster state"))?;
    let from_host = site.shares_host();
    let instances = inventory::tenant_instances(lxd, tenant).await.map_err(InstallError::lxd("listing instances"))?;
    let stack_dir = instances.iter().find_map(|m| m.stack_dir.clone());
    let specs: Vec<_> = gbo_components::secrets::ALL_SECRETS.to_vec();
    let secrets = match &stack_dir {
        Some(dir) if from_host => secrets::read_existing(dir, &specs).unwrap_or_default(),
        _ => gbo_components::Secrets::new(),
    };
    let selected: Vec<_> =
        instances.into_iter().filter(|m| roles.is_empty() || m.role.is_some_and(|r| roles.contains(&r))).collect();
    let components = futures_util::future::join_all(selected.iter().map(|m| {
        let secrets = &secrets;
        let current = &current;
        let site = &site;
        async move {
            let member = site.clustered.then(|| m.instance.location.clone());
            let away = site.member(&m.instance.location).filter(|member| !member.is_online());
            let mut state = m.instance.status.clone();
            let health = if let Some(away) = away {
                state = InstanceStatus::parse("Unknown");
                Some(Health {
                    healthy: false,
                    detail: format!(
                        "unknown: member {} is {} ({}); LXD reports {}",
                        away.server_name, away.status, away.message, m.instance.status
                    ),
                })
            } else if !m.instance.is_running() {
                Some(Health { healthy: false, detail: format!("container is {}", m.instance.status) })
            } else if !from_host {
                let role = m.role;
                match role {
                    Some(role) => Some(health::unit_inside(lxd, &m.name, &role.unit_name()).await),
                    None => None,
                }
            } else {
                match super::health::health_of(lxd, m) {
                    Some((check, target)) => Some(health::probe(&check, &target, secrets).await),
                    None => None,
                }
            };
            let image = m
                .instance
                .config
                .get("image.description")
                .cloned()
                .or_else(|| m.instance.config.get("volatile.base_image").map(|f| f.chars().take(12).collect()))
                .unwrap_or_default();
            ComponentStatus {
                container: m.name.to_string(),
                tenant: m.tenant.to_string(),
                role: m.role_label(),
                managed: m.managed,
                state,
                image,
                ports: m.ports.clone(),
                mounts: m.mounts.clone(),
                volumes: inventory::attached_volumes(&m.instance),
                health,
                upgrade: current
                    .as_deref()
                    .filter(|_| m.managed)
                    .and_then(|f| crate::upgrade::behind_note(&m.instance, alias, f)),
                member,
            }
        }
    }))
    .await;
    Ok(TenantStatus { tenant: tenant.to_string(), stack_dir, components })
}
