//! The cache role's Redis 7 configuration (Valkey-compatible) and the `valkey-*` command names.

/// `redis.conf`: loopback only, protected mode, supervised by systemd (no daemonize), data and logs on the mounts.
pub fn redis_conf(port: u16) -> String {
    format!(
        "{}
# Only loopback: reached through LXD proxy devices. Never bind a public address (the seed's 6379 incident).
bind 127.0.0.1
port {port}
protected-mode yes
daemonize no
supervised systemd
dir /opt/gbo/data
logfile /opt/gbo/logs/cache.log
loglevel notice
appendonly yes
appendfilename \"appendonly.aof\"
save 3600 1 300 100 60 10000
tcp-keepalive 300
",
        super::HEADER
    )
}

/// A wrapper script giving a Redis program its Valkey name (`valkey-cli` runs `redis-cli`), so the seed's
/// `valkey-cli ping` works inside the cache container. A script rather than a symlink: it is a plain rendered file.
pub fn valkey_alias(redis_program: &str) -> String {
    format!(
        "#!/bin/sh
# Rendered by gbo: Valkey is not packaged for Debian 12; Redis 7 speaks the same protocol.
exec /usr/bin/{redis_program} \"$@\"
"
    )
}
