//! CoreDNS: the Corefile per zone with an `acl` decided from what CoreDNS sees (through an LXD proxy device every
//! query comes from 127.0.0.1, so no rule uses a source address: ANY refused for everyone, the zones' record types
//! answered to anyone, everything else refused; see `gbo_components::render::coredns`), zone files on the data
//! mount, and a reload by SIGHUP sent to the coredns process found by its pid (the unit's `MainPID`, else the one
//! process whose name is exactly `coredns`), never `pkill` by name (which also hits a second tenant's CoreDNS).
//!
//! No CoreDNS binary is installable here: the rendering is snapshot-tested, the SIGHUP path runs against a real
//! process standing in for it.

use gbo_components::TenantName;
use lxd_client::{Client, FileOptions, InstanceName};

use crate::doctor::inside;
use crate::inventory;
use crate::proxy::caddyfile::valid_domain;

/// The Corefile inside the dns container.
pub const COREFILE_PATH: &str = "/opt/gbo/conf/Corefile";
/// The zone file path of a zone (the catalogue's).
pub use gbo_components::render::coredns::zone_file_path;
/// The query types every zone answers.
pub use gbo_components::render::coredns::ANSWERED_TYPES;

/// The units that may run CoreDNS.
pub const COREDNS_UNITS: &[&str] = &["dns.service", "coredns.service"];

/// The Corefile, exactly as the catalogue renders it for `gbo install` (one renderer, so `gbo dns apply` and
/// `gbo install` never flip the file back and forth).
pub fn corefile(zones: &[String], port: u16) -> String {
    let zones: Vec<&str> = zones.iter().map(String::as_str).collect();
    gbo_components::render::coredns::corefile(&zones, port)
}

/// A minimal zone (SOA and NS) for a zone that has no file yet; existing zone files are never overwritten.
pub fn starter_zone(zone: &str) -> String {
    format!("$ORIGIN {zone}.\n$TTL 3600\n@\tIN\tSOA\tns1.{zone}. hostmaster.{zone}. ( 1 7200 3600 1209600 3600 )\n@\tIN\tNS\tns1.{zone}.\n")
}

/// Every zone block of a Corefile text has the acl with a final `block` (what doctor checks on the live file).
/// Returns the zones lacking it.
pub fn zones_without_acl(corefile: &str) -> Vec<String> {
    let mut missing = Vec::new();
    let mut depth = 0usize;
    let mut current: Option<(String, bool, bool)> = None;
    for line in corefile.lines() {
        let t = line.split('#').next().unwrap_or("").trim();
        if depth == 0 && t.ends_with('{') {
            current = Some((t.trim_end_matches('{').trim().to_string(), false, false));
        }
        if depth >= 1 {
            if let Some(c) = current.as_mut() {
                if t.starts_with("acl") {
                    c.1 = true;
                }
                if c.1 && t == "block" {
                    c.2 = true;
                }
            }
        }
        depth += t.matches('{').count();
        depth = depth.saturating_sub(t.matches('}').count());
        if depth == 0 {
            if let Some((zone, acl, block)) = current.take() {
                if !(acl && block) {
                    missing.push(zone);
                }
            }
        }
    }
    missing
}

