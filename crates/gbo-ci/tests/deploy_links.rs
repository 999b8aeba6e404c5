//! `gbo-ci deploy` and `rollback` cannot be turned against root by the service user.
//!
//! The layout is the seed's: the SSH user is root, and the directories the binary and its log live in
//! (`/opt/gbo`, `/opt/gbo/bin`, `/opt/gbo/logs`) belong to the service user (`nobody` here, `gbuser` there), who can
//! rename anything in them and plant symbolic links, FIFOs and (where `fs.protected_hardlinks` is off) hard links to
//! files it does not own. Each test plants such links at a name a root step of deploy or rollback uses or might use
//! (the lock, the staged upload, the releases, the binary, the log, the directory itself), then runs gbo-ci against
//! the real sshd. A root-owned sentinel outside the directory (a 0600 file, a 0755 executable, the directory
//! holding them) must keep its content, owner, mode and listing, and gbo-ci either does its job or refuses with exit
//! 2 naming the planted path.
//!
//! Symbolic links, FIFOs and renames are made by the service user itself (a process running as uid 65534). Hard
//! links to root's files are made by the test as root: the kernel's `fs.protected_hardlinks` stops the service user
//! here, but gbo-ci must not rely on a sysctl.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};

use common::*;

/// What a root-owned file outside the directory looks like: content, owner, group, mode.
type FileFacts = (Vec<u8>, u32, u32, u32);

/// A remote laid out like the seed's: `opt/gbo/{bin,logs}` owned by the service user, the v1 botserver running as
/// that user from `opt/gbo/bin/botserver` with its output in `opt/gbo/logs/botserver.log` (the default log), and a
/// root-owned sentinel directory beside `opt`.
struct LinkStage {
    sshd: Sshd,
    bin: PathBuf,
    dest: PathBuf,
    log: PathBuf,
    sentinel: PathBuf,
    port: u16,
    _old: Child,
}

