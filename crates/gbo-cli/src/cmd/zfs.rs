//! ZFS snapshot usage and retention.

use crate::output::Outcome;

/// `gbo zfs` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Not yet implemented.
    Status,
}

/// Run a `gbo zfs` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Status => anyhow::bail!("gbo zfs: not yet implemented"),
    }
}
