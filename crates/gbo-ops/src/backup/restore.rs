//! `gbo backup restore --tenant T [--as NEW] [--stack-dir DIR] [--replace]`: recreate a tenant from a backup, on
//! this LXD or another (the one `LXD_SOCKET`/`LXD_DIR` names).
//!
//! The walk: read the backup's description (the meta snapshot) → plan (target tenant, stack dir, every recorded
//! host port kept when free on this host and left to the allocator when taken, refused onto an existing tenant
//! without `--replace`) → with `--replace`, a gbo snapshot of every existing container first (`pre-restore-<id>`,
//! with its custom volumes) → the secrets written back into `<stack>/.secrets` (so the recreated services use the backed-up passwords) →
//! the containers created by the install engine (the same path as `gbo install`) → each container stopped, its
//! `data` and `logs` directories replaced by the backup's (restored by rustic into a private staging directory,
//! then copied through hostfs: links as links), owners shifted from the recorded idmap base to the new
//! container's → started → a second install run converges and reports health → the restored PostgreSQL data is
//! compared with what the backup recorded ([`super::rows`]: every table's rows and checksum, the application role's
//! access), a difference failing the restore with the table named. `conf` is rendered again by the
//! install engine from the catalogue (it is in the backup for the record).
//!
//! A `storage = "volumes"` backup restored `--replace` over its tenant: each backed-up volume imported beside the
//! real one, the containers using them stopped, each real volume's content replaced by the imported one's
//! ([`super::volumes::replace_content`]: the volume and its snapshots stay), then install, health and the row
//! check; a failure from the replacement on puts the tenant back from the safety snapshot (`put_back`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gbo_components::{Role, TenantFile, TenantName};
use lxd_client::{Client, InstanceName, ObjectName, StateAction, StateChange};
use rustic_core::{LocalDestination, LsOptions};

use super::event::{BackupEvent, BackupEventKind};
use super::list::{self, BackupInfo};
use super::lock::{self, Mode};
use super::meta::{self, TenantMeta};
use super::{join_error, snapshot_path, BackupError, RepoAccess, META_ROLE};
use crate::events::{InstallEvent, Observer};
use crate::hostfs::{HostDir, PrivateDir};
use crate::install::{self, InstallRequest};
use crate::inventory::{self, ManagedInstance};

/// Options of [`restore`].
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The backup id (default: the tenant's newest complete backup).
    pub backup: Option<String>,
    /// Restore as another tenant.
    pub as_tenant: Option<TenantName>,
    /// The stack dir on this host (default: the recorded one, when restoring under the same name).
    pub stack_dir: Option<PathBuf>,
    /// Restore over an existing tenant (snapshotted first).
    pub replace: bool,
    /// The image (default: install's default).
    pub image: Option<String>,
    /// Show the plan and stop.
    pub dry_run: bool,
    /// The cluster member the containers and their volumes go to (default: the tenant file's `[placement]`, else
    /// the member gbo talks to); an error off a cluster.
    pub target: Option<String>,
    /// Where rustic restores before the copy into place (a root-owned place).
    pub staging_parent: PathBuf,
    /// Why this daemon cannot take a host-storage tenant (its containers run on another machine), when it cannot:
    /// a backup of a host-storage tenant is then refused with this message before anything changes. Backups of
    /// `storage = "volumes"` tenants need nothing of the daemon's host.
    pub host_refused: Option<String>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            backup: None,
            as_tenant: None,
            stack_dir: None,
            replace: false,
            image: None,
            dry_run: false,
            target: None,
            staging_parent: std::env::temp_dir(),
            host_refused: None,
        }
    }
}

/// One recorded host port and what the restore does with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortPlan {
    /// Role.
    pub role: String,
    /// Port name (`gbo-port-<name>`).
    pub name: String,
    /// The recorded host port.
    pub recorded: u16,
    /// Whether it is kept (free here); otherwise the allocator picks another.
    pub kept: bool,
}

/// What a restore will do (shown before anything changes).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestorePlan {
    /// The backup.
    pub backup: String,
    /// When it was taken.
    pub taken_at: String,
    /// The tenant backed up.
    pub from_tenant: String,
    /// The tenant created.
    pub tenant: String,
    /// Its stack dir.
    pub stack_dir: PathBuf,
    /// The roles, in the backup's order.
    pub roles: Vec<String>,
    /// Ports.
    pub ports: Vec<PortPlan>,
    /// Containers of the target tenant that exist (replaced with --replace).
    pub existing: Vec<String>,
    /// The custom volumes created or replaced (a `storage = "volumes"` backup).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumePlan>,
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    /// The plan.
    pub plan: RestorePlan,
    /// The safety snapshot taken first (with --replace).
    pub safety_snapshot: Option<String>,
    /// Health per container after the restore.
    pub health: Vec<(String, bool, String)>,
    /// Tables found holding the rows the backup recorded (with the application role's access checked).
    pub checked_tables: usize,
    /// Whether it was only planned.
    pub applied: bool,
}

