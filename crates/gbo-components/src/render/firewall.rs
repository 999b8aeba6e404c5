//! iptables rules as an `iptables-restore` document (`/etc/iptables/rules.v4`): loopback accepted first, then the
//! internal ports dropped from outside (the seed's 6379 incident: a DROP before the loopback ACCEPT broke the
//! cache for botserver itself).

use std::fmt::Write as _;

/// Where the rules are persisted.
pub const RULES_V4_PATH: &str = "/etc/iptables/rules.v4";
/// The ports dropped from outside in the system container by default: the cache (the seed's rule).
pub const DEFAULT_DROPPED_PORTS: &[u16] = &[6379];

/// The `filter` table: `-i lo -j ACCEPT` as the first INPUT rule, then a DROP per port. Written in
/// `iptables-save`'s own spelling (`-m tcp`) so the loaded rules compare equal to the file. Restoring it replaces
/// the filter table: use it where gbo owns the whole table (containers); on the host, merge instead.
pub fn rules_v4(dropped_tcp_ports: &[u16]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", crate::render::HEADER);
    out.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    out.push_str("-A INPUT -i lo -j ACCEPT\n");
    let mut ports = dropped_tcp_ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    for port in ports {
        let _ = writeln!(out, "-A INPUT -p tcp -m tcp --dport {port} -j DROP");
    }
    out.push_str("COMMIT\n");
    out
}

/// The oneshot unit that loads [`RULES_V4_PATH`] at boot, before the services (no `iptables-persistent`, whose
/// install-time prompts and rule saving do not suit an image build).
pub fn firewall_unit() -> crate::render::systemd::Unit {
    use crate::render::systemd::{ServiceType, Unit};
    let mut unit = Unit::new(
        "gbo-firewall.service",
        "gbo firewall rules (loopback first, internal ports dropped from outside)",
        "root",
        &["/usr/sbin/iptables-restore", RULES_V4_PATH],
    );
    unit.service_type = ServiceType::Oneshot;
    // Ordered before the services only: containers get no NIC, and ordering against network-pre.target would need
    // DefaultDependencies=no to avoid cycles.
    unit.after = Vec::new();
    unit.before = vec!["system.service".to_owned(), "ui.service".to_owned()];
    unit
}
