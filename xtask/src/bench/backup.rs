//! `cargo xtask bench backup`: `gbo backup create` of a tenant whose tables container holds a table of
//! `GBO_BENCH_BACKUP_MB` MiB (default 256), side by side on the same daemon in one run with the hand methods an
//! operator has: (a) Debian's `restic backup` of the stack dir into a repository of its own, made consistent the
//! way gbo makes it (`CHECKPOINT`, `lxc pause`, back up, `lxc start`); (b) the runbook's `pg_dump botserver >
//! backup.sql` (seeds: "Container → Local") plus `tar czf` of the stack dir's other host directories. Each runs
//! twice: a first (full) run, then a second after 1% of the table's rows (a contiguous range) were updated. Time and
//! bytes added to the destination are reported.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::install::{gbo_bin, lxc, run_gbo};
use super::report::stamp;

const IMAGE: &str = "gbo-test/debian-12";
const RESTIC: &str = "/usr/bin/restic";

fn delete_tenant(tenant: &str) {
    let _ = lxc(&["delete", "--force", &format!("{tenant}-tables")]);
}

fn psql(container: &str, sql: &str) -> anyhow::Result<()> {
    lxc(&[
        "exec",
        container,
        "--cwd",
        "/tmp",
        "--",
        "runuser",
        "-u",
        "postgres",
        "--",
        "psql",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        "botserver",
        "-c",
        sql,
    ])?;
    Ok(())
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
    dump: [Measured; 2],
}

fn measure_all(tenant: &str, dir: &Path, mib_size: u64) -> anyhow::Result<Results> {
    let container = format!("{tenant}-tables");
    let stack = dir.join("stack");
    let stack_text = stack.display().to_string();
    let args: Vec<String> = ["install", "--tenant", tenant, "--image", IMAGE, "--stack-dir", &stack_text, "tables"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    run_gbo(&args).context("gbo install")?;
    let rows = mib_size * 1000;
    psql(
        &container,
        &format!(
            "CREATE TABLE gbot_bench AS SELECT g, repeat(md5(g::text), 32) AS pad FROM generate_series(1, {rows}) g"
        ),
    )?;
    let password = dir.join("password");
    std::fs::write(&password, "bench password\n")?;
    std::fs::set_permissions(&password, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let pw = password.display().to_string();
    let gbo_repo = dir.join("gbo-repo");
    let restic_repo = dir.join("restic-repo");
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps)?;
    run_tool(RESTIC, &["-q", "-r", &restic_repo.display().to_string(), "--password-file", &pw, "init"])?;
    std::fs::create_dir_all(&gbo_repo)?;

    let mut results = Results { gbo: Default::default(), restic: Default::default(), dump: Default::default() };
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
        // The runbook: pg_dump of the database, tar czf of the other host directories.
        results.dump[round] = measure(&dumps, || {
            let sql = std::fs::File::create(dumps.join(format!("backup-{round}.sql")))?;
            let out = std::process::Command::new("lxc")
                .args([
                    "exec",
                    &container,
                    "--cwd",
                    "/tmp",
                    "--",
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    "pg_dump",
                    "botserver",
                ])
                .stdout(sql)
                .output()?;
            anyhow::ensure!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
            run_tool(
                "tar",
                &[
                    "czf",
                    &dumps.join(format!("stack-{round}.tar.gz")).display().to_string(),
                    "--exclude=./tables/data/pgdata",
                    "-C",
                    &stack_text,
                    ".",
                ],
            )
        })?;
    }
    Ok(results)
}

/// Run the benchmark and return its markdown section.
pub async fn run() -> anyhow::Result<String> {
    duct::cmd!("cargo", "build", "-q", "--release", "-p", "gbo-cli").run().context("building gbo (release)")?;
    anyhow::ensure!(gbo_bin().exists(), "{} missing", gbo_bin().display());
    anyhow::ensure!(Path::new(RESTIC).exists(), "{RESTIC} missing: apt-get install restic");
    let size: u64 = std::env::var("GBO_BENCH_BACKUP_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
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
        "\n`gbo backup create` of a tenant (tables) holding a {size} MiB table, beside the hand methods, on the same \
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
        "| runbook: `pg_dump botserver > backup.sql` + `tar czf` of the other host dirs | {} | {} | {} | {} | {:.2}, {:.2} |\n",
        secs(r.dump[0].time),
        mib(r.dump[0].added),
        secs(r.dump[1].time),
        mib(r.dump[1].added),
        ratio(r.dump[0].time, r.gbo[0].time),
        ratio(r.dump[1].time, r.gbo[1].time)
    ));
    md.push_str(&format!(
        "\n- gbo's second run took {:.2}x the time of its first and added {:.1}% of the first run's bytes; restic's \
         {:.2}x and {:.1}%. The runbook's dump is full every time.\n",
        r.gbo[1].time.as_secs_f64() / r.gbo[0].time.as_secs_f64().max(1e-9),
        100.0 * r.gbo[1].added as f64 / (r.gbo[0].added.max(1)) as f64,
        r.restic[1].time.as_secs_f64() / r.restic[0].time.as_secs_f64().max(1e-9),
        100.0 * r.restic[1].added as f64 / (r.restic[0].added.max(1)) as f64,
    ));
    md.push_str(
        "- gbo's run also locks every table IN SHARE MODE and records each table's row count and checksum (read by \
         the restore's check), backs up the tenant's description and secrets, and takes restic-compatible locks; \
         the hand methods do none of these. `pg_dump` reads rows (a logical copy; restoring it rebuilds indexes), the \
         others read the data directory's files.\n",
    );
    Ok(md)
}