/// The server blocks of a Corefile text whose `acl` lets some client ask `ANY` through an LXD proxy device, where
/// every query comes from 127.0.0.1: the first rule matching type ANY (a rule with no `type`, or with ANY among
/// its types) is an `allow` with no `net` or with a net that holds a loopback address (`127.*`, `::1`, `0.0.0.0/0`,
/// `::/0`). The seed's `allow type ANY net 10.0.0.0/8 127.0.0.0/8` is one: it allows ANY to the whole internet.
/// Blocks without an acl are [`zones_without_acl`]'s.
pub fn zones_allowing_any(corefile: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut depth = 0usize;
    let mut zone: Option<String> = None;
    let mut in_acl = false;
    let mut decided = false;
    for line in corefile.lines() {
        let t = line.split('#').next().unwrap_or("").trim();
        if depth == 0 && t.ends_with('{') {
            zone = Some(t.trim_end_matches('{').trim().to_string());
            decided = false;
        }
        if depth == 1 && t.starts_with("acl") && t.ends_with('{') {
            in_acl = true;
        } else if in_acl && depth == 2 && !decided && !t.is_empty() && t != "}" {
            let words: Vec<&str> = t.split_whitespace().collect();
            let (action, rest) = words.split_first().map(|(a, r)| (*a, r)).unwrap_or(("", &[]));
            let mut types: Vec<&str> = Vec::new();
            let mut nets: Vec<&str> = Vec::new();
            let mut section = "";
            for word in rest {
                match *word {
                    "type" | "net" => section = word,
                    w if section == "type" => types.push(w),
                    w if section == "net" => nets.push(w),
                    _ => {}
                }
            }
            let matches_any = types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case("ANY"));
            if matches_any && matches!(action, "allow" | "block" | "filter" | "drop") {
                decided = true;
                let loopback = nets.is_empty()
                    || nets
                        .iter()
                        .any(|n| n.starts_with("127.") || n.starts_with("::1") || *n == "0.0.0.0/0" || *n == "::/0");
                if action == "allow" && loopback {
                    if let Some(z) = &zone {
                        found.push(z.clone());
                    }
                }
            }
        }
        depth += t.matches('{').count();
        depth = depth.saturating_sub(t.matches('}').count());
        if depth < 2 {
            in_acl = false;
        }
        if depth == 0 {
            zone = None;
        }
    }
    found
}

