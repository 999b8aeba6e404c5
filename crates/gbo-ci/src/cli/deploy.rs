//! `deploy`, `rollback`, `verify`: arguments, progress rendering and results.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use gbo_ci::deploy::{DeployEvent, DeployObserver, DeployOptions, RollbackOptions, StartOptions};
use gbo_ci::names::{HealthUrl, RemotePath, UnixUser};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{print_json, ConnectArgs, Output, FINDINGS};

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The local binary to deploy.
    #[arg(long, value_name = "PATH")]
    binary: PathBuf,
    /// Path of the binary on the remote host.
    #[arg(long, value_name = "PATH")]
    dest: RemotePath,
    /// User that owns the binary and runs the process.
    #[arg(long, value_name = "USER")]
    owner: UnixUser,
    /// Health URL as seen from the remote host (probed through the SSH connection), e.g. http://localhost:5858/api/health.
    #[arg(long, value_name = "URL")]
    health: HealthUrl,
    /// Previous releases to keep beside the target (<dest>.prev.<N>).
    #[arg(long, default_value_t = 5)]
    keep: usize,
    #[command(flatten)]
    start: StartArgs,
    /// Seconds to wait for the health URL to answer 2xx before rolling back.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    health_timeout: u64,
    /// Seconds a stopped process may take to exit before SIGKILL.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    stop_timeout: u64,
    /// Seconds the restart (stop and start, or systemctl restart) may take before it counts as failed and is rolled
    /// back; longer than --stop-timeout. Default: --stop-timeout plus 60.
    #[arg(long, value_name = "SECS")]
    restart_timeout: Option<u64>,
    /// Seconds to wait while another deploy or rollback of the same target runs (they take turns through a root-only
    /// lock, /run/lock/gbo-ci/<hash of the path>.lock). 0 fails at once.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    lock_wait: u64,
    /// Check everything and print what the deploy would do (release kept, unit or processes restarted, how the
    /// binary would be started, releases pruned) without changing anything on the remote.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Argument for the started binary (repeatable, e.g. --arg=--noconsole). Default: the running process's.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Working directory of the started binary. Default: the running process's, else the binary's directory.
    #[arg(long, value_name = "DIR")]
    cwd: Option<RemotePath>,
    /// File that the started binary's output is appended to. Default: the running process's, else
    /// <dest>/../../logs/<name>.log (the seed's /opt/gbo/logs/).
    #[arg(long, value_name = "PATH")]
    log: Option<RemotePath>,
    /// Restart through this systemd unit instead of detecting which unit owns the process.
    #[arg(long, value_name = "UNIT")]
    unit: Option<String>,
}

impl StartArgs {
    fn options(&self) -> StartOptions {
        StartOptions {
            args: (!self.args.is_empty()).then(|| self.args.clone()),
            cwd: self.cwd.clone(),
            log: self.log.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Path of the binary on the remote host.
    #[arg(long, value_name = "PATH")]
    dest: RemotePath,
    /// User that runs the process. Default: the owner of the restored release.
    #[arg(long, value_name = "USER")]
    owner: Option<UnixUser>,
    /// Health URL to check after the restart (as seen from the remote host).
    #[arg(long, value_name = "URL")]
    health: Option<HealthUrl>,
    #[command(flatten)]
    start: StartArgs,
    /// Seconds to wait for the health URL.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    health_timeout: u64,
    /// Seconds a stopped process may take to exit before SIGKILL.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    stop_timeout: u64,
    /// Seconds the restart (stop and start, or systemctl restart) may take before it counts as failed and is rolled
    /// back; longer than --stop-timeout. Default: --stop-timeout plus 60.
    #[arg(long, value_name = "SECS")]
    restart_timeout: Option<u64>,
    /// Seconds to wait while another deploy or rollback of the same target runs (they take turns through a root-only
    /// lock, /run/lock/gbo-ci/<hash of the path>.lock). 0 fails at once.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    lock_wait: u64,
    /// Check everything and print what the rollback would do (release restored, unit or processes restarted)
    /// without changing anything on the remote.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The local artifact the deployed binary should be.
    #[arg(long, value_name = "PATH")]
    binary: PathBuf,
    /// Path of the binary on the remote host.
    #[arg(long, value_name = "PATH")]
    dest: RemotePath,
}

/// Renders deploy events on stderr: an upload bar and one line per step.
struct Progress {
    bar: Option<ProgressBar>,
    started: std::time::Instant,
}

impl Progress {
    fn new() -> Self {
        Self { bar: None, started: std::time::Instant::now() }
    }
}

impl DeployObserver for Progress {
    fn on_event(&mut self, event: &DeployEvent) {
        if !matches!(event, DeployEvent::UploadProgress { .. }) {
            eprint!("[{:6.2}s] ", self.started.elapsed().as_secs_f64());
        }
        match event {
            DeployEvent::Connected { target, recorded_host_key } => {
                eprintln!("connected to {target}");
                if let Some(path) = recorded_host_key {
                    eprintln!("first contact: recorded the host key in {}", path.display());
                }
            }
            DeployEvent::WaitingForLock { lock, holder } => {
                eprintln!("another deploy of this target is running ({holder}); waiting for {lock}")
            }
            DeployEvent::Locked { lock } => eprintln!("locked {lock}"),
            DeployEvent::UploadStarted { temp_path, total } => {
                eprintln!("uploading to {temp_path}");
                let bar = ProgressBar::with_draw_target(Some(*total), ProgressDrawTarget::stderr());
                if let Ok(style) =
                    ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                {
                    bar.set_style(style);
                }
                self.bar = Some(bar);
            }
            DeployEvent::UploadProgress { sent, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(*sent);
                }
            }
            DeployEvent::Uploaded { .. } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                eprintln!("uploaded and synced; checking SHA-256 on the remote");
            }
            DeployEvent::ChecksumVerified { sha256 } => eprintln!("checksum ok ({sha256})"),
            DeployEvent::Swapped { previous_release: Some(release) } => {
                eprintln!("swapped in atomically; previous binary kept as {release}")
            }
            DeployEvent::Swapped { previous_release: None } => eprintln!("swapped in atomically"),
            DeployEvent::Restarting { method } => eprintln!("restarting ({method})"),
            DeployEvent::WaitingForHealth { url } => eprintln!("waiting for {url}"),
            DeployEvent::Healthy { downtime: Some(downtime) } => {
                eprintln!("healthy after {:.0} ms of downtime", downtime.as_secs_f64() * 1000.0)
            }
            DeployEvent::Healthy { downtime: None } => eprintln!("healthy"),
            DeployEvent::RollingBack { reason } => eprintln!("{reason}; rolling back"),
            _ => {}
        }
    }
}

