//! Doctor: every rule and every "common production issue" of the production runbook as a check with a verdict,
//! the evidence, and the fix (`--fix` applies the safe ones). Evidence comes from the live system (what listens,
//! the rules loaded, the devices present, what the daemons report), not from the files gbo rendered, so doctor
//! works on tenants gbo never installed: it finds what runs where and says which layout it saw.

pub mod inside;

use gbo_components::TenantName;
use std::sync::Arc;
use std::time::Duration;

use lxd_client::{Client, FileOptions, InstanceName};

use crate::inventory::{self, ManagedInstance};
use crate::proxy::caddyfile::Caddyfile;
use crate::proxy::resolve::{Resolver, Verdict as DnsVerdict};
use crate::{brother, dns, fail2ban, firewall, proxy};

/// Where the seed's production layout keeps the botserver stack inside `-system`.
pub const STACK_DIR: &str = "/opt/gbo/bin/botserver-stack";
/// What botui must reach botserver at.
pub const BOTSERVER_URL: &str = "http://localhost:5858";
/// The ports that must keep their proxy devices, per role (the seed's list).
pub const PUBLIC_PORTS: &[(&str, &[u16])] =
    &[("proxy", &[80, 443]), ("email", &[25, 465, 587, 993, 995, 143, 110, 4190]), ("dns", &[53])];

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The rule holds.
    Pass,
    /// The rule is broken.
    Fail,
    /// Worth a look, not a failure (exit code unaffected).
    Warn,
    /// Not applicable here (the role or the tool is absent).
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// Stable id (`loopback-first`, ...).
    pub id: &'static str,
    /// Where it was checked (a container or `host`).
    pub target: String,
    /// The verdict (after `--fix`, of the re-check).
    pub verdict: Verdict,
    /// What was seen.
    pub evidence: String,
    /// How to fix it (a command or a sentence).
    pub fix: Option<String>,
    /// Whether `--fix` fixed it.
    pub fixed: bool,
}

impl Check {
    fn new(id: &'static str, target: impl std::fmt::Display, verdict: Verdict, evidence: impl Into<String>) -> Self {
        Self { id, target: target.to_string(), verdict, evidence: evidence.into(), fix: None, fixed: false }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The whole report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DoctorReport {
    /// The tenant.
    pub tenant: String,
    /// The layout seen: `per-role` (what `gbo install` builds) or `production` (the botserver stack inside
    /// `-system`).
    pub layout: String,
    /// Containers found, with their roles.
    pub containers: Vec<(String, String)>,
    /// Every check.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// 0 when nothing failed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.checks.iter().any(|c| c.verdict == Verdict::Fail))
    }
}

/// Options.
#[derive(Clone)]
pub struct DoctorOptions {
    /// Apply the safe fixes, then check again.
    pub fix: bool,
    /// The tenant file the containers are checked against (its defaults when there is none): whether the system
    /// container may be privileged (`[system] privileged`).
    pub tenant_file: gbo_components::TenantFile,
    /// Resolves site domains for the dead-domain check.
    pub resolver: Arc<dyn Resolver>,
    /// Fail when ZFS snapshots use more than this share of their pool, percent.
    pub zfs_snapshot_percent: u8,
}

/// Doctor could not run (exit code 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DoctorError {
    /// Bad input.
    #[error("{0}")]
    BadInput(String),
    /// LXD failed.
    #[error(transparent)]
    Lxd(#[from] lxd_client::Error),
}

struct Ctx<'a> {
    lxd: &'a Client,
    instances: Vec<ManagedInstance>,
    options: &'a DoctorOptions,
}

impl Ctx<'_> {
    fn role(&self, role: &str) -> Option<&ManagedInstance> {
        self.instances.iter().find(|m| m.role_label() == role && m.instance.is_running())
    }
}

fn name_of(m: &ManagedInstance) -> Result<InstanceName, lxd_client::Error> {
    InstanceName::new(m.name.as_str())
}

/// Run every check on a tenant.
pub async fn run(lxd: &Client, tenant: &TenantName, options: &DoctorOptions) -> Result<DoctorReport, DoctorError> {
    let instances = inventory::tenant_instances(lxd, tenant).await?;
    if instances.is_empty() {
        return Err(DoctorError::BadInput(format!("no container belongs to tenant {tenant:?} (looked for `user.gbo.tenant={tenant}` and names `{tenant}-<role>`)")));
    }
    let ctx = Ctx { lxd, instances, options };
    let production = match ctx.role("system") {
        Some(m) => inside::run(lxd, &name_of(m)?, &["test", "-d", STACK_DIR]).await?.success(),
        None => false,
    };
    let mut checks = Vec::new();
    checks.extend(system_privileged(&ctx));
    checks.extend(proxy_devices(&ctx));
    checks.extend(recorded_port_devices(&ctx).await);
    checks.extend(alm_ci_mounts(&ctx).await?);
    checks.extend(loopback_first(&ctx).await?);
    checks.extend(cache(&ctx, production).await?);
    checks.extend(botserver_url(&ctx).await?);
    checks.extend(caddy(&ctx).await?);
    checks.extend(coredns_acl(&ctx).await?);
    checks.extend(fail2ban_jails(&ctx).await?);
    checks.extend(vault(&ctx, production).await?);
    checks.extend(botserver_owner(&ctx).await?);
    checks.extend(zfs_space(&ctx).await?);
    checks.extend(brother_socket(&ctx).await?);
    Ok(DoctorReport {
        tenant: tenant.to_string(),
        layout: if production { "production".into() } else { "per-role".into() },
        containers: ctx.instances.iter().map(|m| (m.name.to_string(), m.role_label())).collect(),
        checks,
    })
}

