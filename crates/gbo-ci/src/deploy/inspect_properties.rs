//! Property tests of the remote `inspect` output parser (the script's `key=value` lines come from a host the
//! service user can influence): arbitrary output never panics, and what the script prints reads back as the state
//! it describes.

use proptest::prelude::*;

use super::parse_inspect;
use crate::names::RemotePath;

/// 256 cases a property in the normal test run; `PROPTEST_CASES` for a longer hunt.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn dest() -> RemotePath {
    "/opt/gbo/bin/botserver".parse().expect("valid path")
}

/// Lines shaped like the script's, with values that are mostly plausible.
fn inspect_lines() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        "uid=[0-9a-z -]{0,12}",
        "(dir|owner|logdir|cwddir|sha256sum|runuser|systemd)=1",
        "current=[a-z]{0,8}",
        "release=/opt/gbo/bin/botserver\\.prev\\.[0-9a-z]{0,22}",
        "release=\\PC{0,20}",
        "pid=[0-9a-z]{0,11}:/opt/gbo/bin/botserver( \\(deleted\\))?",
        "(unit|cwdof|stdout)=[0-9]{0,11}:\\PC{0,20}",
        "cmdline=[0-9]{0,11}:[0-9a-fA-F]{0,40}",
        "\\PC{0,30}",
    ];
    proptest::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn inspect_output_never_panics(text in prop_oneof!["\\PC{0,300}".boxed(), inspect_lines().boxed()]) {
        let state = parse_inspect(&text, &dest());
        prop_assert!(state.releases.windows(2).all(|w| w[0] <= w[1]), "releases are sorted");
        for (_, path) in &state.releases {
            prop_assert!(path.starts_with("/opt/gbo/bin/botserver.prev."));
        }
        if let Some(cwd) = &state.inherited.cwd {
            prop_assert!(cwd.starts_with('/'));
        }
        if let Some(log) = &state.inherited.log {
            prop_assert!(log.starts_with('/') && !log.starts_with("/dev/") && !log.ends_with(" (deleted)"));
        }
    }

    /// The script's report of a running service reads back: its uid, releases, processes with their units, and the
    /// first process's arguments, working directory and log.
    #[test]
    fn inspect_round_trip(
        uid in any::<u32>(),
        releases in proptest::collection::btree_set(any::<u64>(), 0..4),
        pids in proptest::collection::btree_set(1u32.., 1..4),
        args in proptest::collection::vec("[^\u{0}]{0,12}", 0..4),
        deleted in any::<bool>(),
        unit in proptest::option::of("[a-z@-]{1,10}\\.service"),
    ) {
        let pids: Vec<u32> = pids.into_iter().collect();
        let mut text = format!("uid={uid}\ndir=1\nowner=1\ncurrent=gbuser\nsha256sum=1\nsystemd=1\n");
        for r in &releases {
            text.push_str(&format!("release=/opt/gbo/bin/botserver.prev.{r}\n"));
        }
        let mut cmdline = b"/opt/gbo/bin/botserver\0".to_vec();
        for a in &args {
            cmdline.extend_from_slice(a.as_bytes());
            cmdline.push(0);
        }
        for pid in &pids {
            let exe = if deleted { "/opt/gbo/bin/botserver (deleted)" } else { "/opt/gbo/bin/botserver" };
            text.push_str(&format!("pid={pid}:{exe}\n"));
            if let Some(unit) = &unit {
                text.push_str(&format!("unit={pid}:{unit}\n"));
            }
            text.push_str(&format!("cmdline={pid}:{}\n", hex::encode(&cmdline)));
            text.push_str(&format!("cwdof={pid}:/opt/gbo/bin\nstdout={pid}:/opt/gbo/logs/error.log\n"));
        }
        let state = parse_inspect(&text, &dest());
        prop_assert_eq!(state.uid, Some(uid));
        prop_assert!(state.dir_exists && state.owner_exists && state.dest_exists && state.has_sha256sum && state.systemd);
        prop_assert_eq!(state.current_owner.as_deref(), Some("gbuser"));
        let numbers: Vec<u64> = state.releases.iter().map(|(n, _)| *n).collect();
        prop_assert_eq!(numbers, releases.iter().copied().collect::<Vec<_>>());
        prop_assert_eq!(state.processes.iter().map(|p| p.pid).collect::<Vec<_>>(), pids.clone());
        for p in &state.processes {
            prop_assert_eq!(p.runs_replaced_binary, deleted);
            prop_assert_eq!(&p.unit, &unit);
        }
        prop_assert_eq!(state.inherited.args.as_ref(), Some(&args));
        prop_assert_eq!(state.inherited.cwd.as_deref(), Some("/opt/gbo/bin"));
        prop_assert_eq!(state.inherited.log.as_deref(), Some("/opt/gbo/logs/error.log"));
    }
}
