//! gbo operations: install planning and applying, snapshots and retention, PostgreSQL migration, ZFS pruning,
//! Vault unseal and doctor checks. Talks to LXD only through `lxd-client` and to host tools through one runner.
