//! Setting up LXD, the catalogue, planning, installing, uninstalling and the status of a tenant.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use gbo_components::{Role, TenantFile, TenantName};
use gbo_ops::install::{self, InstallError, InstallRequest};

use crate::output::outln;
use crate::output::progress::{Lines, Style};
use crate::output::{lxd, print_json, print_table, Format, Outcome};

/// Arguments shared by `plan` and `install`.
#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// Roles (default: the tenant file's roles, else tables, drive, cache).
    roles: Vec<String>,
    /// Tenant (default: the tenant file's, else `default`).
    #[arg(long)]
    tenant: Option<String>,
    /// Every role of the catalogue.
    #[arg(long)]
    all: bool,
    /// The tenant file (default: ./gbo.toml when it exists).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Image to create containers from: ALIAS (an image of this LXD) or REMOTE:ALIAS, where REMOTE is `images`
    /// (<https://images.linuxcontainers.org>) or a remote of the lxc CLI (`lxc remote list`; LXD servers must serve
    /// the image publicly). Default: --default-image when it exists here, else --fallback-image. Containers from an
    /// image gbo did not build get the fixed-uid users and their roles' Debian packages (apt-get) at provisioning,
    /// which needs a network (`gbo setup --network`); `gbo image build` makes an offline image.
    #[arg(long, value_name = "[REMOTE:]ALIAS")]
    image: Option<String>,
    /// The local image used when --image is not given.
    #[arg(long, env = "GBO_DEFAULT_IMAGE", default_value = install::DEFAULT_IMAGE, value_name = "ALIAS")]
    default_image: String,
    /// The image used when --image is not given and --default-image does not exist.
    #[arg(long, env = "GBO_FALLBACK_IMAGE", default_value = install::FALLBACK_IMAGE, value_name = "[REMOTE:]ALIAS")]
    fallback_image: String,
    /// The tenant's own host directory for `<role>/{data,conf,logs}`, used as given (default: the tenant file's
    /// stack_dir, else ./botserver-stack for the `default` tenant and ./botserver-stack/TENANT for any other). A
    /// directory another tenant's containers use is refused: tenants never share one.
    #[arg(long)]
    stack_dir: Option<PathBuf>,
    /// Install what can be installed and name the roles whose artifacts cannot be obtained.
    #[arg(long)]
    skip_unavailable: bool,
    /// Allow downloading artifacts from their upstream URLs (gbo never reaches the internet otherwise).
    #[arg(long)]
    download: bool,
    /// Accept artifacts gbo has no means to verify (no vendor signature with a key gbo trusts and no SHA-256 pin);
    /// the plan names each. A published signature or checksum that does not match is refused all the same.
    #[arg(long)]
    allow_unverified: bool,
    /// Artifact cache directory.
    #[arg(long, default_value = install::artifact::DEFAULT_CACHE_DIR)]
    artifact_cache: PathBuf,
    /// Pin a host port: ROLE.PORT=NUMBER (e.g. tables.postgres=15432). Repeatable.
    #[arg(long = "port", value_name = "ROLE.NAME=PORT")]
    ports: Vec<String>,
    /// Seconds to wait for another run holding the tenant's lock.
    #[arg(long, default_value_t = 60)]
    lock_wait: u64,
    /// Cluster member (or @GROUP) of every container this run creates, over the tenant file's `[placement]`
    /// (default: LXD's scheduler). An offline or evacuated member is refused.
    #[arg(long, value_name = "MEMBER|@GROUP")]
    target: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

pub(super) fn parse_tenant(value: &str) -> anyhow::Result<TenantName> {
    Ok(TenantName::new(value)?)
}

pub(super) fn parse_roles(values: &[String]) -> anyhow::Result<Vec<Role>> {
    values.iter().map(|v| v.parse::<Role>().map_err(anyhow::Error::from)).collect()
}

pub(super) fn load_tenant_file(file: Option<&PathBuf>, tenant: Option<&str>) -> anyhow::Result<TenantFile> {
    let path = match file {
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from("gbo.toml")).filter(|p| p.is_file()),
    };
    let mut tenant_file = match &path {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading the tenant file {}", p.display()))?;
            TenantFile::parse(&text).with_context(|| format!("in {}", p.display()))?
        }
        None => TenantFile::default(),
    };
    if let Some(t) = tenant {
        tenant_file.tenant = parse_tenant(t)?;
    }
    Ok(tenant_file)
}

