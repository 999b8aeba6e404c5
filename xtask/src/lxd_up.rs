//! `cargo xtask lxd-up`: a local LXD for development, tests and users, idempotent and fast when already up.
//!
//! Installs LXD from the distribution when missing, starts the daemon in the background when it is not running
//! (these machines have no systemd), creates the `default` storage pool (btrfs on a loop file when `mkfs.btrfs`
//! exists, else `dir`) and the default profile's root disk, enables HTTPS on 127.0.0.1:8443 for the transport
//! tests, and builds and imports the test image through the one image builder (cached by its inputs).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use gbo_components::Role;
use lxd_client::{Client, DeviceName, DiskDevice, ObjectName};

/// The alias of the image the test suite uses.
pub const TEST_IMAGE_ALIAS: &str = "gbo-test/debian-12";

/// The HTTPS address the transport tests use.
pub const HTTPS_ADDRESS: &str = "127.0.0.1:8443";

/// The daemon's pprof listener (loopback only), for goroutine dumps of a wedged daemon.
pub const DEBUG_ADDRESS: &str = "127.0.0.1:8444";

/// Roles baked into the test image.
pub const TEST_IMAGE_ROLES: &[Role] = &[Role::Tables, Role::Cache, Role::Proxy, Role::System, Role::Webmail];

/// Debian packages the test image carries beyond its roles': Dovecot (IMAP) and Postfix (SMTP), the real mail
/// server that stands in for the email role (Stalwart, an unverifiable artifact) in the webmail test.
pub const TEST_IMAGE_EXTRA_PACKAGES: &[&str] = &["dovecot-imapd", "postfix"];

/// Prefix of every resource the test suite creates (removed by `clean`).
pub const TEST_PREFIX: &str = "gbot-";

/// Options of `lxd-up`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Skip building/importing the test image.
    #[arg(long)]
    pub no_image: bool,
    /// Storage pool size for a new btrfs pool.
    #[arg(long, default_value = "24GiB")]
    pub pool_size: String,
}

fn phase(name: &str, start: Instant) {
    eprintln!("lxd-up: {name} ({:.1} s)", start.elapsed().as_secs_f64());
}

/// Run an apt-get install with retries (registries can be slow).
pub fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            duct::cmd!("dpkg-query", "-W", "-f=${Status}", p)
                .stderr_null()
                .read()
                .map(|s| !s.contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {}", missing.join(" "));
    for attempt in 1..=3 {
        let update = duct::cmd!("apt-get", "update", "-q").stdout_null().run();
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(missing.iter().copied());
        let install = duct::cmd("apt-get", &args).env("DEBIAN_FRONTEND", "noninteractive").stdout_null().run();
        if update.is_ok() && install.is_ok() {
            return Ok(());
        }
        eprintln!("apt-get failed (attempt {attempt}/3), retrying");
        std::thread::sleep(Duration::from_secs(5 * attempt));
    }
    anyhow::bail!("could not install {}", missing.join(" "))
}

/// Bring LXD up.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    ensure_daemon().await?;
    phase("daemon ready", start);
    let lxd = Client::local()?;
    ensure_storage(&lxd, &args.pool_size).await?;
    phase("storage pool and root disk ready", start);
    ensure_https(&lxd).await?;
    phase("HTTPS listening on 127.0.0.1:8443", start);
    if !args.no_image {
        let built = build_test_image(&lxd).await?;
        phase(&format!("test image {} {}", TEST_IMAGE_ALIAS, if built.reused { "reused" } else { "built" }), start);
    }
    Ok(())
}

/// Whether LXD_SOCKET or LXD_DIR names the daemon (set and not empty).
fn explicit_daemon() -> bool {
    lxd_client::Flavor::Lxd
        .socket_variables()
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|value| !value.is_empty()))
}

