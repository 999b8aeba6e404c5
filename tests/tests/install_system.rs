//! End to end, issue 9 item 11: `gbo install system` against the real daemon makes `-system` unprivileged unless
//! the tenant file asks (`[system] privileged = true`), moves an existing one between the two modes with its host
//! data (the remap), and `gbo doctor` judges the flag against the tenant file. Also item 4's follow-up: when the
//! cache gets a new password, the installed system container is converged in the same run so botserver keeps
//! the cache.
//!
//! No botserver, botui or MinIO binary can be installed here: their artifacts are stand-in scripts put in the
//! artifact cache (Caddy's `respond`, from the test image, answers their health endpoints). The botserver
//! stand-in writes a marker into its data mount at every start, as the user the unit runs it as (`gbuser`), and
//! stops the unit when it cannot: the health check passing after a remap proves botserver still owns its data.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use gbo_components::{Role, TenantFile};
use gbo_ops::install::artifact::{cache_path, ArtifactPolicy};
use gbo_tests::{gbo, gbo_async, lxd, require_test_image, TestTenant};

/// A stand-in program answering HTTP 200 on `port` (any path), after `before` (shell lines).
fn stand_in(what: &str, port: u16, before: &str) -> String {
    format!(
        "#!/bin/sh\n# gbo test stand-in for {what}: no {what} binary can be installed here.\nset -e\n{before}exec /usr/bin/caddy respond --listen 127.0.0.1:{port} ok\n"
    )
}

/// An artifact cache holding stand-ins for the drive and system roles' artifacts.
fn artifact_cache() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("gbot-artifacts-").tempdir().expect("tempdir");
    let policy = ArtifactPolicy {
        cache_dir: dir.path().to_path_buf(),
        download: false,
        allow_unverified: true,
        trust: Vec::new(),
    };
    let tenant = TenantFile::default();
    let scripts = [
        ("minio", stand_in("MinIO", 9000, "")),
        ("botserver", stand_in("botserver", 5858, "date > /opt/gbo/data/botserver.marker\n")),
        ("botui", stand_in("botui", 5859, "")),
    ];
    for role in [Role::Drive, Role::System] {
        for artifact in gbo_components::artifacts::artifacts(role, &tenant) {
            let (_, script) = scripts.iter().find(|(n, _)| *n == artifact.name).expect("a stand-in for each");
            std::fs::write(cache_path(&policy, &artifact), script).expect("stand-in");
        }
    }
    dir
}

fn args(t: &TestTenant, cache: &Path, file: Option<&Path>, command: &str, roles: &[&str]) -> Vec<String> {
    let mut args = t.args(command, &[]);
    args.extend(["--artifact-cache".into(), cache.display().to_string(), "--allow-unverified".into()]);
    if let Some(file) = file {
        args.extend(["--file".to_string(), file.display().to_string()]);
    }
    args.extend(roles.iter().map(|r| r.to_string()));
    args
}

fn privileged(container: &str) -> String {
    gbo_tests::lxc(&["config", "get", container, "security.privileged"]).code_output().1.trim().to_string()
}

/// The host uid of container uid 0 for `container` (0 when privileged).
async fn idmap_base(container: &str) -> u32 {
    let lxd = lxd().await;
    let name = lxd_client::InstanceName::new(container).expect("name");
    let instance = lxd.instance(&name).await.expect("instance");
    gbo_ops::install::plan::idmap_base(&instance).expect("an idmap")
}

