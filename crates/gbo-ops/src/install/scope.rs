//! Which tenant, stack dir and roles an install covers: the roles asked for, those already installed and the
//! dependencies of both; the stack dir from the flag, LXD's record or the tenant file, refused when another tenant
//! uses it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use gbo_components::{Role, TenantName};
use lxd_client::Client;

use super::{tenancy, InstallError, InstallRequest};
use crate::inventory::{self, ManagedInstance};

/// Resolve a possibly relative path against the working directory, without touching the file system.
pub fn absolute(path: &Path) -> Result<PathBuf, InstallError> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(InstallError::io("reading the working directory"))?.join(path)
    };
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

/// Check that `dir` can be used as a stack dir (creatable and writable) without leaving anything behind.
pub fn check_stack_dir(dir: &Path) -> Result<(), InstallError> {
    let fail = |reason: String| InstallError::StackDir { path: dir.to_path_buf(), reason };
    let mut existing = dir.to_path_buf();
    while !existing.exists() {
        if !existing.pop() {
            return Err(fail("no existing parent directory".into()));
        }
    }
    let meta = std::fs::metadata(&existing).map_err(|e| fail(format!("{}: {e}", existing.display())))?;
    if !meta.is_dir() {
        return Err(fail(format!("{} is not a directory", existing.display())));
    }
    let probe = existing.join(format!(".gbo-write-test-{}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            Ok(())
        }
        Err(e) => Err(fail(format!("{} is not writable: {e}", existing.display()))),
    }
}

/// The roles of a tenant: requested, already installed, and the dependencies of both.
#[derive(Clone)]
pub(super) struct TenantScope {
    pub(super) tenant: TenantName,
    pub(super) stack_dir: PathBuf,
    pub(super) to_install: Vec<Role>,
    pub(super) all_roles: Vec<Role>,
    pub(super) instances: Vec<ManagedInstance>,
    pub(super) notes: Vec<String>,
    pub(super) storage: super::storage::Storage,
}

pub(super) async fn scope(lxd: &Client, request: &InstallRequest, extra: &[Role]) -> Result<TenantScope, InstallError> {
    let tenant = request.tenant_file.tenant.clone();
    let everything: Vec<ManagedInstance> = lxd
        .instances()
        .await
        .map_err(InstallError::lxd("listing instances"))?
        .iter()
        .filter_map(inventory::describe)
        .collect();
    let claims = tenancy::Claims::of(&everything);
    let mut instances: Vec<ManagedInstance> = everything.into_iter().filter(|m| m.tenant == tenant).collect();
    instances.sort_by(|a, b| a.name.cmp(&b.name));
    let recorded = instances.iter().find_map(|m| m.stack_dir.clone());
    let stack_dir = match (&request.stack_dir, &recorded) {
        (Some(flag), Some(recorded)) => {
            let flag = absolute(flag)?;
            if &flag != recorded {
                return Err(InstallError::BadInput(format!(
                    "tenant {tenant} already keeps its data in {} (recorded in LXD as {}); --stack-dir {} differs: uninstall first or drop the flag",
                    recorded.display(),
                    inventory::KEY_STACK_DIR,
                    flag.display()
                )));
            }
            flag
        }
        (Some(flag), None) => absolute(flag)?,
        (None, Some(recorded)) => recorded.clone(),
        (None, None) => absolute(Path::new(&request.tenant_file.tenant_stack_dir()))?,
    };
    let mut requested: Vec<Role> = if request.all {
        Role::ALL.to_vec()
    } else if request.roles.is_empty() {
        request.tenant_file.roles.clone()
    } else {
        request.roles.clone()
    };
    for role in extra {
        if !requested.contains(role) {
            requested.push(*role);
        }
    }
    requested.dedup();
    let installed: Vec<Role> = instances.iter().filter(|m| m.managed).filter_map(|m| m.role).collect();
    let mut notes = Vec::new();
    let with_deps = gbo_components::catalogue::with_tenant_dependencies(&requested, &request.tenant_file);
    for role in &with_deps {
        if !requested.contains(role) && !installed.contains(role) {
            notes.push(format!(
                    "{role} added: a dependency of {}",
                    requested
                        .iter()
                        .filter(|r| gbo_components::catalogue::tenant_dependencies(**r, &request.tenant_file)
                            .contains(role))
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
        }
    }
    let mut to_install: Vec<Role> =
        with_deps.into_iter().filter(|r| requested.contains(r) || !installed.contains(r)).collect();
    // Webmail's database and role are made by the tables role (its spec lists them once the tenant has webmail):
    // an installed tables container converges with it.
    if to_install.contains(&Role::Webmail) && !to_install.contains(&Role::Tables) {
        notes.push("tables converged: it creates webmail's database and role".to_string());
        to_install.push(Role::Tables);
        to_install.sort();
    }
    let mut all: BTreeSet<Role> = to_install.iter().copied().collect();
    all.extend(installed.iter().copied());
    let role_dirs: Vec<PathBuf> = all.iter().map(|r| stack_dir.join(r.container_suffix())).collect();
    claims.check(tenant.as_str(), &stack_dir, &role_dirs)?;
    let storage = super::storage::Storage::resolve(
        lxd,
        &tenant,
        request.tenant_file.storage,
        request.tenant_file.pool.as_deref(),
        &stack_dir,
        &instances,
    )
    .await?;
    Ok(TenantScope { tenant, stack_dir, to_install, all_roles: all.into_iter().collect(), instances, notes, storage })
}
