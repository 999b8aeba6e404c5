//! The tenant's secrets: generated once with the operating system's CSPRNG, stored 0600 in
//! `<stack-dir>/.secrets/` (mode 0700, never mounted into a container), reused on every later run.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use gbo_components::{SecretSpec, Secrets};
use rand::Rng;

use super::error::InstallError;

/// The directory of the secrets under a stack dir.
pub fn secrets_dir(stack_dir: &Path) -> PathBuf {
    stack_dir.join(".secrets")
}

/// Generate a value for `spec` from the OS CSPRNG (`OsRng`), uniformly over its charset.
pub fn generate(spec: &SecretSpec) -> String {
    let alphabet: Vec<char> = spec.charset.alphabet().chars().collect();
    let mut rng = rand::rngs::OsRng;
    (0..spec.length).map(|_| alphabet[rng.gen_range(0..alphabet.len())]).collect()
}

/// Read the secrets in `specs` that exist, without creating anything (for plans and status).
pub fn read_existing(stack_dir: &Path, specs: &[SecretSpec]) -> Result<Secrets, InstallError> {
    let dir = secrets_dir(stack_dir);
    let mut secrets = Secrets::new();
    for spec in specs {
        let path = dir.join(spec.name);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let value = text.trim_end_matches('\n').to_string();
                spec.check(&value)?;
                secrets.insert(spec.name, value);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(InstallError::io(format!("reading secret file {}", path.display()))(e)),
        }
    }
    Ok(secrets)
}

/// Placeholder values for secrets that do not exist yet, so a dry run can render specs. Never written anywhere.
pub fn with_placeholders(mut secrets: Secrets, specs: &[SecretSpec]) -> Secrets {
    for spec in specs {
        if secrets.get(spec.name).is_none() {
            let c = spec.charset.alphabet().chars().next().unwrap_or('0');
            secrets.insert(spec.name, std::iter::repeat_n(c, spec.length).collect::<String>());
        }
    }
    secrets
}

/// Load every secret in `specs`, generating (and storing, 0600) the missing ones. Existing values are never
/// rotated. Also tightens the directory to 0700 and the files to 0600 if someone loosened them.
pub fn load_or_generate(stack_dir: &Path, specs: &[SecretSpec]) -> Result<Secrets, InstallError> {
    let dir = secrets_dir(stack_dir);
    std::fs::create_dir_all(&dir).map_err(InstallError::io(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(InstallError::io(format!("chmod 0700 {}", dir.display())))?;
    let mut secrets = read_existing(stack_dir, specs)?;
    for spec in specs {
        let path = dir.join(spec.name);
        if secrets.get(spec.name).is_some() {
            let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0o600);
            if mode != 0o600 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(InstallError::io(format!("chmod 0600 {}", path.display())))?;
            }
            continue;
        }
        let value = generate(spec);
        // Written to a temporary name then renamed: a run killed mid-write never leaves a truncated secret.
        let tmp = dir.join(format!(".{}.tmp", spec.name));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(InstallError::io(format!("creating {}", tmp.display())))?;
        file.write_all(value.as_bytes()).map_err(InstallError::io(format!("writing {}", tmp.display())))?;
        file.sync_all().map_err(InstallError::io(format!("syncing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(InstallError::io(format!("renaming to {}", path.display())))?;
        secrets.insert(spec.name, value);
    }
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_fit_their_spec_and_differ() {
        for spec in gbo_components::secrets::ALL_SECRETS {
            let a = generate(spec);
            let b = generate(spec);
            spec.check(&a).expect("valid");
            assert_ne!(a, b, "{}", spec.name);
        }
    }

    #[test]
    fn secrets_are_stored_0600_in_a_0700_dir_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let specs = [gbo_components::secrets::TABLES_PASSWORD];
        let first = load_or_generate(dir.path(), &specs).expect("generate");
        let second = load_or_generate(dir.path(), &specs).expect("reuse");
        assert_eq!(first.get("tables-password"), second.get("tables-password"));
        let dmode = std::fs::metadata(secrets_dir(dir.path())).expect("dir").permissions().mode() & 0o777;
        let fmode =
            std::fs::metadata(secrets_dir(dir.path()).join("tables-password")).expect("file").permissions().mode()
                & 0o777;
        assert_eq!((dmode, fmode), (0o700, 0o600));
        assert_eq!(format!("{first:?}"), "{\"tables-password\": \"<redacted>\"}");
    }
}
