//! Property tests of every parser of outside input in gbo-ops (the `zfs` output parsers have theirs next to them in
//! `zfs.rs`, `/proc/net` parsing in `install/ports_properties.rs`): durations and schedules, LXD times, snapshot
//! names, mountinfo, the proxy's Caddyfile site extraction and removal, the DNS check file, install's probe
//! output, Vault key files, fail2ban's jail list, iptables-save and ufw defaults, the Corefile ACL check, `zfs list`
//! sizes, image role lists and hand-built instance names. Arbitrary text gives `Ok` or an error with a message, never
//! a panic; structured generators reach the paths past the syntax; where gbo also writes the format, what it
//! writes reads back the same.

use std::path::{Path, PathBuf};

use gbo_components::{instance_name, Role, TenantName};
use gbo_ops::proxy::caddyfile::{address_host, is_public_domain, valid_domain, Caddyfile};
use gbo_ops::proxy::resolve::StaticResolver;
use gbo_ops::snapshot::data::mount_of;
use gbo_ops::snapshot::duration::Span;
use gbo_ops::snapshot::schedule::Every;
use gbo_ops::snapshot::{parse_time, rfc3339, snapshot_name};
use proptest::prelude::*;

/// 256 cases a property in the normal test run (the whole file takes seconds); `PROPTEST_CASES` for a longer hunt.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    /// Durations: arbitrary text, and `<digits><unit>` with any number of digits and any unit character.
    #[test]
    fn durations(text in "\\PC{0,12}", digits in "[0-9]{0,25}", unit in "[mhdwMys ]?") {
        for value in [text.clone(), format!("{digits}{unit}"), format!(" {digits}{unit} ")] {
            match value.parse::<Span>() {
                Ok(span) => {
                    prop_assert_eq!(span.to_string().parse::<Span>(), Ok(span), "round trip");
                    prop_assert!(span.amount() > 0);
                    // Any accepted span can be added to the clock (an expiry, a prune cutoff) without overflow.
                    prop_assert!(time::OffsetDateTime::now_utc().checked_add(span.as_time()).is_some(), "{}", value);
                    prop_assert!(time::OffsetDateTime::now_utc().checked_sub(span.as_time()).is_some(), "{}", value);
                }
                Err(e) => prop_assert!(e.to_string().contains("invalid duration")),
            }
        }
    }

    #[test]
    fn schedules(text in "@?\\PC{0,10}") {
        if let Ok(every) = text.parse::<Every>() {
            prop_assert_eq!(every.cron().parse::<Every>(), Ok(every));
            prop_assert_eq!(every.on_calendar().parse::<Every>(), Ok(every));
        }
    }

    /// LXD's RFC 3339 times: arbitrary text never panics; what gbo writes reads back.
    #[test]
    fn times(text in "\\PC{0,40}", near in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})",
             seconds in 0i64..253_402_300_799, nanos in 0u32..1_000_000_000) {
        let _ = parse_time(&text);
        let _ = parse_time(&near);
        let t = time::OffsetDateTime::from_unix_timestamp(seconds).expect("in range").replace_nanosecond(nanos).expect("nanos");
        prop_assert_eq!(parse_time(&rfc3339(t)), Some(t));
    }

    #[test]
    fn snapshot_names(text in "\\PC{0,70}") {
        if snapshot_name(&text).is_ok() {
            prop_assert!(!text.is_empty() && text.len() <= 63);
            prop_assert!(text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
        }
    }
}