/// The newest complete backup of `tenant`, or the one named.
pub fn pick(backups: &[BackupInfo], tenant: &str, id: Option<&str>, repo: &Path) -> Result<BackupInfo, BackupError> {
    backups
        .iter()
        .rev()
        .find(|b| b.tenant == tenant && b.complete && id.is_none_or(|id| b.backup == id))
        .cloned()
        .ok_or_else(|| BackupError::NoBackup {
            tenant: tenant.to_string(),
            repo: repo.to_path_buf(),
            id: id.map(str::to_string),
        })
}

type Indexed = std::sync::Arc<rustic_core::Repository<rustic_core::IndexedFullStatus>>;

/// Restore the snapshot `id` whole into `dest` (rustic writes there; it is a fresh private directory).
fn restore_snapshot(repo: &Indexed, id: &str, dest: &Path) -> Result<(), BackupError> {
    let fail = || BackupError::repository(format!("restoring snapshot {id}"));
    let node = repo.node_from_snapshot_path(id, |_| true).map_err(fail())?;
    let dest_text = dest.to_str().ok_or_else(|| BackupError::BadInput(format!("{} is not UTF-8", dest.display())))?;
    let destination = LocalDestination::new(dest_text, true, !node.is_dir()).map_err(fail())?;
    let options = rustic_core::RestoreOptions::default().numeric_id(true);
    let ls = repo.ls(&node, &LsOptions::default()).map_err(fail())?;
    let plan = repo.prepare_restore(&options, ls, &destination, false).map_err(fail())?;
    let ls = repo.ls(&node, &LsOptions::default()).map_err(fail())?;
    repo.restore(plan, &options, ls, &destination).map_err(fail())
}

fn port_name(device: &str) -> Option<&str> {
    device.strip_prefix("gbo-port-")
}

fn port_free(address: &str, port: u16) -> bool {
    let ip: std::net::IpAddr = address.parse().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    std::net::TcpListener::bind((ip, port)).is_ok()
}

/// One custom volume a volumes-mode restore creates or replaces.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumePlan {
    /// Pool.
    pub pool: String,
    /// Volume (`<tenant>-<role>-<kind>`).
    pub volume: String,
    /// Whether it exists: its content is replaced (with `--replace`, after the safety snapshot), else it is created.
    pub replaced: bool,
    /// The cluster member it is on or imported on (`None` off a cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

/// The old secrets of a tenant, put back when a `--replace` restore is undone.
type SavedSecrets = Vec<(std::ffi::OsString, Vec<u8>)>;