impl LinkStage {
    fn new() -> LinkStage {
        let sshd = Sshd::start();
        let bin = sshd.mkdir("opt/gbo/bin");
        let logs = sshd.mkdir("opt/gbo/logs");
        sshd.mkdir("build");
        for dir in ["opt/gbo", "opt/gbo/bin", "opt/gbo/logs"] {
            give_to_service_user(&sshd.path(dir));
        }
        let dest = bin.join("botserver");
        make_botserver(&dest, 200, "v1", 0);
        give_to_service_user(&dest);
        let log = logs.join("botserver.log");
        std::fs::write(&log, "").unwrap();
        give_to_service_user(&log);

        // The sentinel: root's files outside the service user's tree, which nothing may change.
        let sentinel = sshd.mkdir("sentinel");
        std::fs::write(sentinel.join("secret"), "root's secret: must never change\n").unwrap();
        std::fs::set_permissions(sentinel.join("secret"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        // Named like a release, for a directory swapped under a prune.
        std::fs::write(sentinel.join("botserver.prev.1"), "root's file named like a release\n").unwrap();
        std::fs::set_permissions(
            sentinel.join("botserver.prev.1"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        // A root-owned executable: what a planted hard link could make root run.
        make_botserver(&sentinel.join("tool"), 200, "rooted", 0);

        let script = write_server_script(&sshd);
        let port = free_port();
        let old = start_as_nobody(&dest, &script, port, &log);
        assert_eq!(http_get(port, "/api/health"), Some((200, "v1".into())));
        LinkStage { sshd, bin, dest, log, sentinel, port, _old: old }
    }

    fn secret(&self) -> PathBuf {
        self.sentinel.join("secret")
    }

    /// Every entry of the sentinel directory with its facts, and the directory's own owner and mode.
    fn sentinel_facts(&self) -> (BTreeMap<String, FileFacts>, (u32, u32, u32)) {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&self.sentinel).unwrap() {
            let entry = entry.unwrap();
            let metadata = std::fs::symlink_metadata(entry.path()).unwrap();
            let content = if metadata.is_file() { std::fs::read(entry.path()).unwrap() } else { Vec::new() };
            files.insert(
                entry.file_name().to_string_lossy().into_owned(),
                (content, metadata.uid(), metadata.gid(), metadata.mode()),
            );
        }
        let dir = std::fs::symlink_metadata(&self.sentinel).unwrap();
        (files, (dir.uid(), dir.gid(), dir.mode()))
    }

    fn assert_sentinel_intact(&self, before: &(BTreeMap<String, FileFacts>, (u32, u32, u32)), context: &str) {
        let after = self.sentinel_facts();
        assert_eq!(
            after.0.keys().collect::<Vec<_>>(),
            before.0.keys().collect::<Vec<_>>(),
            "{context}: the sentinel directory's listing changed"
        );
        for (name, facts) in &before.0 {
            let now = &after.0[name];
            assert!(
                now == facts,
                "{context}: sentinel {name} changed: content {:?} -> {:?}, owner {}:{} -> {}:{}, mode {:o} -> {:o}",
                String::from_utf8_lossy(&facts.0[..facts.0.len().min(60)]),
                String::from_utf8_lossy(&now.0[..now.0.len().min(60)]),
                facts.1,
                facts.2,
                now.1,
                now.2,
                facts.3,
                now.3
            );
        }
        assert_eq!(after.1, before.1, "{context}: the sentinel directory's owner or mode changed");
    }

    fn build(&self, name: &str, health: u16, version: &str) -> PathBuf {
        self.sshd.build(name, health, version)
    }

    fn health_url(&self) -> String {
        health_url(self.port)
    }

    fn deploy(&self, binary: &Path, extra: &[&str]) -> Output {
        self.sshd.deploy_command(binary, &self.dest, &self.health_url(), extra).output().unwrap()
    }

    fn rollback(&self, extra: &[&str]) -> Output {
        let health = ["--health", &self.health_url(), "--health-timeout", "15"];
        self.sshd.rollback_command(&self.dest, &health).args(extra).output().unwrap()
    }

    /// Library options for a deploy of `binary` to this stage.
    fn options(&self, binary: &Path, keep: usize) -> gbo_ci::deploy::DeployOptions {
        deploy_options(binary, &self.dest, &self.health_url(), keep)
    }

    fn serving(&self) -> Option<(u16, String)> {
        http_get(self.port, "/api/health")
    }

    fn bin_listing(&self) -> Vec<String> {
        listing(&self.bin)
    }
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Exit 2, and the message names `path`.
fn assert_refused_naming(output: &Output, path: &Path, context: &str) {
    assert_eq!(output.status.code(), Some(2), "{context}: {}", describe(output));
    let stderr = stderr_of(output);
    eprintln!("{context}: {stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{context}: the refusal names {}:\n{stderr}", path.display());
}

#[test]
fn links_at_the_lock_names_are_never_followed() {
    let stage = LinkStage::new();
    let before = stage.sentinel_facts();
    // The lock name beside the target (where gbo-ci kept it) and a staging-directory name it might use.
    let lock = stage.bin.join(".botserver.gbo-ci.lock");
    plant_symlink(&stage.secret(), &lock);
    let stage_name = stage.bin.join(".botserver.gbo-ci-stage.0000000000000000");
    plant_symlink(&stage.sentinel, &stage_name);

    let v2 = stage.build("v2", 200, "v2");
    let output = stage.deploy(&v2, &[]);
    stage.assert_sentinel_intact(&before, "deploy with a symlink at the lock name");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stage.serving(), Some((200, "v2".into())));
    assert_eq!(std::fs::read_link(&lock).unwrap(), stage.secret(), "the planted link is left alone");
    assert_eq!(std::fs::read_link(&stage_name).unwrap(), stage.sentinel);

    // A hard link at the lock name (the test makes it as root: see the module comment).
    std::fs::remove_file(&lock).unwrap();
    std::fs::hard_link(stage.secret(), &lock).unwrap();
    let v3 = stage.build("v3", 200, "v3");
    let output = stage.deploy(&v3, &[]);
    stage.assert_sentinel_intact(&before, "deploy with a hard link at the lock name");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stage.serving(), Some((200, "v3".into())));

    // Rollback takes the same lock.
    let output = stage.rollback(&["--owner", "nobody"]);
    stage.assert_sentinel_intact(&before, "rollback with a hard link at the lock name");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stage.serving(), Some((200, "v2".into())));
    std::fs::remove_file(&lock).unwrap();
}

#[test]
fn links_at_release_names_are_never_followed_and_root_never_runs_a_planted_release() {
    let stage = LinkStage::new();
    let before = stage.sentinel_facts();
    // The first release name a deploy uses, pointing at root's directory.
    let first = PathBuf::from(format!("{}.prev.1", stage.dest.display()));
    plant_symlink(&stage.sentinel, &first);
    let v2 = stage.build("v2", 200, "v2");
    let output = stage.deploy(&v2, &[]);
    stage.assert_sentinel_intact(&before, "deploy with a symlink at the first release name");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stage.serving(), Some((200, "v2".into())));
    assert_eq!(std::fs::read_link(&first).unwrap(), stage.sentinel, "the planted link is left alone");

