//! The image new containers are created from: `--image` (a local alias or `REMOTE:ALIAS`), else the local default
//! alias when it exists, else the fallback (with a note); and whether it can serve the roles asked for.

use std::collections::BTreeSet;

use gbo_components::{instance_name, Role, TenantName};
use lxd_client::{Client, InstanceSource};

use super::{InstallError, InstallRequest};

/// The image alias `gbo image build` creates and `gbo install` uses by default.
pub const DEFAULT_IMAGE: &str = "gbo/debian-12";

/// The image `gbo install` falls back to when [`DEFAULT_IMAGE`] does not exist: plain Debian 12 from the public
/// image server, whose containers get their roles' packages with apt-get at provisioning.
pub const FALLBACK_IMAGE: &str = "images:debian/12";

/// The built-in `images` remote (simplestreams), used when the `lxc` CLI's configuration does not define it.
pub const IMAGES_SERVER: &str = "https://images.linuxcontainers.org";

/// Where an image comes from, as far as gbo can tell before creating a container from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    /// Built by gbo: the roles recorded in its `gbo.roles` property.
    Gbo(Vec<String>),
    /// Not built by gbo (a local image without `gbo.roles`, or an image of a simplestreams server such as
    /// `images:`): the roles' packages are installed with apt-get at provisioning.
    Foreign,
    /// Served by another LXD server: known once a container exists (its `image.gbo.roles` key).
    Unknown,
}

/// The image new containers are created from, resolved from `--image` or the default.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// As printed in plans: `gbo/debian-12`, `images:debian/12`.
    pub name: String,
    /// The server it is pulled from (`None`: an image of the local daemon).
    pub server: Option<String>,
    /// What LXD is asked to create containers from.
    pub source: InstanceSource,
    /// Whether gbo built it, and with which roles.
    pub provenance: Provenance,
    /// Why this image was chosen, when it is the fallback.
    pub note: Option<String>,
    /// The fingerprint the alias points at (a local image), compared with a container's `volatile.base_image` to
    /// tell that it runs an older image.
    pub fingerprint: Option<String>,
}

/// The command that builds a local image for `roles`: every one of them that has packages (tables, cache and proxy
/// when none has).
pub(super) fn build_fix(roles: &[Role], alias: &str) -> String {
    let packaged = |r: &Role| !gbo_components::users::role_packages(*r).is_empty();
    let mut names: Vec<&str> =
        Role::ALL.iter().filter(|r| roles.contains(r) && packaged(r)).map(|r| r.as_str()).collect();
    if names.is_empty() {
        names = vec!["tables", "cache", "proxy"];
    }
    if alias == DEFAULT_IMAGE {
        format!("gbo image build --components {}", names.join(","))
    } else {
        format!("gbo image build --components {} --alias {alias}", names.join(","))
    }
}

/// A local image by alias, resolved.
pub(super) async fn local_image(lxd: &Client, alias: &str) -> Result<Option<ResolvedImage>, InstallError> {
    let Some(image) = lxd.image_by_alias(alias).await.map_err(InstallError::lxd(format!("reading image {alias}")))?
    else {
        return Ok(None);
    };
    let provenance = match image.properties.get(crate::image::ROLES_PROPERTY) {
        Some(roles) => Provenance::Gbo(crate::image::parse_roles(roles)),
        None => Provenance::Foreign,
    };
    Ok(Some(ResolvedImage {
        name: alias.to_string(),
        server: None,
        source: InstanceSource::alias(alias),
        provenance,
        note: None,
        fingerprint: Some(image.fingerprint.clone()),
    }))
}

/// Resolve `value` (`ALIAS` or `REMOTE:ALIAS`) given with `flag`. A local alias must exist.
pub(super) async fn named_image(
    lxd: &Client,
    value: &str,
    flag: &str,
    roles: &[Role],
) -> Result<ResolvedImage, InstallError> {
    let bad = |why: String| InstallError::BadInput(format!("{flag} {value:?}: {why}"));
    let Some((remote, alias)) = value.split_once(':') else {
        if value.is_empty() {
            return Err(bad("expected ALIAS (a local image) or REMOTE:ALIAS, for example images:debian/12".into()));
        }
        return match local_image(lxd, value).await? {
            Some(image) => Ok(image),
            None => Err(InstallError::MissingImage { alias: value.to_string(), fix: build_fix(roles, value) }),
        };
    };
    if remote.is_empty() || alias.is_empty() {
        return Err(bad("expected ALIAS (a local image) or REMOTE:ALIAS, for example images:debian/12".into()));
    }
    let config_dir = lxd_client::Remote::default_config_dir();
    let from_config = match &config_dir {
        Some(dir) => InstanceSource::from_lxc_remote(dir, remote, alias).map_err(|e| bad(e.to_string()))?,
        None => None,
    };
    let source = match from_config {
        Some(source) => source,
        None if remote == "images" => InstanceSource::simplestreams(IMAGES_SERVER, alias),
        None => {
            let config = config_dir
                .map(|d| d.join("config.yml").display().to_string())
                .unwrap_or_else(|| "the lxc configuration".into());
            return Err(bad(format!(
                "no image remote {remote:?}: REMOTE is `images` ({IMAGES_SERVER}) or a remote of the lxc CLI in {config} (add one with `lxc remote add`)"
            )));
        }
    };
    let Some(server) = source.server.clone() else {
        // A unix-socket remote (`local:`): the alias is an image of this daemon.
        return match local_image(lxd, alias).await? {
            Some(image) => Ok(image),
            None => Err(InstallError::MissingImage { alias: alias.to_string(), fix: build_fix(roles, alias) }),
        };
    };
    let provenance =
        if source.protocol.as_deref() == Some("simplestreams") { Provenance::Foreign } else { Provenance::Unknown };
    Ok(ResolvedImage {
        name: value.to_string(),
        server: Some(server),
        source,
        provenance,
        note: None,
        fingerprint: None,
    })
}

