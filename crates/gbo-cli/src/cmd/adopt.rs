//! `gbo adopt`: containers built by hand from the seed become gbo-managed in place.

use std::path::PathBuf;

use gbo_ops::adopt::{self, AdoptRequest};
use gbo_ops::install::{self, InstallRequest};

use crate::output::outln;
use crate::output::{lxd, print_json, Format, Outcome};

/// `gbo adopt` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Roles to adopt (default: every `{tenant}-{role}` container of the tenant).
    roles: Vec<String>,
    /// Tenant (default: the tenant file's, else `default`).
    #[arg(long)]
    tenant: Option<String>,
    /// The tenant file the next install will use (default: ./gbo.toml when it exists).
    #[arg(long)]
    file: Option<PathBuf>,
    /// The stack dir, for containers whose mounts do not tell it (default: read from the mounts).
    #[arg(long)]
    stack_dir: Option<PathBuf>,
    /// The image the next install would create missing containers from (for the plan shown).
    #[arg(long, value_name = "[REMOTE:]ALIAS")]
    image: Option<String>,
    /// The local image used when --image is not given.
    #[arg(long, env = "GBO_DEFAULT_IMAGE", default_value = install::DEFAULT_IMAGE, value_name = "ALIAS")]
    default_image: String,
    /// Show the mapping and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// Run `gbo adopt`. Exit 1 when a container could not be adopted (named with the reason).
pub(super) async fn run(args: Args) -> anyhow::Result<Outcome> {
    let tenant_file = super::install::load_tenant_file(args.file.as_ref(), args.tenant.as_deref())?;
    let roles = super::install::parse_roles(&args.roles)?;
    let mut install = InstallRequest::new(tenant_file, Vec::new());
    install.image = args.image.clone();
    install.default_image = args.default_image.clone();
    install.stack_dir = args.stack_dir.clone();
    let request = AdoptRequest { install, roles, dry_run: args.dry_run };
    let lxd = lxd()?;
    let tenant = request.install.tenant_file.tenant.clone();
    let report = {
        let _locks = crate::output::lock_tenants(&lxd, std::slice::from_ref(&tenant)).await?;
        adopt::adopt(&lxd, &request).await.map_err(anyhow::Error::new)?
    };
    if args.output == Format::Json {
        print_json(&report)?;
    } else {
        let verb = if report.applied { "adopted" } else { "would adopt" };
        for a in &report.adopted {
            outln!("{verb} {} as {} (stack dir {})", a.instance, a.role, a.stack_dir.display());
            for (from, to) in &a.renamed {
                outln!("    device {from} -> {to}");
            }
            if !a.ports.is_empty() {
                outln!("    ports recorded: {}", a.ports.join(", "));
            }
            for l in &a.left {
                outln!("    left as it is: {l}");
            }
        }
        for name in &report.already {
            outln!("{name}: already managed by gbo");
        }
        for r in &report.refused {
            outln!("cannot adopt {}: {}", r.instance, r.reason);
        }
        for note in &report.notes {
            outln!("note: {note}");
        }
        if let Some(plan) = &report.next_install {
            outln!("The next `gbo install --tenant {}` would change:", report.tenant);
            for c in plan {
                if c.steps.is_empty() {
                    outln!("  {}: nothing", c.instance);
                }
                for s in &c.steps {
                    outln!("  {}: {:<56} # {}", c.instance, s.describe(), s.reason);
                }
            }
        }
        if !report.applied {
            outln!("--dry-run: nothing was changed.");
        }
    }
    Ok(if report.refused.is_empty() { Outcome::Ok } else { Outcome::Problems })
}
