//! Safe Caddy changes, as the production runbook demands: back up the current Caddyfile with a timestamp, refuse a
//! config that loses sites (unless each is named in `allow_removal`) or has no `storage` block, validate it as the
//! service user, reload (never restart), probe every site, and restore the backup when anything fails.
//! `prune_dead_domains` removes sites whose domains have no DNS record and then restarts Caddy (the seed's rule:
//! a restart clears the ACME state a reload keeps).

pub mod caddyfile;
pub mod resolve;

use gbo_components::TenantName;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use lxd_client::{Client, InstanceName};

use crate::doctor::inside::{self, User};
use crate::inventory::{self, PublishedPort};
use caddyfile::{Caddyfile, SiteAddress};
use resolve::{Resolver, Verdict};

/// Where the proxy's Caddyfile lives inside its container (the seed's path).
pub const CADDYFILE_PATH: &str = "/opt/gbo/conf/config";
/// The units that may run Caddy, in the order they are looked for: gbo's, then Debian's.
pub const CADDY_UNITS: &[&str] = &["proxy.service", "caddy.service"];
/// The user Caddy runs as.
pub const CADDY_USER: &str = "caddy";

/// What went wrong. Every variant means exit code 2; `BadInput` and `Refused` also mean nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The input is wrong (a Caddyfile that does not parse, an invalid domain, a tenant without a proxy). Nothing
    /// was changed.
    #[error("{0}")]
    BadInput(String),
    /// The change is refused by a rule of the runbook. Nothing was changed.
    #[error("refused: {0}")]
    Refused(String),
    /// Caddy refused the new config (`caddy validate`). Nothing was changed.
    #[error("`caddy validate` (as user {user}) rejected {path} in {instance}: {output}")]
    Invalid {
        /// Container.
        instance: String,
        /// The file validated.
        path: String,
        /// The user it ran as.
        user: String,
        /// Caddy's message.
        output: String,
    },
    /// The change was made, then failed (reload or probes); the backup was put back and reloaded.
    #[error("{reason}; restored {config} from {backup} and reloaded{restore_note}")]
    RolledBack {
        /// What failed.
        reason: String,
        /// The Caddyfile.
        config: String,
        /// The backup it was restored from.
        backup: String,
        /// Extra words when the restore itself had trouble.
        restore_note: String,
    },
    /// A step failed.
    #[error("{step} in {instance} failed: {output}")]
    Step {
        /// Container.
        instance: String,
        /// What was being done.
        step: String,
        /// The command's output.
        output: String,
    },
    /// Talking to LXD failed.
    #[error(transparent)]
    Lxd(#[from] lxd_client::Error),
}

/// The proxy container of a tenant and what is needed to change its Caddy.
#[derive(Debug, Clone)]
pub struct ProxyTarget {
    /// The tenant.
    pub tenant: String,
    /// The container.
    pub instance: InstanceName,
    /// The Caddyfile inside.
    pub config_path: String,
    /// Ports the container publishes on the host (to probe 80 and 443 from the host's loopback).
    pub ports: Vec<PublishedPort>,
}

impl ProxyTarget {
    /// Find the tenant's proxy container (`user.gbo.role=proxy`, or named `{tenant}-proxy`); it must be running.
    pub async fn find(lxd: &Client, tenant: &TenantName) -> Result<Self, ProxyError> {
        let instances = inventory::tenant_instances(lxd, tenant).await?;
        let Some(proxy) = instances.into_iter().find(|m| m.role == Some(gbo_components::Role::Proxy)) else {
            return Err(ProxyError::BadInput(format!(
                "tenant {tenant:?} has no proxy container (looked for `user.gbo.role=proxy` or a container named `{tenant}-proxy`)"
            )));
        };
        if !proxy.instance.is_running() {
            return Err(ProxyError::BadInput(format!(
                "the proxy container {} is {}, not running",
                proxy.name, proxy.instance.status
            )));
        }
        let instance = InstanceName::new(proxy.name.as_str())?;
        Ok(Self { tenant: tenant.to_string(), instance, config_path: CADDYFILE_PATH.to_string(), ports: proxy.ports })
    }

    fn backup_prefix(&self) -> String {
        format!("{}.bak-", self.config_path)
    }
}

