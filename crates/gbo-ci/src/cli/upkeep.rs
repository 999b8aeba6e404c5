//! `workflow`, `push`, `cache` and `runs`: arguments and rendering.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use gbo_ci::cache::{CacheLocations, Scheduler, TimerOptions};
use gbo_ci::size::ByteSize;
use gbo_ci::ssh::Secret;
use gbo_ci::workflow::RenderSettings;

use super::events::Events;
use super::{print_json, Output, FINDINGS};

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Write .forgejo/workflows/<name>.yaml into each submodule of the root repository (build, test, deploy).
    Render(RenderArgs),
    /// Lint workflow files for the runbook's pitfalls; exit 1 when any is found.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The root repository (holding .gitmodules).
    #[arg(long, default_value = ".", value_name = "DIR")]
    root: PathBuf,
    /// Only this submodule (repeatable).
    #[arg(long = "submodule", value_name = "NAME")]
    submodules: Vec<String>,
    /// Deploy host (an ssh config alias on the runner).
    #[arg(long, default_value = "pragmatismo-system")]
    host: String,
    /// User owning and running the binaries.
    #[arg(long, default_value = "gbuser")]
    owner: String,
    /// Runner label for runs-on.
    #[arg(long, default_value = "gbo-runner")]
    runs_on: String,
    /// Repository secret holding the deploy key (passed as GBO_CI_SSH_KEY).
    #[arg(long, default_value = "GBO_DEPLOY_SSH_KEY")]
    key_secret: String,
    /// Print the files instead of writing them.
    #[arg(long)]
    stdout: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Workflow files, or directories searched for .forgejo/workflows/*.y(a)ml.
    #[arg(default_value = ".", value_name = "PATH")]
    paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The root repository's work tree.
    #[arg(long, default_value = ".", value_name = "DIR")]
    root: PathBuf,
    /// The submodule's path inside the root, e.g. botserver.
    #[arg(long, value_name = "PATH")]
    submodule: String,
    /// Branch to push in both repositories.
    #[arg(long, default_value = "main")]
    branch: String,
    /// Remotes of the submodule (comma separated).
    #[arg(long, default_value = "origin,alm", value_delimiter = ',')]
    remotes: Vec<String>,
    /// Remotes of the root (comma separated).
    #[arg(long, default_value = "alm", value_delimiter = ',')]
    root_remotes: Vec<String>,
    /// Commit message for the pointer update.
    #[arg(long, short)]
    message: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Remove the oldest sccache files and cargo registry crates until the caches fit in --max-size.
    Prune(PruneArgs),
    /// Install the daily prune: a systemd timer, or an /etc/cron.d file when systemd is not running.
    InstallTimer(TimerArgs),
}

#[derive(Debug, Args)]
pub struct CacheDirArgs {
    /// sccache directory (default $SCCACHE_DIR or ~/.cache/sccache).
    #[arg(long, value_name = "DIR")]
    sccache_dir: Option<PathBuf>,
    /// cargo registry directory (default $CARGO_HOME/registry or ~/.cargo/registry).
    #[arg(long, value_name = "DIR")]
    registry_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Size the caches must fit in together, e.g. 20G, 500M, 10GB.
    #[arg(long, value_name = "SIZE")]
    max_size: ByteSize,
    /// Only report what would be removed.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    dirs: CacheDirArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchedulerArg {
    Auto,
    Systemd,
    Cron,
}

#[derive(Debug, Args)]
pub struct TimerArgs {
    /// Size limit for the daily prune.
    #[arg(long, default_value = "20G", value_name = "SIZE")]
    max_size: ByteSize,
    /// Root of the file system to install into (a directory for tests or images).
    #[arg(long, default_value = "/", value_name = "DIR")]
    root: PathBuf,
    /// Scheduler: auto (systemd when <root>/run/systemd/system exists, else cron), systemd or cron.
    #[arg(long, value_enum, default_value_t = SchedulerArg::Auto)]
    scheduler: SchedulerArg,
    /// The gbo-ci executable the job runs (default: this one).
    #[arg(long, value_name = "PATH")]
    executable: Option<PathBuf>,
    #[command(flatten)]
    dirs: CacheDirArgs,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// Repository as OWNER/NAME.
    #[arg(long, value_name = "OWNER/NAME")]
    repo: String,
    /// How many runs.
    #[arg(long, default_value_t = 5)]
    limit: u32,
    /// Forgejo base URL.
    #[arg(long, env = "FORGEJO_URL", value_name = "URL")]
    url: String,
}

pub fn workflow(command: WorkflowCommand, output: Output) -> anyhow::Result<u8> {
    match command {
        WorkflowCommand::Render(args) => {
            let settings = RenderSettings {
                host: args.host,
                owner: args.owner,
                runs_on: args.runs_on,
                key_secret: args.key_secret,
                ..RenderSettings::default()
            };
            let files = gbo_ci::workflow::render_all(&args.root, &settings, &args.submodules, !args.stdout)?;
            match output {
                Output::Json => print_json(&files)?,
                Output::Text if args.stdout => {
                    for file in &files {
                        println!("# ---- {}\n{}", file.path.display(), file.contents);
                    }
                }
                Output::Text => {
                    for file in &files {
                        println!(
                            "wrote {}{}",
                            file.path.display(),
                            if file.deploys { " (build, test, deploy)" } else { " (build, test)" }
                        );
                    }
                }
            }
            Ok(0)
        }
        WorkflowCommand::Check(args) => {
            let report = gbo_ci::workflow::check_paths(&args.paths)?;
            match output {
                Output::Json => print_json(&report)?,
                Output::Text => {
                    for finding in &report.findings {
                        println!("{}:{}: [{}] {}", finding.file.display(), finding.line, finding.rule, finding.message);
                    }
                    eprintln!(
                        "checked {} workflow file(s), {} finding(s)",
                        report.checked.len(),
                        report.findings.len()
                    );
                }
            }
            Ok(if report.findings.is_empty() { 0 } else { FINDINGS })
        }
    }
}

pub fn push(args: PushArgs, output: Output) -> anyhow::Result<u8> {
    let options = gbo_ci::push::PushOptions {
        root: args.root,
        submodule: args.submodule,
        branch: args.branch,
        submodule_remotes: args.remotes,
        root_remotes: args.root_remotes,
        message: args.message,
    };
    let report = gbo_ci::push::push(&options, &mut Events::new(output))?;
    match output {
        Output::Json => print_json(&report)?,
        Output::Text => {
            println!(
                "submodule {} at {}; root at {}{}",
                report.submodule,
                report.submodule_commit.get(..12).unwrap_or(&report.submodule_commit),
                report.root_commit.get(..12).unwrap_or(&report.root_commit),
                if report.root_committed { " (pointer updated)" } else { " (pointer already current)" }
            );
            for confirmed in &report.confirmed {
                println!("confirmed {:<9} {:<8} {}", confirmed.repository, confirmed.remote, confirmed.commit);
            }
        }
    }
    Ok(0)
}

pub fn cache(command: CacheCommand, output: Output) -> anyhow::Result<u8> {
    match command {
        CacheCommand::Prune(args) => {
            let locations = CacheLocations::with(args.dirs.sccache_dir, args.dirs.registry_dir);
            let report = gbo_ci::cache::prune(&locations, args.max_size, args.dry_run, &mut Events::new(output))?;
            match output {
                Output::Json => print_json(&report)?,
                Output::Text => {
                    let verb = if report.dry_run { "would remove" } else { "removed" };
                    for entry in &report.removed {
                        println!("{verb} {} ({})", entry.path.display(), ByteSize(entry.bytes));
                    }
                    println!(
                        "{} -> {} (limit {}), {} {} entries",
                        ByteSize(report.before_bytes),
                        ByteSize(report.after_bytes),
                        ByteSize(report.max_bytes),
                        verb,
                        report.removed.len()
                    );
                }
            }
            Ok(0)
        }
        CacheCommand::InstallTimer(args) => {
            let executable = match args.executable {
                Some(path) => path,
                None => std::env::current_exe()?,
            };
            let options = TimerOptions {
                root: args.root,
                executable,
                max_size: args.max_size,
                sccache_dir: args.dirs.sccache_dir,
                registry_dir: args.dirs.registry_dir,
                scheduler: match args.scheduler {
                    SchedulerArg::Auto => None,
                    SchedulerArg::Systemd => Some(Scheduler::Systemd),
                    SchedulerArg::Cron => Some(Scheduler::Cron),
                },
            };
            let report = gbo_ci::cache::install_timer(&options)?;
            match output {
                Output::Json => print_json(&report)?,
                Output::Text => {
                    for file in &report.files {
                        println!("wrote {}", file.display());
                    }
                    for command in &report.activated {
                        println!("ran {command}");
                    }
                    if report.scheduler == Scheduler::Systemd && report.activated.is_empty() {
                        println!("activate inside that root with: systemctl daemon-reload && systemctl enable --now gbo-ci-cache-prune.timer");
                    }
                }
            }
            Ok(0)
        }
    }
}

pub fn runs(args: RunsArgs, output: Output) -> anyhow::Result<u8> {
    let token = std::env::var("FORGEJO_TOKEN").ok().filter(|token| !token.is_empty()).map(Secret::new);
    let query = gbo_ci::runs::RunsQuery::new(&args.url, &args.repo, args.limit, token)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = runtime.block_on(gbo_ci::runs::list_runs(&query, &mut Events::new(output)))?;
    match output {
        Output::Json => print_json(&report)?,
        Output::Text => {
            println!(
                "{:<8} {:<6} {:<10} {:<12} {:<10} {:<25} TITLE",
                "ID", "RUN", "STATUS", "BRANCH", "COMMIT", "STARTED"
            );
            for run in &report.workflow_runs {
                println!(
                    "{:<8} {:<6} {:<10} {:<12} {:<10} {:<25} {}",
                    run.id,
                    run.run_number,
                    run.status,
                    run.head_branch,
                    run.head_sha.get(..10).unwrap_or(&run.head_sha),
                    run.run_started_at,
                    run.display_title
                );
            }
            eprintln!("{} of {} runs", report.workflow_runs.len(), report.total_count);
        }
    }
    Ok(0)
}
