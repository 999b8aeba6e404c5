//! Debian packages at provisioning time, for containers created from an image gbo did not build (such as
//! `images:debian/12` on an online host): first the fixed-uid service users of the catalogue (so the packages find
//! their accounts and reuse them), then the role's Debian packages with apt-get, non-interactive, and skipped when
//! they are installed already.
//!
//! Images built by gbo record their roles in the `gbo.roles` property, which LXD copies into every instance as
//! `image.gbo.roles`: such a container needs nothing here, or cannot serve a role it lacks. A container that cannot
//! be made to serve its role (no network for apt-get, a gbo image without the role) and was never provisioned is
//! deleted before the error is returned, so the next run starts clean, with another image or a network.

use std::time::Duration;

use gbo_components::users::{debian_packaged_roles, role_packages, GBUSER, SERVICE_USERS};
use gbo_components::Role;
use lxd_client::{ExecRequest, Instance, InstanceName};

use super::apply::ApplyContext;
use super::error::InstallError;
use super::observe;
use super::plan::Desired;
use crate::events::{InstallEvent, InstallEventKind};
use crate::inventory;

/// The instance key LXD fills from the image's `gbo.roles` property.
pub const KEY_IMAGE_ROLES: &str = "image.gbo.roles"; // "image." + crate::image::ROLES_PROPERTY

/// What a container's image offers its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageFit {
    /// Built by gbo with the role's packages, or built by gbo and the role needs no package.
    Ready,
    /// Built by gbo without the role's packages; the roles it has.
    Lacks(Vec<String>),
    /// Not built by gbo: the users and the role's packages are set up at provisioning.
    Foreign,
}

/// What the image of `instance` offers `role`, from its `image.gbo.roles` key.
pub fn image_fit(instance: &Instance, role: Role) -> ImageFit {
    let Some(roles) = instance.config.get(KEY_IMAGE_ROLES) else { return ImageFit::Foreign };
    let has = crate::image::parse_roles(roles);
    if role_packages(role).is_empty() || has.iter().any(|r| r == role.as_str()) {
        ImageFit::Ready
    } else {
        ImageFit::Lacks(has)
    }
}

/// Whether `instance` has a network interface (a `nic` device of its own or from a profile).
pub fn has_nic(instance: &Instance) -> bool {
    instance.expanded_devices.values().any(|d| d.get("type").map(String::as_str) == Some("nic"))
}

/// The command that builds an offline image with every Debian-packaged role.
pub fn offline_image_fix() -> String {
    super::image_source::build_fix(&debian_packaged_roles(), super::DEFAULT_IMAGE)
}

/// Creates the fixed-uid users and groups (refusing ids taken by other accounts), the `/opt/gbo` skeleton, and
/// prints `I <package>` or `M <package>` for each package after `--`. Offline; changes nothing when all is there.
const USERS_SCRIPT: &str = r#"set -e
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  IFS=: read -r n u g h s <<EOF
$1
EOF
  shift
  cur=$(getent group "$n" | cut -d: -f3)
  if [ -z "$cur" ]; then
    other=$(getent group "$g" | cut -d: -f1)
    if [ -n "$other" ]; then echo "gid $g for $n is taken by group $other" >&2; exit 3; fi
    groupadd -g "$g" "$n"
  elif [ "$cur" != "$g" ]; then echo "group $n has gid $cur, gbo needs $g" >&2; exit 3; fi
  cur=$(getent passwd "$n" | cut -d: -f3)
  if [ -z "$cur" ]; then
    other=$(getent passwd "$u" | cut -d: -f1)
    if [ -n "$other" ]; then echo "uid $u for $n is taken by $other" >&2; exit 3; fi
    useradd -u "$u" -g "$g" -d "$h" -s "$s" -M -c "gbo service user" "$n"
  elif [ "$cur" != "$u" ]; then echo "user $n has uid $cur, gbo needs $u" >&2; exit 3; fi
done
[ "${1:-}" = "--" ] && shift
for d in /opt/gbo /opt/gbo/bin /opt/gbo/data /opt/gbo/conf /opt/gbo/logs; do
  if [ ! -d "$d" ]; then mkdir -p "$d"; chown "$GBO_OWNER" "$d"; fi
done
for p in "$@"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  if [ "$st" = installed ]; then echo "I $p"; else echo "M $p"; fi
done
"#;

