//! `gbo doctor`: every rule of the production runbook as a check.

use crate::output::Outcome;

/// Options of `gbo doctor`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tenant to check.
    #[arg(long, default_value = "default")]
    pub tenant: String,
}

/// Run the checks.
pub async fn run(_args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("gbo doctor: not yet implemented")
}
