//! Opening (or creating) a restic-format repository on a local path with a password read from a 0600 file.
//!
//! The password never travels as an argument or an environment value: `--password-file` (restic's own flag name)
//! names a regular file owned by the user running gbo, readable by nobody else (mode `0600` or stricter); its
//! first line is the password, as restic reads it. `rustic_core` keeps a cache of the repository's index and
//! snapshot files; gbo points it at its own cache dir ([`CACHE_DIR`]/`<repository id>`), never `~/.cache/rustic`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustic_core::repofile::Chunker;
use rustic_core::{ConfigOptions, Credentials, KeyOptions, OpenStatus, Repository, RepositoryOptions};

use super::BackupError;

/// Where gbo keeps rustic's cache of repositories (index and snapshot files, never data).
pub const CACHE_DIR: &str = "/var/cache/gbo/rustic";

/// Longest password file read.
const PASSWORD_LIMIT: u64 = 4096;

/// How to reach one repository.
#[derive(Clone)]
pub struct RepoAccess {
    /// The repository's directory.
    pub repo: PathBuf,
    /// The password file it was read from (for messages).
    pub password_file: PathBuf,
    password: String,
    /// rustic's cache dir.
    pub cache_dir: PathBuf,
}

impl std::fmt::Debug for RepoAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoAccess")
            .field("repo", &self.repo)
            .field("password_file", &self.password_file)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl RepoAccess {
    /// Read the password from `password_file` (checked: a regular file of ours, no access for group or others,
    /// not empty) for the repository at `repo`.
    pub fn new(repo: &Path, password_file: &Path) -> Result<RepoAccess, BackupError> {
        let bad = |reason: &str| BackupError::PasswordFile { path: password_file.to_path_buf(), reason: reason.into() };
        let meta = std::fs::symlink_metadata(password_file).map_err(|e| bad(&e.to_string()))?;
        if !meta.is_file() {
            return Err(bad("not a regular file (a symlink is not followed)"));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(bad(&format!(
                "its mode is {:04o}: others can read it; `chmod 600 {}`",
                meta.mode() & 0o7777,
                password_file.display()
            )));
        }
        if meta.uid() != super::lock::ids().0 {
            return Err(bad(&format!("it belongs to uid {}, not to the user running gbo", meta.uid())));
        }
        if meta.len() > PASSWORD_LIMIT {
            return Err(bad(&format!("it is larger than {PASSWORD_LIMIT} bytes")));
        }
        let text = std::fs::read(password_file).map_err(|e| bad(&e.to_string()))?;
        let text = String::from_utf8(text).map_err(|_| bad("it is not UTF-8 text"))?;
        let password = text.lines().next().unwrap_or_default().to_string();
        if password.is_empty() {
            return Err(bad("its first line is empty"));
        }
        let repo = if repo.is_absolute() {
            repo.to_path_buf()
        } else {
            std::env::current_dir().map_err(BackupError::io("."))?.join(repo)
        };
        Ok(RepoAccess {
            repo,
            password_file: password_file.to_path_buf(),
            password,
            cache_dir: PathBuf::from(CACHE_DIR),
        })
    }

    /// Use another cache dir (tests, benchmarks).
    pub fn with_cache_dir(mut self, dir: &Path) -> Self {
        self.cache_dir = dir.to_path_buf();
        self
    }

    fn credentials(&self) -> Credentials {
        Credentials::password(&self.password)
    }

    fn unopened(&self) -> Result<Repository<()>, BackupError> {
        let repo_text = self
            .repo
            .to_str()
            .ok_or_else(|| BackupError::BadInput(format!("repository path {} is not UTF-8", self.repo.display())))?;
        let backends = rustic_backend::BackendOptions::default()
            .repository(repo_text)
            .to_backends()
            .map_err(BackupError::repository(format!("opening the repository {}", self.repo.display())))?;
        let options = RepositoryOptions::default().cache_dir(self.cache_dir.clone());
        Repository::new(&options, &backends)
            .map_err(BackupError::repository(format!("opening the repository {}", self.repo.display())))
    }

    /// Whether a restic repository is at the path (it has a `config` file).
    pub fn exists(&self) -> bool {
        self.repo.join("config").is_file()
    }

    /// Open the repository (it must exist); a password that opens no key is [`BackupError::WrongPassword`].
    pub fn open(&self) -> Result<Repository<OpenStatus>, BackupError> {
        if !self.exists() {
            return Err(BackupError::NoRepository { repo: self.repo.clone() });
        }
        self.unopened()?.open(&self.credentials()).map_err(|e| self.open_error(e))
    }

    /// Open the repository, creating it first when the directory is missing or empty. Returns whether it was
    /// created.
    /// `chunker` is the chunking a new repository gets ([`chunker_for`]); an existing one keeps its own.
    pub fn open_or_init(&self, chunker: Chunker) -> Result<(Repository<OpenStatus>, bool), BackupError> {
        if self.exists() {
            return Ok((self.open()?, false));
        }
        let empty = match std::fs::read_dir(&self.repo) {
            Ok(mut entries) => entries.all(|e| e.is_ok_and(|e| e.file_name() == super::lock::FLOCK_FILE)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(BackupError::io(&self.repo)(e)),
        };
        if !empty {
            return Err(BackupError::NotARepository { repo: self.repo.clone() });
        }
        let repo = self
            .unopened()?
            .init(&self.credentials(), &KeyOptions::default(), &ConfigOptions::default().set_chunker(chunker))
            .map_err(BackupError::repository(format!("creating the repository {}", self.repo.display())))?;
        Ok((repo, true))
    }

    fn open_error(&self, e: Box<rustic_core::RusticError>) -> BackupError {
        if e.is_code("C002") {
            BackupError::WrongPassword { repo: self.repo.clone(), password_file: self.password_file.clone() }
        } else {
            BackupError::repository(format!("opening the repository {}", self.repo.display()))(e)
        }
    }
}

/// The chunker of a repository gbo creates, chosen by what its first backup stores. A repository's chunker is
/// recorded in its `config` and is the same for every later backup; restic reads, checks and restores either kind
/// (fields it does not know are ignored), and `restic backup` into it uses its own Rabin chunker, which is valid,
/// only less deduplicated.
///
/// - **Files on the host (`storage = "host"`): fixed-size 1 MiB chunks** (128 PostgreSQL pages). PostgreSQL's files
///   are 8 KiB pages updated in place, and almost every page holds a run of zeros (its free space). Restic's
///   content-defined (Rabin) chunker cuts at the first zero run past its 512 KiB minimum, so a change that moves
///   one cut by a page moves every later cut of the file: measured on a 1 GiB table, a 1% update changed 27 MiB of
///   the files (1 MiB blocks compared) but made both restic 0.14 and rustic store 496 MiB again. Fixed chunks store
///   only the blocks that changed.
/// - **LXD volume tarballs (`storage = "volumes"`): restic's Rabin chunker.** A file that grows shifts everything
///   after it in the tarball, which fixed chunks cannot follow (measured: a small change added 10.5% with fixed
///   chunks; the content-defined cuts find the shifted files again).
pub fn chunker_for(volume_tarballs: bool) -> Chunker {
    if volume_tarballs {
        Chunker::Rabin
    } else {
        Chunker::FixedSize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn password_files_readable_by_others_or_empty_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "secret\nignored\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = RepoAccess::new(dir.path(), &file).expect_err("0644 must be refused");
        assert!(err.to_string().contains("mode is 0644"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let access = RepoAccess::new(dir.path(), &file).expect("0600 is fine");
        assert_eq!(access.password, "secret");
        assert!(!format!("{access:?}").contains("secret"), "the password is never in Debug output");
        std::fs::write(&file, "\n").expect("write");
        assert!(RepoAccess::new(dir.path(), &file).expect_err("empty").to_string().contains("empty"));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert!(RepoAccess::new(dir.path(), &link).expect_err("link").to_string().contains("symlink"));
    }
}
