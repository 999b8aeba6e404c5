//! Trust boundaries, end to end against the real daemon: what root inside a container can plant in the host
//! directories mounted into it never makes gbo (root on the host) change a host file outside them, and two
//! tenants never share a data directory.
//!
//! Each test keeps a root-owned 0600 sentinel file outside the stack dir and checks, after every gbo command, that
//! its content, owner and mode are unchanged.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use gbo_tests::{gbo, lxd, require_test_image, TestTenant, TEST_IMAGE};

/// A root-owned 0600 file outside every stack dir, with a directory of its own.
struct Sentinel {
    dir: tempfile::TempDir,
    file: PathBuf,
}

impl Sentinel {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("gbot-sentinel-").tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        std::fs::write(&file, "sentinel: must never change\n").expect("write sentinel");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod sentinel");
        Self { dir, file }
    }

    fn assert_intact(&self, after: &str) {
        let meta = std::fs::symlink_metadata(&self.file).unwrap_or_else(|e| panic!("after {after}: sentinel: {e}"));
        assert!(meta.is_file(), "after {after}: the sentinel is no longer a regular file");
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (0, 0, 0o600),
            "after {after}: the sentinel's owner or mode changed"
        );
        let content = std::fs::read_to_string(&self.file).expect("read sentinel");
        assert_eq!(content, "sentinel: must never change\n", "after {after}: the sentinel's content changed");
        let names: Vec<_> = std::fs::read_dir(self.dir.path()).expect("sentinel dir").flatten().collect();
        assert_eq!(names.len(), 1, "after {after}: something was created next to the sentinel");
    }
}

