//! Crash tests of `gbo install` against the real daemon and the real services of the baked test image: a run
//! killed at a step boundary (the engine's fault hook, `GBO_FAULT_*`, aborts the process there like a crash) or by
//! SIGKILL at a random time is completed by the next run, every component is healthy, and a third run plans
//! nothing.
//!
//! `GBO_FAULTS_EXHAUSTIVE=1` kills a fresh install at every boundary of every component (both sides of every
//! step; about 20 minutes on two cores, so run the test binary without nextest's timeout); by default a component
//! is killed after the first step of each kind (and the first component also before its first step), which covers
//! every kind of step in a few minutes. `GBO_FAULTS_SEED=N` replays the random SIGKILL delays of an earlier run
//! (each run prints its seed).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use gbo_ops::install::status::TenantStatus;
use gbo_tests::{gbo_bin, lxd, require_test_image, TestTenant, TEST_IMAGE};

const ROLES: &[&str] = &["tables", "cache", "proxy"];
const FAULT_VARS: &[&str] = &["GBO_FAULT_AT_BOUNDARY", "GBO_FAULT_INSTANCE", "GBO_FAULT_TRACE"];
const SIGABRT: i32 = 6;

/// The daemon and the test image, or a failing test.
fn prerequisites() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = lxd().await;
        require_test_image(&client).await;
    });
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn all(&self) -> String {
        format!("{}\n{}\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Run `gbo` with `env` added and every fault variable of the test process's own environment removed.
fn gbo_with(args: &[String], env: &[(&str, String)]) -> Run {
    let mut command = Command::new(gbo_bin());
    command.args(args).stdin(Stdio::null());
    for var in FAULT_VARS {
        command.env_remove(var);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let started = Instant::now();
    let out = command.output().expect("running gbo");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

fn args(words: &[&str], rest: Vec<String>) -> Vec<String> {
    words.iter().map(|w| w.to_string()).chain(rest).collect()
}

fn tenant_args(t: &TestTenant) -> Vec<String> {
    vec!["--tenant".into(), t.name.clone(), "--image".into(), TEST_IMAGE.into(), "--stack-dir".into(), t.stack_dir()]
}

fn install_args(t: &TestTenant, roles: &[&str]) -> Vec<String> {
    args(&["install"], tenant_args(t)).into_iter().chain(roles.iter().map(|r| r.to_string())).collect()
}

fn uninstall_purge(t: &TestTenant, roles: &[&str]) {
    let run = gbo_with(
        &args(&["uninstall", "--purge", "--yes", "--tenant", &t.name], roles.iter().map(|r| r.to_string()).collect()),
        &[],
    );
    assert!(run.status.success(), "uninstall --purge failed:\n{}", run.all());
    for role in roles {
        assert!(!t.stack.path().join(role).exists(), "{role}'s host data survived --purge");
    }
}

/// Every component of `roles` runs and passes its live health check (status JSON, exit 0), and a plan of them
/// has no step.
fn assert_converged(t: &TestTenant, roles: &[&str], context: &str) {
    let run = gbo_with(&args(&["status", "--tenant", &t.name, "--output", "json"], Vec::new()), &[]);
    let status: TenantStatus = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{context}: status JSON does not parse: {e}\n{}", run.all()));
    assert_eq!(run.status.code(), Some(0), "{context}: status must report every component healthy: {status:#?}");
    for role in roles {
        let container = t.container(role);
        let c = status
            .components
            .iter()
            .find(|c| c.container == container)
            .unwrap_or_else(|| panic!("{context}: {container} missing from status: {status:#?}"));
        assert_eq!(c.state, "Running", "{context}: {c:?}");
        let health =
            c.health.as_ref().unwrap_or_else(|| panic!("{context}: {container} has no health check result: {c:?}"));
        assert!(health.healthy, "{context}: {container} is unhealthy: {health:?}");
    }
    let plan = gbo_with(
        &args(&["plan", "--output", "json"], tenant_args(t))
            .into_iter()
            .chain(roles.iter().map(|r| r.to_string()))
            .collect::<Vec<_>>(),
        &[],
    );
    assert!(plan.status.success(), "{context}: plan failed:\n{}", plan.all());
    let json: serde_json::Value =
        serde_json::from_str(&plan.stdout).unwrap_or_else(|e| panic!("{context}: plan JSON: {e}\n{}", plan.all()));
    assert_eq!(json["changes"], 0, "{context}: a run after the resumed one must plan nothing:\n{}", plan.stdout);
}

/// One line of a fault trace.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Boundary {
    seq: u64,
    edge: String,
    instance: String,
    step: String,
    abort: bool,
}

fn read_trace(path: &Path) -> Vec<Boundary> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert!(fields.len() == 4 || (fields.len() == 5 && fields[4] == "abort"), "bad trace line {line:?}");
            Boundary {
                seq: fields[0].parse().unwrap_or_else(|_| panic!("bad sequence number in {line:?}")),
                edge: fields[1].to_string(),
                instance: fields[2].to_string(),
                step: fields[3].to_string(),
                abort: fields.len() == 5,
            }
        })
        .collect()
}

