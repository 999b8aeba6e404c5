//! Instance lifecycle against the real daemon: create without start, state changes, idempotent ensure_*, ETag
//! updates that keep the server's keys, PATCH, rename, delete of a running instance, not-found errors.

mod common;

use common::{client, instance_name, lxc, lxc_state, Container};
use std::time::Duration;

use lxd_client::{Client, Endpoint, Error, Flavor, InstanceName, StateAction, StateChange};

#[tokio::test]
async fn server_info_and_extensions() {
    let lxd = client().await;
    let server = lxd.server().await.expect("GET /1.0");
    assert_eq!(server.api_version, "1.0");
    assert_eq!(server.auth, "trusted", "the unix socket is trusted");
    assert!(!server.environment.server_version.is_empty());
    assert!(server.environment.certificate.contains("BEGIN CERTIFICATE"));
    // Extensions every supported daemon has, and one nobody has.
    assert!(lxd.has_extension("container_exec_recording").await.expect("extensions"));
    assert!(!lxd.has_extension("gbot-no-such-extension").await.expect("extensions"));
    match lxd.require_extension("gbot-no-such-extension", "upgrade LXD").await {
        Err(Error::MissingExtension { name, hint }) => {
            assert_eq!((name.as_str(), hint.as_str()), ("gbot-no-such-extension", "upgrade LXD"))
        }
        other => panic!("expected MissingExtension, got {other:?}"),
    }
    // The cache returns the same object; a fresh read agrees.
    let fresh = lxd.server_fresh().await.expect("GET /1.0 again");
    assert_eq!(fresh.api_extensions, server.api_extensions);
    // `lxc` agrees on the version.
    let version = lxc(&["version"]);
    assert!(version.contains(&server.environment.server_version), "{version}");
}

#[tokio::test]
async fn create_without_start_then_state_changes_are_idempotent() {
    let lxd = client().await;
    let c = Container::create(&lxd, "life", false).await;
    assert_eq!(lxc_state(c.name.as_str()).as_deref(), Some("STOPPED"), "created but not started");
    assert_eq!(lxd.instance(&c.name).await.expect("get").status, "Stopped");

    assert!(lxd.ensure_running(&c.name).await.expect("start"), "first ensure_running starts it");
    assert!(!lxd.ensure_running(&c.name).await.expect("no-op"), "second ensure_running does nothing");
    assert_eq!(lxc_state(c.name.as_str()).as_deref(), Some("RUNNING"));
    let pid_before = lxd.instance_state(&c.name).await.expect("state").pid;
    assert!(pid_before > 0);

    lxd.set_state(&c.name, &StateChange::new(StateAction::Restart).force(true)).await.expect("restart");
    let state = lxd.instance_state(&c.name).await.expect("state");
    assert_eq!(state.status, "Running");
    assert_ne!(state.pid, pid_before, "restart gives a new init process");

    // Listing: recursion=1 carries the status, recursion=2 the live state.
    let listed = lxd.instances().await.expect("list");
    let mine = listed.iter().find(|i| i.name == c.name.as_str()).expect("listed");
    assert!(mine.is_running());
    let full = lxd.instances_full().await.expect("list full");
    let mine = full.iter().find(|i| i.name == c.name.as_str()).expect("listed");
    assert!(mine.state.as_ref().expect("recursion=2 has state").pid > 0);
    assert!(lxd.instance_full(&c.name).await.expect("full").state.is_some());
    assert!(lxd.instance_names().await.expect("names").contains(&c.name.to_string()));

    assert!(lxd.ensure_stopped(&c.name, Duration::from_secs(10)).await.expect("stop"));
    assert!(!lxd.ensure_stopped(&c.name, Duration::from_secs(10)).await.expect("no-op"));
    assert_eq!(lxc_state(c.name.as_str()).as_deref(), Some("STOPPED"));
    // Stopping a stopped instance directly is an error from the daemon: that is why ensure_stopped reads first.
    let err = lxd
        .set_state(&c.name, &StateChange::new(StateAction::Stop).timeout(Duration::from_secs(10)))
        .await
        .expect_err("already stopped");
    assert!(matches!(err, Error::Api { .. } | Error::OperationFailed { .. } | Error::Conflict { .. }), "{err:?}");
}

