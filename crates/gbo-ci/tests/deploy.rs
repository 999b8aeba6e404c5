//! `gbo-ci deploy`, `rollback` and `verify` against a real OpenSSH server on 127.0.0.1 and a real running program.
//!
//! The "botserver" is a copy of the system's python3 ELF binary serving HTTP (see `common`); the deploy finds it by
//! its exact executable path in /proc, exactly as it would find botserver.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Child;

use common::*;

/// One prepared remote: sshd, an old botserver v1 running as `nobody` from a root-owned binary, its log.
struct Stage {
    sshd: Sshd,
    dest: PathBuf,
    log: PathBuf,
    script: PathBuf,
    port: u16,
    old: Child,
}

impl Stage {
    fn new() -> Stage {
        Self::with_v1_flags("")
    }

    /// A stage whose running v1 has behaviour flags (see `make_botserver_with`).
    fn with_v1_flags(flags: &str) -> Stage {
        let sshd = Sshd::start();
        let bin = sshd.mkdir("opt/gbo/bin");
        let logs = sshd.mkdir("opt/gbo/logs");
        sshd.mkdir("build");
        let dest = bin.join("botserver");
        // Root-owned, as in the seed's failure ("If owned by root, scp as gbuser will fail").
        make_botserver_with(&dest, 200, "v1", flags, 0);
        let script = write_server_script(&sshd);
        let port = free_port();
        // The log belongs to the service user, who opens it when gbo-ci starts the binary.
        let log = logs.join("error.log");
        std::fs::write(&log, "").unwrap();
        give_to_service_user(&log);
        let old = start_as_nobody(&dest, &script, port, &log);
        assert_eq!(http_get(port, "/api/health"), Some((200, "v1".into())));
        Stage { sshd, dest, log, script, port, old }
    }

    fn build(&self, name: &str, health: u16, version: &str) -> PathBuf {
        self.sshd.build(name, health, version)
    }

    fn health_url(&self) -> String {
        health_url(self.port)
    }

    fn deploy(&self, binary: &Path, extra: &[&str]) -> std::process::Output {
        self.deploy_command(binary, extra).output().unwrap()
    }

    /// `gbo-ci deploy` of `binary` to this stage (health deadline 15 s unless `extra` sets one), not started.
    fn deploy_command(&self, binary: &Path, extra: &[&str]) -> std::process::Command {
        self.sshd.deploy_command(binary, &self.dest, &self.health_url(), extra)
    }

    /// `gbo-ci rollback` of this stage's target with `extra` flags, run to completion.
    fn rollback(&self, extra: &[&str]) -> std::process::Output {
        self.sshd.rollback_command(&self.dest, extra).output().unwrap()
    }

    /// The bin directory's entries (the deploy lock is not among them: it lives in /run/lock/gbo-ci).
    fn bin_dir_listing(&self) -> Vec<String> {
        listing(self.dest.parent().unwrap())
    }
}