/// The kind of a step, from its description (`+ create instance from ...` -> `create`); each init step is a kind
/// of its own (`init: initdb`).
fn kind(step: &str) -> String {
    match step.strip_prefix("> ") {
        Some(init) if init.starts_with("init: ") => init.to_string(),
        _ => simple_kind(step).to_string(),
    }
}

fn simple_kind(step: &str) -> &'static str {
    const KINDS: &[(&str, &str)] = &[
        ("+ host dir", "host dir"),
        ("+ create instance", "create"),
        ("~ chown", "chown"),
        ("> start instance", "start instance"),
        ("+ device", "device add"),
        ("~ device", "device replace"),
        ("~ config", "config"),
        ("- config", "config"),
        ("> systemctl daemon-reload", "daemon-reload"),
        ("> start ", "start unit"),
        ("> restart ", "restart unit"),
        ("~ mask", "mask"),
        ("+ artifact", "artifact"),
        ("~ record provisioned hash", "record"),
    ];
    if step.starts_with("~ file ") {
        return if step.ends_with("(host mount)") { "host file" } else { "file push" };
    }
    // A batched config update is described by all of its changes; it is a config step whatever comes first.
    if step.contains(", ") && (step.contains("config ") || step.contains("device ")) {
        return "config";
    }
    KINDS
        .iter()
        .find(|(prefix, _)| step.starts_with(prefix))
        .map(|(_, k)| *k)
        .unwrap_or_else(|| panic!("unknown step kind: {step:?}"))
}

fn exhaustive() -> bool {
    std::env::var("GBO_FAULTS_EXHAUSTIVE").is_ok_and(|v| v == "1")
}

/// Kill a run at boundary `at` (global, or of `instance` only), check where it died, then complete it.
struct Crash<'a> {
    t: &'a TestTenant,
    traces: &'a Path,
    runs: u32,
}

impl Crash<'_> {
    /// Returns the boundary it died at.
    fn kill_at(&mut self, at: usize, instance: Option<&str>, roles: &[&str]) -> Boundary {
        self.runs += 1;
        let trace = self.traces.join(format!("run-{}", self.runs));
        let mut env = vec![("GBO_FAULT_AT_BOUNDARY", at.to_string()), ("GBO_FAULT_TRACE", trace.display().to_string())];
        if let Some(instance) = instance {
            env.push(("GBO_FAULT_INSTANCE", instance.to_string()));
        }
        let killed = gbo_with(&install_args(self.t, roles), &env);
        assert_eq!(
            killed.status.signal(),
            Some(SIGABRT),
            "boundary {at} of {}: the run must die by the fault hook:\n{}",
            instance.unwrap_or("the run"),
            killed.all()
        );
        let lines = read_trace(&trace);
        let aborted: Vec<&Boundary> = lines.iter().filter(|b| b.abort).collect();
        assert_eq!(aborted.len(), 1, "one abort line expected in {lines:#?}");
        let died = aborted[0].clone();
        match instance {
            Some(instance) => {
                assert_eq!(died.instance, instance, "{lines:#?}");
                assert_eq!(
                    lines.iter().filter(|b| b.instance == instance && b.seq <= died.seq).count(),
                    at,
                    "{lines:#?}"
                );
            }
            None => assert_eq!(died.seq, at as u64, "{lines:#?}"),
        }
        let resumed = gbo_with(&install_args(self.t, roles), &[]);
        assert!(
            resumed.status.success(),
            "the run after a crash at boundary {at} ({} {} `{}`) must complete:\n{}",
            died.instance,
            died.edge,
            died.step,
            resumed.all()
        );
        eprintln!(
            "boundary {at:>3} {:<28} {:<6} {:<60} killed after {:>5.1} s, completed in {:>4.1} s",
            died.instance,
            died.edge,
            died.step,
            killed.took.as_secs_f64(),
            resumed.took.as_secs_f64()
        );
        died
    }
}