/// A path as the kernel writes it in mountinfo: space, tab, newline and backslash as octal escapes.
fn mountinfo_escape(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// An absolute path of a few components, with the characters that need escaping and non-ASCII ones.
fn mount_path() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-z0-9 \\\\\t\n.éü_-]{1,8}", 1..4).prop_map(|parts| format!("/{}", parts.join("/")))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mountinfo_arbitrary_text_never_panics(text in "\\PC{0,200}", path in "/\\PC{0,20}") {
        let _ = mount_of(&text, Path::new(&path));
    }

    /// Octal escapes of any value, at any place, including cut short at the end of a field.
    #[test]
    fn mountinfo_escapes_never_panic(fields in proptest::collection::vec("(\\\\[0-7]{0,3}|[a-z/é]{0,3}){0,4}", 3)) {
        let line = format!("36 35 98:0 / {} rw - {} {} rw\n", fields[0], fields[1], fields[2]);
        let _ = mount_of(&line, Path::new("/"));
    }

    /// The mount of a path written the kernel's way is found again, with its type and source.
    #[test]
    fn mountinfo_round_trip(mounts in proptest::collection::vec((mount_path(), "[a-z0-9]{1,6}", mount_path()), 1..5), pick in any::<prop::sample::Index>()) {
        let text: String = mounts
            .iter()
            .enumerate()
            .map(|(i, (point, fs, source))| {
                format!("{} 1 0:{i} / {} rw,relatime shared:{i} - {fs} {} rw\n", 30 + i, mountinfo_escape(point), mountinfo_escape(source))
            })
            .collect();
        let (point, _, _) = &mounts[pick.index(mounts.len())];
        let inside = PathBuf::from(point).join("x");
        let found = mount_of(&text, &inside).expect("a mount holds the path");
        prop_assert_eq!(&found.mount_point, &PathBuf::from(point));
        // Several generated mounts may share a point; the last one listed wins, as in the kernel's view.
        let last = mounts.iter().rev().find(|(p, _, _)| p == point).expect("listed");
        prop_assert_eq!(&found.fs_type, &last.1);
        prop_assert_eq!(&found.source, &last.2);
    }
}

/// Caddyfile text that is close to valid: sites (with comma lists, schemes and ports), snippets, the global block,
/// nested blocks, comments, quoted tokens with escapes, imports, and now and then a stray brace or backslash.
fn caddyfile_text() -> impl Strategy<Value = String> {
    let address = prop_oneof![
        "[a-z]{1,6}\\.(com|org|example)",
        "(https?://)?[a-z]{1,6}\\.example(:[0-9]{2,4})?",
        ":[0-9]{2,4}",
        "\\[::1\\]:[0-9]{2,4}",
        "\\*\\.[a-z]{1,5}\\.com",
    ];
    let directive = prop_oneof![
        "[a-z_]{1,10}( [a-z0-9./:]{1,10}){0,2}",
        "respond \"[a-z {}\\\\\"]{0,10}\" 200",
        "respond `[a-z {}]{0,8}`",
        "# [a-z {}]{0,10}",
        "import [a-z]{1,6}",
        "storage file_system \\{\n\t\troot /x\n\t\\}",
    ];
    let block = prop_oneof![
        (proptest::collection::vec(address, 1..4), proptest::collection::vec(directive.clone(), 0..4), any::<bool>())
            .prop_map(|(addresses, body, commas_on_lines)| {
                let sep = if commas_on_lines { ",\n" } else { ", " };
                format!("# site\n{} {{\n\t{}\n}}\n", addresses.join(sep), body.join("\n\t"))
            }),
        proptest::collection::vec(directive.clone(), 0..3)
            .prop_map(|body| format!("(snip) {{\n\t{}\n}}\n", body.join("\n\t"))),
        Just("import common\n".to_string()),
        Just("}\n".to_string()),
        Just("{\n".to_string()),
        "\\PC{0,4}",
    ];
    (any::<bool>(), proptest::collection::vec(directive, 0..3), proptest::collection::vec(block, 0..6)).prop_map(
        |(global, options, blocks)| {
            let head = if global { format!("{{\n\t{}\n}}\n", options.join("\n\t")) } else { String::new() };
            format!("{head}{}", blocks.concat())
        },
    )
}

