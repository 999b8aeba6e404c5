//! `storage = "volumes"` end to end, on the standalone second daemon (`solo`, "another host", reached by its own
//! socket) and on the main daemon: tables and cache install with their data, configuration and logs in LXD custom
//! volumes; they are healthy (checked from inside the containers), the application role reads and writes, no role
//! directory appears under the stack dir; a snapshot takes the volumes with the instance and its restore rolls a
//! row back; a symlink the container plants on its conf volume does not make gbo write through it; uninstall keeps
//! the volumes and a reinstall finds the rows; `uninstall --purge` deletes the volumes.

use gbo_tests::{app_db as pg, host_port};
use std::path::Path;
use std::time::Duration;

use gbo_ops::install::status::TenantStatus;
use gbo_tests::rig::TenantCleanup;
use gbo_tests::{Run, TestTenant, TEST_IMAGE};
use lxd_client::{Client, Endpoint, ExecRequest, Flavor, InstanceName, ObjectName};

const MAIN_SOCKET: &str = "/var/lib/lxd/unix.socket";
const SOLO_SOCKET: &str = "/var/lib/gbo-cluster/solo/unix.socket";

/// `gbo` against the daemon of `socket` (an explicit socket is the only one gbo uses).
async fn gbo_on(socket: &str, args: Vec<String>) -> Run {
    let socket = socket.to_string();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // An empty LXD_DIR counts as unset: the explicit socket is the only daemon gbo uses.
        gbo_tests::gbo_env(&args, &[("LXD_SOCKET", &socket), ("LXD_DIR", "")])
    })
    .await
    .expect("gbo thread")
}

async fn daemon(socket: &str) -> Client {
    let client = Client::new(Endpoint::Unix(socket.into()), Flavor::Lxd)
        .unwrap_or_else(|e| panic!("the daemon at {socket} is required: {e}"));
    if let Err(e) = client.server().await {
        panic!("the daemon at {socket} is required (`cargo xtask lxd-cluster up` starts solo): {e}");
    }
    match client.image_alias(TEST_IMAGE).await {
        Ok(Some(_)) => {}
        other => panic!("the test image {TEST_IMAGE} is missing on {socket}: {other:?}"),
    }
    client
}

fn check(run: &Run, what: &str) {
    assert_eq!(run.code, 0, "{what} failed:\n{}", run.all());
}

async fn tenant_status(socket: &str, tenant: &str) -> (i32, TenantStatus) {
    let run =
        gbo_on(socket, vec!["status".into(), "--tenant".into(), tenant.into(), "--output".into(), "json".into()]).await;
    let status: TenantStatus =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("status JSON does not parse: {e}\n{}", run.all()));
    (run.code, status)
}

async fn value(port: u16, password: &str) -> i32 {
    let client = pg(port, password).await;
    client.query_one("SELECT v FROM gbot_kept", &[]).await.expect("read the row").get(0)
}

async fn exec(lxd: &Client, instance: &str, script: &str) -> String {
    let name = InstanceName::new(instance).expect("name");
    let out = lxd
        .exec_output(&name, &ExecRequest::new(["sh", "-c", script]).timeout(Duration::from_secs(60)))
        .await
        .expect("exec");
    assert!(out.success(), "{script}: {}", out.stderr_text());
    out.stdout_text()
}

async fn volume_exists(lxd: &Client, volume: &str) -> bool {
    let pool = ObjectName::new("default").expect("pool");
    lxd.storage_volume(&pool, &ObjectName::new(volume).expect("volume")).await.expect("read the volume").is_some()
}

fn no_role_dirs(stack: &Path) {
    for role in ["tables", "cache"] {
        assert!(!stack.join(role).exists(), "{} was created on the host", stack.join(role).display());
    }
}

