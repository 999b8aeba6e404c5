//! iptables as the runbook wants it (the seed's 6379 incident: a DROP before any loopback ACCEPT cut botserver off
//! its own cache): `-i lo -j ACCEPT` first in INPUT, before any DROP; the internal ports dropped from outside;
//! the rules persisted to `/etc/iptables/rules.v4` idempotently (no duplicates after repeated runs) and restored
//! at boot; ufw's `DEFAULT_FORWARD_POLICY=ACCEPT` checked where ufw is used.
//!
//! The live rules are edited in place (rules added by hand stay), never replaced wholesale. The host is changed
//! only when asked (`--host`): a wrong DROP can cut a machine off. With a host root other than `/`, nothing runs:
//! the rules file under that root is merged the same way, for a look or a test.

use gbo_components::TenantName;
use std::path::{Path, PathBuf};

use lxd_client::{Client, FileOptions, InstanceName};

use crate::doctor::inside;
use crate::inventory;
use crate::runner::{HostCommand, RunError};

/// Where the rules are persisted.
pub const RULES_V4_PATH: &str = "/etc/iptables/rules.v4";
/// The ports dropped from outside by default: the cache (the seed's rule).
pub const DEFAULT_DROPPED_PORTS: &[u16] = &[6379];
/// The unit that restores the rules at boot inside containers.
pub const FIREWALL_UNIT_PATH: &str = "/etc/systemd/system/gbo-firewall.service";
/// ufw's defaults file.
pub const UFW_DEFAULTS_PATH: &str = "/etc/default/ufw";
/// The loopback rule, as `iptables -S` prints it.
pub const LOOPBACK_RULE: &str = "-A INPUT -i lo -j ACCEPT";

/// The boot unit: restores the saved rules before the network and the services come up.
pub fn firewall_unit() -> String {
    "# Rendered by gbo; local changes are reported as drift and replaced on the next install.\n\
[Unit]\nDescription=gbo firewall rules (loopback first, internal ports dropped from outside)\nDefaultDependencies=no\n\
Before=network-pre.target system.service\nWants=network-pre.target\nConditionPathExists=/etc/iptables/rules.v4\n\n\
[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/usr/sbin/iptables-restore /etc/iptables/rules.v4\n\n\
[Install]\nWantedBy=multi-user.target\n"
        .to_string()
}

/// The DROP rule of a port, as `iptables -S` prints it.
pub fn drop_rule(port: u16) -> String {
    format!("-A INPUT -p tcp -m tcp --dport {port} -j DROP")
}

/// What is wrong with a list of INPUT rules (`iptables -S INPUT` lines): `None` when the loopback ACCEPT comes
/// before every DROP/REJECT (or there is none of those), else a sentence naming the first offending rule.
pub fn loopback_problem(rules: &[String]) -> Option<String> {
    let rules: Vec<&String> = rules.iter().filter(|r| r.starts_with("-A INPUT")).collect();
    let lo = rules.iter().position(|r| is_loopback_accept(r));
    let first_drop = rules.iter().position(|r| r.ends_with("-j DROP") || r.contains("-j REJECT"));
    match (lo, first_drop) {
        (_, None) => None,
        (None, Some(d)) => Some(format!("no loopback ACCEPT rule, and `{}` drops loopback traffic too", rules[d])),
        (Some(l), Some(d)) if d < l => {
            Some(format!("`{}` (rule {}) comes before the loopback ACCEPT (rule {})", rules[d], d + 1, l + 1))
        }
        _ => None,
    }
}

fn is_loopback_accept(rule: &str) -> bool {
    rule.trim() == LOOPBACK_RULE
}

/// The policy in ufw's defaults file, `None` when the key is absent.
pub fn ufw_forward_policy(defaults: &str) -> Option<String> {
    defaults.lines().find_map(|l| {
        let l = l.trim();
        let value = l.strip_prefix("DEFAULT_FORWARD_POLICY=")?;
        Some(value.trim_matches('"').to_string())
    })
}