/// Read the backup's description, plan, and (unless a dry run) restore.
pub async fn restore(
    lxd: &Client,
    access: &RepoAccess,
    tenant: &TenantName,
    options: &RestoreOptions,
    show_plan: &(dyn Fn(&RestorePlan) + Sync),
    events: &dyn Observer<BackupEvent>,
    install_events: &dyn Observer<InstallEvent>,
) -> Result<RestoreReport, BackupError> {
    if !access.exists() {
        return Err(BackupError::NoRepository { repo: access.repo.clone() });
    }
    let _repo_lock = lock::flock(&access.repo, Mode::Read, Duration::from_secs(60)).await?;
    // One open (the key derivation is deliberately slow) for the whole restore.
    let opened = access.clone();
    let (repo, snaps) = tokio::task::spawn_blocking(move || -> Result<_, BackupError> {
        let repo = opened.open()?;
        let snaps = repo.get_all_snapshots().map_err(BackupError::repository("reading the snapshots"))?;
        let repo = repo.to_indexed().map_err(BackupError::repository("reading the repository's index"))?;
        Ok((std::sync::Arc::new(repo), snaps))
    })
    .await
    .map_err(join_error)??;
    let backups = list::group(snaps, Some(tenant.as_str()));
    let chosen = pick(&backups, tenant.as_str(), options.backup.as_deref(), &access.repo)?;
    let staging = PrivateDir::new(&options.staging_parent, "gbo-restore-")?;
    let meta_id = chosen.snapshots.get(META_ROLE).cloned().unwrap_or_default();
    events.event(&BackupEvent::step("repository", format!("reading backup {}", chosen.backup)));
    let (a, dest) = (repo.clone(), staging.path().join(META_ROLE));
    let id = meta_id.clone();
    tokio::task::spawn_blocking(move || restore_snapshot(&a, &id, &dest)).await.map_err(join_error)??;
    let meta_dir = staging
        .path()
        .join(META_ROLE)
        .join(snapshot_path(tenant.as_str(), META_ROLE).strip_prefix("/").unwrap_or(Path::new("")));
    let text = std::fs::read(meta_dir.join(meta::FILE)).map_err(BackupError::io(meta_dir.join(meta::FILE)))?;
    let described: TenantMeta = serde_json::from_slice(&text)
        .map_err(|e| BackupError::io(meta_dir.join(meta::FILE))(std::io::Error::other(e)))?;

    // Volumes mode: the backup holds LXD volume tarballs, restored through the API; host mode needs this host.
    let volumes_mode = described.roles.iter().any(|r| !r.volumes.is_empty());
    if let (false, Some(why)) = (volumes_mode, &options.host_refused) {
        return Err(BackupError::BadInput(format!(
            "backup {} of tenant {tenant} keeps its data in host directories: {why}",
            chosen.backup
        )));
    }
    let roles: Vec<Role> = described
        .roles
        .iter()
        .map(|r| {
            r.role
                .parse::<Role>()
                .map_err(|_| BackupError::BadInput(format!("unknown role `{}` in the backup", r.role)))
        })
        .collect::<Result<_, _>>()?;

    // The plan.
    let target = options.as_tenant.clone().unwrap_or_else(|| tenant.clone());
    let stack_dir = match (&options.stack_dir, &options.as_tenant) {
        (Some(dir), _) => install::absolute(dir).map_err(|e| BackupError::BadInput(e.to_string()))?,
        (None, None) => described.stack_dir.clone().ok_or_else(|| {
            BackupError::BadInput("the backup records no stack dir: name one with --stack-dir".into())
        })?,
        (None, Some(_)) => {
            return Err(BackupError::BadInput(
                "--as NEW needs --stack-dir DIR (the backed-up tenant's stack dir belongs to it)".into(),
            ))
        }
    };
    let existing_instances = inventory::tenant_instances(lxd, &target).await?;
    let existing: Vec<String> = existing_instances.iter().map(|m| m.name.to_string()).collect();
    let mut ports = Vec::new();
    for role in &described.roles {
        for port in &role.ports {
            let Some(name) = port_name(&port.device) else { continue };
            let kept = (options.replace && !existing.is_empty() && target == *tenant)
                || port_free(&port.host_address, port.host_port);
            ports.push(PortPlan { role: role.role.clone(), name: name.to_string(), recorded: port.host_port, kept });
        }
    }
    let mut tenant_file = match std::fs::read_to_string(meta_dir.join(meta::TENANT_FILE)) {
        Ok(text) => {
            TenantFile::parse(&text).map_err(|e| BackupError::BadInput(format!("the backed-up tenant file: {e}")))?
        }
        Err(_) => TenantFile::default(),
    };
    tenant_file.tenant = target.clone();
    // The storage the restored tenant uses, checked against the existing tenant's before anything changes (a
    // tenant whose data is in host directories is not replaced by volumes, nor the other way round).
    let mode = if volumes_mode { gbo_components::StorageMode::Volumes } else { gbo_components::StorageMode::Host };
    let storage = if volumes_mode || !existing_instances.is_empty() {
        Some(
            install::storage::Storage::resolve(
                lxd,
                &target,
                Some(mode),
                if volumes_mode { tenant_file.pool.as_deref() } else { None },
                &stack_dir,
                &existing_instances,
            )
            .await?,
        )
    } else {
        None
    };
    let members = if volumes_mode || options.target.is_some() {
        members_for(lxd, options.target.as_deref(), &tenant_file, &target, &roles, &existing_instances).await?
    } else {
        BTreeMap::new()
    };
    let mut volumes = Vec::new();
    if let Some(install::storage::Storage::Volumes { pool }) = &storage {
        for (role_meta, role) in described.roles.iter().zip(&roles) {
            for volume in &role_meta.volumes {
                let name = install::storage::volume_name(&target, *role, volume.kind());
                let replaced = super::volumes::exists(lxd, pool, &name).await?;
                let member = members.get(role).cloned();
                volumes.push(VolumePlan { pool: pool.clone(), volume: name, replaced, member });
            }
        }
    }
    // Each container goes where its volumes are imported.
    for (role, member) in &members {
        tenant_file.placement.insert(*role, gbo_components::Placement::Member(member.clone()));
    }
    let plan = RestorePlan {
        backup: chosen.backup.clone(),
        taken_at: described.taken_at.clone(),
        from_tenant: tenant.to_string(),
        tenant: target.to_string(),
        stack_dir: stack_dir.clone(),
        roles: described.roles.iter().map(|r| r.role.clone()).collect(),
        ports,
        existing: existing.clone(),
        volumes: volumes.clone(),
    };
    show_plan(&plan);
    if !existing.is_empty() && !options.replace {
        return Err(BackupError::TenantExists { tenant: target.to_string(), containers: existing.join(", ") });
    }
    if let (Some(volume), false) = (volumes.iter().find(|v| v.replaced), options.replace) {
        return Err(BackupError::BadInput(format!(
            "custom volume {} exists on pool {} of this LXD (an uninstall without --purge keeps it): add --replace \
             to snapshot it and restore over it, delete it, or restore --as NEW",
            volume.volume, volume.pool
        )));
    }
    if options.dry_run {
        return Ok(RestoreReport {
            plan,
            safety_snapshot: None,
            health: Vec::new(),
            checked_tables: 0,
            applied: false,
        });
    }

    // --replace: a snapshot of what is there first (containers with their host data or custom volumes, and any
    // volume of the tenant no container uses).
    let mut safety_snapshot = None;
    let replaced: Vec<&VolumePlan> = volumes.iter().filter(|v| v.replaced).collect();
    if !existing.is_empty() || !replaced.is_empty() {
        let name = format!("pre-restore-{}", chosen.backup.to_ascii_lowercase().replace(['t', 'z'], ""));
        let name: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(63).collect();
        let snapshot = crate::snapshot::snapshot_name(&name)?;
        let containers = inventory::tenant_instances(lxd, &target).await?;
        events.event(&BackupEvent::step("tenant", format!("snapshot {name} of the existing containers first")));
        for result in crate::snapshot::create_many(lxd, &containers, &snapshot, &Default::default()).await {
            result?;
        }
        for volume in &replaced {
            let (pool, vol) = (ObjectName::new(volume.pool.as_str())?, ObjectName::new(volume.volume.as_str())?);
            if !lxd.volume_snapshots(&pool, &vol).await?.iter().any(|s| s.name == name) {
                lxd.create_volume_snapshot(&pool, &vol, &snapshot, None).await?;
            }
        }
        safety_snapshot = Some(name);
    }

    // Secrets back in place before the install renders anything from them (the old ones kept in memory to be
    // put back if a --replace over volumes is undone).
    let mut saved_secrets: SavedSecrets = Vec::new();
    // Secret files the restore adds (a role the tenant did not have): an undo removes them.
    let mut added_secrets: Vec<std::ffi::OsString> = Vec::new();
    let secrets_src = meta_dir.join(meta::SECRETS);
    if let Some(source) = HostDir::open_root_if_exists(&secrets_src)? {
        let stack = HostDir::create_root(&stack_dir, 0o755)?;
        let target_dir = stack.ensure_dir(Path::new(".secrets"), 0o700, None)?;
        if !replaced.is_empty() {
            for name in target_dir.names()? {
                if let Some(bytes) = target_dir.read_file(Path::new(&name), 64 * 1024)? {
                    saved_secrets.push((name, bytes));
                }
            }
        }
        for name in source.names()? {
            if let Some(bytes) = source.read_file(Path::new(&name), 64 * 1024)? {
                if !replaced.is_empty() && !saved_secrets.iter().any(|(old, _)| *old == name) {
                    added_secrets.push(name.clone());
                }
                target_dir.write_file(Path::new(&name), &bytes, 0o600, None, 0o700)?;
            }
        }
        events.event(&BackupEvent::step("tenant", "secrets restored"));
    }

    // The containers, through the install engine.
    let mut staged: Vec<(VolumePlan, String)> = Vec::new();
    // Volumes this restore created (roles the tenant did not have): an undo deletes them. (pool, volume, member)
    let mut created_volumes: Vec<(String, String, Option<String>)> = Vec::new();
    if let Some(install::storage::Storage::Volumes { pool }) = &storage {
        tenant_file.storage = Some(gbo_components::StorageMode::Volumes);
        // The volumes first: the install engine attaches the volumes that exist. A volume that exists (--replace)
        // is imported beside it, its content put in place once the containers are stopped.
        for (role_meta, role) in described.roles.iter().zip(&roles) {
            if role_meta.volumes.is_empty() {
                continue;
            }
            let Some(snapshot) = chosen.snapshots.get(&role_meta.role).cloned() else { continue };
            let subject = role_meta.container.replacen(tenant.as_str(), target.as_str(), 1);
            events.event(&BackupEvent::step(&subject, "restoring its volumes"));
            let dest = staging.path().join(&role_meta.role);
            let (a, d) = (repo.clone(), dest.clone());
            tokio::task::spawn_blocking(move || restore_snapshot(&a, &snapshot, &d)).await.map_err(join_error)??;
            let restored_root =
                dest.join(snapshot_path(tenant.as_str(), &role_meta.role).strip_prefix("/").unwrap_or(Path::new("")));
            for volume in &role_meta.volumes {
                let file = restored_root.join("volumes").join(format!("{}.tar", volume.kind()));
                let name = install::storage::volume_name(&target, *role, volume.kind());
                let on = on_member(lxd, members.get(role));
                let imported = match volumes.iter().find(|v| v.volume == name && v.replaced) {
                    Some(planned) => super::volumes::import_staged(&on, pool, &name, &file)
                        .await
                        .map(|temp| staged.push((planned.clone(), temp))),
                    None => super::volumes::import(&on, pool, &name, &file).await.map(|()| {
                        created_volumes.push((pool.to_string(), name.to_string(), members.get(role).cloned()))
                    }),
                };
                if let Err(e) = imported {
                    for (v, temp) in &staged {
                        super::volumes::remove_if_exists(lxd, &v.pool, temp).await;
                    }
                    return Err(e);
                }
                std::fs::remove_file(&file).map_err(BackupError::io(&file))?;
            }
            events.event(&BackupEvent::new(
                &subject,
                BackupEventKind::Done {
                    detail: format!("{} volume(s) imported on pool {pool}", role_meta.volumes.len()),
                },
            ));
        }
    }
    let mut request = InstallRequest::new(tenant_file, roles.clone());
    request.stack_dir = Some(stack_dir.clone());
    request.image = options.image.clone();
    for p in plan.ports.iter().filter(|p| p.kept) {
        if let Ok(role) = p.role.parse::<Role>() {
            request.ports.insert((role, p.name.clone()), p.recorded);
        }
    }

    // --replace over volumes: from here on, a failure puts the tenant back as it was (the safety snapshot), so
    // nothing is lost; the containers that ran before run again.
    let mut was_running = Vec::new();
    if !staged.is_empty() {
        let users: Vec<&ManagedInstance> = existing_instances
            .iter()
            .filter(|m| {
                inventory::attached_volumes(&m.instance)
                    .iter()
                    .any(|a| staged.iter().any(|(v, _)| v.pool == a.pool && v.volume == a.volume))
            })
            .collect();
        for user in users {
            let name = InstanceName::new(user.name.as_str()).map_err(|e| BackupError::BadInput(e.to_string()))?;
            events.event(&BackupEvent::step(user.name.as_str(), "stopping (its volumes are replaced)"));
            if lxd.ensure_stopped(&name, Duration::from_secs(60)).await? {
                was_running.push(name);
            }
        }
    }
    let applied = async {
        for (volume, temp) in &staged {
            events.event(&BackupEvent::step("tenant", format!("replacing the content of volume {}", volume.volume)));
            super::volumes::replace_content(
                &on_member(lxd, volume.member.as_ref()),
                &volume.pool,
                &volume.volume,
                temp,
            )
            .await?;
        }
        events.event(&BackupEvent::step("tenant", "creating the containers"));
        install::install(lxd, &request, install_events).await?;
        restore_host_data(lxd, &described, &chosen, &repo, staging.path(), tenant, &target, &stack_dir, events).await?;

        // Converge once more: health as install checks it.
        events.event(&BackupEvent::step("tenant", "checking health"));
        let report = install::install(lxd, &request, install_events).await?;
        let health: Vec<(String, bool, String)> =
            report.components.iter().map(|c| (c.instance.clone(), c.health.healthy, c.health.detail.clone())).collect();
        if !staged.is_empty() {
            let unhealthy: Vec<String> =
                health.iter().filter(|(_, ok, _)| !ok).map(|(c, _, d)| format!("{c}: {d}")).collect();
            if !unhealthy.is_empty() {
                return Err(BackupError::Unhealthy { tenant: target.to_string(), detail: unhealthy.join("; ") });
            }
        }

        // The restored PostgreSQL data as its consumer uses it: every table the backup recorded, with its rows and
        // checksum, and the application role reading and writing every table.
        let mut checked_tables = 0;
        for role_meta in described.roles.iter().filter(|r| !r.databases.is_empty()) {
            let subject = role_meta.container.replacen(tenant.as_str(), target.as_str(), 1);
            let name = InstanceName::new(subject.as_str()).map_err(|e| BackupError::BadInput(e.to_string()))?;
            let tables: usize = role_meta.databases.iter().map(|d| d.tables.len()).sum();
            events.event(&BackupEvent::step(&subject, format!("checking {tables} tables against the backup's record")));
            let differences = super::rows::check(lxd, &name, &role_meta.databases).await?;
            if !differences.is_empty() {
                events.event(&BackupEvent::new(
                    &subject,
                    BackupEventKind::Failed { error: format!("{} table(s) differ from the backup", differences.len()) },
                ));
                return Err(BackupError::RowsDiffer {
                    container: subject,
                    backup: chosen.backup.clone(),
                    differences,
                    left_in_place: staged.is_empty(),
                });
            }
            events.event(&BackupEvent::new(
                &subject,
                BackupEventKind::Done {
                    detail: format!(
                        "{tables} tables hold the recorded rows; the application role reads and writes them"
                    ),
                },
            ));
            checked_tables += tables;
        }
        Ok((health, checked_tables))
    }
    .await;
    match applied {
        Ok((health, checked_tables)) => {
            Ok(RestoreReport { plan, safety_snapshot, health, checked_tables, applied: true })
        }
        Err(cause) if !staged.is_empty() => {
            let snapshot = safety_snapshot.clone().unwrap_or_default();
            events.event(&BackupEvent::step(
                "tenant",
                format!("the restore failed: putting the tenant back from {snapshot}"),
            ));
            for (volume, temp) in &staged {
                super::volumes::remove_if_exists(lxd, &volume.pool, temp).await;
            }
            let replaced: Vec<VolumePlan> = staged.iter().map(|(v, _)| v.clone()).collect();
            let created = Created { containers_before: &existing, volumes: &created_volumes, secrets: &added_secrets };
            match put_back(lxd, &target, &snapshot, &replaced, &created, &was_running, &saved_secrets, &stack_dir).await
            {
                Ok(()) => {
                    events.event(&BackupEvent::step("tenant", "put back; waiting for its containers' health"));
                    let health = health_after_undo(lxd, &target, &was_running).await;
                    Err(BackupError::ReplaceUndone {
                        tenant: target.to_string(),
                        snapshot,
                        health,
                        cause: Box::new(cause),
                    })
                }
                Err(undo) => Err(BackupError::ReplaceUndoFailed {
                    tenant: target.to_string(),
                    snapshot,
                    cause: Box::new(cause),
                    undo: Box::new(undo),
                }),
            }
        }
        Err(cause) => Err(cause),
    }
}

