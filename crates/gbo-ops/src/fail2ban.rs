//! fail2ban, as the runbook wants it: in the proxy container the `caddy-http-flood` filter (4xx lines of Caddy's
//! JSON access log) and jail (100 errors in 60 s ban for an hour) with Debian's sshd jail disabled through
//! `jail.d/defaults-debian.conf` (containers run no SSH server, and a jail without its log stops fail2ban); the
//! mail jail in the email container; and, only with `--host`, the host's sshd jail.
//!
//! The files are rendered here with the same content as the catalogue's (`gbo_components::render::fail2ban`),
//! which its crate does not export yet; `gbo install` and this command must stay in step (a test compares them
//! once it does).
//!
//! Known limit: behind an LXD proxy device without `proxy_protocol`, every client appears as 127.0.0.1, which
//! fail2ban never bans (`ignoreself`).

use gbo_components::TenantName;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lxd_client::{Client, FileOptions, InstanceName};

use crate::doctor::inside;
use crate::inventory;
use crate::runner::HostCommand;

// Where the files live is the catalogue's to say; re-exported for callers of this module.
pub use gbo_components::render::caddy::ACCESS_LOG as CADDY_ACCESS_LOG;
pub use gbo_components::render::fail2ban::{
    CADDY_FILTER_PATH, CADDY_JAIL_PATH, DEFAULTS_DEBIAN_PATH, HOST_SSHD_JAIL_PATH, MAIL_FILTER_PATH, MAIL_JAIL_PATH,
};

/// Stalwart's logs inside the email container.
pub const STALWART_LOG_GLOB: &str = "/opt/gbo/logs/stalwart.log*";
/// The proxy's jail.
pub const CADDY_JAIL: &str = "caddy-http-flood";
/// The email container's jail.
pub const MAIL_JAIL: &str = "stalwart-auth";

// The files themselves are the catalogue's (pure rendering lives in gbo-components); this module installs them.
pub use gbo_components::render::fail2ban::{
    caddy_filter, caddy_jail, defaults_debian_without_sshd, host_sshd_jail, mail_filter, mail_jail,
};

/// What fail2ban failed at. Every variant means exit code 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Fail2banError {
    /// Nothing to act on, or bad options. Nothing was changed.
    #[error("{0}")]
    BadInput(String),
    /// A step inside a container failed.
    #[error("{step} in {instance} failed: {output}")]
    Step {
        /// Container.
        instance: String,
        /// What was being done.
        step: String,
        /// Output.
        output: String,
    },
    /// A host step failed.
    #[error("{0}")]
    Host(String),
    /// LXD failed.
    #[error(transparent)]
    Lxd(#[from] lxd_client::Error),
}

/// Options of [`apply`].
#[derive(Debug, Clone)]
pub struct Fail2banOptions {
    /// Also install the host's sshd jail.
    pub host: bool,
    /// The host's root (`/`; a directory to render into for a look or a test).
    pub host_root: PathBuf,
    /// Change nothing.
    pub dry_run: bool,
}

impl Default for Fail2banOptions {
    fn default() -> Self {
        Self { host: false, host_root: PathBuf::from("/"), dry_run: false }
    }
}

/// What was done in one place.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Fail2banTarget {
    /// A container name, or `host`.
    pub target: String,
    /// Files written (or that would be).
    pub changed: Vec<String>,
    /// `restart`, `reload` or `none`.
    pub action: String,
    /// Jails fail2ban reports running afterwards.
    pub jails: Vec<String>,
}

/// The files of a role (`proxy`, `email`).
pub fn role_files(role: &str) -> Vec<(&'static str, String)> {
    match role {
        "proxy" => vec![
            (CADDY_FILTER_PATH, caddy_filter()),
            (CADDY_JAIL_PATH, caddy_jail(CADDY_ACCESS_LOG)),
            (DEFAULTS_DEBIAN_PATH, defaults_debian_without_sshd()),
        ],
        "email" => vec![
            (MAIL_FILTER_PATH, mail_filter()),
            (MAIL_JAIL_PATH, mail_jail(STALWART_LOG_GLOB)),
            (DEFAULTS_DEBIAN_PATH, defaults_debian_without_sshd()),
        ],
        _ => Vec::new(),
    }
}