/// Run a shell script as root inside a container (the attacker).
fn inside(container: &str, script: &str) -> String {
    let out = std::process::Command::new("lxc")
        .args(["exec", container, "--", "sh", "-c", script])
        .output()
        .expect("lxc exec");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn host_file(path: &Path) -> (bool, u32, String) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.is_file(), meta.mode() & 0o7777, std::fs::read_to_string(path).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_planted_in_a_mount_never_make_install_change_a_host_file() {
    let client = lxd().await;
    require_test_image(&client).await;
    let t = TestTenant::new();
    let sentinel = Sentinel::new();
    let first = t.install(&["cache"]);
    assert_eq!(first.code, 0, "{}", first.all());
    let cache = t.container("cache");
    let conf = t.stack.path().join("cache/conf/redis.conf");
    let (_, mode, rendered) = host_file(&conf);
    let s = sentinel.file.display();

    // The name the old code wrote through (a fixed temporary), a hard link to the file, and drift to repair.
    inside(
        &cache,
        &format!(
            "ln -sf {s} /opt/gbo/conf/.redis.conf.gbo-tmp && ln -f /opt/gbo/conf/redis.conf /opt/gbo/conf/linked \
             && echo '# drift' >> /opt/gbo/conf/redis.conf"
        ),
    );
    let repaired = t.install(&["cache"]);
    assert_eq!(repaired.code, 0, "{}", repaired.all());
    sentinel.assert_intact("drift repair with links planted at the temporary names");
    assert_eq!(host_file(&conf), (true, mode, rendered.clone()), "the drift was not repaired");
    let linked = std::fs::read_to_string(t.stack.path().join("cache/conf/linked")).expect("linked");
    assert!(linked.ends_with("# drift\n"), "the hard link was written through: {linked}");

    // The file itself replaced by a link to a host file: replaced by the rendered file, the target untouched.
    inside(&cache, &format!("ln -sfn {s} /opt/gbo/conf/redis.conf"));
    let replaced = t.install(&["cache"]);
    assert_eq!(replaced.code, 0, "{}", replaced.all());
    sentinel.assert_intact("drift repair of a file replaced by a symlink");
    assert_eq!(host_file(&conf), (true, mode, rendered.clone()));

    // A FIFO at the file's name: never read (it would block), replaced.
    inside(&cache, "rm -f /opt/gbo/conf/redis.conf && mkfifo /opt/gbo/conf/redis.conf");
    let fifo = t.install(&["cache"]);
    assert_eq!(fifo.code, 0, "{}", fifo.all());
    assert_eq!(host_file(&conf), (true, mode, rendered));

    // A directory at the file's name: refused, naming it, exit 2.
    inside(&cache, "rm -f /opt/gbo/conf/redis.conf && mkdir /opt/gbo/conf/redis.conf");
    let refused = t.install(&["cache"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(
        refused.stderr.contains(&conf.display().to_string()) && refused.stderr.contains("a directory"),
        "{}",
        refused.stderr
    );
    sentinel.assert_intact("install refusing a planted directory");

    // Data with links to host paths survives uninstall --purge, and so does what they point at.
    inside(&cache, "rm -rf /opt/gbo/conf/redis.conf");
    inside(
        &cache,
        &format!("ln -s {s} /opt/gbo/data/file-link && ln -s {} /opt/gbo/data/dir-link", sentinel.dir.path().display()),
    );
    let purge = gbo(&["uninstall", "--tenant", &t.name, "cache", "--purge", "--yes"]);
    assert_eq!(purge.code, 0, "{}", purge.all());
    sentinel.assert_intact("uninstall --purge with links in the data");
    assert!(!t.stack.path().join("cache").exists(), "the role's directory was not purged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_copy_and_restore_links_as_links_and_proxy_apply_stays_inside() {
    let client = lxd().await;
    require_test_image(&client).await;
    let t = TestTenant::new();
    let sentinel = Sentinel::new();
    let first = t.install(&["proxy"]);
    assert_eq!(first.code, 0, "{}", first.all());
    let proxy = t.container("proxy");
    let s = sentinel.file.display();
    let d = sentinel.dir.path().display();
    inside(
        &proxy,
        &format!(
            "mkdir -p /opt/gbo/data/keep && echo kept > /opt/gbo/data/keep/file && ln -s {s} /opt/gbo/data/file-link \
             && ln -s {d} /opt/gbo/data/dir-link && ln /opt/gbo/data/keep/file /opt/gbo/data/hard"
        ),
    );
    let snap = gbo(&["snapshot", "create", &proxy, "before"]);
    assert_eq!(snap.code, 0, "{}", snap.all());
    sentinel.assert_intact("snapshot create");

    // The container replaces its data with links into the host, then the snapshot is restored.
    inside(
        &proxy,
        &format!(
            "rm -rf /opt/gbo/data/keep && ln -s {d} /opt/gbo/data/keep && rm -f /opt/gbo/data/hard \
             && ln -s {s} /opt/gbo/data/hard"
        ),
    );
    let restore = gbo(&["snapshot", "restore", &proxy, "before"]);
    assert_eq!(restore.code, 0, "{}", restore.all());
    sentinel.assert_intact("snapshot restore");
    let data = t.stack.path().join("proxy/data");
    assert_eq!(std::fs::read_to_string(data.join("keep/file")).expect("restored"), "kept\n");
    assert_eq!(std::fs::read_link(data.join("file-link")).expect("link restored as a link"), sentinel.file);
    assert_eq!(
        std::fs::metadata(data.join("hard")).expect("hard").ino(),
        std::fs::metadata(data.join("keep/file")).expect("file").ino(),
        "the hard link was not restored as one"
    );

    // proxy apply goes through LXD's file API and exec, which resolve paths inside the container: links planted
    // at its candidate and backup names reach the container's own files, never the host's.
    let current = std::fs::read_to_string(t.stack.path().join("proxy/conf/config")).expect("config");
    let candidate = format!("{current}\nx.gbot.test {{\n\trespond \"x\" 200\n}}\n");
    let file = t.stack.path().join("new.caddy");
    std::fs::write(&file, candidate).expect("write candidate");
    inside(&proxy, &format!("ln -sf {s} /opt/gbo/conf/config.gbo-candidate"));
    let apply = gbo(&["proxy", "apply", file.to_str().expect("utf-8"), "--tenant", &t.name, "--no-probe"]);
    assert!(apply.code == 0 || apply.code == 2, "{}", apply.all());
    sentinel.assert_intact("proxy apply with a link at the candidate's name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_never_share_a_data_directory() {
    let client = lxd().await;
    require_test_image(&client).await;
    let a = TestTenant::new();
    let b = TestTenant::new();
    // The same --stack-dir for two tenants: the second is refused, naming the first, and nothing is created.
    assert_eq!(a.install(&["cache"]).code, 0);
    let shared = a.stack_dir();
    let refused = gbo(&["install", "--tenant", &b.name, "--image", TEST_IMAGE, "--stack-dir", &shared, "cache"]);
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(refused.stderr.contains(&format!("tenant {}", a.name)), "{}", refused.stderr);
    let listed = std::process::Command::new("lxc").args(["list", "--format", "csv", "-c", "n"]).output().expect("lxc");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&b.container("cache")), "b's container was created");
    // Nor can b's purge remove a's data, even through a stack dir recorded by hand.
    let purge = gbo(&["uninstall", "--tenant", &b.name, "cache", "--purge", "--yes"]);
    assert_eq!(purge.code, 0, "{}", purge.all());
    assert!(a.stack.path().join("cache/data").is_dir(), "b's purge removed a's data");

    // From one working directory with no --stack-dir: each tenant gets ./botserver-stack/<tenant>.
    let work = tempfile::Builder::new().prefix("gbot-work-").tempdir().expect("work dir");
    let run_in = |args: &[&str]| {
        let out = std::process::Command::new(gbo_tests::gbo_bin())
            .args(args)
            .current_dir(work.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("gbo");
        (
            out.status.code().unwrap_or(-1),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let c = TestTenant::new();
    let d = TestTenant::new();
    for t in [&c, &d] {
        let (code, out) = run_in(&["install", "--tenant", &t.name, "--image", TEST_IMAGE, "cache"]);
        assert_eq!(code, 0, "{out}");
    }
    let stack = work.path().join("botserver-stack");
    for t in [&c, &d] {
        assert!(stack.join(&t.name).join("cache/data").is_dir(), "{} has no directory of its own", t.name);
    }
    assert!(!stack.join("cache").exists(), "a non-default tenant used the default tenant's layout");
    // Data written by one is not in the other's directory.
    inside(&c.container("cache"), "echo c > /opt/gbo/data/gbot-marker");
    assert!(stack.join(&c.name).join("cache/data/gbot-marker").is_file());
    let seen = inside(&d.container("cache"), "ls /opt/gbo/data");
    assert!(!seen.contains("gbot-marker"), "tenant d sees tenant c's data: {seen}");

    // uninstall takes the tenant lock: a held lock makes it wait, then fail naming the holder.
    let lock =
        gbo_ops::install::lock::acquire(&stack.join(&c.name), &c.name, std::time::Duration::ZERO).await.expect("lock");
    let (code, out) = run_in(&["uninstall", "--tenant", &c.name, "cache", "--lock-wait", "1"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&format!("locked by pid {}", std::process::id())), "{out}");
    drop(lock);
    // d's purge removes d's directories only.
    let (code, out) = run_in(&["uninstall", "--tenant", &d.name, "cache", "--purge", "--yes"]);
    assert_eq!(code, 0, "{out}");
    assert!(!stack.join(&d.name).join("cache").exists());
    assert!(stack.join(&c.name).join("cache/data").is_dir(), "d's purge touched c's data");
}
