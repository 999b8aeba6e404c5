//! Property tests of every parser of outside input in gbo-components: the tenant file, domain, tenant, role and
//! instance names, the limit, URL and checksum validators, and the Caddyfile site extraction. Arbitrary text gives
//! `Ok` or an error with a message, never a panic; structured generators produce near-valid input so the checks past
//! the syntax are reached; where gbo also writes the format, what it writes parses back to the same value.

use gbo_components::caddyfile::{caddyfile, has_storage_block, site_addresses, Site};
use gbo_components::tenant_file::{validate_artifact_url, validate_memory, validate_sha256};
use gbo_components::{instance_name, try_parse_instance_name, DomainName, Role, TenantFile, TenantName};
use proptest::prelude::*;

/// 256 cases a property in the normal test run (the whole file takes seconds); `PROPTEST_CASES` for a longer hunt.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Mostly `valid`, now and then `junk`.
fn mostly<T: std::fmt::Debug + Clone + 'static>(
    valid: impl Strategy<Value = T> + 'static,
    junk: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![12 => valid, 1 => junk].boxed()
}

/// A role name as users write it (command name or container suffix), or a near miss.
fn role_word(roles: &'static [Role]) -> BoxedStrategy<String> {
    mostly(
        proptest::sample::select(roles.to_vec()).prop_flat_map(|r| {
            proptest::sample::select(vec![r.as_str().to_string(), r.container_suffix().to_string()])
        }),
        "[a-z_-]{0,12}",
    )
}

/// A domain name, mostly valid.
fn domain_word() -> BoxedStrategy<String> {
    mostly(
        "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?){0,2}\\.[a-z]{2,6}\\.?",
        prop_oneof!["[A-Za-z0-9.\\-_*]{0,20}", "\\PC{0,20}"],
    )
}

/// A tenant file as a TOML table: the right keys with values that are mostly valid, now and then a value that is
/// not, an unknown key or a value of the wrong type.
fn tenant_table() -> impl Strategy<Value = toml::Table> {
    let pinned: &'static [Role] = &[Role::Drive, Role::Vault, Role::VectorDb, Role::Dns, Role::Email];
    let http = gbo_components::catalogue::http_roles();
    (
        proptest::option::of(mostly("[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,6})?", "\\PC{0,16}")),
        proptest::option::of(mostly(
            proptest::sample::subsequence(Role::ALL.to_vec(), 1..5)
                .prop_map(|roles| roles.into_iter().map(|r| r.as_str().to_string()).collect()),
            proptest::collection::vec(role_word(&Role::ALL), 0..5),
        )),
        proptest::option::of(mostly("\\./[a-z/]{1,12}", "\\PC{0,12}")),
        proptest::option::of(mostly(
            prop_oneof![
                any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
                any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
            ],
            "\\PC{0,12}",
        )),
        proptest::collection::btree_set(domain_word(), 0..4),
        proptest::collection::vec((any::<prop::sample::Index>(), role_word(http)), 0..3),
        proptest::collection::btree_set(domain_word(), 0..3),
        proptest::collection::btree_map(
            role_word(&Role::ALL),
            (
                proptest::option::of(mostly(1i64..=1024, any::<i64>())),
                proptest::option::of(mostly("[1-9][0-9]{0,3}(B|kB|MB|GB|GiB|MiB)", "[0-9]{0,4}(B|kB|MB|GB|GiB|%|xB)?")),
            ),
            0..3,
        ),
        proptest::collection::btree_map(
            role_word(pinned),
            (
                mostly("[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{1,2}", "[0-9a-z./ -]{0,10}"),
                proptest::option::of(mostly(
                    prop_oneof![
                        "https://[a-z]{1,8}\\.[a-z]{2,4}/[a-z.]{0,10}",
                        "http://(127\\.0\\.0\\.1|localhost)(:[0-9]{1,5})?/[a-z]{0,5}",
                    ],
                    prop_oneof!["http://[a-z]{1,8}\\.com/", "\\PC{0,12}"],
                )),
                proptest::option::of(mostly("[0-9a-f]{64}", "[0-9a-fA-F]{62,66}")),
            ),
            0..3,
        ),
        proptest::option::of(mostly(Just(None), ("[a-z_]{1,10}", any::<i64>()).prop_map(Some))),
        proptest::option::of((
            proptest::option::of(mostly(any::<std::net::SocketAddr>().prop_map(|a| a.to_string()), "\\PC{0,12}")),
            proptest::option::of(mostly(any::<std::net::SocketAddr>().prop_map(|a| a.to_string()), "\\PC{0,12}")),
        )),
    )
        .prop_map(
            move |(tenant, roles, stack_dir, address, domains, routes, zones, limits, versions, extra, webmail)| {
                use toml::Value;
                let mut t = toml::Table::new();
                let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
                if let Some(v) = tenant {
                    t.insert("tenant".into(), Value::String(v));
                }
                if let Some(v) = roles {
                    t.insert("roles".into(), strings(v));
                }
                if let Some(v) = stack_dir {
                    t.insert("stack_dir".into(), Value::String(v));
                }
                if let Some(v) = address {
                    t.insert("public_address".into(), Value::String(v));
                }
                let domains: Vec<String> = domains.into_iter().collect();
                if !domains.is_empty() {
                    t.insert("domains".into(), strings(domains.clone()));
                    if !routes.is_empty() {
                        let routes: toml::Table = routes
                            .into_iter()
                            .map(|(i, r)| (domains[i.index(domains.len())].clone(), Value::String(r)))
                            .collect();
                        t.insert("routes".into(), Value::Table(routes));
                    }
                }
                if !zones.is_empty() {
                    t.insert("zones".into(), strings(zones.into_iter().collect()));
                }
                if !limits.is_empty() {
                    let mut l = toml::Table::new();
                    for (role, (cpu, memory)) in limits {
                        let mut entry = toml::Table::new();
                        if let Some(cpu) = cpu {
                            entry.insert("cpu".into(), Value::Integer(cpu));
                        }
                        if let Some(memory) = memory {
                            entry.insert("memory".into(), Value::String(memory));
                        }
                        l.insert(role, Value::Table(entry));
                    }
                    t.insert("limits".into(), Value::Table(l));
                }
                if !versions.is_empty() {
                    let mut v = toml::Table::new();
                    for (role, (version, url, sha)) in versions {
                        let mut entry = toml::Table::new();
                        entry.insert("version".into(), Value::String(version));
                        if let Some(url) = url {
                            entry.insert("url".into(), Value::String(url));
                        }
                        if let Some(sha) = sha {
                            entry.insert("sha256".into(), Value::String(sha));
                        }
                        v.insert(role, Value::Table(entry));
                    }
                    t.insert("versions".into(), Value::Table(v));
                }
                if let Some((imap, smtp)) = webmail {
                    let mut w = toml::Table::new();
                    if let Some(imap) = imap {
                        w.insert("imap".into(), Value::String(imap));
                    }
                    if let Some(smtp) = smtp {
                        w.insert("smtp".into(), Value::String(smtp));
                    }
                    t.insert("webmail".into(), Value::Table(w));
                }
                if let Some(Some((key, value))) = extra {
                    t.insert(key, Value::Integer(value));
                }
                t
            },
        )
}

