//! `gbo vault auto-unseal --install`: a host systemd unit that runs `gbo vault unseal` for a tenant once LXD has
//! started (after a reboot, Vault comes back sealed). The keys stay in their 0600 file, read by `gbo` itself: the
//! unit names the file, never a key (no key on a command line or in an environment value).

use std::path::{Path, PathBuf};

use gbo_components::TenantName;

use crate::vault::{self, VaultError};

/// Where host units go.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The unit's file name for `tenant`: `gbo-vault-unseal-<tenant>.service`.
pub fn unit_name(tenant: &TenantName) -> String {
    format!("gbo-vault-unseal-{tenant}.service")
}

/// Why a unit cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AutoUnsealError {
    /// A path systemd would read otherwise than written (quotes, backslashes, `%` specifiers, `$`, control
    /// characters), or not absolute.
    #[error("{}: use an absolute path without quotes, backslashes, '%', '$' or control characters in a unit", path.display())]
    BadPath {
        /// The path.
        path: PathBuf,
    },
    /// The keys file cannot be used (missing, readable by others, no keys).
    #[error(transparent)]
    Keys(#[from] VaultError),
    /// Writing the unit failed.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The unit file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn unit_path_text(path: &Path) -> Result<String, AutoUnsealError> {
    let text = path.to_str().ok_or_else(|| AutoUnsealError::BadPath { path: path.to_path_buf() })?;
    let ok = path.is_absolute() && !text.chars().any(|c| matches!(c, '"' | '\\' | '%' | '$' | '\'') || c.is_control());
    if !ok {
        return Err(AutoUnsealError::BadPath { path: path.to_path_buf() });
    }
    Ok(format!("\"{text}\""))
}

/// The unit: after LXD (deb, snap or socket-activated), `gbo vault unseal --tenant T --keys-file F`, tried again
/// every 15 s while Vault's container is still starting.
pub fn render(gbo: &Path, tenant: &TenantName, keys_file: &Path) -> Result<String, AutoUnsealError> {
    let gbo = unit_path_text(gbo)?;
    let keys = unit_path_text(keys_file)?;
    Ok(format!(
        "# Written by `gbo vault auto-unseal --install`: unseals tenant {tenant}'s Vault after LXD starts.\n\
         # The keys are read by gbo from {keys} (mode 0600); none is on this command line.\n\
         [Unit]\n\
         Description=Unseal the Vault of gbo tenant {tenant}\n\
         Wants=network-online.target\n\
         After=network-online.target lxd.service lxd.socket snap.lxd.daemon.service snap.lxd.daemon.unix.socket lxd-containers.service snap.lxd.activate.service\n\
         StartLimitIntervalSec=0\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={gbo} vault unseal --tenant {tenant} --keys-file {keys}\n\
         Restart=on-failure\n\
         RestartSec=15\n\
         UMask=0077\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    ))
}

/// Check the keys file (0600 or 0400, with keys in it) and write the unit into `unit_dir` (mode 0644, replaced
/// atomically). Returns the unit's path. Enabling it (`systemctl daemon-reload && systemctl enable UNIT`) is the
/// caller's step.
pub fn install(unit_dir: &Path, gbo: &Path, tenant: &TenantName, keys_file: &Path) -> Result<PathBuf, AutoUnsealError> {
    vault::read_keys_file(keys_file)?;
    let text = render(gbo, tenant, keys_file)?;
    let path = unit_dir.join(unit_name(tenant));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let mut tmp = tempfile::NamedTempFile::new_in(unit_dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|source| AutoUnsealError::Write { path: path.clone(), source })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_systemd_would_rewrite_are_refused() {
        let t = TenantName::new("acme").expect("tenant");
        for bad in ["relative/gbo", "/a b/%h", "/x\"y", "/a$b", "/a\\b"] {
            assert!(render(Path::new(bad), &t, Path::new("/k")).is_err(), "{bad}");
        }
        let unit = render(Path::new("/usr/local/bin/gbo"), &t, Path::new("/srv/stack/.secrets/vault-init.json"))
            .expect("unit");
        assert!(unit.contains(
            "ExecStart=\"/usr/local/bin/gbo\" vault unseal --tenant acme --keys-file \"/srv/stack/.secrets/vault-init.json\""
        ));
    }
}
