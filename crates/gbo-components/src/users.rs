//! The fixed uid/gid table of the images and the Debian packages each role bakes in.

use crate::names::Role;

/// A service account created in every image with a fixed uid and gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ServiceUser {
    /// Login name (also the group name).
    pub name: &'static str,
    /// Fixed uid.
    pub uid: u32,
    /// Fixed gid of the user's primary group, same name.
    pub gid: u32,
    /// Home directory.
    pub home: &'static str,
    /// Login shell.
    pub shell: &'static str,
}

/// The service users every image has, with fixed ids.
///
/// Why fixed: host directories are chowned to `idmap base + uid` before they are attached; if a rebuilt image
/// renumbered `postgres`, existing data would become unreadable. Why these numbers: Debian allocates system
/// accounts dynamically in 100-999 (`adduser --system`), so any fixed id there could collide with whatever a
/// package creates first; 0-99 belong to `base-passwd` (`www-data` is 33 there, already fixed). A minbase image
/// has no human users, so the normal-user range from 1000 is free and stable. The image builder must create these
/// accounts *before* installing packages, so that `postgresql-common`, `redis-server` and `caddy` find their user
/// and reuse it instead of allocating one.
pub const SERVICE_USERS: &[ServiceUser] = &[
    GBUSER,
    ServiceUser { name: "postgres", uid: 1001, gid: 1001, home: "/var/lib/postgresql", shell: "/bin/bash" },
    ServiceUser { name: "redis", uid: 1002, gid: 1002, home: "/var/lib/redis", shell: "/usr/sbin/nologin" },
    ServiceUser { name: "caddy", uid: 1003, gid: 1003, home: "/var/lib/caddy", shell: "/usr/sbin/nologin" },
];

/// The seed's service user, owner of `/opt/gbo` and of every service installed from an artifact.
pub const GBUSER: ServiceUser =
    ServiceUser { name: "gbuser", uid: 1000, gid: 1000, home: "/opt/gbo", shell: "/bin/bash" };

/// `www-data` from Debian's `base-passwd` (static uid 33), used by Roundcube's PHP.
pub const WWW_DATA: ServiceUser =
    ServiceUser { name: "www-data", uid: 33, gid: 33, home: "/var/www", shell: "/usr/sbin/nologin" };

/// `root`, for init steps that only root can run (the system role's SSH host key).
pub const ROOT: ServiceUser = ServiceUser { name: "root", uid: 0, gid: 0, home: "/root", shell: "/bin/bash" };

/// A service user by name, from [`SERVICE_USERS`], `www-data` or `root`.
pub fn service_user(name: &str) -> Option<&'static ServiceUser> {
    SERVICE_USERS.iter().chain([&WWW_DATA, &ROOT]).find(|u| u.name == name)
}

/// Packages in every image, whatever the roles: systemd as init, TLS roots for artifact services, `ip`, `ps`.
pub const BASE_PACKAGES: &[&str] = &["systemd-sysv", "ca-certificates", "iproute2", "procps"];

/// The Debian 12 packages `role` needs in its image (empty for roles installed only from an artifact).
///
/// The cache role gets Redis 7 (`redis-server`, which brings `redis-tools`): Valkey is not packaged for Debian 12
/// and speaks the same protocol. The cache role renders `valkey-cli`/`valkey-server` symlinks so the seed's
/// `valkey-cli ping` works inside the container.
pub fn role_packages(role: Role) -> &'static [&'static str] {
    match role {
        Role::Tables => &["postgresql", "postgresql-client"],
        Role::Cache => &["redis-server"],
        // fail2ban guards the proxy against HTTP floods (issue 5); python3-systemd is not needed (file backend).
        // fail2ban bans with iptables (Debian's default banaction).
        Role::Proxy => &["caddy", "fail2ban", "iptables"],
        Role::Email => &["fail2ban", "iptables"],
        // Roundcube is served by Caddy and PHP-FPM: leaner than Apache, and Caddy is in the image already. Its state
        // lives in the tenant's PostgreSQL (roundcube-pgsql: PHP's pgsql driver and psql); gbo creates the database
        // itself, so dbconfig-no-thanks keeps dbconfig-common from configuring one at package install.
        Role::Webmail => &["roundcube-core", "roundcube-pgsql", "dbconfig-no-thanks", "php-fpm", "caddy"],
        // Forgejo shells out to git.
        Role::Alm => &["git"],
        // The runner runs jobs on the host executor (no Docker inside the container): jobs need git and a shell, and
        // deploy to -system over SSH (`gbo ci connect` makes the runner's key with ssh-keygen).
        Role::AlmCi => &["git", "openssh-client"],
        // The seed's firewall rules live in the system container; its sshd takes the runner's deploys (key only,
        // gbuser, loopback inside), whose root steps go through sudo.
        Role::System => &["iptables", "openssh-server", "sudo"],
        Role::Drive | Role::Llm | Role::Vault | Role::VectorDb | Role::Dns | Role::TableEditor => &[],
    }
}

/// Every package the one image builder installs for `roles`: [`BASE_PACKAGES`] then each role's, sorted and
/// without duplicates after the base ones.
pub fn image_packages(roles: &[Role]) -> Vec<&'static str> {
    let mut extra: Vec<&'static str> = roles.iter().flat_map(|r| role_packages(*r).iter().copied()).collect();
    extra.sort_unstable();
    extra.dedup();
    let mut all: Vec<&'static str> = BASE_PACKAGES.to_vec();
    all.extend(extra.into_iter().filter(|p| !BASE_PACKAGES.contains(p)));
    all
}

/// The roles whose software comes from Debian packages baked into the image (the default set of
/// `gbo image build`).
pub fn debian_packaged_roles() -> Vec<Role> {
    Role::ALL.into_iter().filter(|r| matches!(r, Role::Tables | Role::Cache | Role::Proxy | Role::Webmail)).collect()
}
