//! Pinned upstream release artifacts (linux amd64), and how each vendor lets a download be checked.
//!
//! A download is verified at download time the way its vendor publishes: the vendor's checksum file beside it and,
//! where the vendor signs, the signature checked with the vendor's key that gbo ships ([`crate::trust`]) or a key
//! the tenant file adds under `[trust]` (a private mirror). A SHA-256 is compiled in only where it was quoted
//! from the vendor's public release material, with the source named next to it; every other pin is `None`. An
//! artifact that is neither signed by a trusted key nor pinned is unverified, refused by the installer unless the
//! user passes the explicit flag. Never put a guessed or placeholder checksum or key here: that would be worse
//! than none. `docs/artifacts.md` lists, per role, where each vendor publishes and what gbo trusts.

use crate::names::Role;
use crate::spec::{Artifact, ArtifactKind, SignatureRule, SignatureScheme, Signed, Verification};
use crate::tenant_file::{TenantFile, VersionPin};

/// The version of an artifact known only by a "latest" URL: it cannot be verified and changes under our feet,
/// so a version override must give its own URL.
pub const UNPINNED: &str = "latest";

/// Whether a version override of `pin` can be derived by substituting the version in its URL (the URL holds
/// `/<version>/` or `/v<version>/`); otherwise the override must give a URL.
pub fn version_in_url(pin: &Pin) -> bool {
    pin.version != UNPINNED
        && (pin.url.contains(&format!("/{}/", pin.version)) || pin.url.contains(&format!("/v{}/", pin.version)))
}

/// A pin as compiled into the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Short name.
    pub name: &'static str,
    /// Version.
    pub version: &'static str,
    /// Download URL.
    pub url: &'static str,
    /// SHA-256 quoted from release material, or `None`.
    pub sha256: Option<&'static str>,
    /// How to unpack it.
    pub unpack: ArtifactKind,
    /// Where it goes inside the container.
    pub install_path: &'static str,
    /// How the vendor lets a download be checked.
    pub verification: Verification,
}

/// A checksum file `<file>.sha256` (one `sha256sum` line) beside the download, unsigned.
const SHA256_BESIDE: Verification = Verification { sums: Some("{file}.sha256"), signature: None };

/// Forgejo's layout: `<file>.sha256` and an armored OpenPGP signature of the download, `<file>.asc`, by the
/// Forgejo release key (known to gbo by fingerprint only).
const FORGEJO_LAYOUT: Verification = Verification {
    sums: Some("{file}.sha256"),
    signature: Some(SignatureRule {
        scheme: SignatureScheme::OpenPgp,
        covers: Signed::Download,
        file: "{file}.asc",
        vendor_key: Some("forgejo"),
    }),
};

/// MinIO server: a single static binary.
pub const MINIO: Pin = Pin {
    name: "minio",
    version: "RELEASE.2024-10-13T13-34-11Z",
    url: "https://dl.min.io/server/minio/release/linux-amd64/archive/minio.RELEASE.2024-10-13T13-34-11Z",
    sha256: None,
    unpack: ArtifactKind::SingleBinary,
    install_path: "/opt/gbo/bin/minio",
    // dl.min.io publishes `<binary>.sha256sum` and `<binary>.minisig` beside every binary.
    verification: Verification {
        sums: Some("{file}.sha256sum"),
        signature: Some(SignatureRule {
            scheme: SignatureScheme::Minisign,
            covers: Signed::Download,
            file: "{file}.minisig",
            vendor_key: Some("minio"),
        }),
    },
};

/// HashiCorp Vault 1.15.4: a zip holding the `vault` binary.
pub const VAULT: Pin = Pin {
    name: "vault",
    version: "1.15.4",
    url: "https://releases.hashicorp.com/vault/1.15.4/vault_1.15.4_linux_amd64.zip",
    sha256: None,
    unpack: ArtifactKind::ZipMember { member: "vault" },
    install_path: "/opt/gbo/bin/vault",
    // releases.hashicorp.com publishes `vault_<v>_SHA256SUMS` and its detached signature `.sig`.
    verification: Verification {
        sums: Some("vault_{version}_SHA256SUMS"),
        signature: Some(SignatureRule {
            scheme: SignatureScheme::OpenPgp,
            covers: Signed::Sums,
            file: "vault_{version}_SHA256SUMS.sig",
            vendor_key: Some("hashicorp"),
        }),
    },
};

