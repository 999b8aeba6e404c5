//! Tenants never share a directory. Every container records what it uses on the host (its tenant's stack dir in
//! `user.gbo.stack-dir`, its mounted host directories in its disk devices); a directory one tenant's containers
//! use is refused for any other, so two tenants can never run two PostgreSQL servers on one data directory, and
//! `uninstall --purge` of one tenant can never remove another's data.
//!
//! What counts as "used" by a container: its recorded stack dir, each mounted host directory, and each mount's
//! parent when that parent lies inside the stack dir (the role's directory `<stack-dir>/<role>`). Another tenant
//! may live *inside* a stack dir (`./botserver-stack/<tenant>` is the default layout), but never inside a role's
//! directory or a mount, and none of its own role directories or mounts may overlap another tenant's.

use std::path::{Path, PathBuf};

use crate::inventory::ManagedInstance;

use super::error::InstallError;

/// What a directory is to the container that uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// The tenant's stack dir.
    StackDir,
    /// A role's directory (`<stack-dir>/<role>`): the parent of its mounts.
    RoleDir,
    /// A mounted host directory.
    Mount,
}

impl ClaimKind {
    fn describe(self) -> &'static str {
        match self {
            ClaimKind::StackDir => "stack dir",
            ClaimKind::RoleDir => "role directory",
            ClaimKind::Mount => "mounted directory",
        }
    }
}

/// One directory used by one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The tenant of the container.
    pub tenant: String,
    /// The container.
    pub instance: String,
    /// The directory.
    pub path: PathBuf,
    /// What it is to the container.
    pub kind: ClaimKind,
}

/// Every directory the containers of a daemon use.
#[derive(Debug, Clone, Default)]
pub struct Claims(Vec<Claim>);

/// Whether one path is the other or lies inside it.
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

impl Claims {
    /// The claims of `instances` (every instance of the daemon, gbo's or not).
    pub fn of(instances: &[ManagedInstance]) -> Claims {
        let mut out = Vec::new();
        for m in instances {
            let claim = |path: &Path, kind| Claim {
                tenant: m.tenant.to_string(),
                instance: m.name.to_string(),
                path: path.to_path_buf(),
                kind,
            };
            if let Some(stack) = &m.stack_dir {
                out.push(claim(stack, ClaimKind::StackDir));
            }
            for mount in &m.mounts {
                out.push(claim(&mount.host_path, ClaimKind::Mount));
                if let (Some(parent), Some(stack)) = (mount.host_path.parent(), &m.stack_dir) {
                    if parent.starts_with(stack) && parent != stack.as_path() {
                        out.push(claim(parent, ClaimKind::RoleDir));
                    }
                }
            }
        }
        Claims(out)
    }

    /// The claims of tenants other than `tenant`.
    pub fn others<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = &'a Claim> + 'a {
        self.0.iter().filter(move |c| c.tenant != tenant)
    }

    /// Refuse (bad input, nothing changed) a stack dir and role directories for `tenant` that another tenant's
    /// containers use.
    pub fn check(&self, tenant: &str, stack_dir: &Path, dirs: &[PathBuf]) -> Result<(), InstallError> {
        for other in self.others(tenant) {
            let conflict = match other.kind {
                ClaimKind::StackDir => stack_dir == other.path,
                ClaimKind::RoleDir | ClaimKind::Mount => {
                    stack_dir.starts_with(&other.path) || dirs.iter().any(|d| overlaps(d, &other.path))
                }
            };
            if conflict {
                return Err(InstallError::BadInput(format!(
                    "stack dir {} cannot be used by tenant {tenant}: {} is the {} of tenant {} (recorded on its \
                     container {}); tenants never share a directory: give {tenant} its own with --stack-dir or the \
                     tenant file's stack_dir (nothing was changed)",
                    stack_dir.display(),
                    other.path.display(),
                    other.kind.describe(),
                    other.tenant,
                    other.instance
                )));
            }
        }
        Ok(())
    }