/// Install and start the daemon if needed.
pub async fn ensure_daemon() -> anyhow::Result<()> {
    // Always (a dpkg query each when all are there): a daemon installed by hand may lack its runtime needs, such as
    // dnsmasq and iptables for bridges.
    apt_install(&gbo_tests::programs::packages(gbo_tests::programs::Need::Lxd))?;
    match Client::local() {
        Ok(lxd) => match lxd.server_fresh().await {
            Ok(_) => return Ok(()),
            // A daemon named by LXD_SOCKET/LXD_DIR is not the one started below: never replace it with that one.
            Err(e) if explicit_daemon() => anyhow::bail!("{e}; lxd-up starts only the default daemon"),
            Err(_) => {}
        },
        Err(e @ lxd_client::Error::ExplicitSocket { .. }) => return Err(e.into()),
        Err(_) => {}
    }
    std::fs::create_dir_all("/var/log/gbo")?;
    let log = "/var/log/gbo/lxd.log";
    eprintln!("starting lxd in the background (log: {log})");
    // Detached in its own session so it outlives this process; no systemd on these machines.
    // stderr goes to a file: Go writes its goroutine dump there on SIGQUIT, which is how a wedged daemon is
    // diagnosed (`kill -QUIT $(pgrep -x lxd)`).
    let stderr = std::fs::OpenOptions::new().create(true).append(true).open("/var/log/gbo/lxd.stderr")?;
    duct::cmd!("setsid", "--fork", "lxd", "--group", "root", "--logfile", log)
        .stdin_null()
        .stdout_null()
        .stderr_file(stderr)
        .run()
        .context("starting lxd")?;
    duct::cmd!("lxd", "waitready", "--timeout", "60").run().context("waiting for lxd to be ready")?;
    Ok(())
}

async fn ensure_storage(lxd: &Client, size: &str) -> anyhow::Result<()> {
    let default = ObjectName::new("default")?;
    let pools = lxd.storage_pools().await?;
    let pool = if let Some(existing) = pools.iter().find(|p| p.name == "default") {
        existing.name.clone()
    } else {
        let btrfs = Path::new("/usr/bin/mkfs.btrfs").exists() || Path::new("/sbin/mkfs.btrfs").exists();
        let (driver, config) = if btrfs {
            ("btrfs", BTreeMap::from([("size".to_string(), size.to_string())]))
        } else {
            ("dir", BTreeMap::new())
        };
        match lxd.create_storage_pool(&default, driver, config).await {
            Ok(()) => {}
            Err(e) if driver == "btrfs" => {
                eprintln!("btrfs pool failed ({e}); falling back to dir");
                lxd.create_storage_pool(&default, "dir", BTreeMap::new()).await?;
            }
            Err(e) => return Err(e.into()),
        }
        "default".to_string()
    };
    let profile = lxd.profile(&default).await?;
    if !profile
        .devices
        .values()
        .any(|d| d.get("type").map(String::as_str) == Some("disk") && d.get("path").map(String::as_str) == Some("/"))
    {
        let root = DeviceName::new("root")?;
        lxd.add_profile_device(&default, &root, DiskDevice::root(pool).to_config(&root)?).await?;
    }
    Ok(())
}

async fn ensure_https(lxd: &Client) -> anyhow::Result<()> {
    let server = lxd.server_fresh().await?;
    let mut wanted = BTreeMap::new();
    if server.config.get("core.https_address").and_then(|v| v.as_str()) != Some(HTTPS_ADDRESS) {
        wanted.insert("core.https_address".to_string(), HTTPS_ADDRESS.to_string());
    }
    // Go's pprof on loopback: how a wedged daemon's goroutines are read without killing it (the watchdog of
    // `cargo xtask test` uses it).
    if server.config.get("core.debug_address").and_then(|v| v.as_str()) != Some(DEBUG_ADDRESS) {
        wanted.insert("core.debug_address".to_string(), DEBUG_ADDRESS.to_string());
    }
    if !wanted.is_empty() {
        lxd.patch_server_config(&wanted).await?;
    }
    Ok(())
}

