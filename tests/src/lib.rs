//! Shared test support for gbo: a real LXD daemon (a missing daemon fails the test, in CI and out of it), the test
//! image, unique resource names, and containers that remove themselves.
//!
//! Every resource a test creates is named with [`unique_name`] (prefix `gbot-`), so `cargo xtask clean` can
//! remove leftovers of killed runs and parallel tests never collide.

pub mod programs;
pub mod rig;
pub mod zfs_fuse;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lxd_client::{Client, CreateInstance, InstanceName, InstanceSource};

/// The image `cargo xtask lxd-up` builds for the tests (tables, cache, proxy and system roles baked in).
pub const TEST_IMAGE: &str = "gbo-test/debian-12";

/// Prefix of every resource tests create.
pub const TEST_PREFIX: &str = "gbot-";

/// Whether we run in CI (`CI=true`): there, missing prerequisites are failures (as they are everywhere).
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// A unique, valid instance name: `gbot-<tag>-<pid>-<n>`, at most 40 characters.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(16)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("{TEST_PREFIX}{tag}-{pid}-{n}")
}

/// The local daemon. Panics, with what to run, when it cannot be reached: a test that needs LXD never skips.
pub async fn lxd() -> Client {
    let client = match Client::local() {
        Ok(c) => c,
        Err(e) => panic!("LXD is required for this test and is not reachable: {e}\nrun `cargo xtask lxd-up` first"),
    };
    if let Err(e) = client.server().await {
        panic!("LXD is required for this test and is not answering: {e}\nrun `cargo xtask lxd-up` first");
    }
    client
}

/// Panics unless the test image exists.
pub async fn require_test_image(lxd: &Client) {
    match lxd.image_alias(TEST_IMAGE).await {
        Ok(Some(_)) => {}
        Ok(None) => panic!("the test image {TEST_IMAGE} is missing: run `cargo xtask lxd-up`"),
        Err(e) => panic!("cannot read image aliases: {e}"),
    }
}

/// A container for one test, deleted when dropped (even on panic).
pub struct TestContainer {
    /// Its name.
    pub name: InstanceName,
    /// The client it was created with.
    pub lxd: Client,
}

impl TestContainer {
    /// Create (and optionally start) a container from the test image with no NIC.
    pub async fn create(tag: &str, start: bool) -> Self {
        Self::create_with(tag, start, |c| c).await
    }

    /// Create with extra settings applied to the request.
    pub async fn create_with(tag: &str, start: bool, adjust: impl FnOnce(CreateInstance) -> CreateInstance) -> Self {
        let lxd = lxd().await;
        require_test_image(&lxd).await;
        let name = InstanceName::new(unique_name(tag)).expect("unique names are valid");
        let request = adjust(
            CreateInstance::container(name.clone(), InstanceSource::alias(TEST_IMAGE)).config("user.gbo.test", "true"),
        )
        .start(start);
        lxd.create_instance(&request).await.unwrap_or_else(|e| panic!("creating {name}: {e}"));
        let container = Self { name, lxd };
        if start {
            container.wait_for_systemd().await;
        }
        container
    }

    /// Wait until systemd inside reports `running` or `degraded` (at most 120 s: a loaded 2-core machine has been
    /// seen to take over 60 s).
    pub async fn wait_for_systemd(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let req = lxd_client::ExecRequest::new(["systemctl", "is-system-running", "--wait"])
                .timeout(Duration::from_secs(30));
            if let Ok(out) = self.lxd.exec_output(&self.name, &req).await {
                let state = out.stdout_text();
                if state.contains("running") || state.contains("degraded") {
                    return;
                }
            }
            if std::time::Instant::now() > deadline {
                panic!("systemd in {} did not come up within 120 s", self.name);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        delete_instance(self.name.as_str());
    }
}

/// An instance a test created some other way (`lxc launch`, `gbo install`), deleted when dropped (even on panic).
pub struct InstanceGuard(pub String);

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        delete_instance(&self.0);
    }
}

