//! `cargo xtask bench cluster`: on the three-member cluster of `cargo xtask lxd-cluster up` (remote
//! `gbot-cluster`), `gbo install` of tables + cache + proxy placed on m1, m2, m3 versus the same sequential `lxc`
//! script as `bench install` with `--target`; and `gbo move` of tables holding a table of
//! `GBO_BENCH_MOVE_MB` MiB (default 256) versus `lxc stop` + `lxc move --target` + `lxc start` of the same container.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use gbo_components::Role;

use super::install::{lxc, lxc_script_on, run_gbo};
use super::report::{ms, ratio, stamp, Samples};

const REMOTE: &str = "gbot-cluster";
const IMAGE: &str = "gbo-test/debian-12";
const ROUNDS: usize = 2;
const PLACEMENT: [(Role, &str); 3] = [(Role::Tables, "m1"), (Role::Cache, "m2"), (Role::Proxy, "m3")];

fn delete_tenant(tenant: &str) {
    if let Ok(list) = lxc(&["list", &format!("{REMOTE}:"), "--format", "csv", "-c", "n"]) {
        for name in list.lines().filter(|n| n.starts_with(&format!("{tenant}-"))) {
            let _ = lxc(&["delete", "--force", &format!("{REMOTE}:{name}")]);
        }
    }
}

fn tenant_file(dir: &Path, tenant: &str) -> anyhow::Result<String> {
    let path = dir.join("gbo.toml");
    // Host storage: the members share this machine, and gbo moves containers whose data is in host directories
    // (a cluster's default, volumes on member-local pools, is refused by `gbo move`: the volumes would stay behind).
    let mut text = format!(
        "tenant = \"{tenant}\"\nroles = [\"tables\", \"cache\", \"proxy\"]\nstorage = \"host\"\n\n[placement]\n"
    );
    for (role, member) in PLACEMENT {
        text.push_str(&format!("{role} = \"{member}\"\n"));
    }
    std::fs::write(&path, text)?;
    Ok(path.display().to_string())
}

