//! `push` against real bare git repositories, `cache prune`/`install-timer` on real directories, `workflow
//! render`/`check` on real files, and `runs` against a local HTTP stand-in for Forgejo.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use common::describe;

fn gbo_ci() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gbo-ci"));
    command.env_remove("FORGEJO_TOKEN").env_remove("FORGEJO_URL");
    command
}

// ---------------------------------------------------------------- git

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(["-c", "protocol.file.allow=always", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {}", describe(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Bare remotes for the submodule (origin, alm) and the root (alm), a root work tree with the submodule checked out.
struct Repos {
    dir: tempfile::TempDir,
    root: PathBuf,
    sub_origin: PathBuf,
    sub_alm: PathBuf,
    root_alm: PathBuf,
}

impl Repos {
    fn new() -> Repos {
        assert!(Path::new("/usr/bin/git").exists(), "git is required by this test");
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().to_path_buf();
        let sub_origin = base.join("botserver-origin.git");
        let sub_alm = base.join("botserver-alm.git");
        let root_alm = base.join("gb-alm.git");
        for bare in [&sub_origin, &sub_alm, &root_alm] {
            git(&base, &["init", "--quiet", "--bare", bare.to_str().unwrap()]);
        }
        let seed = base.join("seed");
        git(&base, &["init", "--quiet", seed.to_str().unwrap()]);
        std::fs::write(seed.join("main.rs"), "fn main() {}\n").unwrap();
        git(&seed, &["add", "."]);
        git(&seed, &["commit", "--quiet", "-m", "botserver: first"]);
        git(&seed, &["push", "--quiet", sub_origin.to_str().unwrap(), "HEAD:refs/heads/main"]);
        git(&seed, &["push", "--quiet", sub_alm.to_str().unwrap(), "HEAD:refs/heads/main"]);

        let root = base.join("gb");
        git(&base, &["init", "--quiet", root.to_str().unwrap()]);
        git(&root, &["submodule", "--quiet", "add", sub_origin.to_str().unwrap(), "botserver"]);
        git(&root, &["commit", "--quiet", "-m", "add botserver"]);
        git(&root, &["remote", "add", "alm", root_alm.to_str().unwrap()]);
        git(&root, &["push", "--quiet", "alm", "HEAD:refs/heads/main"]);
        git(&root, &["config", "user.name", "Test"]);
        git(&root, &["config", "user.email", "test@example.invalid"]);
        let sub = root.join("botserver");
        git(&sub, &["remote", "add", "alm", sub_alm.to_str().unwrap()]);
        git(&sub, &["checkout", "--quiet", "-B", "main", "origin/main"]);
        Repos { dir, root, sub_origin, sub_alm, root_alm }
    }

    fn sub(&self) -> PathBuf {
        self.root.join("botserver")
    }

    fn commit_in_sub(&self, text: &str) -> String {
        std::fs::write(self.sub().join("main.rs"), text).unwrap();
        git(&self.sub(), &["commit", "--quiet", "-am", "change"]);
        git(&self.sub(), &["rev-parse", "HEAD"])
    }

    fn push(&self) -> Output {
        gbo_ci()
            .args(["--output", "json", "push", "--root"])
            .arg(&self.root)
            .args(["--submodule", "botserver"])
            .output()
            .unwrap()
    }
}

fn head_of(bare: &Path) -> String {
    git(bare, &["rev-parse", "refs/heads/main"])
}

#[test]
fn push_updates_both_remotes_and_the_root_pointer() {
    let repos = Repos::new();
    let commit = repos.commit_in_sub("fn main() { println!(\"v2\"); }\n");
    let output = repos.push();
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["submodule_commit"], commit.as_str());
    assert_eq!(report["root_committed"], true);
    assert_eq!(report["confirmed"].as_array().unwrap().len(), 3);

    assert_eq!(head_of(&repos.sub_origin), commit);
    assert_eq!(head_of(&repos.sub_alm), commit);
    // The root on alm points at the new submodule commit: the pipeline will run.
    let tree = git(&repos.root_alm, &["ls-tree", "main", "botserver"]);
    assert!(tree.contains(&commit), "{tree}");
    assert_eq!(head_of(&repos.root_alm), report["root_commit"].as_str().unwrap());
    let message = git(&repos.root_alm, &["log", "-1", "--format=%s", "main"]);
    assert_eq!(message, format!("Update submodule botserver to {}", &commit[..12]));

    // Running it again changes nothing and still confirms.
    let again = repos.push();
    assert!(again.status.success(), "{}", describe(&again));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(report["root_committed"], false);
}

#[test]
fn push_refuses_a_dirty_tree() {
    let repos = Repos::new();
    repos.commit_in_sub("fn main() { /* v2 */ }\n");
    std::fs::write(repos.sub().join("main.rs"), "uncommitted\n").unwrap();
    let before = head_of(&repos.sub_origin);
    let output = repos.push();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("uncommitted changes") && stderr.contains("nothing was pushed"), "{stderr}");
    assert_eq!(head_of(&repos.sub_origin), before);

    // A stray change in the root is refused too.
    git(&repos.sub(), &["checkout", "--quiet", "--", "main.rs"]);
    std::fs::write(repos.root.join("notes.txt"), "stray\n").unwrap();
    let output = repos.push();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("notes.txt"));
    assert_eq!(head_of(&repos.sub_origin), before);
}

