//! `gbo snapshot` through the real binary and the real LXD daemon: bad input exits 2 naming the value and what is
//! allowed, with nothing changed; `list --output json` has the documented shape; `schedule` writes a timer or sets
//! LXD's own keys (with the `M`-is-minutes translation).

use gbo_tests::TestContainer;

#[test]
fn bad_input_is_refused_before_anything_happens() {
    let cases: [(&[&str], &str); 6] = [
        (&["snapshot", "create", "gbot-x", "--expires", "7M"], "invalid duration `7M`"),
        (
            &["snapshot", "create", "gbot-x", "--expires", "1y"],
            "`30m` (minutes), `12h` (hours), `7d` (days) or `4w` (weeks)",
        ),
        (&["snapshot", "create", "gbot-x", "bad/name"], "invalid snapshot name `bad/name`"),
        (&["snapshot", "prune", "gbot-x"], "would delete every snapshot but the newest"),
        (&["snapshot", "schedule", "gbot-x", "--every", "@yearly"], "invalid schedule `@yearly`"),
        (&["snapshot", "create"], "give CONTAINER [NAME], or --tenant T [NAME]"),
    ];
    for (args, message) in cases {
        let (code, _, stderr) = gbo_tests::gbo(args).parts();
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_targets_json_list_and_schedules() {
    let c = TestContainer::create("snapcli", false).await;
    let name = c.name.to_string();
    let (code, _, stderr) = gbo_tests::gbo(&["snapshot", "create", "gbot-no-such-container-x"]).parts();
    assert_eq!(code, 2);
    assert!(stderr.contains("container `gbot-no-such-container-x` does not exist"), "{stderr}");
    let (code, _, stderr) = gbo_tests::gbo(&["snapshot", "restore", &name, "nope"]).parts();
    assert_eq!(code, 2);
    assert!(stderr.contains(&format!("container `{name}` has no snapshot `nope`")), "{stderr}");
    assert_eq!(gbo_tests::lxc_ok(&["query", &format!("/1.0/instances/{name}/snapshots")]), "[]", "nothing changed");

    let (code, stdout, stderr) =
        gbo_tests::gbo(&["snapshot", "create", &name, "first", "--expires", "30m", "--output", "json"]).parts();
    assert_eq!(code, 0, "{stderr}");
    let created: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(created[0]["covers"], "container");
    gbo_tests::lxc_ok(&["snapshot", &name, "by-hand"]);
    let (code, stdout, _) = gbo_tests::gbo(&["snapshot", "list", &name, "--output", "json"]).parts();
    assert_eq!(code, 0);
    let list: Vec<serde_json::Value> = serde_json::from_str(&stdout).expect("json");
    let names: Vec<&str> = list.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["first", "by-hand"]);
    assert!(list[0]["expires_at"].is_string() && list[1]["expires_at"].is_null());

    let (code, stdout, stderr) = gbo_tests::gbo(&["snapshot", "prune", &name, "--keep-last", "1", "--dry-run"]).parts();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.lines().any(|l| l.contains("first") && l.contains("would delete")), "{stdout}");
    assert_eq!(
        gbo_tests::lxc_ok(&["query", &format!("/1.0/instances/{name}/snapshots")]).matches("/snapshots/").count(),
        2,
        "a dry run deletes nothing"
    );

    let (code, stdout, stderr) =
        gbo_tests::gbo(&["snapshot", "schedule", &name, "--every", "@daily", "--expires", "30m", "--lxd-native"])
            .parts();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("cover the container only"), "{stdout}");
    assert_eq!(gbo_tests::lxc_ok(&["config", "get", &name, "snapshots.expiry"]), "30M", "30 minutes, not 30 months");
    assert_eq!(gbo_tests::lxc_ok(&["config", "get", &name, "snapshots.schedule"]), "@daily");

    let root = tempfile::tempdir().expect("root");
    let (code, _, stderr) = gbo_tests::gbo(&[
        "snapshot",
        "schedule",
        &name,
        "--expires",
        "7d",
        "--keep-last",
        "3",
        "--keep-daily",
        "7",
        "--root",
        &root.path().display().to_string(),
    ])
    .parts();
    assert_eq!(code, 0, "{stderr}");
    let cron = std::fs::read_to_string(root.path().join(format!("etc/cron.d/gbo-snapshot-{name}")))
        .expect("cron file (no systemd here)");
    assert!(
        cron.contains(&format!("@daily root {} snapshot create {name} --expires 7d && ", env!("CARGO_BIN_EXE_gbo"))),
        "{cron}"
    );
    assert!(cron.contains("snapshot prune") && cron.contains("--keep-last 3 --keep-daily 7 --keep-weekly 0"), "{cron}");
}

/// Issue 13: `gbo snapshot list` with nothing named lists the `default` tenant's snapshots (the help says the
/// default tenant is `default`); it used to fail with "name a CONTAINER or give --tenant T".
#[tokio::test(flavor = "multi_thread")]
async fn list_with_nothing_named_lists_the_default_tenant() {
    let _lxd = gbo_tests::lxd().await;
    let (code, stdout, stderr) = gbo_tests::gbo(&["snapshot", "list", "--output", "json"]).parts();
    assert_eq!(code, 0, "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let rows = listed.as_array().expect("a list");
    assert!(rows.iter().all(|s| s["container"].as_str().is_some_and(|c| c.starts_with("default-"))), "{stdout}");
    let (_, _, with_tenant) = gbo_tests::gbo(&["snapshot", "list", "--tenant", "default", "--output", "json"]).parts();
    assert!(!with_tenant.contains("name a CONTAINER"), "{with_tenant}");
}