fn scratch(tag: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("gbot-benchc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn gbo_install(tenant: &str, dir: &Path) -> anyhow::Result<Duration> {
    let file = tenant_file(dir, tenant)?;
    let stack = dir.join("stack").display().to_string();
    let args: Vec<String> = ["--remote", REMOTE, "install", "--file", &file, "--image", IMAGE, "--stack-dir", &stack]
        .iter()
        .map(|s| s.to_string())
        .collect();
    Ok(run_gbo(&args)?.0)
}

/// Fill a table of about `mib` MiB in the tenant's database (inside the container, as the seed's psql would).
fn fill(container: &str, mib: u64) -> anyhow::Result<()> {
    let sql = format!(
        "CREATE TABLE gbot_bench AS SELECT g, repeat(md5(g::text), 32) AS pad FROM generate_series(1, {}) g",
        mib * 1000
    );
    lxc(&[
        "exec",
        &format!("{REMOTE}:{container}"),
        "--cwd",
        "/tmp",
        "--",
        "runuser",
        "-u",
        "postgres",
        "--",
        "psql",
        "-q",
        "-d",
        "botserver",
        "-c",
        &sql,
    ])?;
    Ok(())
}

/// Run the benchmark and return its markdown section.
pub async fn run() -> anyhow::Result<String> {
    duct::cmd!("cargo", "build", "-q", "--release", "-p", "gbo-cli").run().context("building gbo (release)")?;
    crate::cluster::up().await?;
    let mib: u64 = std::env::var("GBO_BENCH_MOVE_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let load_before = load_average();
    let pid = std::process::id();
    let mut gbo_samples = Samples::default();
    let mut lxc_samples = Samples::default();
    let mut move_samples = Samples::default();
    let mut lxc_move_samples = Samples::default();
    for round in 0..ROUNDS {
        let tenant = format!("gbot-bc{pid}-{round}");
        let dir = scratch(&format!("g{round}"))?;
        let result = tokio::task::block_in_place(|| -> anyhow::Result<()> {
            gbo_samples.durations.push(gbo_install(&tenant, &dir)?);
            let tables = format!("{tenant}-tables");
            fill(&tables, mib)?;
            // gbo move m1 -> m2 (snapshot, stop, move, start, health) ...
            let args: Vec<String> = ["--remote", REMOTE, "move", "--tenant", &tenant, "tables", "--to", "m2"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            move_samples.durations.push(run_gbo(&args)?.0);
            // ... and back with lxc alone (stop, move, start: what an operator types).
            let start = Instant::now();
            let target = format!("{REMOTE}:{tables}");
            lxc(&["stop", &target])?;
            lxc(&["move", &target, "--target", "m1"])?;
            lxc(&["start", &target])?;
            lxc_move_samples.durations.push(start.elapsed());
            Ok(())
        });
        delete_tenant(&tenant);
        let _ = std::fs::remove_dir_all(&dir);
        result?;
        let tenant = format!("gbot-bs{pid}-{round}");
        let dir = scratch(&format!("l{round}"))?;
        let start = Instant::now();
        let result = tokio::task::block_in_place(|| {
            lxc_script_on(&tenant, &dir, 42000 + (round as u16) * 10, &format!("{REMOTE}:"), &PLACEMENT)
        });
        lxc_samples.durations.push(start.elapsed());
        delete_tenant(&tenant);
        let _ = std::fs::remove_dir_all(&dir);
        result?;
    }
    let (ours, baseline) = (gbo_samples.median(), lxc_samples.median());
    let speedup = ratio(baseline, ours);
    let (moved, lxc_moved) = (move_samples.median(), lxc_move_samples.median());
    let mut md = String::new();
    md.push_str("## gbo on a three-member cluster: install by placement and move\n\n");
    md.push_str(&stamp());
    md.push_str(&format!(
        "\nCluster of `cargo xtask lxd-cluster up` (m1..m3, one machine), image `{IMAGE}`, {ROUNDS} rounds; tables on m1, \
         cache on m2, proxy on m3.\n\n"
    ));
    md.push_str(&format!(
        "Machine load (1-minute average, `/proc/loadavg`) {load_before} at the start, {} at the end: the machine is \
         shared, both sides ran in the same rounds under the same load.\n\n",
        load_average()
    ));
    md.push_str("| measure | median | samples (ms) | target | met |\n|---|---|---|---|---|\n");
    md.push_str(&format!(
        "| `gbo --remote gbot-cluster install` (placement) | {} | {} | | |\n",
        ms(ours),
        gbo_samples.raw_ms()
    ));
    md.push_str(&format!("| sequential `lxc --target` script | {} | {} | | |\n", ms(baseline), lxc_samples.raw_ms()));
    md.push_str(&format!(
        "| speed-up (lxc / gbo) | {speedup:.2}x | | >= 2x | {} |\n",
        if speedup >= 2.0 { "yes" } else { "no" }
    ));
    md.push_str(&format!(
        "| `gbo move` tables m1 -> m2 ({mib} MiB table) | {} | {} | | |\n",
        ms(moved),
        move_samples.raw_ms()
    ));
    md.push_str(&format!(
        "| `lxc stop` + `lxc move --target` + `lxc start` back | {} | {} | | |\n",
        ms(lxc_moved),
        lxc_move_samples.raw_ms()
    ));
    md.push_str(&format!(
        "| gbo's extra cost of a move | {} | | the data snapshot | |\n",
        ms(moved.saturating_sub(lxc_moved))
    ));
    md.push_str(
        "\ngbo's move adds, over the `lxc` commands, the data-inclusive snapshot taken first (the container snapshot \
         plus a copy of the tenant's host data directories, where the table lives in host storage mode) and the \
         protocol health check after the start. LXD's own move copies only the container's root volume.\n",
    );
    Ok(md)
}

/// The 1-minute load average of the machine.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