/// The client whose creations (`POST`) go to `member` (`target=`), or `lxd` itself off a cluster.
fn on_member(lxd: &Client, member: Option<&String>) -> Client {
    match member {
        Some(member) => lxd.target(member.clone()),
        None => lxd.clone(),
    }
}

/// On a cluster, the member each role's container and volumes go to: where its container is (an existing tenant:
/// `--target` naming another member is refused, `gbo move` moves containers), else `--target`, else the tenant
/// file's `[placement]` (a group: its first online member), else the member gbo talks to (so a container lands
/// where its member-local volumes were imported). Empty off a cluster (`--target` there is refused), and every
/// member named is checked to be in the cluster and online.
async fn members_for(
    lxd: &Client,
    target: Option<&str>,
    tenant_file: &TenantFile,
    tenant: &TenantName,
    roles: &[Role],
    existing: &[ManagedInstance],
) -> Result<BTreeMap<Role, String>, BackupError> {
    let info = lxd.cluster().await?;
    if !info.enabled {
        return match target {
            Some(t) => Err(BackupError::BadInput(format!(
                "--target {t}: {} is not a cluster; placement needs one",
                lxd.endpoint().describe()
            ))),
            None => Ok(BTreeMap::new()),
        };
    }
    let all = lxd.cluster_members().await?;
    if let Some(t) = target {
        if let Some(why) = install::placement::refusal(&gbo_components::Placement::Member(t.to_string()), &all) {
            return Err(BackupError::BadInput(format!("--target {t}: {why}")));
        }
    }
    let mut out = BTreeMap::new();
    for role in roles {
        let instance = gbo_components::instance_name(tenant, *role);
        let located = existing.iter().find(|m| m.name.as_str() == instance).map(|m| m.instance.location.clone());
        let member = match (located, target) {
            (Some(at), Some(t)) if !at.is_empty() && at != t => {
                return Err(BackupError::BadInput(format!(
                    "--target {t}: {instance} exists on member {at}; a restore over it stays there (`gbo move` \
                     moves it first), or leave --target out"
                )))
            }
            (Some(at), _) if !at.is_empty() => at,
            (_, Some(t)) => t.to_string(),
            _ => match tenant_file.placement.get(role) {
                Some(gbo_components::Placement::Member(m)) => m.clone(),
                Some(gbo_components::Placement::Group(g)) => all
                    .iter()
                    .find(|m| m.groups.contains(g) && m.is_online())
                    .map(|m| m.server_name.clone())
                    .ok_or_else(|| BackupError::BadInput(format!("cluster group {g} has no online member")))?,
                None => info.server_name.clone(),
            },
        };
        if let Some(why) = install::placement::refusal(&gbo_components::Placement::Member(member.clone()), &all) {
            return Err(BackupError::BadInput(format!("{instance}: {why}")));
        }
        out.insert(*role, member);
    }
    Ok(out)
}