/// `security.privileged` of the system container against the tenant file: privileged only when the file asks
/// (`[system] privileged = true`), since root in a privileged internet-facing container is root on the host. A
/// container gbo did not create (an adopted seed stack) keeps its own flag: a privileged one is a warning, not a
/// failure.
fn system_privileged(ctx: &Ctx<'_>) -> Vec<Check> {
    let Some(m) = ctx.instances.iter().find(|m| m.role == Some(gbo_components::Role::System)) else {
        return vec![Check::new("system-privileged", "-", Verdict::Skip, "no system container")];
    };
    let privileged = m.instance.expanded_config.get("security.privileged").is_some_and(|v| v == "true");
    let asked = ctx.options.tenant_file.system.privileged;
    let shown = |p: bool| format!("security.privileged={p}");
    let check = match (privileged, asked, m.adopted) {
        (false, false, _) => Check::new("system-privileged", &m.name, Verdict::Pass, format!("{}: unprivileged", shown(false))),
        (true, true, _) => Check::new(
            "system-privileged",
            &m.name,
            Verdict::Pass,
            format!("{}, as the tenant file asks ([system] privileged = true): root inside is root on the host", shown(true)),
        ),
        (true, false, true) => Check::new(
            "system-privileged",
            &m.name,
            Verdict::Warn,
            format!("{}: a container gbo did not create keeps its own flag; root inside is root on the host", shown(true)),
        )
        .fix("gbo install (the tenant file decides for containers gbo created); an adopted seed stack stays as it is"),
        (true, false, false) => Check::new(
            "system-privileged",
            &m.name,
            Verdict::Fail,
            format!("{}, but the tenant file does not ask for it: root inside is root on the host", shown(true)),
        )
        .fix("gbo install --tenant <tenant> system (remaps it unprivileged), or set [system] privileged = true in the tenant file"),
        (false, true, true) => Check::new(
            "system-privileged",
            &m.name,
            Verdict::Warn,
            format!("{}: a container gbo did not create keeps its own flag, whatever the tenant file asks", shown(false)),
        ),
        (false, true, false) => Check::new(
            "system-privileged",
            &m.name,
            Verdict::Fail,
            format!("{}, but the tenant file asks for [system] privileged = true", shown(false)),
        )
        .fix("gbo install --tenant <tenant> system (remaps it privileged)"),
    };
    vec![check]
}