/// Qdrant: a tar.gz holding the `qdrant` binary.
pub const QDRANT: Pin = Pin {
    name: "qdrant",
    version: "1.12.4",
    url: "https://github.com/qdrant/qdrant/releases/download/v1.12.4/qdrant-x86_64-unknown-linux-gnu.tar.gz",
    sha256: None,
    unpack: ArtifactKind::TarGzMember { member: "qdrant" },
    install_path: "/opt/gbo/bin/qdrant",
    // No checksum file or signature of Qdrant's release assets could be established from public sources.
    verification: Verification::NONE,
};

/// CoreDNS 1.11.1: a tgz holding the `coredns` binary.
pub const COREDNS: Pin = Pin {
    name: "coredns",
    version: "1.11.1",
    url: "https://github.com/coredns/coredns/releases/download/v1.11.1/coredns_1.11.1_linux_amd64.tgz",
    sha256: None,
    unpack: ArtifactKind::TarGzMember { member: "coredns" },
    install_path: "/opt/gbo/bin/coredns",
    // CoreDNS publishes `<asset>.sha256` beside each release asset, unsigned.
    verification: SHA256_BESIDE,
};

/// Stalwart mail server 0.10.7: a tar.gz holding `stalwart-mail`.
pub const STALWART: Pin = Pin {
    name: "stalwart-mail",
    version: "0.10.7",
    url: "https://github.com/stalwartlabs/mail-server/releases/download/v0.10.7/stalwart-mail-x86_64-unknown-linux-gnu.tar.gz",
    sha256: None,
    unpack: ArtifactKind::TarGzMember { member: "stalwart-mail" },
    install_path: "/opt/gbo/bin/stalwart-mail",
    // No checksum file or signature of Stalwart's release assets could be established from public sources.
    verification: Verification::NONE,
};

/// Forgejo: a single binary.
pub const FORGEJO: Pin = Pin {
    name: "forgejo",
    version: "14.0.2",
    url: "https://codeberg.org/forgejo/forgejo/releases/download/v14.0.2/forgejo-14.0.2-linux-amd64",
    sha256: None,
    unpack: ArtifactKind::SingleBinary,
    install_path: "/opt/gbo/bin/forgejo",
    verification: FORGEJO_LAYOUT,
};

/// Forgejo runner 6.3.1: a single binary.
pub const FORGEJO_RUNNER: Pin = Pin {
    name: "forgejo-runner",
    version: "6.3.1",
    url: "https://code.forgejo.org/forgejo/runner/releases/download/v6.3.1/forgejo-runner-6.3.1-linux-amd64",
    sha256: None,
    unpack: ArtifactKind::SingleBinary,
    install_path: "/opt/gbo/bin/forgejo-runner",
    verification: FORGEJO_LAYOUT,
};

/// NocoDB: a single self-contained binary.
pub const NOCODB: Pin = Pin {
    name: "nocodb",
    version: "0.258.7",
    url: "https://github.com/nocodb/nocodb/releases/download/0.258.7/Noco-linux-x64",
    sha256: None,
    unpack: ArtifactKind::SingleBinary,
    install_path: "/opt/gbo/bin/nocodb",
    verification: Verification::NONE,
};

/// llama.cpp b7345: a zip whose `build/bin/` holds `llama-server` and the shared libraries it loads from its own
/// directory.
pub const LLAMA_CPP: Pin = Pin {
    name: "llama-cpp",
    version: "b7345",
    url: "https://github.com/ggml-org/llama.cpp/releases/download/b7345/llama-b7345-bin-ubuntu-x64.zip",
    sha256: None,
    unpack: ArtifactKind::ZipDirectory { prefix: "build/bin/" },
    install_path: "/opt/gbo/bin/llama.cpp",
    // llama.cpp's release assets carry no checksum file or signature.
    verification: Verification::NONE,
};