async fn scenario(socket: &str, lxd_dir: &str) {
    let lxd = daemon(socket).await;
    let t = TestTenant::new();
    let _cleanup = TenantCleanup { lxd_dir: lxd_dir.into(), tenant: t.name.clone() };
    let file = t.stack.path().join("gbo.toml");
    std::fs::write(&file, format!("tenant = \"{}\"\nroles = [\"tables\", \"cache\"]\nstorage = \"volumes\"\n", t.name))
        .expect("tenant file");
    let install = || {
        vec![
            "install".to_string(),
            "--file".into(),
            file.display().to_string(),
            "--image".into(),
            TEST_IMAGE.into(),
            "--stack-dir".into(),
            t.stack_dir(),
        ]
    };
    check(&gbo_on(socket, install()).await, "install with storage = volumes");
    no_role_dirs(t.stack.path());
    let (tables, cache) = (t.container("tables"), t.container("cache"));
    for (instance, role) in [(&tables, "tables"), (&cache, "cache")] {
        let got = lxd.instance(&InstanceName::new(instance.as_str()).expect("name")).await.expect("instance");
        for kind in ["data", "conf", "logs"] {
            let device = &got.devices[&format!("gbo-{kind}")];
            let volume = format!("{}-{role}-{kind}", t.name);
            assert_eq!(
                (device.get("pool").map(String::as_str), device.get("source")),
                (Some("default"), Some(&volume)),
                "{instance}: {device:?}"
            );
            assert!(volume_exists(&lxd, &volume).await, "{volume}");
        }
    }
    let (code, status) = tenant_status(socket, &t.name).await;
    assert_eq!(code, 0, "{status:?}");
    for component in &status.components {
        let health = component.health.as_ref().expect("probed");
        assert!(health.healthy && health.detail.contains("inside"), "{}: {health:?}", component.container);
        assert!(component.mounts.is_empty(), "{component:?}");
        assert_eq!(component.volumes.len(), 3, "{component:?}");
    }
    // The application role writes and reads; its secret 0600, owned by postgres inside.
    let secret = std::fs::read_to_string(t.stack.path().join(".secrets/tables-password")).expect("secret");
    let password = secret.trim().to_string();
    let port = host_port(&status, &tables, 5432);
    let client = pg(port, &password).await;
    client.batch_execute("CREATE TABLE gbot_kept (v int); INSERT INTO gbot_kept VALUES (1);").await.expect("write");
    drop(client);
    assert_eq!(value(port, &password).await, 1);
    let owner =
        exec(&lxd, &tables, "stat -c '%a %U' /opt/gbo/conf/pg_hba.conf /etc/gbo/tables-init.sql /opt/gbo/data").await;
    assert_eq!(owner.lines().collect::<Vec<_>>(), ["640 postgres", "600 postgres", "755 postgres"], "{owner}");

    // A snapshot takes the volumes with the instance: its restore rolls the row back.
    let run = gbo_on(socket, vec!["snapshot".into(), "create".into(), tables.clone(), "before".into()]).await;
    check(&run, "snapshot create");
    assert!(run.stdout.contains("volume"), "{}", run.all());
    pg(port, &password).await.batch_execute("UPDATE gbot_kept SET v = 2").await.expect("update");
    assert_eq!(value(port, &password).await, 2);
    let run = gbo_on(socket, vec!["snapshot".into(), "restore".into(), tables.clone(), "before".into()]).await;
    check(&run, "snapshot restore");
    assert!(run.stdout.contains(&format!("volume default/{}-tables-data", t.name)), "{}", run.all());
    let mut restored = 0;
    for _ in 0..100 {
        if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(3), async {
            let mut config = tokio_postgres::Config::new();
            config.host("127.0.0.1").port(port).user("gbuser").password(&password).dbname("botserver");
            let (c, conn) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            c.query_one("SELECT v FROM gbot_kept", &[]).await.map(|r| r.get::<_, i32>(0))
        })
        .await
        {
            restored = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(restored, 1, "the restore brought the volume's row back");

    // Symlinks planted on the conf volumes by the containers (kept by the uninstall below, found by the reinstall
    // in the new containers): gbo replaces each link inside the container and writes nothing through it (not in
    // the container, not on the host).
    let victim = tempfile::NamedTempFile::new().expect("host file");
    std::fs::write(victim.path(), "host content\n").expect("write");
    exec(&lxd, &cache, "echo inside > /opt/gbo/data/target && ln -sf /opt/gbo/data/target /opt/gbo/conf/redis.conf")
        .await;
    exec(&lxd, &tables, &format!("ln -sf {} /opt/gbo/conf/pg_ident.conf", victim.path().display())).await;

    // Uninstall keeps the volumes; a reinstall finds the row.
    let uninstall = |purge: bool| {
        let mut args: Vec<String> =
            vec!["uninstall".into(), "--tenant".into(), t.name.clone(), "tables".into(), "cache".into()];
        if purge {
            args.extend(["--purge".to_string(), "--yes".to_string()]);
        }
        args
    };
    let run = gbo_on(socket, uninstall(false)).await;
    check(&run, "uninstall");
    assert!(run.stdout.contains("data kept in volumes"), "{}", run.all());
    assert!(volume_exists(&lxd, &format!("{}-tables-data", t.name)).await);
    check(&gbo_on(socket, install()).await, "reinstall");
    let (code, status) = tenant_status(socket, &t.name).await;
    assert_eq!(code, 0, "{status:?}");
    let port = host_port(&status, &tables, 5432);
    assert_eq!(value(port, &password).await, 1, "the row survived uninstall and reinstall");
    let after = exec(&lxd, &cache, "stat -c '%F %U' /opt/gbo/conf/redis.conf; cat /opt/gbo/data/target").await;
    assert_eq!(after.lines().collect::<Vec<_>>(), ["regular file redis", "inside"], "{after}");
    let after = exec(&lxd, &tables, "stat -c '%F %U' /opt/gbo/conf/pg_ident.conf").await;
    assert_eq!(after.trim(), "regular file postgres", "{after}");
    assert_eq!(std::fs::read_to_string(victim.path()).expect("read"), "host content\n");

    // --purge deletes the volumes (and a second purge, with the containers gone, finds nothing left).
    let run = gbo_on(socket, uninstall(true)).await;
    check(&run, "uninstall --purge");
    for role in ["tables", "cache"] {
        for kind in ["data", "conf", "logs"] {
            let volume = format!("{}-{role}-{kind}", t.name);
            assert!(!volume_exists(&lxd, &volume).await, "{volume} survived --purge");
        }
    }
    no_role_dirs(t.stack.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_on_the_standalone_second_daemon() {
    // solo stays up while this runs (the reboot test stops it only under the exclusive lease).
    let _solo = gbo_tests::rig::SoloLease::shared();
    scenario(SOLO_SOCKET, "/var/lib/gbo-cluster/solo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_on_the_main_daemon() {
    scenario(MAIN_SOCKET, "/var/lib/lxd").await;
}

#[tokio::test]
async fn the_default_storage_follows_the_daemon() {
    use gbo_ops::install::storage::{default_for, StorageMode};
    let _solo = gbo_tests::rig::SoloLease::shared();
    let solo = daemon(SOLO_SOCKET).await;
    assert_eq!(default_for(&solo).await.expect("solo"), StorageMode::Host, "a standalone daemon on a socket");
    let socket = "/var/lib/gbo-cluster/m1/unix.socket";
    let member = Client::new(Endpoint::Unix(socket.into()), Flavor::Lxd).expect("client");
    assert_eq!(default_for(&member).await.expect("m1"), StorageMode::Volumes, "a cluster member");
}

/// On the three-member cluster (per-member btrfs pools) with no `storage` in the tenant file: the default there is
/// volumes, and each volume is created on the member LXD placed its instance on (a volume on another member cannot
/// be attached).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_by_default_on_a_cluster_follow_their_instance() {
    let socket = "/var/lib/gbo-cluster/m1/unix.socket";
    let lxd = Client::new(Endpoint::Unix(socket.into()), Flavor::Lxd).expect("client");
    lxd.server().await.expect("the cluster is required: `cargo xtask lxd-cluster up`");
    let t = TestTenant::new();
    let _cleanup = TenantCleanup { lxd_dir: gbo_tests::rig::member_dir("m1"), tenant: t.name.clone() };
    let file = t.stack.path().join("gbo.toml");
    // The proxy too: its HTTP probe inside the container needs the relay to end when Caddy closes the connection
    // (it timed out before, so a cluster install of a proxy failed its health check).
    std::fs::write(&file, format!("tenant = \"{}\"\nroles = [\"cache\", \"proxy\"]\n", t.name)).expect("tenant file");
    let args: Vec<String> = vec![
        "install".into(),
        "--file".into(),
        file.display().to_string(),
        "--image".into(),
        TEST_IMAGE.into(),
        "--stack-dir".into(),
        t.stack_dir(),
    ];
    check(&gbo_on(socket, args).await, "install on the cluster");
    no_role_dirs(t.stack.path());
    let cache = lxd.instance(&InstanceName::new(t.container("cache")).expect("name")).await.expect("instance");
    assert_eq!(cache.config.get("user.gbo.storage").map(String::as_str), Some("volumes"), "the cluster default");
    let pool = ObjectName::new("default").expect("pool");
    for kind in ["data", "conf", "logs"] {
        let volume = ObjectName::new(format!("{}-cache-{kind}", t.name)).expect("volume");
        let here = lxd.target(cache.location.clone()).storage_volume(&pool, &volume).await.expect("volume");
        assert!(here.is_some(), "{volume} is not on {}", cache.location);
    }
    let (code, status) = tenant_status(socket, &t.name).await;
    assert_eq!(code, 0, "{status:?}");
    // gbo move copies the volumes to the destination under the same names, and never overwrites one that is
    // there already (a leftover): refused up front naming it, the container still where it was and running, and
    // the stray volume untouched.
    let to = if cache.location == "m1" { "m2" } else { "m1" };
    let stray = ObjectName::new(format!("{}-cache-data", t.name)).expect("volume");
    lxd.target(to).create_storage_volume(&pool, &stray, Default::default()).await.expect("stray volume");
    let run = gbo_on(
        socket,
        vec!["move".into(), "--tenant".into(), t.name.clone(), "cache".into(), "--to".into(), to.into()],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains(&format!("default/{stray} already exists on member {to}"))
            && run.stderr.contains("nothing was changed"),
        "{}",
        run.stderr
    );
    let after = lxd.instance(&InstanceName::new(t.container("cache")).expect("name")).await.expect("instance");
    assert!(after.location == cache.location && after.is_running(), "{} {:?}", after.location, after.status);
    assert!(lxd.target(to).storage_volume(&pool, &stray).await.expect("stray").is_some(), "the stray is untouched");
    lxd.target(to).delete_storage_volume(&pool, &stray).await.expect("delete the stray volume");
    let run = gbo_on(
        socket,
        vec![
            "uninstall".into(),
            "--tenant".into(),
            t.name.clone(),
            "cache".into(),
            "proxy".into(),
            "--purge".into(),
            "--yes".into(),
        ],
    )
    .await;
    check(&run, "uninstall --purge on the cluster");
    assert!(run.stdout.contains("deleted"), "{}", run.all());
}

/// `gbo --remote NAME` with `storage = "volumes"`: plan and install through the lxc remote (HTTPS, the client
/// certificate and the pinned server certificate), health green from inside, the application role's rows read and
/// written the seed's way (`lxc exec REMOTE:...`, the password in a 0600 file pushed through LXD), plan empty
/// afterwards, and uninstall keeping the volumes. Nothing of a volumes tenant needs the daemon's host, so the
/// site check must not refuse it (host storage through a remote on another machine stays refused: see
/// `gbo_ops::site`'s tests, since no daemon off this machine can be reached here).
async fn through_remote(remote: &str, lxd_dir: &str) {
    let t = TestTenant::new();
    let _cleanup = TenantCleanup { lxd_dir: lxd_dir.into(), tenant: t.name.clone() };
    let file = t.stack.path().join("gbo.toml");
    std::fs::write(&file, format!("tenant = \"{}\"\nroles = [\"tables\", \"cache\"]\nstorage = \"volumes\"\n", t.name))
        .expect("tenant file");
    let stack = t.stack.path().join("stack").display().to_string();
    let gbo_r = |verb: &str, more: &[&str]| {
        let mut args: Vec<String> = vec!["--remote".into(), remote.into(), verb.into()];
        args.extend(more.iter().map(|s| s.to_string()));
        if matches!(verb, "plan" | "install") {
            args.extend(
                ["--file", &file.display().to_string(), "--image", TEST_IMAGE, "--stack-dir", &stack]
                    .iter()
                    .map(|s| s.to_string()),
            );
        }
        gbo_tests::gbo_async(args)
    };
    let plan = gbo_r("plan", &[]).await;
    check(&plan, &format!("plan through --remote {remote}"));
    assert!(plan.stdout.contains(&t.container("tables")) && plan.stdout.contains("step(s)"), "{}", plan.all());
    check(&gbo_r("install", &[]).await, &format!("install through --remote {remote}"));
    no_role_dirs(Path::new(&stack));
    let status = gbo_r("status", &["--tenant", &t.name, "--output", "json"]).await;
    assert_eq!(status.code, 0, "{}", status.all());
    let status: TenantStatus = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(status.components.len(), 2, "{status:?}");
    for component in &status.components {
        let health = component.health.as_ref().expect("probed");
        assert!(health.healthy && health.detail.contains("inside"), "{}: {health:?}", component.container);
        assert_eq!(component.volumes.len(), 3, "{component:?}");
    }

    // The seed's way: psql inside the container through `lxc exec` on the remote, as the application role with
    // its generated password in a 0600 ~/.pgpass pushed through LXD (never on a command line).
    let tables = format!("{remote}:{}", t.container("tables"));
    let password = std::fs::read_to_string(format!("{stack}/.secrets/tables-password")).expect("secret");
    gbo_tests::push_pgpass(t.stack.path(), &tables, None, &password);
    let psql = |sql: &str| gbo_tests::psql_as_app(&tables, None, sql);
    let run = psql("CREATE TABLE gbot_kept (v int); INSERT INTO gbot_kept SELECT generate_series(1, 100)");
    assert_eq!(run.code, 0, "write as gbuser: {}", run.all());
    let run = psql("SELECT sum(v) FROM gbot_kept");
    assert_eq!((run.code, run.stdout.trim()), (0, "5050"), "read as gbuser: {}", run.all());

    let again = gbo_r("plan", &[]).await;
    check(&again, "plan after the install");
    assert!(again.stdout.contains("Nothing to do"), "plan is not empty after the install: {}", again.all());

    let run = gbo_r("uninstall", &["--tenant", &t.name, "tables", "cache"]).await;
    check(&run, "uninstall");
    assert!(run.stdout.contains("data kept in volumes"), "{}", run.all());
    let volumes =
        gbo_tests::lxc_ok(&["storage", "volume", "list", &format!("{remote}:default"), "--format", "csv", "-c", "n"]);
    for role in ["tables", "cache"] {
        for kind in ["data", "conf", "logs"] {
            let volume = format!("{}-{role}-{kind}", t.name);
            assert!(volumes.lines().any(|l| l == volume), "{volume} was not kept: {volumes}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_through_the_solo_remote() {
    let _solo = gbo_tests::rig::SoloLease::shared();
    through_remote("gbot-solo", "/var/lib/gbo-cluster/solo").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_through_the_cluster_remote() {
    through_remote("gbot-cluster", "/var/lib/gbo-cluster/m1").await;
}

/// A daemon gbo must count as another machine, reached for real: the standalone daemon `solo` through a copy of
/// the lxc configuration whose remote `gbot-far` addresses it as `[::ffff:127.0.0.5]` (an IPv4-mapped IPv6
/// address, which `gbo_ops::site` does not take for loopback; the traffic still stays on loopback) with the
/// server certificate pinned for gbot-solo. Host storage is refused there (exit 2, naming the command, the remote
/// and the way out); `storage = "volumes"` plans, installs healthy, plans empty and uninstalls keeping its volumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_through_a_remote_on_another_machine_and_host_refused() {
    let _solo = gbo_tests::rig::SoloLease::shared();
    let conf = tempfile::tempdir().expect("tempdir");
    let home = std::env::var("HOME").expect("HOME");
    for f in ["client.crt", "client.key"] {
        std::fs::copy(format!("{home}/.config/lxc/{f}"), conf.path().join(f)).expect("client certificate");
    }
    std::fs::create_dir(conf.path().join("servercerts")).expect("servercerts");
    std::fs::copy(
        format!("{home}/.config/lxc/servercerts/gbot-solo.crt"),
        conf.path().join("servercerts/gbot-far.crt"),
    )
    .expect("solo's pinned certificate (`cargo xtask lxd-cluster up` adds remote gbot-solo)");
    std::fs::write(
        conf.path().join("config.yml"),
        "remotes:\n  gbot-far:\n    addr: https://[::ffff:127.0.0.5]:8443\n    protocol: lxd\n",
    )
    .expect("config.yml");
    let t = TestTenant::new();
    let _cleanup = TenantCleanup { lxd_dir: gbo_tests::rig::member_dir("solo"), tenant: t.name.clone() };
    let stack = t.stack.path().join("stack").display().to_string();
    let file = t.stack.path().join("gbo.toml");
    let conf_dir = conf.path().display().to_string();
    let far = |verb: &str, more: &[&str]| {
        let mut args: Vec<String> = vec!["--remote".into(), "gbot-far".into(), verb.into()];
        args.extend(more.iter().map(|s| s.to_string()));
        if matches!(verb, "plan" | "install") {
            args.extend(
                ["--file", &file.display().to_string(), "--image", TEST_IMAGE, "--stack-dir", &stack]
                    .iter()
                    .map(|s| s.to_string()),
            );
        }
        let conf_dir = conf_dir.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            gbo_tests::gbo_env(&args, &[("LXD_CONF", &conf_dir)])
        })
    };
    let tenant_file = |mode: &str| {
        std::fs::write(&file, format!("tenant = \"{}\"\nroles = [\"cache\"]\nstorage = \"{mode}\"\n", t.name))
            .expect("tenant file")
    };
    tenant_file("host");
    for verb in ["plan", "install"] {
        let run = far(verb, &[]).await.expect("gbo");
        assert_eq!(run.code, 2, "host storage on another machine: {}", run.all());
        assert!(
            run.stderr.contains(&format!("gbo {verb} cannot run against remote `gbot-far`"))
                && run.stderr.contains("another machine")
                && run.stderr.contains("storage = \"volumes\""),
            "{}",
            run.stderr
        );
    }
    assert!(gbo_tests::lxc_ok(&["list", "gbot-solo:", "--format", "csv", "-c", "n"])
        .lines()
        .all(|n| !n.starts_with(&t.name)));

    tenant_file("volumes");
    let run = far("plan", &[]).await.expect("gbo");
    check(&run, "plan of a volumes tenant on another machine");
    check(&far("install", &[]).await.expect("gbo"), "install of a volumes tenant on another machine");
    no_role_dirs(Path::new(&stack));
    let run = far("status", &["--tenant", &t.name, "--output", "json"]).await.expect("gbo");
    assert_eq!(run.code, 0, "{}", run.all());
    let status: TenantStatus = serde_json::from_str(&run.stdout).expect("status JSON");
    let health = status.components[0].health.as_ref().expect("probed");
    assert!(health.healthy && health.detail.contains("inside"), "{health:?}");
    let run = far("plan", &[]).await.expect("gbo");
    assert!(run.code == 0 && run.stdout.contains("Nothing to do"), "{}", run.all());
    let run = far("uninstall", &["--tenant", &t.name, "cache"]).await.expect("gbo");
    check(&run, "uninstall");
    assert!(run.stdout.contains("data kept in volumes"), "{}", run.all());
}
