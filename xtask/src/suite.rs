//! `cargo xtask test` (the README's test command) and `cargo xtask up` (the README's main job).

use std::time::Instant;

use anyhow::Context;

/// Debian packages the test suite uses on the host: the real programs tests run against.
pub const TEST_PACKAGES: &[&str] = &[
    "lxd",
    "lxd-client",
    "debootstrap",
    "btrfs-progs",
    "postgresql",
    "postgresql-client",
    "caddy",
    "openssh-server",
    "openssh-client",
    "fail2ban",
    "iptables",
    "zfs-fuse",
    "git",
    "python3",
];

struct Phases {
    start: Instant,
    last: Instant,
    rows: Vec<(String, f64)>,
}

impl Phases {
    fn new() -> Self {
        let now = Instant::now();
        Self { start: now, last: now, rows: Vec::new() }
    }

    fn done(&mut self, name: &str) {
        let secs = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        eprintln!("==> phase `{name}` took {secs:.1} s (total {:.1} s)", self.start.elapsed().as_secs_f64());
        self.rows.push((name.to_string(), secs));
    }

    fn summary(&self) {
        eprintln!("==> timings per phase:");
        for (name, secs) in &self.rows {
            eprintln!("    {name:<24} {secs:>8.1} s");
        }
        eprintln!("    {:<24} {:>8.1} s", "total", self.start.elapsed().as_secs_f64());
    }
}

/// The whole test suite.
pub async fn test(args: Vec<String>) -> anyhow::Result<()> {
    let mut phases = Phases::new();
    crate::lxd_up::apt_install(TEST_PACKAGES)?;
    phases.done("install packages");
    crate::lxd_up::run(crate::lxd_up::Args { no_image: false, pool_size: "24GiB".into() }).await?;
    phases.done("lxd-up and test image");
    crate::lxd_up::clean().await?;
    phases.done("clean leftovers");
    let nextest = duct::cmd!("cargo", "nextest", "--version").stdout_null().stderr_null().run().is_ok();
    let mut argv: Vec<String> = if nextest {
        let profile = if std::env::var("CI").is_ok() { "ci" } else { "default" };
        vec!["nextest".into(), "run".into(), "--workspace".into(), "--profile".into(), profile.into()]
    } else {
        vec!["test".into(), "--workspace".into()]
    };
    argv.extend(args);
    let runner = tokio::task::spawn_blocking(move || duct::cmd("cargo", &argv).unchecked().run());
    let watchdog = tokio::spawn(watchdog());
    let status = runner.await.context("test runner task")?.context("running cargo")?.status;
    watchdog.abort();
    phases.done("tests");
    crate::lxd_up::clean().await?;
    phases.done("clean up");
    phases.summary();
    if !status.success() {
        anyhow::bail!("tests failed");
    }
    Ok(())
}

/// The main job.
pub async fn up(tenant: String) -> anyhow::Result<()> {
    let mut phases = Phases::new();
    crate::lxd_up::apt_install(&["lxd", "lxd-client", "debootstrap", "btrfs-progs"])?;
    crate::lxd_up::ensure_daemon().await?;
    phases.done("lxd");
    duct::cmd!("cargo", "build", "-q", "-p", "gbo-cli").run().context("building gbo")?;
    let gbo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/gbo");
    phases.done("build gbo");
    duct::cmd!(&gbo, "setup").run().context("gbo setup")?;
    duct::cmd!(&gbo, "image", "build", "--components", "tables,cache,proxy").run().context("gbo image build")?;
    phases.done("image");
    duct::cmd!(&gbo, "install", "--tenant", &tenant, "tables", "cache", "proxy").run().context("gbo install")?;
    phases.done("install");
    duct::cmd!(&gbo, "status", "--tenant", &tenant).run().context("gbo status")?;
    phases.summary();
    Ok(())
}

/// Watch the daemon while tests run. LXD 5.0.2 has been seen to stop answering altogether under concurrent test
/// load; rather than let every later test run into its timeout, take a goroutine dump (SIGQUIT makes Go print
/// every goroutine's stack to the daemon's stderr file), show where it is stuck, and start it again. Running
/// containers survive a daemon restart. The tests that were in flight fail, so the run still fails: this keeps
/// the failure short and diagnosable, it does not hide it.
async fn watchdog() {
    let mut silent = 0u32;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(15)).await;
        let answered = match lxd_client::Client::local() {
            Ok(lxd) => tokio::time::timeout(std::time::Duration::from_secs(20), lxd.server_fresh()).await.map(|r| r.is_ok()).unwrap_or(false),
            Err(_) => false,
        };
        silent = if answered { 0 } else { silent + 1 };
        if silent < 3 {
            continue;
        }
        silent = 0;
        eprintln!("==> watchdog: LXD has not answered GET /1.0 for a minute; dumping its goroutines and restarting it");
        let before = std::fs::metadata("/var/log/gbo/lxd.stderr").map(|m| m.len()).unwrap_or(0);
        let _ = duct::cmd!("pkill", "-QUIT", "-f", "^lxd --group").unchecked().run();
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        if let Ok(dump) = std::fs::read("/var/log/gbo/lxd.stderr") {
            let dump = String::from_utf8_lossy(&dump[(before as usize).min(dump.len())..]).into_owned();
            // The interesting goroutines are the ones waiting on locks for minutes.
            let stuck: Vec<&str> = dump.split("\n\n").filter(|g| g.contains("minutes]")).take(15).collect();
            eprintln!("==> watchdog: {} goroutines blocked for minutes; the first ones:\n{}", stuck.len(), stuck.join("\n\n"));
        }
        let _ = duct::cmd!("pkill", "-9", "-f", "^lxd --group").unchecked().run();
        if let Err(e) = crate::lxd_up::ensure_daemon().await {
            eprintln!("==> watchdog: restarting LXD failed: {e:#}");
        }
    }
}
