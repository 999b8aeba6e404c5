//! A typed async client for the LXD REST API, over the local unix socket or HTTPS.
//!
//! ```no_run
//! # async fn demo() -> lxd_client::Result<()> {
//! use lxd_client::{Client, ExecRequest, InstanceName, StateAction, StateChange};
//! let lxd = Client::local()?;                       // LXD_SOCKET or LXD_DIR only, when set; else snap, Debian
//! let name = InstanceName::new("default-tables")?;  // validated before any request
//! lxd.ensure_running(&name).await?;
//! let out = lxd.exec_output(&name, &ExecRequest::new(["pg_isready"])).await?;
//! println!("exit {}: {}", out.exit_code, out.stdout_text());
//! lxd.set_state(&name, &StateChange::new(StateAction::Restart)).await?;
//! # Ok(()) }
//! ```
//!
//! The shape: one cheap-to-clone [`Client`] per daemon ([`Client::project`], [`Client::with_timeout`] and
//! [`Client::with_read_limits`] return adjusted copies); names are validated types ([`InstanceName`],
//! [`SnapshotName`], [`BackupName`], [`DeviceName`], [`ObjectName`]); calls with options take an options struct
//! ([`StateChange`], [`BackupOptions`], [`ExecRequest`], [`FileOptions`], [`ImageImportOptions`]) and durations as
//! [`std::time::Duration`]; long-lived things are streams ([`Client::events`], [`ExecSession::output_stream`]);
//! every failure is one [`Error`] whose message names what was being done, with the underlying cause (when there
//! is one) as its [`std::error::Error::source`] only, so a chain prints it once.
//!
//! What it gets right that other clients do not: envelopes are decoded by `type` whatever the HTTP status, so a
//! failed `/wait` answered with HTTP 200 is an error; exec connects its websockets concurrently and finishes when
//! the operation is done and both outputs reached EOF, with a deadline; file and image transfers stream; every
//! request has a timeout; names and devices are validated before anything is sent; `update_instance` keeps the
//! server's `volatile.*`/`image.*` keys and uses the ETag; a delete or state change that meets another operation
//! on the instance ("Instance is busy running a stop operation") waits for it and tries again.
//!
//! Trust rules: an explicitly named daemon (`LXD_SOCKET`, `LXD_DIR`, an `lxc` remote) is the only one used, and
//! one that cannot be used is an error naming it, never a fallback; an HTTPS server is trusted only through a pin
//! or a CA the caller chose (with hostname verification), and an unpinned one is refused with the fingerprint to
//! check ([`first_contact`] fetches it, as `lxc remote add` does); what is read into memory from the daemon, a
//! container or a remote is bounded ([`ReadLimits`]: past a limit, [`Error::TooLarge`] names it), while the
//! streaming calls are not.

mod backups;
mod client;
mod cluster;
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

pub use backups::{Backup, BackupOptions, VolumeBackup, BACKUP_TIMEOUT};
pub use client::{Client, ReadLimits, DEFAULT_BODY_LIMIT, DEFAULT_COLLECT_LIMIT, DEFAULT_TIMEOUT};
pub use cluster::{ClusterInfo, ClusterMember};
pub use devices::{DeviceConfig, DiskDevice, ProxyAddress, ProxyBind, ProxyDevice, ProxyProtocol};
pub use error::{Error, Result};
pub use events::Event;
pub use exec::{
    ExecChunk, ExecController, ExecInput, ExecOutput, ExecOutputStream, ExecRequest, ExecSession, ExecStdin,
    TerminalSize, DEFAULT_EXEC_TIMEOUT, EXEC_DRAIN_GRACE,
};
pub use files::{FileContent, FileOptions, PulledFile, PUSH_DIR_CONCURRENCY};
pub use images::{Image, ImageAlias, ImageImportOptions, Progress};
pub use instances::{
    CreateInstance, Instance, InstancePut, InstanceSource, InstanceState, InstanceStatus, StateAction, StateChange,
    LIFECYCLE_TIMEOUT, STATE_CHANGE_TIMEOUT,
};
pub use names::{BackupName, DeviceName, InstanceName, ObjectName, SnapshotName};
pub use operation::Operation;
pub use profiles::{Network, Profile, Project, StoragePool, StorageVolume, VolumeSnapshot};
pub use remote::Remote;
pub use server::{Certificate, Server, ServerEnvironment};
pub use snapshots::Snapshot;
pub use transport::{
    certificate_fingerprint, discover_socket, discover_socket_in, first_contact, Endpoint, Flavor, ServerCa,
    ServerCertificate, TlsIdentity,
};