/// The jail a role must have running.
pub fn role_jail(role: &str) -> Option<&'static str> {
    match role {
        "proxy" => Some(CADDY_JAIL),
        "email" => Some(MAIL_JAIL),
        _ => None,
    }
}

/// Install the jails in the tenant's proxy and email containers (and on the host with `host`).
pub async fn apply(
    lxd: &Client,
    tenant: &TenantName,
    options: &Fail2banOptions,
) -> Result<Vec<Fail2banTarget>, Fail2banError> {
    let instances = inventory::tenant_instances(lxd, tenant).await?;
    let targets: Vec<_> = instances.iter().filter(|m| role_jail(&m.role_label()).is_some()).collect();
    if targets.is_empty() && !options.host {
        return Err(Fail2banError::BadInput(format!(
            "tenant {tenant:?} has no proxy or email container, and --host was not given: nothing to do"
        )));
    }
    let mut out = Vec::new();
    for m in targets {
        if !m.instance.is_running() {
            return Err(Fail2banError::BadInput(format!("{} is {}, not running", m.name, m.instance.status)));
        }
        let name = m.name.clone();
        out.push(apply_container(lxd, &name, &m.role_label(), options.dry_run).await?);
    }
    if options.host {
        out.push(apply_host(&options.host_root, options.dry_run)?);
    }
    Ok(out)
}

/// Install a role's fail2ban files in one container, make sure the log it reads exists, restart fail2ban when
/// anything changed (or it is not running), and check the jail runs.
pub async fn apply_container(
    lxd: &Client,
    name: &InstanceName,
    role: &str,
    dry_run: bool,
) -> Result<Fail2banTarget, Fail2banError> {
    let step =
        |step: &str, output: String| Fail2banError::Step { instance: name.to_string(), step: step.into(), output };
    let mut result = Fail2banTarget { target: name.to_string(), action: "none".into(), ..Default::default() };
    if !inside::has_program(lxd, name, "fail2ban-client").await? {
        return Err(step("looking for fail2ban", "fail2ban-client is not installed (apt-get install fail2ban)".into()));
    }
    for (path, content) in role_files(role) {
        let current = inside::read_opt(lxd, name, path).await?;
        if current.as_deref() != Some(content.as_bytes()) {
            result.changed.push(path.to_string());
            if !dry_run {
                inside::write_if_changed(lxd, name, path, content.as_bytes(), FileOptions::root(0o644)).await?;
            }
        }
    }
    let jail = role_jail(role).unwrap_or_default();
    if dry_run {
        return Ok(result);
    }
    // fail2ban refuses to start a jail whose log does not exist yet.
    if role == "proxy" && inside::read_opt(lxd, name, CADDY_ACCESS_LOG).await?.is_none() {
        let owner = inside::user(lxd, name, "caddy").await?.map(|u| (u.uid, u.gid)).unwrap_or((0, 0));
        lxd.mkdir_all(name, "/opt/gbo/logs", FileOptions::root(0o755)).await?;
        lxd.push_bytes(name, CADDY_ACCESS_LOG, Vec::new(), FileOptions::owned(owner.0, owner.1, 0o640)).await?;
    }
    if role == "email" {
        let out = inside::run(lxd, name, &["sh", "-c", "ls /opt/gbo/logs/stalwart.log* >/dev/null 2>&1 || { mkdir -p /opt/gbo/logs && touch /opt/gbo/logs/stalwart.log; }"]).await?;
        if !out.success() {
            return Err(step("creating the Stalwart log", inside::failure_text(&out)));
        }
    }
    let test = inside::run(lxd, name, &["fail2ban-client", "--test"]).await?;
    if !test.success() {
        return Err(step("checking the fail2ban configuration (fail2ban-client --test)", inside::failure_text(&test)));
    }
    let running = inside::run(lxd, name, &["systemctl", "is-active", "--quiet", "fail2ban.service"]).await?.success();
    if !result.changed.is_empty() || !running {
        let out = inside::run(lxd, name, &["systemctl", "restart", "fail2ban.service"]).await?;
        if !out.success() {
            return Err(step("restarting fail2ban", inside::failure_text(&out)));
        }
        result.action = "restart".into();
    }
    // The server answers `status` as soon as its socket is up, before it has started the jails of its
    // configuration: wait for ours (a CI run saw "Server ready" with an empty jail list).
    result.jails = jails_when(lxd, name, Duration::from_secs(30), |jails| jails.iter().any(|j| j == jail)).await?;
    if !result.jails.iter().any(|j| j == jail) {
        let log = inside::run(lxd, name, &["journalctl", "-u", "fail2ban.service", "--no-pager", "-n", "15"])
            .await?
            .stdout_text();
        return Err(step(
            &format!("starting the {jail} jail"),
            format!("fail2ban runs {:?}; its log:\n{log}", result.jails),
        ));
    }
    Ok(result)
}

