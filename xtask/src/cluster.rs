//! `cargo xtask lxd-cluster up|down`: a real three-member LXD cluster on loopback addresses and a standalone fourth
//! daemon ("another host", [`SOLO`]), beside the main daemon (which it never touches), for the tests of remotes,
//! placement, moves, restores on another host and reboots. `up` also adds the `lxc` remotes [`CLUSTER_REMOTE`] and
//! [`SOLO_REMOTE`] to the default `lxc` configuration, trusted with a token as an operator would.
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
pub const BASE: &str = gbo_tests::rig::BASE;

/// The members: name and HTTPS address.
pub const MEMBERS: [(&str, &str); 3] = [("m1", "127.0.0.2:8443"), ("m2", "127.0.0.3:8443"), ("m3", "127.0.0.4:8443")];

/// A fourth, standalone daemon (not clustered): "another host" for remotes, backups restored elsewhere and
/// reboots, beside the main daemon and the cluster.
pub const SOLO: (&str, &str) = ("solo", "127.0.0.5:8443");

/// The `lxc` remotes `up` adds to the default `lxc` configuration, trusted by a token (as an operator would).
pub const CLUSTER_REMOTE: &str = "gbot-cluster";
/// The standalone daemon's remote.
pub const SOLO_REMOTE: &str = "gbot-solo";

/// Every daemon of the rig.
fn daemons() -> impl Iterator<Item = (&'static str, &'static str)> {
    MEMBERS.into_iter().chain(std::iter::once(SOLO))
}

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
    gbo_tests::rig::answers(member)
}

/// Start a member's daemon (shared with the reboot test, which starts `solo` again the same way).
fn start_daemon(member: &str) -> anyhow::Result<()> {
    gbo_tests::rig::start_daemon(member)
}

fn wait_ready(member: &str, limit: Duration) -> anyhow::Result<()> {
    gbo_tests::rig::wait_ready(member, limit)
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
    for (name, _) in daemons() {
        if !answers(name) {
            start_daemon(name)?;
        }
    }
    for (name, _) in daemons() {
        wait_ready(name, Duration::from_secs(120))?;
    }
    eprintln!("lxd-cluster: daemons ready ({:.1} s)", start.elapsed().as_secs_f64());
    form()?;
    eprintln!("lxd-cluster: members {:?} online ({:.1} s)", members_online(), start.elapsed().as_secs_f64());
    solo()?;
    import_test_image(MEMBERS[0].0).await?;
    import_test_image(SOLO.0).await?;
    eprintln!("lxd-cluster: test image ready ({:.1} s)", start.elapsed().as_secs_f64());
    remote(CLUSTER_REMOTE, MEMBERS[0])?;
    remote(SOLO_REMOTE, SOLO)?;
    eprintln!("lxd-cluster: lxc remotes {CLUSTER_REMOTE} and {SOLO_REMOTE} ({:.1} s)", start.elapsed().as_secs_f64());
    Ok(())
}

/// The standalone daemon: HTTPS on its address, its own btrfs pool, a root disk.
fn solo() -> anyhow::Result<()> {
    let (name, address) = SOLO;
    let current = lxc(name, &["config", "get", "core.https_address"]).read()?;
    if current.trim() != address {
        lxc(name, &["config", "set", "core.https_address", address]).run()?;
    }
    let pools = lxc(name, &["storage", "list", "--format", "csv"]).read()?;
    if !pools.lines().any(|l| l.starts_with("default,")) {
        let size = format!("size={POOL_SIZE}");
        lxc(name, &["storage", "create", "default", "btrfs", &size]).run().context("creating solo's pool")?;
    }
    let profile = lxc(name, &["profile", "device", "list", "default"]).read()?;
    if !profile.lines().any(|l| l.trim() == "root") {
        lxc(name, &["profile", "device", "add", "default", "root", "disk", "path=/", "pool=default"]).run()?;
    }
    Ok(())
}

/// Add `remote` (pointing at `daemon`) to the default `lxc` configuration with a trust token from the daemon, as
/// `lxc remote add NAME TOKEN` does for an operator; an existing remote of that name is replaced.
fn remote(remote: &str, (daemon, address): (&str, &str)) -> anyhow::Result<()> {
    let listed = duct::cmd!("lxc", "remote", "list", "--format", "csv").read().unwrap_or_default();
    if listed.lines().any(|l| l.starts_with(&format!("{remote},")) && l.contains(address)) {
        let works = duct::cmd!("lxc", "info", format!("{remote}:")).stdout_null().stderr_null().unchecked().run();
        if works.map(|o| o.status.success()).unwrap_or(false) {
            return Ok(());
        }
    }
    let _ = duct::cmd!("lxc", "remote", "remove", remote).stdout_null().stderr_null().unchecked().run();
    let client = format!("gbot-client-{remote}");
    let _ = lxc(daemon, &["config", "trust", "remove", &client]).stdout_null().stderr_null().unchecked().run();
    let token = lxc(daemon, &["config", "trust", "add", "--name", &client, "--quiet"]).read()?;
    duct::cmd!("lxc", "remote", "add", remote, token.trim(), "--accept-certificate")
        .stdout_null()
        .run()
        .with_context(|| format!("adding the lxc remote {remote} ({address})"))?;
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
    wait_online(Duration::from_secs(120))
}

