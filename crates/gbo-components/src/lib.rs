//! The gbo catalogue: what each General Bots service is (image packages or pinned artifacts, mounts, ports,
//! limits, security settings, dependencies, config files, systemd units, init steps, health checks) and the files
//! it renders. Pure data and rendering: no I/O, no async, no clock, no randomness. The same inputs always give
//! byte-identical output, which is what lets `gbo-ops` push only what changed.
//!
//! # Overview
//! - Names ([`names`]): [`TenantName`] (`[a-z][a-z0-9-]*`, not ending in `-`, 1..=50 characters, default
//!   `default`), [`Role`] (14 roles; [`Role::as_str`] is the command name, [`Role::container_suffix`] the
//!   container's, `vectordb` for `vector_db`), and THE naming rule [`instance_name`] with its inverse
//!   [`parse_instance_name`].
//! - The tenant file ([`tenant_file`]): [`TenantFile::parse`] reads and validates `gbo.toml` (format documented
//!   there); unknown keys are rejected.
//! - Secrets ([`secrets`]): [`required_secrets`] lists what each role needs; [`Secrets`] carries the values into
//!   rendering and never prints them. Files holding secrets are marked [`RenderedFile::secret`] and live in the
//!   container's own `/etc/gbo/` (never on a host mount).
//! - The catalogue ([`catalogue`]): [`component`] builds a [`ComponentSpec`] for a role from a [`RenderContext`];
//!   [`install_order`] orders roles in dependency waves; [`wires`] lists the other roles' ports a container sees on
//!   its own 127.0.0.1.
//! - Images ([`users`]): [`SERVICE_USERS`] (fixed uids), [`image_packages`] for the one image builder.
//! - Artifacts ([`artifacts`]): pinned upstream releases; a SHA-256 only where quoted from release material.
//! - Rendering ([`render`]): systemd units, PostgreSQL, Redis, Caddy (and [`caddyfile::site_addresses`] /
//!   [`caddyfile::has_storage_block`]), CoreDNS with `acl`, fail2ban, iptables, MinIO, Vault, Qdrant, Stalwart,
//!   Forgejo and its runner, NocoDB, Roundcube, botserver/botui.
//!
//! # Decisions worth knowing
//! - Every service listens on 127.0.0.1 inside its container; LXD proxy devices publish it on the host (internal
//!   ports on the host's 127.0.0.1, network-facing ones on the tenant's public address) and [`Wire`]s let one
//!   container see another's port on its own loopback. No container needs a NIC.
//! - Services installed from artifacts run as `gbuser`; Debian-packaged ones as their Debian user, with the fixed
//!   ids of [`SERVICE_USERS`]. The mounts of a role are owned by the user that runs it ([`Mount::owner`]).
//! - Debian's own units that would compete (`postgresql.service`, `redis-server.service`, `caddy.service`) are
//!   listed in [`ComponentSpec::masked_units`]; each role's service is `{role}.service`.
//! - One-time steps ([`InitStep`]) never carry a secret in their command line: they read rendered secret files.
//! - Health checks speak the protocol ([`HealthCheck`]); a bare TCP connect through a proxy device proves
//!   nothing, because the device accepts before the service does.
//!
//! ```
//! use gbo_components::{component, HostPorts, RenderContext, Role, Secrets, TenantFile};
//! let tenant = TenantFile::parse("tenant = \"acme\"\nroles = [\"cache\"]\n").expect("a valid tenant file");
//! // Secrets are inputs (gbo-ops generates them); the cache's password is 40 alphanumeric characters.
//! let secrets = Secrets::new().with("cache-password", "x".repeat(40));
//! let host_ports = HostPorts::seed(&tenant.roles);
//! let ctx = RenderContext { tenant: &tenant, secrets: &secrets, host_ports: &host_ports };
//! let spec = component(Role::Cache, &ctx).expect("the cache role renders");
//! assert_eq!(spec.instance, "acme-cache");
//! assert!(spec.units.contains(&"cache.service".to_owned()));
//! ```

pub mod artifacts;
pub mod catalogue;
pub mod error;
pub mod names;
pub mod render;
pub mod secrets;
pub mod spec;
pub mod tenant_file;
pub mod trust;
pub mod users;

pub use catalogue::{
    component, install_order, missing_dependencies, ports, tenant_components, wires, with_dependencies,
};
pub use error::{Error, Result};
pub use names::{instance_name, parse_instance_name, try_parse_instance_name, Role, TenantName};
pub use render::caddy as caddyfile;
pub use secrets::{required_secrets, SecretCharset, SecretSpec, Secrets};
pub use spec::{
    Artifact, ArtifactKind, ComponentSpec, Exposure, HealthCheck, HostPorts, InitPhase, InitStep, Install, Mount,
    MountKind, PortSpec, Protocol, RenderContext, RenderedFile, SignatureRule, SignatureScheme, Signed, StatusRange,
    Verification, Wire,
};
pub use tenant_file::{
    DomainName, Limits, MailServer, Placement, StorageMode, SystemSettings, TenantFile, TrustEntry, VersionPin,
    WebmailSettings,
};
pub use users::{image_packages, ServiceUser, BASE_PACKAGES, SERVICE_USERS};

/// The catalogue's version, recorded on every instance gbo creates (`user.gbo.catalogue-version`): bump it when a
/// change to the catalogue should be visible in plans even if no rendered file changed.
pub const CATALOGUE_VERSION: &str = "1";
