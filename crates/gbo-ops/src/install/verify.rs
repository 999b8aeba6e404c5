//! Verifying a download the way its vendor publishes: the vendor's checksum file beside it and, where the vendor
//! signs, the signature checked with a key gbo trusts (the vendor's key shipped in `gbo_components::trust`, or a
//! `[trust]` key of the tenant file, e.g. a private mirror's).
//!
//! Signatures: minisign with `minisign-verify` (MinIO signs each binary), OpenPGP with `pgp` (rpgp: HashiCorp
//! signs its `SHA256SUMS`, Forgejo each binary). A signature that is published must verify with a trusted key:
//! missing, bad, or made by a key gbo does not trust is a refusal, whatever `--allow-unverified` says. That flag
//! only covers what gbo has no means to verify (no signature published, or the vendor's key not shipped, and no
//! SHA-256 pin), and the install says what was not verified.

use std::path::Path;

use gbo_components::{Artifact, SignatureScheme, Signed, TrustEntry};
use pgp::types::PublicKeyTrait;
use pgp::Deserializable;

use super::artifact::ArtifactPolicy;

/// The largest checksum file or signature gbo reads.
const MAX_SIDE_FILE: usize = 1 << 20;

/// A key a signature may be checked with.
#[derive(Debug, Clone)]
pub struct CandidateKey {
    /// Where it comes from (`vendor key minio`, `[trust.mirror]`).
    pub origin: String,
    /// The format.
    pub scheme: SignatureScheme,
    /// The key text.
    pub key: String,
}

/// The keys gbo would check `artifact`'s signature with: the vendor's shipped key and the `[trust]` keys of the
/// same scheme that apply to its role. Empty when the vendor signs nothing.
pub fn candidate_keys(policy: &ArtifactPolicy, artifact: &Artifact) -> Vec<CandidateKey> {
    let Some(rule) = artifact.verification.signature else { return Vec::new() };
    let mut keys = Vec::new();
    if let Some(vendor) = rule.vendor_key.and_then(gbo_components::trust::vendor_key) {
        keys.push(CandidateKey {
            origin: format!("vendor key {} ({})", vendor.id, vendor.fingerprint),
            scheme: vendor.scheme,
            key: vendor.key.to_owned(),
        });
    }
    keys.extend(policy.trust.iter().filter(|t| t.scheme == rule.scheme && t.applies_to(artifact.role)).map(
        |t: &TrustEntry| CandidateKey { origin: format!("[trust.{}]", t.name), scheme: t.scheme, key: t.key.clone() },
    ));
    keys
}

/// Why `artifact` cannot be verified by gbo (no signature with a trusted key, no SHA-256 pin), or `None` when it
/// can.
pub fn verification_gap(policy: &ArtifactPolicy, artifact: &Artifact) -> Option<String> {
    if artifact.sha256.is_some() || !candidate_keys(policy, artifact).is_empty() {
        return None;
    }
    if artifact.version == gbo_components::artifacts::UNPINNED {
        return Some(format!("{} is not a pinned release (its only URL is a moving \"latest\")", artifact.name));
    }
    Some(match artifact.verification.signature {
        Some(rule) => format!(
            "{} {}: the vendor's {} key is not shipped with gbo ({}) and no [trust] key applies; no sha256 pin",
            artifact.name,
            artifact.version,
            rule.scheme.as_str(),
            rule.vendor_key.and_then(gbo_components::trust::known_fingerprint).unwrap_or("fingerprint unknown"),
        ),
        None if artifact.verification.sums.is_some() => format!(
            "{} {}: the vendor publishes an unsigned checksum file only (served beside the download, so it proves integrity, not origin); no sha256 pin",
            artifact.name, artifact.version
        ),
        None => format!("{} {}: the vendor publishes no checksum file or signature; no sha256 pin", artifact.name, artifact.version),
    })
}

/// What a verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The download's SHA-256.
    pub sha256: String,
    /// What was checked, one line each.
    pub checks: Vec<String>,
    /// What could not be verified (accepted with `--allow-unverified`).
    pub unverified: Option<String>,
}

