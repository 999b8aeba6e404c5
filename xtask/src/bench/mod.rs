//! Benchmarks run side by side with the `lxc` CLI or the runbook's own commands; each rewrites its own section of
//! `docs/benchmarks.md` (between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`).

pub mod backup;
pub mod ci;
pub mod client;
pub mod cluster;
pub mod floor;
pub mod install;
pub mod ops;
pub mod report;

/// The benchmarks xtask knows.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Which {
    /// lxd-client versus the `lxc` CLI.
    Client,
    /// `gbo install` versus a sequential `lxc` script.
    Install,
    /// Snapshots, migration and ZFS prune versus the runbook's commands.
    Ops,
    /// `gbo-ci deploy` versus the runbook's ssh/scp sequence.
    Ci,
    /// `gbo backup create` versus `restic backup` and the runbook's `pg_dump` + `tar`, first and incremental run.
    Backup,
    /// gbo install by placement and gbo move on the three-member cluster versus `lxc --target` and `lxc move`.
    Cluster,
}

/// Run one benchmark and write its report section.
pub async fn run(which: Which) -> anyhow::Result<()> {
    let (name, markdown): (&str, String) = match which {
        Which::Client => ("client", client::run().await?),
        Which::Install => ("install", install::run().await?),
        Which::Ops => ("ops", ops::run().await?),
        Which::Ci => ("ci", ci::run().await?),
        Which::Cluster => ("cluster", cluster::run().await?),
        Which::Backup => ("backup", backup::run().await?),
    };
    if matches!(which, Which::Ops) && ops::only().is_some() {
        println!("{markdown}");
        return Ok(());
    }
    report::write_section(name, &markdown)
}