fn parse_ports(values: &[String]) -> anyhow::Result<BTreeMap<(Role, String), u16>> {
    let mut out = BTreeMap::new();
    for value in values {
        let bad = || {
            anyhow!("--port {value:?}: expected ROLE.NAME=PORT with PORT 1-65535, for example tables.postgres=15432")
        };
        let (key, port) = value.split_once('=').ok_or_else(bad)?;
        let (role, name) = key.split_once('.').ok_or_else(bad)?;
        let role: Role = role.parse()?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        out.insert((role, name.to_string()), port);
    }
    Ok(out)
}

fn request(args: &InstallArgs) -> anyhow::Result<InstallRequest> {
    let tenant_file = load_tenant_file(args.file.as_ref(), args.tenant.as_deref())?;
    let roles = parse_roles(&args.roles)?;
    let mut request = InstallRequest::new(tenant_file, roles);
    request.all = args.all;
    request.image = args.image.clone();
    request.default_image = args.default_image.clone();
    request.fallback_image = args.fallback_image.clone();
    request.stack_dir = args.stack_dir.clone();
    request.skip_unavailable = args.skip_unavailable;
    request.artifacts = install::ArtifactPolicy {
        cache_dir: args.artifact_cache.clone(),
        download: args.download,
        allow_unverified: args.allow_unverified,
        trust: request.tenant_file.trust.clone(),
    };
    request.ports = parse_ports(&args.ports)?;
    request.lock_wait = Duration::from_secs(args.lock_wait);
    request.target = args.target.as_deref().map(|t| gbo_components::Placement::parse("--target", t)).transpose()?;
    Ok(request)
}

pub(super) fn engine_error(e: InstallError) -> anyhow::Error {
    anyhow::Error::new(e)
}

pub(super) async fn setup(network: bool) -> anyhow::Result<Outcome> {
    let lxd = lxd()?;
    let report = install::setup::setup(&lxd, &install::setup::SetupOptions { pool: "default".into(), network })
        .await
        .map_err(engine_error)?;
    outln!("LXD at {}", report.endpoint);
    for line in report.lines {
        outln!("  {line}");
    }
    Ok(Outcome::Ok)
}

pub(super) fn components(output: Format) -> anyhow::Result<Outcome> {
    let summaries: Vec<_> = Role::ALL.into_iter().map(gbo_components::catalogue::summary).collect();
    if output == Format::Json {
        print_json(&summaries)?;
    } else {
        let list = |items: &[String]| if items.is_empty() { "-".to_string() } else { items.join(",") };
        let rows: Vec<Vec<String>> = summaries
            .iter()
            .map(|s| {
                let deps: Vec<String> = s.dependencies.iter().map(|d| d.to_string()).collect();
                vec![
                    s.role.to_string(),
                    s.container.clone(),
                    s.software.clone(),
                    list(&s.ports),
                    list(&deps),
                    s.install.clone(),
                    s.verified.clone(),
                ]
            })
            .collect();
        print_table(&["ROLE", "CONTAINER", "SOFTWARE", "PORTS", "AFTER", "INSTALL", "VERIFIED"], &rows);
    }
    Ok(Outcome::Ok)
}

fn print_plan(planned: &install::PlannedInstall) {
    outln!("tenant {} (stack dir {})", planned.tenant, planned.stack_dir.display());
    for note in &planned.notes {
        outln!("note: {note}");
    }
    for (role, why) in &planned.skipped {
        outln!("skipped {role}: {why}");
    }
    for component in &planned.components {
        let on = component.member.as_deref().map(|m| format!(" on {m}")).unwrap_or_default();
        if component.steps.is_empty() {
            outln!("  {}{on}: up to date", component.instance);
            continue;
        }
        outln!("  {}{on}: {} step(s)", component.instance, component.steps.len());
        for step in &component.steps {
            outln!("      {:<60} # {}", step.describe(), step.reason);
        }
    }
    if planned.is_empty() {
        outln!("Nothing to do: every component is converged.");
    } else {
        outln!(
            "Plan: {} step(s) in {} component(s).",
            planned.step_count(),
            planned.components.iter().filter(|c| !c.steps.is_empty()).count()
        );
    }
}

