//! `cargo xtask test` (the README's test command) and `cargo xtask up` (the README's main job).

use std::time::Instant;

use anyhow::Context;
use gbo_tests::programs::{self, Need};

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

/// `cargo xtask lint`: every gate, each timed; the first failure stops with its own output on the terminal.
pub fn lint() -> anyhow::Result<()> {
    let mut phases = Phases::new();
    duct::cmd!("cargo", "fmt", "--all", "--check").run().context("formatting differs: run `cargo fmt --all`")?;
    phases.done("fmt --check");
    duct::cmd!("cargo", "clippy", "--workspace", "--all-targets", "--quiet", "--", "-D", "warnings")
        .run()
        .context("clippy found problems")?;
    phases.done("clippy -D warnings");
    duct::cmd!("cargo", "doc", "--workspace", "--no-deps", "--quiet")
        .env("RUSTDOCFLAGS", "-D warnings")
        .run()
        .context("rustdoc found problems")?;
    phases.done("doc -D warnings");
    phases.summary();
    Ok(())
}

/// The whole test suite.
pub async fn test(args: Vec<String>) -> anyhow::Result<()> {
    let mut phases = Phases::new();
    crate::lxd_up::apt_install(&programs::packages(Need::Tests))?;
    phases.done("install packages");
    crate::lxd_up::run(crate::lxd_up::Args { no_image: false, pool_size: "24GiB".into() }).await?;
    phases.done("lxd-up and test image");
    // The cluster and standalone daemons beside the main one (the cluster, backup and storage tests use them).
    crate::cluster::up().await?;
    phases.done("lxd-cluster up");
    crate::lxd_up::clean().await?;
    crate::cluster::clean();
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
    // Tests clean up by starting `lxc delete --force` as they end, without waiting for it; let the last ones finish,
    // so what `clean` then finds is really left behind.
    wait_for_lxc_processes(std::time::Duration::from_secs(60)).await;
    crate::lxd_up::clean().await?;
    crate::cluster::clean();
    phases.done("clean up");
    phases.summary();
    if !status.success() {
        anyhow::bail!("tests failed");
    }
    Ok(())
}

/// Where the main job installs `gbo` and `gbo-ci` (on root's and every user's PATH).
pub const INSTALL_DIR: &str = "/usr/local/bin";

/// Copy `binary` into `dir` under its own name, replacing an older one atomically (a copy beside it, renamed over
/// it), so a `gbo` running from there meanwhile keeps its old file.
fn install_binary(binary: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let name = binary.file_name().context("binary name")?;
    let staged = dir.join(format!(".{}.new-{}", name.to_string_lossy(), std::process::id()));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::copy(binary, &staged).with_context(|| format!("copying {} to {}", binary.display(), staged.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&staged, dir.join(name)).with_context(|| format!("installing {}", dir.join(name).display()))?;
    Ok(())
}

/// The main job.
pub async fn up(tenant: String) -> anyhow::Result<()> {
    let mut phases = Phases::new();
    crate::lxd_up::apt_install(&programs::packages(Need::Lxd))?;
    crate::lxd_up::ensure_daemon().await?;
    phases.done("lxd");
    // Release builds of both CLIs, installed where a new user's shell finds them (the README's "Using gbo").
    duct::cmd!("cargo", "build", "-q", "--release", "--locked", "-p", "gbo-cli", "-p", "gbo-ci")
        .run()
        .context("building gbo and gbo-ci")?;
    let release = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release");
    for name in ["gbo", "gbo-ci"] {
        install_binary(&release.join(name), std::path::Path::new(INSTALL_DIR))?;
    }
    let gbo = std::path::Path::new(INSTALL_DIR).join("gbo");
    phases.done("build and install gbo, gbo-ci");
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
/// load; rather than let every later test run into its timeout, save a goroutine dump (from the daemon's pprof
/// listener on loopback), show the goroutines blocked for minutes, and restart it. Running containers survive a
/// daemon restart. The tests that were in flight fail, so the run still fails: this keeps the failure short and
/// diagnosable, it does not hide it.
async fn watchdog() {
    let mut silent = 0u32;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(15)).await;
        let answered = match lxd_client::Client::local() {
            Ok(lxd) => tokio::time::timeout(std::time::Duration::from_secs(20), lxd.server_fresh())
                .await
                .map(|r| r.is_ok())
                .unwrap_or(false),
            Err(_) => false,
        };
        silent = if answered { 0 } else { silent + 1 };
        if silent < 3 {
            continue;
        }
        silent = 0;
        eprintln!("==> watchdog: LXD has not answered GET /1.0 for a minute; saving its goroutines and restarting it");
        match goroutine_dump() {
            Ok(dump) => {
                let path = format!("/var/log/gbo/lxd-goroutines-{}.txt", std::process::id());
                let _ = std::fs::write(&path, &dump);
                let stuck: Vec<&str> = dump.split("\n\n").filter(|g| g.contains("minutes]")).take(12).collect();
                eprintln!("==> watchdog: full dump in {path}; goroutines blocked for minutes:\n{}", stuck.join("\n\n"));
            }
            Err(e) => eprintln!("==> watchdog: no goroutine dump: {e}"),
        }
        // The main daemon only (by its own command line): the cluster members of `lxd-cluster` run beside it.
        let _ = duct::cmd!("pkill", "-9", "-f", "^lxd --group root --logfile /var/log/gbo/lxd.log$").unchecked().run();
        if let Err(e) = crate::lxd_up::ensure_daemon().await {
            eprintln!("==> watchdog: restarting LXD failed: {e:#}");
        }
    }
}

/// `GET /debug/pprof/goroutine?debug=2` from the daemon's debug listener (plain HTTP on loopback).
fn goroutine_dump() -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(crate::lxd_up::DEBUG_ADDRESS)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    stream.write_all(b"GET /debug/pprof/goroutine?debug=2 HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

/// Wait (up to `limit`) until no `lxc` process runs on this machine.
async fn wait_for_lxc_processes(limit: std::time::Duration) {
    let running = || {
        std::fs::read_dir("/proc")
            .map(|entries| {
                entries.flatten().any(|entry| {
                    std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|comm| comm.trim() == "lxc")
                })
            })
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + limit;
    while running() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