#[test]
fn push_refuses_a_diverged_remote_before_pushing_anything() {
    let repos = Repos::new();
    // Someone else pushed to alm.
    let other = repos.dir.path().join("other");
    git(repos.dir.path(), &["clone", "--quiet", repos.sub_alm.to_str().unwrap(), other.to_str().unwrap()]);
    std::fs::write(other.join("main.rs"), "fn main() { /* theirs */ }\n").unwrap();
    git(&other, &["commit", "--quiet", "-am", "theirs"]);
    git(&other, &["push", "--quiet", "origin", "HEAD:refs/heads/main"]);
    let theirs = head_of(&repos.sub_alm);

    repos.commit_in_sub("fn main() { /* ours */ }\n");
    let origin_before = head_of(&repos.sub_origin);
    let output = repos.push();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("diverged") && stderr.contains("alm/main"), "{stderr}");
    assert_eq!(head_of(&repos.sub_origin), origin_before, "origin was not pushed either");
    assert_eq!(head_of(&repos.sub_alm), theirs);
}

// ---------------------------------------------------------------- cache

fn file_with_age(path: &Path, bytes: usize, age_days: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![b'x'; bytes]).unwrap();
    let when = SystemTime::now() - Duration::from_secs(age_days * 86_400);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(when).unwrap();
}

fn dir_with_age(path: &Path, age_days: u64) {
    let when = SystemTime::now() - Duration::from_secs(age_days * 86_400);
    std::fs::File::open(path).unwrap().set_modified(when).unwrap();
}

#[test]
fn cache_prune_removes_the_oldest_units_first() {
    let dir = tempfile::tempdir().unwrap();
    let sccache = dir.path().join("sccache");
    let registry = dir.path().join("registry");
    file_with_age(&sccache.join("a/b/old"), 4000, 30);
    file_with_age(&sccache.join("c/d/new"), 4000, 1);
    file_with_age(&registry.join("cache/index.crates.io-abc/serde-1.0.0.crate"), 3000, 20);
    file_with_age(&registry.join("src/index.crates.io-abc/serde-1.0.0/src/lib.rs"), 2000, 20);
    file_with_age(&registry.join("src/index.crates.io-abc/serde-1.0.0/Cargo.toml"), 1000, 20);
    dir_with_age(&registry.join("src/index.crates.io-abc/serde-1.0.0"), 10);
    file_with_age(&registry.join("index/index.crates.io-abc/config.json"), 500, 40);

    let run = |extra: &[&str]| {
        gbo_ci()
            .args(["--output", "json", "cache", "prune", "--max-size", "6000", "--sccache-dir"])
            .arg(&sccache)
            .arg("--registry-dir")
            .arg(&registry)
            .args(extra)
            .output()
            .unwrap()
    };
    let dry = run(&["--dry-run"]);
    assert!(dry.status.success(), "{}", describe(&dry));
    let report: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(report["before_bytes"], 14000, "the index is not counted");
    assert!(sccache.join("a/b/old").exists(), "a dry run removes nothing");

    let output = run(&[]);
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let removed: Vec<String> = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["path"].as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect();
    // Oldest first: the 30-day sccache file, the 20-day .crate, then the crate source dir (10 days), as a unit.
    assert_eq!(removed, vec!["old", "serde-1.0.0.crate", "serde-1.0.0"]);
    assert_eq!(report["after_bytes"], 4000);
    assert!(!sccache.join("a/b/old").exists());
    assert!(sccache.join("c/d/new").exists());
    assert!(!registry.join("src/index.crates.io-abc/serde-1.0.0").exists());
    assert!(registry.join("index/index.crates.io-abc/config.json").exists());
}