/// Delete `name` with `lxc delete --force`, ignoring the outcome: the one clean-up every guard uses (Drop cannot
/// await; the `lxc` CLI is the independent peer and always present with LXD).
pub fn delete_instance(name: &str) {
    let _ = std::process::Command::new("lxc")
        .args(["delete", "--force", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// A free TCP port on 127.0.0.1 (bound then released; tests never assume a seed port is free).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_valid_and_distinct() {
        let a = unique_name("Exec_Test");
        let b = unique_name("Exec_Test");
        assert_ne!(a, b);
        assert!(InstanceName::new(a.as_str()).is_ok(), "{a}");
        assert!(a.starts_with("gbot-exectest-"), "{a}");
    }
}

/// The `gbo` binary, built once per test process (`cargo build -p gbo-cli`, serialised by cargo's own lock).
pub fn gbo_bin() -> std::path::PathBuf {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("target"));
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "gbo-cli"])
            .current_dir(&root)
            .status()
            .expect("running cargo build -p gbo-cli");
        assert!(status.success(), "cargo build -p gbo-cli failed");
        target.join("debug").join("gbo")
    })
    .clone()
}

/// What a program run printed and how it exited (`gbo`, `lxc`, ...).
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Run {
    fn of(out: std::process::Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// stdout and stderr together, for greps.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Exit code, stdout and stderr.
    pub fn parts(self) -> (i32, String, String) {
        (self.code, self.stdout, self.stderr)
    }

    /// Exit code and stderr.
    pub fn code_stderr(self) -> (i32, String) {
        (self.code, self.stderr)
    }

    /// Exit code and stdout followed by stderr.
    pub fn code_output(self) -> (i32, String) {
        (self.code, format!("{}{}", self.stdout, self.stderr))
    }

    /// Success and stdout followed by stderr.
    pub fn ok_output(self) -> (bool, String) {
        (self.code == 0, format!("{}{}", self.stdout, self.stderr))
    }
}

/// Run `gbo` with `args` (blocking: call it from `spawn_blocking` or plain tests).
pub fn gbo(args: &[&str]) -> Run {
    gbo_env(args, &[])
}

/// Run `gbo` with `args` and extra environment variables; stdin is empty.
pub fn gbo_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = std::process::Command::new(gbo_bin());
    command.args(args).stdin(std::process::Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    Run::of(command.output().expect("running gbo"))
}

/// Run the `lxc` CLI (the independent peer of every test) with `args`, whatever its exit.
pub fn lxc(args: &[&str]) -> Run {
    Run::of(
        std::process::Command::new("lxc")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("the lxc CLI is needed (cargo xtask lxd-up)"),
    )
}

/// Run the `lxc` CLI and require success: its stdout, trimmed (a failure panics with its stderr).
pub fn lxc_ok(args: &[&str]) -> String {
    let run = lxc(args);
    assert_eq!(run.code, 0, "lxc {args:?}: {}", run.stderr);
    run.stdout.trim().to_string()
}

/// The seed's way to reach the app database from inside a container: the application role's password in a 0600
/// `/root/.pgpass` pushed into `instance` (`remote:name`, in `project` when given), never on a command line.
pub fn push_pgpass(dir: &std::path::Path, instance: &str, project: Option<&str>, password: &str) {
    let pgpass = dir.join("pgpass");
    std::fs::write(&pgpass, format!("127.0.0.1:5432:botserver:gbuser:{}\n", password.trim())).expect("pgpass");
    let (from, to) = (pgpass.display().to_string(), format!("{instance}/root/.pgpass"));
    let mut args = vec!["file", "push"];
    if let Some(project) = project {
        args.extend(["--project", project]);
    }
    args.extend(["--mode", "0600", from.as_str(), to.as_str()]);
    lxc_ok(&args);
}

/// `psql` as the application role inside `instance` (`remote:name`, in `project` when given), to 127.0.0.1:5432
/// there, the password from the `.pgpass` [`push_pgpass`] put there.
pub fn psql_as_app(instance: &str, project: Option<&str>, sql: &str) -> Run {
    let mut args = vec!["exec"];
    if let Some(project) = project {
        args.extend(["--project", project]);
    }
    args.extend([
        instance,
        "--",
        "psql",
        "-h",
        "127.0.0.1",
        "-p",
        "5432",
        "-U",
        "gbuser",
        "-d",
        "botserver",
        "-tAc",
        sql,
    ]);
    lxc(&args)
}

/// Run `gbo` on a blocking thread from async tests.
pub async fn gbo_async(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        gbo(&refs)
    })
    .await
    .expect("gbo thread")
}

