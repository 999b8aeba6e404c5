//! The daemons of the test rig beside the main one (`cargo xtask lxd-cluster up`: members `m1`..`m3` and the
//! standalone `solo`, each with its own `LXD_DIR` under [`BASE`]): starting one the way the rig does, waiting for it,
//! stopping it the way a host shutdown does, and the lease that keeps the one test allowed to stop `solo` (the
//! reboot test) from doing so while another test uses it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::Run;

/// Where the rig's daemons keep their `LXD_DIR`s.
pub const BASE: &str = "/var/lib/gbo-cluster";

/// The standalone daemon ("another host").
pub const SOLO: &str = "solo";

/// The standalone daemon's unix socket (gbo uses it through `LXD_SOCKET`).
pub const SOLO_SOCKET: &str = "/var/lib/gbo-cluster/solo/unix.socket";

/// A rig daemon's `LXD_DIR`.
pub fn member_dir(name: &str) -> PathBuf {
    Path::new(BASE).join(name)
}

/// Start the daemon `name` (its `LXD_DIR` under [`BASE`]) detached in a session of its own, logging to
/// `/var/log/gbo/cluster-<name>.log` (stderr beside it): how `lxd-cluster up` starts a member, and how a host's init
/// starts LXD after a reboot. Returns once it is forked; [`wait_ready`] waits for it.
pub fn start_daemon(name: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = member_dir(name);
    std::fs::create_dir_all(&dir)?;
    // LXD needs to traverse its own directory as other users (its forked helpers).
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    std::fs::set_permissions(BASE, std::fs::Permissions::from_mode(0o711))?;
    std::fs::create_dir_all("/var/log/gbo")?;
    let log = format!("/var/log/gbo/cluster-{name}.log");
    let stderr =
        std::fs::OpenOptions::new().create(true).append(true).open(format!("/var/log/gbo/cluster-{name}.stderr"))?;
    duct::cmd!("setsid", "--fork", "lxd", "--group", "root", "--logfile", &log)
        .env("LXD_DIR", &dir)
        .stdin_null()
        .stdout_null()
        .stderr_file(stderr)
        .run()
        .with_context(|| format!("starting the rig daemon {name}"))?;
    Ok(())
}