fn plan_json(planned: &install::PlannedInstall) -> serde_json::Value {
    serde_json::json!({
        "tenant": planned.tenant.as_str(),
        "stack_dir": planned.stack_dir,
        "notes": planned.notes,
        "skipped": planned.skipped.iter().map(|(r, why)| serde_json::json!({"role": r.as_str(), "reason": why})).collect::<Vec<_>>(),
        "components": planned.components,
        "changes": planned.step_count(),
    })
}

pub(super) async fn plan(args: InstallArgs) -> anyhow::Result<Outcome> {
    let request = request(&args)?;
    let lxd =
        crate::output::lxd_for_storage("gbo plan", &request.tenant_file.tenant, request.tenant_file.storage).await?;
    let planned = install::plan(&lxd, &request, false).await.map_err(engine_error)?;
    if args.output == Format::Json {
        print_json(&plan_json(&planned))?;
    } else {
        print_plan(&planned);
    }
    Ok(Outcome::Ok)
}

pub(super) async fn install(args: InstallArgs, dry_run: bool) -> anyhow::Result<Outcome> {
    let request = request(&args)?;
    let lxd =
        crate::output::lxd_for_storage("gbo install", &request.tenant_file.tenant, request.tenant_file.storage).await?;
    if dry_run {
        let planned = install::plan(&lxd, &request, false).await.map_err(engine_error)?;
        if args.output == Format::Json {
            print_json(&plan_json(&planned))?;
        } else {
            print_plan(&planned);
            outln!("--dry-run: nothing was changed.");
        }
        return Ok(Outcome::Ok);
    }
    let started = std::time::Instant::now();
    if request.image.is_none() {
        // Say up front when the fallback image is used (errors surface from the install itself).
        if let Ok(image) = install::resolve_image(&lxd, &request, &[]).await {
            if let Some(note) = image.note {
                eprintln!("note: {note}");
            }
        }
    }
    let lines = Lines::new(Style::for_output(args.output));
    let events = |event: &gbo_ops::events::InstallEvent| lines.show(event);
    let result = install::install(&lxd, &request, &events).await;
    lines.close();
    let report = result.map_err(engine_error)?;
    if args.output == Format::Json {
        print_json(&report)?;
    } else {
        for (role, why) in &report.skipped {
            outln!("skipped {role}: {why}");
        }
        let rows: Vec<Vec<String>> = report
            .components
            .iter()
            .map(|c| {
                vec![
                    c.instance.clone(),
                    c.steps.to_string(),
                    if c.health.healthy { "healthy".into() } else { "UNHEALTHY".into() },
                    c.health.detail.clone(),
                ]
            })
            .collect();
        print_table(&["CONTAINER", "CHANGES", "HEALTH", "CHECK"], &rows);
        outln!(
            "tenant {} installed in {:.1} s (stack dir {})",
            report.tenant,
            started.elapsed().as_secs_f64(),
            report.stack_dir.display()
        );
    }
    Ok(Outcome::Ok)
}

/// A role or a container name of `tenant`.
pub(super) fn resolve_target(value: &str, tenant: Option<&TenantName>) -> anyhow::Result<(TenantName, Role)> {
    if let Ok(role) = value.parse::<Role>() {
        return Ok((tenant.cloned().unwrap_or_default(), role));
    }
    match gbo_components::try_parse_instance_name(value) {
        Ok((t, role)) => {
            if let Some(tenant) = tenant {
                if &t != tenant {
                    bail!("{value:?} is a container of tenant {t}, not of --tenant {tenant}");
                }
            }
            Ok((t, role))
        }
        Err(e) => Err(anyhow!("{value:?} is neither a role nor a container name: {e}")),
    }
}