/// `--restart-timeout`, or its default from `--stop-timeout`.
fn restart_timeout(stop_timeout: u64, restart_timeout: Option<u64>) -> Duration {
    match restart_timeout {
        Some(secs) => Duration::from_secs(secs),
        None => gbo_ci::deploy::default_restart_timeout(Duration::from_secs(stop_timeout)),
    }
}

pub fn deploy(args: DeployArgs, output: Output) -> anyhow::Result<u8> {
    let options = DeployOptions {
        binary: args.binary,
        dest: args.dest,
        owner: args.owner,
        health: args.health,
        keep: args.keep,
        start: args.start.options(),
        unit: args.start.unit.clone(),
        health_timeout: Duration::from_secs(args.health_timeout),
        stop_timeout: Duration::from_secs(args.stop_timeout),
        restart_timeout: restart_timeout(args.stop_timeout, args.restart_timeout),
        lock_wait: Duration::from_secs(args.lock_wait),
    };
    if args.dry_run {
        return print_plan(
            &gbo_ci::deploy::plan_deploy(&args.connect.options(), &options, &mut Progress::new())?,
            &options,
            output,
        );
    }
    let report = gbo_ci::deploy::deploy(&args.connect.options(), &options, &mut Progress::new())?;
    match output {
        Output::Json => print_json(&report)?,
        Output::Text => {
            println!("deployed {} to {}:{}", options.binary.display(), report.host, report.dest);
            println!("sha256        {}", report.sha256);
            println!("size          {} bytes, uploaded in {} ms", report.bytes, report.upload_ms);
            println!("previous      {}", report.previous_release.as_deref().unwrap_or("(none: first deploy)"));
            match &report.unit {
                Some(unit) => println!("restart       systemd unit {unit}"),
                None if report.stopped_pids.is_empty() => println!("restart       started (nothing was running)"),
                None => println!(
                    "restart       stopped pid {} and started the new binary",
                    report.stopped_pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                ),
            }
            match report.downtime_ms {
                Some(ms) => println!("downtime      {ms} ms (old process stopped -> health OK)"),
                None => println!("downtime      none (nothing was running)"),
            }
            if !report.pruned_releases.is_empty() {
                println!("pruned        {}", report.pruned_releases.join(", "));
            }
            if let Some(error) = &report.prune_error {
                println!("not pruned    {error}");
            }
            println!("total         {} ms", report.total_ms);
        }
    }
    Ok(0)
}