#[tokio::test]
async fn update_keeps_volatile_keys_and_honours_etags() {
    let lxd = client().await;
    let c = Container::create(&lxd, "etag", false).await;
    let (before, etag) = lxd.instance_with_etag(&c.name).await.expect("get with etag");
    let etag = etag.expect("GET returns an ETag");
    let volatile_before: Vec<_> =
        before.config.iter().filter(|(k, _)| k.starts_with("volatile.") || k.starts_with("image.")).collect();
    assert!(!volatile_before.is_empty(), "a fresh instance has volatile/image keys");

    let changed = lxd
        .update_instance(&c.name, |put| {
            put.config.insert("user.gbot.tier".into(), "1".into());
        })
        .await
        .expect("update");
    assert!(changed);
    let unchanged = lxd
        .update_instance(&c.name, |put| {
            put.config.insert("user.gbot.tier".into(), "1".into());
        })
        .await
        .expect("update again");
    assert!(!unchanged, "the same change twice is not a change (no volatile drift)");
    assert_eq!(lxc(&["config", "get", c.name.as_str(), "user.gbot.tier"]).trim(), "1");

    let after = lxd.instance(&c.name).await.expect("get");
    for (key, value) in &volatile_before {
        if key.as_str() == "volatile.last_state.power" {
            continue;
        }
        assert_eq!(after.config.get(key.as_str()), Some(*value), "{key} kept");
    }

    // The ETag from before the update is stale now.
    let mut put = before.to_put();
    put.description = "stale write".into();
    let err = lxd.put_instance(&c.name, &put, Some(&etag)).await.expect_err("stale ETag");
    assert!(err.is_precondition_failed(), "{err:?}");
    assert_ne!(lxd.instance(&c.name).await.expect("get").description, "stale write");

    // PATCH merges.
    lxd.patch_instance(&c.name, &serde_json::json!({ "config": { "user.gbot.patched": "yes" } })).await.expect("patch");
    assert_eq!(lxc(&["config", "get", c.name.as_str(), "user.gbot.patched"]).trim(), "yes");
    assert_eq!(lxc(&["config", "get", c.name.as_str(), "user.gbot.tier"]).trim(), "1", "PATCH keeps other keys");
}

/// Concurrent read-modify-writes of one instance (install's rewire beside its own device writes) all land: a write
/// that meets a newer ETag, or that LXD refuses because a concurrent update holds the instance ("A matching
/// non-reusable operation has now succeeded"), reads again and retries. Before, the fourth concurrent writer and the
/// refused one failed.
#[tokio::test]
async fn concurrent_updates_of_one_instance_all_land() {
    let lxd = client().await;
    let c = Container::create(&lxd, "concurrent", false).await;
    let writers = (0..8).map(|i| {
        let lxd = lxd.clone();
        let name = c.name.clone();
        tokio::spawn(async move {
            lxd.update_instance(&name, |put| {
                put.config.insert(format!("user.gbot.writer{i}"), i.to_string());
            })
            .await
        })
    });
    for (i, writer) in futures_util::future::join_all(writers).await.into_iter().enumerate() {
        assert!(writer.expect("task").expect("update"), "writer {i} changed the instance");
    }
    let after = lxd.instance(&c.name).await.expect("get");
    for i in 0..8 {
        assert_eq!(after.config.get(&format!("user.gbot.writer{i}")), Some(&i.to_string()), "writer {i}'s key kept");
    }
}

#[tokio::test]
async fn rename_and_delete_running() {
    let lxd = client().await;
    let c = Container::create(&lxd, "ren", false).await;
    let renamed = Container::guard(instance_name("renamed"));
    lxd.rename_instance(&c.name, &renamed.name).await.expect("rename");
    assert_eq!(lxc_state(c.name.as_str()), None, "old name gone");
    assert_eq!(lxc_state(renamed.name.as_str()).as_deref(), Some("STOPPED"));
    assert!(lxd.instance(&c.name).await.expect_err("old name").is_not_found());

    // Delete a RUNNING instance: LXD 5.0.2 has no instance_force_delete, the client stops it first.
    lxd.ensure_running(&renamed.name).await.expect("start");
    let force_delete = lxd.has_extension("instance_force_delete").await.expect("extensions");
    lxd.delete_instance(&renamed.name)
        .await
        .unwrap_or_else(|e| panic!("delete running (force_delete={force_delete}): {e}"));
    assert_eq!(lxc_state(renamed.name.as_str()), None);
    assert!(!lxd.delete_instance_if_exists(&renamed.name).await.expect("absent is fine"));
}

#[tokio::test]
async fn missing_instances_are_not_found() {
    let lxd = client().await;
    let ghost = instance_name("ghost");
    assert!(lxd.instance(&ghost).await.expect_err("absent").is_not_found());
    assert!(lxd.instance_opt(&ghost).await.expect("opt").is_none());
    assert!(lxd.set_state(&ghost, &StateChange::new(StateAction::Start)).await.expect_err("absent").is_not_found());
    assert!(lxd.delete_instance(&ghost).await.expect_err("absent").is_not_found());
    assert!(lxd.ensure_running(&ghost).await.expect_err("absent").is_not_found());
    let err = lxd.instance_state(&ghost).await.expect_err("absent");
    assert!(err.is_not_found() && err.to_string().contains(ghost.as_str()), "{err}");
}

