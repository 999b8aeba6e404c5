//! The vendors' public keys gbo ships, which check the signatures of the artifacts they publish.
//!
//! Each key was taken from a public source named beside it and cross-checked against a second, independent one
//! (`docs/artifacts.md` records both). A vendor whose key could not be established here is known by its
//! fingerprint only ([`KNOWN_FINGERPRINTS`]): its signature is checked only with a key the tenant file adds under
//! `[trust]`. Never put a key here that was not quoted from the vendor's own material.

use crate::spec::SignatureScheme;

/// A public key gbo trusts for a vendor's artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VendorKey {
    /// Short id, named by [`crate::SignatureRule::vendor_key`].
    pub id: &'static str,
    /// Whose key it is.
    pub vendor: &'static str,
    /// The format.
    pub scheme: SignatureScheme,
    /// The key: a minisign public key (base64) or an armored OpenPGP public key block.
    pub key: &'static str,
    /// The fingerprint or key id that identifies it in the vendor's documentation.
    pub fingerprint: &'static str,
    /// Where the key was taken from.
    pub source: &'static str,
}

/// MinIO's minisign key: signs every MinIO server and client binary (`<binary>.minisig`).
pub const MINIO: VendorKey = VendorKey {
    id: "minio",
    vendor: "MinIO, Inc.",
    scheme: SignatureScheme::Minisign,
    key: "RWTx5Zr1tiHQLwG9keckT0c45M3AGeHD6IvimQHpyRywVWGbP1aVSGav",
    fingerprint: "minisign key RWTx5Zr1tiHQLwG9keckT0c45M3AGeHD6IvimQHpyRywVWGbP1aVSGav",
    source: "minio/minio dockerscripts/verify-minio.sh (minisign -VQm /usr/bin/minio -P ...); minio/operator MINIO_UPDATE_MINISIGN_PUBKEY",
};

/// HashiCorp's release key: signs every product's `<product>_<version>_SHA256SUMS` (`.sig`, binary OpenPGP).
pub const HASHICORP: VendorKey = VendorKey {
    id: "hashicorp",
    vendor: "HashiCorp Security <security@hashicorp.com>",
    scheme: SignatureScheme::OpenPgp,
    key: include_str!("../keys/hashicorp.asc"),
    fingerprint: "C874 011F 0AB4 0511 0D02  1055 3436 5D94 72D7 468F",
    source: "hashicorp/hc-install internal/pubkey/pubkey.go (DefaultPublicKey); fingerprint in hashicorp/docker-vault's Dockerfile (VAULT_GPGKEY)",
};

/// Every vendor key gbo ships.
pub const VENDOR_KEYS: &[VendorKey] = &[MINIO, HASHICORP];

/// Vendor keys known only by fingerprint: gbo does not ship the key, so their signatures are checked only with a
/// key added under `[trust]` (whose fingerprint the operator should compare with this one).
pub const KNOWN_FINGERPRINTS: &[(&str, &str)] =
    &[("forgejo", "EB11 4F5E 6C0D C2BC DD18  3550 A4B6 1A2D C592 3710 (Forgejo Releases <release@forgejo.org>)")];

/// The vendor key of that id.
pub fn vendor_key(id: &str) -> Option<&'static VendorKey> {
    VENDOR_KEYS.iter().find(|k| k.id == id)
}

/// The fingerprint gbo knows for a vendor key id it does not ship.
pub fn known_fingerprint(id: &str) -> Option<&'static str> {
    KNOWN_FINGERPRINTS.iter().find(|(k, _)| *k == id).map(|(_, f)| *f)
}