proptest! {
    #![proptest_config(config())]

    /// Site extraction and removal: never a panic; every address's span is where it is written; removing nothing
    /// changes nothing; removing a host leaves a file that still parses, without that host, with the others.
    #[test]
    fn proxy_caddyfile(text in prop_oneof![1 => "\\PC{0,200}".boxed(), 4 => caddyfile_text().boxed()], pick in any::<prop::sample::Index>()) {
        let Ok(caddyfile) = Caddyfile::parse(&text) else { return Ok(()) };
        for site in caddyfile.sites() {
            prop_assert!(site.span.0 <= site.span.1 && site.span.1 <= text.len());
            for a in &site.addresses {
                prop_assert_eq!(text.get(a.span.0..a.span.1), Some(a.address.as_str()));
                let _ = (a.host(), a.is_http());
            }
        }
        let _ = caddyfile.has_storage_block();
        prop_assert_eq!(caddyfile.without_hosts(&[]), text.clone());
        let hosts = caddyfile.hosts();
        // An "address" holding a quote, backtick, brace, `#` or backslash is no site address Caddy accepts; cutting
        // its neighbours can make it start a token (`a.com,"` without `a.com` is an unterminated string).
        let odd = caddyfile.addresses().iter().any(|a| a.contains(['"', '`', '{', '}', '#', '\\']));
        if hosts.is_empty() || odd {
            return Ok(());
        }
        let gone = hosts[pick.index(hosts.len())].clone();
        let cut = caddyfile.without_hosts(std::slice::from_ref(&gone));
        let after = Caddyfile::parse(&cut);
        prop_assert!(after.is_ok(), "removing {} from {:?} gave {:?}: {:?}", gone, text, cut, after.err());
        let after = after.expect("checked");
        let expected: Vec<String> = hosts.iter().filter(|h| **h != gone).cloned().collect();
        prop_assert_eq!(after.hosts(), expected, "{:?} -> {:?}", text, cut);
    }

    #[test]
    fn site_hosts_and_domains(text in "\\PC{0,40}") {
        if let Some(host) = address_host(&text) {
            prop_assert!(!host.is_empty());
        }
        let _ = is_public_domain(&text);
        if valid_domain(&text, true) {
            prop_assert!(text.len() <= 255);
        }
    }

    /// The DNS check's answer file (`name address... | NXDOMAIN | FAIL`): errors name the line.
    #[test]
    fn static_resolver_file(lines in proptest::collection::vec(prop_oneof![
        "\\PC{0,30}",
        "[a-z.]{1,12} (NXDOMAIN|FAIL)",
        "[a-z.]{1,12}( [0-9.:a-f]{1,15}){1,3}( # [a-z ]{0,6})?",
    ], 0..8)) {
        if let Err(e) = StaticResolver::parse(&lines.join("\n")) {
            prop_assert!(e.starts_with("line "), "{}", e);
        }
    }
}

mod probe {
    use gbo_ops::install::observe::{parse_probe, tail};
    use gbo_ops::install::plan::{FileState, UnitState};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(super::config())]

        #[test]
        fn arbitrary_output_never_panics(text in "\\PC{0,300}", tagged in proptest::collection::vec("(L|M|F|C0|C1|U)( [0-9a-z/ ]{0,20})?", 0..10)) {
            let _ = parse_probe(&text);
            let _ = parse_probe(&tagged.join("\n"));
            let _ = tail(&text);
        }

        /// What the probe script prints for files, init markers and units reads back as the state it describes.
        #[test]
        fn round_trip(
            files in proptest::collection::btree_map("/[a-z0-9/._ -]{1,20}", (0u32..0o7777, any::<u32>(), any::<u32>(), "[0-9a-f]{64}"), 0..5),
            creates in proptest::collection::btree_map("/[a-z0-9/._ -]{1,20}", any::<bool>(), 0..4),
            units in proptest::collection::btree_map("[a-z@.-]{1,12}\\.service", ("[a-z-]{1,9}", "[a-z-]{1,9}"), 0..4),
        ) {
            let mut text = String::new();
            for (path, (mode, uid, gid, sha)) in &files {
                text.push_str(&format!("F {mode:o} {uid} {gid} {sha} {path}\n"));
            }
            for (path, done) in &creates {
                text.push_str(&format!("C{} {path}\n", u8::from(*done)));
            }
            for (unit, (active, enabled)) in &units {
                text.push_str(&format!("U {active} {enabled} {unit}\n"));
            }
            let probe = parse_probe(&text);
            for (path, (mode, uid, gid, sha)) in &files {
                let expected = FileState { sha256: sha.clone(), mode: *mode, uid: *uid, gid: *gid, symlink: false };
                prop_assert_eq!(probe.files.get(path), Some(&Some(expected)));
            }
            prop_assert_eq!(&probe.creates, &creates);
            for (unit, (active, enabled)) in &units {
                prop_assert_eq!(probe.units.get(unit), Some(&UnitState { active: active.clone(), enabled: enabled.clone() }));
            }
        }
    }
}

