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

/// `gbo` against another daemon (its unix socket), blocking.
fn gbo_on(socket: &str, args: &[String]) -> gbo_tests::Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    gbo_tests::gbo_env(&args, &[("LXD_SOCKET", socket)])
}

/// The second daemon ("another host") of the rig: `cargo xtask lxd-cluster up` starts it.
const SOLO_DIR: &str = "/var/lib/gbo-cluster/solo";

/// Deletes the tenant's containers on the solo daemon when dropped.
struct SoloCleanup(Vec<String>);

impl Drop for SoloCleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::process::Command::new("lxc")
                .args(["delete", "--force", name])
                .env("LXD_DIR", SOLO_DIR)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn container_status(name: &str) -> String {
    let out =
        std::process::Command::new("lxc").args(["list", name, "--format", "csv", "-c", "ns"]).output().expect("lxc");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name},")).map(str::to_string))
        .unwrap_or_default()
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
    vec!["--repo".into(), repo.display().to_string(), "--password-file".into(), password_file.display().to_string()]
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
    let tags: Vec<String> = snaps
        .iter()
        .flat_map(|s| s["tags"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
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

    // SIGKILL in the middle of a backup (while the tables container is frozen and read): the repository stays
    // valid (restic check), the frozen container is thawed by the next run, which completes.
    let killed = {
        let args = args.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            let mut child = std::process::Command::new(gbo_tests::gbo_bin())
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("gbo");
            let stderr = child.stderr.take().expect("stderr");
            let mut seen = String::new();
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains("-tables] frozen; reading") {
                    break;
                }
            }
            child.kill().expect("SIGKILL");
            let status = child.wait().expect("wait");
            (status.code(), seen)
        })
        .await
        .expect("kill thread")
    };
    assert_eq!(killed.0, None, "killed by the signal:\n{}", killed.1);
    assert!(killed.1.contains("frozen; reading"), "{}", killed.1);
    // The killed run's restic lock is still in locks/: a real restic refuses an exclusive command meanwhile
    // (gbo's lock works both ways), and the repository is valid (check without taking a lock).
    let (code, out) = restic(&repo, &password_file, &["check"]);
    assert_ne!(code, 0, "restic must see the killed run's lock: {out}");
    assert!(out.contains("locked"), "{out}");
    let (code, out) = restic(&repo, &password_file, &["--no-lock", "check"]);
    assert_eq!(code, 0, "restic check --no-lock after the SIGKILL: {out}");
    let was_frozen = container_status(&t.container("tables")) == "FROZEN";
    let third = gbo_async(args.clone()).await;
    assert_eq!(third.code, 0, "the next backup after a SIGKILL:\n{}", third.all());
    assert!(third.stderr.contains("removed the stale lock"), "the killed run's lock is cleared:\n{}", third.all());
    if was_frozen {
        assert!(third.stderr.contains("thawed"), "{}", third.all());
    }
    assert_eq!(container_status(&t.container("tables")), "RUNNING");
    let (code, out) = restic(&repo, &password_file, &["check"]);
    assert_eq!(code, 0, "restic check after the next run: {out}");

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

    // Another host: the rig's standalone daemon, reached by its socket only, into a stack dir of its own.
    let solo_socket = format!("{SOLO_DIR}/unix.socket");
    assert!(Path::new(&solo_socket).exists(), "the solo daemon is not up: run `cargo xtask lxd-cluster up`");
    let _solo = SoloCleanup(vec![t.container("tables"), t.container("cache")]);
    let solo_stack = tempfile::Builder::new().prefix("gbot-solo-stack-").tempdir().expect("tempdir");
    let mut on_solo = vec!["backup".into(), "restore".into(), "--tenant".into(), t.name.clone()];
    on_solo.extend(repo_args(&repo, &password_file));
    on_solo.extend([
        "--image".into(),
        TEST_IMAGE.into(),
        "--stack-dir".into(),
        solo_stack.path().display().to_string(),
    ]);
    let run = {
        let (socket, args) = (solo_socket.clone(), on_solo.clone());
        tokio::task::spawn_blocking(move || gbo_on(&socket, &args)).await.expect("gbo thread")
    };
    assert_eq!(run.code, 0, "restore on the solo daemon:\n{}", run.all());
    assert!(run.stdout.contains("healthy"), "{}", run.all());
    let status_args: Vec<String> =
        vec!["status".into(), "--tenant".into(), t.name.clone(), "--output".into(), "json".into()];
    let status = {
        let socket = solo_socket.clone();
        tokio::task::spawn_blocking(move || gbo_on(&socket, &status_args)).await.expect("gbo thread")
    };
    let parsed: TenantStatus = serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("{e}\n{}", status.all()));
    let solo_port = parsed
        .components
        .iter()
        .find(|c| c.container == t.container("tables"))
        .and_then(|c| c.ports.iter().find(|p| p.container_port == 5432))
        .map(|p| p.host_port)
        .expect("tables on solo publishes 5432");
    let solo_password = std::fs::read_to_string(solo_stack.path().join(".secrets/tables-password"))
        .expect("the secrets were restored into the new stack dir");
    let db = pg(solo_port, solo_password.trim()).await;
    let on_other_host: Vec<(i32, String)> = db
        .query("SELECT id, v FROM kept ORDER BY id", &[])
        .await
        .expect("select on solo")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    drop(db);
    assert_eq!(on_other_host, after_change, "the other host's database holds exactly the backed-up rows");
    drop(_solo);
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
