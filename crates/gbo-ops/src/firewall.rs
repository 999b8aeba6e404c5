//! iptables rules in containers (and on the host only when asked), persisted idempotently.