/// botserver: a single binary. The project publishes no versioned release (its CI builds and deploys from
/// source), only a "latest" URL, so this is not a pin and gbo never downloads it: an operator pins a build with
/// `[versions.system]` (version, url and sha256) in the tenant file, or deploys it with `gbo-ci deploy`.
pub const BOTSERVER: Pin = Pin {
    name: "botserver",
    version: UNPINNED,
    url: "https://github.com/GeneralBots/botserver/releases/latest/download/botserver",
    sha256: None,
    unpack: ArtifactKind::SingleBinary,
    install_path: "/opt/gbo/bin/botserver",
    verification: Verification::NONE,
};

/// botui: a single binary; like botserver, only a "latest" URL is known.
pub const BOTUI: Pin = Pin {
    name: "botui",
    version: UNPINNED,
    url: "https://github.com/GeneralBots/botui/releases/latest/download/botui",
    sha256: None,
    unpack: ArtifactKind::SingleBinary,
    install_path: "/opt/gbo/bin/botui",
    verification: Verification::NONE,
};

/// The compiled-in pins of `role` (empty for roles installed from Debian packages).
pub fn pinned_artifacts(role: Role) -> &'static [Pin] {
    match role {
        Role::Drive => &[MINIO],
        Role::Vault => &[VAULT],
        Role::VectorDb => &[QDRANT],
        Role::Dns => &[COREDNS],
        Role::Email => &[STALWART],
        Role::Alm => &[FORGEJO],
        Role::AlmCi => &[FORGEJO_RUNNER],
        Role::TableEditor => &[NOCODB],
        Role::Llm => &[LLAMA_CPP],
        Role::System => &[BOTSERVER, BOTUI],
        Role::Tables | Role::Cache | Role::Proxy | Role::Webmail => &[],
    }
}

/// The roles that have an artifact (a pinned release gbo downloads), in catalogue order.
pub fn artifact_roles() -> Vec<Role> {
    Role::ALL.into_iter().filter(|r| !pinned_artifacts(*r).is_empty()).collect()
}

/// The `[versions.<role>]` pin of `tenant` with its version set to `version`, for one run (`gbo upgrade --version
/// ROLE=VERSION`): the URL is the tenant file's `[versions.<role>]` URL with its version replaced when it holds it,
/// else the compiled-in URL with the version substituted as for a tenant file override ([`version_in_url`]); the
/// checksum is never carried over to another version (the vendor's checksum file and signature are checked as for
/// any override). The same version as the tenant file's keeps its pin whole. Errors say what is allowed.
pub fn pin_with_version(tenant: &TenantFile, role: Role, version: &str) -> Result<VersionPin, String> {
    let Some(pin) = pinned_artifacts(role).first() else {
        let roles: Vec<&str> = artifact_roles().iter().map(|r| r.as_str()).collect();
        return Err(format!(
            "{role} has no artifact: it is installed from Debian packages in the image (`gbo upgrade --image` \
             upgrades it); roles with an artifact: {}",
            roles.join(", ")
        ));
    };
    let valid = !version.is_empty()
        && version.len() <= 128
        && version != UNPINNED
        && version.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '~'));
    if !valid {
        return Err(format!(
            "{version:?} is not a version: letters, digits and . - _ + ~ (at most 128), and not {UNPINNED:?}"
        ));
    }
    let current = tenant.versions.get(&role);
    if let Some(current) = current.filter(|c| c.version == version) {
        return Ok(current.clone());
    }
    let url = match current.and_then(|c| c.url.as_ref().map(|u| (u, &c.version))) {
        Some((url, old)) if !old.is_empty() && url.contains(old.as_str()) => Some(url.replace(old.as_str(), version)),
        Some((url, _)) => {
            return Err(format!(
                "the tenant file's [versions.{role}] url {url} holds no version to replace: give the new version's \
                 url (and sha256) under [versions.{role}]"
            ))
        }
        None if version_in_url(pin) => None,
        None => {
            return Err(format!(
                "the pinned URL of {role} ({}) holds no version to substitute: give the version's url (and sha256) \
                 under [versions.{role}] in the tenant file",
                pin.url
            ))
        }
    };
    Ok(VersionPin { version: version.to_owned(), url, sha256: None })
}

