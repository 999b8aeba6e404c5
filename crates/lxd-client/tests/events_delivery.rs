//! Events against the real daemon: a subscription sees the lifecycle of what is done after it, and a subscriber
//! that never reads does not hold up the daemon (the stream is drained by its own task).

mod common;

use std::time::{Duration, Instant};

use common::{client, Container};
use futures_util::StreamExt;

#[tokio::test]
async fn lifecycle_events_of_later_requests_are_seen() {
    let lxd = client().await;
    let events = lxd.events(&["lifecycle"]).await.expect("subscribe");
    tokio::pin!(events);
    let c = Container::create(&lxd, "events", false).await;
    let wanted = format!("/1.0/instances/{}", c.name);
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(event) = events.next().await {
            let event = event.expect("decodable event");
            let source = event.metadata.get("source").and_then(|s| s.as_str()).unwrap_or_default().to_string();
            if event.action() == Some("instance-created") && source == wanted {
                return event;
            }
        }
        panic!("the event stream ended");
    })
    .await
    .expect("instance-created within 30 s");
    assert_eq!(seen.kind, "lifecycle");
}

#[tokio::test]
async fn a_subscriber_that_never_reads_does_not_stall_the_daemon() {
    let lxd = client().await;
    // Subscribed, never polled, kept alive for the whole test.
    let idle = lxd.events(&["lifecycle", "operation", "logging"]).await.expect("subscribe");
    let c = Container::create(&lxd, "events-idle", false).await;
    let started = Instant::now();
    // Each config change emits lifecycle and operation events that the idle subscriber never reads.
    for i in 0..40 {
        let patch = serde_json::json!({ "config": { "user.gbot.counter": i.to_string() } });
        tokio::time::timeout(Duration::from_secs(20), lxd.patch_instance(&c.name, &patch))
            .await
            .unwrap_or_else(|_| panic!("PATCH {i} did not finish within 20 s"))
            .expect("patch");
    }
    let instance = lxd.instance(&c.name).await.expect("get");
    assert_eq!(instance.config.get("user.gbot.counter").map(String::as_str), Some("39"));
    assert!(started.elapsed() < Duration::from_secs(60), "40 changes took {:?}", started.elapsed());
    drop(idle);
}
