//! Issue 14 item 1: artifacts verified the way their vendors publish them, against a loopback mirror laid out like
//! each vendor's download site (dl.min.io, releases.hashicorp.com, codeberg/code.forgejo.org, GitHub releases),
//! signed with test keys made here by the real `minisign` and `gpg` and added through the tenant file's `[trust]`.
//!
//! The artifacts served are stand-ins (no MinIO, Vault, ... binary can be fetched here): for the end-to-end
//! install, a MinIO stand-in script answering its health port with Caddy's `respond` (from the test image).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gbo_components::{Role, TenantFile};
use gbo_ops::install::artifact::{self, cache_path, ArtifactPolicy};
use gbo_tests::programs::require_program;
use gbo_tests::{gbo_async, lxd, require_test_image, TestTenant, TEST_IMAGE};
use sha2::{Digest, Sha256};

/// How the mirror answers one path.
#[derive(Clone)]
enum Served {
    /// The bytes, whole.
    Whole(Vec<u8>),
    /// The first `usize` bytes, announced with the whole length (a connection cut mid-download).
    Truncated(Vec<u8>, usize),
}

/// An in-process HTTP/1.0 server on 127.0.0.1 serving a path table; any other path is a 404.
struct Mirror {
    port: u16,
    files: Arc<Mutex<HashMap<String, Served>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mirror {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let files: Arc<Mutex<HashMap<String, Served>>> = Arc::default();
        let table = files.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let table = table.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let served = table.lock().expect("table").get(&path).cloned();
                    let (head, body) = match served {
                        Some(Served::Whole(body)) => {
                            (format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()), body)
                        }
                        Some(Served::Truncated(body, cut)) => {
                            (format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()), body[..cut].to_vec())
                        }
                        None => ("HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(), Vec::new()),
                    };
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { port, files, task }
    }

    fn put(&self, path: &str, served: Served) {
        self.files.lock().expect("table").insert(path.to_string(), served);
    }

    fn remove(&self, path: &str) {
        self.files.lock().expect("table").remove(path);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> Vec<u8> {
    let mut command = std::process::Command::new(require_program(program));
    command.args(args).stdin(std::process::Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A minisign key pair made by the real `minisign` (no password).
struct MinisignKey {
    dir: tempfile::TempDir,
}

impl MinisignKey {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (public, secret) = (dir.path().join("key.pub"), dir.path().join("key.sec"));
        run("minisign", &["-G", "-W", "-p", public.to_str().expect("utf8"), "-s", secret.to_str().expect("utf8")], &[]);
        Self { dir }
    }

    /// The public key line (`RW...`).
    fn public(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("key.pub")).expect("key.pub");
        text.lines().nth(1).expect("key line").trim().to_string()
    }

    fn sign(&self, content: &[u8]) -> Vec<u8> {
        let file = self.dir.path().join(format!("content-{}", rand_suffix()));
        std::fs::write(&file, content).expect("content");
        let secret = self.dir.path().join("key.sec");
        run("minisign", &["-S", "-s", secret.to_str().expect("utf8"), "-m", file.to_str().expect("utf8")], &[]);
        std::fs::read(format!("{}.minisig", file.display())).expect("minisig")
    }
}

/// An OpenPGP signing key made by the real `gpg` in a home of its own.
struct PgpKey {
    home: tempfile::TempDir,
}

impl PgpKey {
    fn new(uid: &str) -> Self {
        let home = tempfile::tempdir().expect("tempdir");
        run(
            "gpg",
            &["--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"],
            &[("GNUPGHOME", home.path())],
        );
        Self { home }
    }

    fn public(&self) -> String {
        String::from_utf8(run("gpg", &["--batch", "--armor", "--export"], &[("GNUPGHOME", self.home.path())]))
            .expect("armored key")
    }

    /// A detached signature, armored or binary.
    fn sign(&self, content: &[u8], armor: bool) -> Vec<u8> {
        let file = self.home.path().join(format!("content-{}", rand_suffix()));
        std::fs::write(&file, content).expect("content");
        let sig = self.home.path().join(format!("sig-{}", rand_suffix()));
        let mut args =
            vec!["--batch", "--yes", "--detach-sign", "-o", sig.to_str().expect("utf8"), file.to_str().expect("utf8")];
        if armor {
            args.insert(1, "--armor");
        }
        run("gpg", &args, &[("GNUPGHOME", self.home.path())]);
        std::fs::read(sig).expect("signature")
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn toml_string(text: &str) -> String {
    format!("\"\"\"\n{text}\"\"\"")
}

/// The tenant file pointing `role`'s artifact at the mirror and trusting the test keys.
fn tenant_file(role: Role, version: &str, url: &str, sha256: Option<&str>, trust: &str) -> TenantFile {
    let pin = sha256.map(|s| format!("sha256 = \"{s}\"\n")).unwrap_or_default();
    let text = format!("[versions.{role}]\nversion = \"{version}\"\nurl = \"{url}\"\n{pin}\n{trust}");
    TenantFile::parse(&text).unwrap_or_else(|e| panic!("tenant file: {e}\n{text}"))
}

fn policy(cache: &Path, file: &TenantFile) -> ArtifactPolicy {
    ArtifactPolicy {
        cache_dir: cache.to_path_buf(),
        download: false,
        allow_unverified: false,
        trust: file.trust.clone(),
    }
}

/// Fetch `role`'s artifact through `file`: Ok with the cached path, or the refusal's text (and the cache holds no
/// file of it then).
async fn fetch(cache: &Path, role: Role, file: &TenantFile) -> Result<PathBuf, String> {
    let artifact = gbo_components::artifacts::artifacts(role, file).into_iter().next().expect("an artifact");
    let policy = policy(cache, file);
    match artifact::fetch(&policy, &artifact).await {
        Ok(path) => Ok(path),
        Err(e) => {
            assert!(!cache_path(&policy, &artifact).exists(), "a refused download left {}", artifact.url);
            let leftovers: Vec<_> = std::fs::read_dir(cache)
                .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(leftovers.is_empty(), "a refused download left files in the cache: {leftovers:?}");
            Err(e.to_string())
        }
    }
}

/// Each vendor's layout with its signature scheme: a good artifact is fetched; a wrong checksum, a bad
/// signature, a missing signature, a key gbo does not trust and a truncated download are refused and leave
/// nothing in the cache.
#[tokio::test]
async fn every_signed_vendor_layout_is_verified_and_each_fault_refused() {
    let mirror = Mirror::start().await;
    let minisign = MinisignKey::new();
    let stranger_minisign = MinisignKey::new();
    let pgp = PgpKey::new("gbo test mirror <mirror@gbo.invalid>");
    let stranger_pgp = PgpKey::new("someone else <else@gbo.invalid>");
    let trust = format!(
        "[trust.mirror-minisign]\nminisign = \"{}\"\n\n[trust.mirror-pgp]\nopenpgp = {}\n",
        minisign.public(),
        toml_string(&pgp.public())
    );

    // MinIO (dl.min.io): <binary>, <binary>.sha256sum, <binary>.minisig (minisign over the binary).
    let version = "RELEASE.2024-10-13T13-34-11Z";
    let dir = "/server/minio/release/linux-amd64/archive";
    let name = format!("minio.{version}");
    let body = b"#!/bin/sh\n# MinIO stand-in\n".repeat(100);
    let sums = format!("{}  {name}\n", sha256(&body));
    let good = |m: &Mirror| {
        m.put(&format!("{dir}/{name}"), Served::Whole(body.clone()));
        m.put(&format!("{dir}/{name}.sha256sum"), Served::Whole(sums.clone().into_bytes()));
        m.put(&format!("{dir}/{name}.minisig"), Served::Whole(minisign.sign(&body)));
    };
    let file = tenant_file(Role::Drive, version, &mirror.url(&format!("{dir}/{name}")), None, &trust);
    check_faults(
        &mirror,
        Role::Drive,
        &file,
        good,
        &format!("{dir}/{name}"),
        &format!("{dir}/{name}.sha256sum"),
        &format!("{dir}/{name}.minisig"),
        &|content| minisign.sign(content),
        &|content| stranger_minisign.sign(content),
        &body,
    )
    .await;

    // Vault (releases.hashicorp.com): vault_<v>_SHA256SUMS and its binary detached signature .sig.
    let version = "1.15.4";
    let dir = "/vault/1.15.4";
    let name = "vault_1.15.4_linux_amd64.zip";
    let body = zip_with("vault", b"#!/bin/sh\n# Vault stand-in\n");
    let other = "0".repeat(64);
    let sums = format!("{other}  vault_1.15.4_darwin_arm64.zip\n{}  {name}\n", sha256(&body));
    let sums_path = format!("{dir}/vault_{version}_SHA256SUMS");
    let sig_path = format!("{sums_path}.sig");
    let good = |m: &Mirror| {
        m.put(&format!("{dir}/{name}"), Served::Whole(body.clone()));
        m.put(&sums_path, Served::Whole(sums.clone().into_bytes()));
        m.put(&sig_path, Served::Whole(pgp.sign(sums.as_bytes(), false)));
    };
    let file = tenant_file(Role::Vault, version, &mirror.url(&format!("{dir}/{name}")), None, &trust);
    // HashiCorp signs the checksum file: a bad signature is one over other sums.
    check_faults(
        &mirror,
        Role::Vault,
        &file,
        good,
        &format!("{dir}/{name}"),
        &sums_path,
        &sig_path,
        &|_| pgp.sign(b"other sums\n", false),
        &|_| stranger_pgp.sign(sums.as_bytes(), false),
        &body,
    )
    .await;

    // Forgejo and its runner (codeberg.org, code.forgejo.org): <binary>.sha256 and an armored <binary>.asc.
    for (role, version, dir, name) in [
        (Role::Alm, "14.0.2", "/forgejo/forgejo/releases/download/v14.0.2", "forgejo-14.0.2-linux-amd64"),
        (Role::AlmCi, "6.3.1", "/forgejo/runner/releases/download/v6.3.1", "forgejo-runner-6.3.1-linux-amd64"),
    ] {
        let body = format!("#!/bin/sh\n# {name} stand-in\n").into_bytes();
        let sums = format!("{}  {name}\n", sha256(&body));
        let good = |m: &Mirror| {
            m.put(&format!("{dir}/{name}"), Served::Whole(body.clone()));
            m.put(&format!("{dir}/{name}.sha256"), Served::Whole(sums.clone().into_bytes()));
            m.put(&format!("{dir}/{name}.asc"), Served::Whole(pgp.sign(&body, true)));
        };
        let file = tenant_file(role, version, &mirror.url(&format!("{dir}/{name}")), None, &trust);
        check_faults(
            &mirror,
            role,
            &file,
            good,
            &format!("{dir}/{name}"),
            &format!("{dir}/{name}.sha256"),
            &format!("{dir}/{name}.asc"),
            &|content| pgp.sign(content, true),
            &|content| stranger_pgp.sign(content, true),
            &body,
        )
        .await;
    }
}

/// A zip holding `member`, made with Python's zipfile (python3 is on the host program list).
fn zip_with(member: &str, content: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(member), content).expect("member");
    let zip = dir.path().join("a.zip");
    let script = format!(
        "import zipfile; z = zipfile.ZipFile({:?}, 'w'); z.write({:?}, {member:?}); z.close()",
        zip.display().to_string(),
        dir.path().join(member).display().to_string()
    );
    run("python3", &["-c", &script], &[]);
    std::fs::read(zip).expect("zip")
}

#[allow(clippy::too_many_arguments)]
async fn check_faults(
    mirror: &Mirror,
    role: Role,
    file: &TenantFile,
    good: impl Fn(&Mirror),
    artifact_path: &str,
    sums_path: &str,
    sig_path: &str,
    bad_signature: &dyn Fn(&[u8]) -> Vec<u8>,
    stranger_signature: &dyn Fn(&[u8]) -> Vec<u8>,
    body: &[u8],
) {
    let fresh = || tempfile::tempdir().expect("cache");
    // Good.
    good(mirror);
    let cache = fresh();
    let path = fetch(cache.path(), role, file).await.unwrap_or_else(|e| panic!("{role}: the good artifact: {e}"));
    assert_eq!(std::fs::read(&path).expect("cached"), body, "{role}");
    let record = std::fs::read_to_string(format!("{}.verified", path.display())).expect("verification record");
    assert!(record.contains("signature good"), "{role}: {record}");

    // Wrong checksum: the checksum file names another SHA-256.
    good(mirror);
    mirror.put(
        sums_path,
        Served::Whole(
            format!("{}  {}\n", "1".repeat(64), artifact_path.rsplit('/').next().unwrap_or_default()).into_bytes(),
        ),
    );
    let err = fetch(fresh().path(), role, file).await.expect_err("wrong checksum");
    assert!(err.contains("checksum mismatch"), "{role}: {err}");

    // Bad signature: made by the trusted key, over other content.
    good(mirror);
    mirror.put(sig_path, Served::Whole(bad_signature(b"something else")));
    let err = fetch(fresh().path(), role, file).await.expect_err("bad signature");
    assert!(err.contains("bad ") && err.contains("signature"), "{role}: {err}");

    // Missing signature.
    good(mirror);
    mirror.remove(sig_path);
    let err = fetch(fresh().path(), role, file).await.expect_err("missing signature");
    assert!(err.contains("signature") && err.contains("is missing"), "{role}: {err}");

    // Unknown key: a valid signature by a key nobody trusts.
    good(mirror);
    let signed = stranger_signature(body);
    mirror.put(sig_path, Served::Whole(signed));
    let err = fetch(fresh().path(), role, file).await.expect_err("unknown key");
    assert!(err.contains("does not trust"), "{role}: {err}");

    // Truncated download.
    good(mirror);
    mirror.put(artifact_path, Served::Truncated(body.to_vec(), body.len() / 2));
    let err = fetch(fresh().path(), role, file).await.expect_err("truncated");
    assert!(err.contains("truncated") || err.contains("downloading"), "{role}: {err}");
    good(mirror);
}

/// The roles whose vendors sign nothing (or whose key gbo does not ship) are verified by a `[versions]` SHA-256:
/// a good pin installs, a wrong one is refused, none is refused naming what is not verified, and
/// `--allow-unverified` says the same as a note (still checking the vendor's checksum file where there is one).
#[tokio::test]
async fn unsigned_roles_are_verified_by_their_sha256_pin_and_refused_without_one() {
    let mirror = Mirror::start().await;
    let cases = [
        (Role::Dns, "1.11.1", "/coredns/coredns/releases/download/v1.11.1/coredns_1.11.1_linux_amd64.tgz", true),
        (
            Role::VectorDb,
            "1.12.4",
            "/qdrant/qdrant/releases/download/v1.12.4/qdrant-x86_64-unknown-linux-gnu.tar.gz",
            false,
        ),
        (
            Role::Email,
            "0.10.7",
            "/stalwartlabs/mail-server/releases/download/v0.10.7/stalwart-mail-x86_64-unknown-linux-gnu.tar.gz",
            false,
        ),
        (Role::TableEditor, "0.258.7", "/nocodb/nocodb/releases/download/0.258.7/Noco-linux-x64", false),
        (Role::Llm, "b7345", "/ggml-org/llama.cpp/releases/download/b7345/llama-b7345-bin-ubuntu-x64.zip", false),
        (Role::System, "2026.1", "/GeneralBots/botserver/releases/download/2026.1/botserver", false),
    ];
    for (role, version, path, sums) in cases {
        let body = format!("stand-in for {role} {version}\n").into_bytes();
        let name = path.rsplit('/').next().unwrap_or_default();
        mirror.put(path, Served::Whole(body.clone()));
        if sums {
            mirror.put(&format!("{path}.sha256"), Served::Whole(format!("{}  {name}\n", sha256(&body)).into_bytes()));
        }
        let url = mirror.url(path);
        let good = tenant_file(role, version, &url, Some(&sha256(&body)), "");
        let cache = tempfile::tempdir().expect("cache");
        let fetched = fetch(cache.path(), role, &good).await.unwrap_or_else(|e| panic!("{role}: {e}"));
        assert_eq!(std::fs::read(fetched).expect("cached"), body);

        let wrong = tenant_file(role, version, &url, Some(&"2".repeat(64)), "");
        let err = fetch(tempfile::tempdir().expect("cache").path(), role, &wrong).await.expect_err("wrong pin");
        assert!(err.contains("checksum mismatch"), "{role}: {err}");

        let unpinned = tenant_file(role, version, &url, None, "");
        let err = fetch(tempfile::tempdir().expect("cache").path(), role, &unpinned).await.expect_err("no pin");
        assert!(err.contains("no sha256 pin") && err.contains("--allow-unverified"), "{role}: {err}");

        if sums {
            // The vendor's (unsigned) checksum file is still checked when the pin is waived.
            mirror.put(&format!("{path}.sha256"), Served::Whole(format!("{}  {name}\n", "3".repeat(64)).into_bytes()));
            let artifact = gbo_components::artifacts::artifacts(role, &unpinned).remove(0);
            let mut allowed = policy(tempfile::tempdir().expect("cache").path(), &unpinned);
            allowed.allow_unverified = true;
            let err = artifact::fetch(&allowed, &artifact).await.expect_err("sums mismatch");
            assert!(err.to_string().contains("checksum mismatch"), "{role}: {err}");
        }
    }
}

fn install_args(t: &TestTenant, stack: &Path, cache: &Path, file: &Path) -> Vec<String> {
    [
        "install",
        "--tenant",
        &t.name,
        "--image",
        TEST_IMAGE,
        "--stack-dir",
        &stack.display().to_string(),
        "--artifact-cache",
        &cache.display().to_string(),
        "--file",
        &file.display().to_string(),
        "drive",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn container_exists(name: &str) -> bool {
    std::process::Command::new("lxc")
        .args(["info", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// End to end with the real daemon: `gbo install drive` takes MinIO from a mirror laid out like dl.min.io, signed
/// by a key added under `[trust]`, and installs it; each fault exits 2 and leaves no container and no stack dir.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gbo_install_takes_a_signed_artifact_from_a_mirror_and_refuses_each_fault_leaving_nothing() {
    let client = lxd().await;
    require_test_image(&client).await;
    let mirror = Mirror::start().await;
    let key = MinisignKey::new();
    let stranger = MinisignKey::new();
    let version = "RELEASE.2024-10-13T13-34-11Z";
    let dir = "/server/minio/release/linux-amd64/archive";
    let name = format!("minio.{version}");
    let (bin, sums_path, sig_path) =
        (format!("{dir}/{name}"), format!("{dir}/{name}.sha256sum"), format!("{dir}/{name}.minisig"));
    // The stand-in answers MinIO's health port (Caddy's respond, from the test image).
    let body = b"#!/bin/sh\n# gbo test stand-in for MinIO: no MinIO binary can be installed here.\nexec /usr/bin/caddy respond --listen 127.0.0.1:9000 ok\n".to_vec();
    let sums = format!("{}  {name}\n", sha256(&body));
    let good = || {
        mirror.put(&bin, Served::Whole(body.clone()));
        mirror.put(&sums_path, Served::Whole(sums.clone().into_bytes()));
        mirror.put(&sig_path, Served::Whole(key.sign(&body)));
    };
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("gbo.toml");
    std::fs::write(
        &file,
        format!(
            "[versions.drive]\nversion = \"{version}\"\nurl = \"{}\"\n\n[trust.mirror]\nminisign = \"{}\"\nroles = [\"drive\"]\n",
            mirror.url(&bin),
            key.public()
        ),
    )
    .expect("gbo.toml");

    type Fault<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);
    let faults: Vec<Fault> = vec![
        (
            "wrong checksum",
            Box::new(|| mirror.put(&sums_path, Served::Whole(format!("{}  {name}\n", "1".repeat(64)).into_bytes()))),
            "checksum mismatch",
        ),
        (
            "bad signature",
            Box::new(|| mirror.put(&sig_path, Served::Whole(key.sign(b"other")))),
            "bad minisign signature",
        ),
        ("missing signature", Box::new(|| mirror.remove(&sig_path)), "is missing"),
        ("unknown key", Box::new(|| mirror.put(&sig_path, Served::Whole(stranger.sign(&body)))), "does not trust"),
        (
            "truncated download",
            Box::new(|| mirror.put(&bin, Served::Truncated(body.clone(), body.len() / 3))),
            "download",
        ),
    ];
    for (what, break_it, expected) in &faults {
        good();
        break_it();
        let t = TestTenant::new();
        let stack = t.stack.path().join("stack");
        let cache = work.path().join(format!("cache-{}", t.name));
        let run = gbo_async(install_args(&t, &stack, &cache, &file)).await;
        assert_eq!(run.code, 2, "{what}: exit code\n{}", run.all());
        assert!(run.all().contains(expected), "{what}: expected {expected:?}\n{}", run.all());
        assert!(!container_exists(&t.container("drive")), "{what}: a container was created");
        assert!(!stack.exists(), "{what}: the stack dir was created");
        assert!(
            !cache_path(
                &policy(&cache, &TenantFile::default()),
                &gbo_components::artifacts::artifacts(
                    Role::Drive,
                    &TenantFile::parse(&std::fs::read_to_string(&file).expect("file")).expect("parse")
                )[0]
            )
            .exists(),
            "{what}: cached"
        );
    }

    // The good artifact installs and runs.
    good();
    let t = TestTenant::new();
    let stack = t.stack.path().join("stack");
    let cache = work.path().join("cache-good");
    let run = gbo_async(install_args(&t, &stack, &cache, &file)).await;
    assert_eq!(run.code, 0, "install failed:\n{}", run.all());
    assert!(container_exists(&t.container("drive")));
    let installed = std::process::Command::new("lxc")
        .args(["exec", &t.container("drive"), "--", "sha256sum", "/opt/gbo/bin/minio"])
        .output()
        .expect("lxc exec");
    assert!(String::from_utf8_lossy(&installed.stdout).starts_with(&sha256(&body)), "the verified file is installed");
}

/// Issue 14 item 5: `gbo install` with no arguments installs the default set (tables, drive, cache); when drive's
/// artifact cannot be fetched (here: its mirror is a loopback port nobody listens on, as a host without network
/// would fail), it names the role, why, and the offline ways, exits 2, and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gbo_install_without_arguments_names_the_roles_it_cannot_fetch_and_the_offline_way() {
    let client = lxd().await;
    require_test_image(&client).await;
    let key = MinisignKey::new();
    let closed = gbo_tests::free_port();
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("gbo.toml");
    std::fs::write(
        &file,
        format!(
            "[versions.drive]\nversion = \"RELEASE.2024-10-13T13-34-11Z\"\nurl = \"http://127.0.0.1:{closed}/server/minio/release/linux-amd64/archive/minio.RELEASE.2024-10-13T13-34-11Z\"\n\n[trust.mirror]\nminisign = \"{}\"\n",
            key.public()
        ),
    )
    .expect("gbo.toml");
    let t = TestTenant::new();
    let stack = t.stack.path().join("stack");
    let mut args = install_args(&t, &stack, &work.path().join("cache"), &file);
    args.pop(); // no roles: the default set
    args.push("--download".into());
    let run = gbo_async(args).await;
    assert_eq!(run.code, 2, "{}", run.all());
    let text = run.all();
    assert!(
        text.contains("cannot install drive") && text.contains("Offline:") && text.contains("--artifact-cache"),
        "{text}"
    );
    for role in ["tables", "drive", "cache"] {
        assert!(!container_exists(&t.container(role)), "{role} was created");
    }
    assert!(!stack.exists(), "the stack dir was created");
}

/// Vault end to end (issue 14 items 1 and 3): `gbo install vault` takes the zip from a mirror laid out like
/// releases.hashicorp.com (SHA256SUMS signed with an OpenPGP key added under `[trust]`), and gbo reaches the
/// installed Vault with no flags: `gbo vault status` and doctor's vault check, over plain http on the host's
/// loopback through the container's published port. The Vault inside is a stand-in (no Vault binary can be
/// fetched here): Caddy's `respond` (from the test image) answering every path with an initialised, unsealed
/// seal status, as a real Vault answers `sys/seal-status` after `gbo vault init` and `unseal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vault_installed_from_a_signed_mirror_is_reached_by_gbo_vault_and_doctor_without_flags() {
    let client = lxd().await;
    require_test_image(&client).await;
    let mirror = Mirror::start().await;
    let pgp = PgpKey::new("gbo test mirror <mirror@gbo.invalid>");
    let (version, dir, name) = ("1.15.4", "/vault/1.15.4", "vault_1.15.4_linux_amd64.zip");
    let standin = "#!/bin/sh\n# gbo test stand-in for Vault: no Vault binary can be installed here.\nexec /usr/bin/caddy respond --listen 127.0.0.1:8200 '{\"type\":\"shamir\",\"initialized\":true,\"sealed\":false,\"standby\":false,\"t\":3,\"n\":5,\"progress\":0,\"version\":\"1.15.4-standin\"}'\n";
    let body = zip_with("vault", standin.as_bytes());
    let sums = format!("{}  {name}\n", sha256(&body));
    mirror.put(&format!("{dir}/{name}"), Served::Whole(body.clone()));
    mirror.put(&format!("{dir}/vault_{version}_SHA256SUMS"), Served::Whole(sums.clone().into_bytes()));
    mirror.put(&format!("{dir}/vault_{version}_SHA256SUMS.sig"), Served::Whole(pgp.sign(sums.as_bytes(), false)));
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("gbo.toml");
    std::fs::write(
        &file,
        format!(
            "[versions.vault]\nversion = \"{version}\"\nurl = \"{}\"\n\n[trust.mirror]\nopenpgp = {}\nroles = [\"vault\"]\n",
            mirror.url(&format!("{dir}/{name}")),
            toml_string(&pgp.public())
        ),
    )
    .expect("gbo.toml");
    let t = TestTenant::new();
    let stack = t.stack.path().join("stack");
    let mut args = install_args(&t, &stack, &work.path().join("cache"), &file);
    args.pop();
    args.push("vault".into());
    let run = gbo_async(args).await;
    assert_eq!(run.code, 0, "install failed:\n{}", run.all());

    let status = gbo_async(vec!["vault".into(), "status".into(), "--tenant".into(), t.name.clone()]).await;
    assert_eq!(status.code, 0, "{}", status.all());
    assert!(status.stdout.contains("http://127.0.0.1:"), "{}", status.all());

    let doctor =
        gbo_async(vec!["doctor".into(), "--tenant".into(), t.name.clone(), "--output".into(), "json".into()]).await;
    let report: serde_json::Value =
        serde_json::from_str(&doctor.stdout).unwrap_or_else(|e| panic!("doctor JSON: {e}\n{}", doctor.all()));
    let check = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == "vault-unsealed"))
        .unwrap_or_else(|| panic!("no vault-unsealed check in {report}"));
    assert_eq!(check["verdict"], "pass", "{check}");
}

/// Issue 13 item 1: `gbo upgrade --version drive=VERSION` against the real daemon, with MinIO stand-ins (as above)
/// of three versions on the loopback mirror, signed by a `[trust]` key except the third. Bad values exit 2 naming
/// the value and what is allowed; the plan shows the version change; an unsigned version is refused before anything
/// changes; a signed one replaces the artifact (the container rebuilt on the same image, health checked) and the
/// same upgrade's plan is empty afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gbo_upgrade_version_replaces_a_verified_artifact_and_refuses_bad_values_changing_nothing() {
    let client = lxd().await;
    require_test_image(&client).await;
    let mirror = Mirror::start().await;
    let key = MinisignKey::new();
    let dir = "/server/minio/release/linux-amd64/archive";
    let (a, b, c) = ("RELEASE.2024-10-13T13-34-11Z", "RELEASE.2024-11-07T00-52-20Z", "RELEASE.2024-12-18T13-15-44Z");
    let serve = |version: &str, signed: bool| -> Vec<u8> {
        let name = format!("minio.{version}");
        let body = format!(
            "#!/bin/sh\n# gbo test stand-in for MinIO {version}: no MinIO binary can be installed here.\nexec /usr/bin/caddy respond --listen 127.0.0.1:9000 ok\n"
        )
        .into_bytes();
        mirror.put(&format!("{dir}/{name}"), Served::Whole(body.clone()));
        mirror.put(
            &format!("{dir}/{name}.sha256sum"),
            Served::Whole(format!("{}  {name}\n", sha256(&body)).into_bytes()),
        );
        if signed {
            mirror.put(&format!("{dir}/{name}.minisig"), Served::Whole(key.sign(&body)));
        }
        body
    };
    let body_a = serve(a, true);
    let body_b = serve(b, true);
    serve(c, false);
    let work = tempfile::tempdir().expect("tempdir");
    let file = work.path().join("gbo.toml");
    std::fs::write(
        &file,
        format!(
            "[versions.drive]\nversion = \"{a}\"\nurl = \"{}\"\n\n[trust.mirror]\nminisign = \"{}\"\nroles = [\"drive\"]\n",
            mirror.url(&format!("{dir}/minio.{a}")),
            key.public()
        ),
    )
    .expect("gbo.toml");
    let t = TestTenant::new();
    let stack = t.stack.path().join("stack");
    let cache = work.path().join("cache");
    let run = gbo_async(install_args(&t, &stack, &cache, &file)).await;
    assert_eq!(run.code, 0, "install failed:\n{}", run.all());
    let drive = t.container("drive");
    let lxc_out = |args: &[&str]| {
        let out = std::process::Command::new("lxc").args(args).output().expect("lxc");
        assert!(out.status.success(), "lxc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // What must not change on a refusal: the container's image, its artifact record, the file it runs, its
    // snapshots, and the tenant's containers.
    let observed = || {
        (
            lxc_out(&["config", "get", &drive, "volatile.base_image"]),
            lxc_out(&["config", "get", &drive, "user.gbo.artifacts"]),
            lxc_out(&["exec", &drive, "--", "sha256sum", "/opt/gbo/bin/minio"]),
            lxc_out(&["query", &format!("/1.0/instances/{drive}/snapshots")]),
            lxc_out(&["list", &t.name, "--format", "csv", "-c", "n"]),
        )
    };
    let before = observed();
    assert!(before.1.contains(&format!("minio@{a}")), "{before:?}");
    assert!(before.2.starts_with(&sha256(&body_a)), "{before:?}");
    let upgrade = |extra: &[&str]| {
        let mut args: Vec<String> = [
            "upgrade",
            "--tenant",
            &t.name,
            "--image",
            TEST_IMAGE,
            "--file",
            &file.display().to_string(),
            "--artifact-cache",
            &cache.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        gbo_async(args)
    };

    for (value, allowed) in [
        ("tables=16", "no artifact"),
        ("nosuch=1", "roles with an artifact"),
        ("drive", "ROLE=VERSION"),
        ("drive=a/b", "letters, digits"),
        ("drive=", "letters, digits"),
    ] {
        let run = upgrade(&["--version", value]).await;
        assert_eq!(run.code, 2, "--version {value}:\n{}", run.all());
        assert!(run.stderr.contains(&format!("{value:?}")) && run.stderr.contains(allowed), "{value}: {}", run.all());
    }
    assert_eq!(observed(), before, "a refused value changed something");

    let version_b = format!("drive={b}");
    let dry = upgrade(&["--version", &version_b, "--dry-run"]).await;
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(dry.stdout.contains(&format!("minio {a} -> {b}")), "{}", dry.all());
    let plain = upgrade(&["--dry-run"]).await;
    assert!(plain.stdout.contains("Nothing to do"), "without --version nothing changes:\n{}", plain.all());

    // A version whose signature the mirror does not have: refused before anything changes.
    let unsigned = upgrade(&["--version", &format!("drive={c}")]).await;
    assert_eq!(unsigned.code, 2, "{}", unsigned.all());
    assert!(unsigned.all().contains("is missing"), "{}", unsigned.all());
    assert_eq!(observed(), before, "a refused artifact changed something");

    let done = upgrade(&["--version", &version_b, "--health-timeout", "60"]).await;
    assert_eq!(done.code, 0, "{}", done.all());
    assert!(done.stdout.contains("[versions.drive]"), "the note on recording it: {}", done.all());
    let after = observed();
    assert!(after.1.contains(&format!("minio@{b}")), "{after:?}");
    assert!(after.2.starts_with(&sha256(&body_b)), "the new version's verified file runs: {after:?}");
    assert_eq!(after.0, before.0, "rebuilt on the same image");
    assert_eq!(after.4, before.4, "temporary containers left");
    let again = upgrade(&["--version", &version_b, "--dry-run"]).await;
    assert!(again.stdout.contains("Nothing to do"), "{}", again.all());
}