/// Options of [`apply`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Site hosts that may disappear (the seed forbids losing sites silently).
    pub allow_removal: Vec<String>,
    /// Check and print, change nothing.
    pub dry_run: bool,
    /// Probe every site after reloading (restore on failure).
    pub probe: bool,
    /// How long each site may take to answer.
    pub probe_timeout: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self { allow_removal: Vec::new(), dry_run: false, probe: true, probe_timeout: Duration::from_secs(15) }
    }
}

/// The outcome of one site probe.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Probe {
    /// The site host.
    pub host: String,
    /// The URL asked (connected to the host's loopback, or from inside the container).
    pub url: String,
    /// The HTTP status, when Caddy answered.
    pub status: Option<u16>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// What [`apply`], [`reload`] or [`prune_dead_domains`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ApplyReport {
    /// Container.
    pub instance: String,
    /// The Caddyfile.
    pub config: String,
    /// Where the previous file was saved.
    pub backup: Option<String>,
    /// Site hosts before.
    pub sites_before: Vec<String>,
    /// Site hosts after.
    pub sites_after: Vec<String>,
    /// Hosts removed (each allowed explicitly).
    pub removed: Vec<String>,
    /// Hosts added.
    pub added: Vec<String>,
    /// Whether the file changed.
    pub changed: bool,
    /// `reload`, `restart`, or `none`.
    pub action: String,
    /// Site probes after the change.
    pub probes: Vec<Probe>,
    /// Dry run: nothing was changed.
    pub dry_run: bool,
}

