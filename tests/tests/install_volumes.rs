//! `storage = "volumes"` end to end, on the standalone second daemon (`solo`, "another host", reached by its own
//! socket) and on the main daemon: tables and cache install with their data, configuration and logs in LXD custom
//! volumes; they are healthy (checked from inside the containers), the application role reads and writes, no role
//! directory appears under the stack dir; a snapshot takes the volumes with the instance and its restore rolls a
//! row back; a symlink the container plants on its conf volume does not make gbo write through it; uninstall keeps
//! the volumes and a reinstall finds the rows; `uninstall --purge` deletes the volumes.

use std::path::Path;
use std::time::Duration;

use gbo_ops::install::status::TenantStatus;
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

/// Deletes the tenant's containers and volumes on one daemon when dropped (a failed test leaves nothing).
struct Cleanup {
    lxd_dir: String,
    tenant: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let lxc = |args: &[&str]| {
            std::process::Command::new("lxc")
                .args(args)
                .env("LXD_DIR", &self.lxd_dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let prefix = format!("{}-", self.tenant);
        for name in lxc(&["list", "--format", "csv", "-c", "n"]).lines() {
            if name.starts_with(&prefix) {
                lxc(&["delete", "--force", name]);
            }
        }
        for line in lxc(&["storage", "volume", "list", "default", "--format", "csv", "-c", "tnL"]).lines() {
            let fields: Vec<&str> = line.split(',').collect();
            if let ["custom", name, location] = fields.as_slice() {
                if name.starts_with(&prefix) && !name.contains('/') {
                    if location.is_empty() {
                        lxc(&["storage", "volume", "delete", "default", name]);
                    } else {
                        lxc(&["storage", "volume", "delete", "default", name, "--target", location]);
                    }
                }
            }
        }
    }
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

fn host_port(status: &TenantStatus, container: &str, container_port: u16) -> u16 {
    status
        .components
        .iter()
        .find(|c| c.container == container)
        .and_then(|c| c.ports.iter().find(|p| p.container_port == container_port))
        .map(|p| p.host_port)
        .unwrap_or_else(|| panic!("{container} publishes no port for {container_port}: {status:?}"))
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
    let (client, connection) =
        config.connect(tokio_postgres::NoTls).await.expect("login as gbuser with the generated password");
    tokio::spawn(connection);
    client
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
    let _cleanup = Cleanup { lxd_dir: lxd_dir.to_string(), tenant: t.name.clone() };
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
    let _cleanup = Cleanup { lxd_dir: "/var/lib/gbo-cluster/m1".into(), tenant: t.name.clone() };
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
