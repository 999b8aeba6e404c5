//! Shared test support for gbo: a real LXD daemon (a missing daemon fails the test, in CI and out of it), the test
//! image, unique resource names, and containers that remove themselves.
//!
//! Every resource a test creates is named with [`unique_name`] (prefix `gbot-`), so `cargo xtask clean` can
//! remove leftovers of killed runs and parallel tests never collide.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lxd_client::{Client, CreateInstance, InstanceName, InstanceSource};

/// The image `cargo xtask lxd-up` builds for the tests (tables, cache, proxy and system roles baked in).
pub const TEST_IMAGE: &str = "gbo-test/debian-12";

/// Prefix of every resource tests create.
pub const TEST_PREFIX: &str = "gbot-";

/// Whether we run in CI (`CI=true`): there, missing prerequisites are failures (as they are everywhere).
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// A unique, valid instance name: `gbot-<tag>-<pid>-<n>`, at most 40 characters.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let tag: String = tag.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(16).collect::<String>().to_ascii_lowercase();
    format!("{TEST_PREFIX}{tag}-{pid}-{n}")
}

/// The local daemon. Panics, with what to run, when it cannot be reached: a test that needs LXD never skips.
pub async fn lxd() -> Client {
    let client = match Client::local() {
        Ok(c) => c,
        Err(e) => panic!("LXD is required for this test and is not reachable: {e}\nrun `cargo xtask lxd-up` first"),
    };
    if let Err(e) = client.server().await {
        panic!("LXD is required for this test and is not answering: {e}\nrun `cargo xtask lxd-up` first");
    }
    client
}

/// Panics unless the test image exists.
pub async fn require_test_image(lxd: &Client) {
    match lxd.image_alias(TEST_IMAGE).await {
        Ok(Some(_)) => {}
        Ok(None) => panic!("the test image {TEST_IMAGE} is missing: run `cargo xtask lxd-up`"),
        Err(e) => panic!("cannot read image aliases: {e}"),
    }
}

/// A container for one test, deleted when dropped (even on panic).
pub struct TestContainer {
    /// Its name.
    pub name: InstanceName,
    /// The client it was created with.
    pub lxd: Client,
}

impl TestContainer {
    /// Create (and optionally start) a container from the test image with no NIC.
    pub async fn create(tag: &str, start: bool) -> Self {
        Self::create_with(tag, start, |c| c).await
    }

    /// Create with extra settings applied to the request.
    pub async fn create_with(tag: &str, start: bool, adjust: impl FnOnce(CreateInstance) -> CreateInstance) -> Self {
        let lxd = lxd().await;
        require_test_image(&lxd).await;
        let name = InstanceName::new(unique_name(tag)).expect("unique names are valid");
        let request = adjust(CreateInstance::container(name.clone(), InstanceSource::alias(TEST_IMAGE)).config("user.gbo.test", "true")).start(start);
        lxd.create_instance(&request).await.unwrap_or_else(|e| panic!("creating {name}: {e}"));
        let container = Self { name, lxd };
        if start {
            container.wait_for_systemd().await;
        }
        container
    }

    /// Wait until systemd inside reports `running` or `degraded` (at most 60 s).
    pub async fn wait_for_systemd(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let req = lxd_client::ExecRequest::new(["systemctl", "is-system-running", "--wait"]).timeout(Duration::from_secs(30));
            if let Ok(out) = self.lxd.exec(&self.name, &req).await {
                let state = out.stdout_text();
                if state.contains("running") || state.contains("degraded") {
                    return;
                }
            }
            if std::time::Instant::now() > deadline {
                panic!("systemd in {} did not come up within 60 s", self.name);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        // Drop cannot await; the `lxc` CLI is the independent peer and always present with LXD.
        let _ = std::process::Command::new("lxc")
            .args(["delete", "--force", self.name.as_str()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A free TCP port on 127.0.0.1 (bound then released; tests never assume a seed port is free).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("binding 127.0.0.1:0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_valid_and_distinct() {
        let a = unique_name("Exec_Test");
        let b = unique_name("Exec_Test");
        assert_ne!(a, b);
        assert!(InstanceName::new(a.as_str()).is_ok(), "{a}");
        assert!(a.starts_with("gbot-exectest-"), "{a}");
    }
}