async fn get_side_file(url: &str) -> Result<Option<Vec<u8>>, String> {
    let response = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(15))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if response.status() == reqwest::StatusCode::NOT_FOUND || response.status() == reqwest::StatusCode::GONE {
        return Ok(None);
    }
    if !response.status().is_success() {
        return Err(format!("GET {url} answered {}", response.status()));
    }
    if response.content_length().is_some_and(|n| n > MAX_SIDE_FILE as u64) {
        return Err(format!("{url} is larger than {MAX_SIDE_FILE} bytes: not a checksum file or signature"));
    }
    let body = response.bytes().await.map_err(|e| format!("reading {url}: {e}"))?;
    if body.len() > MAX_SIDE_FILE {
        return Err(format!("{url} is larger than {MAX_SIDE_FILE} bytes: not a checksum file or signature"));
    }
    Ok(Some(body.to_vec()))
}

/// The SHA-256 a `sha256sum`-style file gives for `file_name` (`HASH  NAME`, `HASH *NAME`, or a file holding one
/// bare hash).
pub fn sums_entry(text: &str, file_name: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let is_hash = |h: &str| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit());
    for line in &lines {
        let mut parts = line.split_whitespace();
        let (Some(hash), name) = (parts.next(), parts.next()) else { continue };
        let name = name.map(|n| n.trim_start_matches('*').trim_start_matches("./"));
        if is_hash(hash) && (name == Some(file_name) || (name.is_none() && lines.len() == 1)) {
            return Some(hash.to_ascii_lowercase());
        }
    }
    None
}

