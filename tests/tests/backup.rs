//! End to end: `gbo backup` of a real tenant (tables + cache from the baked test image) into a restic-format
//! repository, checked by the real `restic` 0.14, then purged and restored with its rows. One tenant is shared
//! through the whole scenario to keep the wall time low.

use std::path::Path;
use std::time::Duration;

use gbo_ops::install::status::TenantStatus;
use gbo_tests::programs::require_program;
use gbo_tests::{gbo, gbo_async, lxd, require_test_image, TestTenant, TEST_IMAGE};

fn secret(t: &TestTenant, name: &str) -> String {
    std::fs::read_to_string(t.stack.path().join(".secrets").join(name)).expect("secret file").trim().to_string()
}

fn pg_port(t: &TestTenant) -> u16 {
    let run = gbo(&["status", "--tenant", &t.name, "--output", "json"]);
    let status: TenantStatus = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{}", run.all()));
    status
        .components
        .iter()
        .find(|c| c.container == t.container("tables"))
        .and_then(|c| c.ports.iter().find(|p| p.container_port == 5432))
        .map(|p| p.host_port)
        .expect("tables publishes 5432")
}

async fn pg(port: u16, password: &str) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("gbuser")
        .password(password)
        .dbname("botserver")
        .connect_timeout(Duration::from_secs(10));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.expect("login as gbuser");
    tokio::spawn(connection);
    client
}