#[test]
fn progress_is_a_line_per_event_or_json_lines_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let sccache = dir.path().join("sccache");
    file_with_age(&sccache.join("a/old"), 4000, 30);
    file_with_age(&sccache.join("b/new"), 4000, 1);
    let missing = dir.path().join("no-registry");
    let run = |output: &str| {
        let output = gbo_ci()
            .args(["--output", output, "cache", "prune", "--max-size", "5000", "--sccache-dir"])
            .arg(&sccache)
            .arg("--registry-dir")
            .arg(&missing)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", describe(&output));
        output
    };

    // Text: a plain line per event after the time since the start; the result on stdout.
    let text = run("text");
    let stderr = String::from_utf8_lossy(&text.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "missing, scanned, removing: {stderr}");
    assert!(lines.iter().all(|line| line.starts_with('[') && line.contains("s] ")), "{stderr}");
    assert!(lines[0].ends_with(&format!("{}: not there, nothing to prune", missing.display())), "{stderr}");
    assert!(lines[1].ends_with("scanned 2 unit(s), 7.8 KiB"), "{stderr}");
    assert!(lines[2].ends_with("removing the oldest 1 unit(s) (3.9 KiB)"), "{stderr}");
    assert!(String::from_utf8_lossy(&text.stdout).contains("removed "), "the result stays on stdout");

    // JSON: stdout is still the one report document, stderr one JSON object per event.
    file_with_age(&sccache.join("a/old"), 4000, 30);
    let json = run("json");
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["after_bytes"], 4000, "{report}");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let kinds: Vec<&str> = events.iter().map(|event| event["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["missing", "scanned", "removing"]);
    assert_eq!(events[0]["path"], missing.display().to_string().as_str());
    assert_eq!((events[1]["units"].as_u64(), events[1]["bytes"].as_u64()), (Some(2), Some(8000)));
    assert_eq!((events[2]["units"].as_u64(), events[2]["bytes"].as_u64()), (Some(1), Some(4000)));
    assert!(events.iter().all(|event| event["elapsed_ms"].is_u64() && event["message"].is_string()), "{events:?}");
    assert_eq!(events[1]["message"], "scanned 2 unit(s), 7.8 KiB");
}

#[test]
fn cache_prune_rejects_a_bad_size() {
    let output = gbo_ci().args(["cache", "prune", "--max-size", "lots"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid size `lots`"));
}

#[test]
fn install_timer_writes_systemd_units_or_a_cron_file() {
    let with_systemd = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(with_systemd.path().join("run/systemd/system")).unwrap();
    let output = gbo_ci()
        .args(["cache", "install-timer", "--max-size", "10G", "--executable", "/usr/local/bin/gbo-ci", "--root"])
        .arg(with_systemd.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let timer =
        std::fs::read_to_string(with_systemd.path().join("etc/systemd/system/gbo-ci-cache-prune.timer")).unwrap();
    assert!(timer.contains("OnCalendar=daily") && timer.contains("Persistent=true"), "{timer}");
    let service =
        std::fs::read_to_string(with_systemd.path().join("etc/systemd/system/gbo-ci-cache-prune.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/local/bin/gbo-ci cache prune --max-size 10737418240"), "{service}");
    assert!(!with_systemd.path().join("etc/cron.d").exists());

    let without = tempfile::tempdir().unwrap();
    let output = gbo_ci()
        .args(["cache", "install-timer", "--executable", "/usr/local/bin/gbo-ci", "--root"])
        .arg(without.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let cron_path = without.path().join("etc/cron.d/gbo-ci-cache-prune");
    let cron = std::fs::read_to_string(&cron_path).unwrap();
    let job = cron.lines().find(|line| line.starts_with("17 3")).unwrap();
    // minute hour dom month dow user command: the cron.d format.
    let fields: Vec<&str> = job.split_whitespace().collect();
    assert_eq!(&fields[..7], ["17", "3", "*", "*", "*", "root", "/usr/local/bin/gbo-ci"]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&cron_path).unwrap().permissions().mode() & 0o777, 0o644);
}

// ---------------------------------------------------------------- workflows

#[test]
fn workflow_render_writes_one_file_per_submodule_and_check_accepts_them() {
    let repos = Repos::new();
    // A second submodule that only builds.
    git(&repos.root, &["submodule", "--quiet", "add", repos.sub_origin.to_str().unwrap(), "botlib"]);
    let output = gbo_ci().args(["workflow", "render", "--root"]).arg(&repos.root).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let botserver = repos.root.join("botserver/.forgejo/workflows/botserver.yaml");
    let botlib = repos.root.join("botlib/.forgejo/workflows/botlib.yaml");
    let parsed: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(&botserver).unwrap()).unwrap();
    assert_eq!(parsed["name"], "botserver");
    let lib_text = std::fs::read_to_string(&botlib).unwrap();
    assert!(!lib_text.contains("gbo-ci deploy"));

    let check = gbo_ci().args(["workflow", "check"]).arg(&repos.root).output().unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", describe(&check));
    assert!(String::from_utf8_lossy(&check.stderr).contains("checked 2 workflow file(s), 0 finding(s)"));
}

#[test]
fn workflow_check_flags_the_seed_deploy_step() {
    let dir = tempfile::tempdir().unwrap();
    let workflows = dir.path().join("botserver/.forgejo/workflows");
    std::fs::create_dir_all(&workflows).unwrap();
    std::fs::write(
        workflows.join("botserver.yaml"),
        r#"name: botserver
on: [push]
jobs:
  build:
    runs-on: gbo-runner
    steps:
      - run: cargo build -p botserver
      - name: Deploy via SSH
        run: |
          ssh pragmatismo-system "pkill -f /opt/gbo/bin/botserver || true; sleep 2"
          scp -o StrictHostKeyChecking=no target/debug/botserver pragmatismo-system:/opt/gbo/bin/botserver
          ssh pragmatismo-system "chmod +x /opt/gbo/bin/botserver && cd /opt/gbo/bin && nohup sudo -u gbuser ./botserver --noconsole >> /opt/gbo/logs/error.log 2>&1 &"
"#,
    )
    .unwrap();
    let output = gbo_ci().args(["--output", "json", "workflow", "check"]).arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let rules: Vec<&str> = report["findings"].as_array().unwrap().iter().map(|f| f["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, vec!["pkill", "copy-over-running-binary", "strict-host-key-checking-off"]);

    std::fs::write(workflows.join("broken.yml"), "jobs: [unclosed").unwrap();
    let output = gbo_ci().args(["workflow", "check"]).arg(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
}

// ---------------------------------------------------------------- runs

/// A stand-in for Forgejo's API on 127.0.0.1: no Forgejo can be installed on the test machines, so this replays the
/// documented `ActionTaskResponse` shape of `GET /api/v1/repos/{owner}/{repo}/actions/tasks` and records the request.
fn forgejo_stand_in(status: u16, body: &'static str) -> (u16, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            request.push_str(&line);
        }
        let reason = if status == 200 { "OK" } else { "Unauthorized" };
        write!(
            stream,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        request
    });
    (port, handle)
}

const TASKS: &str = r#"{"workflow_runs":[{"id":812,"name":"build-test-deploy","head_branch":"main","head_sha":"4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c","run_number":57,"event":"push","display_title":"Fix suggestions bot_id","status":"success","workflow_id":"botserver.yaml","url":"http://alm.example.invalid/GeneralBots/botserver/actions/runs/57","created_at":"2025-01-19T22:50:32Z","updated_at":"2025-01-19T23:00:10Z","run_started_at":"2025-01-19T22:50:35Z"},{"id":811,"name":"build-test-deploy","head_branch":"main","head_sha":"0a1b2c3d4e5f60718293a4b5c6d7e8f901234567","run_number":56,"event":"push","display_title":"Update deps","status":"failure","workflow_id":"botserver.yaml","url":"http://alm.example.invalid/GeneralBots/botserver/actions/runs/56","created_at":"2025-01-18T10:00:00Z","updated_at":"2025-01-18T10:09:00Z","run_started_at":"2025-01-18T10:00:02Z"}],"total_count":57}"#;

#[test]
fn runs_lists_tasks_from_the_api_with_the_token_from_the_environment() {
    let (port, server) = forgejo_stand_in(200, TASKS);
    let output = gbo_ci()
        .args(["runs", "--repo", "GeneralBots/botserver", "--limit", "2"])
        .env("FORGEJO_URL", format!("http://127.0.0.1:{port}"))
        .env("FORGEJO_TOKEN", "s3cr3t-token-value")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let request = server.join().unwrap();
    assert!(
        request.starts_with("GET /api/v1/repos/GeneralBots/botserver/actions/tasks?page=1&limit=2 HTTP/1.1"),
        "{request}"
    );
    assert!(request.to_ascii_lowercase().contains("authorization: token s3cr3t-token-value"), "{request}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("success") && stdout.contains("Fix suggestions bot_id") && stdout.contains("4f1c2d3e4f"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cr3t") && !String::from_utf8_lossy(&output.stderr).contains("s3cr3t"));

    let (port, server) = forgejo_stand_in(200, TASKS);
    let output = gbo_ci()
        .args(["--output", "json", "runs", "--repo", "GeneralBots/botserver", "--url"])
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let request = server.join().unwrap();
    assert!(!request.to_ascii_lowercase().contains("authorization"), "no token, no header");
    let report: gbo_ci::runs::RunsReport = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report.total_count, 57);
    assert_eq!(report.workflow_runs[1].status, "failure");
}

#[test]
fn runs_explains_an_authorisation_failure() {
    let (port, server) = forgejo_stand_in(401, r#"{"message":"token is required"}"#);
    let output = gbo_ci()
        .args(["runs", "--repo", "GeneralBots/botserver", "--url"])
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    server.join().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("FORGEJO_TOKEN"), "{}", describe(&output));

    let output = gbo_ci().args(["runs", "--repo", "no-slash", "--url", "http://127.0.0.1:1"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("OWNER/NAME"));
}

#[test]
fn runs_never_sends_the_token_over_plain_http_off_loopback() {
    // A listener on 127.0.0.1 that records any connection. The URL names it as 0.0.0.0: that reaches this host on
    // Linux (so a regression stays on the machine), but it is not a loopback address, so the token may not go there.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("http://0.0.0.0:{port}");
    let output = gbo_ci()
        .args(["runs", "--repo", "GeneralBots/botserver", "--url", &url])
        .env("FORGEJO_TOKEN", "s3cr3t-token-value")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&url) && stderr.contains("FORGEJO_TOKEN"), "{stderr}");
    assert!(!stderr.contains("s3cr3t"), "the token is never printed");
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("refused before any connection, yet something connected: {other:?}"),
    }

    // The same URL without a token is a public read: allowed (and it reaches the stand-in on this host).
    drop(listener);
    let (port, server) = forgejo_stand_in(200, TASKS);
    let output = gbo_ci()
        .args(["runs", "--repo", "GeneralBots/botserver", "--url", &format!("http://0.0.0.0:{port}")])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(!server.join().unwrap().to_ascii_lowercase().contains("authorization"));
}

// ---------------------------------------------------------------- help

#[test]
fn help_snapshots() {
    for command in [&["--help"][..], &["deploy", "--help"][..]] {
        let output = gbo_ci().args(command).env("COLUMNS", "120").output().unwrap();
        assert!(output.status.success());
        insta::assert_snapshot!(command.join("_").replace("--", ""), String::from_utf8_lossy(&output.stdout));
    }
}
