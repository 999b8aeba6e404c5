//! `cargo xtask bench backup`: `gbo backup create` of a tenant whose tables container holds a table of
//! `GBO_BENCH_BACKUP_MB` MiB (default 1024), side by side on the same daemon in one run with the hand methods an
//! operator has: (a) the issue's hand method, `lxc export` of the container plus `tar czf` of the stack dir (the
//! export does not hold the host directories mounted into it); (b) Debian's `restic backup` of the stack dir into a
//! repository of its own, made consistent the way gbo makes it (`CHECKPOINT`, `lxc pause`, back up, `lxc start`).
//! Each runs twice: a first (full) run, then a second after 1% of the table's rows (a contiguous range) were
//! updated. Time and bytes added to the destination are reported. Then both restores from scratch (container and
//! host data gone): `gbo backup restore` (health and recorded rows checked) vs `lxc import` + `tar xzf` + `lxc
//! start` until PostgreSQL answers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::install::{ensure_image, gbo_bin, lxc, run_gbo, IMAGE};
use super::report::stamp;

const RESTIC: &str = "/usr/bin/restic";

fn delete_tenant(tenant: &str) {
    let _ = lxc(&["delete", "--force", &format!("{tenant}-tables")]);
}

/// Run `sql` as postgres on `botserver` inside `container`; its unaligned output.
fn psql(container: &str, sql: &str) -> anyhow::Result<String> {
    let argv =
        ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", "botserver"];
    let mut args = vec!["exec", container, "--cwd", "/tmp", "--"];
    args.extend(argv);
    args.extend(["-c", sql]);
    lxc(&args)
}

/// Bytes of every file below `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() { dir_bytes(&entry.path()) } else { meta.len() };
    }
    total
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Rows of the benchmark's table (an error while PostgreSQL is not up).
fn count_rows(container: &str) -> anyhow::Result<u64> {
    psql(container, "SELECT count(*) FROM gbot_bench")?.trim().parse().context("row count")
}