    // A release name hard-linked to root's secret, newer than every real release; a deploy that prunes.
    let planted = PathBuf::from(format!("{}.prev.7", stage.dest.display()));
    std::fs::hard_link(stage.secret(), &planted).unwrap();
    let v3 = stage.build("v3", 200, "v3");
    let output = stage.deploy(&v3, &["--keep", "2"]);
    stage.assert_sentinel_intact(&before, "deploy pruning past planted releases");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stage.serving(), Some((200, "v3".into())));

    // Roll back once: the newest release is v2's, kept by the last deploy.
    let output = stage.rollback(&[]);
    stage.assert_sentinel_intact(&before, "rollback to the newest release");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stage.serving(), Some((200, "v2".into())));
    // Again: the newest is now the planted hard link to root's file, which must not be run as its owner (root).
    let output = stage.rollback(&[]);
    stage.assert_sentinel_intact(&before, "rollback onto a planted release");
    assert_refused_naming(&output, &planted, "rollback onto a release owned by root");
    assert_eq!(stage.serving(), Some((200, "v2".into())), "v2 still serves");
}

#[test]
fn rollback_never_runs_a_planted_root_executable_as_root() {
    let stage = LinkStage::new();
    let before = stage.sentinel_facts();
    // A hard link to root's executable at a release name: its owner is root.
    let planted = PathBuf::from(format!("{}.prev.9", stage.dest.display()));
    std::fs::hard_link(stage.sentinel.join("tool"), &planted).unwrap();
    let output = stage.rollback(&[]);
    stage.assert_sentinel_intact(&before, "rollback onto a planted root executable");
    let dest_text = stage.dest.display().to_string();
    let as_root: Vec<u32> =
        pids_where(|exe| exe == dest_text).into_iter().filter(|pid| uid_of_pid(*pid) == 0).collect();
    assert!(as_root.is_empty(), "nothing runs the target as root: {as_root:?}\n{}", describe(&output));
    assert_refused_naming(&output, &planted, "rollback onto a root-owned release");
    assert_eq!(stage.serving(), Some((200, "v1".into())), "v1 still serves");
}

/// Plants a symbolic link to root's secret at the next release name once the upload is done, i.e. after gbo-ci
/// looked at the directory and before it keeps the current binary.
struct ReleasePlanter {
    release: PathBuf,
    secret: PathBuf,
}

impl gbo_ci::deploy::DeployObserver for ReleasePlanter {
    fn on_event(&mut self, event: &gbo_ci::deploy::DeployEvent) {
        if let gbo_ci::deploy::DeployEvent::Uploaded { .. } = event {
            plant_symlink(&self.secret, &self.release);
        }
    }
}

#[test]
fn a_release_name_planted_during_the_deploy_is_refused() {
    let stage = LinkStage::new();
    let before = stage.sentinel_facts();
    let v1_sha = sha256(&stage.dest);
    let release = PathBuf::from(format!("{}.prev.1", stage.dest.display()));
    let v2 = stage.build("v2", 200, "v2");
    let mut planter = ReleasePlanter { release: release.clone(), secret: stage.secret() };
    let result = gbo_ci::deploy::deploy(&stage.sshd.connect_options(), &stage.options(&v2, 5), &mut planter);
    stage.assert_sentinel_intact(&before, "a release name planted during the deploy");
    let error = result.expect_err("the deploy is refused");
    eprintln!("refused: {error}");
    assert!(error.to_string().contains(&release.display().to_string()), "the error names the planted path: {error}");
    assert_eq!(sha256(&stage.dest), v1_sha, "the target was not touched");
    assert_eq!(stage.serving(), Some((200, "v1".into())));
    assert_eq!(stage.bin_listing(), vec!["botserver", "botserver.prev.1"], "the staged upload was removed");
}

