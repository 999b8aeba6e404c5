//! `gbo image build|list`: the one image builder and the images it made.

use anyhow::Context;

use gbo_ops::install;

use super::install::parse_roles;
use crate::output::outln;
use crate::output::progress::{Lines, Style};
use crate::output::{lxd, print_json, print_table, Format, Outcome};

/// `gbo image ...`.
#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Build (or reuse) the offline image: Debian 12, systemd, fixed uids, the roles' packages.
    Build {
        /// Roles whose Debian packages to bake in, comma separated (default: every Debian-packaged role).
        #[arg(long, value_delimiter = ',')]
        components: Vec<String>,
        /// Image alias.
        #[arg(long, default_value = install::DEFAULT_IMAGE)]
        alias: String,
        /// Rebuild even when an image with the same inputs exists.
        #[arg(long)]
        force: bool,
    },
    /// List gbo images.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
}

pub async fn run(command: ImageCommand) -> anyhow::Result<Outcome> {
    match command {
        ImageCommand::Build { components, alias, force } => {
            let roles = parse_roles(&components)?;
            let lxd = lxd()?;
            let spec = install::setup::image_spec(&roles, &alias, force);
            std::fs::create_dir_all(&spec.work_dir).with_context(|| format!("creating {}", spec.work_dir.display()))?;
            let lines = Lines::new(Style::for_output(Format::Table));
            let events = |event: &gbo_ops::image::ImageEvent| lines.show(event);
            let built = gbo_ops::image::build_image(&lxd, &spec, &events).await;
            lines.close();
            let built = built?;
            outln!(
                "image {} -> {} ({}; roles {})",
                built.alias,
                &built.fingerprint[..built.fingerprint.len().min(12)],
                if built.reused { "reused" } else { "built" },
                spec.roles.join(",")
            );
            Ok(Outcome::Ok)
        }
        ImageCommand::List { output } => {
            let images = gbo_ops::image::gbo_images(&lxd()?).await?;
            if output == Format::Json {
                print_json(&images)?;
            } else {
                let rows: Vec<Vec<String>> = images
                    .iter()
                    .map(|i| {
                        vec![
                            i.aliases.join(","),
                            i.fingerprint.chars().take(12).collect(),
                            i.roles.join(","),
                            format!("{} MiB", i.size / (1024 * 1024)),
                        ]
                    })
                    .collect();
                print_table(&["ALIAS", "FINGERPRINT", "ROLES", "SIZE"], &rows);
            }
            Ok(Outcome::Ok)
        }
    }
}
