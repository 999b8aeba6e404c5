//! End to end: where `gbo install` takes its image from. The local daemon's own HTTPS listener (loopback) serves
//! as a remote `lxd` image server, named in a throw-away `lxc` configuration (`LXD_CONF`) with its certificate:
//! a tenant's cache role is installed from a public copy of the test image pulled that way (the fallback path:
//! the default local alias is one that does not exist); a plain image (no `gbo.roles`, no Redis) in a container
//! without a network fails with the error that names the fixes and leaves no container behind; a plain image that
//! has the packages installs offline and gets the fixed-uid users; a named local alias
//! that does not exist, an unknown remote, and the public fallback without a network are bad input that changes
//! nothing. Nothing here reaches beyond 127.0.0.1.

use std::path::Path;
use std::process::{Command, Stdio};

use gbo_ops::install::status::TenantStatus;
use gbo_tests::{gbo_bin, lxd, require_test_image, unique_name, Run, TestContainer, TestTenant, TEST_IMAGE};
use lxd_client::{Client, ExecRequest};

/// The name of the loopback image server in the throw-away `lxc` configuration.
const REMOTE: &str = "gbot-srv";

/// Run `gbo` with `LXD_CONF` pointing at `lxc_conf` and no image variables from the test's own environment.
fn gbo_in(lxc_conf: &Path, args: &[String]) -> Run {
    let out = Command::new(gbo_bin())
        .args(args)
        .env("LXD_CONF", lxc_conf)
        .env_remove("GBO_DEFAULT_IMAGE")
        .env_remove("GBO_FALLBACK_IMAGE")
        .stdin(Stdio::null())
        .output()
        .expect("running gbo");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn containers_of(tenant: &str) -> Vec<String> {
    let out = Command::new("lxc").args(["list", "--format", "csv", "-c", "n"]).output().expect("lxc list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.starts_with(&format!("{tenant}-")))
        .map(str::to_string)
        .collect()
}

/// A public image published for one test, deleted (with its alias) on drop, even on panic.
struct PublishedImage {
    alias: String,
    fingerprint: String,
}

impl PublishedImage {
    /// Publish the stopped `container` as a public image under a unique `gbot-` alias with exactly `properties`
    /// (so it never carries the test image's `gbo.inputs`, which the image builder looks images up by).
    async fn publish(lxd: &Client, container: &TestContainer, properties: &[(&str, String)]) -> Self {
        let alias = unique_name("img");
        let mut command = Command::new("lxc");
        command.args(["publish", container.name.as_str(), "--alias", &alias, "--public", "--compression", "none"]);
        for (key, value) in properties {
            command.arg(format!("{key}={value}"));
        }
        let out = command.stdout(Stdio::null()).output().expect("lxc publish");
        assert!(out.status.success(), "lxc publish {}: {}", container.name, String::from_utf8_lossy(&out.stderr));
        let fingerprint = match lxd.image_alias(&alias).await {
            Ok(Some(a)) => a.target,
            other => panic!("alias {alias} after publishing: {other:?}"),
        };
        Self { alias, fingerprint }
    }
}

impl Drop for PublishedImage {
    fn drop(&mut self) {
        let _ = Command::new("lxc")
            .args(["image", "delete", &self.fingerprint])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A throw-away `lxc` configuration naming the local daemon's HTTPS listener on loopback as the `lxd` remote
/// [`REMOTE`], with the daemon's certificate pinned as the `lxc` CLI would store it.
async fn loopback_remote(lxd: &Client) -> tempfile::TempDir {
    let server = lxd.server().await.expect("GET /1.0");
    let port = server
        .environment
        .addresses
        .iter()
        .filter_map(|a| a.rsplit_once(':'))
        .find(|(host, _)| matches!(*host, "127.0.0.1" | "" | "[::]" | "0.0.0.0"))
        .map(|(_, port)| port.to_string())
        .unwrap_or_else(|| {
            panic!(
                "LXD has no HTTPS listener on loopback ({:?}): run `cargo xtask lxd-up`",
                server.environment.addresses
            )
        });
    assert!(server.environment.certificate.contains("BEGIN CERTIFICATE"), "the daemon's certificate is in GET /1.0");
    let dir = tempfile::Builder::new().prefix("gbot-lxc-conf-").tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("config.yml"),
        format!("remotes:\n  {REMOTE}:\n    addr: https://127.0.0.1:{port}\n    protocol: lxd\n    public: true\n"),
    )
    .expect("config.yml");
    std::fs::create_dir_all(dir.path().join("servercerts")).expect("servercerts");
    std::fs::write(dir.path().join("servercerts").join(format!("{REMOTE}.crt")), &server.environment.certificate)
        .expect("certificate");
    dir
}

/// The gbo properties of the test image worth copying (its roles and packages; not its build inputs).
async fn test_image_roles(lxd: &Client) -> (String, String) {
    let image = lxd.image_by_alias(TEST_IMAGE).await.expect("reading the test image").expect("the test image exists");
    let roles = image.properties.get("gbo.roles").cloned().expect("the test image records its roles");
    let packages = image.properties.get("gbo.packages").cloned().unwrap_or_default();
    (roles, packages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_cache_from_a_remote_lxd_server_on_loopback() {
    let client = lxd().await;
    require_test_image(&client).await;
    let (roles, packages) = test_image_roles(&client).await;
    assert!(roles.split(',').any(|r| r == "cache"), "the test image has the cache role: {roles}");
    let source = TestContainer::create("imgsrc", false).await;
    let image = PublishedImage::publish(
        &client,
        &source,
        &[
            ("description", "gbot served copy of the test image".into()),
            ("gbo.roles", roles),
            ("gbo.packages", packages),
        ],
    )
    .await;
    drop(source);
    let conf = loopback_remote(&client).await;
    let tenant = TestTenant::new();
    let absent = unique_name("absent");
    let fallback = format!("{REMOTE}:{}", image.alias);
    let common = [
        args(&[
            "--tenant",
            &tenant.name,
            "--stack-dir",
            &tenant.stack_dir(),
            "--default-image",
            &absent,
            "--fallback-image",
            &fallback,
        ]),
        args(&["cache"]),
    ]
    .concat();

    // The plan says which image is used and why.
    let plan = gbo_in(conf.path(), &[args(&["plan"]), common.clone()].concat());
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(
        plan.stdout.contains(&format!(
            "note: no local image {absent}: containers come from the fallback {fallback} from https://127.0.0.1:"
        )),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains(&format!("+ create instance from {fallback}")), "{}", plan.stdout);

    // Install: the daemon pulls the image from its own HTTPS listener (certificate pinned), then provisions.
    let run = gbo_in(conf.path(), &[args(&["install"]), common.clone()].concat());
    assert_eq!(run.code, 0, "install from {fallback}:\n{}", run.all());
    let cache = tenant.container("cache");
    assert!(run.stderr.contains(&format!("[{cache}] creating from {fallback} (https://127.0.0.1:")), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("[{cache}] healthy (")),
        "one plain progress line per event without a terminal:\n{}",
        run.stderr
    );
    let instance = client
        .instance(&lxd_client::InstanceName::new(cache.clone()).expect("name"))
        .await
        .expect("the cache container");
    assert_eq!(instance.config.get("volatile.base_image"), Some(&image.fingerprint), "created from the served copy");
    assert_eq!(
        instance.config.get("image.description").map(String::as_str),
        Some("gbot served copy of the test image")
    );

    let status = gbo_in(conf.path(), &args(&["status", "--tenant", &tenant.name, "--output", "json"]));
    assert_eq!(status.code, 0, "{}", status.all());
    let status: TenantStatus = serde_json::from_str(&status.stdout).expect("status json");
    assert_eq!(status.components.len(), 1, "{status:?}");
    assert!(status.all_healthy(), "{status:?}");
    assert!(status.components[0].health.as_ref().is_some_and(|h| h.healthy), "{status:?}");

    // Converged: the same command plans nothing.
    let again = gbo_in(conf.path(), &[args(&["plan"]), common].concat());
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(again.stdout.contains("Nothing to do"), "{}", again.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_image_without_network_fails_naming_the_fix_and_leaves_no_container() {
    let client = lxd().await;
    require_test_image(&client).await;
    // A plain image: the test image without Redis and without any gbo property.
    let source = TestContainer::create("imgbare", true).await;
    let purge = ExecRequest::new(["dpkg", "--purge", "redis-server"]).env("DEBIAN_FRONTEND", "noninteractive");
    let out = client.exec_output(&source.name, &purge).await.expect("exec dpkg");
    assert!(out.success(), "dpkg --purge redis-server: {}", out.stderr_text());
    client
        .ensure_stopped(&source.name, std::time::Duration::from_secs(30))
        .await
        .expect("stopping the source container");
    let image =
        PublishedImage::publish(&client, &source, &[("description", "gbot plain Debian without redis".into())]).await;
    drop(source);
    let profile =
        client.profile(&lxd_client::ObjectName::new("default").expect("profile name")).await.expect("default profile");
    assert!(
        !profile.devices.values().any(|d| d.get("type").map(String::as_str) == Some("nic")),
        "test containers get no network: the default profile must have no nic"
    );
    let conf = loopback_remote(&client).await;
    let tenant = TestTenant::new();
    let remote_image = format!("{REMOTE}:{}", image.alias);
    let install = [
        args(&["install", "--tenant", &tenant.name, "--stack-dir", &tenant.stack_dir(), "--image", &remote_image]),
        args(&["cache"]),
    ]
    .concat();
    let cache = tenant.container("cache");
    for attempt in ["first run", "re-run"] {
        let run = gbo_in(conf.path(), &install);
        assert_eq!(run.code, 2, "{attempt}: a role whose packages cannot be installed fails:\n{}", run.all());
        for expected in [
            format!("{cache}: image {remote_image} was not built by gbo and lacks the Debian packages of cache (redis-server)"),
            "no network to install them with apt-get".to_string(),
            "gbo image build --components".to_string(),
            "gbo setup --network".to_string(),
            format!("the container {cache} was removed"),
        ] {
            assert!(run.stderr.contains(&expected), "{attempt}: stderr should say {expected:?}:\n{}", run.stderr);
        }
        assert!(containers_of(&tenant.name).is_empty(), "{attempt}: no half-provisioned container is left behind");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_image_that_has_the_packages_installs_offline_and_gets_the_fixed_users() {
    let client = lxd().await;
    require_test_image(&client).await;
    // A plain local image: the test image without any gbo property and without the gbuser account.
    let source = TestContainer::create("imgplain", true).await;
    let out = client.exec_output(&source.name, &ExecRequest::new(["userdel", "gbuser"])).await.expect("exec userdel");
    assert!(out.success(), "userdel gbuser: {}", out.stderr_text());
    client
        .ensure_stopped(&source.name, std::time::Duration::from_secs(30))
        .await
        .expect("stopping the source container");
    let image =
        PublishedImage::publish(&client, &source, &[("description", "gbot plain Debian with redis".into())]).await;
    drop(source);
    let no_conf = tempfile::Builder::new().prefix("gbot-lxc-conf-").tempdir().expect("tempdir");
    let tenant = TestTenant::new();
    let plan_args = [
        args(&["plan", "--tenant", &tenant.name, "--stack-dir", &tenant.stack_dir(), "--image", &image.alias]),
        args(&["cache"]),
    ]
    .concat();
    let plan = gbo_in(no_conf.path(), &plan_args);
    assert_eq!(plan.code, 0, "{}", plan.all());
    assert!(plan.stdout.contains(&format!("note: image {} was not built by gbo: the packages of cache (redis-server) are installed with apt-get when missing", image.alias)), "{}", plan.stdout);

    let mut install = plan_args.clone();
    install[0] = "install".into();
    let run = gbo_in(no_conf.path(), &install);
    assert_eq!(run.code, 0, "the packages are there: no network needed:\n{}", run.all());
    assert!(!run.stderr.contains("apt-get"), "nothing to install:\n{}", run.stderr);
    let cache = lxd_client::InstanceName::new(tenant.container("cache")).expect("name");
    let out = client.exec_output(&cache, &ExecRequest::new(["getent", "passwd", "gbuser"])).await.expect("exec getent");
    assert_eq!(
        out.stdout_text().trim(),
        "gbuser:x:1000:1000:gbo service user:/opt/gbo:/bin/bash",
        "the fixed-uid user is created"
    );
    let again = gbo_in(no_conf.path(), &plan_args);
    assert!(again.stdout.contains("Nothing to do"), "{}", again.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_images_and_unknown_remotes_are_bad_input() {
    let client = lxd().await;
    require_test_image(&client).await;
    let profile =
        client.profile(&lxd_client::ObjectName::new("default").expect("profile name")).await.expect("default profile");
    assert!(
        !profile.devices.values().any(|d| d.get("type").map(String::as_str) == Some("nic")),
        "test containers get no network: the default profile must have no nic (else the fallback case would pull from the internet)"
    );
    let tenant = TestTenant::new();
    let empty_conf = tempfile::Builder::new().prefix("gbot-lxc-conf-").tempdir().expect("tempdir");
    let missing = unique_name("missing");
    let base = args(&["install", "--tenant", &tenant.name, "--stack-dir", &tenant.stack_dir(), "cache"]);
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        // An explicitly named local alias must exist.
        (
            args(&["--image", &missing]),
            vec![
                format!("image {missing:?} not found"),
                format!("gbo image build --components cache --alias {missing}"),
            ],
        ),
        (
            args(&["--image", "gbot-nosuch:debian/12"]),
            vec!["no image remote \"gbot-nosuch\"".to_string(), "`images`".to_string()],
        ),
        (args(&["--image", ":debian/12"]), vec!["expected ALIAS (a local image) or REMOTE:ALIAS".to_string()]),
        // The public fallback with containers that have no network: refused before anything is pulled.
        (
            args(&["--default-image", &missing, "--fallback-image", "images:debian/12"]),
            vec![
                "image images:debian/12 was not built by gbo".to_string(),
                "(nothing was changed)".to_string(),
                "gbo setup --network".to_string(),
            ],
        ),
    ];
    for (extra, expected) in cases {
        let run = gbo_in(empty_conf.path(), &[base.clone(), extra.clone()].concat());
        assert_eq!(run.code, 2, "{extra:?} is bad input (exit 2):\n{}", run.all());
        for e in &expected {
            assert!(run.stderr.contains(e.as_str()), "{extra:?}: stderr should name {e:?}:\n{}", run.stderr);
        }
    }
    assert!(containers_of(&tenant.name).is_empty(), "bad input created containers");
    assert_eq!(
        std::fs::read_dir(tenant.stack.path()).expect("stack dir").count(),
        0,
        "bad input changed the host tree"
    );
}
