//! The local artifact, and the way it gets in place: streamed into a root-only staging directory made for this deploy
//! inside the target's directory, synced, checked by SHA-256 on the remote, given its owner, mode and time there,
//! and renamed over the target in one root shell that first keeps the current binary as a release (a hard link).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::access::{run_root, Access};
use super::event::DeployEvent;
use crate::error::{Error, Result};
use crate::event::{millis, Observer};
use crate::names::{RemotePath, UnixUser};
use crate::remote_dir;
use crate::ssh::Remote;

/// The local binary, open and checked: a non-empty regular file.
pub(super) struct Artifact {
    file: File,
    path: PathBuf,
    /// Its size.
    pub(super) bytes: u64,
    /// Its modification time (Unix seconds).
    pub(super) mtime: u64,
}

impl Artifact {
    /// Open the binary; refuses an unreadable or empty file, or anything but a regular file.
    pub(super) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|error| Error::io("opening the binary", path, error))?;
        let metadata = file.metadata().map_err(|error| Error::io("reading metadata of", path, error))?;
        if !metadata.is_file() || metadata.len() == 0 {
            return Err(Error::invalid("binary", path.display().to_string(), "a non-empty regular file"));
        }
        let mtime = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Artifact { file, path: path.to_path_buf(), bytes: metadata.len(), mtime })
    }

    /// SHA-256 (hex) of the whole file.
    pub(super) fn sha256(mut self) -> Result<String> {
        let mut hasher = Sha256::new();
        let mut buffer = vec![0_u8; 1024 * 1024];
        loop {
            let count = self.file.read(&mut buffer).map_err(|error| Error::io("reading", &self.path, error))?;
            if count == 0 {
                break;
            }
            hasher.update(&buffer[..count]);
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// Read the local artifact's size, hash and modification time; refuses unreadable or empty files.
pub fn local_artifact(path: &Path) -> Result<(u64, String, u64)> {
    let artifact = Artifact::open(path)?;
    let (bytes, mtime) = (artifact.bytes, artifact.mtime);
    Ok((bytes, artifact.sha256()?, mtime))
}

/// An upload that landed in its staging directory.
pub(super) struct Staged {
    /// The staging directory's name (relative to the target's directory).
    stage: String,
    /// The upload's path on the remote.
    temp_path: String,
    /// SHA-256 of what was sent, computed while sending.
    pub(super) sha256: String,
    /// Bytes sent.
    pub(super) bytes: u64,
    /// The artifact's modification time, which the upload is given.
    mtime: u64,
    /// How long the upload took.
    pub(super) upload_ms: u64,
}

/// Make this deploy's staging directory and stream the artifact into it (hashing it on the way).
pub(super) fn upload(
    remote: &Remote,
    access: &Access,
    dest: &RemotePath,
    mut artifact: Artifact,
    observer: &mut dyn Observer<DeployEvent>,
) -> Result<Staged> {
    let stage = remote_dir::stage_name(dest);
    run_root(remote, access, "make the staging directory", &remote_dir::prepare_stage(dest, &stage))?;
    let temp_path = remote_dir::upload_path(dest, &stage);
    let total = artifact.bytes;
    observer.on_event(&DeployEvent::UploadStarted { temp_path: temp_path.clone(), total });
    let started = Instant::now();
    let mut hashing = HashingReader { inner: &mut artifact.file, hasher: Sha256::new() };
    let sent = remote.exec_with_input(&access.root(&remote_dir::upload(dest, &stage)), &mut hashing, &mut |sent| {
        observer.on_event(&DeployEvent::UploadProgress { sent, total })
    });
    let sha256 = hex::encode(hashing.hasher.finalize());
    let staged =
        Staged { stage, temp_path, sha256, bytes: total, mtime: artifact.mtime, upload_ms: millis(started.elapsed()) };
    match sent {
        Ok(output) if output.status == 0 => {}
        Ok(output) => {
            staged.discard(remote, access, dest);
            return Err(remote.failed(format!("upload to {}", staged.temp_path), &output));
        }
        Err(error) => {
            staged.discard(remote, access, dest);
            return Err(error);
        }
    }
    observer.on_event(&DeployEvent::Uploaded { temp_path: staged.temp_path.clone() });
    Ok(staged)
}

/// What the swap script reported.
enum Swap {
    /// The upload's SHA-256 on the remote (nothing changed, upload removed).
    Mismatch(String),
    /// Swapped in; `kept` when the current binary was kept as the release.
    Swapped { kept: bool },
}

impl Swap {
    fn parse(output: &str) -> Self {
        match output.lines().find_map(|line| line.strip_prefix("mismatch=")) {
            Some(sha) => Swap::Mismatch(sha.to_string()),
            None => Swap::Swapped { kept: output.lines().any(|line| line.starts_with("kept=")) },
        }
    }
}

impl Staged {
    /// One root shell: verify what landed, give it owner, mode and mtime in the staging directory, keep the current
    /// binary as release `number` (`previous_release`, a hard link; none when there is no current binary), and rename
    /// the upload over the target. Returns the release the current binary was kept as: it can vanish between the
    /// look and the swap, and then nothing was kept.
    pub(super) fn swap_in(
        &self,
        remote: &Remote,
        access: &Access,
        dest: &RemotePath,
        owner: &UnixUser,
        (number, previous_release): (u64, Option<String>),
        observer: &mut dyn Observer<DeployEvent>,
    ) -> Result<Option<String>> {
        let release_file = previous_release.as_ref().map(|_| remote_dir::release_name(dest, number));
        let script =
            remote_dir::swap(dest, &self.stage, &self.sha256, owner.as_str(), self.mtime, release_file.as_deref());
        let output = match run_root(remote, access, "verify, chown/chmod and atomic swap", &script) {
            Ok(output) => output,
            Err(error) => {
                self.discard(remote, access, dest);
                return Err(error);
            }
        };
        let previous_release = match Swap::parse(&output) {
            Swap::Mismatch(remote_sha) => {
                return Err(Error::ChecksumMismatch {
                    host: remote.label().to_string(),
                    temp_path: self.temp_path.clone(),
                    local: self.sha256.clone(),
                    remote: remote_sha,
                })
            }
            Swap::Swapped { kept } => previous_release.filter(|_| kept),
        };
        observer.on_event(&DeployEvent::ChecksumVerified { sha256: self.sha256.clone() });
        observer.on_event(&DeployEvent::Swapped { previous_release: previous_release.clone() });
        Ok(previous_release)
    }

    /// Remove the staging directory and its upload (after a failure); never fails.
    fn discard(&self, remote: &Remote, access: &Access, dest: &RemotePath) {
        let _ = remote.exec(&access.root(&remote_dir::discard_stage(dest, &self.stage)));
    }
}

struct HashingReader<'a> {
    inner: &'a mut File,
    hasher: Sha256,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let count = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..count]);
        Ok(count)
    }
}