#[test]
fn a_fresh_install_killed_at_any_step_boundary_is_completed_by_the_next_run() {
    prerequisites();
    let started = Instant::now();
    let t = TestTenant::new();
    let traces = tempfile::tempdir().expect("tempdir");

    // Count the boundaries: a complete install from scratch, traced (the trace alone kills nothing).
    let counting = traces.path().join("counting");
    let first = gbo_with(&install_args(&t, ROLES), &[("GBO_FAULT_TRACE", counting.display().to_string())]);
    assert!(first.status.success(), "traced install failed:\n{}", first.all());
    assert_converged(&t, ROLES, "traced first install");
    let all = read_trace(&counting);
    assert!(all.iter().all(|b| !b.abort));
    assert_eq!(
        all.iter().map(|b| b.seq).collect::<Vec<_>>(),
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "sequence numbers"
    );
    let mut by_instance: BTreeMap<String, Vec<Boundary>> = BTreeMap::new();
    for b in &all {
        by_instance.entry(b.instance.clone()).or_default().push(b.clone());
    }
    assert_eq!(by_instance.len(), ROLES.len(), "{by_instance:#?}");
    for (instance, list) in &by_instance {
        // Within a component, steps are sequential: before, after, before, after ... of the same step.
        for pair in list.chunks(2) {
            assert!(
                pair.len() == 2 && pair[0].edge == "before" && pair[1].edge == "after" && pair[0].step == pair[1].step,
                "{instance}: {pair:#?}"
            );
        }
        let kinds: Vec<String> = list.iter().map(|b| kind(&b.step)).collect();
        for wanted in [
            "host dir",
            "create",
            "chown",
            "start instance",
            "file push",
            "host file",
            "daemon-reload",
            "start unit",
            "record",
        ] {
            assert!(kinds.iter().any(|k| k == wanted), "{instance}'s fresh install has no {wanted} step: {list:#?}");
        }
        let steps: Vec<&str> = list.iter().step_by(2).map(|b| b.step.as_str()).collect();
        eprintln!("{instance}: {} steps: {}", steps.len(), steps.join(" | "));
    }
    let all_kinds: std::collections::BTreeSet<String> = all.iter().map(|b| kind(&b.step)).collect();
    eprintln!(
        "a fresh install has {} step boundaries: {}",
        all.len(),
        by_instance.iter().map(|(i, l)| format!("{i} {}", l.len())).collect::<Vec<_>>().join(", ")
    );

    let mut crash = Crash { t: &t, traces: traces.path(), runs: 0 };
    let mut covered: BTreeMap<String, u32> = BTreeMap::new();

    // Each component from scratch (its container deleted and its host data purged), killed at its own
    // boundaries while the others are converged. By default: after the first step of each kind not covered yet,
    // the cheapest component first, which is also killed before its first step; exhaustively: every boundary.
    let mut seen: Vec<String> = Vec::new();
    for role in ["cache", "proxy", "tables"] {
        let instance = t.container(role);
        let list = &by_instance[&instance];
        let chosen: Vec<usize> = (1..=list.len())
            .filter(|&n| {
                let b = &list[n - 1];
                let new_kind = b.edge == "after" && !seen.contains(&kind(&b.step));
                if new_kind {
                    seen.push(kind(&b.step));
                }
                exhaustive() || (n == 1 && role == "cache") || new_kind
            })
            .collect();
        for n in chosen {
            uninstall_purge(&t, &[role]);
            let died = crash.kill_at(n, Some(&instance), ROLES);
            let expected = &list[n - 1];
            assert_eq!(
                (&died.edge, &died.step),
                (&expected.edge, &expected.step),
                "{instance}'s boundary {n} is a different step than in the counting run"
            );
            *covered.entry(kind(&died.step)).or_default() += 1;
            assert_converged(
                &t,
                ROLES,
                &format!("after a crash at {instance}'s boundary {n} ({} `{}`)", died.edge, died.step),
            );
        }
    }

    // The whole tenant from scratch, killed at boundaries counted across the concurrent components (which of them
    // reaches a given number first varies from run to run).
    let globals: Vec<usize> = if exhaustive() { (1..=all.len()).step_by(10).collect() } else { vec![all.len() / 2] };
    for n in globals {
        uninstall_purge(&t, ROLES);
        let died = crash.kill_at(n, None, ROLES);
        *covered.entry(kind(&died.step)).or_default() += 1;
        assert_converged(
            &t,
            ROLES,
            &format!("after a crash at boundary {n} of the run ({} {} `{}`)", died.instance, died.edge, died.step),
        );
    }
    for wanted in &all_kinds {
        assert!(covered.contains_key(wanted), "no crash at a {wanted} step: {covered:?}");
    }
    eprintln!(
        "{} crashes, each completed by the next run, in {:.1} s; by kind: {covered:?}",
        crash.runs,
        started.elapsed().as_secs_f64()
    );
}

