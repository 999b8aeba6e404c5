//! ZFS snapshot usage, daily snapshots and batched pruning on the host pool.

/// The `zfs` program to run: `GBO_ZFS` when set (tests point it at a recording stand-in), else `zfs` on PATH.
pub fn zfs_program() -> String {
    std::env::var("GBO_ZFS").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "zfs".to_string())
}
