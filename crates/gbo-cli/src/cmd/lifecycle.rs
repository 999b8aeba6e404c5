//! Setting up LXD, building images, planning, installing and operating a tenant's containers.

use crate::output::Outcome;

/// The lifecycle commands (flattened into the top level).
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Detect the LXD socket and initialise a storage pool and the default profile's root disk if missing.
    Setup,
}

/// Run a lifecycle command.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Setup => anyhow::bail!("gbo setup: not yet implemented"),
    }
}