/// Whether the daemon `name` answers (`lxd waitready` within 2 s).
pub fn answers(name: &str) -> bool {
    duct::cmd!("lxd", "waitready", "--timeout", "2")
        .env("LXD_DIR", member_dir(name))
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Wait until the daemon `name` answers, at most `limit`.
pub fn wait_ready(name: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if answers(name) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    anyhow::bail!("rig daemon {name} (LXD_DIR={}) did not become ready in {limit:?}", member_dir(name).display())
}

/// `lxd shutdown` of the daemon `name`: what a host shutdown does, every instance stopped within its
/// `boot.host_shutdown_timeout`, then the daemon exits. Waits at most `limit`.
pub fn shutdown_daemon(name: &str, limit: Duration) -> anyhow::Result<()> {
    let out = duct::cmd!("lxd", "shutdown", "--timeout", limit.as_secs().to_string())
        .env("LXD_DIR", member_dir(name))
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .with_context(|| format!("lxd shutdown of {name}"))?;
    anyhow::ensure!(
        out.status.success(),
        "lxd shutdown of {name} (LXD_DIR={}): {}",
        member_dir(name).display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The `lxc` CLI against the daemon `name` (by its `LXD_DIR`), whatever its exit.
pub fn lxc_on(name: &str, args: &[&str]) -> Run {
    Run::of(
        std::process::Command::new("lxc")
            .args(args)
            .env("LXD_DIR", member_dir(name))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("the lxc CLI is needed (cargo xtask lxd-up)"),
    )
}

/// Started again (and waited for) when dropped unless it answers: whatever a test that stops a rig daemon does
/// (panics included), the daemon is left running for the other tests.
pub struct RestartOnDrop(pub &'static str);

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if answers(self.0) {
            return;
        }
        if let Err(e) = start_daemon(self.0).and_then(|()| wait_ready(self.0, Duration::from_secs(120))) {
            eprintln!("restarting the rig daemon {} failed: {e:#}", self.0);
        }
    }
}

/// A lease on `solo` across test processes (a `flock` on `/run/gbo-test-solo.lock`, dropped by the kernel when
/// its holder dies): tests that use solo hold it shared for as long as they use it; the reboot test holds it
/// exclusively while the daemon is down, so it never stops solo under another test of the suite.
pub struct SoloLease {
    /// Held, never read: the lease lasts as long as the open file.
    _held: std::fs::File,
}

impl SoloLease {
    const PATH: &'static str = "/run/gbo-test-solo.lock";
    const WAIT: Duration = Duration::from_secs(600);

    fn take(exclusive: bool) -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(Self::PATH)
            .unwrap_or_else(|e| panic!("opening {}: {e}", Self::PATH));
        let deadline = Instant::now() + Self::WAIT;
        loop {
            let tried = if exclusive { file.try_lock() } else { file.try_lock_shared() };
            match tried {
                Ok(()) => return Self { _held: file },
                Err(std::fs::TryLockError::WouldBlock) => {
                    assert!(
                        Instant::now() < deadline,
                        "{} held by another test process for {:?}",
                        Self::PATH,
                        Self::WAIT
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(std::fs::TryLockError::Error(e)) => panic!("locking {}: {e}", Self::PATH),
            }
        }
    }

    /// Use solo: it stays up while this is held (blocking; call it before the first request to solo).
    pub fn shared() -> Self {
        Self::take(false)
    }

    /// Stop solo: no other test of the suite uses it while this is held (blocking).
    pub fn exclusive() -> Self {
        Self::take(true)
    }
}

/// Deletes a tenant's containers and custom volumes (`<tenant>-*`, on a cluster each on its member) on the daemon of
/// `lxd_dir` when dropped, so a failed test leaves nothing there (`/var/lib/lxd` for the main daemon, [`member_dir`] for the rig's).
pub struct TenantCleanup {
    /// The daemon's `LXD_DIR`.
    pub lxd_dir: PathBuf,
    /// The tenant.
    pub tenant: String,
}

impl Drop for TenantCleanup {
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
        // On a cluster each volume of a member-local pool is deleted on its own member (`--target`); a standalone
        // daemon has no location column.
        let clustered = !lxc(&["cluster", "list", "--format", "csv"]).trim().is_empty();
        let pools = lxc(&["storage", "list", "--format", "csv"]);
        for pool in pools.lines().filter_map(|l| l.split(',').next()) {
            let columns = if clustered { "tnL" } else { "tn" };
            for line in lxc(&["storage", "volume", "list", pool, "--format", "csv", "-c", columns]).lines() {
                let Some(rest) = line.strip_prefix("custom,") else { continue };
                let (name, member) = rest.split_once(',').unwrap_or((rest, ""));
                if name.starts_with(&prefix) && !name.contains('/') {
                    if member.is_empty() {
                        lxc(&["storage", "volume", "delete", pool, name]);
                    } else {
                        lxc(&["storage", "volume", "delete", pool, name, "--target", member]);
                    }
                }
            }
        }
    }
}

/// An lxc configuration (for `LXD_CONF`) whose remote `gbot-far` is the standalone daemon addressed as
/// `[::ffff:127.0.0.5]`: an IPv4-mapped IPv6 address that `gbo_ops::site` does not take for loopback, so gbo
/// counts it as another machine (the traffic still stays on loopback). Uses root's client certificate and solo's
/// pinned server certificate (`cargo xtask lxd-cluster up` adds remote `gbot-solo`).
pub fn far_remote_conf() -> tempfile::TempDir {
    let conf = tempfile::Builder::new().prefix("gbot-lxc-conf-").tempdir().expect("tempdir");
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
    conf
}
