//! Snapshots of containers and their host data (consistent), restore, tiered retention, schedules.
