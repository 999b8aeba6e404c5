//! End to end: `gbo backup` of a real tenant (tables + cache from the baked test image) into a restic-format
//! repository, checked by the real `restic` 0.14, then purged and restored with its rows. One tenant is shared
//! through the whole scenario to keep the wall time low.

use gbo_tests::app_db as pg;
use std::path::Path;

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

async fn list_backups(repo: &Path, password_file: &Path) -> Vec<serde_json::Value> {
    let mut args = vec!["backup".into(), "list".into(), "--output".into(), "json".into()];
    args.extend(repo_args(repo, password_file));
    let run = gbo_async(args).await;
    assert_eq!(run.code, 0, "backup list:\n{}", run.all());
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{}", run.all()))
}

/// The words of a unit's command line as systemd splits them (double quotes, `\\` and `\"` escapes, `%%`).
fn unit_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut escaped, mut any) = (Vec::new(), String::new(), false, false, false);
    for c in line.replace("%%", "%").chars() {
        match c {
            _ if escaped => {
                word.push(c);
                escaped = false
            }
            '\\' => escaped = true,
            '"' => {
                quoted = !quoted;
                any = true
            }
            ' ' if !quoted => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                any = false
            }
            _ => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Every file below `dir`, with its size.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(format!("{} {}", path.display(), entry.metadata().map(|m| m.len()).unwrap_or(0)));
        }
    }
    out
}

/// A process of this host on a container's published port while the container runs and its proxy device is
/// still configured (as when the device's `forkproxy` has died and someone else bound the port): the `forkproxy`
/// killed, a listener in its place that counts connections and answers each like a cache refusing the password;
/// [`PortHolder::give_back`] closes it and re-adds the device, which starts a new `forkproxy`.
struct PortHolder {
    container: String,
    device: String,
    config: serde_json::Map<String, serde_json::Value>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl PortHolder {
    fn take_over(container: &str) -> Self {
        let instance: serde_json::Value =
            serde_json::from_str(&gbo_tests::lxc_ok(&["query", &format!("/1.0/instances/{container}")])).expect("json");
        let (device, config) = instance["devices"]
            .as_object()
            .and_then(|d| d.iter().find(|(_, c)| c["type"] == "proxy"))
            .map(|(n, c)| (n.clone(), c.as_object().cloned().unwrap_or_default()))
            .unwrap_or_else(|| panic!("{container} has no proxy device: {instance}"));
        let listen = config["listen"].as_str().expect("listen").to_string();
        let port: u16 = listen.rsplit(':').next().and_then(|p| p.parse().ok()).expect("listen port");
        let mut killed = 0;
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if args.contains(&b"forkproxy".as_slice()) && args.contains(&listen.as_bytes()) {
                let pid = entry.file_name().to_string_lossy().to_string();
                assert!(std::process::Command::new("kill").args(["-9", &pid]).status().expect("kill").success());
                killed += 1;
            }
        }
        assert_eq!(killed, 1, "one forkproxy listens on {listen}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let listener = loop {
            match std::net::TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => break listener,
                Err(e) if std::time::Instant::now() > deadline => panic!("bind 127.0.0.1:{port}: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        };
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut connections = 0;
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        connections += 1;
                        let _ = std::io::Write::write_all(&mut stream, b"-WRONGPASS not the cache\r\n");
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
            connections
        });
        Self { container: container.to_string(), device, config, stop, thread }
    }

    /// Connections seen; the listener closed and the proxy device back (a new `forkproxy`).
    fn give_back(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let connections = self.thread.join().expect("listener thread");
        gbo_tests::lxc_ok(&["config", "device", "remove", &self.container, &self.device]);
        let mut args = vec!["config".to_string(), "device".into(), "add".into(), self.container, self.device];
        args.push("proxy".into());
        for (key, value) in self.config.iter().filter(|(k, _)| k.as_str() != "type") {
            args.push(format!("{key}={}", value.as_str().unwrap_or_default()));
        }
        gbo_tests::lxc_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        connections
    }
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

    // First backup (creates the repository). The cache's BGSAVE goes to the port inside its container, never to
    // the published port on this host: here another process holds that port (the device's forkproxy gone),
    // answering like a cache that refuses, and must see no connection (and so never the cache's password).
    let cache = t.container("cache");
    let holder = PortHolder::take_over(&cache);
    let mut args = vec!["backup".into(), "create".into(), "--tenant".into(), t.name.clone()];
    args.extend(repo_args(&repo, &password_file));
    let first = gbo_async(args.clone()).await;
    let connections = holder.give_back();
    assert_eq!(first.code, 0, "backup create:\n{}", first.all());
    assert!(first.stderr.contains("BGSAVE"), "the cache was saved with BGSAVE:\n{}", first.all());
    assert_eq!(connections, 0, "the backup connected to the cache's host port (whatever holds it gets the password)");

