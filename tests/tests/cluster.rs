//! gbo on the real three-member LXD cluster of `cargo xtask lxd-cluster up` (members m1..m3 on 127.0.0.2-4, lxc
//! remote `gbot-cluster`), and remotes that cannot be used.
//!
//! What these tests rely on: every member runs on this machine (that is how the rig is built), so the tenant's host
//! directories (storage mode `host`) are the same directories on every member, and a proxy device listening on
//! 127.0.0.1 on any member listens in this machine's network namespace. gbo knows this from the members' loopback
//! addresses (`gbo_ops::site`); members elsewhere would need storage = "volumes".
//!
//! One test shares one tenant across its steps (install by placement, the seed's commands through `lxc`, the app
//! database from a container on another member, a move with data intact, one member shut down and brought back):
//! installing it is the slow part.

use gbo_tests::app_db as pg;
use gbo_tests::rig::TenantCleanup;
use std::time::{Duration, Instant};

use gbo_ops::install::status::TenantStatus;
use gbo_tests::programs::require_program;
use gbo_tests::{gbo_async, Run, TestTenant, TEST_IMAGE};

const REMOTE: &str = "gbot-cluster";
const BASE: &str = "/var/lib/gbo-cluster";

async fn gbo_remote(args: &[&str]) -> Run {
    let mut all = vec!["--remote".to_string(), REMOTE.to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    gbo_async(all).await
}

/// The member each `<prefix>*` instance is on, per `lxc list` on the cluster remote.
fn locations(prefix: &str) -> Vec<(String, String)> {
    let (ok, out) = gbo_tests::lxc(&["list", &format!("{REMOTE}:"), "--format", "csv", "-c", "nL"]).ok_output();
    assert!(ok, "lxc list {REMOTE}: {out}");
    out.lines()
        .filter_map(|l| l.split_once(','))
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(n, l)| (n.to_string(), l.to_string()))
        .collect()
}

fn location(instance: &str) -> String {
    locations(instance)
        .into_iter()
        .find(|(n, _)| n == instance)
        .map(|(_, l)| l)
        .unwrap_or_else(|| panic!("{instance} is not in the cluster"))
}

fn member_status(member: &str) -> String {
    let (_, out) = gbo_tests::lxc(&["cluster", "list", &format!("{REMOTE}:"), "--format", "csv"]).ok_output();
    out.lines()
        .find(|l| l.starts_with(&format!("{member},")))
        .map(|l| l.split(',').find(|f| ["ONLINE", "OFFLINE", "EVACUATED"].contains(f)).unwrap_or("?").to_string())
        .unwrap_or_default()
}

