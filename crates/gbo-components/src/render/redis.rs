//! The cache role's Redis 7 configuration (Valkey-compatible), the file holding its password, and the `valkey-*`
//! command names.

/// The file holding the cache's `requirepass` (secret: 0600, owned by `redis`, in the container's own `/etc/gbo`,
/// never on a host mount). `redis.conf` includes it.
pub const AUTH_CONF_PATH: &str = "/etc/gbo/cache-auth.conf";

/// `redis.conf`: loopback only, protected mode, supervised by systemd (no daemonize), data and logs on the mounts,
/// and the password from [`AUTH_CONF_PATH`] (included last, so nothing here can override it).
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
# Loopback is not a trust boundary: every user of the host reaches the published port on 127.0.0.1. The
# password lives in a 0600 file of its own (requirepass), kept off this file and off every command line.
include {AUTH_CONF_PATH}
",
        super::HEADER
    )
}

/// The content of [`AUTH_CONF_PATH`]: the generated password as `requirepass`.
pub fn auth_conf(password: &str) -> String {
    format!("# Rendered by gbo; holds secrets. Included by /opt/gbo/conf/redis.conf.\nrequirepass {password}\n")
}

/// `valkey-cli`: runs `redis-cli` under the seed's name, so `valkey-cli ping` works inside the cache container.
/// Whoever can read [`AUTH_CONF_PATH`] (root and `redis`) is logged in through `REDISCLI_AUTH`, redis-cli's own
/// way of taking a password that keeps it off the command line (`-a` would put it in `ps`); anyone else gets the
/// server's NOAUTH. A variable already set wins.
pub fn valkey_cli() -> String {
    format!(
        "#!/bin/sh
# Rendered by gbo: Valkey is not packaged for Debian 12; Redis 7 speaks the same protocol.
# The cache requires a password: readers of {AUTH_CONF_PATH} (root, redis) get it in REDISCLI_AUTH.
if [ -z \"${{REDISCLI_AUTH:-}}\" ] && [ -r {AUTH_CONF_PATH} ]; then
	REDISCLI_AUTH=$(sed -n 's/^requirepass //p' {AUTH_CONF_PATH})
	export REDISCLI_AUTH
fi
exec /usr/bin/redis-cli \"$@\"
"
    )
}

/// A wrapper script giving a Redis program its Valkey name (`valkey-server` runs `redis-server`). A script
/// rather than a symlink: it is a plain rendered file.
pub fn valkey_alias(redis_program: &str) -> String {
    format!(
        "#!/bin/sh
# Rendered by gbo: Valkey is not packaged for Debian 12; Redis 7 speaks the same protocol.
exec /usr/bin/{redis_program} \"$@\"
"
    )
}