    // Host storage restored through a remote on another machine (the rig's solo daemon addressed so that gbo counts
    // it as another machine): refused before anything changes, exit 2 naming the remote.
    {
        let _lease = gbo_tests::rig::SoloLease::shared();
        let conf = gbo_tests::rig::far_remote_conf();
        let mut far: Vec<String> =
            vec!["--remote".into(), "gbot-far".into(), "backup".into(), "restore".into(), "--tenant".into()];
        far.push(t.name.clone());
        far.extend(repo_args(&repo, &password_file));
        far.extend([
            "--image".into(),
            TEST_IMAGE.into(),
            "--stack-dir".into(),
            work.path().join("far").display().to_string(),
        ]);
        let conf_dir = conf.path().display().to_string();
        let run = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = far.iter().map(String::as_str).collect();
            gbo_tests::gbo_env(&args, &[("LXD_CONF", &conf_dir)])
        })
        .await
        .expect("gbo thread");
        assert_eq!(run.code, 2, "host storage restored on another machine:\n{}", run.all());
        assert!(
            run.stderr.contains("remote `gbot-far`") && run.stderr.contains("host directories"),
            "the refusal names the remote and why:\n{}",
            run.all()
        );
        assert!(!work.path().join("far").exists(), "nothing was written");
        assert!(gbo_tests::lxc_ok(&["list", "gbot-solo:", "--format", "csv", "-c", "n"])
            .lines()
            .all(|n| !n.starts_with(&t.name)));
    }

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
    // solo stays up while the tenant is restored there (the reboot test stops it only under the exclusive lease).
    let lease = gbo_tests::rig::SoloLease::shared();
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
    assert!(
        run.stdout.contains("tables hold exactly the rows the backup recorded"),
        "the row check ran:\n{}",
        run.all()
    );
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
    drop(lease);
    let mut restore = vec!["backup".into(), "restore".into(), "--tenant".into(), t.name.clone()];
    restore.extend(repo_args(&repo, &password_file));
    restore.extend(["--image".into(), TEST_IMAGE.into()]);
    let run = gbo_async(restore.clone()).await;
    assert_eq!(run.code, 0, "restore:\n{}", run.all());
    assert!(run.stderr.contains("restore plan"), "the plan is shown first:\n{}", run.all());
    assert_eq!(rows(&t).await, after_change, "the restored database holds exactly the backed-up rows");
    assert!(
        run.stdout.contains("tables hold exactly the rows the backup recorded"),
        "the row check ran:\n{}",
        run.all()
    );
    // A second restore onto the existing tenant is refused without --replace (exit 2, nothing changed).
    let run = gbo_async(restore).await;
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("--replace"), "{}", run.all());

    // A repository whose snapshots were mixed up (the real restic re-tags the first backup's tables snapshot as the
    // newest backup's, so the newest backup's record (taken after 50 rows changed) meets older data): the restore
    // recreates the tenant, then its row check fails with exit 2, naming the table.
    let backups = list_backups(&repo, &password_file).await;
    let complete: Vec<&serde_json::Value> = backups.iter().filter(|b| b["complete"] == true).collect();
    assert_eq!(complete.len(), 3, "three complete backups: {backups:?}");
    let (oldest, newest) = (complete[0], complete[2]);
    let id = |b: &serde_json::Value| b["backup"].as_str().expect("backup id").to_string();
    let tables_snap = |b: &serde_json::Value| b["snapshots"]["tables"].as_str().expect("tables snapshot").to_string();
    for (snap, from, to) in
        [(tables_snap(newest), id(newest), "gbot-set-aside".to_string()), (tables_snap(oldest), id(oldest), id(newest))]
    {
        let (code, out) = restic(
            &repo,
            &password_file,
            &["tag", "--remove", &format!("backup={from}"), "--add", &format!("backup={to}"), &snap],
        );
        assert_eq!(code, 0, "restic tag: {out}");
    }
    let mut replace = vec!["backup".into(), "restore".into(), "--tenant".into(), t.name.clone(), "--replace".into()];
    replace.extend(["--backup".into(), id(newest)]);
    replace.extend(repo_args(&repo, &password_file));
    replace.extend(["--image".into(), TEST_IMAGE.into()]);
    let run = gbo_async(replace).await;
    assert_eq!(run.code, 2, "a restore whose rows differ from the record fails:\n{}", run.all());
    assert!(run.stderr.contains("does not match backup"), "{}", run.all());
    assert!(run.stderr.contains("botserver: \"public\".\"kept\""), "the table is named:\n{}", run.all());
    assert!(run.stderr.contains("different content checksum"), "{}", run.all());

    // schedule: the units it writes, checked by systemd-analyze; their commands, run as systemd would, back up
    // (ExecStart) and prune (ExecStartPost). This host's systemd is not PID 1 (`systemctl is-system-running`:
    // offline), so the timer itself cannot fire here.
    let units = work.path().join("units");
    let mut schedule = vec!["backup".into(), "schedule".into(), "--tenant".into(), t.name.clone()];
    schedule.extend(repo_args(&repo, &password_file));
    let bad = [schedule.clone(), vec!["--prune=--keep-last 2\nExecStartPre=/bin/true".into()]].concat();
    let run = gbo_async(bad).await;
    assert_eq!(run.code, 2, "a --prune that would add a line to the unit is refused:\n{}", run.all());
    assert!(run.stderr.contains("invalid --prune"), "{}", run.all());
    schedule.extend([
        "--on-calendar".into(),
        "*-*-* 03:00".into(),
        "--prune".into(),
        "--keep-last 2".into(),
        "--unit-dir".into(),
        units.display().to_string(),
    ]);
    let run = gbo_async(schedule).await;
    assert_eq!(run.code, 0, "schedule:\n{}", run.all());
    let unit = format!("gbo-backup-{}", t.name);
    let service = std::fs::read_to_string(units.join(format!("{unit}.service"))).expect("service written");
    let timer = std::fs::read_to_string(units.join(format!("{unit}.timer"))).expect("timer written");
    assert!(timer.contains("OnCalendar=*-*-* 03:00\n"), "{timer}");
    let out = std::process::Command::new(require_program("systemd-analyze"))
        .arg("verify")
        .arg(units.join(format!("{unit}.timer")))
        .arg(units.join(format!("{unit}.service")))
        .output()
        .expect("systemd-analyze");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    let command = |key: &str| -> Vec<String> {
        let line = service.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("{key} in {service}"));
        unit_words(line)
    };
    let (start, post) = (command("ExecStart="), command("ExecStartPost="));
    let this_gbo = std::fs::canonicalize(gbo_tests::gbo_bin()).expect("gbo path");
    assert_eq!(Path::new(&start[0]), this_gbo, "the unit runs this gbo");
    let before = list_backups(&repo, &password_file).await.len();
    let ran = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&start[0]).args(&start[1..]).current_dir("/").output().expect("ExecStart")
    })
    .await
    .expect("thread");
    assert!(ran.status.success(), "the unit's ExecStart: {}", String::from_utf8_lossy(&ran.stderr));
    let listed = list_backups(&repo, &password_file).await;
    assert_eq!(listed.len(), before + 1, "the unit's command stored a backup: {listed:?}");
    let scheduled = id(listed.last().expect("newest"));

    // prune: --dry-run changes nothing; the unit's ExecStartPost (--keep-last 2) keeps the two newest backups
    // (the mixed-up one and the scheduled one), forgets the rest (the interrupted one and the set-aside tables
    // snapshot included), and the real restic agrees: its listing holds only the kept backups, check passes.
    let files = |dir: &Path| -> Vec<String> {
        let mut all = Vec::new();
        for sub in ["data", "snapshots", "index"] {
            for entry in walk(&dir.join(sub)) {
                all.push(entry);
            }
        }
        all.sort();
        all
    };
    let repo_files = files(&repo);
    let mut dry = vec!["backup".into(), "prune".into(), "--tenant".into(), t.name.clone()];
    dry.extend(repo_args(&repo, &password_file));
    dry.extend(["--keep-last".into(), "2".into(), "--dry-run".into(), "--output".into(), "json".into()]);
    let run = gbo_async(dry).await;
    assert_eq!(run.code, 0, "prune --dry-run:\n{}", run.all());
    let decided: serde_json::Value = serde_json::from_str(&run.stdout).expect("prune JSON");
    let kept: Vec<String> =
        decided["kept"].as_array().expect("kept").iter().map(|k| k[0].as_str().expect("id").to_string()).collect();
    let mut kept = kept;
    kept.sort();
    let mut want = vec![scheduled.clone(), id(newest)];
    want.sort();
    assert_eq!(kept, want, "{decided}");
    assert!(decided["forgotten"].as_array().expect("forgotten").len() >= 3, "{decided}");
    assert_eq!(files(&repo), repo_files, "--dry-run changed the repository");
    let pruned = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&post[0]).args(&post[1..]).current_dir("/").output().expect("ExecStartPost")
    })
    .await
    .expect("thread");
    assert!(pruned.status.success(), "the unit's ExecStartPost: {}", String::from_utf8_lossy(&pruned.stderr));
    let (code, out) = restic(&repo, &password_file, &["snapshots", "--json"]);
    assert_eq!(code, 0, "restic snapshots: {out}");
    let snaps: Vec<serde_json::Value> = serde_json::from_str(&out).expect("restic JSON");
    let mut left: Vec<String> = snaps
        .iter()
        .filter_map(|s| {
            s["tags"].as_array()?.iter().filter_map(|v| v.as_str()?.strip_prefix("backup=").map(String::from)).next()
        })
        .collect();
    left.sort();
    left.dedup();
    assert_eq!(left, want, "restic lists only the kept backups: {out}");
    assert_eq!(snaps.len(), 6, "three snapshots (tables, cache, meta) per kept backup: {out}");
    let (code, out) = restic(&repo, &password_file, &["check"]);
    assert_eq!(code, 0, "restic check after prune: {out}");

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