/// The image builder's spec for the test image (the same function `gbo image build` uses).
pub fn test_image_spec() -> gbo_ops::image::ImageSpec {
    gbo_ops::image::ImageSpec {
        alias: TEST_IMAGE_ALIAS.to_string(),
        roles: TEST_IMAGE_ROLES.iter().map(|r| r.as_str().to_string()).collect(),
        packages: gbo_components::image_packages(TEST_IMAGE_ROLES)
            .into_iter()
            .chain(TEST_IMAGE_EXTRA_PACKAGES.iter().copied())
            .map(str::to_string)
            .collect(),
        users: gbo_components::SERVICE_USERS
            .iter()
            .map(|u| gbo_ops::image::FixedUser {
                name: u.name.into(),
                uid: u.uid,
                gid: u.gid,
                home: u.home.into(),
                shell: u.shell.into(),
            })
            .collect(),
        mirror: "http://deb.debian.org/debian".to_string(),
        work_dir: "/var/cache/gbo/images".into(),
        force: false,
    }
}

async fn build_test_image(lxd: &Client) -> anyhow::Result<gbo_ops::image::BuiltImage> {
    let spec = test_image_spec();
    // One build at a time on this machine, even if two runs start together.
    std::fs::create_dir_all(&spec.work_dir)?;
    let events = |event: &gbo_ops::image::ImageEvent| eprintln!("test image: {event}");
    Ok(gbo_ops::image::build_image(lxd, &spec, &events).await?)
}

/// Remove what earlier test runs left behind: instances, profiles and images whose names start with `gbot-`,
/// and host data under /tmp/gbot-*.
pub async fn clean() -> anyhow::Result<()> {
    let lxd = Client::local()?;
    let mut removed = 0;
    // Best effort: a leftover of a crashed run can be half gone (its storage deleted, or deleted concurrently by
    // its own test); say so and go on rather than fail the run over debris.
    for instance in lxd.instances().await? {
        if instance.name.starts_with(TEST_PREFIX) || instance.config.contains_key("user.gbo.test") {
            let name = lxd_client::InstanceName::new(instance.name.clone())?;
            // A delete that its own (killed) test started can still be running in LXD: LXD then refuses a second
            // one ("a matching non-reusable operation"); a moment later the instance is gone or deletable.
            for attempt in 1..=3 {
                match lxd.delete_instance_if_exists(&name).await {
                    Ok(_) => {
                        eprintln!("clean: removed leftover instance {name}");
                        removed += 1;
                        break;
                    }
                    Err(_) if attempt < 3 => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
                    Err(e) => eprintln!("clean: could not remove {name}: {e}"),
                }
            }
        }
    }
    // Custom volumes of test tenants that nothing uses any more (their instances are gone).
    for pool in lxd.storage_pools().await? {
        let Ok(pool) = ObjectName::new(pool.name.as_str()) else { continue };
        for volume in lxd.storage_volumes(&pool).await? {
            if volume.kind == "custom" && volume.name.starts_with(TEST_PREFIX) && volume.used_by.is_empty() {
                let Ok(name) = ObjectName::new(volume.name.as_str()) else { continue };
                match lxd.delete_storage_volume(&pool, &name).await {
                    Ok(()) => eprintln!("clean: removed leftover volume {pool}/{name}"),
                    Err(e) => eprintln!("clean: could not remove volume {pool}/{name}: {e}"),
                }
            }
        }
    }
    for profile in lxd.profiles().await? {
        if profile.name.starts_with(TEST_PREFIX) {
            if let Ok(name) = ObjectName::new(profile.name.as_str()) {
                let _ = lxd.delete_profile(&name).await;
            }
        }
    }
    for image in lxd.images().await? {
        if image.aliases.iter().any(|a| a.name.starts_with(TEST_PREFIX)) {
            let _ = lxd.delete_image(&image.fingerprint).await;
        }
    }
    eprintln!("clean: removed {removed} leftover test instance(s)");
    Ok(())
}
