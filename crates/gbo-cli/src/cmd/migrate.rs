//! Verified PostgreSQL migration between the host and the tables container.

use crate::output::Outcome;

/// `gbo migrate` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Not yet implemented.
    Status,
}

/// Run a `gbo migrate` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Status => anyhow::bail!("gbo migrate: not yet implemented"),
    }
}
