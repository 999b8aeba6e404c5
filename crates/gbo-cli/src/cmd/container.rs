//! Operating one tenant's containers: start, stop, restart, exec (interactive on a terminal), the role's journal,
//! LXD limits.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::bail;
use gbo_components::{Role, TenantName};
use gbo_ops::install;
use lxd_client::{ExecRequest, InstanceName, StateAction};

use super::install::{engine_error, parse_tenant, resolve_target};
use crate::output::outln;
use crate::output::{lxd, Outcome};

/// A container name, or --tenant T [ROLE...].
#[derive(clap::Args, Debug)]
pub struct TargetArgs {
    /// Container names or roles (roles need --tenant, or mean the default tenant).
    targets: Vec<String>,
    /// Tenant.
    #[arg(long)]
    tenant: Option<String>,
}

fn instance(tenant: &TenantName, role: Role) -> anyhow::Result<InstanceName> {
    Ok(InstanceName::new(gbo_components::instance_name(tenant, role))?)
}

pub(super) async fn state(args: TargetArgs, action: StateAction) -> anyhow::Result<Outcome> {
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
        outln!(
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

pub(super) async fn exec(container: String, command: Vec<String>) -> anyhow::Result<Outcome> {
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

pub(super) async fn logs(container: String, follow: bool, lines: u32, file: Option<String>) -> anyhow::Result<Outcome> {
    let (_, role) = gbo_components::try_parse_instance_name(&container)?;
    let path = file.as_deref().map(install::status::log_file_path).transpose().map_err(engine_error)?;
    let name = InstanceName::new(container)?;
    let lxd = lxd()?;
    let request = match &path {
        Some(path) => {
            let files = install::status::log_files(&lxd, &name).await.map_err(engine_error)?;
            let base = path.rsplit('/').next().unwrap_or(path);
            if !files.iter().any(|f| f == base) {
                bail!(
                    "{name} has no log file {path} (it has: {})",
                    if files.is_empty() { "none".to_string() } else { files.join(", ") }
                );
            }
            install::status::log_file_request(path, lines, follow)
        }
        None => install::status::journal_request(role, lines, follow),
    };
    let session = lxd.exec(&name, &request).await?;
    let code = session.relay(None::<tokio::io::Empty>, tokio::io::stdout(), tokio::io::stderr()).await?;
    if code != 0 {
        bail!("{} exited with {code}", if path.is_some() { "tail" } else { "journalctl" });
    }
    Ok(Outcome::Ok)
}

pub(super) async fn console_log(container: String) -> anyhow::Result<Outcome> {
    let name = InstanceName::new(container.as_str())?;
    let lxd = lxd()?;
    if lxd.instance_opt(&name).await?.is_none() {
        bail!("container {container:?} does not exist (see `lxc list`)");
    }
    let log = lxd.console_log(&name).await?;
    match std::io::Write::write_all(&mut std::io::stdout(), &log) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(Outcome::Ok),
    }
}

pub(super) async fn limits(container: String, cpu: Option<u32>, memory: Option<String>) -> anyhow::Result<Outcome> {
    install::limits::validate(cpu, memory.as_deref()).map_err(engine_error)?;
    let name = InstanceName::new(container)?;
    let lxd = lxd()?;
    let tenants: Vec<TenantName> =
        TenantName::new(&gbo_ops::inventory::split_name(name.as_str()).0).ok().into_iter().collect();
    let _locks = crate::output::lock_tenants(&lxd, &tenants).await?;
    let changed = install::limits::set(&lxd, &name, cpu, memory.as_deref()).await.map_err(engine_error)?;
    outln!("{name}: {}", if changed { "limits set" } else { "limits already so" });
    eprintln!("note: keep them in gbo.toml under [limits.<role>] or the next install names them as drift");
    Ok(Outcome::Ok)
}