/// The artifacts of `role` for `tenant`: the compiled-in pins, with the tenant file's `[versions.<role>]`
/// override applied to the first (main) artifact. An override that changes the version without giving a URL
/// substitutes the version in the pinned URL; an override never inherits the pinned checksum (a new version has a
/// different one). [`TenantFile::parse`] already refused an override without URL where [`version_in_url`] is
/// false.
pub fn artifacts(role: Role, tenant: &TenantFile) -> Vec<Artifact> {
    pinned_artifacts(role)
        .iter()
        .enumerate()
        .map(|(index, pin)| {
            let mut artifact = Artifact {
                name: pin.name,
                version: pin.version.to_owned(),
                url: pin.url.to_owned(),
                sha256: pin.sha256.map(str::to_owned),
                unpack: pin.unpack.clone(),
                install_path: pin.install_path,
                verification: pin.verification,
                role,
            };
            if let (0, Some(over)) = (index, tenant.versions.get(&role)) {
                if over.version != pin.version || over.url.is_some() || over.sha256.is_some() {
                    artifact.url = over.url.clone().unwrap_or_else(|| pin.url.replace(pin.version, &over.version));
                    artifact.version = over.version.clone();
                    artifact.sha256 = over.sha256.clone();
                }
            }
            artifact
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_for_one_run_substitutes_the_url_and_drops_the_checksum() {
        let file = TenantFile::default();
        let pin = pin_with_version(&file, Role::Vault, "1.16.0").expect("vault has a versioned URL");
        assert_eq!(pin, VersionPin { version: "1.16.0".into(), url: None, sha256: None });
        let mut over = file.clone();
        over.versions.insert(Role::Vault, pin);
        let artifact = &artifacts(Role::Vault, &over)[0];
        assert_eq!(artifact.url, "https://releases.hashicorp.com/vault/1.16.0/vault_1.16.0_linux_amd64.zip");
        assert_eq!(artifact.sha256, None);
        // The tenant file's own URL (a mirror) has its version replaced; the same version keeps the pin whole.
        let text = "[versions.drive]\nversion = \"A1\"\nurl = \"http://127.0.0.1:9/x/minio.A1\"\nsha256 = \""
            .to_owned()
            + &"a".repeat(64)
            + "\"\n";
        let mirror = TenantFile::parse(&text).expect("tenant file");
        let pin = pin_with_version(&mirror, Role::Drive, "B2").expect("mirror url holds its version");
        assert_eq!(pin.url.as_deref(), Some("http://127.0.0.1:9/x/minio.B2"));
        assert_eq!(pin.sha256, None);
        assert_eq!(pin_with_version(&mirror, Role::Drive, "A1").expect("same"), mirror.versions[&Role::Drive]);
    }

    #[test]
    fn a_version_for_one_run_is_refused_with_what_is_allowed() {
        let file = TenantFile::default();
        let err = pin_with_version(&file, Role::Tables, "16").expect_err("tables has no artifact");
        assert!(err.contains("no artifact") && err.contains("drive"), "{err}");
        for bad in ["", "1 2", "a/b", "latest", "v1;rm"] {
            let err = pin_with_version(&file, Role::Vault, bad).expect_err(bad);
            assert!(err.contains("letters, digits"), "{bad}: {err}");
        }
        // MinIO's pinned URL holds its version only inside the file name: a new one needs a URL.
        let err = pin_with_version(&file, Role::Drive, "RELEASE.2025-01-01T00-00-00Z").expect_err("no substitution");
        assert!(err.contains("[versions.drive]"), "{err}");
    }
}
