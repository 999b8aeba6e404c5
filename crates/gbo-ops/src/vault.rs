//! Vault seal status and unsealing from init.json, over verified TLS.