/// Installs the packages given as arguments the way the image builder would have: no service starts during the
/// install (policy-rc.d), the vendor units each role replaces are masked first, no `main` PostgreSQL cluster, the
/// units the roles enable themselves are left disabled.
const APT_SCRIPT: &str = r#"set -e
export DEBIAN_FRONTEND=noninteractive
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
for u in $GBO_MASK; do systemctl mask "$u" >/dev/null 2>&1 || true; done
apt-get update -q --error-on=any
apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
for c in /etc/postgresql/*/main; do
  [ -d "$c" ] || continue
  pg_dropcluster --stop "$(basename "$(dirname "$c")")" main
done
if [ -f /etc/postgresql-common/createcluster.conf ]; then
  sed -i 's/^#\{0,1\}create_main_cluster = true/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
fi
for u in $GBO_DISABLE; do systemctl disable "$u" >/dev/null 2>&1 || true; done
apt-get clean
"#;

/// Make sure the container of `desired` can run its role. Nothing to do for a gbo image that carries the role;
/// for an image gbo did not build: the fixed-uid users, then the role's missing packages with apt-get. Called at
/// the start of provisioning, with the container running.
pub async fn ensure(ctx: &ApplyContext<'_>, desired: &Desired, name: &InstanceName) -> Result<(), InstallError> {
    let lxd = ctx.lxd;
    let instance = lxd.instance(name).await.map_err(InstallError::lxd(format!("reading {name}")))?;
    let never_provisioned = !instance.config.contains_key(inventory::KEY_PROVISIONED_HASH);
    let say = |description: String| {
        ctx.events.event(&InstallEvent::new(&desired.instance, InstallEventKind::Step { description }))
    };
    match image_fit(&instance, desired.role) {
        ImageFit::Ready => Ok(()),
        ImageFit::Lacks(has) => {
            let removed = remove_if_never_provisioned(ctx, name, never_provisioned).await?;
            let mut wanted: Vec<Role> = has.iter().filter_map(|h| h.parse().ok()).collect();
            wanted.push(desired.role);
            Err(InstallError::ImageLacksRoles {
                alias: desired.image.clone(),
                roles: desired.role.as_str().to_string(),
                has: if has.is_empty() { "no gbo roles".into() } else { has.join(",") },
                fix: super::image_source::build_fix(&wanted, &desired.image),
                removed,
            })
        }
        ImageFit::Foreign => {
            let packages = role_packages(desired.role);
            let mut argv: Vec<String> = vec!["sh".into(), "-c".into(), USERS_SCRIPT.into(), "gbo-users".into()];
            argv.extend(SERVICE_USERS.iter().map(|u| format!("{}:{}:{}:{}:{}", u.name, u.uid, u.gid, u.home, u.shell)));
            argv.push("--".into());
            argv.extend(packages.iter().map(|p| p.to_string()));
            let request = ExecRequest::new(argv)
                .env("GBO_OWNER", format!("{}:{}", GBUSER.uid, GBUSER.gid))
                .timeout(Duration::from_secs(120));
            let output = lxd
                .exec_output(name, &request)
                .await
                .map_err(InstallError::lxd(format!("creating the service users in {name}")))?;
            let listing = super::apply::checked(name, "sh -c <fixed-uid users>".into(), output)?;
            let missing: Vec<String> =
                listing.lines().filter_map(|l| l.strip_prefix("M ")).map(str::to_string).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if !has_nic(&instance) {
                let removed = remove_if_never_provisioned(ctx, name, never_provisioned).await?;
                return Err(InstallError::NoNetwork {
                    instance: desired.instance.clone(),
                    image: desired.image.clone(),
                    role: desired.role.as_str().to_string(),
                    packages: missing.join(" "),
                    removed,
                });
            }
            say(format!("installing {} with apt-get", missing.join(" ")));
            let mut argv: Vec<String> = vec!["sh".into(), "-c".into(), APT_SCRIPT.into(), "gbo-apt".into()];
            argv.extend(missing.iter().cloned());
            let request = ExecRequest::new(argv)
                .env("GBO_MASK", crate::image::MASKED_UNITS.join(" "))
                .env("GBO_DISABLE", crate::image::DISABLED_UNITS.join(" "))
                .timeout(Duration::from_secs(1800));
            let output = lxd
                .exec_output(name, &request)
                .await
                .map_err(InstallError::lxd(format!("apt-get install in {name}")))?;
            if !output.success() {
                let removed = remove_if_never_provisioned(ctx, name, never_provisioned).await?;
                return Err(InstallError::Packages {
                    instance: desired.instance.clone(),
                    packages: missing.join(" "),
                    reason: observe::tail(&output.stderr_text()),
                    removed,
                });
            }
            Ok(())
        }
    }
}

/// Delete a container that was never provisioned (it holds nothing: data lives on host mounts), so the next run
/// creates it afresh. Returns what to tell the user.
async fn remove_if_never_provisioned(
    ctx: &ApplyContext<'_>,
    name: &InstanceName,
    never_provisioned: bool,
) -> Result<String, InstallError> {
    if !never_provisioned {
        return Ok(String::new());
    }
    ctx.lxd.delete_instance_if_exists(name).await.map_err(InstallError::lxd(format!("removing {name}")))?;
    Ok(format!(" (the container {name} was removed: it was never provisioned)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(roles: Option<&str>, nic: bool) -> Instance {
        let mut i = Instance::default();
        if let Some(r) = roles {
            i.config.insert(KEY_IMAGE_ROLES.into(), r.into());
        }
        let mut root = lxd_client::DeviceConfig::new();
        root.insert("type".into(), "disk".into());
        i.expanded_devices.insert("root".into(), root);
        if nic {
            let mut eth = lxd_client::DeviceConfig::new();
            eth.insert("type".into(), "nic".into());
            i.expanded_devices.insert("eth0".into(), eth);
        }
        i
    }

    #[test]
    fn the_image_roles_key_decides() {
        assert_eq!(image_fit(&instance(Some("tables,cache"), false), Role::Cache), ImageFit::Ready);
        assert_eq!(image_fit(&instance(Some("tables"), false), Role::Cache), ImageFit::Lacks(vec!["tables".into()]));
        // A role without packages runs from any gbo image.
        assert_eq!(image_fit(&instance(Some(""), false), Role::Drive), ImageFit::Ready);
        assert_eq!(image_fit(&instance(None, false), Role::Cache), ImageFit::Foreign);
        assert_eq!(image_fit(&instance(None, false), Role::Drive), ImageFit::Foreign);
    }

    #[test]
    fn a_nic_from_anywhere_counts() {
        assert!(!has_nic(&instance(None, false)));
        assert!(has_nic(&instance(None, true)));
        assert_eq!(offline_image_fix(), "gbo image build --components tables,cache,proxy,webmail");
    }
}
