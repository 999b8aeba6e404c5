//! Pinned upstream artifacts: downloaded once into a host cache, verified against their SHA-256, unpacked, and
//! pushed into the container (containers need no network).
//!
//! gbo never reaches the internet on its own: an artifact is obtained from the cache, from a loopback URL (tests
//! and local mirrors), or from its upstream URL only when the user passes `--download`.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use gbo_components::{Artifact, ArtifactKind};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::error::InstallError;
use crate::runner::HostCommand;

/// The default host cache of downloaded artifacts.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/gbo/artifacts";

/// How artifacts may be obtained.
#[derive(Debug, Clone)]
pub struct ArtifactPolicy {
    /// The cache directory.
    pub cache_dir: PathBuf,
    /// Whether non-loopback URLs may be downloaded (`--download`).
    pub download: bool,
    /// Whether artifacts without a SHA-256 pin are accepted (`--allow-unverified`).
    pub allow_unverified: bool,
}

impl Default for ArtifactPolicy {
    fn default() -> Self {
        Self { cache_dir: PathBuf::from(DEFAULT_CACHE_DIR), download: false, allow_unverified: false }
    }
}

/// The cache file of an artifact: name, version and a hash of the URL and pin, so a changed pin never reuses a
/// stale download.
pub fn cache_path(policy: &ArtifactPolicy, artifact: &Artifact) -> PathBuf {
    let key = hex::encode(Sha256::digest(
        format!("{}\n{}", artifact.url, artifact.sha256.as_deref().unwrap_or("")).as_bytes(),
    ));
    policy.cache_dir.join(format!("{}-{}-{}", artifact.name, sanitize(&artifact.version), &key[..16]))
}

fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' }).collect()
}

/// Whether `url` points at a loopback host.
pub fn is_loopback_url(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else { return false };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = if let Some(stripped) = host.strip_prefix('[') {
        stripped.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// Why an artifact cannot be obtained here, or `None` when it can (without touching the network).
pub fn unavailable_reason(policy: &ArtifactPolicy, artifact: &Artifact) -> Option<String> {
    if artifact.sha256.is_none() && !policy.allow_unverified {
        return Some(format!(
            "{} {} has no SHA-256 pin from its vendor's release material: refused (pin one under [versions] in gbo.toml, or pass --allow-unverified)",
            artifact.name, artifact.version
        ));
    }
    if cache_path(policy, artifact).is_file() || is_loopback_url(&artifact.url) || policy.download {
        return None;
    }
    Some(format!(
        "{} {} is not in the artifact cache ({}) and gbo downloads from {} only with --download",
        artifact.name,
        artifact.version,
        policy.cache_dir.display(),
        artifact.url
    ))
}

fn artifact_error(artifact: &Artifact, reason: impl Into<String>) -> InstallError {
    InstallError::Artifact { name: artifact.name.to_string(), version: artifact.version.clone(), reason: reason.into() }
}

/// Hex SHA-256 of a file.
pub async fn file_sha256(path: &Path) -> Result<String, InstallError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path).map_err(InstallError::io(format!("opening {}", path.display())))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(InstallError::io(format!("reading {}", path.display())))?;
        Ok(hex::encode(hasher.finalize()))
    })
    .await
    .map_err(|e| InstallError::Io { context: "hashing".into(), source: std::io::Error::other(e.to_string()) })?
}