/// The jails a running fail2ban reports (`fail2ban-client status`), waiting up to `wait` for its socket.
pub async fn running_jails(
    lxd: &Client,
    name: &InstanceName,
    wait: Duration,
) -> Result<Vec<String>, lxd_client::Error> {
    jails_when(lxd, name, wait, |_| true).await
}

/// Poll `fail2ban-client status` until it answers with a jail list that satisfies `done`, or `wait` has passed
/// (then the last list, empty when it never answered).
async fn jails_when(
    lxd: &Client,
    name: &InstanceName,
    wait: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Result<Vec<String>, lxd_client::Error> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut jails = Vec::new();
    loop {
        let out = inside::run(lxd, name, &["fail2ban-client", "status"]).await?;
        if out.success() {
            jails = parse_jail_list(&out.stdout_text());
            if done(&jails) {
                return Ok(jails);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(jails);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The names in `fail2ban-client status`'s "Jail list:" line.
pub fn parse_jail_list(status: &str) -> Vec<String> {
    status
        .lines()
        .find_map(|l| l.split_once("Jail list:").map(|(_, rest)| rest))
        .map(|rest| rest.split(',').map(|j| j.trim().to_string()).filter(|j| !j.is_empty()).collect())
        .unwrap_or_default()
}

/// Install the host's sshd jail under `root` (`/` is the real host); on the real host, reload a running fail2ban.
pub fn apply_host(root: &Path, dry_run: bool) -> Result<Fail2banTarget, Fail2banError> {
    let path = root.join(HOST_SSHD_JAIL_PATH.trim_start_matches('/'));
    let content = host_sshd_jail();
    let mut result =
        Fail2banTarget { target: format!("host ({})", root.display()), action: "none".into(), ..Default::default() };
    let current = std::fs::read(&path).ok();
    if current.as_deref() != Some(content.as_bytes()) {
        result.changed.push(path.display().to_string());
        if !dry_run {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Fail2banError::Host(format!("cannot create {}: {e}", parent.display())))?;
            }
            std::fs::write(&path, content.as_bytes())
                .map_err(|e| Fail2banError::Host(format!("cannot write {}: {e}", path.display())))?;
        }
    }
    if root == Path::new("/") && !dry_run && !result.changed.is_empty() {
        let client = HostCommand::new("fail2ban-client");
        if client.available() && HostCommand::new("fail2ban-client").arg("ping").run().is_ok() {
            client.clone().arg("reload").run().map_err(|e| Fail2banError::Host(e.to_string()))?;
            result.action = "reload".into();
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jail_list_is_parsed() {
        let status = "Status\n|- Number of jail:\t2\n`- Jail list:\tcaddy-http-flood, sshd\n";
        assert_eq!(parse_jail_list(status), vec!["caddy-http-flood", "sshd"]);
        assert!(parse_jail_list("Status\n|- Number of jail:\t0\n`- Jail list:\t\n").is_empty());
    }

    #[test]
    fn rendered_files_keep_the_seed_numbers() {
        let jail = caddy_jail(CADDY_ACCESS_LOG);
        assert!(jail.contains("maxretry = 100") && jail.contains("findtime = 60") && jail.contains("bantime  = 3600"));
        assert!(
            caddy_filter().contains(r#"failregex = ^.*"remote_ip":"<HOST>".*"status":4\d\d[,}]"#),
            "{}",
            caddy_filter()
        );
        assert!(defaults_debian_without_sshd().contains("[sshd]\nenabled = false"));
    }
}
