//! The tenant's secrets: generated once with the operating system's CSPRNG, stored 0600 in
//! `<stack-dir>/.secrets/` (mode 0700, never mounted into a container), reused on every later run.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};

use gbo_components::{SecretSpec, Secrets};
use rand::Rng;

use super::error::InstallError;
use crate::hostfs::HostDir;

/// The name of the secrets directory in a stack dir.
const SECRETS: &str = ".secrets";

/// The directory of the secrets under a stack dir.
pub fn secrets_dir(stack_dir: &Path) -> PathBuf {
    stack_dir.join(SECRETS)
}

/// Generate a value for `spec` from the OS CSPRNG (`OsRng`), uniformly over its charset.
pub fn generate(spec: &SecretSpec) -> String {
    let alphabet: Vec<char> = spec.charset.alphabet().chars().collect();
    let mut rng = rand::rngs::OsRng;
    (0..spec.length).map(|_| alphabet[rng.gen_range(0..alphabet.len())]).collect()
}

/// The most gbo reads of one secret file.
const SECRET_LIMIT: u64 = 64 * 1024;

/// Read the secrets in `specs` that exist, without creating anything (for plans and status).
pub fn read_existing(stack_dir: &Path, specs: &[SecretSpec]) -> Result<Secrets, InstallError> {
    let mut secrets = Secrets::new();
    let Some(root) = HostDir::open_root_if_exists(stack_dir)? else { return Ok(secrets) };
    let Some(dir) = root.open_dir(Path::new(SECRETS))? else { return Ok(secrets) };
    read_into(&dir, specs, &mut secrets)?;
    Ok(secrets)
}

fn read_into(dir: &HostDir, specs: &[SecretSpec], secrets: &mut Secrets) -> Result<(), InstallError> {
    for spec in specs {
        if let Some(bytes) = dir.read_file(Path::new(spec.name), SECRET_LIMIT)? {
            let text = String::from_utf8(bytes).map_err(|_| {
                InstallError::BadInput(format!("secret file {} is not UTF-8", dir.path().join(spec.name).display()))
            })?;
            let value = text.trim_end_matches('\n').to_string();
            spec.check(&value)?;
            secrets.insert(spec.name, value);
        }
    }
    Ok(())
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
/// rotated. Also tightens the directory to 0700 and the files to 0600 if someone loosened them. Every file is
/// reached without following a link (`hostfs`), and a new one is written to a random temporary name and renamed,
/// so a run killed mid-write never leaves a truncated secret.
pub fn load_or_generate(stack_dir: &Path, specs: &[SecretSpec]) -> Result<Secrets, InstallError> {
    let root = HostDir::create_root(stack_dir, 0o755)?;
    let dir = root.ensure_dir(Path::new(SECRETS), 0o700, None)?;
    dir.chmod(0o700)?;
    let mut secrets = Secrets::new();
    read_into(&dir, specs, &mut secrets)?;
    for spec in specs {
        if secrets.get(spec.name).is_some() {
            if dir.stat(Path::new(spec.name))?.is_some_and(|e| e.mode != 0o600) {
                dir.chmod_file(Path::new(spec.name), 0o600)?;
            }
            continue;
        }
        let value = generate(spec);
        dir.replace_file(OsStr::new(spec.name), |file| file.write_all(value.as_bytes()), 0o600, None)?;
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
        use std::os::unix::fs::PermissionsExt;
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
