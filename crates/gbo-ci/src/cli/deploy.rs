//! `deploy`, `rollback`, `verify`: arguments and results (progress is rendered by [`super::events`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use gbo_ci::deploy::{DeployOptions, RollbackOptions, StartOptions};
use gbo_ci::names::{HealthUrl, RemotePath, SystemdUnit, UnixUser};

use super::events::{pid_list, Events};
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
    #[command(flatten)]
    timing: TimingArgs,
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
    unit: Option<SystemdUnit>,
}

/// The stop, restart and lock limits that deploy and rollback share.
#[derive(Debug, Args)]
pub struct TimingArgs {
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
}

impl TimingArgs {
    /// `(stop timeout, restart timeout, lock wait)`; the restart timeout defaults from the stop timeout.
    fn durations(&self) -> (Duration, Duration, Duration) {
        let stop = Duration::from_secs(self.stop_timeout);
        let restart = self
            .restart_timeout
            .map(Duration::from_secs)
            .unwrap_or_else(|| gbo_ci::deploy::default_restart_timeout(stop));
        (stop, restart, Duration::from_secs(self.lock_wait))
    }
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
    #[command(flatten)]
    timing: TimingArgs,
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

pub fn deploy(args: DeployArgs, output: Output) -> anyhow::Result<u8> {
    let (stop_timeout, restart_timeout, lock_wait) = args.timing.durations();
    let options = DeployOptions {
        binary: args.binary,
        dest: args.dest,
        owner: args.owner,
        health: args.health,
        keep: args.keep,
        start: args.start.options(),
        unit: args.start.unit.clone(),
        health_timeout: Duration::from_secs(args.health_timeout),
        stop_timeout,
        restart_timeout,
        lock_wait,
    };
    let mut events = Events::new(output);
    if args.dry_run {
        return print_plan(
            &gbo_ci::deploy::plan_deploy(&args.connect.options(), &options, &mut events)?,
            &options,
            output,
        );
    }
    let report = gbo_ci::deploy::deploy(&args.connect.options(), &options, &mut events)?;
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
                None => {
                    println!("restart       stopped pid {} and started the new binary", pid_list(&report.stopped_pids))
                }
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
            print_restart(&plan.unit, &plan.stop_pids, plan.start.as_ref(), plan.dest.as_str());
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
        None => println!("restart       stop pid {}, then start the binary", pid_list(stop_pids)),
    }
    if let Some(start) = start {
        println!("start         as {} in {}: {} {}", start.owner, start.cwd, dest, start.args.join(" "));
        println!("log           {}", start.log);
    }
}

/// The releases left after a rollback.
fn print_remaining(releases: &[String]) {
    println!("remaining     {}", if releases.is_empty() { "(none)".to_string() } else { releases.join(", ") });
}

pub fn rollback(args: RollbackArgs, output: Output) -> anyhow::Result<u8> {
    let (stop_timeout, restart_timeout, lock_wait) = args.timing.durations();
    let options = RollbackOptions {
        dest: args.dest,
        owner: args.owner,
        health: args.health,
        start: args.start.options(),
        unit: args.start.unit.clone(),
        health_timeout: Duration::from_secs(args.health_timeout),
        stop_timeout,
        restart_timeout,
        lock_wait,
    };
    let mut events = Events::new(output);
    if args.dry_run {
        let plan = gbo_ci::deploy::plan_rollback(&args.connect.options(), &options, &mut events)?;
        match output {
            Output::Json => print_json(&plan)?,
            Output::Text => {
                println!("dry run: nothing was changed on {}", plan.host);
                println!("would restore {} over {} (sha256 {})", plan.restore_release, plan.dest, plan.sha256);
                print_restart(&plan.unit, &plan.stop_pids, plan.start.as_ref(), plan.dest.as_str());
                print_remaining(&plan.remaining_releases);
            }
        }
        return Ok(0);
    }
    let report = gbo_ci::deploy::rollback(&args.connect.options(), &options, &mut events)?;
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
            print_remaining(&report.remaining_releases);
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
