//! gbo operations: install planning and applying, snapshots and retention, PostgreSQL migration, ZFS pruning,
//! Vault unseal, proxy/DNS/firewall/fail2ban operations and doctor checks. Talks to LXD only through
//! `lxd-client` and to host tools only through [`runner`].

pub mod adopt;
pub mod backup;
pub mod brother;
pub mod ci;
pub mod dns;
pub mod doctor;
pub mod events;
pub mod fail2ban;
pub mod firewall;
pub mod hostfs;
pub mod image;
pub mod install;
pub mod inventory;
pub mod migrate;
pub mod moves;
pub mod proxy;
pub mod runner;
pub mod site;
pub mod snapshot;
pub mod upgrade;
pub mod vault;
pub mod vault_unit;
pub mod zfs;