/// A unique test tenant (`gbot-t<pid>-<n>`): every container `<tenant>-*` is deleted on drop.
pub struct TestTenant {
    /// The tenant name.
    pub name: String,
    /// A temporary stack dir.
    pub stack: tempfile::TempDir,
}

impl TestTenant {
    /// A new tenant with its own stack dir.
    pub fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{TEST_PREFIX}t{}-{n}", std::process::id());
        let stack = tempfile::Builder::new().prefix("gbot-stack-").tempdir().expect("tempdir");
        Self { name, stack }
    }

    /// The stack dir path as text.
    pub fn stack_dir(&self) -> String {
        self.stack.path().display().to_string()
    }

    /// `gbo COMMAND --tenant T --image TEST_IMAGE --stack-dir S ROLES...`: the argv of a command on this tenant.
    pub fn args(&self, command: &str, roles: &[&str]) -> Vec<String> {
        let mut args: Vec<String> =
            vec![command.into(), "--tenant".into(), self.name.clone(), "--image".into(), TEST_IMAGE.into()];
        args.extend(["--stack-dir".into(), self.stack_dir()]);
        args.extend(roles.iter().map(|r| r.to_string()));
        args
    }

    /// Run `gbo install` of `roles` for this tenant, from the test image, into its stack dir (blocking).
    pub fn install(&self, roles: &[&str]) -> Run {
        let args = self.args("install", roles);
        gbo(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The container of `role` (`<tenant>-<suffix>`).
    pub fn container(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }
}

impl Default for TestTenant {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestTenant {
    fn drop(&mut self) {
        let Ok(out) = std::process::Command::new("lxc").args(["list", "--format", "csv", "-c", "n"]).output() else {
            return;
        };
        let prefix = format!("{}-", self.name);
        for name in String::from_utf8_lossy(&out.stdout).lines() {
            if name.starts_with(&prefix) {
                delete_instance(name);
            }
        }
    }
}

/// Records lifecycle events (all of them: filter by instance name afterwards) until stopped.
pub struct EventRecorder {
    events: std::sync::Arc<std::sync::Mutex<Vec<lxd_client::Event>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventRecorder {
    /// Subscribe now: events of requests sent after this returns are recorded.
    pub async fn start(lxd: &Client) -> Self {
        use futures_util::StreamExt;
        let stream = lxd.events(&["lifecycle"]).await.expect("subscribing to /1.0/events");
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = events.clone();
        let task = tokio::spawn(async move {
            tokio::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                if let Ok(mut v) = sink.lock() {
                    v.push(event);
                }
            }
        });
        Self { events, task }
    }

    /// Stop (after a short grace for in-flight events) and return what was recorded.
    pub async fn stop(self) -> Vec<lxd_client::Event> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.task.abort();
        self.events.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Events that concern instances whose name starts with `prefix`.
pub fn events_for<'a>(events: &'a [lxd_client::Event], prefix: &str) -> Vec<&'a lxd_client::Event> {
    events
        .iter()
        .filter(|e| {
            let source = e.metadata.get("source").and_then(|s| s.as_str()).unwrap_or_default();
            source.contains(&format!("/instances/{prefix}"))
        })
        .collect()
}

/// A session on a tenant's PostgreSQL as the application does it: `gbuser` with the generated password, database
/// `botserver`, on the host port the tables container publishes.
pub async fn app_db(port: u16, password: &str) -> tokio_postgres::Client {
    app_db_at(std::net::IpAddr::from([127, 0, 0, 1]), port, password).await
}

/// [`app_db`] at a published port on `address` (a cluster member's address: a port wired from another member).
pub async fn app_db_at(address: std::net::IpAddr, port: u16, password: &str) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host(address.to_string())
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

/// The host port `gbo status` reports for `container`'s port `container_port` (panics naming both when none).
pub fn host_port(status: &gbo_ops::install::status::TenantStatus, container: &str, container_port: u16) -> u16 {
    status
        .components
        .iter()
        .find(|c| c.container == container)
        .and_then(|c| c.ports.iter().find(|p| p.container_port == container_port))
        .map(|p| p.host_port)
        .unwrap_or_else(|| panic!("{container} publishes no port for {container_port}: {status:?}"))
}