fn proxy_devices(ctx: &Ctx<'_>) -> Vec<Check> {
    let mut out = Vec::new();
    for (role, ports) in PUBLIC_PORTS {
        let Some(m) = ctx.instances.iter().find(|m| m.role_label() == *role) else { continue };
        let connected: Vec<u16> = m
            .instance
            .expanded_devices
            .values()
            .filter_map(lxd_client::ProxyDevice::from_config)
            .filter(|p| p.bind == lxd_client::ProxyBind::Host)
            .map(|p| p.connect.port)
            .collect();
        let missing: Vec<String> = ports.iter().filter(|p| !connected.contains(p)).map(u16::to_string).collect();
        let check = if missing.is_empty() {
            Check::new(
                "proxy-devices",
                &m.name,
                Verdict::Pass,
                format!("proxy devices forward {}", ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")),
            )
        } else {
            Check::new("proxy-devices", &m.name, Verdict::Fail, format!("no proxy device forwards port {}", missing.join(", ")))
                .fix(format!("lxc config device add {} gbo-port-<port> proxy listen=tcp:<address>:<port> connect=tcp:127.0.0.1:<port> (never remove these)", m.name))
        };
        out.push(check);
    }
    out
}

/// Every port gbo published for a container it manages still has its proxy device (removing one is the seed's
/// "never remove the proxy devices" incident). `--fix` re-adds a missing one from the port recorded on the
/// container (`user.gbo.ports`): the same address and host port, no restart needed.
async fn recorded_port_devices(ctx: &Ctx<'_>) -> Vec<Check> {
    let mut out = Vec::new();
    for m in ctx.instances.iter().filter(|m| m.managed) {
        let Some(role) = m.role else { continue };
        let recorded = crate::inventory::recorded_ports(&m.instance.config);
        if recorded.is_empty() {
            continue;
        }
        let missing: Vec<&crate::inventory::RecordedPort> =
            recorded.iter().filter(|p| !m.instance.devices.contains_key(&format!("gbo-port-{}", p.name))).collect();
        let describe = |ports: &[&crate::inventory::RecordedPort]| {
            ports.iter().map(|p| format!("{} ({}:{})", p.name, p.address, p.port)).collect::<Vec<_>>().join(", ")
        };
        if missing.is_empty() {
            let all: Vec<&crate::inventory::RecordedPort> = recorded.iter().collect();
            out.push(Check::new("port-devices", &m.name, Verdict::Pass, format!("published: {}", describe(&all))));
            continue;
        }
        let mut check = Check::new(
            "port-devices",
            &m.name,
            Verdict::Fail,
            format!("the proxy device of {} is missing (removed by hand?)", describe(&missing)),
        )
        .fix(format!("gbo doctor --fix re-adds it from the port recorded on {} (or gbo install)", m.name));
        if ctx.options.fix {
            let mut devices = Vec::new();
            for p in &missing {
                if let Ok(Some(device)) =
                    crate::install::desired::published_port_device(role, &p.name, p.address, p.port)
                {
                    devices.push(device);
                }
            }
            let added = match name_of(m) {
                Ok(name) => ctx
                    .lxd
                    .update_instance(&name, |put| {
                        for (device, config) in &devices {
                            put.devices.entry(device.clone()).or_insert_with(|| config.clone());
                        }
                    })
                    .await
                    .is_ok(),
                Err(_) => false,
            };
            if added && devices.len() == missing.len() {
                check.verdict = Verdict::Pass;
                check.evidence = format!("re-added the proxy device of {}", describe(&missing));
                check.fixed = true;
            }
        }
        out.push(check);
    }
    out
}

/// The seed's rule for the runner: no cross-container disk mounts (deploy over SSH instead). gbo's own mounts of
/// `-alm-ci` (`gbo-data`, `gbo-conf`, `gbo-logs` on `<stack dir>/alm-ci/<kind>`) are its own data, not a way into
/// another container; a mount whose host path is, contains or lies inside a path mounted into another container
/// (of any tenant), or lies in another role's directory of the tenant's stack dir, is what the seed forbids.
async fn alm_ci_mounts(ctx: &Ctx<'_>) -> Result<Vec<Check>, lxd_client::Error> {
    let Some(m) = ctx.instances.iter().find(|m| m.role == Some(gbo_components::Role::AlmCi)) else {
        return Ok(Vec::new());
    };
    if m.mounts.is_empty() {
        return Ok(vec![Check::new("alm-ci-mounts", &m.name, Verdict::Pass, "no host disk mounts")]);
    }
    let others: Vec<ManagedInstance> =
        ctx.lxd.instances().await?.iter().filter_map(inventory::describe).filter(|o| o.name != m.name).collect();
    // The tenant's stack dir, as any of its containers records it (a runner gbo did not create records none).
    let stack = m.stack_dir.clone().or_else(|| ctx.instances.iter().find_map(|i| i.stack_dir.clone()));
    Ok(vec![judge_alm_ci_mounts(m, stack.as_deref(), &others)])
}

/// How a mount of `-alm-ci` relates to the other containers.
#[derive(Debug, PartialEq, Eq)]
enum AlmCiMount {
    /// gbo's own mount of the runner's directory.
    Own,
    /// Shared with another container (what the seed forbids), with the evidence.
    Cross(String),
    /// A host directory no other container mounts.
    Other,
}

fn overlaps(a: &std::path::Path, b: &std::path::Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn classify_alm_ci_mount(
    stack: Option<&std::path::Path>,
    mount: &inventory::Mount,
    others: &[ManagedInstance],
) -> AlmCiMount {
    for other in others {
        for theirs in &other.mounts {
            if overlaps(&mount.host_path, &theirs.host_path) {
                return AlmCiMount::Cross(format!(
                    "{} ({} -> {}) shares {} with {} ({})",
                    mount.device,
                    mount.host_path.display(),
                    mount.container_path,
                    theirs.host_path.display(),
                    other.name,
                    theirs.container_path
                ));
            }
        }
    }
    if let Some(stack) = stack {
        let own_dir = stack.join(gbo_components::Role::AlmCi.container_suffix());
        for role in gbo_components::Role::ALL.into_iter().filter(|r| *r != gbo_components::Role::AlmCi) {
            let theirs = stack.join(role.container_suffix());
            if overlaps(&mount.host_path, &theirs) {
                return AlmCiMount::Cross(format!(
                    "{} ({} -> {}) reaches into {}'s directory {}",
                    mount.device,
                    mount.host_path.display(),
                    mount.container_path,
                    role,
                    theirs.display()
                ));
            }
        }
        let own = gbo_components::MountKind::ALL.into_iter().any(|kind| {
            mount.device == format!("gbo-{}", kind.as_str())
                && mount.host_path == own_dir.join(kind.as_str())
                && mount.container_path == kind.container_path()
        });
        if own {
            return AlmCiMount::Own;
        }
    }
    AlmCiMount::Other
}

fn judge_alm_ci_mounts(m: &ManagedInstance, stack: Option<&std::path::Path>, others: &[ManagedInstance]) -> Check {
    let mut cross = Vec::new();
    let mut own = Vec::new();
    let mut other = Vec::new();
    for mount in &m.mounts {
        match classify_alm_ci_mount(stack, mount, others) {
            AlmCiMount::Own => own.push(mount.device.clone()),
            AlmCiMount::Cross(evidence) => cross.push(evidence),
            AlmCiMount::Other => {
                other.push(format!("{} ({} -> {})", mount.device, mount.host_path.display(), mount.container_path))
            }
        }
    }
    if !cross.is_empty() {
        return Check::new("alm-ci-mounts", &m.name, Verdict::Fail, format!("cross-container disk mounts: {}", cross.join("; ")))
            .fix(format!("lxc config device remove {} <device>; deploy over SSH instead (gbo ci connect), then delete snapshots taken while the mounts were there", m.name));
    }
    let mut evidence = if own.is_empty() {
        "no cross-container disk mounts".to_string()
    } else {
        format!("no cross-container disk mounts (its own: {})", own.join(", "))
    };
    if !other.is_empty() {
        evidence.push_str(&format!("; host mounts no other container shares: {}", other.join(", ")));
        return Check::new("alm-ci-mounts", &m.name, Verdict::Warn, evidence);
    }
    Check::new("alm-ci-mounts", &m.name, Verdict::Pass, evidence)
}

async fn loopback_first(ctx: &Ctx<'_>) -> Result<Vec<Check>, lxd_client::Error> {
    let mut out = Vec::new();
    for role in ["system", "cache"] {
        let Some(m) = ctx.role(role) else { continue };
        let name = name_of(m)?;
        if !inside::has_program(ctx.lxd, &name, "iptables").await? {
            out.push(Check::new("loopback-first", &m.name, Verdict::Skip, "iptables is not installed"));
            continue;
        }
        let check = |rules: &[String]| match firewall::loopback_problem(rules) {
            None => (
                Verdict::Pass,
                format!("INPUT: {}", if rules.is_empty() { "no rules".into() } else { rules.join(" | ") }),
            ),
            Some(problem) => (Verdict::Fail, problem),
        };
        let rules = match firewall::container_input_rules(ctx.lxd, &name).await {
            Ok(r) => r,
            Err(e) => {
                out.push(Check::new("loopback-first", &m.name, Verdict::Fail, format!("cannot read the rules: {e}")));
                continue;
            }
        };
        let (mut verdict, mut evidence) = check(&rules);
        let mut fixed = false;
        if verdict == Verdict::Fail && ctx.options.fix {
            let options = firewall::FirewallOptions { dropped_ports: Vec::new(), ..Default::default() };
            if firewall::apply_container(ctx.lxd, &name, &options).await.is_ok() {
                let rules = firewall::container_input_rules(ctx.lxd, &name).await.unwrap_or_default();
                (verdict, evidence) = check(&rules);
                fixed = verdict == Verdict::Pass;
            }
        }
        let mut c = Check::new("loopback-first", &m.name, verdict, evidence).fix(format!("gbo firewall apply --tenant <tenant> (or: lxc exec {} -- iptables -I INPUT 1 -i lo -j ACCEPT, then save to /etc/iptables/rules.v4)", m.name));
        c.fixed = fixed;
        out.push(c);
    }
    Ok(out)
}

async fn cache(ctx: &Ctx<'_>, production: bool) -> Result<Vec<Check>, lxd_client::Error> {
    let (m, clis): (&ManagedInstance, Vec<String>) = match (ctx.role("cache"), ctx.role("system")) {
        (Some(m), _) => (m, vec!["valkey-cli".into(), "redis-cli".into()]),
        (None, Some(m)) if production => {
            (m, vec![format!("{STACK_DIR}/bin/cache/bin/valkey-cli"), "valkey-cli".into(), "redis-cli".into()])
        }
        _ => return Ok(vec![Check::new("cache", "-", Verdict::Skip, "no cache container and no botserver stack")]),
    };
    let name = name_of(m)?;
    let listen = inside::run(ctx.lxd, &name, &["ss", "-Hltn", "sport = :6379"]).await?;
    let locals: Vec<String> =
        listen.stdout_text().lines().filter_map(|l| l.split_whitespace().nth(3)).map(str::to_string).collect();
    let mut out = Vec::new();
    let bind = if locals.is_empty() {
        Check::new("cache-bind", &m.name, Verdict::Fail, "nothing listens on port 6379")
    } else if locals.iter().all(|a| a.starts_with("127.") || a.starts_with("[::1]")) {
        Check::new("cache-bind", &m.name, Verdict::Pass, format!("6379 listens on {}", locals.join(", ")))
    } else {
        Check::new(
            "cache-bind",
            &m.name,
            Verdict::Fail,
            format!("6379 listens on {} (not only 127.0.0.1)", locals.join(", ")),
        )
    };
    out.push(bind.fix("bind 127.0.0.1 in the cache's configuration, then restart it"));
    let mut cli = None;
    for c in &clis {
        if inside::has_program(ctx.lxd, &name, c).await?
            || inside::run(ctx.lxd, &name, &["test", "-x", c]).await?.success()
        {
            cli = Some(c.clone());
            break;
        }
    }
    let ping = match cli {
        None => Check::new("cache-ping", &m.name, Verdict::Fail, format!("no client found ({})", clis.join(", "))),
        Some(cli) => {
            let out =
                inside::run(ctx.lxd, &name, &["timeout", "5", cli.as_str(), "-h", "127.0.0.1", "-p", "6379", "ping"])
                    .await?;
            let answer = out.stdout_text().trim().to_string();
            if answer == "PONG" {
                Check::new("cache-ping", &m.name, Verdict::Pass, format!("{cli} ping: PONG"))
            } else if answer.starts_with("NOAUTH") {
                // The cache answered: it is reachable, and wants a password this client does not give.
                Check::new("cache-ping", &m.name, Verdict::Pass, format!("{cli} ping: {answer} (reachable)"))
            } else {
                Check::new("cache-ping", &m.name, Verdict::Fail, format!("{cli} ping: {}", if answer.is_empty() { inside::failure_text(&out) } else { answer }))
                    .fix("check loopback-first (a DROP before the loopback ACCEPT times the cache out) and that the cache runs")
            }
        }
    };
    out.push(ping);
    out.push(cache_auth(ctx, m).await?);
    Ok(out)
}

/// Longest answer line read from the cache.
const CACHE_ANSWER_LIMIT: usize = 256;

/// An unauthenticated `PING` must be refused: every host user reaches 127.0.0.1. Asked where an outsider would
/// ask: through the cache's published port on the host when it has one, else on the container's loopback (the
/// seed's layout, Valkey inside `-system`), with no client that could log in on its own.
async fn cache_auth(ctx: &Ctx<'_>, m: &ManagedInstance) -> Result<Check, lxd_client::Error> {
    let published = m.ports.iter().find(|p| p.container_port == 6379 && p.protocol == gbo_components::Protocol::Tcp);
    let (answer, place) = match published {
        Some(p) => {
            let address: std::net::IpAddr = p.host_address.parse().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
            let address = if address.is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { address };
            let addr = std::net::SocketAddr::new(address, p.host_port);
            let answer = match tokio::time::timeout(
                Duration::from_secs(5),
                crate::install::health::redis_command(addr, &[&["PING"]]),
            )
            .await
            {
                Ok(Ok(lines)) => lines.first().cloned().unwrap_or_default(),
                Ok(Err(e)) => format!("(no answer: {e})"),
                Err(_) => "(no answer within 5 s)".to_string(),
            };
            (answer, format!("host {addr}"))
        }
        None => {
            let name = name_of(m)?;
            let script = "exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\\r\\n' >&3 && timeout 5 head -n 1 <&3";
            let out = inside::run(ctx.lxd, &name, &["timeout", "10", "bash", "-c", script]).await?;
            let text = out.stdout_text();
            let answer =
                if text.trim().is_empty() { format!("(no answer: {})", inside::failure_text(&out)) } else { text };
            (answer, format!("127.0.0.1:6379 inside {}", m.name))
        }
    };
    let answer: String = answer.trim().chars().take(CACHE_ANSWER_LIMIT).collect();
    let check = if answer.starts_with("-NOAUTH") {
        Check::new("cache-auth", &m.name, Verdict::Pass, format!("PING without AUTH at {place}: {answer}"))
    } else if answer.starts_with("+PONG") {
        Check::new(
            "cache-auth",
            &m.name,
            Verdict::Fail,
            format!("PING without AUTH at {place} answered PONG: every user of the host can read and write the cache"),
        )
    } else {
        Check::new("cache-auth", &m.name, Verdict::Warn, format!("PING without AUTH at {place}: {answer}"))
    };
    Ok(check
        .fix("gbo install --tenant <tenant> cache (generates its password, requirepass, and gives it to botserver)"))
}

/// botui's BOTSERVER_URL: from the running process's environment, else from the unit; `None` without ui.service.
async fn read_botui_url(
    lxd: &Client,
    name: &InstanceName,
) -> Result<Option<(Option<String>, String)>, lxd_client::Error> {
    let show = inside::run(lxd, name, &["systemctl", "show", "ui.service", "--property=LoadState,MainPID,Environment"])
        .await?;
    let text = show.stdout_text();
    if text.contains("LoadState=not-found") || !show.success() {
        return Ok(None);
    }
    let pid =
        text.lines().find_map(|l| l.strip_prefix("MainPID=")).and_then(|p| p.trim().parse::<u32>().ok()).unwrap_or(0);
    let env: Vec<String> = if pid > 0 {
        let environ = inside::run(lxd, name, &["cat", &format!("/proc/{pid}/environ")]).await?;
        environ.stdout_text().split('\0').map(str::to_string).collect()
    } else {
        text.lines()
            .find_map(|l| l.strip_prefix("Environment="))
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let url = env.iter().find_map(|e| e.strip_prefix("BOTSERVER_URL=")).map(str::to_string);
    Ok(Some((url, if pid > 0 { format!("process {pid}") } else { "ui.service (not running)".to_string() })))
}

async fn botserver_url(ctx: &Ctx<'_>) -> Result<Vec<Check>, lxd_client::Error> {
    let Some(m) = ctx.role("system") else { return Ok(Vec::new()) };
    let name = name_of(m)?;
    let Some((url, source)) = read_botui_url(ctx.lxd, &name).await? else {
        return Ok(vec![Check::new("botui-url", &m.name, Verdict::Skip, "no ui.service")]);
    };
    let verdict_of =
        |url: &Option<String>| if url.as_deref() == Some(BOTSERVER_URL) { Verdict::Pass } else { Verdict::Fail };
    let mut check = Check::new(
        "botui-url",
        &m.name,
        verdict_of(&url),
        format!("BOTSERVER_URL={} ({source})", url.as_deref().unwrap_or("(unset)")),
    )
    .fix(format!(
        "Environment=BOTSERVER_URL={BOTSERVER_URL} in ui.service (a drop-in), then systemctl restart ui.service"
    ));
    if check.verdict == Verdict::Fail && ctx.options.fix {
        let dropin = format!("[Service]\nEnvironment=BOTSERVER_URL={BOTSERVER_URL}\n");
        inside::write_if_changed(
            ctx.lxd,
            &name,
            "/etc/systemd/system/ui.service.d/gbo-botserver-url.conf",
            dropin.as_bytes(),
            FileOptions::root(0o644),
        )
        .await?;
        inside::run(ctx.lxd, &name, &["systemctl", "daemon-reload"]).await?;
        inside::run(ctx.lxd, &name, &["systemctl", "restart", "ui.service"]).await?;
        if let Some((url, source)) = read_botui_url(ctx.lxd, &name).await? {
            check.verdict = verdict_of(&url);
            check.evidence = format!("BOTSERVER_URL={} ({source})", url.as_deref().unwrap_or("(unset)"));
            check.fixed = check.verdict == Verdict::Pass;
        }
    }
    Ok(vec![check])
}

/// Caddy's running config (admin API through bash's /dev/tcp: no curl needed in the container).
async fn caddy_live_config(lxd: &Client, name: &InstanceName) -> Result<Option<serde_json::Value>, lxd_client::Error> {
    let script = "exec 3<>/dev/tcp/127.0.0.1/2019 && printf 'GET /config/ HTTP/1.0\\r\\nHost: localhost:2019\\r\\n\\r\\n' >&3 && timeout 5 cat <&3";
    let out = inside::run(lxd, name, &["bash", "-c", script]).await?;
    if !out.success() {
        return Ok(None);
    }
    let text = out.stdout_text();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok(serde_json::from_str(body).ok())
}

async fn caddy(ctx: &Ctx<'_>) -> Result<Vec<Check>, lxd_client::Error> {
    let Some(m) = ctx.role("proxy") else {
        return Ok(vec![Check::new("caddy-storage", "-", Verdict::Skip, "no proxy container")]);
    };
    let name = name_of(m)?;
    let mut out = Vec::new();
    let live = caddy_live_config(ctx.lxd, &name).await?;
    let storage = match &live {
        Some(config) => match config.get("storage") {
            Some(s) => Check::new("caddy-storage", &m.name, Verdict::Pass, format!("running config: storage {s}")),
            None => Check::new(
                "caddy-storage",
                &m.name,
                Verdict::Fail,
                "running config has no storage: certificates live in the caddy user's home and are lost on restart",
            ),
        },
        None => Check::new(
            "caddy-storage",
            &m.name,
            Verdict::Fail,
            "Caddy's admin API (localhost:2019) does not answer: Caddy is not running",
        ),
    };
    out.push(
        storage.fix("add `storage file_system { root /opt/gbo/data/caddy }` to the global block with gbo proxy apply"),
    );
    let text = inside::read_opt(ctx.lxd, &name, proxy::CADDYFILE_PATH)
        .await?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let Some(text) = text else {
        out.push(Check::new(
            "caddy-sites",
            &m.name,
            Verdict::Fail,
            format!("{} does not exist", proxy::CADDYFILE_PATH),
        ));
        return Ok(out);
    };
    let hosts = match Caddyfile::parse(&text) {
        Ok(c) => c.hosts(),
        Err(e) => {
            out.push(Check::new(
                "caddy-sites",
                &m.name,
                Verdict::Fail,
                format!("{} does not parse: {e}", proxy::CADDYFILE_PATH),
            ));
            return Ok(out);
        }
    };
    let listing = inside::run(ctx.lxd, &name, &["sh", "-c", "ls -1t /opt/gbo/conf/config.bak-* 2>/dev/null | head -1"])
        .await?
        .stdout_text();
    let sites = match listing.trim() {
        "" => Check::new(
            "caddy-sites",
            &m.name,
            Verdict::Pass,
            format!("{} sites; no backup to compare with", hosts.len()),
        ),
        backup => {
            let old = inside::read_opt(ctx.lxd, &name, backup)
                .await?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let old_hosts = Caddyfile::parse(&old).map(|c| c.hosts()).unwrap_or_default();
            let lost: Vec<&String> = old_hosts.iter().filter(|h| !hosts.contains(h)).collect();
            if hosts.len() < old_hosts.len() {
                Check::new(
                    "caddy-sites",
                    &m.name,
                    Verdict::Fail,
                    format!(
                        "{} sites, {} in {backup}; missing: {}",
                        hosts.len(),
                        old_hosts.len(),
                        lost.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                )
                .fix(format!("compare with {backup}; never replace the Caddyfile with a partial config"))
            } else {
                Check::new(
                    "caddy-sites",
                    &m.name,
                    Verdict::Pass,
                    format!("{} sites ({} in {backup})", hosts.len(), old_hosts.len()),
                )
            }
        }
    };
    out.push(sites);
    let verdicts = proxy::domain_verdicts(ctx.options.resolver.as_ref(), &text).await.unwrap_or_default();
    let dead: Vec<&str> =
        verdicts.iter().filter(|d| d.verdict == DnsVerdict::Dead).map(|d| d.domain.as_str()).collect();
    let unknown: Vec<&str> = verdicts
        .iter()
        .filter(|d| matches!(d.verdict, DnsVerdict::Unknown { .. }))
        .map(|d| d.domain.as_str())
        .collect();
    let check = if !dead.is_empty() {
        Check::new("dead-domains", &m.name, Verdict::Fail, format!("no DNS record: {}", dead.join(", ")))
            .fix("gbo proxy prune-dead-domains (removes them, then restarts Caddy)")
    } else if !unknown.is_empty() {
        Check::new("dead-domains", &m.name, Verdict::Warn, format!("could not resolve: {}", unknown.join(", ")))
    } else {
        Check::new("dead-domains", &m.name, Verdict::Pass, format!("{} domains resolve", verdicts.len()))
    };
    out.push(check);
    Ok(out)
}

async fn coredns_acl(ctx: &Ctx<'_>) -> Result<Vec<Check>, lxd_client::Error> {
    let Some(m) = ctx.role("dns") else { return Ok(Vec::new()) };
    let name = name_of(m)?;
    // The file the running process was given (`-conf`), else gbo's path.
    let mut path = dns::COREFILE_PATH.to_string();
    if let Some((pid, _)) = dns::coredns_pid(ctx.lxd, &name).await? {
        let cmdline = inside::run(ctx.lxd, &name, &["cat", &format!("/proc/{pid}/cmdline")]).await?.stdout_text();
        let args: Vec<&str> = cmdline.split('\0').collect();
        if let Some(i) = args.iter().position(|a| *a == "-conf") {
            if let Some(p) = args.get(i + 1) {
                path = (*p).to_string();
            }
        }
    }
    let Some(text) = inside::read_opt(ctx.lxd, &name, &path).await? else {
        return Ok(vec![Check::new("coredns-acl", &m.name, Verdict::Fail, format!("{path} does not exist"))]);
    };
    let text = String::from_utf8_lossy(&text);
    let missing = dns::zones_without_acl(&text);
    let open = dns::zones_allowing_any(&text);
    Ok(vec![if !missing.is_empty() {
        Check::new("coredns-acl", &m.name, Verdict::Fail, format!("no acl in {path} for {}", missing.join(", ")))
            .fix("gbo dns apply --zone <zone>... (renders the acl and SIGHUPs CoreDNS)")
    } else if !open.is_empty() {
        Check::new(
            "coredns-acl",
            &m.name,
            Verdict::Fail,
            format!(
                "{path} allows ANY from loopback for {}: through the proxy device every query comes from 127.0.0.1, so that is everyone",
                open.join(", ")
            ),
        )
        .fix("gbo dns apply --zone <zone>... (renders an acl that refuses ANY for everyone and SIGHUPs CoreDNS)")
    } else {
        Check::new("coredns-acl", &m.name, Verdict::Pass, format!("every block of {path} has the acl and refuses ANY"))
    }])
}

async fn fail2ban_jails(ctx: &Ctx<'_>) -> Result<Vec<Check>, lxd_client::Error> {
    let mut out = Vec::new();
    for role in ["proxy", "email"] {
        let Some(m) = ctx.role(role) else { continue };
        let name = name_of(m)?;
        let jail = fail2ban::role_jail(role).unwrap_or_default();
        let jails = fail2ban::running_jails(ctx.lxd, &name, Duration::from_secs(2)).await?;
        let mut check = if jails.iter().any(|j| j == jail) {
            Check::new("fail2ban", &m.name, Verdict::Pass, format!("running jails: {}", jails.join(", ")))
        } else {
            Check::new(
                "fail2ban",
                &m.name,
                Verdict::Fail,
                format!(
                    "jail {jail} is not running (running: {})",
                    if jails.is_empty() { "none".into() } else { jails.join(", ") }
                ),
            )
        }
        .fix("gbo fail2ban apply --tenant <tenant>");
        if check.verdict == Verdict::Fail && ctx.options.fix {
            if let Ok(r) = fail2ban::apply_container(ctx.lxd, &name, role, false).await {
                check.verdict = Verdict::Pass;
                check.evidence = format!("running jails: {}", r.jails.join(", "));
                check.fixed = true;
            }
        }
        out.push(check);
    }
    Ok(out)
}

async fn vault(ctx: &Ctx<'_>, production: bool) -> Result<Vec<Check>, lxd_client::Error> {
    // gbo's vault role: asked over its API, plain http through the port its container publishes on the host's
    // loopback (what `gbo vault` uses), so no vault CLI is needed inside. The seed's Vault inside -system: its own
    // `vault status` on https with a certificate its clients do not verify (its runbook's VAULT_SKIP_VERIFY habit).
    if let Some(m) = ctx.role("vault") {
        return Ok(vec![vault_over_api(m).await]);
    }
    let (m, binaries, addr, skip_verify) = match ctx.role("system") {
        Some(m) if production => {
            (m, vec![format!("{STACK_DIR}/bin/vault/vault"), "vault".to_string()], "https://127.0.0.1:8200", true)
        }
        _ => return Ok(Vec::new()),
    };
    let name = name_of(m)?;
    for binary in binaries {
        if !(inside::has_program(ctx.lxd, &name, &binary).await?
            || inside::run(ctx.lxd, &name, &["test", "-x", &binary]).await?.success())
        {
            continue;
        }
        // `vault status`: exit 0 unsealed, 2 sealed, 1 error (documented).
        let mut req = lxd_client::ExecRequest::new([binary.as_str(), "status", "-format=json"])
            .env("VAULT_ADDR", addr)
            .timeout(Duration::from_secs(20));
        if skip_verify {
            req = req.env("VAULT_SKIP_VERIFY", "true");
        }
        let out = inside::exec(ctx.lxd, &name, &req).await?;
        let check = match out.exit_code {
            0 => Check::new("vault-unsealed", &m.name, Verdict::Pass, "vault status: unsealed"),
            2 => Check::new("vault-unsealed", &m.name, Verdict::Fail, "vault status: sealed")
                .fix("gbo vault unseal --tenant <tenant>"),
            _ => Check::new(
                "vault-unsealed",
                &m.name,
                Verdict::Fail,
                format!("vault status failed: {}", inside::failure_text(&out)),
            ),
        };
        return Ok(vec![check]);
    }
    Ok(vec![Check::new("vault-unsealed", &m.name, Verdict::Skip, "no vault binary found")])
}

/// The vault role's seal state through its published API port.
async fn vault_over_api(m: &ManagedInstance) -> Check {
    let Some(port) = m.ports.iter().find(|p| p.container_port == 8200) else {
        return Check::new("vault-unsealed", &m.name, Verdict::Fail, "the vault container publishes no port 8200")
            .fix("gbo install vault --tenant <tenant>");
    };
    let host = if port.host_address.is_empty() || port.host_address == "0.0.0.0" {
        "127.0.0.1".to_string()
    } else {
        port.host_address.clone()
    };
    let endpoint = crate::vault::Endpoint {
        addr: format!("http://{host}:{}", port.host_port),
        ca_cert: None,
        insecure_skip_verify: false,
    };
    match crate::vault::status(&endpoint).await {
        Ok(s) if s.seal.initialized && !s.seal.sealed => Check::new(
            "vault-unsealed",
            &m.name,
            Verdict::Pass,
            format!("{}: initialised, unsealed (sys/health {} {})", endpoint.addr, s.health_code, s.health),
        ),
        Ok(s) if !s.seal.initialized => {
            Check::new("vault-unsealed", &m.name, Verdict::Fail, format!("{}: not initialised", endpoint.addr))
                .fix("gbo vault init --tenant <tenant>")
        }
        Ok(s) => Check::new(
            "vault-unsealed",
            &m.name,
            Verdict::Fail,
            format!("{}: sealed ({} of {} keys submitted)", endpoint.addr, s.seal.progress, s.seal.t),
        )
        .fix("gbo vault unseal --tenant <tenant>"),
        Err(e) => Check::new("vault-unsealed", &m.name, Verdict::Fail, format!("vault status failed: {e}")),
    }
}

async fn botserver_owner(ctx: &Ctx<'_>) -> Result<Vec<Check>, lxd_client::Error> {
    let Some(m) = ctx.role("system") else { return Ok(Vec::new()) };
    let name = name_of(m)?;
    let path = "/opt/gbo/bin/botserver";
    let out = inside::run(ctx.lxd, &name, &["stat", "-c", "%U:%G", path]).await?;
    if !out.success() {
        return Ok(vec![Check::new(
            "botserver-owner",
            &m.name,
            Verdict::Warn,
            format!("{path} does not exist (not deployed yet)"),
        )]);
    }
    let owner = out.stdout_text().trim().to_string();
    let fix = format!("chown gbuser:gbuser {path}");
    let mut check = if owner.starts_with("gbuser:") {
        Check::new("botserver-owner", &m.name, Verdict::Pass, format!("{path} owned by {owner}"))
    } else {
        Check::new(
            "botserver-owner",
            &m.name,
            Verdict::Fail,
            format!("{path} owned by {owner}: scp as gbuser will fail"),
        )
        .fix(fix)
    };
    if check.verdict == Verdict::Fail
        && ctx.options.fix
        && inside::run(ctx.lxd, &name, &["chown", "gbuser:gbuser", path]).await?.success()
    {
        let owner = inside::run(ctx.lxd, &name, &["stat", "-c", "%U:%G", path]).await?.stdout_text().trim().to_string();
        check.fixed = owner.starts_with("gbuser:");
        check.verdict = if check.fixed { Verdict::Pass } else { Verdict::Fail };
        check.evidence = format!("{path} owned by {owner}");
    }
    Ok(vec![check])
}

/// Parse `zfs list` sizes (`1.5G`, `512K`, `0B`, `123`).
pub fn parse_zfs_size(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().ok()?;
    let mult = match unit.trim_end_matches('B').trim_end_matches("iB") {
        "" => 1.0,
        "K" => 1024.0,
        "M" => 1024f64.powi(2),
        "G" => 1024f64.powi(3),
        "T" => 1024f64.powi(4),
        "P" => 1024f64.powi(5),
        _ => return None,
    };
    Some(n * mult)
}

async fn zfs_space(ctx: &Ctx<'_>) -> Result<Vec<Check>, lxd_client::Error> {
    let pools: Vec<_> = ctx.lxd.storage_pools().await?.into_iter().filter(|p| p.driver == "zfs").collect();
    let mut out = Vec::new();
    for pool in pools {
        let dataset = pool.config.get("zfs.pool_name").cloned().unwrap_or_else(|| pool.name.clone());
        let run = |args: Vec<String>| crate::runner::HostCommand::new("zfs").args(args).run();
        let total = run(vec!["list".into(), "-H".into(), "-o".into(), "used,avail".into(), dataset.clone()]);
        let snaps = run(vec![
            "list".into(),
            "-H".into(),
            "-t".into(),
            "snapshot".into(),
            "-o".into(),
            "used".into(),
            "-r".into(),
            dataset.clone(),
        ]);
        let check = match (total, snaps) {
            (Ok(total), Ok(snaps)) => {
                let fields: Vec<f64> = total.split_whitespace().filter_map(parse_zfs_size).collect();
                let size = fields.iter().sum::<f64>().max(1.0);
                let used: f64 = snaps.lines().filter_map(parse_zfs_size).sum();
                let percent = used * 100.0 / size;
                let evidence =
                    format!("snapshots of {dataset} use {:.1} GiB, {percent:.1}% of the pool", used / 1024f64.powi(3));
                if percent > f64::from(ctx.options.zfs_snapshot_percent) {
                    Check::new("zfs-snapshots", "host", Verdict::Fail, evidence)
                        .fix("gbo zfs prune (delete stale snapshots, especially of containers that had cross mounts)")
                } else {
                    Check::new("zfs-snapshots", "host", Verdict::Pass, evidence)
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                Check::new("zfs-snapshots", "host", Verdict::Fail, format!("cannot read ZFS usage: {e}"))
            }
        };
        out.push(check);
    }
    if out.is_empty() {
        out.push(Check::new("zfs-snapshots", "host", Verdict::Skip, "no ZFS storage pool in LXD"));
    }
    Ok(out)
}

async fn brother_socket(ctx: &Ctx<'_>) -> Result<Vec<Check>, lxd_client::Error> {
    let Some(m) = ctx.role("system") else { return Ok(Vec::new()) };
    let Some((listen, connect)) = brother::brother_device(&m.instance) else {
        return Ok(vec![Check::new("brother-socket", &m.name, Verdict::Skip, "brother mode is not enabled")]);
    };
    let name = name_of(m)?;
    let present = brother::socket_present(ctx.lxd, &name, &listen, Duration::from_secs(1)).await?;
    let mut check = if present {
        Check::new(
            "brother-socket",
            &m.name,
            Verdict::Pass,
            format!("{listen} is a socket (connects to the host's {connect})"),
        )
    } else {
        Check::new(
            "brother-socket",
            &m.name,
            Verdict::Fail,
            format!("the lxd-sock device listens on {listen}, but there is no socket there"),
        )
        .fix(format!("gbo brother enable (listens on {}, which survives restarts)", brother::DEFAULT_SOCKET_PATH))
    };
    if present && (listen.starts_with("/tmp/") || listen.starts_with("/run/")) {
        check.verdict = Verdict::Warn;
        check.evidence.push_str("; it is on a tmpfs and will be gone after the next restart");
    }
    Ok(vec![check])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zfs_sizes_parse() {
        assert_eq!(parse_zfs_size("0B"), Some(0.0));
        assert_eq!(parse_zfs_size("1.5K"), Some(1536.0));
        assert_eq!(parse_zfs_size("2G"), Some(2.0 * 1024f64.powi(3)));
        assert_eq!(parse_zfs_size("12345"), Some(12345.0));
        assert_eq!(parse_zfs_size("x"), None);
    }

    fn container(name: &str, stack: &str, disks: &[(&str, &str, &str)]) -> ManagedInstance {
        let mut instance = lxd_client::Instance { name: name.into(), ..Default::default() };
        instance.config.insert(inventory::KEY_STACK_DIR.into(), stack.into());
        for (device, source, path) in disks {
            let disk = std::collections::BTreeMap::from([
                ("type".to_string(), "disk".to_string()),
                ("source".into(), (*source).to_string()),
                ("path".into(), (*path).to_string()),
            ]);
            instance.expanded_devices.insert((*device).to_string(), disk);
        }
        inventory::describe(&instance).expect("a tenant's container")
    }

    #[test]
    fn gbo_s_own_alm_ci_mounts_pass_and_cross_container_mounts_fail() {
        let own = [
            ("gbo-data", "/srv/t/alm-ci/data", "/opt/gbo/data"),
            ("gbo-conf", "/srv/t/alm-ci/conf", "/opt/gbo/conf"),
            ("gbo-logs", "/srv/t/alm-ci/logs", "/opt/gbo/logs"),
        ];
        let system = container("t-system", "/srv/t", &[("gbo-data", "/srv/t/system/data", "/opt/gbo/data")]);
        let alm_ci = container("t-alm-ci", "/srv/t", &own);
        let stack = Some(std::path::Path::new("/srv/t"));
        let check = judge_alm_ci_mounts(&alm_ci, stack, std::slice::from_ref(&system));
        assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
        assert!(check.evidence.contains("its own: gbo-conf, gbo-data, gbo-logs"), "{check:?}");

        // The seed's incident: the runner mounts -system's binaries to copy over them.
        let mut disks = own.to_vec();
        disks.push(("bin", "/srv/t/system/data/bin", "/mnt/system-bin"));
        let crossed =
            judge_alm_ci_mounts(&container("t-alm-ci", "/srv/t", &disks), stack, std::slice::from_ref(&system));
        assert_eq!(crossed.verdict, Verdict::Fail, "{crossed:?}");
        assert!(
            crossed
                .evidence
                .contains("bin (/srv/t/system/data/bin -> /mnt/system-bin) shares /srv/t/system/data with t-system"),
            "{crossed:?}"
        );
        // Another role's directory of the stack dir, even with that container gone.
        let crossed = judge_alm_ci_mounts(&container("t-alm-ci", "/srv/t", &disks), stack, &[]);
        assert_eq!(crossed.verdict, Verdict::Fail, "{crossed:?}");
        // gbo's device names on another container's path are no disguise.
        let disguised = [("gbo-data", "/srv/t/system/data", "/opt/gbo/data")];
        let crossed =
            judge_alm_ci_mounts(&container("t-alm-ci", "/srv/t", &disguised), stack, std::slice::from_ref(&system));
        assert_eq!(crossed.verdict, Verdict::Fail, "{crossed:?}");
        // A host directory nobody else mounts: worth a look.
        let cache = [("cargo", "/var/cache/cargo", "/root/.cargo")];
        let warned =
            judge_alm_ci_mounts(&container("t-alm-ci", "/srv/t", &cache), stack, std::slice::from_ref(&system));
        assert_eq!(warned.verdict, Verdict::Warn, "{warned:?}");
    }
}