/// The tables role's snapshot of a backup, as `gbo backup create --output json` reports it: (bytes read, added).
fn tables_bytes(report: &serde_json::Value) -> (u64, u64) {
    let role = report["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .find(|r| r["role"] == "tables")
        .unwrap_or_else(|| panic!("no tables role in {report}"));
    (role["bytes"].as_u64().expect("bytes"), role["added"].as_u64().expect("added"))
}

/// A tenant with `storage = "volumes"` (its data in LXD custom volumes, nothing under the stack dir): the backup
/// holds the volumes' content (read through LXD's volume backup export, never the host filesystem), consistent the
/// way host mode is (the rows recorded under the share lock), deduplicated (a second backup after a small change
/// adds little), readable by the real restic; after a purge, `gbo --remote gbot-solo backup restore` recreates it
/// on the other daemon, healthy, with exactly the backed-up rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_of_a_volumes_tenant_holds_its_volumes_and_restores_through_a_remote() {
    let client = lxd().await;
    require_test_image(&client).await;
    require_program("restic");
    let t = TestTenant::new();
    let _main = gbo_tests::rig::TenantCleanup { lxd_dir: "/var/lib/lxd".into(), tenant: t.name.clone() };
    let work = tempfile::Builder::new().prefix("gbot-backup-").tempdir().expect("tempdir");
    let repo = work.path().join("repo");
    let password_file = work.path().join("password");
    std::fs::write(&password_file, "volumes in a restic repository\n").expect("password");
    std::fs::set_permissions(&password_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let file = work.path().join("gbo.toml");
    std::fs::write(&file, format!("tenant = \"{}\"\nroles = [\"tables\"]\nstorage = \"volumes\"\n", t.name))
        .expect("tenant file");
    let install = gbo_async(vec![
        "install".into(),
        "--file".into(),
        file.display().to_string(),
        "--image".into(),
        TEST_IMAGE.into(),
        "--stack-dir".into(),
        t.stack_dir(),
    ])
    .await;
    assert_eq!(install.code, 0, "install with storage = volumes:\n{}", install.all());
    assert!(!t.stack.path().join("tables").exists(), "volumes mode keeps nothing of the role under the stack dir");
    let db = pg(pg_port(&t), &secret(&t, "tables-password")).await;
    db.batch_execute(
        "CREATE TABLE kept (id int primary key, v text); \
         INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, 3000) g",
    )
    .await
    .expect("rows as the application role");
    drop(db);

    let mut create = vec!["backup".into(), "create".into(), "--tenant".into(), t.name.clone()];
    create.extend(repo_args(&repo, &password_file));
    create.extend(["--output".into(), "json".into()]);
    let first = gbo_async(create.clone()).await;
    assert_eq!(first.code, 0, "backup create of a volumes tenant:\n{}", first.all());
    let report: serde_json::Value =
        serde_json::from_str(&first.stdout).unwrap_or_else(|e| panic!("{e}\n{}", first.all()));
    let (read, _) = tables_bytes(&report);
    // A PostgreSQL cluster is tens of MB: a backup that read less did not read the data volume.
    assert!(
        read > 10_000_000,
        "the tables role's backup read only {read} bytes: its volumes are missing\n{}",
        first.all()
    );
    // Byte progress: the tables container's events count the bytes read up to the total listed.
    let progress: Vec<serde_json::Value> = first
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "progress" && e["subject"] == t.container("tables"))
        .collect();
    let last =
        progress.last().unwrap_or_else(|| panic!("no progress event for the tables container:\n{}", first.all()));
    assert_eq!(last["bytes"], last["total"], "the last progress event counts every byte listed: {last}");
    assert_eq!(last["bytes"].as_u64(), Some(read), "{last}");
    let (code, out) = restic(&repo, &password_file, &["ls", "latest", "--tag", "role=tables"]);
    assert_eq!(code, 0, "restic ls: {out}");
    for kind in ["data", "conf", "logs"] {
        let want = format!("/gbo/{}/tables/volumes/{kind}.tar", t.name);
        assert!(out.lines().any(|l| l == want), "{want} missing from restic's listing:\n{out}");
    }
    for busy in ["gbo-backup", "restore"] {
        let volumes = gbo_tests::lxc_ok(&["storage", "volume", "list", "default", "--format", "csv", "-c", "n"]);
        assert!(!volumes.contains(&format!("{}-tables-data/{busy}", t.name)), "{volumes}");
    }

    // Deduplicated: the tarballs are stored uncompressed, so a second backup after a small change adds little.
    let db = pg(pg_port(&t), &secret(&t, "tables-password")).await;
    db.batch_execute("UPDATE kept SET v = 'changed' WHERE id <= 30").await.expect("update");
    drop(db);
    let after_change = rows(&t).await;
    let second = gbo_async(create.clone()).await;
    assert_eq!(second.code, 0, "second backup:\n{}", second.all());
    let report: serde_json::Value = serde_json::from_str(&second.stdout).expect("report JSON");
    let (read, added) = tables_bytes(&report);
    assert!(added * 10 < read, "the second backup added {added} bytes of {read} read");
    let (code, out) = restic(&repo, &password_file, &["check"]);
    assert_eq!(code, 0, "restic check: {out}");

    let purge = gbo_async(vec![
        "uninstall".into(),
        "tables".into(),
        "--tenant".into(),
        t.name.clone(),
        "--purge".into(),
        "--yes".into(),
    ])
    .await;
    assert_eq!(purge.code, 0, "uninstall --purge:\n{}", purge.all());

    // Another LXD through its lxc remote: the standalone daemon of the rig.
    let _lease = gbo_tests::rig::SoloLease::shared();
    let _solo = gbo_tests::rig::TenantCleanup { lxd_dir: gbo_tests::rig::member_dir("solo"), tenant: t.name.clone() };
    let solo_stack = tempfile::Builder::new().prefix("gbot-solo-stack-").tempdir().expect("tempdir");
    let mut restore: Vec<String> = vec![
        "--remote".into(),
        "gbot-solo".into(),
        "backup".into(),
        "restore".into(),
        "--tenant".into(),
        t.name.clone(),
    ];
    restore.extend(repo_args(&repo, &password_file));
    restore.extend([
        "--image".into(),
        TEST_IMAGE.into(),
        "--stack-dir".into(),
        solo_stack.path().display().to_string(),
    ]);
    let run = gbo_async(restore).await;
    assert_eq!(run.code, 0, "restore through --remote gbot-solo:\n{}", run.all());
    assert!(run.stdout.contains("healthy"), "{}", run.all());
    assert!(
        run.stdout.contains("tables hold exactly the rows the backup recorded"),
        "the row check ran:\n{}",
        run.all()
    );
    let status = gbo_async(vec![
        "--remote".into(),
        "gbot-solo".into(),
        "status".into(),
        "--tenant".into(),
        t.name.clone(),
        "--output".into(),
        "json".into(),
    ])
    .await;
    let parsed: TenantStatus = serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("{e}\n{}", status.all()));
    let component = parsed.components.iter().find(|c| c.container == t.container("tables")).expect("tables on solo");
    assert_eq!(component.volumes.len(), 3, "restored into volumes: {component:?}");
    let port = gbo_tests::host_port(&parsed, &t.container("tables"), 5432);
    let password = std::fs::read_to_string(solo_stack.path().join(".secrets/tables-password")).expect("secrets");
    let db = pg(port, password.trim()).await;
    let on_solo: Vec<(i32, String)> = db
        .query("SELECT id, v FROM kept ORDER BY id", &[])
        .await
        .expect("select on solo")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(on_solo, after_change, "the other daemon's database holds exactly the backed-up rows");

    // A chosen cluster member: `--remote gbot-cluster ... --target m2` imports the volumes on m2 (the rig's pools
    // are member-local) and creates the container there (m2: the cluster tests stop m3 and evacuate m1).
    let _cluster = gbo_tests::rig::TenantCleanup { lxd_dir: gbo_tests::rig::member_dir("m1"), tenant: t.name.clone() };
    let cluster_stack = tempfile::Builder::new().prefix("gbot-cluster-stack-").tempdir().expect("tempdir");
    let mut restore: Vec<String> = vec![
        "--remote".into(),
        CLUSTER.into(),
        "backup".into(),
        "restore".into(),
        "--tenant".into(),
        t.name.clone(),
        "--target".into(),
        "m2".into(),
    ];
    restore.extend(repo_args(&repo, &password_file));
    restore.extend([
        "--image".into(),
        TEST_IMAGE.into(),
        "--stack-dir".into(),
        cluster_stack.path().display().to_string(),
    ]);
    // A member that is not in the cluster is refused before anything changes, naming it.
    let nowhere: Vec<String> = restore.iter().map(|a| if a == "m2" { "m9".to_string() } else { a.clone() }).collect();
    let run = gbo_async(nowhere).await;
    assert_eq!(run.code, 2, "--target m9:\n{}", run.all());
    assert!(run.stderr.contains("member m9 is not in the cluster"), "{}", run.all());
    assert!(cluster_volumes(&t.name).is_empty(), "nothing was imported for a refused member");
    let run = gbo_async(restore).await;
    assert_eq!(run.code, 0, "restore through --remote {CLUSTER} --target m2:\n{}", run.all());
    assert!(run.stderr.contains("on member m2: created from the backup"), "the plan names the member:\n{}", run.all());
    assert!(
        run.stdout.contains("tables hold exactly the rows the backup recorded"),
        "the row check ran:\n{}",
        run.all()
    );
    let listed = gbo_tests::lxc_ok(&["list", &format!("{CLUSTER}:"), "--format", "csv", "-c", "nL"]);
    assert!(listed.lines().any(|l| l == format!("{},m2", t.container("tables"))), "tables on m2: {listed}");
    let volumes = cluster_volumes(&t.name);
    assert_eq!(volumes.len(), 3, "three volumes: {volumes:?}");
    assert!(volumes.iter().all(|(_, member)| member == "m2"), "the volumes are on m2: {volumes:?}");
    let status = gbo_async(vec![
        "--remote".into(),
        CLUSTER.into(),
        "status".into(),
        "--tenant".into(),
        t.name.clone(),
        "--output".into(),
        "json".into(),
    ])
    .await;
    let parsed: TenantStatus = serde_json::from_str(&status.stdout).unwrap_or_else(|e| panic!("{e}\n{}", status.all()));
    let published = parsed
        .components
        .iter()
        .find(|c| c.container == t.container("tables"))
        .and_then(|c| c.ports.iter().find(|p| p.container_port == 5432))
        .cloned()
        .unwrap_or_else(|| panic!("tables publishes 5432: {parsed:?}"));
    let address: std::net::IpAddr = published.host_address.parse().expect("a listen address");
    let password = std::fs::read_to_string(cluster_stack.path().join(".secrets/tables-password")).expect("secrets");
    let db = gbo_tests::app_db_at(address, published.host_port, password.trim()).await;
    let on_m2: Vec<(i32, String)> = db
        .query("SELECT id, v FROM kept ORDER BY id", &[])
        .await
        .expect("select on m2")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(on_m2, after_change, "the database on m2 holds exactly the backed-up rows");
}

