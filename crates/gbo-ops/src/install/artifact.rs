//! Pinned upstream artifacts: downloaded once into a host cache, verified the way their vendor publishes
//! (`verify`: checksum file, signature, SHA-256 pin), unpacked, and pushed into the container (containers need no
//! network). A verified download is recorded beside its cache file (`<file>.verified`: its SHA-256 and what was
//! checked), and a cache file is used again only while it still has that SHA-256.
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
    /// Whether artifacts gbo has no means to verify are accepted (`--allow-unverified`).
    pub allow_unverified: bool,
    /// Keys trusted beside the vendors' (the tenant file's `[trust]`).
    pub trust: Vec<gbo_components::TrustEntry>,
}

impl Default for ArtifactPolicy {
    fn default() -> Self {
        Self {
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            download: false,
            allow_unverified: false,
            trust: Vec::new(),
        }
    }
}

/// The record of a verified cache file.
fn verified_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".verified");
    path.with_file_name(name)
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
    if !policy.allow_unverified {
        if let Some(gap) = super::verify::verification_gap(policy, artifact) {
            return Some(format!(
                "{gap}: refused (pin a sha256 under [versions] in gbo.toml, add the signer's key under [trust], or pass --allow-unverified)"
            ));
        }
    }
    let cached = cache_path(policy, artifact).is_file();
    if artifact.version == gbo_components::artifacts::UNPINNED && !cached {
        return Some(format!(
            "{} is not a pinned release: gbo never downloads its moving \"latest\" URL {} (pin a build under [versions.{}] with url and sha256)",
            artifact.name, artifact.url, artifact.role
        ));
    }
    if cached || is_loopback_url(&artifact.url) || policy.download {
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

fn download_error(artifact: &Artifact, reason: impl Into<String>) -> InstallError {
    InstallError::Download { name: artifact.name.to_string(), version: artifact.version.clone(), reason: reason.into() }
}

fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
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

/// Get the verified download into the cache (downloading and verifying it when missing) and return its path. A
/// download that fails verification is deleted and the error says what failed.
pub async fn fetch(policy: &ArtifactPolicy, artifact: &Artifact) -> Result<PathBuf, InstallError> {
    fetch_verified(policy, artifact).await.map(|(path, _)| path)
}

/// [`fetch`], also returning what was not verified (accepted with `--allow-unverified`), if anything.
pub async fn fetch_verified(
    policy: &ArtifactPolicy,
    artifact: &Artifact,
) -> Result<(PathBuf, Option<String>), InstallError> {
    if let Some(reason) = unavailable_reason(policy, artifact) {
        return Err(artifact_error(artifact, reason));
    }
    let path = cache_path(policy, artifact);
    if path.is_file() {
        let actual = file_sha256(&path).await?;
        let record = std::fs::read_to_string(verified_path(&path)).ok();
        let recorded = record.as_deref().and_then(|r| r.lines().next()).map(str::to_owned);
        if recorded.as_deref() == Some(actual.as_str()) && artifact.sha256.as_ref().is_none_or(|pin| *pin == actual) {
            return Ok((path, None));
        }
        if recorded.is_none() && policy.allow_unverified && artifact.sha256.as_ref().is_none_or(|pin| *pin == actual) {
            // A file the operator put into the (root-only) cache by hand, accepted under --allow-unverified.
            let note = format!("{}: taken from the artifact cache unverified", path.display());
            return Ok((path, Some(note)));
        }
        // Changed since it was verified, or never verified: fetch again.
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(verified_path(&path));
    }
    if artifact.version == gbo_components::artifacts::UNPINNED {
        return Err(artifact_error(artifact, "not a pinned release: gbo never downloads a moving \"latest\" URL"));
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
        .map_err(|e| download_error(artifact, format!("GET {}: {}", artifact.url, with_sources(&e))))?;
    if !response.status().is_success() {
        return Err(download_error(artifact, format!("GET {} answered {}", artifact.url, response.status())));
    }
    let expected_len = response.content_length();
    let mut file = tokio::fs::File::from_std(cache.create_new(std::ffi::OsStr::new(&partial_name), 0o600)?);
    let outcome = async {
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| artifact_error(artifact, format!("downloading {}: {e}", artifact.url)))?;
            hasher.update(&chunk);
            written += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(InstallError::io(format!("writing {}", partial.display())))?;
        }
        file.flush().await.map_err(InstallError::io(format!("writing {}", partial.display())))?;
        if let Some(len) = expected_len.filter(|len| *len != written) {
            return Err(artifact_error(
                artifact,
                format!("the download of {} is truncated: {written} of {len} bytes", artifact.url),
            ));
        }
        let actual = hex::encode(hasher.finalize());
        super::verify::verify_download(policy, artifact, &partial, &actual)
            .await
            .map_err(|why| artifact_error(artifact, format!("{why}; the download was discarded")))
    }
    .await;
    drop(file);
    let verified = match outcome {
        Ok(verified) => verified,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let record = format!("{}\n{}\n", verified.sha256, verified.checks.join("\n"));
    let record_name = format!("{partial_name}.verified");
    {
        use std::io::Write;
        let mut out = cache.create_new(std::ffi::OsStr::new(&record_name), 0o600)?;
        out.write_all(record.as_bytes()).map_err(InstallError::io(format!("writing {record_name}")))?;
    }
    if verified.unverified.is_none() {
        std::fs::rename(cache.path().join(&record_name), verified_path(&path))
            .map_err(InstallError::io(format!("renaming to {}", verified_path(&path).display())))?;
    } else {
        let _ = std::fs::remove_file(cache.path().join(&record_name));
    }
    std::fs::rename(&partial, &path).map_err(InstallError::io(format!("renaming to {}", path.display())))?;
    Ok((path, verified.unverified))
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