async fn wait_member(member: &str, wanted: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let status = tokio::task::spawn_blocking({
            let member = member.to_string();
            move || member_status(&member)
        })
        .await
        .expect("thread");
        if status == wanted {
            return;
        }
        assert!(Instant::now() < deadline, "member {member} is {status}, not {wanted}, after {limit:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Starts member `member`'s daemon again, the way `cargo xtask lxd-cluster up` starts it.
fn start_member(member: &str) {
    let dir = format!("{BASE}/{member}");
    let log = format!("/var/log/gbo/cluster-{member}.log");
    let status = std::process::Command::new(require_program("setsid"))
        .args(["--fork", "lxd", "--group", "root", "--logfile", &log])
        .env("LXD_DIR", &dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("starting lxd");
    assert!(status.success(), "starting member {member}");
    let ready = std::process::Command::new(require_program("lxd"))
        .args(["waitready", "--timeout", "120"])
        .env("LXD_DIR", &dir)
        .status()
        .expect("lxd waitready");
    assert!(ready.success(), "member {member} did not become ready");
}

/// A member shut down by the test: its daemon is started again when the guard drops, also when the test fails (the
/// rig is shared; the member must come back).
struct MemberDown {
    member: &'static str,
    restarted: bool,
}

impl MemberDown {
    fn shut_down(member: &'static str) -> Self {
        let guard = Self { member, restarted: false };
        let status = std::process::Command::new(require_program("lxd"))
            .args(["shutdown", "--timeout", "60"])
            .env("LXD_DIR", format!("{BASE}/{member}"))
            .status()
            .expect("lxd shutdown");
        assert!(status.success(), "lxd shutdown of member {member}");
        guard
    }

    fn restart(&mut self) {
        self.restarted = true;
        start_member(self.member);
    }
}

impl Drop for MemberDown {
    fn drop(&mut self) {
        if !self.restarted {
            start_member(self.member);
        }
    }
}

fn status_of(run: &Run) -> TenantStatus {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("status JSON does not parse: {e}\n{}", run.all()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenant_placed_across_members_moves_and_survives_a_member_going_away() {
    let t = TestTenant::new();
    let _remote_cleanup = TenantCleanup { lxd_dir: gbo_tests::rig::member_dir("m1"), tenant: t.name.clone() };
    let file = t.stack.path().join("gbo.toml");
    // Host storage on purpose: every member runs on this machine, so the stack dir is the same directory on each,
    // and the move below is of a container whose data stays put (a cluster's default is volumes; those are
    // covered by install_volumes.rs).
    std::fs::write(
        &file,
        format!(
            "tenant = \"{}\"\nroles = [\"tables\", \"cache\", \"proxy\"]\nstorage = \"host\"\n\n[placement]\ntables = \"m1\"\ncache = \"m2\"\nproxy = \"m3\"\n",
            t.name
        ),
    )
    .expect("tenant file");
    let file_s = file.display().to_string();
    let stack = t.stack.path().join("stack").display().to_string();
    // plan shows each container's member before anything exists.
    let plan = gbo_remote(&["plan", "--file", &file_s, "--image", TEST_IMAGE, "--stack-dir", &stack]).await;
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(plan.stdout.contains(&format!("{}-tables on m1", t.name)), "{}", plan.stdout);
    assert!(plan.stdout.contains(&format!("{}-proxy on m3", t.name)), "{}", plan.stdout);

    let install = gbo_remote(&["install", "--file", &file_s, "--image", TEST_IMAGE, "--stack-dir", &stack]).await;
    assert_eq!(install.code, 0, "install across members: {}", install.all());
    let tables = t.container("tables");
    let proxy = t.container("proxy");
    // The seed's own commands, through lxc on the cluster remote, see the placement.
    assert_eq!(location(&tables), "m1");
    assert_eq!(location(&t.container("cache")), "m2");
    assert_eq!(location(&proxy), "m3");
    // A tenant without public_address: its public ports listen on their member's address (m3: 127.0.0.4).
    let https = device_get(&proxy, "gbo-port-https", "listen");
    assert!(https.starts_with("tcp:127.0.0.4:"), "the proxy's https on m3's address: {https}");
    let status = gbo_remote(&["status", "--tenant", &t.name, "--output", "json"]).await;
    assert_eq!(status.code, 0, "{}", status.all());
    let report = status_of(&status);
    let member = |c: &str| report.components.iter().find(|x| x.container == c).and_then(|x| x.member.clone());
    assert_eq!(member(&tables).as_deref(), Some("m1"), "{report:?}");
    assert_eq!(member(&proxy).as_deref(), Some("m3"), "{report:?}");
    let pg_port = report
        .components
        .iter()
        .find(|c| c.container == tables)
        .and_then(|c| c.ports.iter().find(|p| p.container_port == 5432))
        .map(|p| p.host_port)
        .expect("tables publishes 5432");

    // The app's database, with the generated password: write through the published port.
    let password = std::fs::read_to_string(format!("{stack}/.secrets/tables-password")).expect("secret");
    let password = password.trim().to_string();
    let db = pg(pg_port, &password).await;
    db.batch_execute(
        "CREATE TABLE gbot_keep(v text); INSERT INTO gbot_keep SELECT 'row ' || g FROM generate_series(1, 500) g",
    )
    .await
    .expect("write rows");
    drop(db);
    let (ok, out) = gbo_tests::lxc(&[
        "exec",
        &format!("{REMOTE}:{tables}"),
        "--cwd",
        "/tmp",
        "--",
        "runuser",
        "-u",
        "postgres",
        "--",
        "psql",
        "-d",
        "botserver",
        "-tAc",
        "SELECT count(*) FROM gbot_keep",
    ])
    .ok_output();
    assert!(ok && out.trim() == "500", "seed's psql through lxc exec: {out}");

    // From a container on another member (m2), wired the way gbo wires a dependency (a proxy device with
    // bind=instance: tables at 127.0.0.1:5432 inside), with the password in a 0600 file.
    let client = format!("{}-client", t.name);
    let (ok, out) =
        gbo_tests::lxc(&["launch", TEST_IMAGE, &format!("{REMOTE}:{client}"), "--target", "m2"]).ok_output();
    assert!(ok, "launch client on m2: {out}");
    let (ok, out) = gbo_tests::lxc(&[
        "config",
        "device",
        "add",
        &format!("{REMOTE}:{client}"),
        "gbo-wire-tables-5432",
        "proxy",
        "listen=tcp:127.0.0.1:5432",
        &format!("connect=tcp:127.0.0.1:{pg_port}"),
        "bind=instance",
    ])
    .ok_output();
    assert!(ok, "wire device: {out}");
    gbo_tests::push_pgpass(t.stack.path(), &format!("{REMOTE}:{client}"), None, &password);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) =
            gbo_tests::psql_as_app(&format!("{REMOTE}:{client}"), None, "SELECT count(*) FROM gbot_keep").ok_output();
        if ok && out.trim() == "500" {
            break;
        }
        assert!(Instant::now() < deadline, "the app database from m2: {out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(location(&client), "m2");

    // Move tables m1 -> m2: snapshot first, data intact, healthy.
    let moved = gbo_remote(&["move", "--tenant", &t.name, "tables", "--to", "m2", "--output", "json"]).await;
    assert_eq!(moved.code, 0, "move: {}", moved.all());
    assert_eq!(location(&tables), "m2");
    let moves: serde_json::Value = serde_json::from_str(&moved.stdout).expect("move JSON");
    assert_eq!(moves[0]["from"], "m1");
    assert!(moves[0]["snapshot"].as_str().is_some_and(|s| s.starts_with("gbo-move-")), "{moves}");
    assert_eq!(moves[0]["health"]["healthy"], true, "{moves}");
    let db = pg(pg_port, &password).await;
    let rows: i64 = db.query_one("SELECT count(*) FROM gbot_keep", &[]).await.expect("count").get(0);
    assert_eq!(rows, 500, "every row is there after the move");
    drop(db);

    // Evacuating m3 is planned first (dry run: other tests' containers may live there too).
    let evacuation = gbo_remote(&["evacuate", "m3", "--dry-run"]).await;
    assert_eq!(evacuation.code, 0, "{}", evacuation.all());
    assert!(
        evacuation.stdout.contains(&format!("{proxy} -> m1")) || evacuation.stdout.contains(&format!("{proxy} -> m2")),
        "{}",
        evacuation.stdout
    );
    assert!(evacuation.stdout.contains("--dry-run: nothing was changed."), "{}", evacuation.stdout);
    assert_eq!(location(&proxy), "m3");

    // One member goes away: m3 (the proxy's).
    let mut down = MemberDown::shut_down("m3");
    wait_member("m3", "OFFLINE", Duration::from_secs(90)).await;
    let status = gbo_remote(&["status", "--tenant", &t.name, "--output", "json"]).await;
    assert_eq!(status.code, 1, "a container on an offline member is a problem: {}", status.all());
    let report = status_of(&status);
    let p = report.components.iter().find(|c| c.container == proxy).expect("proxy listed");
    assert_eq!(p.state.as_str(), "Unknown", "{p:?}");
    let detail = p.health.as_ref().map(|h| h.detail.clone()).unwrap_or_default();
    assert!(detail.contains("member m3") && detail.contains("Offline"), "{detail}");
    let table = gbo_remote(&["status", "--tenant", &t.name]).await;
    assert!(table.stdout.contains("MEMBER") && table.stdout.contains("m3"), "{}", table.stdout);
    // Moving away from it is refused, naming it; nothing changes.
    let refused = gbo_remote(&["move", "--tenant", &t.name, "proxy", "--to", "m1"]).await;
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(refused.stderr.contains("source member m3 is Offline"), "{}", refused.stderr);
    // Nothing is placed on it either.
    let other = TestTenant::new();
    let placed = gbo_remote(&[
        "plan",
        "--tenant",
        &other.name,
        "--image",
        TEST_IMAGE,
        "--stack-dir",
        &other.stack_dir(),
        "--target",
        "m3",
        "cache",
    ])
    .await;
    assert_eq!(placed.code, 2, "{}", placed.all());
    assert!(placed.stderr.contains("member m3 is Offline"), "{}", placed.stderr);

    down.restart();
    wait_member("m3", "ONLINE", Duration::from_secs(120)).await;
    // Back: the proxy is on m3 and known again, and the data is where it was.
    let status = gbo_remote(&["status", "--tenant", &t.name, "--output", "json"]).await;
    let report = status_of(&status);
    let p = report.components.iter().find(|c| c.container == proxy).expect("proxy listed");
    assert_ne!(p.state.as_str(), "Unknown", "{p:?}");
    assert_eq!(p.member.as_deref(), Some("m3"));
    let db = pg(pg_port, &password).await;
    let rows: i64 = db.query_one("SELECT count(*) FROM gbot_keep", &[]).await.expect("count").get(0);
    assert_eq!(rows, 500);
}

#[tokio::test]
async fn an_explicit_remote_that_is_down_or_unknown_is_exit_2_naming_it() {
    // A copy of the lxc configuration with one more remote where nothing listens (127.0.0.9 is loopback).
    let conf = tempfile::tempdir().expect("tempdir");
    let home = std::env::var("HOME").expect("HOME");
    for f in ["client.crt", "client.key"] {
        std::fs::copy(format!("{home}/.config/lxc/{f}"), conf.path().join(f)).expect("client certificate");
    }
    std::fs::write(
        conf.path().join("config.yml"),
        "remotes:\n  gbot-down:\n    addr: https://127.0.0.9:8443\n    protocol: lxd\n",
    )
    .expect("config.yml");
    let run = |args: &[&str]| {
        std::process::Command::new(gbo_tests::gbo_bin()).args(args).env("LXD_CONF", conf.path()).output().expect("gbo")
    };
    for args in [&["--remote", "gbot-down", "status"][..], &["--remote", "gbot-nowhere", "status"][..]] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("remote `{}`", args[1])), "{args:?}: {stderr}");
    }
    // GBO_REMOTE names it as well as the flag.
    let out = std::process::Command::new(gbo_tests::gbo_bin())
        .args(["status"])
        .env("LXD_CONF", conf.path())
        .env("GBO_REMOTE", "gbot-down")
        .output()
        .expect("gbo");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gbot-down"));
}

/// An LXD project on the cluster for one test (images and profiles from the default project), deleted with its
/// instances when dropped, also when the test fails. `gbo evacuate` empties a member of every gbo container it can
/// see: in its own project, the test sees only its own tenant and leaves other tests' containers alone.
struct TestProject(String);

impl TestProject {
    fn create() -> Self {
        let name = gbo_tests::unique_name("gbot-ev");
        gbo_tests::lxc_ok(&[
            "project",
            "create",
            &format!("{REMOTE}:{name}"),
            "-c",
            "features.images=false",
            "-c",
            "features.profiles=false",
        ]);
        Self(name)
    }

    fn locations(&self, prefix: &str) -> Vec<(String, String)> {
        let (ok, out) =
            gbo_tests::lxc(&["list", &format!("{REMOTE}:"), "--project", &self.0, "--format", "csv", "-c", "nL"])
                .ok_output();
        assert!(ok, "lxc list --project {}: {out}", self.0);
        out.lines()
            .filter_map(|l| l.split_once(','))
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(n, l)| (n.to_string(), l.to_string()))
            .collect()
    }

    /// The custom volumes `<prefix>*` of the project on pool `default`, with the member each is on (a name on two
    /// members is listed twice).
    fn volumes(&self, prefix: &str) -> Vec<(String, String)> {
        let (ok, out) = gbo_tests::lxc(&[
            "storage",
            "volume",
            "list",
            &format!("{REMOTE}:default"),
            "--project",
            &self.0,
            "--format",
            "csv",
            "-c",
            "tnL",
        ])
        .ok_output();
        assert!(ok, "lxc storage volume list --project {}: {out}", self.0);
        out.lines()
            .filter_map(|l| l.strip_prefix("custom,"))
            .filter_map(|l| l.split_once(','))
            .filter(|(n, _)| n.starts_with(prefix) && !n.contains('/'))
            .map(|(n, l)| (n.to_string(), l.to_string()))
            .collect()
    }
}

impl Drop for TestProject {
    fn drop(&mut self) {
        for (name, _) in self.locations("") {
            let _ =
                gbo_tests::lxc(&["delete", "--force", &format!("{REMOTE}:{name}"), "--project", &self.0]).ok_output();
        }
        // Custom volumes, each on its member (one name may be on several members while a move copies it).
        for (volume, member) in self.volumes("") {
            let _ = gbo_tests::lxc(&[
                "storage",
                "volume",
                "delete",
                &format!("{REMOTE}:default"),
                &volume,
                "--project",
                &self.0,
                "--target",
                &member,
            ])
            .ok_output();
        }
        let _ = gbo_tests::lxc(&["project", "delete", &format!("{REMOTE}:{}", self.0)]).ok_output();
    }
}

/// `gbo evacuate m1` of a tenant placed on m1 (tables and cache, host storage: the members share this machine's
/// directories, so the containers can move): the dry run lists both moves and changes nothing; the evacuation
/// moves both off m1, dependencies first, healthy after, every row intact. gbo's evacuation moves containers only
/// (it does not mark the member evacuated in LXD), so m1 stays online and takes placements again at once: checked,
/// so other tests are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evacuate_moves_a_placed_tenant_off_a_member() {
    let project = TestProject::create();
    let t = TestTenant::new();
    let file = t.stack.path().join("gbo.toml");
    std::fs::write(
        &file,
        format!(
            "tenant = \"{}\"\nroles = [\"tables\", \"cache\"]\nstorage = \"host\"\n\n[placement]\ntables = \"m1\"\ncache = \"m1\"\n",
            t.name
        ),
    )
    .expect("tenant file");
    let file_s = file.display().to_string();
    let stack = t.stack.path().join("stack").display().to_string();
    let gbo_p = |args: &[&str]| {
        let mut all = vec!["--project".to_string(), project.0.clone()];
        all.extend(args.iter().map(|a| a.to_string()));
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            gbo_remote(&refs).await
        }
    };
    let install = gbo_p(&["install", "--file", &file_s, "--image", TEST_IMAGE, "--stack-dir", &stack]).await;
    assert_eq!(install.code, 0, "install on m1: {}", install.all());
    let (tables, cache) = (t.container("tables"), t.container("cache"));
    let on = |c: &str| {
        project.locations(c).into_iter().find(|(n, _)| n == c).map(|(_, l)| l).unwrap_or_else(|| panic!("{c} is gone"))
    };
    assert_eq!((on(&tables), on(&cache)), ("m1".to_string(), "m1".to_string()));
    let status = gbo_p(&["status", "--tenant", &t.name, "--output", "json"]).await;
    assert_eq!(status.code, 0, "{}", status.all());
    let pg_port = status_of(&status)
        .components
        .iter()
        .find(|c| c.container == tables)
        .and_then(|c| c.ports.iter().find(|p| p.container_port == 5432))
        .map(|p| p.host_port)
        .expect("tables publishes 5432");
    let password = std::fs::read_to_string(format!("{stack}/.secrets/tables-password")).expect("secret");
    let password = password.trim().to_string();
    let db = pg(pg_port, &password).await;
    db.batch_execute("CREATE TABLE gbot_keep(v int); INSERT INTO gbot_keep SELECT generate_series(1, 300)")
        .await
        .expect("write rows");
    drop(db);

    // The dry run: the plan, dependencies first (tables before cache), nothing moved.
    let dry = gbo_p(&["evacuate", "m1", "--dry-run"]).await;
    assert_eq!(dry.code, 0, "{}", dry.all());
    let line = |c: &str| dry.stdout.lines().position(|l| l.trim_start().starts_with(&format!("{c} -> m")));
    let (t_line, c_line) = (line(&tables), line(&cache));
    assert!(t_line.is_some() && c_line.is_some() && t_line < c_line, "{}", dry.stdout);
    assert!(dry.stdout.contains("Plan: 2 move(s) off m1"), "{}", dry.stdout);
    assert!(dry.stdout.contains("--dry-run: nothing was changed."), "{}", dry.stdout);
    assert_eq!((on(&tables), on(&cache)), ("m1".to_string(), "m1".to_string()));

    // The evacuation.
    let run = gbo_p(&["evacuate", "m1", "--output", "json"]).await;
    assert_eq!(run.code, 0, "evacuate m1: {}", run.all());
    let moved: serde_json::Value = serde_json::from_str(&run.stdout).expect("evacuate JSON");
    assert_eq!(moved.as_array().map(Vec::len), Some(2), "{moved}");
    for m in moved.as_array().expect("moves") {
        assert_eq!(m["from"], "m1", "{m}");
        assert_ne!(m["to"], "m1", "{m}");
        assert!(m["snapshot"].as_str().is_some_and(|s| s.starts_with("gbo-move-")), "{m}");
        assert_eq!(m["health"]["healthy"], true, "{m}");
    }
    assert_ne!(on(&tables), "m1");
    assert_ne!(on(&cache), "m1");
    let status = gbo_p(&["status", "--tenant", &t.name, "--output", "json"]).await;
    assert_eq!(status.code, 0, "healthy after the evacuation: {}", status.all());
    let db = pg(pg_port, &password).await;
    let sum: i64 = db.query_one("SELECT sum(v) FROM gbot_keep", &[]).await.expect("read").get(0);
    assert_eq!(sum, 45150, "every row is there after the evacuation");
    drop(db);
    let again = gbo_p(&["evacuate", "m1", "--dry-run"]).await;
    assert!(again.stdout.contains("m1: no gbo container to move"), "{}", again.all());

    // m1 was never taken out of the cluster: online, and placements on it are accepted again.
    assert_eq!(member_status("m1"), "ONLINE");
    let other = TestTenant::new();
    let plan = gbo_p(&[
        "plan",
        "--tenant",
        &other.name,
        "--image",
        TEST_IMAGE,
        "--stack-dir",
        &other.stack_dir(),
        "--target",
        "m1",
        "cache",
    ])
    .await;
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(plan.stdout.contains(&format!("{}-cache on m1", other.name)), "{}", plan.stdout);
}