fn uid_of_pid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn deploy_replaces_the_running_binary_and_corrects_ownership() {
    let mut stage = Stage::new();
    let old_sha = sha256(&stage.dest);
    assert_eq!(std::fs::metadata(&stage.dest).unwrap().uid(), 0, "the fixture starts root-owned");
    let new = stage.build("botserver", 200, "v2");
    // What a deploy killed during its upload leaves: its root-only staging directory, removed by the next deploy.
    let stale = stage.dest.parent().unwrap().join(".botserver.gbo-ci-stage.00000000deadbeef");
    std::fs::create_dir(&stale).unwrap();
    std::fs::set_permissions(&stale, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(stale.join("upload"), "half an upload").unwrap();

    // No --arg/--cwd/--log: they are taken from the running process (its argv, cwd and log file).
    let output = stage.deploy(&new, &["--output", "json"]);
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));

    // The new build serves, from the target path, as the owner; the old process was stopped.
    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v2".into())));
    assert_eq!(sha256(&stage.dest), sha256(&new));
    let dest_text = stage.dest.display().to_string();
    let running = pids_where(|exe| exe == dest_text);
    assert_eq!(running.len(), 1, "exactly one process runs the new binary");
    assert_eq!(uid_of_pid(running[0]), 65534, "started as the owner");
    assert!(stage.old.try_wait().unwrap().is_some(), "the old process was stopped");

    // Ownership corrected, executable, and the old binary kept as release 1.
    let metadata = std::fs::metadata(&stage.dest).unwrap();
    assert_eq!((metadata.uid(), metadata.gid(), metadata.mode() & 0o7777), (65534, 65534, 0o755));
    let previous = format!("{}.prev.1", stage.dest.display());
    assert_eq!(report["previous_release"], previous.as_str());
    assert_eq!(sha256(Path::new(&previous)), old_sha);
    assert_eq!(report["restart_method"], "process");
    assert_eq!(report["sha256"], sha256(&new).as_str());
    assert!(report["downtime_ms"].as_u64().is_some(), "downtime is reported: {report}");
    assert_eq!(report["stopped_pids"].as_array().unwrap().len(), 1);

    // The new process logs into the inherited log file, and no text-file-busy error anywhere.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("busy") && !stderr.contains("dest open"), "{stderr}");
    let log = std::fs::read_to_string(&stage.log).unwrap();
    assert!(log.contains("botserver v2 listening"), "{log}");
    // No upload or staging directory is left behind.
    assert_eq!(stage.bin_dir_listing(), vec!["botserver", "botserver.prev.1"]);
}

#[test]
fn dry_runs_say_what_a_deploy_or_rollback_would_do_and_change_nothing() {
    let stage = Stage::new();
    let before = std::fs::read_dir(stage.dest.parent().unwrap()).unwrap().count();
    let old_sha = sha256(&stage.dest);
    let new = stage.build("botserver", 200, "v2");
    let output = stage.deploy(&new, &["--dry-run", "--output", "json"]);
    assert!(output.status.success(), "{}", describe(&output));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["restart_method"], "process", "{plan}");
    assert_eq!(plan["stop_pids"], serde_json::json!([stage.old.id()]), "the running v1 would be stopped: {plan}");
    assert_eq!(plan["previous_release"], format!("{}.prev.1", stage.dest.display()).as_str());
    assert_eq!(plan["sha256"], sha256(&new).as_str());
    assert_eq!(plan["already_deployed"], false);
    // The start by hand is inherited from the running process: its script and port, its log.
    let start = &plan["start"];
    assert_eq!(start["owner"], "nobody");
    assert_eq!(start["args"], serde_json::json!([stage.script.display().to_string(), stage.port.to_string()]));
    assert_eq!(start["log"], stage.log.display().to_string().as_str());

    // Nothing changed: no upload, no release, no lock file, the same binary, v1 still serving from the same process.
    assert_eq!(std::fs::read_dir(stage.dest.parent().unwrap()).unwrap().count(), before);
    assert_eq!(sha256(&stage.dest), old_sha);
    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v1".into())));
    let dest_text = stage.dest.display().to_string();
    assert_eq!(pids_where(|exe| exe == dest_text), vec![stage.old.id()]);

    // The text form says it is a dry run.
    let output = stage.deploy(&new, &["--dry-run"]);
    assert!(output.status.success(), "{}", describe(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("dry run: nothing was changed") && text.contains("stop pid"), "{text}");

    // Rollback's dry run: with no release there is nothing to roll back to (exit 2, no lock file made) ...
    // (v1's binary belongs to root in this fixture, and a rollback never starts a release as root on its own, so
    // the owner is named.)
    let rollback_dry_run = || stage.rollback(&["--dry-run", "--output", "json", "--owner", "nobody"]);
    let output = rollback_dry_run();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing to roll back to"), "{}", describe(&output));
    assert_eq!(std::fs::read_dir(stage.dest.parent().unwrap()).unwrap().count(), before, "not even a lock file");
    // ... and after a real deploy it names v1's release and the v2 process, and changes nothing.
    let output = stage.deploy(&new, &[]);
    assert!(output.status.success(), "{}", describe(&output));
    let v2_pids = pids_where(|exe| exe == dest_text);
    let listing = stage.bin_dir_listing();
    let output = rollback_dry_run();
    assert!(output.status.success(), "{}", describe(&output));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(plan["restore_release"], format!("{}.prev.1", stage.dest.display()).as_str(), "{plan}");
    assert_eq!(plan["sha256"], old_sha.as_str());
    assert_eq!(plan["stop_pids"], serde_json::json!(v2_pids));
    assert_eq!(stage.bin_dir_listing(), listing);
    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v2".into())));
}