/// The rig's cluster remote.
const CLUSTER: &str = "gbot-cluster";

/// The tenant's custom volumes on the cluster's `default` pool, with the member each is on.
fn cluster_volumes(tenant: &str) -> Vec<(String, String)> {
    let (_, listed) =
        gbo_tests::lxc(&["storage", "volume", "list", &format!("{CLUSTER}:default"), "--format", "csv", "-c", "tnL"])
            .ok_output();
    listed
        .lines()
        .filter_map(|l| l.strip_prefix("custom,"))
        .filter_map(|l| l.split_once(','))
        .filter(|(name, _)| name.starts_with(&format!("{tenant}-")) && !name.contains('/'))
        .map(|(name, member)| (name.to_string(), member.to_string()))
        .collect()
}

/// Wait (at most 60 s) until the tenant's PostgreSQL accepts the application role again (after a restart it
/// replays its WAL first and refuses connections meanwhile).
async fn wait_for_tables(t: &TestTenant) {
    let (port, password) = (pg_port(t), secret(t, "tables-password"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(port).user("gbuser").password(password.as_str()).dbname("botserver");
        match config.connect(tokio_postgres::NoTls).await {
            Ok(_) => return,
            Err(e) if std::time::Instant::now() > deadline => panic!("PostgreSQL of {} is not back: {e}", t.name),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(300)).await,
        }
    }
}