pub(super) async fn uninstall(
    targets: Vec<String>,
    tenant: Option<String>,
    purge: bool,
    yes: bool,
    lock_wait: Duration,
) -> anyhow::Result<Outcome> {
    let tenant = tenant.as_deref().map(parse_tenant).transpose()?;
    let resolved: Vec<(TenantName, Role)> =
        targets.iter().map(|t| resolve_target(t, tenant.as_ref())).collect::<anyhow::Result<_>>()?;
    let lxd = lxd()?;
    if purge {
        // Purging host directories needs the daemon's host; purging volumes goes through the API alone.
        let tenants: std::collections::BTreeSet<&TenantName> = resolved.iter().map(|(t, _)| t).collect();
        for t in tenants {
            crate::output::lxd_for_storage("gbo uninstall --purge", t, None).await?;
        }
    }
    if purge && !yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "--purge deletes host data (or the tenant's volumes): pass --yes to confirm when there is no terminal"
            );
        }
        eprint!("Delete the host data of {} too? [y/N] ", targets.join(", "));
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            bail!("not confirmed: nothing was changed");
        }
    }
    let mut by_tenant: BTreeMap<TenantName, Vec<Role>> = BTreeMap::new();
    for (t, r) in resolved {
        by_tenant.entry(t).or_default().push(r);
    }
    for (t, roles) in by_tenant {
        for u in install::uninstall(&lxd, &t, &roles, purge, lock_wait).await.map_err(engine_error)? {
            let what = if u.deleted { "deleted" } else { "not present" };
            match (&u.purged, &u.kept) {
                (Some(p), _) => outln!("{}: {what}; host data {} removed", u.instance, p.display()),
                (_, Some(k)) => outln!("{}: {what}; host data kept in {}", u.instance, k.display()),
                _ => outln!("{}: {what}", u.instance),
            }
            if !u.purged_volumes.is_empty() {
                outln!("{}: volumes {} deleted", u.instance, u.purged_volumes.join(", "));
            }
            if !u.kept_volumes.is_empty() {
                outln!("{}: data kept in volumes {}", u.instance, u.kept_volumes.join(", "));
            }
            for elsewhere in &u.purged_elsewhere {
                outln!("{}: {elsewhere} removed", u.instance);
            }
            for elsewhere in &u.kept_elsewhere {
                outln!("{}: {elsewhere} kept", u.instance);
            }
        }
    }
    Ok(Outcome::Ok)
}

pub(super) async fn status(
    targets: Vec<String>,
    tenant: Option<String>,
    image: String,
    output: Format,
) -> anyhow::Result<Outcome> {
    let tenant_name = tenant.as_deref().map(parse_tenant).transpose()?;
    let mut roles = Vec::new();
    let mut resolved_tenant = tenant_name.clone();
    for t in &targets {
        let (tn, role) = resolve_target(t, tenant_name.as_ref())?;
        resolved_tenant.get_or_insert(tn);
        roles.push(role);
    }
    let tenant = resolved_tenant.unwrap_or_default();
    let lxd = lxd()?;
    let report = install::status::tenant_status_against(&lxd, &tenant, &roles, &image).await.map_err(engine_error)?;
    if output == Format::Json {
        print_json(&report)?;
    } else {
        if report.components.is_empty() {
            outln!("tenant {tenant}: no containers");
        }
        let clustered = report.components.iter().any(|c| c.member.is_some());
        let rows: Vec<Vec<String>> = report
            .components
            .iter()
            .map(|c| {
                let mut row = vec![
                    c.container.clone(),
                    c.state.to_string(),
                    c.image.clone(),
                    c.ports
                        .iter()
                        .map(|p| format!("{}:{}->{}/{}", p.host_address, p.host_port, p.container_port, p.protocol))
                        .collect::<Vec<_>>()
                        .join(" "),
                    c.mounts
                        .iter()
                        .map(|m| format!("{}:{}", m.host_path.display(), m.container_path))
                        .chain(c.volumes.iter().map(|v| format!("{}:{}", v.label(), v.container_path)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    match &c.health {
                        Some(h) if h.healthy => format!("healthy ({})", h.detail),
                        Some(h) => format!("UNHEALTHY ({})", h.detail),
                        None => "-".into(),
                    },
                ];
                if clustered {
                    row.insert(1, c.member.clone().unwrap_or_default());
                }
                row
            })
            .collect();
        let mut headers = vec!["CONTAINER", "STATE", "IMAGE", "PORTS", "MOUNTS", "HEALTH"];
        if clustered {
            headers.insert(1, "MEMBER");
        }
        print_table(&headers, &rows);
        for c in report.components.iter() {
            if let Some(upgrade) = &c.upgrade {
                outln!("note: {} {upgrade}", c.container);
            }
        }
    }
    Ok(if report.all_healthy() { Outcome::Ok } else { Outcome::Problems })
}

#[cfg(test)]
#[path = "install_properties.rs"]
mod properties;