#[test]
fn failing_health_rolls_back_and_the_old_release_serves_again() {
    let stage = Stage::new();
    let old_sha = sha256(&stage.dest);
    let broken = stage.build("botserver", 500, "v2-broken");
    let output = stage.deploy(&broken, &["--health-timeout", "3"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("did not become healthy"), "{stderr}");
    assert!(stderr.contains("HTTP 500"), "{stderr}");
    assert!(stderr.contains("healthy again"), "{stderr}");

    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v1".into())));
    assert_eq!(sha256(&stage.dest), old_sha);
    let dest_text = stage.dest.display().to_string();
    let running = pids_where(|exe| exe == dest_text);
    assert_eq!(running.len(), 1, "only the restored release runs");
    assert_eq!(uid_of_pid(running[0]), 65534);
}

#[test]
fn explicit_start_options_keep_and_prune_releases_then_rollback_on_demand() {
    let stage = Stage::new();
    let other_log = stage.sshd.mkdir("var/log/gbo").join("botserver.log");
    give_to_service_user(other_log.parent().unwrap());
    let cwd = stage.sshd.mkdir("srv");
    let script = stage.script.display().to_string();
    let port = stage.port.to_string();
    let other_log_text = other_log.display().to_string();
    let cwd_text = cwd.display().to_string();
    let mut shas = vec![sha256(&stage.dest)];
    for version in ["v2", "v3", "v4"] {
        let build = stage.build(&format!("botserver-{version}"), 200, version);
        shas.push(sha256(&build));
        let args = [
            "--arg",
            script.as_str(),
            "--arg",
            port.as_str(),
            "--log",
            other_log_text.as_str(),
            "--cwd",
            cwd_text.as_str(),
            "--keep",
            "2",
        ];
        let output = stage.deploy(&build, &args);
        assert!(output.status.success(), "{}", describe(&output));
        assert_eq!(http_get(stage.port, "/api/health"), Some((200, version.into())));
    }
    let listing = stage.bin_dir_listing();
    assert_eq!(listing, vec!["botserver", "botserver.prev.2", "botserver.prev.3"], "keep 2 pruned release 1");
    let log = std::fs::read_to_string(&other_log).unwrap();
    assert!(log.contains("botserver v4 listening"), "{log}");
    let dest_text = stage.dest.display().to_string();
    let pid = pids_where(|exe| exe == dest_text)[0];
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(), cwd);

    // Roll back on demand: v3 returns, from release 3.
    let output = stage.rollback(&["--health", &stage.health_url(), "--health-timeout", "15", "--output", "json"]);
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["healthy"], true);
    assert_eq!(report["restored_release"], format!("{}.prev.3", stage.dest.display()).as_str());
    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v3".into())));
    assert_eq!(sha256(&stage.dest), shas[2]);
    assert_eq!(stage.bin_dir_listing(), vec!["botserver", "botserver.prev.2"]);
}

