//! fail2ban filters and jails.

use crate::output::Outcome;

/// `gbo fail2ban` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Not yet implemented.
    Status,
}

/// Run a `gbo fail2ban` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Status => anyhow::bail!("gbo fail2ban: not yet implemented"),
    }
}