fn doctor(t: &TestTenant, file: Option<&Path>) -> (i32, serde_json::Value) {
    let mut args = vec!["doctor".to_string(), "--tenant".into(), t.name.clone(), "--output".into(), "json".into()];
    if let Some(file) = file {
        args.extend(["--file".to_string(), file.display().to_string()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = gbo(&refs);
    let report = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("doctor JSON: {e}\n{}", run.all()));
    (run.code, report)
}

fn verdict(report: &serde_json::Value, id: &str) -> (String, String) {
    let check = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {report}"));
    (check["verdict"].as_str().unwrap_or("").into(), check["evidence"].as_str().unwrap_or("").into())
}

fn owner(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).uid()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn system_is_unprivileged_by_default_privileged_on_request_and_remapped_with_its_data() {
    let client = lxd().await;
    require_test_image(&client).await;
    let t = TestTenant::new();
    let cache = artifact_cache();
    let system = t.container("system");
    let marker: PathBuf = t.stack.path().join("system/data/botserver.marker");

    // Default: unprivileged, the data owned through the container's idmap.
    let first = gbo_async(args(&t, cache.path(), None, "install", &["system"])).await;
    assert_eq!(first.code, 0, "install failed:\n{}", first.all());
    assert_eq!(privileged(&system), "", "security.privileged is not set");
    let base = idmap_base(&system).await;
    assert!(base >= 65536, "an unprivileged idmap: {base}");
    assert_eq!(owner(&marker), base + 1000, "botserver (gbuser) wrote its marker through the idmap");
    let (_, report) = doctor(&t, None);
    assert_eq!(verdict(&report, "system-privileged").0, "pass", "{report}");

    // The tenant file asks for the seed's privileged mode: the next install remaps the container and its data.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gbo.toml");
    std::fs::write(&file, format!("tenant = \"{}\"\n\n[system]\nprivileged = true\n", t.name)).expect("gbo.toml");
    let plan =
        gbo(&args(&t, cache.path(), Some(&file), "plan", &["system"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(plan.stdout.contains("make the instance privileged"), "{}", plan.all());
    let asked = gbo_async(args(&t, cache.path(), Some(&file), "install", &["system"])).await;
    assert_eq!(asked.code, 0, "install failed:\n{}", asked.all());
    assert_eq!(privileged(&system), "true");
    assert_eq!(idmap_base(&system).await, 0);
    assert_eq!(owner(&marker), 1000, "the data moved to the privileged ids; botserver rewrote its marker");
    assert_eq!(owner(marker.parent().expect("data dir")), 1000);
    let (code, report) = doctor(&t, Some(&file));
    assert_eq!(verdict(&report, "system-privileged").0, "pass", "as the tenant file asks: {report}");
    let _ = code;
    // Against a tenant file that does not ask: a problem (gbo created this container).
    let (code, report) = doctor(&t, None);
    let (v, evidence) = verdict(&report, "system-privileged");
    assert_eq!((code, v.as_str()), (1, "fail"), "{report}");
    assert!(evidence.contains("root on the host"), "{evidence}");

    // Back to the default: unprivileged again, the data back under the idmap.
    let back = gbo_async(args(&t, cache.path(), None, "install", &["system"])).await;
    assert_eq!(back.code, 0, "install failed:\n{}", back.all());
    assert_eq!(privileged(&system), "");
    let base = idmap_base(&system).await;
    assert_eq!(owner(&marker), base + 1000);
    assert_eq!(owner(marker.parent().expect("data dir")), base + 1000);
    let (_, report) = doctor(&t, None);
    assert_eq!(verdict(&report, "system-privileged").0, "pass", "{report}");
    let converged =
        gbo(&args(&t, cache.path(), None, "plan", &["system"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(converged.stdout.contains("Nothing to do"), "{}", converged.all());

    // The cache of a tenant installed before it had a password: `gbo install cache` alone converges the system
    // container too, so botserver's CACHE_URL carries the new password.
    let secrets = t.stack.path().join(".secrets");
    std::fs::remove_file(secrets.join("cache-password")).expect("rm secret");
    let (code, out) =
        gbo_tests::lxc(&["exec", &t.container("cache"), "--", "rm", "/etc/gbo/cache-auth.conf"]).code_output();
    assert_eq!(code, 0, "{out}");
    let plan = gbo(&args(&t, cache.path(), None, "plan", &["cache"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(plan.stdout.contains("note: system added"), "{}", plan.all());
    assert!(plan.stdout.contains(&format!("{system}: ")), "the system container is in the plan: {}", plan.all());
    let cache_only = gbo_async(args(&t, cache.path(), None, "install", &["cache"])).await;
    assert_eq!(cache_only.code, 0, "install failed:\n{}", cache_only.all());
    assert!(cache_only.stdout.contains(&system), "system converged in the same run: {}", cache_only.all());
    let password = std::fs::read_to_string(secrets.join("cache-password")).expect("new secret").trim().to_string();
    let name = lxd_client::InstanceName::new(system.as_str()).expect("name");
    let env =
        String::from_utf8(client.read_file(&name, "/etc/gbo/system.env").await.expect("system.env")).expect("utf8");
    assert!(
        env.contains(&format!("CACHE_URL=redis://:{password}@localhost:6379\n")),
        "botserver gets the new password"
    );
    assert!(!cache_only.all().contains(&password));
}
