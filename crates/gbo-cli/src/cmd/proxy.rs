//! Safe Caddy changes.

use crate::output::Outcome;

/// `gbo proxy` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Not yet implemented.
    Status,
}

/// Run a `gbo proxy` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Status => anyhow::bail!("gbo proxy: not yet implemented"),
    }
}
