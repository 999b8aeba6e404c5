//! A typed async client for the LXD REST API over the unix socket and HTTPS.