/// Each host-storage role's data back: the container stopped, its `data` and `logs` directories replaced by the
/// backup's (links as links), owners shifted to the container's idmap, started.
#[allow(clippy::too_many_arguments)]
async fn restore_host_data(
    lxd: &Client,
    described: &TenantMeta,
    chosen: &BackupInfo,
    repo: &Indexed,
    staging: &Path,
    tenant: &TenantName,
    target: &TenantName,
    stack_dir: &Path,
    events: &dyn Observer<BackupEvent>,
) -> Result<(), BackupError> {
    for role_meta in &described.roles {
        let subject = role_meta.container.replacen(tenant.as_str(), target.as_str(), 1);
        if !role_meta.volumes.is_empty() {
            continue;
        }
        let Some(snapshot) = chosen.snapshots.get(&role_meta.role).cloned() else { continue };
        events.event(&BackupEvent::step(&subject, "restoring its data"));
        let dest = staging.join(&role_meta.role);
        let a = repo.clone();
        let d = dest.clone();
        tokio::task::spawn_blocking(move || restore_snapshot(&a, &snapshot, &d)).await.map_err(join_error)??;
        let restored_root =
            dest.join(snapshot_path(tenant.as_str(), &role_meta.role).strip_prefix("/").unwrap_or(Path::new("")));
        let name = InstanceName::new(subject.as_str()).map_err(|e| BackupError::BadInput(e.to_string()))?;
        let instance = lxd.instance(&name).await?;
        let Some(managed) = inventory::describe(&instance) else { continue };
        let new_base = install::plan::idmap_base(&instance);
        lxd.set_state(&name, &StateChange::new(StateAction::Stop).force(true).timeout(Duration::from_secs(60))).await?;
        let mut moved = Vec::new();
        for mount in managed.mounts.iter().filter(|m| m.device.starts_with(inventory::DEVICE_PREFIX)) {
            let leaf = super::source::mount_path(Path::new(""), &mount.device);
            if leaf == Path::new("conf") {
                continue;
            }
            let Some(from) = HostDir::open_root_if_exists(&restored_root.join(&leaf))? else { continue };
            let Some(to) = super::create::open_mount(Some(stack_dir), &mount.host_path)? else { continue };
            to.empty()?;
            to.copy_from(&from)?;
            copy_root_attributes(&from, &to)?;
            moved.push(mount.host_path.clone());
        }
        if let (Some(from), Some(to)) = (role_meta.idmap_base, new_base) {
            let roots = moved.clone();
            tokio::task::spawn_blocking(move || install::idmap::shift_trees(&roots, from, to))
                .await
                .map_err(join_error)??;
        }
        lxd.set_state(&name, &StateChange::new(StateAction::Start).timeout(Duration::from_secs(60))).await?;
        events.event(&BackupEvent::new(
            &subject,
            BackupEventKind::Done { detail: format!("data restored ({} directories)", moved.len()) },
        ));
    }
    Ok(())
}