/// The cache's running value of `parameter` (`CONFIG GET`).
fn cache_config(t: &TestTenant, parameter: &str) -> String {
    let (ok, out) =
        gbo_tests::lxc(&["exec", &t.container("cache"), "--", "valkey-cli", "CONFIG", "GET", parameter]).ok_output();
    assert!(ok, "{out}");
    out.lines().nth(1).unwrap_or_default().trim().to_string()
}

/// Drift made by hand on a converged cache: its port device removed, `limits.cpu` set, and `redis.conf`
/// edited and loaded by a restart (`appendonly no`). Returns the plan's steps (the JSON `action` values).
fn make_drift(t: &TestTenant) -> Vec<String> {
    let cache = t.container("cache");
    for words in [
        vec!["config", "device", "remove", cache.as_str(), "gbo-port-redis"],
        vec!["config", "set", cache.as_str(), "limits.cpu", "1"],
    ] {
        let (ok, out) = gbo_tests::lxc(&words).ok_output();
        assert!(ok, "lxc {words:?}: {out}");
    }
    let conf = t.stack.path().join("cache/conf/redis.conf");
    let text = std::fs::read_to_string(&conf).expect("redis.conf");
    assert!(text.contains("appendonly yes"), "{text}");
    std::fs::write(&conf, text.replace("appendonly yes", "appendonly no")).expect("edit redis.conf");
    // Each round restarts the cache twice within seconds: clear systemd's start rate limit (5 in 10 s) first.
    for action in ["reset-failed", "restart"] {
        let (ok, out) = gbo_tests::lxc(&["exec", &cache, "--", "systemctl", action, "cache"]).ok_output();
        assert!(ok, "systemctl {action} cache: {out}");
    }
    assert_eq!(cache_config(t, "appendonly"), "no", "the hand-edited config is loaded");
    let plan = gbo_with(
        &args(&["plan", "--output", "json"], tenant_args(t))
            .into_iter()
            .chain(["cache".to_string()])
            .collect::<Vec<_>>(),
        &[],
    );
    assert!(plan.status.success(), "{}", plan.all());
    let json: serde_json::Value = serde_json::from_str(&plan.stdout).expect("plan JSON");
    json["components"][0]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["action"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn drift_repair_killed_between_its_steps_is_completed_and_reloads_the_config() {
    prerequisites();
    let started = Instant::now();
    let t = TestTenant::new();
    let traces = tempfile::tempdir().expect("tempdir");
    let first = gbo_with(&install_args(&t, &["cache"]), &[]);
    assert!(first.status.success(), "{}", first.all());
    assert_converged(&t, &["cache"], "first install");
    assert_eq!(cache_config(&t, "appendonly"), "yes");

    let mut crash = Crash { t: &t, traces: traces.path(), runs: 0 };
    let instance = t.container("cache");
    let mut kinds = Vec::new();
    let mut at = 1;
    loop {
        let steps = make_drift(&t);
        assert_eq!(
            steps,
            ["unset_config", "add_device", "write_host_file", "restart_unit", "record_provisioned"],
            "the plan of the drift"
        );
        // Boundaries: the device and config changes are one update (1 before, 2 after), then two per step.
        let total = 2 + 2 * 3;
        let died = crash.kill_at(at, Some(&instance), &["cache"]);
        kinds.push(kind(&died.step));
        assert_converged(
            &t,
            &["cache"],
            &format!("after a crash at boundary {at} of the drift repair ({} `{}`)", died.edge, died.step),
        );
        assert_eq!(
            cache_config(&t, "appendonly"),
            "yes",
            "after a crash at {} `{}`, the completed repair must leave the cache running gbo's config",
            died.edge,
            died.step
        );
        at += 1;
        if at > total {
            break;
        }
    }
    for wanted in ["config", "host file", "restart unit", "record"] {
        assert!(kinds.iter().any(|k| k == wanted), "{kinds:?}");
    }
    eprintln!("drift repair: {} crashes completed in {:.1} s", crash.runs, started.elapsed().as_secs_f64());
}

/// splitmix64: a small seeded generator, so a failing run's delays can be replayed with `GBO_FAULTS_SEED`.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn millis(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

#[test]
fn sigkill_at_random_times_then_a_clean_run_completes() {
    prerequisites();
    let started = Instant::now();
    let seed = std::env::var("GBO_FAULTS_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    let mut rng = SplitMix(seed);
    eprintln!("SIGKILL delays from GBO_FAULTS_SEED={seed}");
    let t = TestTenant::new();
    let logs = tempfile::tempdir().expect("tempdir");
    let mut delays = Vec::new();
    for round in 1..=3 {
        // A fresh install takes 5 to 8 s here; later rounds resume a partial one and have less left to do.
        let delay = Duration::from_millis(rng.millis(200, if round == 1 { 6000 } else { 2500 }));
        let mut command = Command::new(gbo_bin());
        let log = logs.path().join(format!("round-{round}"));
        let file = std::fs::File::create(&log).expect("log file");
        command
            .args(install_args(&t, ROLES))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        for var in FAULT_VARS {
            command.env_remove(var);
        }
        let mut child = command.spawn().expect("spawn gbo install");
        let spawned = Instant::now();
        let mut finished = None;
        while spawned.elapsed() < delay {
            if let Some(status) = child.try_wait().expect("try_wait") {
                finished = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match finished {
            Some(status) => {
                let output = std::fs::read_to_string(&log).unwrap_or_default();
                eprintln!("round {round}: delay {delay:?}, but the run finished first ({status})");
                // A run that ends before its kill must end like any install: done, or failed for a reason.
                assert!(
                    status.success(),
                    "round {round} (GBO_FAULTS_SEED={seed}) failed on its own after the earlier kills:\n{output}"
                );
            }
            None => {
                child.kill().expect("SIGKILL gbo install");
                let status = child.wait().expect("wait");
                assert_eq!(status.signal(), Some(9), "round {round}: {status}");
                eprintln!("round {round}: SIGKILL after {delay:?}");
            }
        }
        delays.push(delay);
    }
    let clean = gbo_with(&install_args(&t, ROLES), &[]);
    assert!(
        clean.status.success(),
        "the run after SIGKILLs at {delays:?} (GBO_FAULTS_SEED={seed}) must complete:\n{}",
        clean.all()
    );
    assert_converged(&t, ROLES, &format!("after SIGKILLs at {delays:?} (GBO_FAULTS_SEED={seed})"));
    eprintln!(
        "clean run after the kills: {:.1} s; test {:.1} s",
        clean.took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_run_killed_while_initdb_runs_is_completed_by_the_next() {
    prerequisites();
    let started = Instant::now();
    let t = TestTenant::new();
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("killed");
    let file = std::fs::File::create(&log).expect("log file");
    let mut command = Command::new(gbo_bin());
    command
        .args(install_args(&t, &["tables"]))
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file);
    for var in FAULT_VARS {
        command.env_remove(var);
    }
    let mut child = command.spawn().expect("spawn gbo install");
    // initdb writes PG_VERSION first and then bootstraps the cluster for a second or more: kill gbo right then.
    let pg_version = t.stack.path().join("tables/data/pgdata/PG_VERSION");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pg_version.exists() {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "gbo install ended ({status}) before initdb started:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "initdb did not start within 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("SIGKILL gbo install");
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(9), "{status}");
    // The init step is a daemon task, not tied to the killed client: it goes on.
    let (running, out) = gbo_tests::lxc(&["exec", &t.container("tables"), "--", "pgrep", "-x", "initdb"]).ok_output();
    assert!(running, "initdb must outlive the killed gbo (LXD kills a websocket exec whose client died): {out}");
    let resumed = gbo_with(&install_args(&t, &["tables"]), &[]);
    assert!(resumed.status.success(), "the run after a kill during initdb must complete:\n{}", resumed.all());
    assert_converged(&t, &["tables"], "after a kill during initdb");
    eprintln!(
        "killed during initdb, completed in {:.1} s; test {:.1} s",
        resumed.took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