/// The checks that need no container: the new text parses, keeps the storage block, names valid hosts, and loses
/// no site of `current` except those in `allow_removal`. Returns (removed, added).
pub fn check_candidate(
    current: Option<&str>,
    new: &str,
    allow_removal: &[String],
) -> Result<(Vec<String>, Vec<String>), ProxyError> {
    for domain in allow_removal {
        if !caddyfile::valid_domain(domain, true) {
            return Err(ProxyError::BadInput(format!("--allow-removal {domain:?} is not a valid domain name")));
        }
    }
    let parsed =
        Caddyfile::parse(new).map_err(|e| ProxyError::BadInput(format!("the new Caddyfile does not parse: {e}")))?;
    if !parsed.has_storage_block() {
        return Err(ProxyError::Refused(
            "the new Caddyfile has no `storage` option in its global block; without `storage file_system { root /opt/gbo/data/caddy }` \
             a restart loses the certificates"
                .into(),
        ));
    }
    for site in parsed.sites() {
        for address in &site.addresses {
            if let Some(host) = address.host() {
                // IPs, single-label names (`localhost`) and `{$ENV}` placeholders are Caddy's business.
                let ok = host.parse::<IpAddr>().is_ok()
                    || host.starts_with('{')
                    || (!host.contains('.') && caddyfile::valid_domain(&format!("{host}.x"), false))
                    || caddyfile::valid_domain(&host, true);
                if !ok {
                    return Err(ProxyError::BadInput(format!(
                        "site address {:?} (line {}) is not a valid domain name",
                        address.address, site.line
                    )));
                }
            }
        }
    }
    let new_hosts = parsed.hosts();
    let old_hosts = match current {
        Some(text) => Caddyfile::parse(text).map(|c| c.hosts()).unwrap_or_default(),
        None => Vec::new(),
    };
    let allow: Vec<String> = allow_removal.iter().map(|d| d.trim_end_matches('.').to_ascii_lowercase()).collect();
    let lost: Vec<String> = old_hosts.iter().filter(|h| !new_hosts.contains(h)).cloned().collect();
    let refused: Vec<&String> = lost.iter().filter(|h| !allow.contains(h)).collect();
    if !refused.is_empty() {
        return Err(ProxyError::Refused(format!(
            "the new Caddyfile loses {} of {} sites ({}); never replace the Caddyfile with a partial config. \
             Name each site that may go with --allow-removal",
            refused.len(),
            old_hosts.len(),
            refused.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let added = new_hosts.iter().filter(|h| !old_hosts.contains(h)).cloned().collect();
    Ok((lost, added))
}

async fn caddy_user(lxd: &Client, target: &ProxyTarget) -> Result<User, ProxyError> {
    inside::user(lxd, &target.instance, CADDY_USER).await?.ok_or_else(|| {
        ProxyError::BadInput(format!("there is no `{CADDY_USER}` user in {}: is Caddy installed?", target.instance))
    })
}

async fn validate(lxd: &Client, target: &ProxyTarget, user: &User, path: &str) -> Result<(), ProxyError> {
    let out =
        inside::run_as(lxd, &target.instance, user, &["caddy", "validate", "--config", path, "--adapter", "caddyfile"])
            .await?;
    if out.success() {
        return Ok(());
    }
    Err(ProxyError::Invalid {
        instance: target.instance.to_string(),
        path: path.to_string(),
        user: user.name.clone(),
        output: caddy_message(&inside::failure_text(&out)),
    })
}

/// Caddy logs JSON-ish lines; keep the `Error:` line when there is one.
fn caddy_message(text: &str) -> String {
    text.lines()
        .rfind(|l| l.contains("Error:") || l.contains("error"))
        .map(str::to_string)
        .unwrap_or_else(|| text.to_string())
}

async fn caddy_reload(lxd: &Client, target: &ProxyTarget, user: &User) -> Result<(), String> {
    let argv = ["caddy", "reload", "--config", target.config_path.as_str(), "--adapter", "caddyfile", "--force"];
    match inside::run_as(lxd, &target.instance, user, &argv).await {
        Ok(out) if out.success() => Ok(()),
        Ok(out) => Err(format!("`caddy reload` failed ({})", caddy_message(&inside::failure_text(&out)))),
        Err(e) => Err(format!("`caddy reload` could not run: {e}")),
    }
}

async fn restart_caddy(lxd: &Client, target: &ProxyTarget) -> Result<String, String> {
    let unit =
        inside::active_unit(lxd, &target.instance, CADDY_UNITS).await.map_err(|e| e.to_string())?.ok_or_else(|| {
            format!("no Caddy unit is active in {} (looked for {})", target.instance, CADDY_UNITS.join(", "))
        })?;
    let out = inside::run(lxd, &target.instance, &["systemctl", "restart", unit.as_str()])
        .await
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!("`systemctl restart {unit}` failed ({})", inside::failure_text(&out)));
    }
    Ok(unit)
}

fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

async fn backup(lxd: &Client, target: &ProxyTarget) -> Result<String, ProxyError> {
    let base = format!("{}{}", target.backup_prefix(), timestamp());
    let mut path = base.clone();
    let mut n = 1;
    while inside::read_opt(lxd, &target.instance, &path).await?.is_some() {
        path = format!("{base}-{n}");
        n += 1;
    }
    let out =
        inside::run(lxd, &target.instance, &["cp", "-p", "--", target.config_path.as_str(), path.as_str()]).await?;
    if !out.success() {
        return Err(ProxyError::Step {
            instance: target.instance.to_string(),
            step: format!("backing up {} to {path}", target.config_path),
            output: inside::failure_text(&out),
        });
    }
    Ok(path)
}

/// Where a site is probed.
fn probe_endpoint(ports: &[PublishedPort], container_port: u16) -> Option<SocketAddr> {
    let p = ports.iter().find(|p| p.protocol == gbo_components::Protocol::Tcp && p.container_port == container_port)?;
    let ip: IpAddr = p.host_address.parse().ok()?;
    let ip = match ip {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_loopback() => {
            IpAddr::V4(if v4.is_loopback() { v4 } else { Ipv4Addr::LOCALHOST })
        }
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        // A specific public address: gbo sends traffic to loopback only, so such a site is not probed.
        _ => return None,
    };
    Some(SocketAddr::new(ip, p.host_port))
}

/// Probe one site: an HTTP answer of any status means Caddy serves it; no answer (refused, TLS failure, timeout)
/// does not. Probes go to the host's loopback through the published port with the site's name as Host and SNI.
pub async fn probe_site(ports: &[PublishedPort], address: &SiteAddress, timeout: Duration) -> Option<Probe> {
    let host = address.host()?;
    if host.starts_with('*') {
        return None;
    }
    let (scheme, container_port) = if address.is_http() { ("http", 80) } else { ("https", 443) };
    let endpoint = probe_endpoint(ports, container_port)?;
    let url_host = if host.parse::<Ipv6Addr>().is_ok() { format!("[{host}]") } else { host.clone() };
    let url = format!("{scheme}://{url_host}:{}/", endpoint.port());
    let client = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .resolve(&host, SocketAddr::new(endpoint.ip(), 0))
        .build();
    let client = match client {
        Ok(c) => c,
        Err(e) => return Some(Probe { host, url, status: None, error: Some(e.to_string()) }),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let error = match client.get(&url).send().await {
            Ok(response) => return Some(Probe { host, url, status: Some(response.status().as_u16()), error: None }),
            Err(e) => error_chain(&e),
        };
        if tokio::time::Instant::now() >= deadline {
            return Some(Probe { host, url, status: None, error: Some(error) });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Probe every site of `text` that is reachable through a port published on the host's loopback (or on all
/// addresses); sites behind a specific public address or an unpublished port are not probed.
pub async fn probe_all(target: &ProxyTarget, text: &str, timeout: Duration) -> Vec<Probe> {
    let Ok(parsed) = Caddyfile::parse(text) else {
        return Vec::new();
    };
    let addresses: Vec<SiteAddress> = parsed.sites().iter().flat_map(|s| s.addresses.clone()).collect();
    let probes = addresses.iter().map(|a| probe_site(&target.ports, a, timeout));
    futures_util::future::join_all(probes).await.into_iter().flatten().collect()
}

fn failed_probes(probes: &[Probe]) -> Vec<String> {
    probes
        .iter()
        .filter(|p| p.status.is_none())
        .map(|p| format!("{} ({})", p.url, p.error.as_deref().unwrap_or("no answer")))
        .collect()
}

async fn restore(
    lxd: &Client,
    target: &ProxyTarget,
    user: &User,
    backup: &str,
    reason: String,
    restart: bool,
) -> ProxyError {
    let mut note = String::new();
    match inside::run(lxd, &target.instance, &["cp", "-p", "--", backup, target.config_path.as_str()]).await {
        Ok(out) if out.success() => {}
        Ok(out) => note.push_str(&format!(" (copying the backup back failed: {})", inside::failure_text(&out))),
        Err(e) => note.push_str(&format!(" (copying the backup back failed: {e})")),
    }
    let back =
        if restart { restart_caddy(lxd, target).await.map(|_| ()) } else { caddy_reload(lxd, target, user).await };
    if let Err(e) = back {
        note.push_str(&format!(" (bringing the old config back failed: {e})"));
    }
    ProxyError::RolledBack {
        reason,
        config: target.config_path.clone(),
        backup: backup.to_string(),
        restore_note: note,
    }
}

/// Install `new_text` as the tenant's Caddyfile the safe way (see the module documentation).
pub async fn apply(
    lxd: &Client,
    target: &ProxyTarget,
    new_text: &str,
    options: &ApplyOptions,
) -> Result<ApplyReport, ProxyError> {
    apply_with(lxd, target, new_text, options, false).await
}

async fn apply_with(
    lxd: &Client,
    target: &ProxyTarget,
    new_text: &str,
    options: &ApplyOptions,
    restart: bool,
) -> Result<ApplyReport, ProxyError> {
    let current_bytes = inside::read_opt(lxd, &target.instance, &target.config_path).await?;
    let current = current_bytes.as_deref().map(String::from_utf8_lossy).map(|c| c.into_owned());
    let (removed, added) = check_candidate(current.as_deref(), new_text, &options.allow_removal)?;
    let mut report = ApplyReport {
        instance: target.instance.to_string(),
        config: target.config_path.clone(),
        sites_before: current.as_deref().and_then(|c| Caddyfile::parse(c).ok()).map(|c| c.hosts()).unwrap_or_default(),
        sites_after: Caddyfile::parse(new_text).map(|c| c.hosts()).unwrap_or_default(),
        removed,
        added,
        changed: current.as_deref() != Some(new_text),
        action: "none".into(),
        dry_run: options.dry_run,
        ..Default::default()
    };
    let user = caddy_user(lxd, target).await?;
    // Validate a candidate next to the real file (same directory: same permissions, and `mv` is atomic).
    let candidate = format!("{}.gbo-candidate", target.config_path);
    let owner = lxd_client::FileOptions::owned(user.uid, user.gid, 0o640);
    lxd.push_bytes(&target.instance, &candidate, new_text.as_bytes().to_vec(), owner).await?;
    let validated = validate(lxd, target, &user, &candidate).await;
    if validated.is_err() || options.dry_run || !report.changed {
        lxd.delete_file(&target.instance, &candidate).await?;
        validated?;
        return Ok(report);
    }
    let backup_path = match current {
        Some(_) => Some(backup(lxd, target).await?),
        None => None,
    };
    report.backup = backup_path.clone();
    let out = inside::run(lxd, &target.instance, &["mv", "-f", "--", candidate.as_str(), target.config_path.as_str()])
        .await?;
    if !out.success() {
        return Err(ProxyError::Step {
            instance: target.instance.to_string(),
            step: format!("installing {}", target.config_path),
            output: inside::failure_text(&out),
        });
    }
    let changed = if restart {
        restart_caddy(lxd, target).await.map(|_| "restart")
    } else {
        caddy_reload(lxd, target, &user).await.map(|_| "reload")
    };
    let fail = |reason: String| async {
        match &backup_path {
            Some(b) => restore(lxd, target, &user, b, reason, restart).await,
            None => ProxyError::Step {
                instance: target.instance.to_string(),
                step: "applying the first Caddyfile".into(),
                output: reason,
            },
        }
    };
    match changed {
        Ok(action) => report.action = action.into(),
        Err(reason) => return Err(fail(reason).await),
    }
    if options.probe {
        report.probes = probe_all(target, new_text, options.probe_timeout).await;
        let failed = failed_probes(&report.probes);
        if !failed.is_empty() {
            return Err(fail(format!("sites did not answer after the {}: {}", report.action, failed.join("; "))).await);
        }
    }
    Ok(report)
}

/// Validate the current file as the service user and reload (never restart); probe the sites.
pub async fn reload(lxd: &Client, target: &ProxyTarget, options: &ApplyOptions) -> Result<ApplyReport, ProxyError> {
    let text = inside::read_opt(lxd, &target.instance, &target.config_path)
        .await?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .ok_or_else(|| ProxyError::BadInput(format!("{} does not exist in {}", target.config_path, target.instance)))?;
    let parsed = Caddyfile::parse(&text).map_err(|e| {
        ProxyError::BadInput(format!("{} in {} does not parse: {e}", target.config_path, target.instance))
    })?;
    if !parsed.has_storage_block() {
        return Err(ProxyError::Refused(format!(
            "{} has no `storage` option in its global block; add it before reloading",
            target.config_path
        )));
    }
    let user = caddy_user(lxd, target).await?;
    validate(lxd, target, &user, &target.config_path).await?;
    let mut report = ApplyReport {
        instance: target.instance.to_string(),
        config: target.config_path.clone(),
        sites_before: parsed.hosts(),
        sites_after: parsed.hosts(),
        action: "none".into(),
        dry_run: options.dry_run,
        ..Default::default()
    };
    if options.dry_run {
        return Ok(report);
    }
    caddy_reload(lxd, target, &user).await.map_err(|output| ProxyError::Step {
        instance: target.instance.to_string(),
        step: "reloading Caddy".into(),
        output,
    })?;
    report.action = "reload".into();
    if options.probe {
        report.probes = probe_all(target, &text, options.probe_timeout).await;
        let failed = failed_probes(&report.probes);
        if !failed.is_empty() {
            return Err(ProxyError::Step {
                instance: target.instance.to_string(),
                step: "probing the sites after the reload".into(),
                output: failed.join("; "),
            });
        }
    }
    Ok(report)
}

/// What [`prune_dead_domains`] found and did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PruneReport {
    /// The verdict on every domain that was checked.
    pub domains: Vec<DomainVerdict>,
    /// The domains removed (or that would be, on a dry run).
    pub dead: Vec<String>,
    /// The change, when there was one.
    pub apply: Option<ApplyReport>,
}

/// One domain and its verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DomainVerdict {
    /// The domain.
    pub domain: String,
    /// Its verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Resolve every site domain and give verdicts (hosts that are not public domains are not checked).
pub async fn domain_verdicts(resolver: &dyn Resolver, text: &str) -> Result<Vec<DomainVerdict>, ProxyError> {
    let parsed =
        Caddyfile::parse(text).map_err(|e| ProxyError::BadInput(format!("the Caddyfile does not parse: {e}")))?;
    let domains: Vec<String> = parsed.hosts().into_iter().filter(|h| caddyfile::is_public_domain(h)).collect();
    Ok(resolve::verdicts(resolver, &domains)
        .await
        .into_iter()
        .map(|(domain, verdict)| DomainVerdict { domain, verdict })
        .collect())
}

/// Remove the sites whose domains have no DNS record, through the same safe path as [`apply`] (backup, validate,
/// probes, restore), then restart Caddy (not reload) to drop its ACME state for them.
pub async fn prune_dead_domains(
    lxd: &Client,
    target: &ProxyTarget,
    resolver: &dyn Resolver,
    options: &ApplyOptions,
) -> Result<PruneReport, ProxyError> {
    let text = inside::read_opt(lxd, &target.instance, &target.config_path)
        .await?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .ok_or_else(|| ProxyError::BadInput(format!("{} does not exist in {}", target.config_path, target.instance)))?;
    let domains = domain_verdicts(resolver, &text).await?;
    let dead: Vec<String> = domains.iter().filter(|d| d.verdict == Verdict::Dead).map(|d| d.domain.clone()).collect();
    if dead.is_empty() {
        return Ok(PruneReport { domains, dead, apply: None });
    }
    let parsed =
        Caddyfile::parse(&text).map_err(|e| ProxyError::BadInput(format!("the Caddyfile does not parse: {e}")))?;
    let pruned = parsed.without_hosts(&dead);
    let options = ApplyOptions { allow_removal: dead.clone(), ..options.clone() };
    let report = apply_with(lxd, target, &pruned, &options, true).await?;
    Ok(PruneReport { domains, dead, apply: Some(report) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORAGE: &str = "{\n\tstorage file_system {\n\t\troot /opt/gbo/data/caddy\n\t}\n}\n";

    #[test]
    fn candidates_must_keep_sites_and_storage() {
        let old = format!("{STORAGE}a.example.com {{\n}}\nb.example.com {{\n}}\n");
        let partial = format!("{STORAGE}a.example.com {{\n}}\n");
        assert!(
            matches!(check_candidate(Some(&old), &partial, &[]), Err(ProxyError::Refused(m)) if m.contains("b.example.com"))
        );
        let (removed, added) =
            check_candidate(Some(&old), &format!("{partial}c.example.com {{\n}}\n"), &["b.example.com".into()])
                .expect("check_candidate");
        assert_eq!((removed, added), (vec!["b.example.com".to_string()], vec!["c.example.com".to_string()]));
        assert!(
            matches!(check_candidate(Some(&old), "a.example.com {\n}\nb.example.com {\n}\n", &[]), Err(ProxyError::Refused(m)) if m.contains("storage"))
        );
        assert!(
            matches!(check_candidate(None, &format!("{STORAGE}a.example.com {{\n"), &[]), Err(ProxyError::BadInput(m)) if m.contains("does not parse"))
        );
        assert!(
            matches!(check_candidate(None, &format!("{STORAGE}bad_name.example.com {{\n}}\n"), &[]), Err(ProxyError::BadInput(m)) if m.contains("bad_name"))
        );
        assert!(
            matches!(check_candidate(Some(&old), &old, &["not a domain".into()]), Err(ProxyError::BadInput(m)) if m.contains("not a domain"))
        );
    }

    #[test]
    fn probe_endpoints_stay_on_loopback() {
        let port = |addr: &str, c: u16| PublishedPort {
            device: "d".into(),
            protocol: gbo_components::Protocol::Tcp,
            host_address: addr.into(),
            host_port: 8080,
            container_port: c,
        };
        assert_eq!(probe_endpoint(&[port("0.0.0.0", 80)], 80), Some("127.0.0.1:8080".parse().expect("parse")));
        assert_eq!(probe_endpoint(&[port("127.0.0.1", 443)], 443), Some("127.0.0.1:8080".parse().expect("parse")));
        assert_eq!(probe_endpoint(&[port("203.0.113.9", 80)], 80), None);
        assert_eq!(probe_endpoint(&[port("0.0.0.0", 80)], 443), None);
    }
}