/// Issue 11 item 4 with `storage = "volumes"` (the cluster default; the rig's pool is btrfs, local to each member):
/// tables and cache placed on m1, rows written as the application role (`psql` inside tables through `lxc exec`).
/// `gbo move` of tables to m2 moves its volumes with it (exported on m1 through LXD's volume backup API, imported on
/// m2 under the same names): the rows are read again as gbuser, the three volumes are on m2 and gone from m1, the
/// move's data snapshot travelled with them and `gbo snapshot list` shows it. `gbo evacuate m1` then moves cache
/// and its volumes off m1 the same way; status is healthy and the next plan (placement updated) is empty. Before
/// this change the move was refused: "keeps its data in custom volumes on member m1 (...): gbo move does not move
/// volumes yet". First a move that fails after the instance moved (`GBO_FAULT_MOVE=moved`) is rolled back with
/// nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn move_and_evacuate_take_member_local_volumes_along() {
    let project = TestProject::create();
    let t = TestTenant::new();
    let file = t.stack.path().join("gbo.toml");
    let tenant_file = |tables: &str, cache: &str| {
        format!(
            "tenant = \"{}\"\nroles = [\"tables\", \"cache\"]\nstorage = \"volumes\"\n\n[placement]\ntables = \"{tables}\"\ncache = \"{cache}\"\n",
            t.name
        )
    };
    std::fs::write(&file, tenant_file("m1", "m1")).expect("tenant file");
    let file_s = file.display().to_string();
    let stack = t.stack.path().join("stack").display().to_string();
    let gbo_p = |args: &[&str]| {
        let mut all = vec!["--project".to_string(), project.0.clone()];
        all.extend(args.iter().map(|a| a.to_string()));
        async move {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            gbo_remote(&refs).await
        }
    };
    let install = gbo_p(&["install", "--file", &file_s, "--image", TEST_IMAGE, "--stack-dir", &stack]).await;
    assert_eq!(install.code, 0, "install on m1: {}", install.all());
    let (tables, cache) = (t.container("tables"), t.container("cache"));
    let on = |c: &str| {
        project.locations(c).into_iter().find(|(n, _)| n == c).map(|(_, l)| l).unwrap_or_else(|| panic!("{c} is gone"))
    };
    let volumes_of = |role: &str| {
        let mut v = project.volumes(&format!("{}-{role}-", t.name));
        v.sort();
        v
    };
    let expect_on = |role: &str, member: &str| {
        let expected: Vec<(String, String)> =
            ["conf", "data", "logs"].iter().map(|k| (format!("{}-{role}-{k}", t.name), member.to_string())).collect();
        assert_eq!(volumes_of(role), expected, "the volumes of {role} are on {member} only");
    };
    assert_eq!((on(&tables), on(&cache)), ("m1".to_string(), "m1".to_string()));
    expect_on("tables", "m1");

    // Rows written as the application role, the seed's way: psql inside tables, the password in a 0600 ~/.pgpass.
    let remote_tables = format!("{REMOTE}:{tables}");
    let password = std::fs::read_to_string(format!("{stack}/.secrets/tables-password")).expect("secret");
    gbo_tests::push_pgpass(t.stack.path(), &remote_tables, Some(&project.0), &password);
    let psql = |sql: &str| gbo_tests::psql_as_app(&remote_tables, Some(&project.0), sql);
    let run = psql("CREATE TABLE gbot_kept (v int); INSERT INTO gbot_kept SELECT generate_series(1, 200)");
    assert_eq!(run.code, 0, "write as gbuser: {}", run.all());

    // A move that fails after LXD moved the instance (injected: GBO_FAULT_MOVE=moved) is rolled back: the
    // instance is on m1 again and running, the copies on m2 are deleted, the origin's volumes were never touched.
    let args: Vec<String> =
        ["--remote", REMOTE, "--project", &project.0, "move", "--tenant", &t.name, "tables", "--to", "m2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let failed = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        gbo_tests::gbo_env(&refs, &[("GBO_FAULT_MOVE", "moved")])
    })
    .await
    .expect("gbo thread");
    assert_eq!(failed.code, 2, "{}", failed.all());
    assert!(
        failed.stderr.contains("rollback: moved back to m1")
            && failed.stderr.contains("deleted its 3 volume copies on m2"),
        "{}",
        failed.stderr
    );
    assert_eq!(on(&tables), "m1");
    expect_on("tables", "m1");
    // The rollback starts the container and does not wait for PostgreSQL: read once it accepts connections.
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let run = psql("SELECT sum(v) FROM gbot_kept");
        if run.code == 0 || Instant::now() >= deadline {
            break run;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!((run.code, run.stdout.trim()), (0, "20100"), "read as gbuser after the rollback: {}", run.all());

    // The move takes the volumes along.
    let moved = gbo_p(&["move", "--tenant", &t.name, "tables", "--to", "m2", "--output", "json"]).await;
    assert_eq!(moved.code, 0, "move of a volumes container: {}", moved.all());
    let result: serde_json::Value = serde_json::from_str(&moved.stdout).expect("move JSON");
    let snapshot = result[0]["snapshot"].as_str().expect("snapshot").to_string();
    assert_eq!(result[0]["volumes"].as_array().map(Vec::len), Some(3), "{result}");
    assert_eq!(result[0]["health"]["healthy"], true, "{result}");
    assert!(moved.stderr.contains("copy default/") && moved.stderr.contains("m1 -> m2"), "{}", moved.stderr);
    assert_eq!(on(&tables), "m2");
    expect_on("tables", "m2");
    let run = psql("SELECT sum(v) FROM gbot_kept");
    assert_eq!((run.code, run.stdout.trim()), (0, "20100"), "read as gbuser after the move: {}", run.all());
    // The move's data snapshot came along with the volumes (and the instance's with the instance).
    let listed = gbo_tests::lxc_ok(&[
        "storage",
        "volume",
        "list",
        &format!("{REMOTE}:default"),
        "--project",
        &project.0,
        "--format",
        "csv",
        "-c",
        "tnL",
    ]);
    let row = format!("custom (snapshot),{}-tables-data/{snapshot},m2", t.name);
    assert!(listed.lines().any(|l| l == row), "volume snapshot {snapshot} on m2: {listed}");
    let list = gbo_p(&["snapshot", "list", &tables]).await;
    assert_eq!(list.code, 0, "{}", list.all());
    assert!(list.stdout.contains(&snapshot) && list.stdout.contains("container+data"), "{}", list.stdout);

    // Evacuating m1 moves cache and its volumes the same way.
    let run = gbo_p(&["evacuate", "m1", "--output", "json"]).await;
    assert_eq!(run.code, 0, "evacuate m1: {}", run.all());
    let evacuated: serde_json::Value = serde_json::from_str(&run.stdout).expect("evacuate JSON");
    assert_eq!(evacuated.as_array().map(Vec::len), Some(1), "{evacuated}");
    let cache_on = on(&cache);
    assert_ne!(cache_on, "m1");
    expect_on("cache", &cache_on);
    let status = gbo_p(&["status", "--tenant", &t.name, "--output", "json"]).await;
    assert_eq!(status.code, 0, "healthy after the moves: {}", status.all());
    let run = psql("SELECT sum(v) FROM gbot_kept");
    assert_eq!((run.code, run.stdout.trim()), (0, "20100"), "read as gbuser after the evacuation: {}", run.all());

    // With the placement where the containers are now, a later run has nothing to do.
    std::fs::write(&file, tenant_file("m2", &cache_on)).expect("tenant file");
    let plan = gbo_p(&["plan", "--file", &file_s, "--image", TEST_IMAGE, "--stack-dir", &stack]).await;
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(plan.stdout.contains("Nothing to do"), "{}", plan.all());
}