/// What a `--replace` restore created that the tenant did not have before (an undo deletes it).
struct Created<'a> {
    /// The tenant's containers before the restore: any other is the restore's.
    containers_before: &'a [String],
    /// The volumes it imported for roles the tenant did not have: (pool, volume, member).
    volumes: &'a [(String, String, Option<String>)],
    /// The secret files it wrote that the tenant did not have.
    secrets: &'a [std::ffi::OsString],
}

/// Undo a `--replace` restore over volumes: the containers, volumes and secret files it created for roles the
/// tenant did not have deleted; every container of the tenant that has the safety snapshot back to it (its root
/// filesystem and its volumes, through `gbo snapshot restore`'s own code), any replaced volume no container uses
/// back to its snapshot, the old secrets back, and the containers that ran before started.
#[allow(clippy::too_many_arguments)]
async fn put_back(
    lxd: &Client,
    target: &TenantName,
    snapshot: &str,
    replaced: &[VolumePlan],
    created: &Created<'_>,
    was_running: &[InstanceName],
    saved_secrets: &SavedSecrets,
    stack_dir: &Path,
) -> Result<(), BackupError> {
    let name = crate::snapshot::snapshot_name(snapshot)?;
    let mut restored_volumes = Vec::new();
    for container in inventory::tenant_instances(lxd, target).await? {
        let instance = InstanceName::new(container.name.as_str()).map_err(|e| BackupError::BadInput(e.to_string()))?;
        if !created.containers_before.iter().any(|c| c.as_str() == container.name.as_str()) {
            lxd.delete_instance_if_exists(&instance).await?;
            continue;
        }
        if !lxd.snapshots(&instance).await?.iter().any(|s| s.name == snapshot) {
            continue;
        }
        let report = crate::snapshot::restore(lxd, &container, &name, false).await?;
        restored_volumes.extend(report.volumes_restored);
    }
    for volume in replaced {
        if restored_volumes.iter().any(|label| *label == format!("{}/{}", volume.pool, volume.volume)) {
            continue;
        }
        let (pool, vol) = (ObjectName::new(volume.pool.as_str())?, ObjectName::new(volume.volume.as_str())?);
        lxd.restore_volume_snapshot(&pool, &vol, &name).await?;
    }
    for (pool, volume, member) in created.volumes {
        let (pool, volume) = (ObjectName::new(pool.as_str())?, ObjectName::new(volume.as_str())?);
        let on = on_member(lxd, member.as_ref());
        if on.storage_volume(&pool, &volume).await?.is_some() {
            on.delete_storage_volume(&pool, &volume).await?;
        }
    }
    if !saved_secrets.is_empty() || !created.secrets.is_empty() {
        let dir = HostDir::open_root(&stack_dir.join(".secrets"))?;
        for (file, bytes) in saved_secrets {
            dir.write_file(Path::new(file), bytes, 0o600, None, 0o700)?;
        }
        for file in created.secrets {
            dir.remove(Path::new(file))?;
        }
    }
    for instance in was_running {
        lxd.ensure_running(instance).await?;
    }
    Ok(())
}

