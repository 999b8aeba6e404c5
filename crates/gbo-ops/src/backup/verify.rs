//! `gbo backup verify`: restic's `check --read-data` (every pack read back and its blobs' hashes checked) through
//! `rustic_core`. A damaged pack is named by its path in the repository.

use std::path::PathBuf;
use std::time::Duration;

use rustic_core::{CheckOptions, ReadSubsetOption};

use super::lock::{self, Mode};
use super::{join_error, BackupError, RepoAccess};

/// What verify found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// Repository.
    pub repo: PathBuf,
    /// Whether the data was read back.
    pub read_data: bool,
    /// Errors found (empty: the repository is sound).
    pub errors: Vec<String>,
    /// Warnings.
    pub warnings: Vec<String>,
    /// The pack files named by an error, as paths in the repository (`data/ab/abcd...`).
    pub damaged_packs: Vec<PathBuf>,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Check the repository; `read_data` reads every pack back.
pub async fn verify(access: &RepoAccess, read_data: bool) -> Result<VerifyReport, BackupError> {
    let _lock = lock::flock(&access.repo, Mode::Read, Duration::from_secs(60)).await?;
    let opened = access.clone();
    let results = tokio::task::spawn_blocking(move || {
        let repo = opened.open()?;
        let mut options = CheckOptions::default();
        if read_data {
            options = options.read_data(true).read_data_subset(ReadSubsetOption::All);
        }
        repo.check(options).map_err(BackupError::repository("checking the repository"))
    })
    .await
    .map_err(join_error)??;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for (level, finding) in &results.0 {
        let text = finding.to_string();
        if format!("{level:?}") == "Error" {
            errors.push(text);
        } else {
            warnings.push(text);
        }
    }
    // rustic names a pack by its id, often shortened (`error checking pack 4b1647d7 : ...`): each hex word of 8 or
    // more digits that starts exactly one pack file's name names that pack.
    let mut damaged = Vec::new();
    for error in &errors {
        for word in error.split(|c: char| !c.is_ascii_hexdigit()) {
            if word.len() < 8 || word.len() > 64 {
                continue;
            }
            let dir = access.repo.join("data").join(&word[..2]);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let found: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(word))
                .collect();
            if let [name] = found.as_slice() {
                let path = PathBuf::from("data").join(&word[..2]).join(name);
                if !damaged.contains(&path) {
                    damaged.push(path);
                }
            }
        }
    }
    Ok(VerifyReport { repo: access.repo.clone(), read_data, errors, warnings, damaged_packs: damaged })
}