#[test]
fn deploys_of_one_target_take_turns_and_a_held_lock_names_its_holder() {
    let stage = Stage::new();
    // The lock lives in root's own directory, named by a hash of the target path.
    let lock = PathBuf::from(gbo_ci::deploy::lock_path(&stage.dest.display().to_string().parse().unwrap()));
    assert!(lock.starts_with("/run/lock/gbo-ci"), "{}", lock.display());
    let v1_sha = sha256(&stage.dest);
    // A deploy that holds the lock for a while: its build never gets healthy, so it waits 6 s, then rolls back.
    let broken = stage.build("botserver-broken", 500, "v2-broken");
    let spawn = |binary: &Path, extra: &[&str]| {
        let mut command = stage.deploy_command(binary, extra);
        command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        command.spawn().unwrap()
    };
    let first = spawn(&broken, &["--health-timeout", "6"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&lock).unwrap_or_default().starts_with("pid ") {
        assert!(std::time::Instant::now() < deadline, "the first deploy never took {}", lock.display());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let holder = std::fs::read_to_string(&lock).unwrap();
    assert!(holder.contains("root from 127.0.0.1"), "the holder records who it is: {holder}");

    // One that will not wait: refused, naming the lock and its holder, and nothing of it reaches the remote (the
    // first deploy goes on meanwhile, so the directory is compared by content, not by listing).
    let v3 = stage.build("botserver-v3", 200, "v3");
    let refused = stage.deploy(&v3, &["--lock-wait", "1"]);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains(&lock.display().to_string()) && stderr.contains(holder.trim()), "{stderr}");
    assert!(stderr.contains("--lock-wait"), "the message says how to wait longer: {stderr}");
    assert!(!stderr.contains("uploading"), "refused before the upload: {stderr}");
    let bin_dir = stage.dest.parent().unwrap();
    let v3_bytes = std::fs::read(&v3).unwrap();
    // (An entry of the first deploy can vanish between the listing and the read: its upload is renamed.)
    let landed =
        stage.bin_dir_listing().iter().any(|name| std::fs::read(bin_dir.join(name)).is_ok_and(|b| b == v3_bytes));
    assert!(!landed, "nothing of v3 landed");

    // One that waits: it runs once the first has rolled back, from the state the first left.
    let waiting = spawn(&v3, &["--health-timeout", "15", "--output", "json"]);
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(2), "the broken build fails: {}", describe(&first));
    assert!(String::from_utf8_lossy(&first.stderr).contains("healthy again"), "{}", describe(&first));
    let waiting = waiting.wait_with_output().unwrap();
    assert!(waiting.status.success(), "{}", describe(&waiting));
    let stderr = String::from_utf8_lossy(&waiting.stderr);
    assert!(stderr.contains("another deploy of this target is running"), "it waited and said so: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&waiting.stdout).unwrap();
    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v3".into())));
    assert_eq!(sha256(&stage.dest), sha256(&v3));
    let previous = report["previous_release"].as_str().unwrap().to_string();
    assert_eq!(sha256(Path::new(&previous)), v1_sha, "the release kept is v1, which the first put back");
    let dest_text = stage.dest.display().to_string();
    assert_eq!(pids_where(|exe| exe == dest_text).len(), 1, "exactly one botserver runs");
    // The lock was released with the deploy: a deploy that will not wait at all goes through.
    let v4 = stage.build("botserver-v4", 200, "v4");
    let output = stage.deploy(&v4, &["--lock-wait", "0"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v4".into())));
}

/// Corrupts the upload on the remote disk between the upload and the checksum check, through the public
/// observer hook (the "remote" is this machine, so the temporary file is reachable directly).
struct Corrupter;

impl gbo_ci::deploy::DeployObserver for Corrupter {
    fn on_event(&mut self, event: &gbo_ci::deploy::DeployEvent) {
        if let gbo_ci::deploy::DeployEvent::Uploaded { temp_path } = event {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().append(true).open(temp_path).unwrap();
            file.write_all(b"bit rot").unwrap();
        }
    }
}

#[test]
fn checksum_mismatch_stops_before_the_swap() {
    let stage = Stage::new();
    let old_sha = sha256(&stage.dest);
    let before = stage.bin_dir_listing();
    let new = stage.build("botserver", 200, "v2");
    let options =
        gbo_ci::deploy::DeployOptions { health_timeout: std::time::Duration::from_secs(10), ..stage.options(&new) };
    let error = gbo_ci::deploy::deploy(&stage.sshd.connect_options(), &options, &mut Corrupter).unwrap_err();
    assert!(matches!(error, gbo_ci::Error::ChecksumMismatch { .. }), "{error}");
    assert!(error.to_string().contains("was not touched"), "{error}");
    assert_eq!(sha256(&stage.dest), old_sha);
    assert_eq!(stage.bin_dir_listing(), before, "the upload was removed, no release was made");
    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v1".into())), "the old process still serves");
}

#[test]
fn a_changed_host_key_is_always_refused() {
    let stage = Stage::new();
    let other = stage.sshd.path("other_host_key");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    let other_line = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_line = other_line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    std::fs::write(&stage.sshd.known_hosts, format!("[127.0.0.1]:{} {other_line}\n", stage.sshd.port)).unwrap();
    let before = stage.bin_dir_listing();
    let new = stage.build("botserver", 200, "v2");
    for extra in [&[][..], &["--accept-new-host-key"][..]] {
        let output = stage.deploy(&new, extra);
        assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("HOST KEY CHANGED"), "{stderr}");
    }
    assert_eq!(stage.bin_dir_listing(), before);
    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v1".into())));
    let known = std::fs::read_to_string(&stage.sshd.known_hosts).unwrap();
    assert!(!known.contains(&stage.sshd.host_key_line), "the new key was not recorded");
}

#[test]
fn an_unknown_host_key_needs_explicit_first_contact() {
    let sshd = Sshd::start();
    let bin = sshd.mkdir("opt/gbo/bin");
    let binary = bin.join("botserver");
    make_botserver(&binary, 200, "v1", 0);
    std::fs::write(&sshd.known_hosts, "").unwrap();
    let verify = |extra: &[&str]| {
        sshd.gbo_ci()
            .arg("verify")
            .args(sshd.connect_args())
            .arg("--binary")
            .arg(&binary)
            .arg("--dest")
            .arg(&binary)
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = verify(&[]);
    assert_eq!(refused.status.code(), Some(2), "{}", describe(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("is not in") && stderr.contains("SHA256:"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&sshd.known_hosts).unwrap(), "");

    let accepted = verify(&["--accept-new-host-key"]);
    assert!(accepted.status.success(), "{}", describe(&accepted));
    let known = std::fs::read_to_string(&sshd.known_hosts).unwrap();
    assert_eq!(known, format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_key_line));
    // OpenSSH's own client accepts the recorded line.
    let ssh = std::process::Command::new("ssh")
        .args(["-F", sshd.ssh_config.to_str().unwrap(), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
        .args(["testhost", "true"])
        .output()
        .unwrap();
    assert!(ssh.status.success(), "{}", describe(&ssh));
}

#[test]
fn verify_catches_a_stale_binary() {
    let stage = Stage::new();
    let same = stage.sshd.path("build/same");
    std::fs::copy(&stage.dest, &same).unwrap();
    let newer = stage.build("botserver", 200, "v2");
    let run = |binary: &Path| {
        stage
            .sshd
            .gbo_ci()
            .args(["--output", "json", "verify"])
            .args(stage.sshd.connect_args())
            .arg("--binary")
            .arg(binary)
            .arg("--dest")
            .arg(&stage.dest)
            .output()
            .unwrap()
    };
    let ok = run(&same);
    assert_eq!(ok.status.code(), Some(0), "{}", describe(&ok));
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["findings"].as_array().unwrap().len(), 0);
    assert_eq!(report["processes"].as_array().unwrap().len(), 1);

    let stale = run(&newer);
    assert_eq!(stale.status.code(), Some(1), "{}", describe(&stale));
    let report: serde_json::Value = serde_json::from_slice(&stale.stdout).unwrap();
    assert_eq!(report["remote_sha256"], sha256(&stage.dest).as_str());
    assert_eq!(report["local_sha256"], sha256(&newer).as_str());
    let finding = report["findings"][0].as_str().unwrap();
    assert!(finding.contains("differs from the local artifact"), "{finding}");

    // A binary swapped by hand but never restarted is caught too.
    std::fs::copy(&newer, stage.sshd.path("opt/gbo/bin/.swap")).unwrap();
    std::fs::rename(stage.sshd.path("opt/gbo/bin/.swap"), &stage.dest).unwrap();
    let unrestarted = run(&newer);
    assert_eq!(unrestarted.status.code(), Some(1), "{}", describe(&unrestarted));
    let text = String::from_utf8_lossy(&unrestarted.stdout);
    assert!(text.contains("never restarted"), "{text}");
}

#[test]
fn bad_inputs_exit_2_and_change_nothing() {
    let stage = Stage::new();
    let before = stage.bin_dir_listing();
    let old_sha = sha256(&stage.dest);
    let new = stage.build("botserver", 200, "v2");
    let stranger = stage.sshd.path("stranger_key");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    let missing_dir = stage.sshd.path("opt/gbo/nope/botserver").display().to_string();
    let build_dir = stage.sshd.path("build").display().to_string();
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("unreadable binary", vec!["--binary".into(), "/nonexistent/botserver".into()], "/nonexistent/botserver"),
        ("binary is a directory", vec!["--binary".into(), build_dir.clone()], "non-empty regular file"),
        ("unknown host name", vec!["--host".into(), "no such host!".into()], "invalid host"),
        (
            "refused key",
            vec!["--identity".into(), stranger.display().to_string()],
            "authentication as root@127.0.0.1 failed",
        ),
        ("missing destination directory", vec!["--dest".into(), missing_dir.clone()], "does not exist"),
        ("health URL is not a URL", vec!["--health".into(), "localhost:5858/api/health".into()], "invalid health URL"),
        ("unknown owner", vec!["--owner".into(), "nosuchuser42".into()], "owner user does not exist"),
        ("relative destination", vec!["--dest".into(), "bin/botserver".into()], "invalid remote path"),
    ];
    for (name, overrides, expected) in cases {
        let mut args: Vec<String> = vec![
            "deploy".into(),
            "--host".into(),
            "testhost".into(),
            "--ssh-config".into(),
            stage.sshd.ssh_config.display().to_string(),
            "--binary".into(),
            new.display().to_string(),
            "--dest".into(),
            stage.dest.display().to_string(),
            "--owner".into(),
            "nobody".into(),
            "--health".into(),
            stage.health_url(),
        ];
        for pair in overrides.chunks(2) {
            match args.iter().position(|arg| *arg == pair[0]) {
                Some(index) => args[index + 1] = pair[1].clone(),
                None => args.extend(pair.iter().cloned()),
            }
        }
        let output = stage.sshd.gbo_ci().args(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}: {}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{name}: expected `{expected}` in:\n{stderr}");
        assert!(output.stdout.is_empty(), "{name}: nothing on stdout");
        assert_eq!(stage.bin_dir_listing(), before, "{name}: nothing changed on the remote");
        assert_eq!(sha256(&stage.dest), old_sha, "{name}");
    }
    assert!(!Path::new(&missing_dir).exists());
    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v1".into())));
}

#[test]
fn keys_from_an_agent_and_from_the_environment_authenticate() {
    let sshd = Sshd::start();
    let bin = sshd.mkdir("opt/gbo/bin");
    let binary = bin.join("botserver");
    make_botserver(&binary, 200, "v1", 0);
    // A config without IdentityFile, so only the agent or the environment can provide the key.
    let bare_config = sshd.path("ssh_config_bare");
    std::fs::write(
        &bare_config,
        format!(
            "Host testhost\n  HostName 127.0.0.1\n  Port {}\n  User root\n  UserKnownHostsFile {}\n",
            sshd.port,
            sshd.known_hosts.display()
        ),
    )
    .unwrap();
    let verify = |command: &mut std::process::Command| {
        command
            .arg("verify")
            .args(["--host", "testhost", "--ssh-config", bare_config.to_str().unwrap()])
            .arg("--binary")
            .arg(&binary)
            .arg("--dest")
            .arg(&binary)
            .output()
            .unwrap()
    };
    let without = verify(&mut sshd.gbo_ci());
    assert_eq!(without.status.code(), Some(2), "{}", describe(&without));

    let pem = std::fs::read_to_string(&sshd.client_key).unwrap();
    let with_env = verify(sshd.gbo_ci().env("GBO_CI_SSH_KEY", &pem));
    assert!(with_env.status.success(), "{}", describe(&with_env));
    let all_output =
        format!("{}{}", String::from_utf8_lossy(&with_env.stdout), String::from_utf8_lossy(&with_env.stderr));
    assert!(!all_output.contains("PRIVATE KEY"), "the key is never printed");

    let (mut agent, socket) = sshd.agent();
    let with_agent = verify(sshd.gbo_ci().env("SSH_AUTH_SOCK", &socket));
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(with_agent.status.success(), "{}", describe(&with_agent));
}

impl Stage {
    /// Library options for a deploy of `binary` to this stage.
    fn options(&self, binary: &Path) -> gbo_ci::deploy::DeployOptions {
        deploy_options(binary, &self.dest, &self.health_url(), 5)
    }
}

/// Breaks the start of the new release at the first restart (`break_start`), and mends it when the deploy rolls
/// back (`mend`).
struct AtFirstRestart<B: FnMut(), M: FnMut()> {
    break_start: B,
    mend: M,
    restarts: usize,
    rolled_back: bool,
}

impl<B: FnMut(), M: FnMut()> AtFirstRestart<B, M> {
    fn new(break_start: B, mend: M) -> Self {
        Self { break_start, mend, restarts: 0, rolled_back: false }
    }
}

impl<B: FnMut(), M: FnMut()> gbo_ci::deploy::DeployObserver for AtFirstRestart<B, M> {
    fn on_event(&mut self, event: &gbo_ci::deploy::DeployEvent) {
        match event {
            gbo_ci::deploy::DeployEvent::Restarting { .. } => {
                self.restarts += 1;
                if self.restarts == 1 {
                    (self.break_start)();
                }
            }
            gbo_ci::deploy::DeployEvent::RollingBack { .. } => {
                self.rolled_back = true;
                (self.mend)();
            }
            _ => {}
        }
    }
}

#[test]
fn a_start_command_that_fails_is_rolled_back() {
    let stage = Stage::new();
    let old_sha = sha256(&stage.dest);
    let cwd = stage.sshd.mkdir("srv");
    let v2 = stage.build("botserver", 200, "v2");
    let mut options = stage.options(&v2);
    options.start.cwd = Some(cwd.display().to_string().parse().unwrap());
    // The working directory goes away while the new release is started (the start by hand cannot `cd`), and comes
    // back for the rollback.
    let mut breaker = AtFirstRestart::new(
        || std::fs::remove_dir(&cwd).unwrap(),
        || {
            std::fs::create_dir(&cwd).unwrap();
            std::fs::set_permissions(&cwd, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        },
    );
    let result = gbo_ci::deploy::deploy(&stage.sshd.connect_options(), &options, &mut breaker);
    let error = result.expect_err("the deploy fails");
    eprintln!("failed as expected: {error}");
    assert!(breaker.rolled_back, "the failed start was rolled back: {error}");
    let message = error.to_string();
    assert!(message.contains("restart") && message.contains("healthy again"), "{message}");
    assert_eq!(sha256(&stage.dest), old_sha, "the previous release is back");
    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v1".into())), "and serves");
}

#[test]
fn a_restart_that_hangs_is_cut_off_and_rolled_back() {
    require("mkfifo");
    let stage = Stage::new();
    let old_sha = sha256(&stage.dest);
    let v2 = stage.build("botserver", 200, "v2");
    let mut options = stage.options(&v2);
    options.stop_timeout = std::time::Duration::from_secs(2);
    options.restart_timeout = std::time::Duration::from_secs(6);
    // The start of the new release hangs (its log becomes a FIFO nobody reads, so opening it blocks); the log is put
    // back for the rollback, and afterwards the hung opener is unblocked.
    let log = &stage.log;
    let mut hanger = AtFirstRestart::new(
        || {
            std::fs::rename(log, log.with_extension("saved")).unwrap();
            let made = std::process::Command::new("mkfifo").arg(log).status().unwrap();
            assert!(made.success());
            give_to_service_user(log);
        },
        || {
            std::fs::rename(log, log.with_extension("fifo")).unwrap();
            std::fs::rename(log.with_extension("saved"), log).unwrap();
        },
    );
    let started = std::time::Instant::now();
    let result = gbo_ci::deploy::deploy(&stage.sshd.connect_options(), &options, &mut hanger);
    let elapsed = started.elapsed();
    // Release the hung opener (it then dies writing to the pipe gbo-ci no longer reads).
    let fifo = stage.log.with_extension("fifo");
    std::thread::spawn(move || drop(std::fs::File::open(fifo)));
    let error = result.expect_err("the deploy fails");
    eprintln!("failed as expected: {error}");
    assert!(hanger.rolled_back, "the hung restart was rolled back: {error}");
    let message = error.to_string();
    assert!(message.contains("did not finish within") && message.contains("healthy again"), "{message}");
    assert!(elapsed < std::time::Duration::from_secs(45), "cut off by the restart timeout, not later: {elapsed:?}");
    assert_eq!(sha256(&stage.dest), old_sha);
    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v1".into())));
}

#[test]
fn a_stop_longer_than_a_minute_is_not_cut_off_by_the_session_timeout() {
    // The running v1 ignores SIGTERM, so the stop waits the whole --stop-timeout (65 s, longer than the SSH
    // session's usual 60 s bound on one command) before SIGKILL.
    let stage = Stage::with_v1_flags("term=ignore");
    let v2 = stage.build("botserver", 200, "v2");
    let output = stage.deploy(&v2, &["--stop-timeout", "65", "--output", "json"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v2".into())));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["downtime_ms"].as_u64().unwrap() >= 65_000, "the stop waited for SIGKILL: {report}");
}

#[test]
fn a_deploy_log_past_its_cap_keeps_its_last_bytes() {
    let stage = Stage::new();
    // 17 MiB of old output, the newest line last, written as the service user's file keeps its owner.
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(&stage.log).unwrap();
        let block = vec![b'x'; 1024 * 1024];
        for _ in 0..17 {
            file.write_all(&block).unwrap();
        }
        file.write_all(b"\nthe newest old line\n").unwrap();
    }
    let new = stage.build("botserver", 200, "v2");
    let output = stage.deploy(&new, &[]);
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(http_get(stage.port, "/api/health"), Some((200, "v2".into())));
    let log = std::fs::read(&stage.log).unwrap();
    let cap = gbo_ci::remote_dir::LOG_CAP_BYTES as usize;
    let keep = gbo_ci::remote_dir::LOG_KEEP_BYTES as usize;
    assert!(log.len() < cap, "the log was not cut: {} bytes", log.len());
    assert!(log.len() >= keep, "the cut kept too little: {} bytes", log.len());
    let text = String::from_utf8_lossy(&log);
    let newest = text.find("the newest old line").expect("the newest old output was lost");
    let started = text.find("botserver v2 listening").expect("the new process does not log");
    assert!(newest < started, "{}", &text[text.len().saturating_sub(300)..]);
    assert_eq!(std::fs::metadata(&stage.log).unwrap().uid(), 65534, "the log changed owner");
}
