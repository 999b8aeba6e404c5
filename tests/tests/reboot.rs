//! What a host reboot does to a tenant, on the rig's standalone daemon `solo` (its own `LXD_DIR` and socket; gbo
//! reaches it through `LXD_SOCKET` only): a tenant (tables, cache, proxy) is installed with rows in PostgreSQL,
//! then solo is stopped with `lxd shutdown` (every container stopped within its `boot.host_shutdown_timeout`) and
//! started again exactly as `cargo xtask lxd-cluster up` starts it (`gbo_tests::rig::start_daemon`). With no gbo
//! command in between, every container must be Running again by itself (`boot.autostart`), in priority order,
//! healthy (`gbo status` exit 0) and with its rows (read through the published port with the application's role).
//!
//! Start order: LXD starts autostart instances one at a time, highest `boot.autostart.priority` first. The signal
//! is the start time the host kernel records for each container's init process (`/proc/<pid>/stat`, field 22, in
//! clock ticks since boot; the pid from the instance state): the proxy (priority 5) must start after tables and
//! cache (50 each, so their mutual order is LXD's choice). LXD 5.0 sorts by priority, highest first, then by name
//! (`instanceAutostartList`), and starts one after another: without priorities it would start `cache`, `proxy`,
//! `tables`, so the check fails if the priorities are lost.
//!
//! This is the only test allowed to stop solo. Other tests use solo too (backup restores, storage volumes): the
//! shutdown window is kept short (it is printed), it is taken under the exclusive [`SoloLease`] (tests of the suite
//! that use solo hold it shared), and a [`RestartOnDrop`] guard starts solo again whatever happens, so a failing run
//! still leaves it running and answering. Other instances on solo are stopped and started again by their own
//! autostart state during the window, as on a real reboot.

use gbo_tests::app_db as pg;
use std::time::{Duration, Instant};

use gbo_ops::install::status::TenantStatus;
use gbo_tests::rig::{self, RestartOnDrop, SoloLease, SOLO, SOLO_SOCKET};
use gbo_tests::{Run, TestTenant};

/// `gbo` against solo only (an empty `LXD_DIR` counts as unset: the explicit socket is the one daemon gbo uses).
async fn gbo_solo(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        gbo_tests::gbo_env(&args, &[("LXD_SOCKET", SOLO_SOCKET), ("LXD_DIR", "")])
    })
    .await
    .expect("gbo thread")
}

fn lxc_solo_ok(args: &[&str]) -> String {
    let run = rig::lxc_on(SOLO, args);
    assert_eq!(run.code, 0, "LXD_DIR=solo lxc {args:?}: {}", run.stderr);
    run.stdout.trim().to_string()
}

/// Deletes the tenant's containers on solo when dropped (declared before the restart guard, so it runs after it).
struct SoloCleanup(Vec<String>);

impl Drop for SoloCleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = rig::lxc_on(SOLO, &["delete", "--force", name]);
        }
    }
}

/// The container's state as `lxc list` prints it (`RUNNING`, `STOPPED`; empty when unknown or solo is down).
fn state(name: &str) -> String {
    let run = rig::lxc_on(SOLO, &["list", name, "--format", "csv", "-c", "ns"]);
    run.stdout.lines().find_map(|l| l.strip_prefix(&format!("{name},")).map(str::to_string)).unwrap_or_default()
}

