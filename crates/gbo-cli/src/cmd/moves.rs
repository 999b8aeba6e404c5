//! `gbo move` (one container to another cluster member) and `gbo evacuate` (every gbo container off a member).

use anyhow::Context;
use gbo_components::Role;
use gbo_ops::moves::{self, MoveEvent};

use super::install::parse_tenant;
use crate::output::outln;
use crate::output::progress::{Lines, Style};
use crate::output::{lxd, print_json, print_table, Format, Outcome};

/// `gbo move` arguments.
#[derive(clap::Args, Debug)]
pub struct MoveArgs {
    /// The role whose container moves.
    role: String,
    /// Tenant (default: `default`).
    #[arg(long)]
    tenant: Option<String>,
    /// The cluster member it moves to (must be online).
    #[arg(long, value_name = "MEMBER")]
    to: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

/// `gbo evacuate` arguments.
#[derive(clap::Args, Debug)]
pub struct EvacuateArgs {
    /// The member to empty.
    member: String,
    /// Print the plan and stop without changing anything.
    #[arg(long)]
    dry_run: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    output: Format,
}

fn print_moved(moved: &[moves::Moved], output: Format) -> anyhow::Result<()> {
    if output == Format::Json {
        return print_json(&moved);
    }
    let rows: Vec<Vec<String>> = moved
        .iter()
        .map(|m| {
            vec![
                m.container.clone(),
                m.from.clone(),
                m.to.clone(),
                m.snapshot.clone().unwrap_or_else(|| "-".into()),
                match &m.health {
                    Some(h) if h.healthy => format!("healthy ({})", h.detail),
                    Some(h) => format!("UNHEALTHY ({})", h.detail),
                    None => "-".into(),
                },
                format!("{:.1} s", m.seconds),
            ]
        })
        .collect();
    print_table(&["CONTAINER", "FROM", "TO", "SNAPSHOT", "HEALTH", "TIME"], &rows);
    for m in moved {
        if !m.volumes.is_empty() {
            outln!(
                "{}: volumes moved with it: {} ({})",
                m.container,
                m.volumes.join(", "),
                gbo_ops::events::human_bytes(m.copied_bytes)
            );
        }
        for note in &m.notes {
            outln!("{}: note: {note}", m.container);
        }
    }
    Ok(())
}

/// `gbo move --tenant T ROLE --to MEMBER`.
pub(super) async fn run_move(args: MoveArgs) -> anyhow::Result<Outcome> {
    let tenant = args.tenant.as_deref().map(parse_tenant).transpose()?.unwrap_or_default();
    let role: Role = args.role.parse()?;
    let lxd = lxd()?;
    let container = moves::tenant_container(&lxd, &tenant, role).await?;
    let _locks = crate::output::lock_tenants(&lxd, [&tenant]).await?;
    let lines = Lines::new(Style::for_output(args.output));
    let events = |event: &MoveEvent| lines.show(event);
    let result = moves::move_container(&lxd, &container, &args.to, &events).await;
    lines.close();
    let moved = result.with_context(|| format!("gbo move {} --to {}", container.name, args.to))?;
    print_moved(&[moved], args.output)?;
    Ok(Outcome::Ok)
}

/// `gbo evacuate MEMBER`.
pub(super) async fn run_evacuate(args: EvacuateArgs) -> anyhow::Result<Outcome> {
    let lxd = lxd()?;
    let plan = moves::plan_evacuation(&lxd, &args.member).await?;
    if args.output == Format::Json && args.dry_run {
        print_json(&plan)?;
        return Ok(Outcome::Ok);
    }
    if args.output != Format::Json {
        if plan.is_empty() {
            outln!("{}: no gbo container to move", args.member);
        } else {
            outln!("Plan: {} move(s) off {}, dependencies first:", plan.len(), args.member);
            for m in &plan {
                outln!("  {} -> {}", m.container, m.to);
            }
        }
    }
    if args.dry_run {
        outln!("--dry-run: nothing was changed.");
        return Ok(Outcome::Ok);
    }
    let instances: Vec<_> = lxd.instances().await?.iter().filter_map(gbo_ops::inventory::describe).collect();
    let lines = Lines::new(Style::for_output(args.output));
    let events = |event: &MoveEvent| lines.show(event);
    let mut done = Vec::new();
    let mut failure = None;
    for planned in &plan {
        let Some(container) = instances.iter().find(|m| m.name.as_str() == planned.container) else { continue };
        let _locks = crate::output::lock_tenants(&lxd, [&container.tenant]).await?;
        match moves::move_container(&lxd, container, &planned.to, &events).await {
            Ok(moved) => done.push(moved),
            Err(e) => {
                failure = Some(anyhow::Error::new(e).context(format!("evacuating {}", args.member)));
                break;
            }
        }
    }
    lines.close();
    print_moved(&done, args.output)?;
    match failure {
        Some(e) => Err(e.context(format!("{} of {} move(s) done", done.len(), plan.len()))),
        None => Ok(Outcome::Ok),
    }
}
