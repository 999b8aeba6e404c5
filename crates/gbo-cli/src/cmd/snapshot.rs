//! Snapshots of containers and their host data.

use crate::output::Outcome;

/// `gbo snapshot` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Not yet implemented.
    Status,
}

/// Run a `gbo snapshot` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Status => anyhow::bail!("gbo snapshot: not yet implemented"),
    }
}
