//! `--replace` saves the target before it is dropped: a data-inclusive gbo snapshot of a tables container, or a
//! `pg_dump` archive of a host database (0600, in a 0700 directory, never over another backup).

use std::ffi::OsStr;
use std::path::Path;

use lxd_client::Client;

use super::endpoint::Endpoint;
use super::error::MigrateError;
use crate::inventory::ManagedInstance;

/// Save `db` on `target`; returns what was saved and where. `tables_container` and `lxd` serve a container's
/// snapshot (looked up when not given); a host database's archive goes to `backup_dir`.
pub(super) async fn backup_target(
    target: &Endpoint,
    db: &str,
    backup_dir: &Path,
    tables_container: Option<&ManagedInstance>,
    lxd: Option<&Client>,
) -> Result<String, MigrateError> {
    match target {
        Endpoint::Container(c) => {
            // A data-inclusive gbo snapshot of the tables container.
            let lxd = lxd.cloned().unwrap_or_else(|| c.lxd.clone());
            let managed = match tables_container {
                Some(m) => m.clone(),
                None => crate::snapshot::container(&lxd, c.instance.as_str()).await?,
            };
            let name = crate::snapshot::snapshot_name(&format!(
                "before-migrate-{}",
                crate::snapshot::default_name(time::OffsetDateTime::now_utc()).trim_start_matches("gbo-")
            ))?;
            crate::snapshot::create(&lxd, &managed, &name, &crate::snapshot::CreateOptions::default()).await?;
            Ok(format!("snapshot {}/{}", c.instance, name))
        }
        Endpoint::Host(h) => {
            // A full copy of the database: a 0700 directory and a 0600 file, created new (never over another backup).
            use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(backup_dir)?;
            let stamp = crate::snapshot::default_name(time::OffsetDateTime::now_utc());
            let stamp = stamp.trim_start_matches("gbo-");
            let mut attempt = 0u32;
            let file = loop {
                let name = if attempt == 0 {
                    format!("{db}-before-migrate-{stamp}.dump")
                } else {
                    format!("{db}-before-migrate-{stamp}-{attempt}.dump")
                };
                let path = backup_dir.join(name);
                match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                    Ok(_) => break path,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => attempt += 1,
                    Err(e) => return Err(e.into()),
                }
            };
            // The directory may have existed with looser permissions: the file itself stays private.
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            let args = [OsStr::new("--format=custom"), OsStr::new("--file"), file.as_os_str()];
            if let Err(e) = h.pg_dump(db, &args).await {
                let _ = std::fs::remove_file(&file);
                return Err(e);
            }
            Ok(format!("pg_dump archive {}", file.display()))
        }
    }
}
