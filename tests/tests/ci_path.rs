//! End to end, issue 14 item 4: the seed's CI path on a stack gbo built. `-system` runs sshd (key only, gbuser,
//! 127.0.0.1:22 inside); `gbo ci connect` makes the runner's key inside `-alm-ci`, authorises it on `-system`,
//! writes the alias `system` and the known_hosts entry, and wires the two; then `gbo-ci deploy`, run inside
//! `-alm-ci` as the runner's user against `system` the way the rendered workflow runs it, replaces the running
//! botserver in `-system` (through system.service) with a health check, and rolls a broken build back.
//! doctor's `alm-ci-mounts` passes gbo's own mounts of `-alm-ci` and fails a cross-container mount.
//!
//! Stand-ins, because they cannot be installed here: the Forgejo runner (so `-alm-ci` is a plain container of the
//! test image named `<tenant>-alm-ci`, carrying the role's mounts; the wire is what `gbo ci connect` adds), MinIO
//! and botui (Caddy's `respond`), and botserver: `gbot-botserver`, a real executable of this crate serving
//! `/api/health` with the status and version baked into its file.

use std::path::{Path, PathBuf};

use gbo_components::{Role, TenantFile};
use gbo_ops::install::artifact::{cache_path, ArtifactPolicy};
use gbo_tests::{gbo, gbo_async, lxd, require_test_image, TestTenant, TEST_IMAGE};
use lxd_client::{CreateInstance, DeviceName, DiskDevice, InstanceName, InstanceSource};

/// A botserver build: the stand-in executable with its health status and version appended.
fn botserver_build(dir: &Path, health: u16, version: &str) -> PathBuf {
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_gbot-botserver")).expect("the gbot-botserver binary");
    bytes.extend_from_slice(format!("\nGBO-TEST health={health} version={version}\n").as_bytes());
    let path = dir.join(format!("botserver-{version}"));
    std::fs::write(&path, bytes).expect("build");
    path
}

fn stand_in(what: &str, port: u16) -> String {
    format!(
        "#!/bin/sh\n# gbo test stand-in for {what}: no {what} binary can be installed here.\nexec /usr/bin/caddy respond --listen 127.0.0.1:{port} ok\n"
    )
}

/// The gbo-ci binary, built once (`cargo build -p gbo-ci`).
fn gbo_ci_bin() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "gbo-ci"])
        .current_dir(&root)
        .status()
        .expect("cargo build -p gbo-ci");
    assert!(status.success(), "cargo build -p gbo-ci failed");
    target.join("debug").join("gbo-ci")
}

fn doctor_verdict(t: &TestTenant, id: &str) -> (String, String) {
    let run = gbo(&["doctor", "--tenant", &t.name, "--output", "json"]);
    let report: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("doctor JSON: {e}\n{}", run.all()));
    let check = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no check {id} in {report}"));
    (check["verdict"].as_str().unwrap_or("").into(), check["evidence"].as_str().unwrap_or("").into())
}

/// GET /api/health on the host's published port of -system's botserver: status and body.
fn health(port: u16) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(stream, "GET /api/health HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split("\r\n\r\n").nth(1).unwrap_or_default().trim().to_string()))
}