/// How long a put-back container may take to answer its health check again.
const UNDO_HEALTH_TIMEOUT: Duration = Duration::from_secs(90);

/// After an undo, the containers that ran before answer their health checks again (as `gbo status` checks them):
/// `healthy again: a, b`, or which are not and why.
async fn health_after_undo(lxd: &Client, target: &TenantName, was_running: &[InstanceName]) -> String {
    let (site, containers) =
        match (crate::site::Site::observe(lxd, None).await, inventory::tenant_instances(lxd, target).await) {
            (Ok(site), Ok(containers)) => (site, containers),
            (Err(e), _) => return format!("its health could not be checked: {e}"),
            (_, Err(e)) => return format!("its health could not be checked: {e}"),
        };
    let (mut healthy, mut not) = (Vec::new(), Vec::new());
    for container in containers.iter().filter(|c| was_running.iter().any(|r| r.as_str() == c.name.as_str())) {
        match install::health::wait_container(lxd, &site, container, UNDO_HEALTH_TIMEOUT).await {
            Some(h) if h.healthy => healthy.push(container.name.to_string()),
            Some(h) => not.push(format!("{}: {}", container.name, h.detail)),
            None => healthy.push(format!("{} (running; no health check)", container.name)),
        }
    }
    match (healthy.is_empty(), not.is_empty()) {
        (_, false) => format!(
            "not healthy after {} s: {} (`gbo status --tenant {target}` shows it again)",
            UNDO_HEALTH_TIMEOUT.as_secs(),
            not.join("; ")
        ),
        (false, true) => format!("healthy again: {}", healthy.join(", ")),
        (true, true) => "none of its containers ran before the restore".to_string(),
    }
}

/// The restored directory's own owner and mode onto the directory it replaced (the copy sets them below it).
fn copy_root_attributes(from: &HostDir, to: &HostDir) -> Result<(), BackupError> {
    let entry = from.entry()?;
    to.chown(crate::hostfs::Owner::new(entry.uid, entry.gid))?;
    to.chmod(entry.mode)?;
    Ok(())
}
