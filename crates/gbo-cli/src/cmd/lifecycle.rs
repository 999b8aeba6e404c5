//! Setting up LXD, building images, planning, installing and operating a tenant's containers.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use gbo_components::{Role, TenantFile, TenantName};
use gbo_ops::install::{self, InstallError, InstallRequest};
use lxd_client::{ExecRequest, InstanceName, StateAction};

use crate::output::progress::{Lines, Style};
use crate::output::{lxd, print_json, print_table, Format, Outcome};

/// The lifecycle commands (flattened into the top level).
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Detect the LXD socket and initialise a storage pool and the default profile's root disk if missing.
    Setup {
        /// Also create a bridge (lxdbr0) for hosts whose containers should reach the network.
        #[arg(long)]
        network: bool,
    },
    /// Build or list gbo images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// List the catalogue's roles: container, software, ports, dependencies.
    Components {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Show what `install` would change, with the reason for each step (changes nothing).
    Plan(InstallArgs),
    /// Install (converge) a tenant's components: plan, apply in dependency order, verify health.
    Install {
        #[command(flatten)]
        args: InstallArgs,
        /// Print the plan and stop without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete components' containers; host data stays unless --purge.
    Uninstall {
        /// Roles (or container names) to remove.
        #[arg(required = true)]
        roles: Vec<String>,
        /// Tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Also delete the host data: the directories recorded on the tenant's own containers, never one that
        /// another tenant uses.
        #[arg(long)]
        purge: bool,
        /// Do not ask before purging (required without a terminal).
        #[arg(long)]
        yes: bool,
        /// Seconds to wait for another gbo run on the tenant to finish.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        lock_wait: u64,
    },
    /// Containers, state, image, ports, mounts and live health of a tenant. Exit 1 when something is unhealthy.
    Status {
        /// Roles or container names (default: all of the tenant's).
        targets: Vec<String>,
        /// Tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Output format (JSON shape in docs/json-output.md).
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Start containers (a container name, or --tenant T [ROLE...]).
    Start(TargetArgs),
    /// Stop containers.
    Stop(TargetArgs),
    /// Restart containers.
    Restart(TargetArgs),
    /// Run a command in a container (interactive when stdin is a terminal): `gbo exec default-tables -- psql`.
    Exec {
        /// Container name.
        container: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The journal of a container's role unit (`journalctl -u <role>`).
    Logs {
        /// Container name.
        container: String,
        /// Keep following.
        #[arg(short, long)]
        follow: bool,
        /// Number of lines.
        #[arg(short = 'n', long, default_value_t = 200)]
        lines: u32,
    },
    /// Set LXD limits on a container (also settable per role in gbo.toml under [limits.ROLE]).
    Limits {
        /// Container name.
        container: String,
        /// CPUs (limits.cpu).
        #[arg(long)]
        cpu: Option<u32>,
        /// Memory (limits.memory), e.g. 4GB.
        #[arg(long)]
        memory: Option<String>,
    },
}

/// `gbo image ...`.
#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Build (or reuse) the offline image: Debian 12, systemd, fixed uids, the roles' packages.
    Build {
        /// Roles whose Debian packages to bake in, comma separated (default: every Debian-packaged role).
        #[arg(long, value_delimiter = ',')]
        components: Vec<String>,
        /// Image alias.
        #[arg(long, default_value = install::DEFAULT_IMAGE)]
        alias: String,
        /// Rebuild even when an image with the same inputs exists.
        #[arg(long)]
        force: bool,
    },
    /// List gbo images.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
}

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
    /// Accept artifacts without a SHA-256 pin.
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
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// A container name, or --tenant T [ROLE...].
#[derive(clap::Args, Debug)]
pub struct TargetArgs {
    /// Container names or roles (roles need --tenant, or mean the default tenant).
    targets: Vec<String>,
    /// Tenant.
    #[arg(long)]
    tenant: Option<String>,
}

/// Run a lifecycle command.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Setup { network } => setup(network).await,
        Command::Image(c) => image(c).await,
        Command::Components { output } => components(output),
        Command::Plan(args) => plan(args).await,
        Command::Install { args, dry_run } => install_cmd(args, dry_run).await,
        Command::Uninstall { roles, tenant, purge, yes, lock_wait } => {
            uninstall(roles, tenant, purge, yes, Duration::from_secs(lock_wait)).await
        }
        Command::Status { targets, tenant, output } => status(targets, tenant, output).await,
        Command::Start(t) => state(t, StateAction::Start).await,
        Command::Stop(t) => state(t, StateAction::Stop).await,
        Command::Restart(t) => state(t, StateAction::Restart).await,
        Command::Exec { container, command } => exec(container, command).await,
        Command::Logs { container, follow, lines } => logs(container, follow, lines).await,
        Command::Limits { container, cpu, memory } => limits(container, cpu, memory).await,
    }
}

