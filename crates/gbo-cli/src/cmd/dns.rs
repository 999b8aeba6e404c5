//! CoreDNS configuration.

use crate::output::Outcome;

/// `gbo dns` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Not yet implemented.
    Status,
}

/// Run a `gbo dns` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Status => anyhow::bail!("gbo dns: not yet implemented"),
    }
}
