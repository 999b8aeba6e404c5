//! Verified PostgreSQL migration between a host server and a tenant's tables container.
