//! `cargo xtask lxd-cluster up|down`: a real three-member LXD cluster on loopback addresses, beside the main daemon
//! (which it never touches), for the tests of remotes, placement and moves.
//!
//! Each member is its own daemon with its own `LXD_DIR` under [`BASE`], listening on `127.0.0.{2,3,4}:8443`, with
//! its own btrfs loop pool (`default`, member-specific size) and the test image imported once (images are shared
//! by the cluster). `up` is idempotent: it starts members whose daemon is not running (a machine that rebooted, a
//! CI machine started from this disk), forms the cluster only when it does not exist yet, and re-imports the test
//! image only when the main daemon's differs. Members are stopped by their own `LXD_DIR` (`lxd shutdown`), never
//! by a pattern that would also kill the main daemon.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Where the members' `LXD_DIR`s live.
pub const BASE: &str = "/var/lib/gbo-cluster";

/// The members: name and HTTPS address.
pub const MEMBERS: [(&str, &str); 3] = [("m1", "127.0.0.2:8443"), ("m2", "127.0.0.3:8443"), ("m3", "127.0.0.4:8443")];

/// Size of each member's btrfs loop pool.
const POOL_SIZE: &str = "6GiB";

/// The options of `lxd-cluster`.
#[derive(clap::Subcommand, Debug, Clone, Copy)]
pub enum Action {
    /// Start the members and form the cluster (idempotent), with the test image imported.
    Up,
    /// Stop every member (`lxd shutdown` per `LXD_DIR`) and remove their state.
    Down,
    /// Print each member and whether it answers.
    Status,
}

/// A member's `LXD_DIR`.
pub fn member_dir(name: &str) -> PathBuf {
    Path::new(BASE).join(name)
}

fn lxc(member: &str, args: &[&str]) -> duct::Expression {
    duct::cmd("lxc", args).env("LXD_DIR", member_dir(member))
}

fn answers(member: &str) -> bool {
    duct::cmd!("lxd", "waitready", "--timeout", "2")
        .env("LXD_DIR", member_dir(member))
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn start_daemon(member: &str) -> anyhow::Result<()> {
    let dir = member_dir(member);
    std::fs::create_dir_all(&dir)?;
    // LXD needs to traverse its own directory as other users (its forked helpers).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    std::fs::set_permissions(BASE, std::fs::Permissions::from_mode(0o711))?;
    std::fs::create_dir_all("/var/log/gbo")?;
    let log = format!("/var/log/gbo/cluster-{member}.log");
    let stderr =
        std::fs::OpenOptions::new().create(true).append(true).open(format!("/var/log/gbo/cluster-{member}.stderr"))?;
    duct::cmd!("setsid", "--fork", "lxd", "--group", "root", "--logfile", &log)
        .env("LXD_DIR", &dir)
        .stdin_null()
        .stdout_null()
        .stderr_file(stderr)
        .run()
        .with_context(|| format!("starting member {member}"))?;
    Ok(())
}

fn wait_ready(member: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if answers(member) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::bail!(
        "cluster member {member} (LXD_DIR={}) did not become ready in {limit:?}",
        member_dir(member).display()
    )
}

/// The members the cluster lists, from any member that answers.
fn members_online() -> Vec<String> {
    lxc("m1", &["cluster", "list", "--format", "csv"])
        .stderr_null()
        .unchecked()
        .read()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("ONLINE"))
        .filter_map(|l| l.split(',').next().map(str::to_string))
        .collect()
}

fn clustered(member: &str) -> bool {
    member_dir(member).join("cluster.crt").exists()
}

/// `up`: start, form, import.
pub async fn up() -> anyhow::Result<()> {
    let start = Instant::now();
    // Start every member that is not running first: a formed cluster needs a quorum before any member answers.
    for (name, _) in MEMBERS {
        if !answers(name) {
            start_daemon(name)?;
        }
    }
    for (name, _) in MEMBERS {
        wait_ready(name, Duration::from_secs(120))?;
    }
    eprintln!("lxd-cluster: daemons ready ({:.1} s)", start.elapsed().as_secs_f64());
    form()?;
    eprintln!("lxd-cluster: members {:?} online ({:.1} s)", members_online(), start.elapsed().as_secs_f64());
    import_test_image().await?;
    eprintln!("lxd-cluster: test image ready ({:.1} s)", start.elapsed().as_secs_f64());
    Ok(())
}