#[tokio::test]
async fn bad_input_is_refused_before_any_request() {
    // A client whose socket does not exist: any request would fail with SocketNotFound, so an InvalidName or
    // InvalidDevice error proves nothing was sent.
    let nowhere =
        Client::new(Endpoint::Unix("/nonexistent/gbot/unix.socket".into()), Flavor::Lxd).expect("lazy client");
    let err = InstanceName::new("vector_db").expect_err("underscore");
    assert!(err.to_string().contains("instance names are"), "{err}");
    assert!(InstanceName::new("1abc").is_err(), "LXD 5.0.2 refuses a leading digit");
    let name = InstanceName::new("gbot-nowhere").expect("valid");
    let err = nowhere
        .push_bytes(&name, "relative/path", "x", lxd_client::FileOptions::root(0o644))
        .await
        .expect_err("relative");
    assert!(matches!(err, Error::InvalidName { kind: "file path", .. }), "{err:?}");
    let err =
        nowhere.exec_output(&name, &lxd_client::ExecRequest::new(Vec::<String>::new())).await.expect_err("empty argv");
    assert!(matches!(err, Error::EmptyCommand { .. }), "{err:?}");
    let err = "tcp:localhost:80".parse::<lxd_client::ProxyAddress>().expect_err("hostname");
    assert!(err.contains("expected `tcp:"), "{err}");

    // And with no daemon at that path, the error lists it and says what to do.
    let err = nowhere.server().await.expect_err("no socket");
    assert!(matches!(err, Error::SocketNotFound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("/nonexistent/gbot/unix.socket") && text.contains("install LXD"), "{text}");
    assert!(err.is_unreachable());
}

/// Give a running container a service whose stop takes 4 s, so a clean stop of the container stays in flight that
/// long.
async fn slow_to_stop(lxd: &Client, name: &InstanceName) {
    // Until systemd answers on its bus (it prints `offline` before, the state once boot is over), then the unit.
    let script = "until state=$(systemctl is-system-running --wait 2>/dev/null); \
                  [ -n \"$state\" ] && [ \"$state\" != offline ]; do sleep 0.1; done; \
                  printf '[Service]\\nExecStart=/bin/sleep infinity\\nExecStop=/bin/sleep 4\\nTimeoutStopSec=30\\n' \
                  > /etc/systemd/system/gbot-slow.service && systemctl daemon-reload && systemctl start gbot-slow";
    let out = lxd.exec_output(name, &lxd_client::ExecRequest::new(["sh", "-c", script])).await.expect("slow unit");
    assert!(out.success(), "{}", out.stderr_text());
}

/// Start `lxc <action> <name>` (another client) and return once its operation (`description`) is running on the
/// instance.
async fn in_flight(lxd: &Client, action: &str, description: &str, name: &InstanceName) -> tokio::process::Child {
    let other = tokio::process::Command::new("lxc").args([action, name.as_str()]).spawn().expect("lxc");
    let url = format!("/1.0/instances/{name}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let running = lxd.operations().await.expect("operations").into_iter().any(|op| {
            op.status_code < 200
                && op.description == description
                && op.resources.as_ref().is_some_and(|r| r.values().flatten().any(|u| u == &url))
        });
        if running {
            return other;
        }
        assert!(std::time::Instant::now() < deadline, "`lxc {action} {name}` never showed as an operation");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A state change or a delete that meets another client's operation in flight waits for it, instead of failing
/// with "Instance is busy running a stop operation" (seen in `cargo xtask bench client`'s clean-up) or "The
/// instance is already running" (a start sent while a stop is under way).
#[tokio::test]
async fn delete_and_start_wait_for_an_operation_in_flight() {
    let lxd = client().await;

    let c = Container::create(&lxd, "busy", true).await;
    slow_to_stop(&lxd, &c.name).await;
    let mut stop = in_flight(&lxd, "stop", "Stopping instance", &c.name).await;
    lxd.set_state(&c.name, &StateChange::new(StateAction::Start)).await.expect("start waits for the stop in flight");
    assert!(stop.wait().await.expect("lxc stop").success(), "the other client's stop went through");
    assert_eq!(lxc_state(c.name.as_str()).as_deref(), Some("RUNNING"));

    slow_to_stop(&lxd, &c.name).await;
    let mut stop = in_flight(&lxd, "stop", "Stopping instance", &c.name).await;
    lxd.delete_instance(&c.name).await.expect("delete waits for the stop in flight");
    assert!(stop.wait().await.expect("lxc stop").success(), "the other client's stop went through");
    assert_eq!(lxc_state(c.name.as_str()), None, "deleted");

    let c = Container::create(&lxd, "busy-start", false).await;
    let mut start = in_flight(&lxd, "start", "Starting instance", &c.name).await;
    lxd.delete_instance(&c.name).await.expect("delete waits for the start in flight");
    assert!(start.wait().await.expect("lxc start").success(), "the other client's start went through");
    assert_eq!(lxc_state(c.name.as_str()), None, "deleted");
}
