//! Property tests of the `/proc/net/{tcp,udp}[6]` table parser (`socket_inodes`): arbitrary text never panics, and
//! the sockets of a table written the kernel's way are found by port, TCP ones only while listening.

use proptest::prelude::*;

use super::{socket_inodes, Protocol};

/// 256 cases a property in the normal test run; `PROPTEST_CASES` for a longer hunt.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// One socket: local port, state (`0A` is LISTEN), inode, IPv6 or not.
type Socket = (u16, u8, u64, bool);

fn table(sockets: &[Socket]) -> String {
    let mut text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        .to_string();
    for (i, (port, state, inode, v6)) in sockets.iter().enumerate() {
        let address = if *v6 { "00000000000000000000000001000000" } else { "0100007F" };
        let remote = if *v6 { "00000000000000000000000000000000:0000" } else { "00000000:0000" };
        text.push_str(&format!(
            "{i:>4}: {address}:{port:04X} {remote} {state:02X} 00000000:00000000 00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
        ));
    }
    text
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_tables_never_panic(text in "\\PC{0,300}", lines in proptest::collection::vec("[0-9]{1,3}: [0-9A-Fa-f]{0,32}:[0-9A-Fa-fx]{0,6}( [0-9A-Fa-f:]{0,12}){0,12}", 0..6), port in any::<u16>()) {
        for t in [text, format!("header\n{}", lines.join("\n"))] {
            let _ = socket_inodes(&t, Protocol::Tcp, port);
            let _ = socket_inodes(&t, Protocol::Udp, port);
        }
    }

    #[test]
    fn sockets_are_found_by_port(sockets in proptest::collection::vec((any::<u16>(), prop_oneof![Just(0x0Au8), Just(0x01), Just(0x06), any::<u8>()], any::<u64>(), any::<bool>()), 0..8), pick in any::<prop::sample::Index>()) {
        let text = table(&sockets);
        let port = if sockets.is_empty() { 80 } else { sockets[pick.index(sockets.len())].0 };
        let tcp: Vec<u64> = sockets.iter().filter(|s| s.0 == port && s.1 == 0x0A).map(|s| s.2).collect();
        let udp: Vec<u64> = sockets.iter().filter(|s| s.0 == port).map(|s| s.2).collect();
        prop_assert_eq!(socket_inodes(&text, Protocol::Tcp, port), tcp);
        prop_assert_eq!(socket_inodes(&text, Protocol::Udp, port), udp);
    }
}