/// An artifact cache holding a stand-in for NocoDB (the table-editor role's artifact): no NocoDB binary can be
/// installed here, so Caddy's `respond` (in the test image) answers its health endpoint on 8080.
fn nocodb_stand_in() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("gbot-artifacts-").tempdir().expect("tempdir");
    let policy = gbo_ops::install::artifact::ArtifactPolicy {
        cache_dir: dir.path().to_path_buf(),
        download: false,
        allow_unverified: true,
        trust: Vec::new(),
    };
    for artifact in gbo_components::artifacts::artifacts(gbo_components::Role::TableEditor, &Default::default()) {
        std::fs::write(
            gbo_ops::install::artifact::cache_path(&policy, &artifact),
            "#!/bin/sh\n# gbo test stand-in for NocoDB: no NocoDB binary can be installed here.\nexec /usr/bin/caddy respond --listen 127.0.0.1:8080 ok\n",
        )
        .expect("stand-in");
    }
    dir
}

/// The value of `key` of device `device` of `instance` on the cluster.
fn device_get(instance: &str, device: &str, key: &str) -> String {
    let (ok, out) =
        gbo_tests::lxc(&["config", "device", "get", &format!("{REMOTE}:{instance}"), device, key]).ok_output();
    assert!(ok, "lxc config device get {instance} {device} {key}: {out}");
    out.trim().to_string()
}