/// Checks what a parsed tenant file promises, and that writing it out and reading it back gives the same file.
fn check_tenant_file(file: &TenantFile) -> Result<(), TestCaseError> {
    let mut roles = file.roles.clone();
    roles.sort();
    roles.dedup();
    prop_assert_eq!(roles.len(), file.roles.len(), "roles are unique");
    prop_assert!(!file.roles.is_empty());
    for d in file.domains.iter().chain(&file.zones).chain(file.routes.keys()) {
        let again = DomainName::new(d.as_str()).ok();
        prop_assert_eq!(again.as_ref(), Some(d));
    }
    for d in file.routes.keys() {
        prop_assert!(file.domains.contains(d), "a route's domain is a listed domain");
    }
    let text = toml::to_string(file).expect("a parsed tenant file serializes");
    let again = TenantFile::parse(&text).map_err(|e| e.to_string());
    prop_assert_eq!(again.as_ref(), Ok(file), "round trip through {}", text);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tenant_file_arbitrary_text_never_panics(text in "\\PC{0,200}") {
        match TenantFile::parse(&text) {
            Ok(file) => check_tenant_file(&file)?,
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn tenant_file_near_valid(table in tenant_table(), cut in any::<prop::sample::Index>(), mangle in any::<bool>()) {
        let mut text = toml::to_string(&table).expect("toml");
        if mangle {
            // Cut at a character boundary: near-valid syntax.
            let mut at = cut.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            text.truncate(at);
        }
        match TenantFile::parse(&text) {
            Ok(file) => check_tenant_file(&file)?,
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn names_never_panic_and_round_trip(text in "\\PC{0,70}", tenant in "[a-z][a-z0-9-]{0,49}") {
        if let Ok(t) = TenantName::new(&text) {
            prop_assert_eq!(t.as_str(), text.as_str());
            prop_assert!(text.len() <= 50 && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        }
        if let Ok(role) = text.parse::<Role>() {
            prop_assert!(role.as_str() == text || role.container_suffix() == text);
        }
        if let Ok(d) = DomainName::new(&text) {
            prop_assert_eq!(DomainName::new(d.as_str()).ok(), Some(d.clone()));
        }
        match try_parse_instance_name(&text) {
            Ok((t, r)) => prop_assert_eq!(instance_name(&t, r), text),
            Err(e) => prop_assert!(e.to_string().contains("is not a valid") || !e.to_string().is_empty()),
        }
        // Every valid tenant and role name makes an instance name that parses back to them.
        if let Ok(t) = TenantName::new(&tenant) {
            for role in Role::ALL {
                let name = instance_name(&t, role);
                prop_assert_eq!(try_parse_instance_name(&name).ok(), Some((t.clone(), role)), "{}", name);
            }
        }
    }

    #[test]
    fn validators_never_panic(text in "\\PC{0,80}", memory in "[0-9]{0,25}(B|kB|MB|GB|TB|PB|KiB|MiB|GiB|TiB|PiB|%|x)?") {
        for value in [&text, &memory] {
            if let Err(e) = validate_memory("limits.x.memory", value) {
                prop_assert!(e.to_string().contains("limits.x.memory"));
            }
            let _ = validate_sha256("versions.x.sha256", value);
            let _ = validate_artifact_url("versions.x.url", value);
        }
    }
}

/// Caddyfile text that is close to valid: site blocks, snippets, the global block, nested blocks, comments, quoted
/// tokens, imports, stray braces and backslashes.
fn caddyfile_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        3 => "[a-z0-9.:/*_-]{1,12}",
        1 => Just("{".to_string()),
        1 => Just("}".to_string()),
        1 => Just("{\n".to_string()),
        1 => Just("}\n".to_string()),
        1 => Just("\n".to_string()),
        1 => "\"[a-z {}\\\\\"]{0,8}\"?",
        1 => "`[a-z {}]{0,8}`?",
        1 => "#[a-z {}]{0,8}\n",
        1 => Just("import gbo_access_log\n".to_string()),
        1 => Just("(snip) {\n".to_string()),
        1 => Just("\\".to_string()),
        1 => Just(",".to_string()),
        1 => Just("storage file_system {\n".to_string()),
        1 => Just("<<HEREDOC\nx\nHEREDOC\n".to_string()),
        1 => "\\PC{0,3}",
    ];
    proptest::collection::vec(token, 0..40).prop_map(|tokens| tokens.join(" "))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn caddyfile_site_extraction_never_panics(text in prop_oneof!["\\PC{0,200}".boxed(), caddyfile_text().boxed()]) {
        match site_addresses(&text) {
            Ok(addresses) => prop_assert!(addresses.iter().all(|a| !a.is_empty())),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let _ = has_storage_block(&text);
    }

    /// What gbo renders, it reads back: the site addresses, in order, and the storage block.
    #[test]
    fn rendered_caddyfile_round_trips(
        domains in proptest::collection::btree_set("[a-z][a-z0-9]{0,8}\\.[a-z]{2,5}", 0..6),
        upstream in proptest::option::of("127\\.0\\.0\\.1:[0-9]{4,5}"),
        tls_internal in any::<bool>(),
    ) {
        let sites: Vec<Site> =
            domains.iter().map(|d| Site { address: d.clone(), upstream: upstream.clone(), role: "system" }).collect();
        let text = caddyfile("t", &sites, tls_internal);
        let mut expected: Vec<String> = domains.iter().cloned().collect();
        expected.push(if domains.is_empty() { ":80".to_string() } else { "http://localhost".to_string() });
        prop_assert_eq!(site_addresses(&text).expect("gbo's own Caddyfile parses"), expected);
        prop_assert!(has_storage_block(&text));
    }
}

/// The structured generator reaches past the syntax: a fair share of its files are valid, and of the rest most
/// fail on a value (not the TOML syntax).
#[test]
fn the_near_valid_generator_reaches_the_value_checks() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = tenant_table();
    let (mut ok, mut value_errors, total) = (0, 0, 400);
    for _ in 0..total {
        let table = strategy.new_tree(&mut runner).expect("value").current();
        match TenantFile::parse(&toml::to_string(&table).expect("toml")) {
            Ok(_) => ok += 1,
            Err(gbo_components::Error::TenantFileValue { .. }) => value_errors += 1,
            Err(_) => {}
        }
    }
    eprintln!("{ok} valid, {value_errors} value errors of {total}");
    assert!(ok >= total / 20, "{ok} of {total} valid");
    assert!(value_errors >= total / 4, "{value_errors} of {total} value errors");
}