fn parse_tenant(value: &str) -> anyhow::Result<TenantName> {
    Ok(TenantName::new(value)?)
}

fn parse_roles(values: &[String]) -> anyhow::Result<Vec<Role>> {
    values.iter().map(|v| v.parse::<Role>().map_err(anyhow::Error::from)).collect()
}

fn load_tenant_file(file: Option<&PathBuf>, tenant: Option<&str>) -> anyhow::Result<TenantFile> {
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
    };
    request.ports = parse_ports(&args.ports)?;
    request.lock_wait = Duration::from_secs(args.lock_wait);
    Ok(request)
}

fn engine_error(e: InstallError) -> anyhow::Error {
    anyhow::Error::new(e)
}

async fn setup(network: bool) -> anyhow::Result<Outcome> {
    let lxd = lxd()?;
    let report = install::setup::setup(&lxd, &install::setup::SetupOptions { pool: "default".into(), network })
        .await
        .map_err(engine_error)?;
    println!("LXD at {}", report.endpoint);
    for line in report.lines {
        println!("  {line}");
    }
    Ok(Outcome::Ok)
}

async fn image(command: ImageCommand) -> anyhow::Result<Outcome> {
    match command {
        ImageCommand::Build { components, alias, force } => {
            let roles = parse_roles(&components)?;
            let lxd = lxd()?;
            let spec = install::setup::image_spec(&roles, &alias, force);
            std::fs::create_dir_all(&spec.work_dir).with_context(|| format!("creating {}", spec.work_dir.display()))?;
            let lines = Lines::new(Style::for_output(Format::Table));
            let events = |event: &gbo_ops::image::ImageEvent| lines.show(event);
            let built = gbo_ops::image::build_image(&lxd, &spec, &events).await;
            lines.close();
            let built = built?;
            println!(
                "image {} -> {} ({}; roles {})",
                built.alias,
                &built.fingerprint[..built.fingerprint.len().min(12)],
                if built.reused { "reused" } else { "built" },
                spec.roles.join(",")
            );
            Ok(Outcome::Ok)
        }
        ImageCommand::List { output } => {
            let lxd = lxd()?;
            let images: Vec<_> =
                lxd.images().await?.into_iter().filter(|i| i.properties.contains_key("gbo.roles")).collect();
            if output == Format::Json {
                let rows: Vec<serde_json::Value> = images
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "fingerprint": i.fingerprint,
                            "aliases": i.aliases.iter().map(|a| a.name.clone()).collect::<Vec<_>>(),
                            "roles": i.properties.get("gbo.roles").map(|r| r.split(',').map(str::to_string).collect::<Vec<_>>()).unwrap_or_default(),
                            "size": i.size,
                            "uploaded_at": i.uploaded_at,
                        })
                    })
                    .collect();
                print_json(&rows)?;
            } else {
                let rows: Vec<Vec<String>> = images
                    .iter()
                    .map(|i| {
                        vec![
                            i.aliases.iter().map(|a| a.name.clone()).collect::<Vec<_>>().join(","),
                            i.fingerprint.chars().take(12).collect(),
                            i.properties.get("gbo.roles").cloned().unwrap_or_default(),
                            format!("{} MiB", i.size / (1024 * 1024)),
                        ]
                    })
                    .collect();
                print_table(&["ALIAS", "FINGERPRINT", "ROLES", "SIZE"], &rows);
            }
            Ok(Outcome::Ok)
        }
    }
}

fn components(output: Format) -> anyhow::Result<Outcome> {
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for role in Role::ALL {
        let ports: Vec<String> = gbo_components::ports(role)
            .iter()
            .map(|p| format!("{}/{}", p.container_port, p.protocol.as_str()))
            .collect();
        let packages = gbo_components::users::role_packages(role);
        let artifacts = gbo_components::artifacts::pinned_artifacts(role);
        let software = if artifacts.is_empty() {
            format!("debian: {}", packages.join(" "))
        } else {
            artifacts.iter().map(|a| format!("{} {}", a.name, a.version)).collect::<Vec<_>>().join(", ")
        };
        let deps: Vec<&str> = role.dependencies().iter().map(|r| r.as_str()).collect();
        json.push(serde_json::json!({
            "role": role.as_str(),
            "container": format!("{{tenant}}-{}", role.container_suffix()),
            "software": software,
            "ports": ports,
            "dependencies": deps,
            "debian_packages": packages,
        }));
        rows.push(vec![
            role.as_str().to_string(),
            format!("{{tenant}}-{}", role.container_suffix()),
            software,
            if ports.is_empty() { "-".into() } else { ports.join(",") },
            if deps.is_empty() { "-".into() } else { deps.join(",") },
        ]);
    }
    if output == Format::Json {
        print_json(&json)?;
    } else {
        print_table(&["ROLE", "CONTAINER", "SOFTWARE", "PORTS", "AFTER"], &rows);
    }
    Ok(Outcome::Ok)
}