mod vault_keys {
    use gbo_ops::vault::parse_keys;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        prop_oneof!["([0-9a-f]{2}){1,33}", "[A-Za-z0-9+/]{1,44}={0,2}", "\\PC{0,20}",]
    }

    proptest! {
        #![proptest_config(super::config())]

        /// init.json and key-per-line input: never a panic; errors name the source, never a key.
        #[test]
        fn never_panics_and_errors_name_the_source(
            text in "\\PC{0,200}",
            keys in proptest::collection::vec(key(), 0..5),
            field in proptest::sample::select(vec!["keys", "keys_base64", "unseal_keys_b64", "unseal_keys_hex", "other"]),
            threshold in proptest::option::of(any::<i64>()),
            lines in any::<bool>(),
        ) {
            let json = serde_json::json!({ field: keys, "unseal_threshold": threshold }).to_string();
            let input = if lines { keys.join("\n") } else { json };
            for input in [&text, &input] {
                match parse_keys(input, "init.json") {
                    Ok(parsed) => prop_assert!(!parsed.keys.is_empty()),
                    Err(e) => {
                        let message = e.to_string();
                        prop_assert!(message.contains("init.json"), "{}", message);
                        for k in &keys {
                            prop_assert!(k.len() < 8 || !message.contains(k.as_str()), "a key in {}", message);
                        }
                    }
                }
            }
        }

        /// Keys in either form, listed in either shape, are all read.
        #[test]
        fn valid_keys_round_trip(keys in proptest::collection::vec("([0-9a-f]{2}){16,33}", 1..6), lines in any::<bool>()) {
            let input = if lines { keys.join("\n") } else { serde_json::json!({ "keys": keys, "keys_base64": serde_json::Value::Null }).to_string() };
            let parsed = parse_keys(&input, "stdin").expect("valid keys");
            prop_assert_eq!(parsed.keys.len(), keys.len());
        }
    }
}

mod host_tools {
    use gbo_ops::firewall::{merge_rules_v4, normalize_save, ufw_forward_policy, LOOPBACK_RULE};
    use proptest::prelude::*;

    fn save_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("*filter".to_string()),
                Just("*nat".to_string()),
                Just("COMMIT".to_string()),
                "# Generated by iptables-save v1\\.8 on [A-Za-z0-9 :]{0,20}",
                ":(INPUT|FORWARD|OUTPUT|DOCKER) (ACCEPT|DROP|-) \\[[0-9]{1,5}:[0-9]{1,7}\\]",
                "-A (INPUT|FORWARD) (-i lo |-p tcp --dport [0-9]{1,5} )?-j (ACCEPT|DROP)",
                "\\PC{0,20}",
            ],
            0..12,
        )
        .prop_map(|lines| lines.join("\n"))
    }

    proptest! {
        #![proptest_config(super::config())]

        /// iptables-save output: normalising is idempotent; merging never panics, puts loopback first and is
        /// idempotent on its own output.
        #[test]
        fn iptables_save(text in prop_oneof!["\\PC{0,200}".boxed(), save_text().boxed()], ports in proptest::collection::vec(1u16.., 0..4)) {
            let once = normalize_save(&text);
            prop_assert_eq!(normalize_save(&once), once.clone());
            let merged = merge_rules_v4(Some(&text), &ports);
            prop_assert!(merged.contains("*filter") && merged.contains(LOOPBACK_RULE), "{}", merged);
            // iptables-save writes each table once; for such a file a second merge changes nothing.
            if text.lines().filter(|l| *l == "*filter").count() <= 1 {
                prop_assert_eq!(merge_rules_v4(Some(&merged), &ports), merged.clone());
            }
        }

        #[test]
        fn ufw_defaults(text in "\\PC{0,100}", policy in "\"?[A-Z]{0,8}\"?") {
            let _ = ufw_forward_policy(&text);
            let file = format!("# ufw\nIPV6=yes\nDEFAULT_FORWARD_POLICY={policy}\n");
            prop_assert_eq!(ufw_forward_policy(&file), Some(policy.trim_matches('"').to_string()));
        }

        /// `fail2ban-client status`: the jail list reads back.
        #[test]
        fn fail2ban_jail_list(text in "\\PC{0,100}", jails in proptest::collection::vec("[a-z][a-z0-9_-]{0,12}", 0..5)) {
            let _ = gbo_ops::fail2ban::parse_jail_list(&text);
            let status = format!("Status\n|- Number of jail:\t{}\n`- Jail list:\t{}\n", jails.len(), jails.join(", "));
            prop_assert_eq!(gbo_ops::fail2ban::parse_jail_list(&status), jails);
        }

        /// The Corefile ACL check: never a panic; the Corefile gbo renders has the ACL in every zone.
        #[test]
        fn corefile_acl(text in "\\PC{0,200}", zones in proptest::collection::btree_set("[a-z]{1,8}\\.(com|org)", 1..4), port in 1u16..) {
            let _ = gbo_ops::dns::zones_without_acl(&text);
            let zones: Vec<&str> = zones.iter().map(String::as_str).collect();
            let corefile = gbo_components::render::coredns::corefile(&zones, port);
            prop_assert_eq!(gbo_ops::dns::zones_without_acl(&corefile), Vec::<String>::new(), "{}", corefile);
        }

        /// `zfs list` sizes as doctor reads them (`zfs list` writes `0B`, `512K`, `1.5G`: single-letter units).
        #[test]
        fn zfs_sizes(text in "\\PC{0,12}", n in 0u32..100_000, unit in proptest::sample::select(vec!["", "B", "K", "M", "G", "T", "P"])) {
            let _ = gbo_ops::doctor::parse_zfs_size(&text);
            let value = gbo_ops::doctor::parse_zfs_size(&format!("{n}{unit}")).expect("a size");
            prop_assert!(value >= f64::from(n));
        }

        #[test]
        fn image_roles(text in "\\PC{0,60}") {
            let roles = gbo_ops::image::parse_roles(&text);
            prop_assert!(roles.iter().all(|r| !r.is_empty() && !r.contains(',')));
            prop_assert_eq!(gbo_ops::image::parse_roles(&roles.join(",")), roles);
        }
    }
}

