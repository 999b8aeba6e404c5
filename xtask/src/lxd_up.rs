//! `cargo xtask lxd-up`: a local LXD for development, tests and users.

/// Options of `lxd-up`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Skip building/importing the test image.
    #[arg(long)]
    pub no_image: bool,
}

/// Bring LXD up.
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("lxd-up: not yet implemented")
}

/// Remove what earlier test runs left behind.
pub async fn clean() -> anyhow::Result<()> {
    anyhow::bail!("clean: not yet implemented")
}