#[test]
fn a_binary_replaced_by_a_link_is_refused_and_rollback_replaces_it() {
    let stage = LinkStage::new();
    let before = stage.sentinel_facts();
    // The binary itself becomes a link to root's directory (the running v1 keeps its deleted inode).
    plant_symlink(&stage.sentinel, &stage.dest);
    let v2 = stage.build("v2", 200, "v2");
    let output = stage.deploy(&v2, &[]);
    stage.assert_sentinel_intact(&before, "deploy over a binary replaced by a link");
    assert_refused_naming(&output, &stage.dest, "deploy over a link");
    assert_eq!(stage.bin_listing(), vec!["botserver"], "nothing was staged or kept");
    assert_eq!(stage.serving(), Some((200, "v1".into())));

    // After a real deploy, the binary is replaced by a link again: rollback renames the release over it.
    std::fs::remove_file(&stage.dest).unwrap();
    make_botserver(&stage.dest, 200, "v1b", 0);
    give_to_service_user(&stage.dest);
    let output = stage.deploy(&v2, &[]);
    assert!(output.status.success(), "{}", describe(&output));
    plant_symlink(&stage.sentinel, &stage.dest);
    let output = stage.rollback(&["--owner", "nobody"]);
    stage.assert_sentinel_intact(&before, "rollback over a binary replaced by a link");
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(stage.serving(), Some((200, "v1b".into())));
    assert!(std::fs::symlink_metadata(&stage.dest).unwrap().is_file(), "the release replaced the link");
}

#[test]
fn a_log_replaced_by_a_link_is_never_opened_by_root() {
    let stage = LinkStage::new();
    let before = stage.sentinel_facts();
    // The running v1 keeps writing to its (now deleted) log; the default log name is a link to root's secret.
    plant_symlink(&stage.secret(), &stage.log);
    let v2 = stage.build("v2", 200, "v2");
    let output = stage.deploy(&v2, &[]);
    stage.assert_sentinel_intact(&before, "deploy with a symlink at the log name");
    assert_refused_naming(&output, &stage.log, "deploy with a symlink at the log name");
    assert_eq!(stage.serving(), Some((200, "v1".into())));

    // A hard link at the log name (made by the test as root), and the log given explicitly.
    std::fs::remove_file(&stage.log).unwrap();
    std::fs::hard_link(stage.secret(), &stage.log).unwrap();
    let log = stage.log.display().to_string();
    let output = stage.deploy(&v2, &["--log", &log]);
    stage.assert_sentinel_intact(&before, "deploy with a hard link at the log name");
    assert_refused_naming(&output, &stage.log, "deploy with a hard link at the log name");
    assert_eq!(stage.serving(), Some((200, "v1".into())));
    std::fs::remove_file(&stage.log).unwrap();
}

/// Tries, as the service user, to replace the staged upload with a link to root's secret as soon as it is
/// uploaded (between gbo-ci's upload and its checksum, owner and mode steps).
struct UploadSwapper {
    secret: PathBuf,
    attempt: Option<Output>,
}

impl gbo_ci::deploy::DeployObserver for UploadSwapper {
    fn on_event(&mut self, event: &gbo_ci::deploy::DeployEvent) {
        if let gbo_ci::deploy::DeployEvent::Uploaded { temp_path } = event {
            self.attempt = Some(as_service_user(
                "import os, sys\nos.unlink(sys.argv[1])\nos.symlink(sys.argv[2], sys.argv[1])",
                &[Path::new(temp_path), &self.secret],
            ));
        }
    }
}

