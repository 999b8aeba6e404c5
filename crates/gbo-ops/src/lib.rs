//! gbo operations: install planning and applying, snapshots and retention, PostgreSQL migration, ZFS pruning,
//! Vault unseal, proxy/DNS/firewall/fail2ban operations and doctor checks. Talks to LXD only through
//! `lxd-client` and to host tools only through [`runner`].

pub mod image;
pub mod inventory;
pub mod runner;
pub mod install;
pub mod snapshot;
pub mod migrate;
pub mod zfs;
pub mod vault;
pub mod proxy;
pub mod dns;
pub mod fail2ban;
pub mod firewall;
pub mod brother;
pub mod doctor;
