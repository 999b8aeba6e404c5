//! `cargo xtask bench client`: lxd-client against the `lxc` CLI on the same daemon, in one run, interleaved:
//! (a) list 20 instances with state, (b) 100 sequential `exec true`, (c) push 200 small files and one 200 MB
//! file, (d) create and start 5 containers. For (a) and (b) the daemon's floor is measured in the same rounds: the
//! leanest request sequence any client can send (`bench/floor.rs`), so lxd-client's own cost shows as its ratio to
//! it. Containers come from the test image, are named `gbot-bench-*` and are removed afterwards.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lxd_client::{Client, CreateInstance, ExecRequest, FileOptions, InstanceName, InstanceSource};

use super::floor::Floor;
use super::report::{ms, ratio, stamp, Samples};

const IMAGE: &str = "gbo-test/debian-12";
const LIST_INSTANCES: usize = 20;
const LIST_ROUNDS: usize = 10;
const EXECS: usize = 100;
const SMALL_FILES: usize = 200;
const BIG_FILE_MIB: u64 = 200;
const PUSH_ROUNDS: usize = 3;
const CREATES: usize = 5;
const CREATE_ROUNDS: usize = 2;

/// Removes every instance it was told about (`lxc delete --force`) when dropped, even on an early error.
struct Cleanup {
    names: Vec<String>,
}

impl Cleanup {
    fn remove_all(&mut self) {
        for chunk in self.names.chunks(10) {
            let _ = Command::new("lxc").arg("delete").arg("--force").args(chunk).output();
        }
        self.names.clear();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.remove_all();
    }
}