fn form() -> anyhow::Result<()> {
    let (first, first_address) = MEMBERS[0];
    if !clustered(first) {
        lxc(first, &["config", "set", "core.https_address", first_address]).run()?;
        lxc(first, &["cluster", "enable", first]).run().context("enabling clustering on m1")?;
    }
    let pools = lxc(first, &["storage", "list", "--format", "csv"]).read()?;
    if !pools.lines().any(|l| l.starts_with("default,")) {
        let size = format!("size={POOL_SIZE}");
        lxc(first, &["storage", "create", "default", "btrfs", "--target", first, &size]).run()?;
        lxc(first, &["storage", "create", "default", "btrfs"]).run().context("creating the cluster's pool")?;
    }
    let profile = lxc(first, &["profile", "device", "list", "default"]).read()?;
    if !profile.lines().any(|l| l.trim() == "root") {
        lxc(first, &["profile", "device", "add", "default", "root", "disk", "path=/", "pool=default"]).run()?;
    }
    for (name, address) in &MEMBERS[1..] {
        if clustered(name) {
            continue;
        }
        // A token of an earlier, interrupted attempt is revoked first.
        let _ = lxc(first, &["cluster", "revoke-token", name]).stdout_null().stderr_null().unchecked().run();
        let token = lxc(first, &["cluster", "add", name, "--quiet"]).read().context("cluster add")?;
        let preseed = format!(
            "cluster:\n  enabled: true\n  server_name: {name}\n  server_address: {address}\n  cluster_address: \
             {first_address}\n  cluster_token: {}\n  member_config:\n  - entity: storage-pool\n    name: default\n    \
             key: size\n    value: {POOL_SIZE}\n",
            token.trim()
        );
        duct::cmd!("lxd", "init", "--preseed")
            .env("LXD_DIR", member_dir(name))
            .stdin_bytes(preseed)
            .run()
            .with_context(|| format!("joining {name} to the cluster"))?;
    }
    let online = members_online();
    if online.len() != MEMBERS.len() {
        anyhow::bail!("the cluster has {} of {} members online: {online:?}", online.len(), MEMBERS.len());
    }
    Ok(())
}

/// The test image of the main daemon, imported once into the cluster (re-imported when the main one was rebuilt).
async fn import_test_image() -> anyhow::Result<()> {
    let alias = crate::lxd_up::TEST_IMAGE_ALIAS;
    let main = lxd_client::Client::local()?;
    let image = main.image_by_alias(alias).await?.with_context(|| {
        format!("the main daemon has no {alias}: run `cargo xtask lxd-up` first (the cluster gets a copy of it)")
    })?;
    let have = lxc("m1", &["image", "list", "--format", "csv", "-c", "f", &image.fingerprint[..12]]).read()?;
    if !have.trim().is_empty() {
        return Ok(());
    }
    let scratch = tempfile::Builder::new().prefix("gbo-cluster-image-").tempdir()?;
    let base = scratch.path().join("image");
    let base_s = base.display().to_string();
    duct::cmd!("lxc", "image", "export", alias, &base_s).stdout_null().run().context("exporting the test image")?;
    let file = std::fs::read_dir(scratch.path())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("image")))
        .context("the exported image is missing")?;
    let file_s = file.display().to_string();
    let _ = lxc("m1", &["image", "alias", "delete", alias]).stdout_null().stderr_null().unchecked().run();
    lxc("m1", &["image", "import", &file_s, "--alias", alias])
        .stdout_null()
        .run()
        .context("importing the test image")?;
    Ok(())
}

/// `down`: stop every member by its own `LXD_DIR` and remove the state.
pub fn down() -> anyhow::Result<()> {
    for (name, _) in MEMBERS {
        if answers(name) {
            // Instances are stopped by the daemon on shutdown; tests leave none behind.
            let _ = duct::cmd!("lxd", "shutdown", "--timeout", "60").env("LXD_DIR", member_dir(name)).unchecked().run();
        }
    }
    if Path::new(BASE).exists() {
        // The pools' loop files and btrfs mounts go with the state.
        for (name, _) in MEMBERS {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let dir = member_dir(name).display().to_string();
            for line in mounts.lines().rev() {
                if let Some(point) = line.split(' ').nth(4) {
                    if point.starts_with(&dir) {
                        let _ = duct::cmd!("umount", "-l", point).unchecked().run();
                    }
                }
            }
        }
        std::fs::remove_dir_all(BASE).with_context(|| format!("removing {BASE}"))?;
    }
    eprintln!("lxd-cluster: down");
    Ok(())
}

/// `status`.
pub fn status() -> anyhow::Result<()> {
    for (name, address) in MEMBERS {
        println!("{name} {address} {}", if answers(name) { "answers" } else { "down" });
    }
    println!("online: {:?}", members_online());
    Ok(())
}

/// Remove the instances tests left on the cluster (names `gbot-*`), when it is up.
pub fn clean() {
    if !answers("m1") {
        return;
    }
    let names = lxc("m1", &["list", "--format", "csv", "-c", "n"]).stderr_null().unchecked().read().unwrap_or_default();
    for name in names.lines().filter(|n| n.starts_with(crate::lxd_up::TEST_PREFIX)) {
        let _ = lxc("m1", &["delete", "--force", name]).stdout_null().stderr_null().unchecked().run();
        eprintln!("clean: removed leftover cluster instance {name}");
    }
}