#[test]
fn the_service_user_cannot_touch_the_staged_upload() {
    let stage = LinkStage::new();
    let before = stage.sentinel_facts();
    let v2 = stage.build("v2", 200, "v2");
    let mut swapper = UploadSwapper { secret: stage.secret(), attempt: None };
    let result = gbo_ci::deploy::deploy(&stage.sshd.connect_options(), &stage.options(&v2, 5), &mut swapper);
    stage.assert_sentinel_intact(&before, "the staged upload under attack");
    let attempt = swapper.attempt.expect("the upload happened");
    assert!(!attempt.status.success(), "the service user could replace the staged upload: {}", describe(&attempt));
    result.expect("the deploy went on with its own upload");
    assert_eq!(stage.serving(), Some((200, "v2".into())));
    assert_eq!(sha256(&stage.dest), sha256(&v2));
}

/// Once the new release is healthy (before old releases are pruned), the service user swaps the directory for a
/// link to root's sentinel directory, which holds a file named like a release.
struct DirectorySwapper {
    bin: PathBuf,
    sentinel: PathBuf,
}

impl gbo_ci::deploy::DeployObserver for DirectorySwapper {
    fn on_event(&mut self, event: &gbo_ci::deploy::DeployEvent) {
        if let gbo_ci::deploy::DeployEvent::Healthy { .. } = event {
            let moved = self.bin.with_file_name("bin.moved");
            let output = as_service_user(
                "import os, sys\nos.rename(sys.argv[1], sys.argv[2])\nos.symlink(sys.argv[3], sys.argv[1])",
                &[&self.bin, &moved, &self.sentinel],
            );
            assert!(output.status.success(), "{}", describe(&output));
        }
    }
}

#[test]
fn a_directory_swapped_during_the_deploy_is_never_followed() {
    let stage = LinkStage::new();
    // Two old releases, so that --keep 1 prunes.
    for number in [1, 2] {
        let release = PathBuf::from(format!("{}.prev.{number}", stage.dest.display()));
        std::fs::copy(&stage.dest, &release).unwrap();
        give_to_service_user(&release);
    }
    let before = stage.sentinel_facts();
    let v2 = stage.build("v2", 200, "v2");
    let mut swapper = DirectorySwapper { bin: stage.bin.clone(), sentinel: stage.sentinel.clone() };
    let result = gbo_ci::deploy::deploy(&stage.sshd.connect_options(), &stage.options(&v2, 1), &mut swapper);
    stage.assert_sentinel_intact(&before, "prune after the directory was swapped for a link");
    let report = result.expect("the deploy itself succeeded");
    assert!(report.pruned_releases.is_empty(), "nothing was pruned through the link: {report:?}");
    let prune_error = report.prune_error.as_deref().unwrap_or_default();
    assert!(
        prune_error.contains(&stage.bin.display().to_string()) && prune_error.contains("symbolic link"),
        "the skipped prune says why, naming the directory: {report:?}"
    );
    assert_eq!(stage.serving(), Some((200, "v2".into())));
    // Put the directory back for the fixture's clean-up.
    std::fs::remove_file(&stage.bin).unwrap();
    std::fs::rename(stage.bin.with_file_name("bin.moved"), &stage.bin).unwrap();
}

#[test]
fn a_destination_directory_reached_through_a_link_is_refused() {
    let stage = LinkStage::new();
    let before = stage.sentinel_facts();
    let moved = stage.bin.with_file_name("bin.moved");
    let output = as_service_user(
        "import os, sys\nos.rename(sys.argv[1], sys.argv[2])\nos.symlink(sys.argv[3], sys.argv[1])",
        &[&stage.bin, &moved, &stage.sentinel],
    );
    assert!(output.status.success(), "{}", describe(&output));
    let v2 = stage.build("v2", 200, "v2");
    let output = stage.deploy(&v2, &[]);
    stage.assert_sentinel_intact(&before, "deploy into a directory that is a link");
    assert_refused_naming(&output, &stage.bin, "deploy into a directory that is a link");
    let output = stage.rollback(&["--owner", "nobody"]);
    stage.assert_sentinel_intact(&before, "rollback in a directory that is a link");
    assert_refused_naming(&output, &stage.bin, "rollback in a directory that is a link");
    assert_eq!(stage.serving(), Some((200, "v1".into())));
    std::fs::remove_file(&stage.bin).unwrap();
    std::fs::rename(&moved, &stage.bin).unwrap();
}

fn uid_of_pid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
        .unwrap_or(u32::MAX)
}