/// The custom volumes of a tenant on the main daemon's `default` pool (no snapshots), checked to be three.
fn custom_volumes(tenant: &str) -> Vec<String> {
    let listed = gbo_tests::lxc_ok(&["storage", "volume", "list", "default", "--format", "csv", "-c", "tn"]);
    let ours: Vec<String> = listed
        .lines()
        .filter_map(|l| l.strip_prefix("custom,"))
        .filter(|v| v.starts_with(&format!("{tenant}-")) && !v.contains('/'))
        .map(String::from)
        .collect();
    assert_eq!(ours.len(), 3, "the tenant's volumes: {ours:?}");
    ours
}

/// `rows` of a tenant's `kept` table read with the real `psql` as the application role (`gbuser`, its password
/// in a 0600 `.pgpass` file named by `PGPASSFILE`, never on the command line).
fn psql_rows(port: u16, password: &str, dir: &Path) -> Vec<(i32, String)> {
    let pgpass = dir.join("pgpass");
    std::fs::write(&pgpass, format!("127.0.0.1:{port}:botserver:gbuser:{password}\n")).expect("pgpass");
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let out = std::process::Command::new(require_program("psql"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "gbuser", "-d", "botserver", "-w", "-At", "-F"])
        .arg("|")
        .args(["-c", "SELECT id, v FROM kept ORDER BY id"])
        .env("PGPASSFILE", &pgpass)
        .output()
        .expect("psql");
    assert!(out.status.success(), "psql as gbuser: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (id, v) = l.split_once('|').unwrap_or_else(|| panic!("psql line {l:?}"));
            (id.parse().expect("id"), v.to_string())
        })
        .collect()
}

