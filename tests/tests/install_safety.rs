//! End to end: what `gbo install` refuses (bad input: exit 2, nothing changed), `--dry-run`, the tenant lock,
//! two tenants side by side, a run killed with SIGKILL and completed by the next, and artifact download and
//! verification against a local file server serving a real binary.

use std::path::PathBuf;
use std::time::Duration;

use gbo_components::{Artifact, ArtifactKind};
use gbo_ops::install::artifact::{self, ArtifactPolicy};
use gbo_ops::install::status::TenantStatus;
use gbo_tests::{gbo, gbo_async, gbo_bin, lxd, require_test_image, TestTenant, TEST_IMAGE};

fn containers_of(tenant: &str) -> Vec<String> {
    let out =
        std::process::Command::new("lxc").args(["list", "--format", "csv", "-c", "n"]).output().expect("lxc list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.starts_with(&format!("{tenant}-")))
        .map(str::to_string)
        .collect()
}

fn base(t: &TestTenant) -> Vec<String> {
    vec!["--tenant".into(), t.name.clone(), "--image".into(), TEST_IMAGE.into(), "--stack-dir".into(), t.stack_dir()]
}

fn run(args: Vec<String>) -> gbo_tests::Run {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    gbo(&refs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_dry_run_change_nothing() {
    let client = lxd().await;
    require_test_image(&client).await;
    let t = TestTenant::new();
    let fresh = t.stack.path().join("not-yet");
    let fresh_s = fresh.display().to_string();

    // --dry-run: a plan, exit 0, no container, no host directory.
    let dry = run(vec![
        "install".into(),
        "--tenant".into(),
        t.name.clone(),
        "--image".into(),
        TEST_IMAGE.into(),
        "--stack-dir".into(),
        fresh_s.clone(),
        "cache".into(),
        "--dry-run".into(),
    ]);
    assert_eq!(dry.code, 0, "{}", dry.all());
    assert!(dry.stdout.contains("+ create instance"), "{}", dry.stdout);
    assert!(dry.stdout.contains("nothing was changed"), "{}", dry.stdout);
    assert!(!fresh.exists(), "--dry-run created the stack dir");

    let cases: Vec<(Vec<String>, &str)> = vec![
        ([vec!["install".into(), "cache".into(), "databse".into()], base(&t)].concat(), "unknown role \"databse\""),
        (
            vec!["install".into(), "--tenant".into(), "Bad_Tenant".into(), "cache".into()],
            "invalid tenant name \"Bad_Tenant\"",
        ),
        (vec!["install".into(), "--tenant".into(), "9lives".into(), "cache".into()], "starts with a digit"),
        (
            [
                vec!["install".into(), "cache".into(), "--stack-dir".into(), "/proc/gbot-not-writable".into()],
                vec!["--tenant".into(), t.name.clone(), "--image".into(), TEST_IMAGE.into()],
            ]
            .concat(),
            "/proc/gbot-not-writable",
        ),
        (
            [
                vec!["install".into(), "cache".into()],
                vec![
                    "--tenant".into(),
                    t.name.clone(),
                    "--stack-dir".into(),
                    t.stack_dir(),
                    "--image".into(),
                    "gbot-missing/none".into(),
                ],
            ]
            .concat(),
            "gbo image build --components cache",
        ),
        ([vec!["install".into(), "drive".into()], base(&t)].concat(), "cannot install drive"),
        (
            [vec!["install".into(), "cache".into(), "--port".into(), "cache.nope=1234".into()], base(&t)].concat(),
            "cache has no port named \"nope\"",
        ),
    ];
    for (args, expected) in cases {
        let out = run(args.clone());
        assert_eq!(out.code, 2, "{args:?} should be bad input (exit 2):\n{}", out.all());
        assert!(out.stderr.contains(expected), "{args:?}: stderr should name {expected:?}:\n{}", out.stderr);
    }
    // A host port already in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let out = run(
        [vec!["install".into(), "cache".into(), "--port".into(), format!("cache.redis={port}")], base(&t)].concat()
    );
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")) && out.stderr.contains("already in use"),
        "{}",
        out.stderr
    );
    // The holder is named: this test process.
    assert!(out.stderr.contains(&format!("(pid {})", std::process::id())), "{}", out.stderr);
    drop(busy);
    assert!(containers_of(&t.name).is_empty(), "bad input created containers");
    assert_eq!(std::fs::read_dir(t.stack.path()).expect("stack dir").count(), 0, "bad input changed the host tree");

    // The tenant lock: a second run fails naming the holder.
    let lock = gbo_ops::install::lock::acquire(t.stack.path(), &t.name, Duration::ZERO).await.expect("lock");
    let out = run([vec!["install".into(), "cache".into(), "--lock-wait".into(), "1".into()], base(&t)].concat());
    assert_eq!(out.code, 2, "{}", out.all());
    assert!(out.stderr.contains(&format!("locked by pid {}", std::process::id())), "{}", out.stderr);
    drop(lock);
    assert!(containers_of(&t.name).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_side_by_side_and_a_killed_run_resumes() {
    let client = lxd().await;
    require_test_image(&client).await;
    let a = TestTenant::new();
    let b = TestTenant::new();
    // Tenant a: killed with SIGKILL in the middle of its first install, then completed by a re-run.
    let mut child = std::process::Command::new(gbo_bin())
        .args(["install", "cache"].iter().map(|s| s.to_string()).chain(base(&a)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn gbo");
    // Kill it once the container exists (mid-run: create, chown, start or provisioning).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while containers_of(&a.name).is_empty() && std::time::Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let (ra, rb) = tokio::join!(
        gbo_async([vec!["install".into(), "cache".into()], base(&a)].concat()),
        gbo_async([vec!["install".into(), "cache".into()], base(&b)].concat())
    );
    assert_eq!(ra.code, 0, "re-run after SIGKILL must complete:\n{}", ra.all());
    assert_eq!(rb.code, 0, "{}", rb.all());
    let port_of = |t: &TestTenant| {
        let out = gbo(&["status", "--tenant", &t.name, "--output", "json"]);
        assert_eq!(out.code, 0, "{}", out.all());
        let s: TenantStatus = serde_json::from_str(&out.stdout).expect("status json");
        s.components[0].ports[0].host_port
    };
    let (pa, pb) = (port_of(&a), port_of(&b));
    assert_ne!(pa, pb, "two tenants must not share a host port");
    let again = gbo(&["plan", "--tenant", &a.name, "--image", TEST_IMAGE, "cache"]);
    assert!(again.stdout.contains("Nothing to do"), "{}", again.all());
}

/// A tiny HTTP/1.0 file server on 127.0.0.1 serving one file, for artifact tests.
async fn serve_file(path: PathBuf) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let path = path.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf).await;
                let body = tokio::fs::read(&path).await.unwrap_or_default();
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn artifacts_are_downloaded_verified_and_cached() {
    let binary = PathBuf::from("/usr/bin/caddy");
    assert!(binary.is_file(), "the caddy package provides the real binary served here");
    let expected = artifact::file_sha256(&binary).await.expect("hash");
    let (port, server) = serve_file(binary.clone()).await;
    let cache = tempfile::tempdir().expect("tempdir");
    let policy = ArtifactPolicy {
        cache_dir: cache.path().to_path_buf(),
        download: false,
        allow_unverified: false,
        trust: Vec::new(),
    };
    let mut good = Artifact {
        name: "minio",
        version: "test".into(),
        url: format!("http://127.0.0.1:{port}/minio"),
        sha256: Some(expected.clone()),
        unpack: ArtifactKind::SingleBinary,
        install_path: "/opt/gbo/bin/minio",
        verification: gbo_components::Verification::NONE,
        role: gbo_components::Role::Drive,
    };
    let path = artifact::fetch(&policy, &good).await.expect("download and verify");
    assert_eq!(artifact::file_sha256(&path).await.expect("hash"), expected);
    assert_eq!(std::fs::metadata(&path).expect("cached").len(), std::fs::metadata(&binary).expect("bin").len());
    // Cached: a second fetch works with the server gone.
    server.abort();
    let again = artifact::fetch(&policy, &good).await.expect("from cache");
    assert_eq!(again, path);

    // A checksum mismatch is refused and leaves nothing in the cache.
    let (port, server) = serve_file(binary).await;
    good.url = format!("http://127.0.0.1:{port}/minio-other");
    good.sha256 = Some("0".repeat(64));
    let err = artifact::fetch(&policy, &good).await.expect_err("mismatch");
    let text = err.to_string();
    assert!(text.contains("checksum mismatch") && text.contains(&expected), "{text}");
    assert!(!artifact::cache_path(&policy, &good).exists());
    server.abort();

    // Unpinned or remote artifacts are unavailable without the explicit flags, and nothing is fetched.
    good.sha256 = None;
    assert!(artifact::unavailable_reason(&policy, &good).is_some_and(|r| r.contains("--allow-unverified")));
    good.sha256 = Some(expected);
    good.url = "https://dl.min.io/server/minio/release/linux-amd64/minio".into();
    assert!(artifact::unavailable_reason(&policy, &good).is_some_and(|r| r.contains("--download")));
}