fn run_tool(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(program).args(args).output().with_context(|| program.to_string())?;
    anyhow::ensure!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// One measured run: time and bytes added to its destination.
#[derive(Clone, Copy, Default)]
struct Measured {
    time: Duration,
    added: u64,
}

fn measure(dest: &Path, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Measured> {
    let before = dir_bytes(dest);
    let start = Instant::now();
    f()?;
    let time = start.elapsed();
    Ok(Measured { time, added: dir_bytes(dest).saturating_sub(before) })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

struct Results {
    gbo: [Measured; 2],
    restic: [Measured; 2],
    export: [Measured; 2],
    gbo_restore: Duration,
    hand_restore: Duration,
}

fn measure_all(tenant: &str, dir: &Path, mib_size: u64) -> anyhow::Result<Results> {
    let container = format!("{tenant}-tables");
    let stack = dir.join("stack");
    let stack_text = stack.display().to_string();
    run_gbo(&strings(&["install", "--tenant", tenant, "--image", IMAGE, "--stack-dir", &stack_text, "tables"]))
        .context("gbo install")?;
    let rows = mib_size * 1000;
    // Rows of random hex (about 2:1 compressible, like real text), so sizes are not a compressor's best case. The
    // application's table, owned by its role as if the application had made it (gbo's restore checks that the
    // application role can use every table it restores).
    psql(
        &container,
        &format!(
            "CREATE TABLE gbot_bench AS SELECT g, (SELECT string_agg(md5(random()::text || g || i), '') \
             FROM generate_series(1, 32) i) AS pad FROM generate_series(1, {rows}) g; \
             ALTER TABLE gbot_bench OWNER TO gbuser"
        ),
    )?;
    // A table that has lived a while: vacuumed and frozen, so the first read after the bulk load (hint bits) and
    // autovacuum (all-visible marks) do not rewrite every page between the two runs and count as the 1% change.
    psql(&container, "VACUUM (FREEZE, ANALYZE) gbot_bench")?;
    psql(&container, "CHECKPOINT")?;
    let password = dir.join("password");
    std::fs::write(&password, "bench password\n")?;
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let pw = password.display().to_string();
    let gbo_repo = dir.join("gbo-repo");
    let restic_repo = dir.join("restic-repo");
    let exports = dir.join("exports");
    std::fs::create_dir_all(&exports)?;
    run_tool(RESTIC, &["-q", "-r", &restic_repo.display().to_string(), "--password-file", &pw, "init"])?;
    std::fs::create_dir_all(&gbo_repo)?;

    let mut results = Results {
        gbo: Default::default(),
        restic: Default::default(),
        export: Default::default(),
        gbo_restore: Duration::ZERO,
        hand_restore: Duration::ZERO,
    };
    for round in 0..2 {
        if round == 1 {
            // 1% of the rows, a contiguous range (what an application's recent activity touches).
            psql(&container, &format!("UPDATE gbot_bench SET pad = md5(pad) WHERE g <= {}", rows / 100))?;
        }
        let gbo_repo_text = gbo_repo.display().to_string();
        let gbo_args: Vec<String> =
            ["backup", "create", "--tenant", tenant, "--repo", &gbo_repo_text, "--password-file", &pw]
                .iter()
                .map(|s| s.to_string())
                .collect();
        results.gbo[round] = measure(&gbo_repo, || run_gbo(&gbo_args).map(|_| ()))?;
        // restic by hand, consistent the way gbo is: CHECKPOINT, freeze, back up the stack dir, thaw.
        results.restic[round] = measure(&restic_repo, || {
            psql(&container, "CHECKPOINT")?;
            lxc(&["pause", &container])?;
            let backed = run_tool(
                RESTIC,
                &["-q", "-r", &restic_repo.display().to_string(), "--password-file", &pw, "backup", &stack_text],
            );
            lxc(&["start", &container])?;
            backed
        })?;
        // By hand: the container exported (rootfs and config), the stack dir's host data beside it.
        results.export[round] = measure(&exports, || {
            psql(&container, "CHECKPOINT")?;
            lxc(&["pause", &container])?;
            let exported =
                lxc(&["export", &container, &exports.join(format!("tables-{round}.tar.gz")).display().to_string()])
                    .map(|_| ())
                    .and_then(|()| {
                        run_tool(
                            "tar",
                            &[
                                "czf",
                                &exports.join(format!("stack-{round}.tar.gz")).display().to_string(),
                                "-C",
                                &stack_text,
                                ".",
                            ],
                        )
                    });
            lxc(&["start", &container])?;
            exported
        })?;
    }
    // Restores from scratch: the tenant's container and host data gone, then each method brings it back.
    let gbo_repo_text = gbo_repo.display().to_string();
    run_gbo(&strings(&["uninstall", "--tenant", tenant, "tables", "--purge", "--yes"]))?;
    let start = Instant::now();
    run_gbo(&strings(&[
        "backup",
        "restore",
        "--tenant",
        tenant,
        "--repo",
        &gbo_repo_text,
        "--password-file",
        &pw,
        "--image",
        IMAGE,
    ]))
    .context("gbo backup restore")?;
    results.gbo_restore = start.elapsed();
    anyhow::ensure!(count_rows(&container)? == rows, "gbo's restore holds {rows} rows");
    lxc(&["delete", "--force", &container])?;
    std::fs::remove_dir_all(&stack)?;
    let start = Instant::now();
    std::fs::create_dir_all(&stack)?;
    run_tool("tar", &["xzf", &exports.join("stack-1.tar.gz").display().to_string(), "-C", &stack_text])?;
    lxc(&["import", &exports.join("tables-1.tar.gz").display().to_string()])?;
    lxc(&["start", &container])?;
    while count_rows(&container).is_err() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(600), "the imported {container} never answered");
        std::thread::sleep(Duration::from_millis(200));
    }
    results.hand_restore = start.elapsed();
    anyhow::ensure!(count_rows(&container)? == rows, "the hand restore holds {rows} rows");
    Ok(results)
}

/// Run the benchmark and return its markdown section.
pub async fn run() -> anyhow::Result<String> {
    duct::cmd!("cargo", "build", "-q", "--release", "-p", "gbo-cli").run().context("building gbo (release)")?;
    ensure_image()?;
    anyhow::ensure!(gbo_bin().exists(), "{} missing", gbo_bin().display());
    anyhow::ensure!(Path::new(RESTIC).exists(), "{RESTIC} missing: apt-get install restic");
    let size: u64 = std::env::var("GBO_BENCH_BACKUP_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    let pid = std::process::id();
    let tenant = format!("gbot-bb{pid}");
    let dir: PathBuf = std::env::temp_dir().join(format!("gbot-benchb-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let load_before = loadavg();
    let result = tokio::task::block_in_place(|| measure_all(&tenant, &dir, size));
    let load_after = loadavg();
    delete_tenant(&tenant);
    let _ = std::fs::remove_dir_all(&dir);
    let r = result?;

    let ratio = |hand: Duration, ours: Duration| hand.as_secs_f64() / ours.as_secs_f64().max(1e-9);
    let mut md = String::new();
    md.push_str("## backup\n\n");
    md.push_str(&stamp());
    md.push_str(&format!(
        "\n`gbo backup create` of a tenant (tables) holding a {size} MiB table (loaded, then `VACUUM (FREEZE)` as a table that has lived a while), beside the hand methods, on the same \
         daemon in one run; the second run after 1% of the rows (a contiguous range) were updated. Load average \
         {load_before} before and {load_after} after (other engineers' builds and tests ran meanwhile).\n\n"
    ));
    md.push_str("| method | first run | added | second run | added | time: hand / gbo (1st, 2nd) |\n");
    md.push_str("|---|---|---|---|---|---|\n");
    md.push_str(&format!(
        "| `gbo backup create` (lock + row record, CHECKPOINT, freeze, rustic) | {} | {} | {} | {} | 1, 1 |\n",
        secs(r.gbo[0].time),
        mib(r.gbo[0].added),
        secs(r.gbo[1].time),
        mib(r.gbo[1].added)
    ));
    md.push_str(&format!(
        "| `restic backup` of the stack dir (CHECKPOINT, `lxc pause`, restic 0.14, `lxc start`) | {} | {} | {} | {} | {:.2}, {:.2} |\n",
        secs(r.restic[0].time),
        mib(r.restic[0].added),
        secs(r.restic[1].time),
        mib(r.restic[1].added),
        ratio(r.restic[0].time, r.gbo[0].time),
        ratio(r.restic[1].time, r.gbo[1].time)
    ));
    md.push_str(&format!(
        "| by hand: `lxc export` of the container + `tar czf` of the stack dir (CHECKPOINT, `lxc pause`, `lxc start`) | {} | {} | {} | {} | {:.2}, {:.2} |\n",
        secs(r.export[0].time),
        mib(r.export[0].added),
        secs(r.export[1].time),
        mib(r.export[1].added),
        ratio(r.export[0].time, r.gbo[0].time),
        ratio(r.export[1].time, r.gbo[1].time)
    ));
    let full_ok = r.gbo[0].time <= r.export[0].time;
    let incr_ratio = ratio(r.export[1].time, r.gbo[1].time);
    let incr_share = 100.0 * r.gbo[1].added as f64 / (r.gbo[0].added.max(1)) as f64;
    md.push_str(&format!(
        "\nTargets (against the hand method): full backup no slower: {}; second backup at least 10x faster: {incr_ratio:.1}x, {}; \
         second backup under 5% of the full size: {incr_share:.1}%, {}.\n",
        if full_ok { "met" } else { "not met" },
        if incr_ratio >= 10.0 { "met" } else { "not met" },
        if incr_share < 5.0 { "met" } else { "not met" },
    ));
    md.push_str(&format!(
        "\n| restore from scratch (container and host data gone) | time |\n|---|---|\n\
         | `gbo backup restore` (plan, install, data, health, recorded rows checked) | {} |\n\
         | by hand: `tar xzf` of the stack dir, `lxc import`, `lxc start`, until PostgreSQL answers | {} |\n\
         | ratio (hand / gbo) | {:.2}x |\n",
        secs(r.gbo_restore),
        secs(r.hand_restore),
        ratio(r.hand_restore, r.gbo_restore)
    ));
    md.push_str(&format!(
        "\n- gbo's second run took {:.2}x the time of its first and added {:.1}% of the first run's bytes; restic's \
         {:.2}x and {:.1}%. The hand method's export is full every time.\n",
        r.gbo[1].time.as_secs_f64() / r.gbo[0].time.as_secs_f64().max(1e-9),
        100.0 * r.gbo[1].added as f64 / (r.gbo[0].added.max(1)) as f64,
        r.restic[1].time.as_secs_f64() / r.restic[0].time.as_secs_f64().max(1e-9),
        100.0 * r.restic[1].added as f64 / (r.restic[0].added.max(1)) as f64,
    ));
    md.push_str(
        "- gbo's run also locks every table IN SHARE MODE and records each table's row count and checksum (read by \
         the restore's check), backs up the tenant's description and secrets, and takes restic-compatible locks; \
         the hand methods do none of these. The export also carries the container's root filesystem, which gbo does not \
         back up (its restore recreates the container from the image and checks it).\n",
    );
    Ok(md)
}