fn print_plan(planned: &install::PlannedInstall) {
    println!("tenant {} (stack dir {})", planned.tenant, planned.stack_dir.display());
    for note in &planned.notes {
        println!("note: {note}");
    }
    for (role, why) in &planned.skipped {
        println!("skipped {role}: {why}");
    }
    for component in &planned.components {
        if component.steps.is_empty() {
            println!("  {}: up to date", component.instance);
            continue;
        }
        println!("  {}: {} step(s)", component.instance, component.steps.len());
        for step in &component.steps {
            println!("      {:<60} # {}", step.describe(), step.reason);
        }
    }
    if planned.is_empty() {
        println!("Nothing to do: every component is converged.");
    } else {
        println!(
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

async fn plan(args: InstallArgs) -> anyhow::Result<Outcome> {
    let request = request(&args)?;
    let lxd = lxd()?;
    let planned = install::plan(&lxd, &request, false).await.map_err(engine_error)?;
    if args.output == Format::Json {
        print_json(&plan_json(&planned))?;
    } else {
        print_plan(&planned);
    }
    Ok(Outcome::Ok)
}

async fn install_cmd(args: InstallArgs, dry_run: bool) -> anyhow::Result<Outcome> {
    let request = request(&args)?;
    let lxd = lxd()?;
    if dry_run {
        let planned = install::plan(&lxd, &request, false).await.map_err(engine_error)?;
        if args.output == Format::Json {
            print_json(&plan_json(&planned))?;
        } else {
            print_plan(&planned);
            println!("--dry-run: nothing was changed.");
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
            println!("skipped {role}: {why}");
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
        println!(
            "tenant {} installed in {:.1} s (stack dir {})",
            report.tenant,
            started.elapsed().as_secs_f64(),
            report.stack_dir.display()
        );
    }
    Ok(Outcome::Ok)
}

/// A role or a container name of `tenant`.
fn resolve_target(value: &str, tenant: Option<&TenantName>) -> anyhow::Result<(TenantName, Role)> {
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

async fn uninstall(
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
    if purge && !yes {
        if !std::io::stdin().is_terminal() {
            bail!("--purge deletes host data: pass --yes to confirm when there is no terminal");
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
                (Some(p), _) => println!("{}: {what}; host data {} removed", u.instance, p.display()),
                (_, Some(k)) => println!("{}: {what}; host data kept in {}", u.instance, k.display()),
                _ => println!("{}: {what}", u.instance),
            }
        }
    }
    Ok(Outcome::Ok)
}

async fn status(targets: Vec<String>, tenant: Option<String>, output: Format) -> anyhow::Result<Outcome> {
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
    let report = install::status::tenant_status(&lxd, &tenant, &roles).await.map_err(engine_error)?;
    if output == Format::Json {
        print_json(&report)?;
    } else {
        if report.components.is_empty() {
            println!("tenant {tenant}: no containers");
        }
        let rows: Vec<Vec<String>> = report
            .components
            .iter()
            .map(|c| {
                vec![
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
                        .collect::<Vec<_>>()
                        .join(" "),
                    match &c.health {
                        Some(h) if h.healthy => format!("healthy ({})", h.detail),
                        Some(h) => format!("UNHEALTHY ({})", h.detail),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        print_table(&["CONTAINER", "STATE", "IMAGE", "PORTS", "MOUNTS", "HEALTH"], &rows);
    }
    Ok(if report.all_healthy() { Outcome::Ok } else { Outcome::Problems })
}

fn instance(tenant: &TenantName, role: Role) -> anyhow::Result<InstanceName> {
    Ok(InstanceName::new(gbo_components::instance_name(tenant, role))?)
}

async fn state(args: TargetArgs, action: StateAction) -> anyhow::Result<Outcome> {
    let tenant = args.tenant.as_deref().map(parse_tenant).transpose()?;
    let lxd = lxd()?;
    let names: Vec<InstanceName> = if args.targets.is_empty() {
        let Some(tenant) = &tenant else { bail!("name a container, or --tenant T [ROLE...]") };
        gbo_ops::inventory::tenant_instances(&lxd, tenant).await?.into_iter().map(|m| m.name).collect()
    } else {
        args.targets
            .iter()
            .map(|t| resolve_target(t, tenant.as_ref()).and_then(|(tn, r)| instance(&tn, r)))
            .collect::<anyhow::Result<_>>()?
    };
    let tenants: Vec<TenantName> =
        names.iter().filter_map(|n| TenantName::new(&gbo_ops::inventory::split_name(n.as_str()).0).ok()).collect();
    let _locks = crate::output::lock_tenants(&lxd, &tenants).await?;
    let results = futures_util_join(names.iter().map(|n| install::apply::set_state(&lxd, n, action))).await;
    for (name, result) in names.iter().zip(results) {
        let changed = result.map_err(engine_error)?;
        println!(
            "{name}: {}",
            if changed {
                format!("{action:?}ed").to_lowercase().replace("stoped", "stopped")
            } else {
                "already so".to_string()
            }
        );
    }
    Ok(Outcome::Ok)
}

async fn futures_util_join<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let handles: Vec<_> = futures.collect();
    for f in handles {
        out.push(f.await);
    }
    out
}

async fn exec(container: String, command: Vec<String>) -> anyhow::Result<Outcome> {
    let name = InstanceName::new(container)?;
    let lxd = lxd()?;
    let request = ExecRequest::new(command).timeout(Duration::from_secs(24 * 3600));
    let code = if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        let _raw = RawTerminal::enter();
        let (width, height) = terminal_size();
        let session = lxd.exec(&name, &request.terminal(width, height)).await?;
        session.relay(Some(tokio::io::stdin()), tokio::io::stdout(), tokio::io::sink()).await?
    } else {
        let session = lxd.exec(&name, &request.stdin_piped()).await?;
        session.relay(Some(tokio::io::stdin()), tokio::io::stdout(), tokio::io::stderr()).await?
    };
    if code != 0 {
        std::process::exit(code.clamp(1, 255));
    }
    Ok(Outcome::Ok)
}

fn terminal_size() -> (u16, u16) {
    let out = std::process::Command::new("stty").arg("size").stdin(std::process::Stdio::inherit()).output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        let mut parts = text.split_whitespace();
        if let (Some(rows), Some(cols)) =
            (parts.next().and_then(|r| r.parse().ok()), parts.next().and_then(|c| c.parse().ok()))
        {
            return (cols, rows);
        }
    }
    (80, 24)
}

/// Puts the terminal in raw mode for an interactive exec and restores it on drop.
struct RawTerminal;

impl RawTerminal {
    fn enter() -> Self {
        let _ =
            std::process::Command::new("stty").args(["raw", "-echo"]).stdin(std::process::Stdio::inherit()).status();
        RawTerminal
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = std::process::Command::new("stty").arg("sane").stdin(std::process::Stdio::inherit()).status();
    }
}

async fn logs(container: String, follow: bool, lines: u32) -> anyhow::Result<Outcome> {
    let (_, role) = gbo_components::try_parse_instance_name(&container)?;
    let name = InstanceName::new(container)?;
    let lxd = lxd()?;
    let mut command = vec![
        "journalctl".to_string(),
        "--no-pager".into(),
        "-u".into(),
        role.unit_name(),
        "-n".into(),
        lines.to_string(),
    ];
    if follow {
        command.push("-f".into());
    }
    let request = ExecRequest::new(command).timeout(Duration::from_secs(if follow { 7 * 24 * 3600 } else { 120 }));
    let session = lxd.exec(&name, &request).await?;
    let code = session.relay(None::<tokio::io::Empty>, tokio::io::stdout(), tokio::io::stderr()).await?;
    if code != 0 {
        bail!("journalctl exited with {code}");
    }
    Ok(Outcome::Ok)
}

async fn limits(container: String, cpu: Option<u32>, memory: Option<String>) -> anyhow::Result<Outcome> {
    if cpu.is_none() && memory.is_none() {
        bail!("give --cpu N and/or --memory SIZE");
    }
    if let Some(c) = cpu {
        if c == 0 || c > 1024 {
            bail!("--cpu {c}: expected 1 to 1024");
        }
    }
    if let Some(m) = &memory {
        gbo_components::tenant_file::validate_memory("--memory", m)?;
    }
    let name = InstanceName::new(container)?;
    let lxd = lxd()?;
    let tenants: Vec<TenantName> =
        TenantName::new(&gbo_ops::inventory::split_name(name.as_str()).0).ok().into_iter().collect();
    let _locks = crate::output::lock_tenants(&lxd, &tenants).await?;
    let changed = lxd
        .update_instance(&name, |put| {
            if let Some(c) = cpu {
                put.config.insert("limits.cpu".into(), c.to_string());
            }
            if let Some(m) = &memory {
                put.config.insert("limits.memory".into(), m.clone());
            }
        })
        .await?;
    println!("{name}: {}", if changed { "limits set" } else { "limits already so" });
    eprintln!("note: keep them in gbo.toml under [limits.<role>] or the next install names them as drift");
    Ok(Outcome::Ok)
}

#[cfg(test)]
#[path = "lifecycle_properties.rs"]
mod properties;
