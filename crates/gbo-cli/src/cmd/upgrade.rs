//! `gbo upgrade`: rebuild a tenant's containers on a newer image, with a snapshot first and an automatic rollback.

use std::path::PathBuf;
use std::time::Duration;

use gbo_ops::install::{self, InstallRequest};
use gbo_ops::upgrade::{self, RoleAction, UpgradeError, UpgradeRequest};

use crate::output::outln;
use crate::output::progress::{Lines, Style};
use crate::output::{lxd, print_json, print_table, Format, Outcome};

/// `gbo upgrade` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Roles to upgrade, in any order (done in dependency order; default: every installed role).
    roles: Vec<String>,
    /// Tenant (default: the tenant file's, else `default`).
    #[arg(long)]
    tenant: Option<String>,
    /// The tenant file the tenant was installed with (default: ./gbo.toml when it exists).
    #[arg(long)]
    file: Option<PathBuf>,
    /// The local image alias to rebuild on (default: --default-image).
    #[arg(long, value_name = "ALIAS")]
    image: Option<String>,
    /// The local image used when --image is not given.
    #[arg(long, env = "GBO_DEFAULT_IMAGE", default_value = install::DEFAULT_IMAGE, value_name = "ALIAS")]
    default_image: String,
    /// Set an artifact role's version for this upgrade: ROLE=VERSION (e.g. vault=1.15.5), repeatable. The URL is the
    /// tenant file's [versions.ROLE] url, else the pinned one, with the version replaced; the vendor's checksum file
    /// and signature are checked before anything changes. Record it under [versions.ROLE] in the tenant file, or
    /// the next `gbo install` puts the tenant file's version back.
    #[arg(long = "version", value_name = "ROLE=VERSION")]
    versions: Vec<String>,
    /// Allow downloading artifacts from their upstream URLs (gbo never reaches the internet otherwise).
    #[arg(long)]
    download: bool,
    /// Accept artifacts gbo has no means to verify (see `gbo install --allow-unverified`).
    #[arg(long)]
    allow_unverified: bool,
    /// Artifact cache directory.
    #[arg(long, default_value = install::artifact::DEFAULT_CACHE_DIR)]
    artifact_cache: PathBuf,
    /// Seconds a rebuilt container may take to become healthy before it is rolled back.
    #[arg(long, default_value_t = 90)]
    health_timeout: u64,
    /// Seconds to wait for another run holding the tenant's lock.
    #[arg(long, default_value_t = 60)]
    lock_wait: u64,
    /// Print the plan and stop without changing anything.
    #[arg(long)]
    dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

fn print_plan(plan: &upgrade::UpgradePlan) {
    outln!(
        "tenant {}: image {} ({})",
        plan.tenant,
        plan.image,
        plan.fingerprint.get(..12).unwrap_or(&plan.fingerprint)
    );
    for role in &plan.roles {
        if let Some(what) = &role.interrupted {
            outln!("  {}: an interrupted upgrade is finished or undone first: {what}", role.instance);
        }
        match &role.action {
            RoleAction::UpToDate => outln!("  {}: up to date", role.instance),
            RoleAction::Rebuild { from, artifacts } if from == &plan.fingerprint => outln!(
                "  {}: {} (rebuilt on the same image: snapshot with data, new container, health check, rollback on \
                 failure)",
                role.instance,
                artifacts.join(", ")
            ),
            RoleAction::Rebuild { from, artifacts } => outln!(
                "  {}: rebuild from {}{} (snapshot with data, new container, health check, rollback on failure)",
                role.instance,
                from.get(..12).unwrap_or(from),
                if artifacts.is_empty() { String::new() } else { format!(", {}", artifacts.join(", ")) }
            ),
        }
    }
    if plan.is_empty() {
        outln!("Nothing to do: every container runs {}.", plan.image);
    }
}

/// Run `gbo upgrade`.
pub(super) async fn run(args: Args) -> anyhow::Result<Outcome> {
    let tenant_file = super::install::load_tenant_file(args.file.as_ref(), args.tenant.as_deref())?;
    let roles = super::install::parse_roles(&args.roles)?;
    let mut install = InstallRequest::new(tenant_file, Vec::new());
    install.image = args.image.clone();
    install.default_image = args.default_image.clone();
    install.health_timeout = Duration::from_secs(args.health_timeout);
    install.lock_wait = Duration::from_secs(args.lock_wait);
    install.artifacts = install::ArtifactPolicy {
        cache_dir: args.artifact_cache.clone(),
        download: args.download,
        allow_unverified: args.allow_unverified,
        trust: install.tenant_file.trust.clone(),
    };
    let mut request = UpgradeRequest { install, roles, version_roles: Vec::new() };
    upgrade::with_versions(&mut request, &args.versions).map_err(anyhow::Error::new)?;
    let lxd = lxd()?;
    if args.dry_run {
        let plan = upgrade::plan(&lxd, &request).await.map_err(anyhow::Error::new)?;
        if args.output == Format::Json {
            print_json(&plan)?;
        } else {
            print_plan(&plan);
            outln!("--dry-run: nothing was changed.");
        }
        return Ok(Outcome::Ok);
    }
    let lines = Lines::new(Style::for_output(args.output));
    let events = |event: &upgrade::UpgradeEvent| lines.show(event);
    let result = upgrade::upgrade(&lxd, &request, &events).await;
    lines.close();
    let report = result.map_err(|e: UpgradeError| anyhow::Error::new(e))?;
    if args.output == Format::Json {
        print_json(&report)?;
    } else {
        let rows: Vec<Vec<String>> = report
            .roles
            .iter()
            .map(|r| {
                vec![
                    r.instance.clone(),
                    if r.rebuilt { "rebuilt".into() } else { "up to date".into() },
                    r.downtime_secs.map(|d| format!("{d:.1} s")).unwrap_or_else(|| "-".into()),
                    r.health.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        print_table(&["CONTAINER", "RESULT", "DOWNTIME", "HEALTH"], &rows);
        outln!("tenant {} runs {}", report.tenant, report.image);
        for role in &request.version_roles {
            if let Some(pin) = request.install.tenant_file.versions.get(role) {
                outln!(
                    "note: {role} runs version {} by --version: record it under [versions.{role}] in the tenant file \
                     (version = \"{}\"), or the next `gbo install` puts the tenant file's version back",
                    pin.version,
                    pin.version
                );
            }
        }
    }
    Ok(Outcome::Ok)
}
