//! The CI path of the seed ("the runner in `-alm-ci` deploys to `-system` over SSH"): the system container's sshd
//! drop-in, and what `gbo ci connect` writes on both sides (the authorised key with its restrictions, the sudoers
//! rule for gbo-ci's root steps, the runner's ssh config alias and known_hosts entry).

use std::fmt::Write as _;

/// sshd's drop-in inside `-system` (Debian 12's `sshd_config` includes `sshd_config.d/*.conf` first, and the first
/// value of a keyword wins, so these settings hold whatever the main file says).
pub const SSHD_DROP_IN_PATH: &str = "/etc/ssh/sshd_config.d/gbo.conf";
/// The host key sshd uses: made inside the container by the system role's init step (the image carries none, so no
/// two containers share one).
pub const HOST_KEY_PATH: &str = "/etc/ssh/ssh_host_ed25519_key";
/// Its public half, which `gbo ci connect` reads through LXD's file API to write the runner's known_hosts entry.
pub const HOST_PUBLIC_KEY_PATH: &str = "/etc/ssh/ssh_host_ed25519_key.pub";
/// The one user that may log in.
pub const SSH_USER: &str = "gbuser";
/// The port sshd listens on inside `-system`, on 127.0.0.1 only.
pub const SSH_PORT: u16 = 22;
/// The authorised keys of [`SSH_USER`]: root's file, written only by `gbo ci connect` (the user cannot add keys).
pub const AUTHORIZED_KEYS_PATH: &str = "/etc/ssh/gbo_authorized_keys_gbuser";
/// The sudoers rule `gbo ci connect` writes: gbo-ci's root steps (the deploy lock, the staging directory, the swap,
/// `systemctl restart`) run through `sudo -n` when the SSH user is not root.
pub const SUDOERS_PATH: &str = "/etc/sudoers.d/gbo-ci";
/// The ports the runner's key may open `direct-tcpip` channels to (gbo-ci's health probes of botserver and botui).
pub const HEALTH_PORTS: &[u16] = &[super::botserver::BOTSERVER_PORT, super::botserver::BOTUI_PORT];

/// The sshd drop-in: key only, [`SSH_USER`] only, loopback only, no forwarding but local channels (limited per key
/// by `permitopen` in [`authorized_keys`]).
pub fn sshd_config() -> String {
    format!(
        "{}
# Only inside the container: -alm-ci reaches it through a bind=instance proxy device (gbo ci connect).
ListenAddress 127.0.0.1:{SSH_PORT}
HostKey {HOST_KEY_PATH}
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin no
AllowUsers {SSH_USER}
AuthorizedKeysFile {AUTHORIZED_KEYS_PATH_PATTERN}
AuthorizedPrincipalsFile none
AllowAgentForwarding no
AllowStreamLocalForwarding no
AllowTcpForwarding local
GatewayPorts no
PermitTunnel no
PermitUserEnvironment no
X11Forwarding no
",
        super::HEADER
    )
}

/// [`AUTHORIZED_KEYS_PATH`] as sshd's `AuthorizedKeysFile` spells it (`%u`: the user logging in).
const AUTHORIZED_KEYS_PATH_PATTERN: &str = "/etc/ssh/gbo_authorized_keys_%u";

/// The authorised keys file: the runner's key, restricted (`restrict`: no pty, no agent or X11 forwarding, no
/// `~/.ssh/rc`), with local channels only to the health ports on the container's loopback.
pub fn authorized_keys(key_type: &str, key_base64: &str, comment: &str) -> String {
    let mut opens = String::new();
    for port in HEALTH_PORTS {
        for host in ["localhost", "127.0.0.1"] {
            let _ = write!(opens, ",permitopen=\"{host}:{port}\"");
        }
    }
    format!(
        "# Written by gbo ci connect: the CI runner's deploy key. Run it again rather than editing by hand.\n\
         restrict,port-forwarding{opens} {key_type} {key_base64} {comment}\n"
    )
}

/// The sudoers rule: gbo-ci's root steps, as root, without a password (`sudo -n`). Whoever holds the runner's key is
/// root in `-system`, as on the seed's hosts (where the runner logs in as root); in an unprivileged container that
/// root is no one on the host.
pub fn sudoers() -> String {
    format!(
        "# Written by gbo ci connect: gbo-ci's root steps (lock, staging, swap, systemctl restart) through sudo -n.\n\
         {SSH_USER} ALL=(root) NOPASSWD: ALL\n"
    )
}

/// The ssh config alias the runner deploys through (`gbo-ci deploy --host system`).
pub const SSH_ALIAS: &str = "system";
/// The first line of the runner's ssh config when gbo wrote it (a config without it is the operator's: refused).
pub const CLIENT_CONFIG_HEADER: &str = "# Written by gbo ci connect";

/// The runner's `~/.ssh/config`: the alias [`SSH_ALIAS`] to `-system` through the wire on the runner's loopback.
pub fn client_config(system_instance: &str, port: u16, identity_file: &str, known_hosts_file: &str) -> String {
    format!(
        "{CLIENT_CONFIG_HEADER}: the runner's way to {system_instance}. Run it again rather than editing by hand.
Host {SSH_ALIAS}
    HostName 127.0.0.1
    Port {port}
    User {SSH_USER}
    IdentityFile {identity_file}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts_file}
    StrictHostKeyChecking yes
"
    )
}

/// The runner's known_hosts entry for `-system`'s host key, as OpenSSH writes it for 127.0.0.1 on `port`.
pub fn known_hosts(port: u16, key_type: &str, key_base64: &str) -> String {
    let host = if port == 22 { "127.0.0.1".to_string() } else { format!("[127.0.0.1]:{port}") };
    format!("{host} {key_type} {key_base64}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshd_is_key_only_gbuser_only_loopback_only() {
        let config = sshd_config();
        for line in [
            "ListenAddress 127.0.0.1:22",
            "PasswordAuthentication no",
            "AllowUsers gbuser",
            "PermitRootLogin no",
            "AuthenticationMethods publickey",
            "AuthorizedKeysFile /etc/ssh/gbo_authorized_keys_%u",
        ] {
            assert!(config.lines().any(|l| l == line), "{line} in\n{config}");
        }
        assert_eq!(AUTHORIZED_KEYS_PATH, AUTHORIZED_KEYS_PATH_PATTERN.replace("%u", SSH_USER));
    }

    #[test]
    fn the_runner_key_is_restricted_to_the_health_ports() {
        let keys = authorized_keys("ssh-ed25519", "AAAA", "gbo-ci@t-alm-ci");
        let line = keys.lines().nth(1).expect("the key line");
        assert!(line.starts_with("restrict,port-forwarding,permitopen=\"localhost:5858\""), "{line}");
        assert!(line.contains("permitopen=\"127.0.0.1:5859\""), "{line}");
        assert!(line.ends_with(" ssh-ed25519 AAAA gbo-ci@t-alm-ci"), "{line}");
        assert_eq!(known_hosts(22, "ssh-ed25519", "AAAA"), "127.0.0.1 ssh-ed25519 AAAA\n");
        assert_eq!(known_hosts(2222, "ssh-ed25519", "AAAA"), "[127.0.0.1]:2222 ssh-ed25519 AAAA\n");
    }
}