fn print_plan(plan: &gbo_ci::deploy::DeployPlan, options: &DeployOptions, output: Output) -> anyhow::Result<u8> {
    match output {
        Output::Json => print_json(plan)?,
        Output::Text => {
            println!("dry run: nothing was changed on {}", plan.host);
            println!(
                "would deploy  {} ({} bytes, sha256 {}) to {}",
                options.binary.display(),
                plan.bytes,
                plan.sha256,
                plan.dest
            );
            if plan.already_deployed {
                println!("note          {} is already this binary; a deploy would only restart it", plan.dest);
            }
            println!("keep          {}", plan.previous_release.as_deref().unwrap_or("(nothing: first deploy)"));
            print_restart(&plan.unit, &plan.stop_pids, plan.start.as_ref(), &plan.dest);
            println!("health        {}", plan.health);
            if !plan.prune_releases.is_empty() {
                println!("would prune   {}", plan.prune_releases.join(", "));
            }
        }
    }
    Ok(0)
}

/// The restart lines of a dry run.
fn print_restart(unit: &Option<String>, stop_pids: &[u32], start: Option<&gbo_ci::deploy::PlannedStart>, dest: &str) {
    match unit {
        Some(unit) => println!("restart       systemctl restart {unit}"),
        None if stop_pids.is_empty() => println!("restart       nothing runs; the binary would be started"),
        None => println!(
            "restart       stop pid {}, then start the binary",
            stop_pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        ),
    }
    if let Some(start) = start {
        println!("start         as {} in {}: {} {}", start.owner, start.cwd, dest, start.args.join(" "));
        println!("log           {}", start.log);
    }
}

pub fn rollback(args: RollbackArgs, output: Output) -> anyhow::Result<u8> {
    let options = RollbackOptions {
        dest: args.dest,
        owner: args.owner,
        health: args.health,
        start: args.start.options(),
        unit: args.start.unit.clone(),
        health_timeout: Duration::from_secs(args.health_timeout),
        stop_timeout: Duration::from_secs(args.stop_timeout),
        restart_timeout: restart_timeout(args.stop_timeout, args.restart_timeout),
        lock_wait: Duration::from_secs(args.lock_wait),
    };
    if args.dry_run {
        let plan = gbo_ci::deploy::plan_rollback(&args.connect.options(), &options, &mut Progress::new())?;
        match output {
            Output::Json => print_json(&plan)?,
            Output::Text => {
                println!("dry run: nothing was changed on {}", plan.host);
                println!("would restore {} over {} (sha256 {})", plan.restore_release, plan.dest, plan.sha256);
                print_restart(&plan.unit, &plan.stop_pids, plan.start.as_ref(), &plan.dest);
                println!(
                    "remaining     {}",
                    if plan.remaining_releases.is_empty() {
                        "(none)".to_string()
                    } else {
                        plan.remaining_releases.join(", ")
                    }
                );
            }
        }
        return Ok(0);
    }
    let report = gbo_ci::deploy::rollback(&args.connect.options(), &options, &mut Progress::new())?;
    match output {
        Output::Json => print_json(&report)?,
        Output::Text => {
            println!("restored {} on {} from {}", report.dest, report.host, report.restored_release);
            println!("sha256        {}", report.sha256);
            println!("restart       {}", report.restart_method);
            match report.healthy {
                Some(true) => println!("health        ok ({} ms downtime)", report.downtime_ms.unwrap_or(0)),
                Some(false) => println!("health        FAILED"),
                None => println!("health        not checked (no --health)"),
            }
            println!(
                "remaining     {}",
                if report.remaining_releases.is_empty() {
                    "(none)".to_string()
                } else {
                    report.remaining_releases.join(", ")
                }
            );
        }
    }
    if report.healthy == Some(false) {
        anyhow::bail!("the restored release is not healthy");
    }
    Ok(0)
}

pub fn verify(args: VerifyArgs, output: Output) -> anyhow::Result<u8> {
    let report = gbo_ci::deploy::verify(&args.connect.options(), &args.binary, &args.dest)?;
    match output {
        Output::Json => print_json(&report)?,
        Output::Text => {
            println!("{}:{}", report.host, report.dest);
            println!("local sha256  {}  mtime {}", report.local_sha256, report.local_mtime);
            match (&report.remote_sha256, report.remote_mtime) {
                (Some(sha), Some(mtime)) => println!("remote sha256 {sha}  mtime {mtime}"),
                (Some(sha), None) => println!("remote sha256 {sha}"),
                _ => println!("remote        (missing)"),
            }
            for process in &report.processes {
                println!(
                    "process       {}{}{}",
                    process.pid,
                    process.unit.as_deref().map(|unit| format!(" in {unit}")).unwrap_or_default(),
                    if process.runs_replaced_binary { " (runs a replaced binary)" } else { "" }
                );
            }
            if report.findings.is_empty() {
                println!("ok: the deployed binary is the local artifact");
            }
            for finding in &report.findings {
                println!("STALE: {finding}");
            }
        }
    }
    Ok(if report.findings.is_empty() { 0 } else { FINDINGS })
}