/// What failed. Every variant means exit code 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// Bad input. Nothing was changed.
    #[error("{0}")]
    BadInput(String),
    /// A step failed.
    #[error("{step} in {instance} failed: {output}")]
    Step {
        /// Container.
        instance: String,
        /// What.
        step: String,
        /// Output.
        output: String,
    },
    /// LXD failed.
    #[error(transparent)]
    Lxd(#[from] lxd_client::Error),
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DnsReport {
    /// The dns container.
    pub instance: String,
    /// Files written.
    pub changed: Vec<String>,
    /// The pid that got SIGHUP, when CoreDNS runs.
    pub reloaded_pid: Option<u32>,
    /// How the pid was found.
    pub pid_source: String,
}

/// Render and install the Corefile and missing zone files in the tenant's dns container; SIGHUP CoreDNS.
pub async fn apply(lxd: &Client, tenant: &TenantName, zones: &[String], port: u16) -> Result<DnsReport, DnsError> {
    if zones.is_empty() {
        return Err(DnsError::BadInput("no zone given (--zone example.com)".into()));
    }
    let mut zones: Vec<String> = zones.iter().map(|z| z.trim_end_matches('.').to_ascii_lowercase()).collect();
    if let Some(bad) = zones.iter().find(|z| !valid_domain(z, false)) {
        return Err(DnsError::BadInput(format!("zone {bad:?} is not a valid domain name")));
    }
    zones.sort();
    zones.dedup();
    let instances = inventory::tenant_instances(lxd, tenant).await?;
    let dns = instances
        .iter()
        .find(|m| m.role == Some(gbo_components::Role::Dns))
        .ok_or_else(|| DnsError::BadInput(format!("tenant {tenant:?} has no dns container (`{tenant}-dns`)")))?;
    let instance = dns.name.clone();
    let mut report = DnsReport { instance: instance.to_string(), ..Default::default() };
    for zone in &zones {
        let path = zone_file_path(zone);
        if inside::read_opt(lxd, &instance, &path).await?.is_none() {
            inside::write_if_changed(lxd, &instance, &path, starter_zone(zone).as_bytes(), FileOptions::root(0o644))
                .await?;
            report.changed.push(path);
        }
    }
    if inside::write_if_changed(
        lxd,
        &instance,
        COREFILE_PATH,
        corefile(&zones, port).as_bytes(),
        FileOptions::root(0o644),
    )
    .await?
    {
        report.changed.push(COREFILE_PATH.into());
    }
    if let Some((pid, source)) = coredns_pid(lxd, &instance).await? {
        let p = pid.to_string();
        let out = inside::run(lxd, &instance, &["kill", "-HUP", p.as_str()]).await?;
        if !out.success() {
            return Err(DnsError::Step {
                instance: instance.to_string(),
                step: format!("sending SIGHUP to pid {pid}"),
                output: inside::failure_text(&out),
            });
        }
        report.reloaded_pid = Some(pid);
        report.pid_source = source;
    } else {
        report.pid_source = "CoreDNS is not running: nothing reloaded".into();
    }
    Ok(report)
}

/// The coredns process: the `MainPID` of an active CoreDNS unit, else the single process named exactly `coredns`.
pub async fn coredns_pid(lxd: &Client, instance: &InstanceName) -> Result<Option<(u32, String)>, lxd_client::Error> {
    if let Some(unit) = inside::active_unit(lxd, instance, COREDNS_UNITS).await? {
        let pid = inside::main_pid(lxd, instance, &unit).await?;
        if pid > 0 {
            return Ok(Some((pid, format!("MainPID of {unit}"))));
        }
    }
    let out = inside::run(lxd, instance, &["pgrep", "--exact", "coredns"]).await?;
    let pids: Vec<u32> = out.stdout_text().lines().filter_map(|l| l.trim().parse().ok()).collect();
    Ok(match pids.as_slice() {
        [pid] => Some((*pid, "the only process named coredns".into())),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corefile_is_the_catalogues_and_every_zone_has_the_acl() {
        // The text itself is snapshot-tested in gbo-components; here: one renderer, and doctor's parser accepts it.
        let text = corefile(&["example.com".into(), "example.org".into()], 53);
        assert_eq!(text, gbo_components::render::coredns::corefile(&["example.com", "example.org"], 53));
        assert!(text.contains("block type ANY"), "{text}");
        assert!(zones_without_acl(&text).is_empty());
        assert!(zones_allowing_any(&text).is_empty(), "{text}");
        let seed_without = "zone.example.com:53 {\n\tfile /opt/gbo/data/zone.example.com.zone\n\tcache\n\terrors\n}\n";
        assert_eq!(zones_without_acl(seed_without), vec!["zone.example.com:53"]);
    }

    /// The seed's acl, taken literally, allows ANY from 127.0.0.0/8: through the proxy device that is everyone.
    #[test]
    fn an_acl_that_allows_any_from_loopback_is_found() {
        let seed = "zone.example.com:53 {\n\tfile /opt/gbo/data/zone.example.com.zone\n\tacl {\n\t\tallow type ANY net 10.0.0.0/8 127.0.0.0/8\n\t\tallow type A net 0.0.0.0/0\n\t\tallow type AAAA net 0.0.0.0/0\n\t\tallow type MX net 0.0.0.0/0\n\t\tblock\n\t}\n\tcache\n\terrors\n}\n";
        assert!(zones_without_acl(seed).is_empty(), "it has an acl with a final block");
        assert_eq!(zones_allowing_any(seed), vec!["zone.example.com:53"]);
        let everything =
            "a.test:53 {\n\tacl {\n\t\tallow\n\t}\n}\nb.test:53 {\n\tacl {\n\t\tallow type ANY A\n\t\tblock\n\t}\n}\n";
        assert_eq!(zones_allowing_any(everything), vec!["a.test:53", "b.test:53"]);
        let private_only = "c.test:53 {\n\tacl {\n\t\tallow type ANY net 10.0.0.0/8\n\t\tblock\n\t}\n}\n";
        assert!(zones_allowing_any(private_only).is_empty(), "a rule that never matches 127.0.0.1 allows no one here");
        let blocked_first = "d.test:53 {\n\tacl {\n\t\tblock type ANY\n\t\tallow net 127.0.0.0/8\n\t\tblock\n\t}\n}\n";
        assert!(zones_allowing_any(blocked_first).is_empty());
    }
}