/// `iptables-save` output without its timestamp comments and with zeroed counters, so that saving twice gives the
/// same bytes.
pub fn normalize_save(save: &str) -> String {
    let mut out = String::new();
    for line in save.lines() {
        if line.starts_with('#') {
            continue;
        }
        let line = match (line.starts_with(':'), line.rfind(" [")) {
            (true, Some(i)) => format!("{} [0:0]", &line[..i]),
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Merge the rules into an `iptables-restore` document (the `filter` table; other tables untouched): loopback
/// ACCEPT first in INPUT, one DROP per port, everything else kept in order.
pub fn merge_rules_v4(existing: Option<&str>, ports: &[u16]) -> String {
    let base = existing.filter(|t| t.contains("*filter")).map(normalize_save).unwrap_or_else(|| {
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n".to_string()
    });
    let mut out = String::new();
    let mut in_filter = false;
    let mut inserted = false;
    let mut filter_rules: Vec<String> = Vec::new();
    for line in base.lines() {
        if line == "*filter" {
            in_filter = true;
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if in_filter && line == "COMMIT" {
            let mut input: Vec<String> = filter_rules.iter().filter(|r| r.starts_with("-A INPUT ")).cloned().collect();
            input.retain(|r| !is_loopback_accept(r));
            input.insert(0, LOOPBACK_RULE.to_string());
            for port in ports {
                let rule = drop_rule(*port);
                if !input.contains(&rule) {
                    input.push(rule);
                }
            }
            for rule in filter_rules.iter().filter(|r| !r.starts_with("-A INPUT ")) {
                out.push_str(rule);
                out.push('\n');
            }
            for rule in input {
                out.push_str(&rule);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
            in_filter = false;
            inserted = true;
            continue;
        }
        if in_filter && line.starts_with("-A ") {
            filter_rules.push(line.to_string());
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !inserted {
        return merge_rules_v4(
            Some(&format!("{out}*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n")),
            ports,
        );
    }
    out
}

/// What failed. Every variant means exit code 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirewallError {
    /// Bad options or nothing to act on. Nothing was changed.
    #[error("{0}")]
    BadInput(String),
    /// A step failed.
    #[error("{step} on {target} failed: {output}")]
    Step {
        /// A container or `host`.
        target: String,
        /// What was being done.
        step: String,
        /// Output.
        output: String,
    },
    /// LXD failed.
    #[error(transparent)]
    Lxd(#[from] lxd_client::Error),
}

/// Options of [`apply`].
#[derive(Debug, Clone)]
pub struct FirewallOptions {
    /// TCP ports dropped from outside.
    pub dropped_ports: Vec<u16>,
    /// Also the host.
    pub host: bool,
    /// The host's root: `/` changes the live host; another directory only merges its rules file.
    pub host_root: PathBuf,
    /// Change nothing.
    pub dry_run: bool,
}

impl Default for FirewallOptions {
    fn default() -> Self {
        Self {
            dropped_ports: DEFAULT_DROPPED_PORTS.to_vec(),
            host: false,
            host_root: PathBuf::from("/"),
            dry_run: false,
        }
    }
}

/// What was done in one place.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FirewallReport {
    /// A container name or `host (<root>)`.
    pub target: String,
    /// The rule changes made (or that would be).
    pub changes: Vec<String>,
    /// Whether the rules file was written.
    pub persisted: bool,
    /// The INPUT rules afterwards.
    pub input_rules: Vec<String>,
    /// ufw's forward policy, when ufw is used there; a warning when it is not `ACCEPT`.
    pub ufw: Option<String>,
}

/// Where iptables runs.
enum Place<'a> {
    Container(&'a Client, &'a InstanceName),
    Host,
}

impl Place<'_> {
    fn label(&self) -> String {
        match self {
            Place::Container(_, name) => name.to_string(),
            Place::Host => "host".into(),
        }
    }

    /// (exit code, stdout, stderr).
    async fn run(&self, argv: &[&str]) -> Result<(i32, String, String), FirewallError> {
        match self {
            Place::Container(lxd, name) => {
                let out = inside::run(lxd, name, argv).await?;
                Ok((out.exit_code, out.stdout_text(), out.stderr_text()))
            }
            Place::Host => match HostCommand::new(argv[0]).args(&argv[1..]).run_output() {
                Ok((stdout, stderr)) => Ok((0, stdout, stderr)),
                Err(RunError::Failed { code, stderr, .. }) => Ok((code.unwrap_or(-1), String::new(), stderr)),
                Err(e) => {
                    Err(FirewallError::Step { target: "host".into(), step: argv.join(" "), output: e.to_string() })
                }
            },
        }
    }

    async fn must(&self, argv: &[&str]) -> Result<String, FirewallError> {
        let (code, stdout, stderr) = self.run(argv).await?;
        if code != 0 {
            return Err(FirewallError::Step {
                target: self.label(),
                step: format!("`{}`", argv.join(" ")),
                output: format!("exit {code}: {}", stderr.trim()),
            });
        }
        Ok(stdout)
    }

    async fn read(&self, path: &str) -> Result<Option<String>, FirewallError> {
        match self {
            Place::Container(lxd, name) => {
                Ok(inside::read_opt(lxd, name, path).await?.map(|b| String::from_utf8_lossy(&b).into_owned()))
            }
            Place::Host => Ok(std::fs::read_to_string(path).ok()),
        }
    }

    async fn write(&self, path: &str, content: &str) -> Result<(), FirewallError> {
        match self {
            Place::Container(lxd, name) => {
                inside::write_if_changed(lxd, name, path, content.as_bytes(), FileOptions::root(0o644)).await?;
                Ok(())
            }
            Place::Host => {
                let p = Path::new(path);
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| FirewallError::Step {
                        target: "host".into(),
                        step: format!("creating {}", parent.display()),
                        output: e.to_string(),
                    })?;
                }
                std::fs::write(p, content).map_err(|e| FirewallError::Step {
                    target: "host".into(),
                    step: format!("writing {path}"),
                    output: e.to_string(),
                })
            }
        }
    }
}

/// The live INPUT rules of a container (`iptables -S INPUT`).
pub async fn container_input_rules(lxd: &Client, name: &InstanceName) -> Result<Vec<String>, FirewallError> {
    input_rules(&Place::Container(lxd, name)).await
}

async fn input_rules(place: &Place<'_>) -> Result<Vec<String>, FirewallError> {
    Ok(place
        .must(&["iptables", "-S", "INPUT"])
        .await?
        .lines()
        .filter(|l| l.starts_with("-A INPUT"))
        .map(str::to_string)
        .collect())
}

async fn converge(
    place: &Place<'_>,
    options: &FirewallOptions,
    boot_unit: bool,
) -> Result<FirewallReport, FirewallError> {
    let mut report = FirewallReport { target: place.label(), ..Default::default() };
    let rules = input_rules(place).await?;
    if rules.first().map(String::as_str) != Some(LOOPBACK_RULE) {
        report.changes.push("insert `-i lo -j ACCEPT` as INPUT rule 1".into());
        if !options.dry_run {
            // Drop misplaced copies first (bounded: each pass removes one), then insert at the top.
            for _ in 0..rules.iter().filter(|r| is_loopback_accept(r)).count() {
                place.must(&["iptables", "-D", "INPUT", "-i", "lo", "-j", "ACCEPT"]).await?;
            }
            place.must(&["iptables", "-I", "INPUT", "1", "-i", "lo", "-j", "ACCEPT"]).await?;
        }
    }
    for port in &options.dropped_ports {
        if !rules.contains(&drop_rule(*port)) {
            report.changes.push(format!("append `-p tcp --dport {port} -j DROP`"));
            if !options.dry_run {
                let p = port.to_string();
                place
                    .must(&["iptables", "-A", "INPUT", "-p", "tcp", "-m", "tcp", "--dport", p.as_str(), "-j", "DROP"])
                    .await?;
            }
        }
    }
    if !options.dry_run {
        let saved = normalize_save(&place.must(&["iptables-save"]).await?);
        let current = place.read(RULES_V4_PATH).await?;
        if current.as_deref() != Some(saved.as_str()) {
            place.write(RULES_V4_PATH, &saved).await?;
            report.persisted = true;
        }
        if boot_unit {
            let unit = firewall_unit();
            if place.read(FIREWALL_UNIT_PATH).await?.as_deref() != Some(unit.as_str()) {
                place.write(FIREWALL_UNIT_PATH, &unit).await?;
                place.must(&["systemctl", "daemon-reload"]).await?;
            }
            place.must(&["systemctl", "enable", "--quiet", "gbo-firewall.service"]).await?;
        }
    }
    report.input_rules = input_rules(place).await?;
    report.ufw =
        place.read(UFW_DEFAULTS_PATH).await?.map(|d| ufw_forward_policy(&d).unwrap_or_else(|| "(unset)".into()));
    Ok(report)
}

/// Converge one container's rules (and its boot unit).
pub async fn apply_container(
    lxd: &Client,
    name: &InstanceName,
    options: &FirewallOptions,
) -> Result<FirewallReport, FirewallError> {
    converge(&Place::Container(lxd, name), options, true).await
}

/// Converge the tenant's system container, and the host with `options.host`.
pub async fn apply(
    lxd: &Client,
    tenant: &TenantName,
    options: &FirewallOptions,
) -> Result<Vec<FirewallReport>, FirewallError> {
    let instances = inventory::tenant_instances(lxd, tenant).await?;
    let system = instances.iter().find(|m| m.role == Some(gbo_components::Role::System));
    if system.is_none() && !options.host {
        return Err(FirewallError::BadInput(format!(
            "tenant {tenant:?} has no system container (`{tenant}-system`), and --host was not given: nothing to do"
        )));
    }
    let mut out = Vec::new();
    if let Some(m) = system {
        if !m.instance.is_running() {
            return Err(FirewallError::BadInput(format!("{} is {}, not running", m.name, m.instance.status)));
        }
        let name = m.name.clone();
        out.push(apply_container(lxd, &name, options).await?);
    }
    if options.host {
        out.push(apply_host(options).await?);
    }
    Ok(out)
}

/// The host: live rules when the root is `/`; otherwise only the rules file under the root is merged.
pub async fn apply_host(options: &FirewallOptions) -> Result<FirewallReport, FirewallError> {
    if options.host_root == Path::new("/") {
        let mut report = converge(&Place::Host, options, false).await?;
        report.target = "host (/)".into();
        return Ok(report);
    }
    let path = options.host_root.join(RULES_V4_PATH.trim_start_matches('/'));
    let existing = std::fs::read_to_string(&path).ok();
    let merged = merge_rules_v4(existing.as_deref(), &options.dropped_ports);
    let mut report = FirewallReport { target: format!("host ({})", options.host_root.display()), ..Default::default() };
    if existing.as_deref() != Some(merged.as_str()) {
        report.changes.push(format!("merge {}", path.display()));
        if !options.dry_run {
            Place::Host.write(&path.display().to_string(), &merged).await?;
            report.persisted = true;
        }
    }
    report.input_rules = merged.lines().filter(|l| l.starts_with("-A INPUT")).map(str::to_string).collect();
    let ufw = options.host_root.join(UFW_DEFAULTS_PATH.trim_start_matches('/'));
    report.ufw = std::fs::read_to_string(ufw).ok().map(|d| ufw_forward_policy(&d).unwrap_or_else(|| "(unset)".into()));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_must_come_before_drops() {
        let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(loopback_problem(&r(&[LOOPBACK_RULE, "-A INPUT -p tcp -m tcp --dport 6379 -j DROP"])).is_none());
        assert!(loopback_problem(&r(&["-A INPUT -p tcp -m tcp --dport 6379 -j DROP"]))
            .expect("loopback_problem")
            .contains("no loopback"));
        assert!(loopback_problem(&r(&["-A INPUT -p tcp -m tcp --dport 6379 -j DROP", LOOPBACK_RULE]))
            .expect("loopback_problem")
            .contains("rule 1"));
        assert!(loopback_problem(&r(&[])).is_none());
    }

    #[test]
    fn merging_is_idempotent_and_keeps_other_rules() {
        let existing = "# Generated by iptables-save v1.8.9 on Sun\n*nat\n:PREROUTING ACCEPT [3:180]\nCOMMIT\n*filter\n:INPUT ACCEPT [10:20]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 6379 -j DROP\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n";
        let merged = merge_rules_v4(Some(existing), &[6379]);
        let input: Vec<&str> = merged.lines().filter(|l| l.starts_with("-A INPUT")).collect();
        assert_eq!(
            input,
            vec![
                LOOPBACK_RULE,
                "-A INPUT -p tcp -m tcp --dport 6379 -j DROP",
                "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"
            ]
        );
        assert!(merged.contains("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n") && !merged.contains('#'));
        assert_eq!(merge_rules_v4(Some(&merged), &[6379]), merged);
        let fresh = merge_rules_v4(None, &[6379]);
        assert_eq!(merge_rules_v4(Some(&fresh), &[6379]), fresh);
    }

    #[test]
    fn ufw_policy_is_read() {
        assert_eq!(ufw_forward_policy("IPV6=yes\nDEFAULT_FORWARD_POLICY=\"DROP\"\n").as_deref(), Some("DROP"));
        assert_eq!(ufw_forward_policy("DEFAULT_FORWARD_POLICY=\"ACCEPT\"").as_deref(), Some("ACCEPT"));
        assert_eq!(ufw_forward_policy("IPV6=yes"), None);
    }
}