proptest! {
    #![proptest_config(config())]

    /// Hand-built instance names: never a panic; every name gbo's rule makes splits back into its parts.
    #[test]
    fn hand_built_instance_names(text in "\\PC{0,40}", tenant in "[a-z][a-z0-9-]{0,20}[a-z0-9]") {
        let _ = gbo_ops::inventory::split_name(&text);
        let tenant = TenantName::new(&tenant).expect("valid");
        for role in Role::ALL {
            let (t, r) = gbo_ops::inventory::split_name(&instance_name(&tenant, role));
            prop_assert_eq!((t.as_str(), r.as_str()), (tenant.as_str(), role.as_str()));
        }
    }
}

/// Found by `mountinfo_escapes_never_panic`: a `\\` followed by three octal digits above `\\377` overflowed a `u8`
/// (a panic in debug builds, a wrong character in release).
#[test]
fn mountinfo_octal_escape_above_255_is_text() {
    let line = "36 35 98:0 / /srv/a\\400b rw - ext4 /dev/sda1 rw\n";
    let found = mount_of(line, Path::new("/srv/a\\400b/x")).expect("the mount");
    assert_eq!(found.mount_point, PathBuf::from("/srv/a\\400b"));
}

/// Found by `mountinfo_round_trip`: each byte of a non-ASCII mount point was decoded as a character of its own, so
/// `/srv/café` became `/srv/cafÃ©` and a path under it was matched to a shorter, wrong mount (a frozen copy instead
/// of a ZFS or btrfs snapshot).
#[test]
fn mountinfo_non_ascii_mount_point() {
    let text = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n36 1 0:40 / /srv/caf\u{e9}\\040x rw - zfs tank/caf\u{e9} rw\n";
    let found = mount_of(text, Path::new("/srv/caf\u{e9} x/data")).expect("the mount");
    assert_eq!(found.mount_point, PathBuf::from("/srv/caf\u{e9} x"));
    assert_eq!((found.fs_type.as_str(), found.source.as_str()), ("zfs", "tank/caf\u{e9}"));
}

/// Found by `durations`: `3000000d` (8,200 years) and `4294967295w` were accepted, and adding them to the clock for
/// a snapshot's expiry panicked (`gbo snapshot create --expires`).
#[test]
fn durations_beyond_100_years_are_refused() {
    for value in ["3000000d", "4294967295w", "5218w", "876601h"] {
        let e = value.parse::<Span>().expect_err(value);
        assert!(e.to_string().contains("longer than 100 years"), "{e}");
    }
    for value in ["5217w", "36525d", "876600h"] {
        let span: Span = value.parse().expect(value);
        assert!(time::OffsetDateTime::now_utc().checked_add(span.as_time()).is_some());
    }
}