/// The app's database (`botserver`, role `gbuser`) from inside `instance`, at 127.0.0.1:5432 there (its wire), with
/// the password in a 0600 `.pgpass` pushed into it: the count of `gbot_keep`'s rows.
async fn rows_through_wire(instance: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) =
            gbo_tests::psql_as_app(&format!("{REMOTE}:{instance}"), None, "SELECT count(*) FROM gbot_keep").ok_output();
        if ok {
            return out.trim().to_string();
        }
        assert!(Instant::now() < deadline, "psql through the wire inside {instance}: {out}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Issue 11 item 3: tables placed on m1 and table-editor (which wires to tables' PostgreSQL) on m2. The dependency's
/// published port listens on m1's address (127.0.0.2), not on 127.0.0.1, and the dependent's wire connects there;
/// the application role reaches PostgreSQL through the wire from inside the dependent; a second plan is empty. A
/// `gbo move` of tables to m3 re-points the wire to 127.0.0.4 before tables starts there, and the data is reached
/// again. (On main before this change the wire pointed at 127.0.0.1, which only works while the members share one
/// machine's loopback.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dependency_on_another_member_is_wired_through_its_members_address() {
    let t = TestTenant::new();
    let _remote_cleanup = TenantCleanup { lxd_dir: gbo_tests::rig::member_dir("m1"), tenant: t.name.clone() };
    let artifacts = nocodb_stand_in();
    let file = t.stack.path().join("gbo.toml");
    std::fs::write(
        &file,
        format!(
            "tenant = \"{}\"\nroles = [\"tables\", \"table-editor\"]\nstorage = \"host\"\n\n[placement]\ntables = \"m1\"\ntable-editor = \"m2\"\n",
            t.name
        ),
    )
    .expect("tenant file");
    let file_s = file.display().to_string();
    let stack = t.stack.path().join("stack").display().to_string();
    let cache_s = artifacts.path().display().to_string();
    let common = ["--file", &file_s, "--image", TEST_IMAGE, "--stack-dir", &stack, "--artifact-cache", &cache_s];
    let run = |command: &'static str, extra: &'static [&'static str]| {
        let mut args = vec![command];
        args.extend(common);
        args.extend(extra);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            gbo_remote(&refs).await
        }
    };
    let install = run("install", &["--allow-unverified"]).await;
    assert_eq!(install.code, 0, "install across members: {}", install.all());
    let (tables, editor) = (t.container("tables"), t.container("table-editor"));
    assert_eq!((location(&tables), location(&editor)), ("m1".to_string(), "m2".to_string()));
    let status = gbo_remote(&["status", "--tenant", &t.name, "--output", "json"]).await;
    assert_eq!(status.code, 0, "{}", status.all());
    let pg_port = status_of(&status)
        .components
        .iter()
        .find(|c| c.container == tables)
        .and_then(|c| c.ports.iter().find(|p| p.container_port == 5432))
        .map(|p| p.host_port)
        .expect("tables publishes 5432");

    // The dependent's wire connects to m1's address, where tables' port listens, and not on 127.0.0.1.
    assert_eq!(device_get(&editor, "gbo-wire-tables-5432", "connect"), format!("tcp:127.0.0.2:{pg_port}"));
    assert_eq!(device_get(&editor, "gbo-wire-tables-5432", "bind"), "instance");
    assert_eq!(device_get(&tables, "gbo-port-postgres", "listen"), format!("tcp:127.0.0.2:{pg_port}"));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", pg_port)).is_err(),
        "nothing listens on 127.0.0.1:{pg_port} any more"
    );

    // The application role, from inside the dependent, through its wire.
    let password = std::fs::read_to_string(format!("{stack}/.secrets/tables-password")).expect("secret");
    let password = password.trim().to_string();
    let db = gbo_tests::app_db_at(std::net::IpAddr::from([127, 0, 0, 2]), pg_port, &password).await;
    db.batch_execute("CREATE TABLE gbot_keep(v int); INSERT INTO gbot_keep SELECT generate_series(1, 42)")
        .await
        .expect("write rows");
    drop(db);
    gbo_tests::push_pgpass(t.stack.path(), &format!("{REMOTE}:{editor}"), None, &password);
    assert_eq!(rows_through_wire(&editor).await, "42");

    // A later run converges to the same devices.
    let again = run("plan", &["--allow-unverified"]).await;
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains("Nothing to do"), "{}", again.stdout);

    // Moving the dependency re-points its dependent: tables on m3 listens on 127.0.0.4, the wire follows.
    let moved = gbo_remote(&["move", "--tenant", &t.name, "tables", "--to", "m3"]).await;
    assert_eq!(moved.code, 0, "move: {}", moved.all());
    assert_eq!(location(&tables), "m3");
    assert_eq!(device_get(&tables, "gbo-port-postgres", "listen"), format!("tcp:127.0.0.4:{pg_port}"));
    assert_eq!(device_get(&editor, "gbo-wire-tables-5432", "connect"), format!("tcp:127.0.0.4:{pg_port}"));
    assert_eq!(rows_through_wire(&editor).await, "42");

    // The dependency created again where LXD's scheduler puts it (no placement for it now): its member is known
    // only after the create, and the dependent's wire is re-pointed before it starts (its data is kept on the host).
    let removed = gbo_remote(&["uninstall", "--tenant", &t.name, "tables"]).await;
    assert_eq!(removed.code, 0, "{}", removed.all());
    std::fs::write(
        &file,
        format!("tenant = \"{}\"\nroles = [\"tables\", \"table-editor\"]\nstorage = \"host\"\n\n[placement]\ntable-editor = \"m2\"\n", t.name),
    )
    .expect("tenant file");
    let reinstall = run("install", &["--allow-unverified"]).await;
    assert_eq!(reinstall.code, 0, "{}", reinstall.all());
    let (listen, connect) =
        (device_get(&tables, "gbo-port-postgres", "listen"), device_get(&editor, "gbo-wire-tables-5432", "connect"));
    let expected = match location(&tables).as_str() {
        "m2" => "127.0.0.1",
        "m1" => "127.0.0.2",
        _ => "127.0.0.4",
    };
    assert!(listen.starts_with(&format!("tcp:{expected}:")), "tables on {}: {listen}", location(&tables));
    assert_eq!(connect, listen, "the wire connects where tables listens");
    assert_eq!(rows_through_wire(&editor).await, "42");
    let again = run("plan", &["--allow-unverified"]).await;
    assert!(again.stdout.contains("Nothing to do"), "after the move and the reinstall: {}", again.stdout);
}
