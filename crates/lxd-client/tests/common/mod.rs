//! Shared helpers for the integration tests: every test talks to the real local LXD daemon, names its resources
//! uniquely (`gbot-<tag>-<pid>-<n>`) and removes them when its guard drops, so tests run in parallel and leave
//! nothing behind. A missing daemon fails the test (it never skips).

#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use lxd_client::{Client, CreateInstance, InstanceName, InstanceSource};

/// The test image `cargo xtask lxd-up` imports.
pub const IMAGE: &str = "gbo-test/debian-12";

/// Connect to the local daemon and prove it answers, or fail the test saying how to bring it up.
pub async fn client() -> Client {
    let client = Client::local().unwrap_or_else(|e| panic!("no LXD daemon ({e}); run `cargo xtask lxd-up`"));
    if let Err(e) = client.server().await {
        panic!("LXD does not answer ({e}); run `cargo xtask lxd-up`");
    }
    client
}

/// A name unique to this process and call: `gbot-<tag>-<pid>-<n>`.
pub fn unique(tag: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!("gbot-{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A unique, validated instance name.
pub fn instance_name(tag: &str) -> InstanceName {
    InstanceName::new(unique(tag)).expect("generated names follow the instance rules")
}

/// Runs a cleanup command (through the `lxc` CLI, an independent peer) when dropped.
pub struct Cleanup {
    argv: Vec<String>,
}

impl Cleanup {
    /// Run `lxc <args...>` on drop; failures (already gone) are ignored.
    pub fn lxc<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { argv: args.into_iter().map(Into::into).collect() }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Started, not awaited: a test on a current-thread runtime may still hold a streaming response (a file
        // download) that the daemon must see closed before it can delete the instance; blocking here would keep
        // that connection open and deadlock. The `lxc` child outlives the test process if need be.
        let _ = Command::new("lxc")
            .args(&self.argv)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

/// A container removed (`lxc delete --force`) when dropped.
pub struct Container {
    /// Its name.
    pub name: InstanceName,
    _cleanup: Cleanup,
}

impl Container {
    /// Guard an instance name (whether or not it exists yet).
    pub fn guard(name: InstanceName) -> Self {
        let cleanup = Cleanup::lxc(["delete", "--force", name.as_str()]);
        Self { name, _cleanup: cleanup }
    }

    /// Create a container from the test image, started or not.
    pub async fn create(client: &Client, tag: &str, start: bool) -> Self {
        let guard = Self::guard(instance_name(tag));
        let request = CreateInstance::container(guard.name.clone(), InstanceSource::alias(IMAGE)).start(start);
        client.create_instance(&request).await.unwrap_or_else(|e| {
            panic!("creating {} from {IMAGE} failed ({e}); run `cargo xtask lxd-up` to import the image", guard.name)
        });
        guard
    }
}

/// `lxc <args>` and its stdout; panics on failure.
pub fn lxc(args: &[&str]) -> String {
    let out = Command::new("lxc").args(args).output().expect("the lxc CLI is installed");
    assert!(out.status.success(), "lxc {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `lxc <args>` status and combined output, without asserting success.
pub fn lxc_status(args: &[&str]) -> (bool, String) {
    let out = Command::new("lxc").args(args).output().expect("the lxc CLI is installed");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The status of an instance according to the `lxc` CLI (`RUNNING`, `STOPPED`), or `None` when absent.
pub fn lxc_state(name: &str) -> Option<String> {
    let out = lxc(&["list", "--format", "csv", "-c", "ns", &format!("^{name}$")]);
    out.lines().find_map(|l| l.split_once(',').filter(|(n, _)| *n == name).map(|(_, s)| s.to_string()))
}

/// Peak resident set size of this process so far (`VmHWM` in /proc/self/status), in KiB.
pub fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// An `AsyncWrite` that counts bytes and keeps none (to prove streaming without buffering).
#[derive(Default)]
pub struct CountingSink {
    /// Bytes written so far.
    pub bytes: u64,
}

impl tokio::io::AsyncWrite for CountingSink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.bytes += buf.len() as u64;
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A throw-away self-signed client certificate and its key (PEM), for HTTPS tests.
pub fn self_signed_identity(common_name: &str) -> (Vec<u8>, Vec<u8>) {
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509NameBuilder, X509};
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("curve");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_nid(Nid::COMMONNAME, common_name).expect("cn");
    let name = name.build();
    let mut cert = X509::builder().expect("builder");
    cert.set_version(2).expect("version");
    cert.set_subject_name(&name).expect("subject");
    cert.set_issuer_name(&name).expect("issuer");
    cert.set_pubkey(&key).expect("pubkey");
    cert.set_not_before(&Asn1Time::days_from_now(0).expect("now")).expect("not before");
    cert.set_not_after(&Asn1Time::days_from_now(1).expect("later")).expect("not after");
    cert.sign(&key, MessageDigest::sha256()).expect("sign");
    (cert.build().to_pem().expect("pem"), key.private_key_to_pem_pkcs8().expect("key pem"))
}