fn main_pid(system: &str) -> String {
    gbo_tests::lxc_ok(&["exec", system, "--", "systemctl", "show", "-p", "MainPID", "--value", "system.service"])
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_runner_deploys_to_system_over_ssh_with_health_check_and_rollback() {
    let client = lxd().await;
    require_test_image(&client).await;
    gbo_tests::programs::require_program("lxc");
    let t = TestTenant::new();
    let builds = tempfile::Builder::new().prefix("gbot-builds-").tempdir().expect("tempdir");
    let cache = tempfile::Builder::new().prefix("gbot-artifacts-").tempdir().expect("tempdir");
    let policy = ArtifactPolicy {
        cache_dir: cache.path().to_path_buf(),
        download: false,
        allow_unverified: true,
        trust: Default::default(),
    };
    let v1 = botserver_build(builds.path(), 200, "v1");
    for role in [Role::Drive, Role::System] {
        for artifact in gbo_components::artifacts::artifacts(role, &TenantFile::default()) {
            let target = cache_path(&policy, &artifact);
            match artifact.name {
                "botserver" => std::fs::copy(&v1, &target).map(|_| ()),
                "botui" => std::fs::write(&target, stand_in("botui", 5859)),
                _ => std::fs::write(&target, stand_in("MinIO", 9000)),
            }
            .expect("stand-in artifact");
        }
    }
    let system = t.container("system");
    let runner = t.container("alm-ci");
    // gbo-ci is built while -system installs.
    let gbo_ci = tokio::task::spawn_blocking(gbo_ci_bin);

    // The runner's container, created while -system installs (a plain test-image container: the Forgejo runner
    // cannot be installed here), with gbo's own mounts of the alm-ci role.
    let runner_task = {
        let client = client.clone();
        let runner = runner.clone();
        let stack = t.stack.path().join("alm-ci");
        tokio::spawn(async move {
            let name = InstanceName::new(runner.as_str()).expect("name");
            let mut request = CreateInstance::container(name.clone(), InstanceSource::alias(TEST_IMAGE))
                .config("user.gbo.test", "true");
            for kind in gbo_components::MountKind::ALL {
                let host = stack.join(kind.as_str());
                std::fs::create_dir_all(&host).expect("alm-ci dir");
                let device = DeviceName::new(format!("gbo-{}", kind.as_str())).expect("device");
                let config = DiskDevice::new(host.display().to_string(), kind.container_path())
                    .to_config(&device)
                    .expect("disk");
                request = request.device(&device, config);
            }
            client.create_instance(&request.start(true)).await.expect("creating the runner's container");
        })
    };
    let args: Vec<String> = [
        "install",
        "--tenant",
        &t.name,
        "--image",
        TEST_IMAGE,
        "--stack-dir",
        &t.stack_dir(),
        "--artifact-cache",
        &cache.path().display().to_string(),
        "--allow-unverified",
        "system",
    ]
    .map(str::to_string)
    .to_vec();
    let install = gbo_async(args).await;
    assert_eq!(install.code, 0, "install failed:\n{}", install.all());
    runner_task.await.expect("runner container");
    let api_port: u16 = gbo_tests::lxc_ok(&["config", "device", "get", &system, "gbo-port-api", "listen"])
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("botserver's published port");
    assert_eq!(health(api_port), Some((200, "v1".into())), "v1 runs under system.service");

    // sshd inside -system: on 127.0.0.1:22 only, key only, gbuser only.
    let listening = gbo_tests::lxc_ok(&["exec", &system, "--", "ss", "-Hltn", "sport = :22"]);
    assert!(listening.contains("127.0.0.1:22") && listening.lines().count() == 1, "{listening}");
    let effective = gbo_tests::lxc_ok(&["exec", &system, "--", "sshd", "-T"]);
    for line in
        ["passwordauthentication no", "permitrootlogin no", "allowusers gbuser", "kbdinteractiveauthentication no"]
    {
        assert!(effective.lines().any(|l| l == line), "sshd -T: {line}");
    }

    // doctor: gbo's own mounts of -alm-ci are no cross-container mount (this failed before: every mount did).
    let (verdict, evidence) = doctor_verdict(&t, "alm-ci-mounts");
    assert_eq!(verdict, "pass", "{evidence}");
    assert!(evidence.contains("its own: gbo-conf, gbo-data, gbo-logs"), "{evidence}");
    // The seed's incident: the runner mounts -system's data to copy over it. That is what doctor must flag.
    let system_data = t.stack.path().join("system/data").display().to_string();
    gbo_tests::lxc_ok(&[
        "config",
        "device",
        "add",
        &runner,
        "system-data",
        "disk",
        &format!("source={system_data}"),
        "path=/mnt/system",
    ]);
    let (verdict, evidence) = doctor_verdict(&t, "alm-ci-mounts");
    assert_eq!(verdict, "fail", "{evidence}");
    assert!(evidence.contains("system-data") && evidence.contains(&system), "{evidence}");
    gbo_tests::lxc_ok(&["config", "device", "remove", &runner, "system-data"]);

    // gbo ci connect: the key is made in -alm-ci and never leaves it; a second run changes nothing.
    let connect = gbo_async(["ci", "connect", "--tenant", &t.name].map(str::to_string).to_vec()).await;
    assert_eq!(connect.code, 0, "connect failed:\n{}", connect.all());
    assert!(!connect.all().contains("PRIVATE KEY"), "{}", connect.all());
    assert!(
        connect.stdout.contains("forgejo-runner register --no-interactive --instance http://127.0.0.1:3000"),
        "{}",
        connect.stdout
    );
    assert!(
        connect.stdout.contains("wrote ") && connect.stdout.contains("(new, made and kept inside"),
        "{}",
        connect.stdout
    );
    let again = gbo(&["ci", "connect", "--tenant", &t.name, "--output", "json"]);
    assert_eq!(again.code, 0, "{}", again.all());
    let again: serde_json::Value = serde_json::from_str(&again.stdout).expect("JSON");
    assert_eq!(
        (again["key_created"].as_bool(), again["wire_changed"].as_bool()),
        (Some(false), Some(false)),
        "{again}"
    );
    assert_eq!(again["changed_files"], serde_json::json!([]), "{again}");
    let private = gbo_tests::lxc_ok(&["exec", &runner, "--", "stat", "-c", "%u %a", "/opt/gbo/.ssh/gbo-system"]);
    assert_eq!(private.trim(), "1000 600", "the private key is gbuser's, 0600, inside -alm-ci");
    let authorised = gbo_tests::lxc_ok(&["exec", &system, "--", "cat", "/etc/ssh/gbo_authorized_keys_gbuser"]);
    let public = gbo_tests::lxc_ok(&["exec", &runner, "--", "cat", "/opt/gbo/.ssh/gbo-system.pub"]);
    let key = public.split_whitespace().nth(1).expect("the runner's public key");
    assert!(authorised.contains(&format!("ssh-ed25519 {key} ")) && authorised.contains("restrict,"), "{authorised}");

    // The workflow's deploy step, run by the runner's user inside -alm-ci against the alias `system`.
    let gbo_ci = gbo_ci.await.expect("building gbo-ci");
    gbo_tests::lxc_ok(&[
        "file",
        "push",
        "--uid",
        "0",
        "--gid",
        "0",
        "--mode",
        "0755",
        &gbo_ci.display().to_string(),
        &format!("{runner}/usr/local/bin/gbo-ci"),
    ]);
    gbo_tests::lxc_ok(&["exec", &runner, "--user", "1000", "--group", "1000", "--", "mkdir", "-p", "/opt/gbo/work"]);
    for (health, version) in [(200, "v2"), (500, "v3")] {
        let build = botserver_build(builds.path(), health, version);
        gbo_tests::lxc_ok(&[
            "file",
            "push",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--mode",
            "0755",
            &build.display().to_string(),
            &format!("{runner}/opt/gbo/work/botserver-{version}"),
        ]);
    }
    let deploy = |version: &str| {
        let binary = format!("/opt/gbo/work/botserver-{version}");
        // As the rendered workflow runs it (gbo-ci workflow render --host system), with a shorter health wait.
        let command = [
            "exec",
            &runner,
            "--user",
            "1000",
            "--group",
            "1000",
            "--env",
            "HOME=/opt/gbo",
            "--cwd",
            "/opt/gbo/work",
            "--",
            "gbo-ci",
            "deploy",
            "--host",
            "system",
            "--binary",
            &binary,
            "--dest",
            "/opt/gbo/bin/botserver",
            "--owner",
            "gbuser",
            "--health",
            "http://localhost:5858/api/health",
            "--keep",
            "5",
            "--log",
            "/opt/gbo/logs/error.log",
            "--arg=--noconsole",
            "--health-timeout",
            "15",
        ];
        gbo_tests::lxc(&command).code_output()
    };
    let before = main_pid(&system);
    let (code, out) = deploy("v2");
    assert_eq!(code, 0, "deploy v2:\n{out}");
    assert_eq!(health(api_port), Some((200, "v2".into())), "v2 serves after the deploy:\n{out}");
    assert!(out.contains("restarting (systemd unit system.service)"), "restarted through the unit:\n{out}");
    let after = main_pid(&system);
    assert!(after != before && after != "0", "system.service runs the new build: {before} -> {after}");
    let releases = gbo_tests::lxc_ok(&["exec", &system, "--", "ls", "/opt/gbo/bin"]);
    assert!(releases.lines().any(|l| l == "botserver.prev.1"), "v1 kept as a release: {releases}");
    let owner = gbo_tests::lxc_ok(&["exec", &system, "--", "stat", "-c", "%U %a", "/opt/gbo/bin/botserver"]);
    assert_eq!(owner.trim(), "gbuser 755");

    // A broken build (health 500) is rolled back: v2 serves again.
    let (code, out) = deploy("v3");
    assert_eq!(code, 2, "a broken build fails the deploy:\n{out}");
    assert!(out.contains("rolled back"), "{out}");
    assert_ne!(main_pid(&system), "0", "system.service runs the previous release again");
    assert_eq!(health(api_port), Some((200, "v2".into())), "v2 serves again after the rollback:\n{out}");
}