/// The image containers of `request` are created from: `--image`, else the local default alias when it exists,
/// else the fallback (with a note saying so). `roles` name the fix when a local alias is missing.
pub async fn resolve_image(
    lxd: &Client,
    request: &InstallRequest,
    roles: &[Role],
) -> Result<ResolvedImage, InstallError> {
    if let Some(image) = &request.image {
        return named_image(lxd, image, "--image", roles).await;
    }
    if let Some(image) = local_image(lxd, &request.default_image).await? {
        return Ok(image);
    }
    let mut image = named_image(lxd, &request.fallback_image, "--fallback-image", roles).await?;
    let from = image.server.as_deref().map(|s| format!(" from {s}")).unwrap_or_default();
    image.note = Some(format!(
        "no local image {}: containers come from the fallback {}{from}; for an offline image run `{}`",
        request.default_image,
        image.name,
        build_fix(roles, &request.default_image)
    ));
    Ok(image)
}

/// Check that the image can serve the roles: a gbo image must carry their packages; a plain image gets them with
/// apt-get at provisioning, which needs a network (refused here for images that certainly lack them).
pub(super) async fn check_image(
    lxd: &Client,
    image: &ResolvedImage,
    tenant: &TenantName,
    roles: &[Role],
    notes: &mut Vec<String>,
) -> Result<(), InstallError> {
    let packaged: Vec<Role> =
        roles.iter().copied().filter(|r| !gbo_components::users::role_packages(*r).is_empty()).collect();
    let packages = |roles: &[Role]| {
        roles
            .iter()
            .flat_map(|r| gbo_components::users::role_packages(*r).iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let names = |roles: &[Role]| roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ");
    match &image.provenance {
        Provenance::Gbo(has) => {
            let lacking: Vec<Role> =
                packaged.iter().copied().filter(|r| !has.iter().any(|h| h == r.as_str())).collect();
            if !lacking.is_empty() {
                let mut wanted: Vec<Role> = has.iter().filter_map(|h| h.parse().ok()).collect();
                wanted.extend(lacking.iter().copied());
                return Err(InstallError::ImageLacksRoles {
                    alias: image.name.clone(),
                    roles: names(&lacking),
                    has: if has.is_empty() { "no gbo roles".into() } else { has.join(",") },
                    fix: build_fix(&wanted, &image.name),
                    removed: String::new(),
                });
            }
        }
        Provenance::Foreign if !packaged.is_empty() => {
            let default_profile = lxd_client::ObjectName::new("default").map_err(InstallError::lxd("profile name"))?;
            let profile =
                lxd.profile(&default_profile).await.map_err(InstallError::lxd("reading the default profile"))?;
            let nic = profile.devices.values().any(|d| d.get("type").map(String::as_str) == Some("nic"));
            if !nic && image.server.is_some() {
                return Err(InstallError::NoNetwork {
                    instance: packaged.iter().map(|r| instance_name(tenant, *r)).collect::<Vec<_>>().join(", "),
                    image: image.name.clone(),
                    role: names(&packaged),
                    packages: packages(&packaged),
                    removed: " (nothing was changed)".into(),
                });
            }
            notes.push(format!(
                "image {} was not built by gbo: the packages of {} ({}) are installed with apt-get when missing, at provisioning{}",
                image.name,
                names(&packaged),
                packages(&packaged),
                if nic { "" } else { "; the default profile has no network device, so they must be in the image already" }
            ));
        }
        Provenance::Foreign => {}
        Provenance::Unknown => {
            if !packaged.is_empty() {
                notes.push(format!(
                    "image {} is pulled from {}: unless gbo built it, the packages of {} ({}) are installed with apt-get at provisioning (containers need a network)",
                    image.name,
                    image.server.as_deref().unwrap_or("its server"),
                    names(&packaged),
                    packages(&packaged)
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_fix_names_every_role_that_has_packages() {
        let fix = build_fix(&[Role::System, Role::Cache, Role::Drive], DEFAULT_IMAGE);
        let roles: Vec<&str> = fix.trim_start_matches("gbo image build --components ").split(',').collect();
        assert!(roles.contains(&"system") && roles.contains(&"cache") && !roles.contains(&"drive"), "{fix}");
        assert_eq!(build_fix(&[Role::Email], "mine"), "gbo image build --components email --alias mine");
        assert_eq!(build_fix(&[Role::Drive], DEFAULT_IMAGE), "gbo image build --components tables,cache,proxy");
    }
}