/// Wait until every member is listed ONLINE. Members restarted together (a machine that rebooted, a CI machine
/// started from this disk) answer `waitready` before their first heartbeats: until then the cluster lists them
/// OFFLINE with "No heartbeat for ..." (seen failing CI after 10 s).
fn wait_online(limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let online = members_online();
        if online.len() == MEMBERS.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the cluster has {} of {} members online after {limit:?}: {online:?} (see /var/log/gbo/cluster-*.log)",
                online.len(),
                MEMBERS.len()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The test image of the main daemon, imported once into the cluster (re-imported when the main one was rebuilt).
async fn import_test_image(daemon: &str) -> anyhow::Result<()> {
    let alias = crate::lxd_up::TEST_IMAGE_ALIAS;
    let main = lxd_client::Client::local()?;
    let image = main.image_by_alias(alias).await?.with_context(|| {
        format!("the main daemon has no {alias}: run `cargo xtask lxd-up` first (the cluster gets a copy of it)")
    })?;
    let have = lxc(daemon, &["image", "list", "--format", "csv", "-c", "f", &image.fingerprint[..12]]).read()?;
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
    let _ = lxc(daemon, &["image", "alias", "delete", alias]).stdout_null().stderr_null().unchecked().run();
    lxc(daemon, &["image", "import", &file_s, "--alias", alias])
        .stdout_null()
        .run()
        .context("importing the test image")?;
    Ok(())
}

/// `down`: stop every member by its own `LXD_DIR` and remove the state.
pub fn down() -> anyhow::Result<()> {
    for remote in [CLUSTER_REMOTE, SOLO_REMOTE] {
        let _ = duct::cmd!("lxc", "remote", "remove", remote).stdout_null().stderr_null().unchecked().run();
    }
    for (name, _) in daemons() {
        if answers(name) {
            // Instances are stopped by the daemon on shutdown; tests leave none behind.
            let _ = duct::cmd!("lxd", "shutdown", "--timeout", "60").env("LXD_DIR", member_dir(name)).unchecked().run();
        }
    }
    if Path::new(BASE).exists() {
        // The pools' loop files and btrfs mounts go with the state.
        for (name, _) in daemons() {
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
    for (name, address) in daemons() {
        println!("{name} {address} {}", if answers(name) { "answers" } else { "down" });
    }
    println!("online: {:?}", members_online());
    Ok(())
}

/// Remove the instances tests left on the cluster and the standalone daemon (names `gbot-*`), then their custom
/// volumes that nothing uses any more (each deleted on the member that holds it), when the daemons are up.
pub fn clean() {
    for daemon in [MEMBERS[0].0, SOLO.0] {
        if !answers(daemon) {
            continue;
        }
        let names =
            lxc(daemon, &["list", "--format", "csv", "-c", "n"]).stderr_null().unchecked().read().unwrap_or_default();
        for name in names.lines().filter(|n| n.starts_with(crate::lxd_up::TEST_PREFIX)) {
            let _ = lxc(daemon, &["delete", "--force", name]).stdout_null().stderr_null().unchecked().run();
            eprintln!("clean: removed leftover instance {name} on {daemon}");
        }
        for (pool, volume, member) in leftover_volumes(daemon) {
            let mut args = vec!["storage", "volume", "delete", pool.as_str(), volume.as_str()];
            if !member.is_empty() {
                args.extend(["--target", member.as_str()]);
            }
            match lxc(daemon, &args).stdout_null().stderr_capture().unchecked().run() {
                Ok(out) if out.status.success() => {
                    eprintln!(
                        "clean: removed leftover volume {pool}/{volume} on {}",
                        if member.is_empty() { daemon } else { &member }
                    )
                }
                Ok(out) => eprintln!(
                    "clean: could not remove volume {pool}/{volume}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("clean: could not remove volume {pool}/{volume}: {e}"),
            }
        }
    }
}

/// The custom volumes named `gbot-*` that no instance uses, on every pool a daemon sees: (pool, volume, member; the
/// member empty off a cluster).
fn leftover_volumes(daemon: &str) -> Vec<(String, String, String)> {
    let read = |args: &[&str]| -> Vec<serde_json::Value> {
        let text = lxc(daemon, args).stderr_null().unchecked().read().unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_default()
    };
    let field = |v: &serde_json::Value, key: &str| v.get(key).and_then(|s| s.as_str()).unwrap_or_default().to_string();
    let mut out = Vec::new();
    for pool in read(&["storage", "list", "--format", "json"]) {
        let pool = field(&pool, "name");
        for volume in read(&["storage", "volume", "list", pool.as_str(), "--format", "json"]) {
            let unused = volume.get("used_by").and_then(|u| u.as_array()).is_none_or(|u| u.is_empty());
            let name = field(&volume, "name");
            if field(&volume, "type") == "custom" && name.starts_with(crate::lxd_up::TEST_PREFIX) && unused {
                out.push((pool.clone(), name, field(&volume, "location")));
            }
        }
    }
    out
}