fn lxc(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("lxc").args(args).output().context("running lxc")?;
    anyhow::ensure!(out.status.success(), "lxc {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// Peak resident memory of this process (VmHWM), KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Run `lxc` under `/usr/bin/time` and return its peak RSS in KiB (when `time` is installed).
fn lxc_peak_rss_kib(args: &[&str]) -> anyhow::Result<Option<u64>> {
    if !Path::new("/usr/bin/time").exists() {
        lxc(args)?;
        return Ok(None);
    }
    let out = Command::new("/usr/bin/time").args(["-f", "%M", "lxc"]).args(args).output().context("running lxc")?;
    anyhow::ensure!(out.status.success(), "lxc {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stderr).lines().last().and_then(|l| l.trim().parse().ok()))
}

fn name(tag: &str, n: usize) -> anyhow::Result<InstanceName> {
    Ok(InstanceName::new(format!("gbot-bench-{}-{tag}-{n}", std::process::id()))?)
}

/// `ours / floor` within `allowed` (e.g. 1.2).
fn floor_verdict(target: &str, floor: Duration, ours: Duration, allowed: f64, why_missed: &str) -> String {
    let r = ratio(ours, floor);
    if r <= allowed {
        format!("- **{target}: met** ({r:.2}x the floor, target at most {allowed}x).\n")
    } else {
        format!("- **{target}: missed** ({r:.2}x the floor, target at most {allowed}x). {why_missed}\n")
    }
}

fn verdict(target: &str, baseline: Duration, ours: Duration, needed: f64, why_missed: &str) -> String {
    let r = ratio(baseline, ours);
    if r >= needed {
        format!("- **{target}: met** ({r:.2}x, target {needed}x).\n")
    } else {
        format!("- **{target}: missed** by {:.2}x ({r:.2}x against a target of {needed}x). {why_missed}\n", needed / r)
    }
}

/// Run the benchmark and return its markdown section.
pub async fn run() -> anyhow::Result<String> {
    let load_at_start = load_average();
    let lxd = Client::local().context("connect to LXD (run `cargo xtask lxd-up`)")?;
    let lxd_client::Endpoint::Unix(socket) = lxd.endpoint().clone() else {
        anyhow::bail!("the client benchmark runs on the local unix socket");
    };
    let floor = Floor::new(&socket);
    lxd.image_by_alias(IMAGE).await?.with_context(|| format!("image {IMAGE} missing: run `cargo xtask lxd-up`"))?;
    let mut cleanup = Cleanup { names: Vec::new() };
    let mut md = String::new();
    writeln!(md, "## lxd-client vs the `lxc` CLI\n")?;
    md.push_str(&stamp());
    writeln!(
        md,
        "\nSame daemon, one run, interleaved (each round runs the CLI, then the daemon's floor where there is one and \
         the client, taking turns at going first). One `Client` is reused, as a program using the library would; \
         every CLI call is a new `lxc` process. The floor is the leanest request sequence any client can send, spoken with raw hyper and \
         tokio-tungstenite over the unix socket (`xtask/src/bench/floor.rs`): for (a) one `GET \
         /1.0/instances?recursion=2`; for (b) `POST exec`, the control socket then the three data sockets, both \
         outputs read to their end while `/wait` gives the exit code. The machine is shared (2 CPUs, other engineers' \
         builds and tests running): compare ratios taken in the same run, not absolute times across runs.\n"
    )?;

    // Fixture: 20 running containers for (a); the first one also serves (b) and (c).
    eprintln!("bench client: creating {LIST_INSTANCES} containers");
    let mut fixtures = Vec::new();
    for n in 0..LIST_INSTANCES {
        let instance = name("list", n)?;
        cleanup.names.push(instance.to_string());
        lxd.create_instance(&CreateInstance::container(instance.clone(), InstanceSource::alias(IMAGE)).start(true))
            .await?;
        fixtures.push(instance);
    }
    let target = fixtures[0].clone();

    // (a) list with state.
    eprintln!("bench client: (a) list");
    let (mut cli_list, mut full_list, mut light_list) = (Samples::default(), Samples::default(), Samples::default());
    let mut floor_list = Samples::default();
    for round in 0..LIST_ROUNDS {
        cli_list.time(|| async { lxc(&["list", "--format", "csv"]) }).await?;
        for floor_turn in turns(round) {
            if floor_turn {
                floor_list
                    .time(|| async {
                        let listed = floor.list_full().await?;
                        anyhow::ensure!(listed >= LIST_INSTANCES, "listed {listed} instances");
                        Ok(())
                    })
                    .await?;
            } else {
                full_list
                    .time(|| async {
                        let all = lxd.instances_full().await?;
                        anyhow::ensure!(all.len() >= LIST_INSTANCES, "listed {} instances", all.len());
                        Ok(())
                    })
                    .await?;
            }
        }
        light_list
            .time(|| async {
                let all = lxd.instances().await?;
                anyhow::ensure!(all.len() >= LIST_INSTANCES, "listed {} instances", all.len());
                Ok(())
            })
            .await?;
    }

    // (b) 100 sequential exec of `true`: one CLI call, then the floor and the client taking turns at going first.
    eprintln!("bench client: (b) exec");
    let (mut cli_exec, mut our_exec, mut floor_exec) = (Samples::default(), Samples::default(), Samples::default());
    let request = ExecRequest::new(["true"]);
    for round in 0..EXECS {
        cli_exec.time(|| async { lxc(&["exec", target.as_str(), "--", "true"]) }).await?;
        for floor_turn in turns(round) {
            if floor_turn {
                floor_exec
                    .time(|| async {
                        let code = floor.exec(target.as_str(), &["true"]).await?;
                        anyhow::ensure!(code == 0, "exit {code}");
                        Ok(())
                    })
                    .await?;
            } else {
                our_exec
                    .time(|| async {
                        let out = lxd.exec_output(&target, &request).await?;
                        anyhow::ensure!(out.exit_code == 0, "exit {}", out.exit_code);
                        Ok(())
                    })
                    .await?;
            }
        }
    }
    let cli_exec_total: Duration = cli_exec.durations.iter().sum();
    let our_exec_total: Duration = our_exec.durations.iter().sum();
    let floor_exec_total: Duration = floor_exec.durations.iter().sum();

    // (c) files.
    eprintln!("bench client: (c) files");
    let work = std::env::temp_dir().join(format!("gbot-bench-client-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let small_dir = work.join("small");
    std::fs::create_dir_all(&small_dir)?;
    for n in 0..SMALL_FILES {
        std::fs::write(small_dir.join(format!("file-{n:03}.conf")), format!("key_{n} = {}\n", "x".repeat(1000)))?;
    }
    let big = work.join("big.bin");
    write_big_file(&big, BIG_FILE_MIB)?;
    let (mut cli_small, mut our_small, mut cli_big, mut our_big) =
        (Samples::default(), Samples::default(), Samples::default(), Samples::default());
    let mut cli_big_rss = None;
    let mut our_big_rss_growth = 0u64;
    let small_str = small_dir.to_string_lossy().to_string();
    let big_str = big.to_string_lossy().to_string();
    for round in 0..PUSH_ROUNDS {
        let cli_target = format!("{target}/root/cli-{round}/");
        cli_small.time(|| async { lxc(&["file", "push", "-p", "-r", &small_str, &cli_target]) }).await?;
        let ours_target = format!("/root/ours-{round}/small");
        our_small
            .time(|| async {
                let count = lxd.push_dir(&target, &small_dir, &ours_target, FileOptions::root(0o644)).await?;
                anyhow::ensure!(count == SMALL_FILES as u64, "pushed {count}");
                Ok(())
            })
            .await?;
        let cli_big_target = format!("{target}/root/cli-big-{round}.bin");
        let start = Instant::now();
        let rss = lxc_peak_rss_kib(&["file", "push", &big_str, &cli_big_target])?;
        cli_big.durations.push(start.elapsed());
        cli_big_rss = cli_big_rss.max(rss);
        let before = peak_rss_kib();
        our_big
            .time(|| async {
                let file = tokio::fs::File::open(&big).await?;
                lxd.push_file(&target, &format!("/root/ours-big-{round}.bin"), file, FileOptions::root(0o644)).await?;
                Ok(())
            })
            .await?;
        our_big_rss_growth = our_big_rss_growth.max(peak_rss_kib().saturating_sub(before));
        // Keep the container's disk small between rounds (not timed).
        let _ = lxd.exec_output(&target, &ExecRequest::new(["sh", "-c", "rm -rf /root/cli-* /root/ours-*"])).await?;
    }
    let _ = std::fs::remove_dir_all(&work);

    // (d) create and start 5 containers; removed between rounds (not timed).
    eprintln!("bench client: (d) create and start");
    let (mut cli_create, mut our_create, mut our_create_parallel) =
        (Samples::default(), Samples::default(), Samples::default());
    for round in 0..CREATE_ROUNDS {
        let cli_names: Vec<InstanceName> =
            (0..CREATES).map(|n| name(&format!("cli{round}"), n)).collect::<anyhow::Result<_>>()?;
        let seq_names: Vec<InstanceName> =
            (0..CREATES).map(|n| name(&format!("seq{round}"), n)).collect::<anyhow::Result<_>>()?;
        let par_names: Vec<InstanceName> =
            (0..CREATES).map(|n| name(&format!("par{round}"), n)).collect::<anyhow::Result<_>>()?;
        for n in cli_names.iter().chain(&seq_names).chain(&par_names) {
            cleanup.names.push(n.to_string());
        }
        cli_create
            .time(|| async {
                for n in &cli_names {
                    lxc(&["launch", IMAGE, n.as_str()])?;
                }
                Ok(())
            })
            .await?;
        our_create
            .time(|| async {
                for n in &seq_names {
                    lxd.create_instance(
                        &CreateInstance::container(n.clone(), InstanceSource::alias(IMAGE)).start(true),
                    )
                    .await?;
                }
                Ok(())
            })
            .await?;
        our_create_parallel
            .time(|| async {
                let all = par_names.iter().map(|n| lxd.create_instance_owned(n.clone()));
                futures_join_all(all).await
            })
            .await?;
        for n in cli_names.iter().chain(&seq_names).chain(&par_names) {
            lxd.delete_instance_if_exists(n).await?;
        }
    }

    eprintln!("bench client: cleaning up");
    cleanup.remove_all();

    // Report.
    writeln!(
        md,
        "Load average over the last minute: {load_at_start} at the start, {} at the end (2 CPUs shared with other \
         work: single samples are noisy, medians and same-run ratios much less).\n",
        load_average()
    )?;
    writeln!(md, "| Task | `lxc` median | daemon floor median | lxd-client median | lxc / ours | ours / floor |")?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    let mut row = |task: String, cli: Duration, floor: Option<Duration>, ours: Duration| {
        let (floor_ms, over_floor) = match floor {
            Some(floor) => (ms(floor), format!("{:.2}x", ratio(ours, floor))),
            None => ("–".to_string(), "–".to_string()),
        };
        writeln!(md, "| {task} | {} | {floor_ms} | {} | {:.2}x | {over_floor} |", ms(cli), ms(ours), ratio(cli, ours))
    };
    row(
        format!("(a) list {LIST_INSTANCES} instances with full state (`lxc list` vs `instances_full`, recursion=2)"),
        cli_list.median(),
        Some(floor_list.median()),
        full_list.median(),
    )?;
    row("(a) status only (`instances`, recursion=1)".into(), cli_list.median(), None, light_list.median())?;
    row(
        format!("(b) one `exec true` (median of {EXECS})"),
        cli_exec.median(),
        Some(floor_exec.median()),
        our_exec.median(),
    )?;
    row(format!("(b) {EXECS} sequential `exec true`, total"), cli_exec_total, Some(floor_exec_total), our_exec_total)?;
    row(
        format!("(c) push {SMALL_FILES} small files (`lxc file push -r` vs `push_dir`)"),
        cli_small.median(),
        None,
        our_small.median(),
    )?;
    row(
        format!("(c) push one {BIG_FILE_MIB} MiB file (`lxc file push` vs `push_file`)"),
        cli_big.median(),
        None,
        our_big.median(),
    )?;
    row(
        format!("(d) create and start {CREATES} containers, sequential (`lxc launch` x{CREATES})"),
        cli_create.median(),
        None,
        our_create.median(),
    )?;
    row(
        format!("(d) same, client creating the {CREATES} concurrently"),
        cli_create.median(),
        None,
        our_create_parallel.median(),
    )?;
    writeln!(
        md,
        "\nPeak memory for the {BIG_FILE_MIB} MiB push: lxd-client grew this process's peak RSS by {} MiB (streamed in 256 KiB \
         chunks); the `lxc` process peaked at {}.\n",
        our_big_rss_growth / 1024,
        cli_big_rss.map(|k| format!("{} MiB", k / 1024)).unwrap_or_else(|| "(unmeasured: /usr/bin/time missing)".into())
    )?;
    writeln!(md, "### Targets\n")?;
    md.push_str(&floor_verdict(
        "(a) list with state, within 1.2x of the daemon's floor",
        floor_list.median(),
        full_list.median(),
        1.2,
        "",
    ));
    md.push_str(&floor_verdict(
        "(b) exec, within 1.2x of the daemon's floor",
        floor_exec.median(),
        our_exec.median(),
        1.2,
        "",
    ));
    md.push_str(&verdict(
        "(a) list with state, at least 5x",
        cli_list.median(),
        full_list.median(),
        5.0,
        "Full state costs the daemon itself tens of milliseconds per instance (cgroup, disk and network reads), and \
         `lxc list` pays the same recursion=2 request: only the CLI's process start can be saved. The floor row shows \
         what a caller that needs only the status (recursion=1) gets.",
    ));
    md.push_str(&verdict(
        "(a) floor (status only, recursion=1), at least 5x",
        cli_list.median(),
        light_list.median(),
        5.0,
        "",
    ));
    md.push_str(&verdict(
        "(b) exec, at least 5x",
        cli_exec.median(),
        our_exec.median(),
        5.0,
        "Most of an exec is the daemon's: the operation, four websockets and forking the command in the container; \
         the client saves the CLI's process start and its config loading, not the daemon's work.",
    ));
    md.push_str(&verdict(
        "(c) small files, no slower",
        cli_small.median(),
        our_small.median(),
        1.0,
        "One request per file and per directory level, sequential; the CLI does the same requests.",
    ));
    md.push_str(&verdict(
        "(c) 200 MiB file, no slower",
        cli_big.median(),
        our_big.median(),
        1.0,
        "Both stream; the daemon's write dominates.",
    ));
    md.push_str(&verdict(
        "(d) create and start, no slower",
        cli_create.median(),
        our_create.median(),
        1.0,
        "Creation and start are the daemon's (btrfs snapshot of the image, container start).",
    ));
    writeln!(md, "\n### Raw samples (ms)\n")?;
    for (label, samples) in [
        ("(a) lxc list", &cli_list),
        ("(a) floor: GET recursion=2", &floor_list),
        ("(a) instances_full", &full_list),
        ("(a) instances", &light_list),
        ("(b) lxc exec", &cli_exec),
        ("(b) floor: raw exec", &floor_exec),
        ("(b) exec_output", &our_exec),
        ("(c) lxc file push -r (200 files)", &cli_small),
        ("(c) push_dir (200 files)", &our_small),
        ("(c) lxc file push (200 MiB)", &cli_big),
        ("(c) push_file (200 MiB)", &our_big),
        ("(d) lxc launch x5", &cli_create),
        ("(d) create_instance x5 sequential", &our_create),
        ("(d) create_instance x5 concurrent", &our_create_parallel),
    ] {
        writeln!(md, "- {label}: {}", samples.raw_ms())?;
    }
    Ok(md)
}

/// Whether the floor goes first (`true`) or second in a round: they take turns, so neither always follows the
/// `lxc` process of the same round.
fn turns(round: usize) -> [bool; 2] {
    if round.is_multiple_of(2) {
        [true, false]
    } else {
        [false, true]
    }
}

/// The 1-minute load average (`/proc/loadavg`), as text.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn write_big_file(path: &PathBuf, mib: u64) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let chunk: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    for _ in 0..mib {
        file.write_all(&chunk)?;
    }
    file.flush()?;
    Ok(())
}

async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> anyhow::Result<()>
where
    F: std::future::Future<Output = lxd_client::Result<()>> + Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for handle in handles {
        handle.await??;
    }
    Ok(())
}

/// Owned creation future, so it can be spawned.
trait CreateOwned {
    fn create_instance_owned(
        &self,
        name: InstanceName,
    ) -> impl std::future::Future<Output = lxd_client::Result<()>> + Send + 'static;
}

impl CreateOwned for Client {
    fn create_instance_owned(
        &self,
        name: InstanceName,
    ) -> impl std::future::Future<Output = lxd_client::Result<()>> + Send + 'static {
        let client = self.clone();
        async move {
            client.create_instance(&CreateInstance::container(name, InstanceSource::alias(IMAGE)).start(true)).await
        }
    }
}
