//! A typed async client for the LXD REST API, over the local unix socket or HTTPS.
//!
//! ```no_run
//! # async fn demo() -> lxd_client::Result<()> {
//! use lxd_client::{Client, ExecRequest, InstanceName};
//! let lxd = Client::local()?;                       // LXD_SOCKET or LXD_DIR only, when set; else snap, Debian
//! let name = InstanceName::new("default-tables")?;  // validated before any request
//! let out = lxd.exec(&name, &ExecRequest::new(["pg_isready"])).await?;
//! println!("exit {}: {}", out.exit_code, out.stdout_text());
//! # Ok(()) }
//! ```
//!
//! What it gets right that other clients do not: envelopes are decoded by `type` whatever the HTTP status, so a
//! failed `/wait` answered with HTTP 200 is an error; exec connects its websockets concurrently and finishes when
//! the operation is done and both outputs reached EOF, with a deadline; file and image transfers stream; every
//! request has a timeout; names and devices are validated before anything is sent; `update_instance` keeps the
//! server's `volatile.*`/`image.*` keys and uses the ETag.
//!
//! Trust rules: an explicitly named daemon (`LXD_SOCKET`, `LXD_DIR`, an `lxc` remote) is the only one used, and
//! one that cannot be used is an error naming it, never a fallback; an HTTPS server is trusted only through a pin
//! or a CA the caller chose (with hostname verification), and an unpinned one is refused with the fingerprint to
//! check ([`first_contact`] fetches it, as `lxc remote add` does); what is read into memory from the daemon, a
//! container or a remote is bounded ([`ReadLimits`]: past a limit, [`Error::TooLarge`] names it), while the
//! streaming calls are not.

mod backups;
mod client;
mod devices;
mod error;
mod events;
mod exec;
mod files;
mod images;
mod instances;
mod names;
mod operation;
mod profiles;
#[cfg(test)]
mod proptests;
mod remote;
mod server;
mod snapshots;
mod transport;

pub use backups::{Backup, BACKUP_TIMEOUT};
pub use client::{Client, Envelope, ReadLimits, DEFAULT_BODY_LIMIT, DEFAULT_COLLECT_LIMIT, DEFAULT_TIMEOUT};
pub use devices::{DeviceConfig, DiskDevice, ProxyAddress, ProxyBind, ProxyDevice, ProxyProtocol};
pub use error::{Error, Result};
pub use events::Event;
pub use exec::{ExecControl, ExecOutput, ExecRequest, DEFAULT_EXEC_TIMEOUT, EXEC_DRAIN_GRACE};
pub use files::{FileContent, FileOptions, PulledFile, PUSH_DIR_CONCURRENCY};
pub use images::{Image, ImageAlias, Progress};
pub use instances::{
    CreateInstance, Instance, InstancePut, InstanceSource, InstanceState, StateAction, LIFECYCLE_TIMEOUT,
};
pub use names::{DeviceName, InstanceName, ObjectName, SnapshotName};
pub use operation::Operation;
pub use profiles::{Network, Profile, Project, StoragePool, StorageVolume};
pub use remote::Remote;
pub use server::{Certificate, Server, ServerEnvironment};
pub use snapshots::Snapshot;
pub use transport::{
    certificate_fingerprint, discover_socket, discover_socket_in, first_contact, Endpoint, Flavor, ServerCa,
    ServerCertificate, TlsIdentity,
};
