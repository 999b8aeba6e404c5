//! Shared fixtures: a tenant with every role and deterministic, spec-conforming test secrets.

#![allow(dead_code)]

use gbo_components::secrets::ALL_SECRETS;
use gbo_components::{HostPorts, Secrets, TenantFile};

/// A tenant with every role, two domains routed to different roles, and a zone.
pub const FULL_TENANT: &str = r#"
tenant = "acme"
roles = ["tables", "drive", "cache", "llm", "email", "vault", "vector_db", "proxy", "dns", "alm", "alm-ci",
         "table-editor", "webmail", "system"]
public_address = "192.0.2.10"
domains = ["chat.example.com", "git.example.com", "mail.example.com", "example.com"]
zones = ["example.com"]

[routes]
"git.example.com" = "alm"
"mail.example.com" = "webmail"

[limits.tables]
cpu = 2
memory = "4GB"
"#;

pub fn full_tenant() -> TenantFile {
    TenantFile::parse(FULL_TENANT).unwrap_or_else(|e| panic!("{e}"))
}

/// Deterministic values that satisfy each secret's spec and are easy to grep for: `S<name letters>...`.
pub fn test_secrets() -> Secrets {
    let mut secrets = Secrets::new();
    for spec in ALL_SECRETS {
        let alphabet: Vec<char> = spec.charset.alphabet().chars().collect();
        let seed: usize = spec.name.bytes().map(usize::from).sum();
        let value: String = (0..spec.length).map(|i| alphabet[(seed + i * 7) % alphabet.len()]).collect();
        secrets.insert(spec.name, value);
    }
    secrets
}

pub fn seed_ports(file: &TenantFile) -> HostPorts {
    HostPorts::seed(&file.roles)
}
