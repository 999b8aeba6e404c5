//! ZFS snapshot usage, daily snapshots and batched pruning on the host pool.
