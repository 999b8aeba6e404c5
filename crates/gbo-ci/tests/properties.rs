//! Property tests of every parser of outside input in gbo-ci's library (the remote `inspect` output has its own in
//! `src/deploy_properties.rs`): the ssh config reader, HTTP status lines from the tunnelled health probe, byte sizes,
//! remote paths, user names and health URLs, Forgejo repository names and workflow files. Arbitrary text gives `Ok`
//! or an error with a message, never a panic; structured generators reach the paths past the syntax; where gbo-ci
//! also writes the format, what it writes reads back the same.

use std::path::Path;

use gbo_ci::names::{HealthUrl, RemotePath, UnixUser};
use gbo_ci::size::ByteSize;
use gbo_ci::ssh::parse_status_line;
use gbo_ci::ssh_config::{expand_path, host_matches, SshConfig};
use proptest::prelude::*;

/// 256 cases a property in the normal test run (the whole file takes seconds); `PROPTEST_CASES` for a longer hunt.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Lines of an ssh config: the keywords gbo-ci reads, others, `Host`/`Match` lines, quotes and `=` forms.
fn ssh_config_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "Host( [a-z*?!.,-]{1,10}){0,3}",
        "Match [a-z ]{0,10}",
        "(HostName|hostname|HOSTNAME)[ =]{1,2}[a-z0-9.:-]{1,12}",
        "Port[ =]{1,2}[0-9a-z-]{0,7}",
        "User[ =]{1,2}\"?[a-z_ ]{0,8}\"?",
        "IdentityFile[ =]{1,2}(~/|%d/|/)[a-z%/.]{1,12}",
        "UserKnownHostsFile( [a-z%~/.]{1,10}){1,3}",
        "[A-Za-z]{1,12} [a-z0-9 \"=]{0,12}",
        "# [a-z ]{0,10}",
        "\\PC{0,16}",
    ];
    proptest::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(config())]

    /// Any text: parse gives a config or an error naming the file and line; resolving any alias in a config does too.
    #[test]
    fn ssh_config_never_panics(
        text in prop_oneof!["\\PC{0,200}".boxed(), ssh_config_text().boxed()],
        alias in "[a-z0-9.*?!-]{0,12}",
    ) {
        let path = Path::new("/home/ci/.ssh/config");
        match SshConfig::parse(&text, path) {
            Ok(config) => {
                if let Err(e) = config.resolve(&alias, path) {
                    prop_assert!(e.to_string().contains("/home/ci/.ssh/config"), "{}", e);
                }
            }
            Err(e) => prop_assert!(e.to_string().contains("/home/ci/.ssh/config"), "{}", e),
        }
        let _ = host_matches(&alias, std::slice::from_ref(&text));
        let _ = expand_path(&text, Path::new("/home/ci"), &alias, 22, "deploy");
    }

    /// A host block written out is read back: first value wins, identity files accumulate.
    #[test]
    fn ssh_config_round_trip(
        alias in "[a-z][a-z0-9-]{0,10}",
        hostname in "[a-z0-9][a-z0-9.-]{0,15}",
        port in 1u16..,
        user in "[a-z_][a-z0-9_-]{0,10}",
        identities in proptest::collection::vec("/[a-z0-9/._-]{1,16}", 0..3),
        equals in any::<bool>(),
    ) {
        let sep = if equals { "=" } else { " " };
        let mut text = format!("Host other\n  HostName wrong\n\nHost {alias} *.example\n  HostName{sep}{hostname}\n  Port {port}\n  User \"{user}\"\n");
        for identity in &identities {
            text.push_str(&format!("  IdentityFile {identity}\n"));
        }
        text.push_str("\nHost *\n  HostName later-loses\n  Port 2222\n");
        let config = SshConfig::parse(&text, Path::new("config")).expect("valid config");
        let settings = config.resolve(&alias, Path::new("config")).expect("resolve");
        prop_assert_eq!(settings.hostname.as_deref(), Some(hostname.as_str()));
        prop_assert_eq!(settings.port, Some(port));
        prop_assert_eq!(settings.user.as_deref(), Some(user.as_str()));
        prop_assert_eq!(settings.identity_files, identities);
    }

    #[test]
    fn http_status_lines(bytes in proptest::collection::vec(any::<u8>(), 0..64), code in 100u16..600, minor in 0u8..2) {
        let _ = parse_status_line(&bytes);
        let head = format!("HTTP/1.{minor} {code} Whatever\r\nContent-Length: 0\r\n\r\n");
        prop_assert_eq!(parse_status_line(head.as_bytes()), Some(code));
    }

    /// Sizes: any text; whole numbers with any unit read back as what they say.
    #[test]
    fn byte_sizes(text in "\\PC{0,16}", n in 0u64..(1 << 40), unit in proptest::sample::select(vec![("", 1u64), ("K", 1 << 10), ("MiB", 1 << 20), ("g", 1 << 30), ("KB", 1_000), ("GB", 1_000_000_000)])) {
        if let Err(e) = text.parse::<ByteSize>() {
            prop_assert!(!e.to_string().is_empty());
        }
        let (suffix, multiplier) = unit;
        if let Some(expected) = n.checked_mul(multiplier).filter(|v| *v < (1 << 53)) {
            prop_assert_eq!(format!("{n}{suffix}").parse::<ByteSize>().ok(), Some(ByteSize(expected)));
        }
    }

    /// Remote paths, user names and health URLs: what is accepted prints back as given and keeps its promises.
    #[test]
    fn names(text in "\\PC{0,40}", path in "/[a-z0-9./ -]{0,20}", url in "http://(\\[[0-9a-f:]{2,8}\\]|[a-z0-9._-]{0,10})(:[0-9]{0,6})?(/[a-z0-9/?=&@ ]{0,10})?") {
        for value in [&text, &path] {
            if let Ok(p) = value.parse::<RemotePath>() {
                prop_assert_eq!(p.to_string(), value.clone());
                prop_assert!(p.as_str().starts_with('/') && !p.as_str().split('/').any(|c| c == ".."));
                let _ = (p.parent(), p.file_name());
            }
        }
        if let Ok(u) = text.parse::<UnixUser>() {
            prop_assert_eq!(u.to_string(), text.clone());
        }
        for value in [&text, &url] {
            if let Ok(h) = value.parse::<HealthUrl>() {
                prop_assert_eq!(h.to_string(), value.clone());
                prop_assert!(h.port() > 0 && h.path().starts_with('/') && !h.host().is_empty());
            }
        }
    }

    /// Forgejo repository names (`owner/repo`) and base URLs.
    #[test]
    fn forgejo_queries(base in "\\PC{0,30}", repository in "\\PC{0,20}", limit in any::<u32>()) {
        if let Err(e) = gbo_ci::runs::RunsQuery::new(&base, &repository, limit, None) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// Workflow files: any text gives findings or a clear error; the workflows gbo-ci renders pass its own lint.
    #[test]
    fn workflows(text in "\\PC{0,200}", name in "[a-z][a-z0-9-]{0,10}", branch in "[a-z][a-z0-9/-]{0,10}") {
        let _ = gbo_ci::workflow::check_text(Path::new("w.yaml"), &text);
        for spec_name in ["botserver", "botui", name.as_str()] {
            let spec = gbo_ci::workflow::spec_for(spec_name);
            let settings = gbo_ci::workflow::RenderSettings { branch: branch.clone(), ..Default::default() };
            let yaml = gbo_ci::workflow::render(&spec, &settings);
            let findings = gbo_ci::workflow::check_text(Path::new("w.yaml"), &yaml).expect("gbo-ci's own YAML parses");
            prop_assert!(findings.is_empty(), "{:?}", findings);
        }
    }
}