async fn rows(t: &TestTenant) -> Vec<(i32, String)> {
    let db = pg(pg_port(t), &secret(t, "tables-password")).await;
    db.query("SELECT id, v FROM kept ORDER BY id", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn restic(repo: &Path, password_file: &Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(require_program("restic"))
        .arg("-r")
        .arg(repo)
        .arg("--password-file")
        .arg(password_file)
        .arg("--no-cache")
        .args(args)
        .output()
        .expect("restic");
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn repo_args(repo: &Path, password_file: &Path) -> Vec<String> {
    vec![
        "--repo".into(),
        repo.display().to_string(),
        "--password-file".into(),
        password_file.display().to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_is_restic_compatible_survives_purge_and_verify_names_a_damaged_pack() {
    let client = lxd().await;
    require_test_image(&client).await;
    require_program("restic");
    let t = TestTenant::new();
    let work = tempfile::Builder::new().prefix("gbot-backup-").tempdir().expect("tempdir");
    let repo = work.path().join("repo");
    let password_file = work.path().join("password");
    std::fs::write(&password_file, "correct horse battery staple\n").expect("password");
    std::fs::set_permissions(&password_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");

    let install = gbo_async(vec![
        "install".into(),
        "--tenant".into(),
        t.name.clone(),
        "--image".into(),
        TEST_IMAGE.into(),
        "--stack-dir".into(),
        t.stack_dir(),
        "tables".into(),
        "cache".into(),
    ])
    .await;
    assert_eq!(install.code, 0, "install:\n{}", install.all());
    let db = pg(pg_port(&t), &secret(&t, "tables-password")).await;
    db.batch_execute(
        "CREATE TABLE kept (id int primary key, v text); \
         INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, 5000) g",
    )
    .await
    .expect("rows");
    drop(db);
    let before = rows(&t).await;
    assert_eq!(before.len(), 5000);

    // First backup (creates the repository).
    let mut args = vec!["backup".into(), "create".into(), "--tenant".into(), t.name.clone()];
    args.extend(repo_args(&repo, &password_file));
    let first = gbo_async(args.clone()).await;
    assert_eq!(first.code, 0, "backup create:\n{}", first.all());

    // A wrong password is exit 2, naming the problem.
    let wrong = work.path().join("wrong");
    std::fs::write(&wrong, "nope\n").expect("wrong password");
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let mut list_wrong = vec!["backup".into(), "list".into()];
    list_wrong.extend(repo_args(&repo, &wrong));
    let run = gbo_async(list_wrong).await;
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("wrong password"), "{}", run.all());

    // The real restic reads it: snapshots with gbo's tags, check --read-data, a restored file equal to the original.
    let (code, out) = restic(&repo, &password_file, &["snapshots", "--json"]);
    assert_eq!(code, 0, "restic snapshots: {out}");
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&out).expect("restic JSON");
    let tags: Vec<String> =
        snaps.iter().flat_map(|s| s["tags"].as_array().cloned().unwrap_or_default()).filter_map(|v| v.as_str().map(String::from)).collect();
    for want in ["gbo", &format!("tenant={}", t.name), "role=tables", "role=cache", "role=meta"] {
        assert!(tags.iter().any(|t| t == want), "tag {want} missing from restic's listing: {tags:?}");
    }
    let (code, out) = restic(&repo, &password_file, &["check", "--read-data"]);
    assert_eq!(code, 0, "restic check --read-data: {out}");
    let restored = work.path().join("restic-restore");
    let (code, out) = restic(
        &repo,
        &password_file,
        &["restore", "latest", "--tag", "role=tables", "--target", restored.to_str().expect("utf8")],
    );
    assert_eq!(code, 0, "restic restore: {out}");
    let original = std::fs::read(t.stack.path().join("tables/data/pgdata/PG_VERSION")).expect("original PG_VERSION");
    let copy = std::fs::read(restored.join("gbo").join(&t.name).join("tables/data/pgdata/PG_VERSION"))
        .expect("restic restored PG_VERSION");
    assert_eq!(copy, original, "a file restored by restic equals the original");

    // Incremental: a second backup after a small change adds little.
    let db = pg(pg_port(&t), &secret(&t, "tables-password")).await;
    db.batch_execute("UPDATE kept SET v = 'changed' WHERE id <= 50").await.expect("update");
    drop(db);
    let mut json_args = args.clone();
    json_args.extend(["--output".into(), "json".into()]);
    let second = gbo_async(json_args).await;
    assert_eq!(second.code, 0, "second backup:\n{}", second.all());
    let report: serde_json::Value = serde_json::from_str(&second.stdout).expect("report JSON");
    let added = report["added"].as_u64().expect("added");
    let read: u64 = report["roles"].as_array().expect("roles").iter().map(|r| r["bytes"].as_u64().unwrap_or(0)).sum();
    assert!(added * 10 < read, "incremental added {added} bytes of {read} read");
    let after_change = rows(&t).await;

    // Purge the tenant, restore it from the repository on the same host: rows identical.
    let purge = gbo_async(vec![
        "uninstall".into(),
        "tables".into(),
        "cache".into(),
        "--tenant".into(),
        t.name.clone(),
        "--purge".into(),
        "--yes".into(),
    ])
    .await;
    assert_eq!(purge.code, 0, "uninstall --purge:\n{}", purge.all());
    assert!(!t.stack.path().join("tables/data/pgdata/PG_VERSION").exists(), "purged");
    let mut restore = vec!["backup".into(), "restore".into(), "--tenant".into(), t.name.clone()];
    restore.extend(repo_args(&repo, &password_file));
    restore.extend(["--image".into(), TEST_IMAGE.into()]);
    let run = gbo_async(restore.clone()).await;
    assert_eq!(run.code, 0, "restore:\n{}", run.all());
    assert!(run.stderr.contains("restore plan"), "the plan is shown first:\n{}", run.all());
    assert_eq!(rows(&t).await, after_change, "the restored database holds exactly the backed-up rows");
    // A second restore onto the existing tenant is refused without --replace (exit 2, nothing changed).
    let run = gbo_async(restore).await;
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("--replace"), "{}", run.all());

    // verify: sound, then a damaged pack is named (exit 1).
    let mut verify = vec!["backup".into(), "verify".into()];
    verify.extend(repo_args(&repo, &password_file));
    let run = gbo_async(verify.clone()).await;
    assert_eq!(run.code, 0, "verify:\n{}", run.all());
    let mut packs = Vec::new();
    for dir in std::fs::read_dir(repo.join("data")).expect("data dir").flatten() {
        for f in std::fs::read_dir(dir.path()).expect("pack dir").flatten() {
            packs.push(f.path());
        }
    }
    packs.sort_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
    let victim = packs.last().expect("a pack").clone();
    let mut bytes = std::fs::read(&victim).expect("pack");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&victim, &bytes).expect("damage");
    let run = gbo_async(verify).await;
    assert_eq!(run.code, 1, "verify must find the damage:\n{}", run.all());
    let name = victim.file_name().expect("name").to_string_lossy().into_owned();
    assert!(run.stdout.contains(&name), "the damaged pack {name} is named:\n{}", run.all());
}