fn minisign_key_id(base64_line: &str) -> Option<String> {
    // A minisign public key or signature line: 2 bytes algorithm, 8 bytes key id, then the key or signature.
    let bytes = base64_decode(base64_line.trim())?;
    (bytes.len() >= 10).then(|| bytes[2..10].iter().rev().map(|b| format!("{b:02X}")).collect())
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

fn verify_minisign(keys: &[CandidateKey], signature: &[u8], content: &Path) -> Result<String, String> {
    let text = std::str::from_utf8(signature).map_err(|_| "the minisign signature is not text".to_owned())?;
    let sig =
        minisign_verify::Signature::decode(text).map_err(|e| format!("the minisign signature is malformed: {e}"))?;
    let sig_key_id = text.lines().nth(1).and_then(minisign_key_id).unwrap_or_else(|| "?".into());
    let mut matching = Vec::new();
    for key in keys {
        let Ok(public) = minisign_verify::PublicKey::from_base64(key.key.trim()) else { continue };
        if minisign_key_id(key.key.trim()).as_deref() == Some(sig_key_id.as_str()) {
            matching.push((key, public));
        }
    }
    if matching.is_empty() {
        return Err(format!(
            "the minisign signature was made by key {sig_key_id}, which gbo does not trust (trusted: {})",
            keys.iter().map(|k| k.origin.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    for (key, public) in matching {
        let ok = match public.verify_stream(&sig) {
            Ok(mut stream) => {
                let mut file =
                    std::fs::File::open(content).map_err(|e| format!("reading {}: {e}", content.display()))?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = std::io::Read::read(&mut file, &mut buf)
                        .map_err(|e| format!("reading {}: {e}", content.display()))?;
                    if n == 0 {
                        break;
                    }
                    stream.update(&buf[..n]);
                }
                stream.finalize().is_ok()
            }
            Err(minisign_verify::Error::UnsupportedLegacyMode) => {
                let bytes = std::fs::read(content).map_err(|e| format!("reading {}: {e}", content.display()))?;
                public.verify(&bytes, &sig, true).is_ok()
            }
            Err(_) => false,
        };
        if ok {
            return Ok(format!("minisign signature good, {}", key.origin));
        }
    }
    Err(format!("bad minisign signature (key {sig_key_id}): the file does not match what was signed"))
}

fn parse_openpgp_signature(bytes: &[u8]) -> Result<pgp::StandaloneSignature, String> {
    let armored = bytes.starts_with(b"-----BEGIN PGP SIGNATURE-----")
        || std::str::from_utf8(bytes).is_ok_and(|t| t.trim_start().starts_with("-----BEGIN PGP SIGNATURE-----"));
    let parsed = if armored {
        let text = std::str::from_utf8(bytes).map_err(|_| "the armored signature is not text".to_owned())?;
        pgp::StandaloneSignature::from_string(text).map(|(s, _)| s)
    } else {
        pgp::StandaloneSignature::from_bytes(bytes)
    };
    parsed.map_err(|e| format!("the OpenPGP signature is malformed: {e}"))
}

fn verify_openpgp(keys: &[CandidateKey], signature: &[u8], content: &[u8]) -> Result<String, String> {
    let sig = parse_openpgp_signature(signature)?;
    let issuers: Vec<String> = sig.signature.issuer().iter().map(|k| hex::encode_upper(k.as_ref())).collect();
    let issuer_text = if issuers.is_empty() { "an unnamed key".to_owned() } else { issuers.join(", ") };
    let mut known = false;
    for key in keys {
        let Ok((public, _)) = pgp::SignedPublicKey::from_string(&key.key) else { continue };
        if public.verify().is_err() {
            continue;
        }
        let mut candidates: Vec<(String, Result<(), pgp::errors::Error>)> = Vec::new();
        let primary_id = hex::encode_upper(public.primary_key.key_id().as_ref());
        if issuers.is_empty() || issuers.contains(&primary_id) {
            candidates.push((primary_id, sig.verify(&public.primary_key, content)));
        }
        for sub in &public.public_subkeys {
            let id = hex::encode_upper(sub.key.key_id().as_ref());
            if issuers.is_empty() || issuers.contains(&id) {
                candidates.push((id, sig.verify(&sub.key, content)));
            }
        }
        if !candidates.is_empty() {
            known = true;
        }
        if let Some((id, _)) = candidates.iter().find(|(_, r)| r.is_ok()) {
            return Ok(format!("OpenPGP signature good (key {id}), {}", key.origin));
        }
    }
    if !known {
        return Err(format!(
            "the OpenPGP signature was made by {issuer_text}, which gbo does not trust (trusted: {})",
            keys.iter().map(|k| k.origin.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    Err(format!("bad OpenPGP signature (key {issuer_text}): the signed file does not match"))
}

/// Verify the downloaded file `download` (its SHA-256 `actual`, computed while it was written) of `artifact`:
/// the vendor's checksum file, the signature with the trusted keys, and the SHA-256 pin. An error says what
/// failed; the caller discards the download.
pub async fn verify_download(
    policy: &ArtifactPolicy,
    artifact: &Artifact,
    download: &Path,
    actual: &str,
) -> Result<Verified, String> {
    let mut checks = Vec::new();
    let file_name = artifact.file_name().to_owned();
    let mut sums_text: Option<Vec<u8>> = None;
    if let Some(template) = artifact.verification.sums {
        let url = artifact.beside(template);
        let body = get_side_file(&url)
            .await?
            .ok_or_else(|| format!("the vendor's checksum file {url} is missing: refused"))?;
        let text = String::from_utf8_lossy(&body).into_owned();
        let expected = sums_entry(&text, &file_name)
            .ok_or_else(|| format!("the checksum file {url} lists no SHA-256 for {file_name}: refused"))?;
        if expected != actual {
            return Err(format!(
                "checksum mismatch for {}: the vendor's checksum file {url} says sha256 {expected}, the download is {actual}",
                artifact.url
            ));
        }
        checks.push(format!("sha256 matches the vendor's checksum file {url}"));
        sums_text = Some(body);
    }
    let keys = candidate_keys(policy, artifact);
    let mut signed = false;
    if let (Some(rule), false) = (artifact.verification.signature, keys.is_empty()) {
        let url = artifact.beside(rule.file);
        let signature = get_side_file(&url).await?.ok_or_else(|| {
            format!("the signature {url} is missing: refused (gbo checks it with {})", keys[0].origin)
        })?;
        let outcome = match (rule.scheme, rule.covers) {
            (SignatureScheme::Minisign, Signed::Download) => {
                let (keys, download) = (keys.clone(), download.to_path_buf());
                tokio::task::spawn_blocking(move || verify_minisign(&keys, &signature, &download))
                    .await
                    .map_err(|e| format!("verifying: {e}"))?
            }
            (SignatureScheme::OpenPgp, Signed::Download) => {
                let (keys, download) = (keys.clone(), download.to_path_buf());
                tokio::task::spawn_blocking(move || {
                    let content =
                        std::fs::read(&download).map_err(|e| format!("reading {}: {e}", download.display()))?;
                    verify_openpgp(&keys, &signature, &content)
                })
                .await
                .map_err(|e| format!("verifying: {e}"))?
            }
            (SignatureScheme::OpenPgp, Signed::Sums) => {
                let sums = sums_text.as_deref().ok_or("a signature of the checksum file needs the checksum file")?;
                verify_openpgp(&keys, &signature, sums)
            }
            (SignatureScheme::Minisign, Signed::Sums) => {
                let sums = sums_text.clone().ok_or("a signature of the checksum file needs the checksum file")?;
                let scratch = tempfile::NamedTempFile::new().map_err(|e| format!("scratch file: {e}"))?;
                std::fs::write(scratch.path(), sums).map_err(|e| format!("scratch file: {e}"))?;
                verify_minisign(&keys, &signature, scratch.path())
            }
        };
        let good = outcome.map_err(|why| format!("{why} ({url})"))?;
        checks.push(format!("{good} ({url})"));
        signed = true;
    }
    if let Some(pin) = &artifact.sha256 {
        if pin != actual {
            return Err(format!(
                "checksum mismatch for {}: expected sha256 {pin}, got {actual}; the download was discarded",
                artifact.url
            ));
        }
        checks.push("sha256 matches the pin".to_owned());
    }
    let unverified = if signed || artifact.sha256.is_some() {
        None
    } else if policy.allow_unverified {
        verification_gap(policy, artifact)
    } else {
        return Err(verification_gap(policy, artifact).unwrap_or_else(|| "not verified".into()));
    };
    Ok(Verified { sha256: actual.to_owned(), checks, unverified })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_entries_are_found_by_file_name() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let text = format!("{a}  vault_1.15.4_darwin_amd64.zip\n{b}  vault_1.15.4_linux_amd64.zip\n");
        assert_eq!(sums_entry(&text, "vault_1.15.4_linux_amd64.zip"), Some(b.clone()));
        assert_eq!(sums_entry(&text, "vault_1.15.4_linux_arm64.zip"), None);
        assert_eq!(sums_entry(&format!("{b} *minio.RELEASE.x\n"), "minio.RELEASE.x"), Some(b.clone()));
        assert_eq!(sums_entry(&format!("{b}\n"), "anything"), Some(b));
        assert_eq!(sums_entry("not a hash  file\n", "file"), None);
    }

    #[test]
    fn minisign_key_ids_come_from_the_key_line() {
        // MinIO's public key: its key id, as minisign prints it.
        let id = minisign_key_id(gbo_components::trust::MINIO.key).expect("decodes");
        assert_eq!(id.len(), 16);
    }

    #[test]
    fn the_shipped_openpgp_keys_parse_and_self_verify() {
        for key in gbo_components::trust::VENDOR_KEYS.iter().filter(|k| k.scheme == SignatureScheme::OpenPgp) {
            let (public, _) = pgp::SignedPublicKey::from_string(key.key).expect("armored key parses");
            public.verify().expect("self-signatures verify");
            let fingerprint = hex::encode_upper(public.primary_key.fingerprint().as_bytes());
            assert_eq!(fingerprint, key.fingerprint.replace(' ', ""), "{}", key.id);
        }
    }
}
