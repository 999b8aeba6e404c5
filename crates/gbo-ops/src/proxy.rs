//! Safe Caddy changes: backup, site-loss refusal, validation as the service user, reload, probes, restore.