/// `restore --replace` over an existing `storage = "volumes"` tenant: `--dry-run` changes nothing; the restore
/// snapshots the containers and their volumes first (`pre-restore-<id>`), replaces each volume's content with the
/// backup's and passes its row check; `psql` as gbuser reads exactly the backed-up rows, health passes, the next
/// plan is empty and no temporary volume is left. A restore that fails after the volumes were replaced (the row
/// check, here against a mixed-up repository) puts the tenant back from its safety snapshot: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restore_replace_over_a_volumes_tenant_snapshots_first_and_keeps_nothing_lost() {
    let client = lxd().await;
    require_test_image(&client).await;
    require_program("restic");
    require_program("psql");
    let t = TestTenant::new();
    let _main = gbo_tests::rig::TenantCleanup { lxd_dir: "/var/lib/lxd".into(), tenant: t.name.clone() };
    let work = tempfile::Builder::new().prefix("gbot-backup-").tempdir().expect("tempdir");
    let repo = work.path().join("repo");
    let password_file = work.path().join("password");
    std::fs::write(&password_file, "replace over volumes\n").expect("password");
    std::fs::set_permissions(&password_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let file = work.path().join("gbo.toml");
    std::fs::write(&file, format!("tenant = \"{}\"\nroles = [\"tables\"]\nstorage = \"volumes\"\n", t.name))
        .expect("tenant file");
    let file_s = file.display().to_string();
    let install = gbo_async(vec![
        "install".into(),
        "--file".into(),
        file_s.clone(),
        "--image".into(),
        TEST_IMAGE.into(),
        "--stack-dir".into(),
        t.stack_dir(),
    ])
    .await;
    assert_eq!(install.code, 0, "install with storage = volumes:\n{}", install.all());
    let password = secret(&t, "tables-password");
    let db = pg(pg_port(&t), &password).await;
    db.batch_execute(
        "CREATE TABLE kept (id int primary key, v text); \
         INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, 2000) g",
    )
    .await
    .expect("rows as the application role");
    drop(db);
    let backed_up = rows(&t).await;
    let mut create = vec!["backup".into(), "create".into(), "--tenant".into(), t.name.clone()];
    create.extend(repo_args(&repo, &password_file));
    let first = gbo_async(create.clone()).await;
    assert_eq!(first.code, 0, "backup create:\n{}", first.all());
    let backups = list_backups(&repo, &password_file).await;
    let id = |b: &serde_json::Value| b["backup"].as_str().expect("backup id").to_string();
    let first_id = id(backups.last().expect("the backup"));

    // The data changes after the backup: rows deleted, others added.
    let db = pg(pg_port(&t), &password).await;
    db.batch_execute(
        "DELETE FROM kept WHERE id <= 100; INSERT INTO kept SELECT g, 'new' FROM generate_series(5001, 5050) g",
    )
    .await
    .expect("change");
    drop(db);
    let changed = rows(&t).await;
    assert_ne!(changed, backed_up);

    let mut restore = vec!["backup".into(), "restore".into(), "--tenant".into(), t.name.clone()];
    restore.extend(repo_args(&repo, &password_file));
    restore.extend(["--image".into(), TEST_IMAGE.into(), "--replace".into()]);
    let snapshots =
        |container: &str| -> String { gbo_tests::lxc_ok(&["query", &format!("/1.0/instances/{container}/snapshots")]) };
    let tables = t.container("tables");

    // --target off a cluster: refused, naming it, before anything changes.
    let run = gbo_async([restore.clone(), vec!["--target".into(), "m2".into()]].concat()).await;
    assert_eq!(run.code, 2, "--target on the main daemon:\n{}", run.all());
    assert!(run.stderr.contains("--target m2") && run.stderr.contains("is not a cluster"), "{}", run.all());

    // --dry-run: the plan, nothing changed.
    let run = gbo_async([restore.clone(), vec!["--dry-run".into()]].concat()).await;
    assert_eq!(run.code, 0, "restore --replace --dry-run:\n{}", run.all());
    assert!(run.stdout.contains("dry run: nothing changed"), "{}", run.all());
    assert!(
        run.stderr.contains("snapshotted, then replaced"),
        "the plan names the replaced containers:\n{}",
        run.all()
    );
    assert_eq!(rows(&t).await, changed, "--dry-run changed the data");
    assert!(!snapshots(&tables).contains("pre-restore"), "--dry-run took a snapshot: {}", snapshots(&tables));

    let run = gbo_async(restore.clone()).await;
    assert_eq!(run.code, 0, "restore --replace over a volumes-mode tenant:\n{}", run.all());
    assert!(run.stdout.contains("healthy"), "{}", run.all());
    assert!(
        run.stdout.contains("tables hold exactly the rows the backup recorded"),
        "the row check ran:\n{}",
        run.all()
    );
    assert_eq!(psql_rows(pg_port(&t), &password, work.path()), backed_up, "psql as gbuser reads the backed-up rows");

    // The safety snapshot: the instance and each of its three volumes.
    let safety = format!("pre-restore-{}", first_id.to_ascii_lowercase().replace(['t', 'z'], ""));
    assert!(run.stdout.contains(&safety), "the safety snapshot is named:\n{}", run.all());
    assert!(snapshots(&tables).contains(&safety), "instance snapshot {safety}: {}", snapshots(&tables));
    for kind in ["data", "conf", "logs"] {
        let volume = format!("{tables}-{kind}");
        let snaps =
            gbo_tests::lxc_ok(&["query", &format!("/1.0/storage-pools/default/volumes/custom/{volume}/snapshots")]);
        assert!(snaps.contains(&format!("{volume}/snapshots/{safety}")), "volume snapshot {volume}/{safety}: {snaps}");
    }
    assert_eq!(custom_volumes(&t.name).len(), 3, "only the tenant's three volumes are left (no temporary one)");
    let plan = gbo_async(vec![
        "plan".into(),
        "--file".into(),
        file_s.clone(),
        "--image".into(),
        TEST_IMAGE.into(),
        "--stack-dir".into(),
        t.stack_dir(),
    ])
    .await;
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(plan.stdout.contains("Nothing to do"), "the plan after the restore is not empty:\n{}", plan.all());

    // A restore that fails after the volumes were replaced puts the old content back (nothing lost: the safety
    // snapshot holds it): a second backup (of fewer rows) whose tables snapshot is swapped for the first backup's
    // by the real restic, so its record meets the first backup's data and the row check fails after the volumes
    // were replaced.
    let db = pg(pg_port(&t), &password).await;
    db.batch_execute("DELETE FROM kept WHERE id > 1990").await.expect("change");
    drop(db);
    // The second backup also holds a cache role, which the tenant no longer has when the restore runs: the restore
    // creates it (container and volumes), and its undo must delete them again.
    let with_cache = work.path().join("with-cache.toml");
    std::fs::write(
        &with_cache,
        format!("tenant = \"{}\"\nroles = [\"tables\", \"cache\"]\nstorage = \"volumes\"\n", t.name),
    )
    .expect("tenant file");
    let install = gbo_async(vec![
        "install".into(),
        "--file".into(),
        with_cache.display().to_string(),
        "--image".into(),
        TEST_IMAGE.into(),
        "--stack-dir".into(),
        t.stack_dir(),
    ])
    .await;
    assert_eq!(install.code, 0, "install cache:\n{}", install.all());
    let second = gbo_async(create.clone()).await;
    assert_eq!(second.code, 0, "second backup:\n{}", second.all());
    let cache = t.container("cache");
    let removed = gbo_async(
        ["uninstall", "--tenant", t.name.as_str(), "cache", "--purge", "--yes"].iter().map(|s| s.to_string()).collect(),
    )
    .await;
    assert_eq!(removed.code, 0, "uninstall cache:\n{}", removed.all());
    assert_eq!(custom_volumes(&t.name).len(), 3, "cache's volumes are gone before the restore");
    // Uninstall keeps a role's secret (it belongs to the tenant); removed here, the tenant is one that never had
    // cache, and the restore's cache-password is one it adds.
    let cache_secret = t.stack.path().join(".secrets/cache-password");
    std::fs::remove_file(&cache_secret).expect("the cache secret uninstall kept");
    let backups = list_backups(&repo, &password_file).await;
    let complete: Vec<&serde_json::Value> = backups.iter().filter(|b| b["complete"] == true).collect();
    assert_eq!(complete.len(), 2, "{backups:?}");
    let (older, newer) = (complete[0], complete[1]);
    let tables_snap = |b: &serde_json::Value| b["snapshots"]["tables"].as_str().expect("tables snapshot").to_string();
    for (snap, from, to) in
        [(tables_snap(newer), id(newer), "gbot-set-aside".to_string()), (tables_snap(older), id(older), id(newer))]
    {
        let (code, out) = restic(
            &repo,
            &password_file,
            &["tag", "--remove", &format!("backup={from}"), "--add", &format!("backup={to}"), &snap],
        );
        assert_eq!(code, 0, "restic tag: {out}");
    }
    let db = pg(pg_port(&t), &password).await;
    db.batch_execute("DELETE FROM kept WHERE id <= 10; INSERT INTO kept VALUES (7000, 'after')")
        .await
        .expect("a last change");
    drop(db);
    let current = rows(&t).await;
    let run = gbo_async([restore.clone(), vec!["--backup".into(), id(newer)]].concat()).await;
    assert_eq!(run.code, 2, "a restore whose rows differ from the record fails:\n{}", run.all());
    assert!(run.stderr.contains("botserver: \"public\".\"kept\""), "the table is named:\n{}", run.all());
    assert!(run.stderr.contains("put back"), "the failure says the old content was put back:\n{}", run.all());
    assert!(
        run.stderr.contains(&format!("healthy again: {tables}")),
        "the undo waited for the put-back container's health check:\n{}",
        run.all()
    );
    assert_eq!(container_status(&tables), "RUNNING");
    wait_for_tables(&t).await;
    assert_eq!(rows(&t).await, current, "the failed restore put the tenant's own rows back");
    assert!(run.stderr.contains(&cache), "the restore created {cache} before it failed:\n{}", run.all());
    let (present, out) = gbo_tests::lxc(&["info", &cache]).ok_output();
    assert!(!present, "the undo deleted the container the restore created: {out}");
    assert!(
        !cache_secret.exists(),
        "the undo removed the secret the restore added for the role the tenant did not have: {}",
        cache_secret.display()
    );
    assert_eq!(secret(&t, "tables-password"), password, "the undo left the tenant's own secrets as they were");
    assert_eq!(
        custom_volumes(&t.name).len(),
        3,
        "no temporary volume, and none of the volumes the restore created for cache, is left after the failure"
    );
}