/// Get the verified download into the cache (downloading it when missing) and return its path. A checksum
/// mismatch deletes the download and fails naming both checksums.
pub async fn fetch(policy: &ArtifactPolicy, artifact: &Artifact) -> Result<PathBuf, InstallError> {
    if let Some(reason) = unavailable_reason(policy, artifact) {
        return Err(artifact_error(artifact, reason));
    }
    let path = cache_path(policy, artifact);
    if path.is_file() {
        if let Some(expected) = &artifact.sha256 {
            let actual = file_sha256(&path).await?;
            if &actual == expected {
                return Ok(path);
            }
            // A corrupted cache entry: fetch again.
            let _ = std::fs::remove_file(&path);
        } else {
            return Ok(path);
        }
    }
    // The download goes to a new file of a random name (O_EXCL|O_NOFOLLOW) in the cache dir (0700 when gbo
    // creates it), renamed into place once verified: nothing planted at a predictable name is ever written through.
    let cache = crate::hostfs::HostDir::create_root(&policy.cache_dir, 0o700)?;
    let partial_name = format!(
        ".{}.partial-{:016x}",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        rand::random::<u64>()
    );
    let partial = cache.path().join(&partial_name);
    let response = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(15))
        .build()
        .map_err(|e| artifact_error(artifact, format!("HTTP client: {e}")))?
        .get(&artifact.url)
        .send()
        .await
        .map_err(|e| artifact_error(artifact, format!("GET {}: {e}", artifact.url)))?;
    if !response.status().is_success() {
        return Err(artifact_error(artifact, format!("GET {} answered {}", artifact.url, response.status())));
    }
    let mut file = tokio::fs::File::from_std(cache.create_new(std::ffi::OsStr::new(&partial_name), 0o600)?);
    let mut hasher = Sha256::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| artifact_error(artifact, format!("downloading {}: {e}", artifact.url)))?;
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(InstallError::io(format!("writing {}", partial.display())))?;
    }
    file.flush().await.map_err(InstallError::io(format!("writing {}", partial.display())))?;
    drop(file);
    let actual = hex::encode(hasher.finalize());
    if let Some(expected) = &artifact.sha256 {
        if &actual != expected {
            let _ = std::fs::remove_file(&partial);
            return Err(artifact_error(
                artifact,
                format!(
                    "checksum mismatch for {}: expected sha256 {expected}, got {actual}; the download was discarded",
                    artifact.url
                ),
            ));
        }
    }
    std::fs::rename(&partial, &path).map_err(InstallError::io(format!("renaming to {}", path.display())))?;
    Ok(path)
}

/// Extract the installable file from a verified download into `out_dir`; returns the file (or directory) to push.
pub async fn unpack(artifact: &Artifact, download: &Path, out_dir: &Path) -> Result<PathBuf, InstallError> {
    match &artifact.unpack {
        ArtifactKind::SingleBinary => Ok(download.to_path_buf()),
        ArtifactKind::TarGzMember { member } => {
            HostCommand::new("tar")
                .arg("-xzf")
                .arg(download)
                .arg("-C")
                .arg(out_dir)
                .arg(*member)
                .run_async()
                .await
                .map_err(|e| artifact_error(artifact, e.to_string()))?;
            Ok(out_dir.join(member))
        }
        ArtifactKind::ZipMember { member } => {
            HostCommand::new("unzip")
                .arg("-o")
                .arg("-q")
                .arg(download)
                .arg(*member)
                .arg("-d")
                .arg(out_dir)
                .run_async()
                .await
                .map_err(|e| artifact_error(artifact, e.to_string()))?;
            Ok(out_dir.join(member))
        }
        ArtifactKind::ZipDirectory { prefix } => {
            HostCommand::new("unzip")
                .arg("-o")
                .arg("-q")
                .arg(download)
                .arg(format!("{prefix}*"))
                .arg("-d")
                .arg(out_dir)
                .run_async()
                .await
                .map_err(|e| artifact_error(artifact, e.to_string()))?;
            Ok(out_dir.join(prefix.trim_end_matches('/')))
        }
        other => Err(artifact_error(artifact, format!("unsupported artifact kind {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_are_recognised() {
        assert!(is_loopback_url("http://127.0.0.1:8000/x"));
        assert!(is_loopback_url("http://localhost/x"));
        assert!(is_loopback_url("http://[::1]:9/x"));
        assert!(!is_loopback_url("https://dl.min.io/server/minio"));
        assert!(!is_loopback_url("http://10.0.0.1/x"));
    }
}