/// The container's init pid and the host kernel's start time of that process (clock ticks since boot).
fn init_start(name: &str) -> (u32, u64) {
    let state: serde_json::Value =
        serde_json::from_str(&lxc_solo_ok(&["query", &format!("/1.0/instances/{name}/state")])).expect("state JSON");
    let pid = state["pid"].as_u64().filter(|p| *p > 0).unwrap_or_else(|| panic!("{name} has no init pid: {state}"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the init process's stat");
    // The command name (field 2) is in parentheses and may hold spaces: fields are counted after its last `)`.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 1..];
    let start = rest.split_whitespace().nth(19).and_then(|f| f.parse().ok()).expect("field 22, starttime");
    (pid as u32, start)
}

async fn status(tenant: &str) -> (i32, Option<TenantStatus>, String) {
    let run = gbo_solo(vec!["status".into(), "--tenant".into(), tenant.into(), "--output".into(), "json".into()]).await;
    (run.code, serde_json::from_str(&run.stdout).ok(), run.all())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_brings_every_container_back_in_priority_order_healthy_with_its_data() {
    assert!(rig::answers(SOLO), "the standalone daemon solo is not up: run `cargo xtask lxd-cluster up`");
    let t = TestTenant::new();
    let roles = ["tables", "cache", "proxy"];
    let containers: Vec<String> = roles.iter().map(|r| t.container(r)).collect();
    let _cleanup = SoloCleanup(containers.clone());

    let installed = gbo_solo(t.args("install", &roles)).await;
    assert_eq!(installed.code, 0, "install on solo:\n{}", installed.all());
    for (role, name) in roles.iter().zip(&containers) {
        assert_eq!(lxc_solo_ok(&["config", "get", name, "boot.autostart"]), "true", "{name}");
        let priority = lxc_solo_ok(&["config", "get", name, "boot.autostart.priority"]);
        let expected = gbo_components::catalogue::boot_priority(role.parse().expect("role"));
        assert_eq!(priority, expected.to_string(), "{name}");
    }
    let (code, report, text) = status(&t.name).await;
    assert_eq!(code, 0, "status after install:\n{text}");
    let port = report
        .expect("status JSON")
        .components
        .iter()
        .find(|c| c.container == t.container("tables"))
        .and_then(|c| c.ports.iter().find(|p| p.container_port == 5432))
        .map(|p| p.host_port)
        .expect("tables publishes 5432");
    let password = std::fs::read_to_string(t.stack.path().join(".secrets/tables-password")).expect("password");
    let password = password.trim().to_string();
    {
        let db = pg(port, &password).await;
        db.batch_execute(
            "CREATE TABLE gbot_kept (id int PRIMARY KEY, v text); INSERT INTO gbot_kept VALUES (1, 'a'), (2, 'b');",
        )
        .await
        .expect("write rows as gbuser");
    }
    let before: Vec<(u32, u64)> = containers.iter().map(|c| init_start(c)).collect();

    // The reboot: solo stopped as a host shutdown stops it, then started as the host's init starts it. The window
    // is held exclusively against the suite's other users of solo, and the guard restarts solo on any exit.
    let lease = SoloLease::exclusive();
    let restart = RestartOnDrop(SOLO);
    let down_at = Instant::now();
    tokio::task::spawn_blocking(|| rig::shutdown_daemon(SOLO, Duration::from_secs(180)))
        .await
        .expect("thread")
        .expect("lxd shutdown of solo");
    for ((pid, _), name) in before.iter().zip(&containers) {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "{name}'s init survived lxd shutdown");
    }
    let stopped_in = down_at.elapsed();
    tokio::task::spawn_blocking(|| {
        rig::start_daemon(SOLO)?;
        rig::wait_ready(SOLO, Duration::from_secs(120))
    })
    .await
    .expect("thread")
    .expect("starting solo again");
    // Back by themselves: no gbo command runs until every container is Running.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let states: Vec<String> = containers.iter().map(|c| state(c)).collect();
        if states.iter().all(|s| s == "RUNNING") {
            break;
        }
        assert!(Instant::now() < deadline, "not every container came back by itself: {containers:?} {states:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let window = down_at.elapsed();
    drop(restart);
    drop(lease);
    eprintln!("solo down and back: {:.1} s (lxd shutdown {:.1} s)", window.as_secs_f64(), stopped_in.as_secs_f64());

    // In priority order: the proxy's init started after those of tables and cache (new processes, all of them).
    let after: Vec<(u32, u64)> = containers.iter().map(|c| init_start(c)).collect();
    for (i, name) in containers.iter().enumerate() {
        assert!(after[i].1 > before[i].1, "{name} was not started again: {:?} then {:?}", before[i], after[i]);
    }
    let (tables, cache, proxy) = (after[0].1, after[1].1, after[2].1);
    assert!(
        proxy > tables && proxy > cache,
        "the proxy (priority 5) started before what it fronts (priority 50): init start ticks tables {tables}, \
         cache {cache}, proxy {proxy}"
    );

    // Healthy, as the operator checks it.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, _, text) = status(&t.name).await;
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "gbo status is not 0 90 s after the reboot:\n{text}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // Data intact, read with the application's role.
    let db = pg(port, &password).await;
    let rows: Vec<(i32, String)> = db
        .query("SELECT id, v FROM gbot_kept ORDER BY id", &[])
        .await
        .expect("select as gbuser")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, vec![(1, "a".to_string()), (2, "b".to_string())]);
}
