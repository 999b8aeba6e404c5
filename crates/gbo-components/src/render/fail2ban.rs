//! fail2ban: the proxy's `caddy-http-flood` filter and jail, the mail jail of the email container, the
//! `defaults-debian.conf` that disables Debian's sshd jail in containers (they run no SSH server), and the host's
//! sshd jail.
//!
//! Known limit: behind an LXD proxy device without `proxy_protocol`, every client appears as 127.0.0.1, which
//! fail2ban never bans (`ignoreself`); the jails only act when the real client address reaches the service.

/// Path of the HTTP flood filter inside the proxy container.
pub const CADDY_FILTER_PATH: &str = "/etc/fail2ban/filter.d/caddy-http-flood.conf";
/// Path of the HTTP flood jail inside the proxy container.
pub const CADDY_JAIL_PATH: &str = "/etc/fail2ban/jail.d/caddy-http-flood.conf";
/// Debian's file enabling the sshd jail, replaced in containers to disable it.
pub const DEFAULTS_DEBIAN_PATH: &str = "/etc/fail2ban/jail.d/defaults-debian.conf";
/// Path of the mail filter inside the email container.
pub const MAIL_FILTER_PATH: &str = "/etc/fail2ban/filter.d/stalwart-auth.conf";
/// Path of the mail jail inside the email container.
pub const MAIL_JAIL_PATH: &str = "/etc/fail2ban/jail.d/stalwart-auth.conf";
/// Path of the host's sshd jail (only with `--host`).
pub const HOST_SSHD_JAIL_PATH: &str = "/etc/fail2ban/jail.d/gbo-sshd.conf";

/// The jail's thresholds: 100 client errors in 60 seconds ban the address for an hour (the seed's numbers).
pub const FLOOD_MAXRETRY: u32 = 100;
/// Window of [`FLOOD_MAXRETRY`], seconds.
pub const FLOOD_FINDTIME: u32 = 60;
/// Ban length, seconds.
pub const FLOOD_BANTIME: u32 = 3600;

/// The `caddy-http-flood` filter: one failure per Caddy JSON access-log line whose `status` is 4xx.
///
/// Why it is safe against injection: request data inside the JSON line is a JSON string, where `"` is escaped as
/// `\"`, so a client cannot forge the unescaped `"remote_ip":"` or `"status":` keys. The date is the epoch in
/// `"ts"`.
pub fn caddy_filter() -> String {
    format!(
        "{}
[Definition]
# Caddy JSON access log: {{\"level\":\"info\",\"ts\":1700000000.123,...,\"request\":{{\"remote_ip\":\"203.0.113.7\",...}},...,\"status\":404,...}}
failregex = ^.*\"remote_ip\":\"<HOST>\".*\"status\":4\\d\\d[,}}]
ignoreregex =
datepattern = \"ts\":{{EPOCH}}
",
        super::HEADER
    )
}

/// The `caddy-http-flood` jail.
pub fn caddy_jail(access_log: &str) -> String {
    format!(
        "{}
[caddy-http-flood]
enabled  = true
port     = http,https
filter   = caddy-http-flood
logpath  = {access_log}
backend  = auto
maxretry = {FLOOD_MAXRETRY}
findtime = {FLOOD_FINDTIME}
bantime  = {FLOOD_BANTIME}
",
        super::HEADER
    )
}

/// `jail.d/defaults-debian.conf` for containers: Debian enables the sshd jail, which fails without an SSH log
/// and stops fail2ban from starting; containers run no SSH server.
pub fn defaults_debian_without_sshd() -> String {
    format!(
        "{}
[sshd]
enabled = false
",
        super::HEADER
    )
}

/// The mail filter for Stalwart's log: failed authentications with the client address.
pub fn mail_filter() -> String {
    format!(
        "{}
[Definition]
# Stalwart 0.10 logs failed logins as auth.failed events carrying remoteIp.
failregex = ^.*\\(auth\\.failed\\).*remoteIp = <HOST>\\b
            ^.*\\(auth\\.too-many-attempts\\).*remoteIp = <HOST>\\b
ignoreregex =
",
        super::HEADER
    )
}

/// The mail jail: 5 failed logins in 10 minutes ban the address from every mail port for an hour.
pub fn mail_jail(log_glob: &str) -> String {
    format!(
        "{}
[stalwart-auth]
enabled  = true
port     = smtp,465,submission,imap,imaps,pop3,pop3s,4190
filter   = stalwart-auth
logpath  = {log_glob}
backend  = auto
maxretry = 5
findtime = 600
bantime  = 3600
",
        super::HEADER
    )
}

/// The host's sshd jail (journal backend: the host runs systemd).
pub fn host_sshd_jail() -> String {
    format!(
        "{}
[sshd]
enabled  = true
port     = ssh
backend  = systemd
maxretry = 5
findtime = 600
bantime  = 3600
",
        super::HEADER
    )
}

/// The host's sshd jail as a rendered file (root, 0644, restarts `fail2ban.service`).
pub fn host_sshd_jail_file() -> crate::RenderedFile {
    super::root_file(HOST_SSHD_JAIL_PATH, host_sshd_jail(), 0o644, &["fail2ban.service"])
}