    /// The claim of another tenant that `path` overlaps, if any (a directory `tenant` must not remove).
    pub fn used_by_another<'a>(&'a self, tenant: &'a str, path: &Path) -> Option<&'a Claim> {
        self.others(tenant).find(|c| match c.kind {
            // Another tenant may live inside this tenant's stack dir, not inside what is removed.
            ClaimKind::StackDir => c.path.starts_with(path),
            ClaimKind::RoleDir | ClaimKind::Mount => overlaps(path, &c.path),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Mount;
    use lxd_client::{Instance, InstanceName};

    fn container(tenant: &str, role: &str, stack: &str) -> ManagedInstance {
        ManagedInstance {
            name: InstanceName::new(format!("{tenant}-{role}")).expect("a valid name"),
            tenant: gbo_components::TenantName::new(tenant).expect("a tenant name"),
            role: role.parse().ok(),
            managed: true,
            adopted: false,
            stack_dir: Some(PathBuf::from(stack)),
            mounts: ["data", "conf", "logs"]
                .iter()
                .map(|kind| Mount {
                    device: format!("gbo-{kind}"),
                    host_path: PathBuf::from(format!("{stack}/{role}/{kind}")),
                    container_path: format!("/opt/gbo/{kind}"),
                })
                .collect(),
            ports: Vec::new(),
            instance: Instance::default(),
        }
    }

    fn dirs(stack: &str, role: &str) -> Vec<PathBuf> {
        let mut out = vec![PathBuf::from(format!("{stack}/{role}"))];
        out.extend(["data", "conf", "logs"].iter().map(|k| PathBuf::from(format!("{stack}/{role}/{k}"))));
        out
    }

    #[test]
    fn a_second_tenant_on_the_same_stack_dir_is_refused_by_name() {
        let claims = Claims::of(&[container("a", "tables", "/srv/stack")]);
        let err = claims.check("b", Path::new("/srv/stack"), &dirs("/srv/stack", "tables")).expect_err("refused");
        let message = err.to_string();
        assert!(message.contains("tenant a") && message.contains("a-tables"), "{message}");
        assert!(err.is_bad_input());
        // Even a role the other tenant does not have: the stack dir itself is its.
        assert!(claims.check("b", Path::new("/srv/stack"), &dirs("/srv/stack", "cache")).is_err());
        // Its own stack dir is fine for the tenant itself.
        claims.check("a", Path::new("/srv/stack"), &dirs("/srv/stack", "cache")).expect("own");
    }

    #[test]
    fn the_default_layout_nests_tenants_without_sharing() {
        let claims = Claims::of(&[container("default", "tables", "/w/botserver-stack")]);
        claims
            .check("acme", Path::new("/w/botserver-stack/acme"), &dirs("/w/botserver-stack/acme", "tables"))
            .expect("acme inside default's stack dir");
        let both = Claims::of(&[
            container("default", "tables", "/w/botserver-stack"),
            container("acme", "tables", "/w/botserver-stack/acme"),
        ]);
        both.check("default", Path::new("/w/botserver-stack"), &dirs("/w/botserver-stack", "cache"))
            .expect("default next to acme");
        // A tenant named like a role cannot live inside that role's directory.
        assert!(both
            .check("tables", Path::new("/w/botserver-stack/tables"), &dirs("/w/botserver-stack/tables", "cache"))
            .is_err());
    }

    #[test]
    fn purge_never_removes_what_another_tenant_uses() {
        let claims = Claims::of(&[container("a", "tables", "/srv/stack")]);
        let hit = claims.used_by_another("b", Path::new("/srv/stack/tables/data")).expect("a's");
        assert_eq!(hit.tenant, "a");
        assert!(claims.used_by_another("b", Path::new("/srv/stack/tables")).is_some());
        assert!(claims.used_by_another("b", Path::new("/srv/stack/cache/data")).is_none());
        assert!(claims.used_by_another("a", Path::new("/srv/stack/tables/data")).is_none());
    }
}
