//! `gbo upgrade` against the real daemon and a real PostgreSQL: a rebuilt image (the test image with other metadata
//! and a template that marks its containers) and a broken one (a template that replaces the tables unit's command
//! by a sleep, so PostgreSQL never answers and the health check fails).
//!
//! One tenant goes through: install on the test image with data; an upgrade refused because the data directory is of
//! another PostgreSQL major than the new image serves (nothing changed); an upgrade to the broken image, rolled back (exit
//! 2 naming the role, the failed check and the kept snapshot; the old container serves the same data); an upgrade to
//! the rebuilt image killed with SIGKILL once the old container is parked; the next run converges (data intact, the
//! container runs the new image, plan and upgrade plan empty, status no longer points at an upgrade).

use std::process::Command;
use std::time::{Duration, Instant};

use gbo_tests::programs::require_program;
use gbo_tests::{gbo, gbo_bin, lxd, require_test_image, unique_name, TestTenant, TEST_IMAGE};

fn lxc(args: &[&str]) -> (i32, String) {
    let out = Command::new(require_program("lxc")).args(args).output().expect("lxc");
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn lxc_ok(args: &[&str]) -> String {
    let (code, out) = lxc(args);
    assert_eq!(code, 0, "lxc {args:?}: {out}");
    out.trim().to_string()
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(require_program(program)).args(args).output().expect(program);
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Images made for the test, deleted on drop.
struct Images {
    aliases: Vec<String>,
}

impl Drop for Images {
    fn drop(&mut self) {
        for alias in &self.aliases {
            let _ = Command::new("lxc").args(["image", "delete", alias]).output();
        }
    }
}

/// An image to derive: its alias, extra metadata.yaml text, and its templates (path in the container, content).
type Variant<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// Derive images from the test image by changing its metadata only (new fingerprints, same root filesystem):
/// `(alias, extra metadata.yaml text, templates)` each.
fn derive_images(variants: &[Variant<'_>]) -> Images {
    let images = Images { aliases: variants.iter().map(|(a, _, _)| a.to_string()).collect() };
    let dir = tempfile::Builder::new().prefix("gbot-images-").tempdir_in("/var/tmp").expect("tempdir");
    lxc_ok(&["image", "export", TEST_IMAGE, &dir.path().join("base").display().to_string()]);
    let base = std::fs::read_dir(dir.path())
        .expect("read dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("base")))
        .expect("exported tarball");
    let base_s = base.display().to_string();
    run("tar", &["-xf", &base_s, "-C", &dir.path().display().to_string(), "metadata.yaml"]);
    let metadata = std::fs::read_to_string(dir.path().join("metadata.yaml")).expect("metadata.yaml");
    run("tar", &["--delete", "-f", &base_s, "metadata.yaml"]);
    for (i, (alias, extra, templates)) in variants.iter().enumerate() {
        let work = dir.path().join(format!("v{i}"));
        std::fs::create_dir_all(work.join("templates")).expect("mkdir");
        let mut text = metadata.replace("templates: {}", "");
        text.push_str(extra);
        if !templates.is_empty() {
            text.push_str("\ntemplates:\n");
            for (n, (path, content)) in templates.iter().enumerate() {
                text.push_str(&format!("  {path}:\n    when:\n    - create\n    template: t{n}.tpl\n"));
                std::fs::write(work.join("templates").join(format!("t{n}.tpl")), content).expect("template");
            }
        }
        std::fs::write(work.join("metadata.yaml"), text).expect("metadata");
        let tarball = dir.path().join(format!("v{i}.tar"));
        let last = i + 1 == variants.len();
        if last {
            std::fs::rename(&base, &tarball).expect("rename");
        } else {
            std::fs::copy(&base, &tarball).expect("copy tarball");
        }
        let t = tarball.display().to_string();
        run("tar", &["-rf", &t, "-C", &work.display().to_string(), "metadata.yaml", "templates"]);
        lxc_ok(&["image", "import", &t, "--alias", alias]);
        std::fs::remove_file(&tarball).expect("rm tarball");
    }
    images
}

fn fingerprint(alias: &str) -> String {
    let out = lxc_ok(&["image", "list", alias, "--format", "csv", "-c", "F"]);
    out.lines().next().unwrap_or_default().to_string()
}

fn rows(container: &str) -> (i32, String) {
    let (code, out) =
        lxc(&["exec", container, "--", "psql", "-U", "gbuser", "botserver", "-tAc", "SELECT v FROM kept ORDER BY v"]);
    (code, out.trim().to_string())
}

fn containers_of(tenant: &str) -> Vec<String> {
    lxc_ok(&["list", "--format", "csv", "-c", "n"])
        .lines()
        .filter(|n| n.starts_with(&format!("{tenant}-")))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_refuses_a_postgres_major_change_rolls_back_a_broken_image_and_converges_after_a_kill() {
    let client = lxd().await;
    require_test_image(&client).await;
    let good = unique_name("img-new");
    let broken = unique_name("img-broken");
    let t = TestTenant::new();
    let stack = t.stack_dir();
    let tables = t.container("tables");
    // The images are made while the tenant installs (independent steps).
    let (images, installed) = {
        let (good, broken) = (good.clone(), broken.clone());
        let images = tokio::task::spawn_blocking(move || {
            derive_images(&[
                (
                    &broken,
                    "",
                    &[(
                        "/etc/systemd/system/tables.service.d/zz-broken.conf",
                        "[Service]\nType=simple\nExecStart=\nExecStart=/bin/sleep infinity\n",
                    )],
                ),
                (&good, "", &[("/etc/gbo-test-generation", "2\n")]),
            ])
        });
        let install = gbo_tests::gbo_async(
            ["install", "--tenant", &t.name, "--image", TEST_IMAGE, "--stack-dir", &stack, "tables"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        let (images, installed) = tokio::join!(images, install);
        (images.expect("images"), installed)
    };
    assert_eq!(installed.code, 0, "{}", installed.all());
    let old_fp = fingerprint(TEST_IMAGE);
    let good_fp = fingerprint(&good);
    assert_ne!(old_fp, good_fp, "the rebuilt image has its own fingerprint");
    lxc_ok(&[
        "exec",
        &tables,
        "--",
        "psql",
        "-U",
        "gbuser",
        "botserver",
        "-c",
        "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('a'), ('b')",
    ]);

    // status and plan point at the upgrade.
    let status = gbo(&["status", "--tenant", &t.name, "--image", &good, "--output", "json"]);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    assert!(
        report["components"][0]["upgrade"].as_str().is_some_and(|u| u.contains("gbo upgrade")),
        "{}",
        status.stdout
    );
    let plan = gbo(&["plan", "--tenant", &t.name, "--image", &good, "tables"]);
    assert!(plan.stdout.contains("older than"), "{}", plan.all());
    let dry = gbo(&["upgrade", "--tenant", &t.name, "--image", &good, "--dry-run"]);
    assert!(dry.code == 0 && dry.stdout.contains("rebuild from"), "{}", dry.all());

    // A PostgreSQL major-version change is refused before anything changes, with the procedure. The real detection
    // reads the data directory's PG_VERSION on the host and the majors under /usr/lib/postgresql in the staged
    // container of the new image: a data directory written by PostgreSQL 14 (its PG_VERSION says so) meets an
    // image that carries 15 only. Container, image and rows stay as they were; no snapshot, no temporary container.
    let pg_version = t.stack.path().join("tables/data/pgdata/PG_VERSION");
    let real_version = std::fs::read_to_string(&pg_version).expect("PG_VERSION");
    assert_eq!(real_version.trim(), gbo_components::render::postgres::PG_MAJOR.to_string(), "the test image's major");
    std::fs::write(&pg_version, "14\n").expect("writing PG_VERSION");
    let refused = gbo(&["upgrade", "--tenant", &t.name, "--image", &good, "tables"]);
    let pg_version_after = std::fs::read_to_string(&pg_version).expect("PG_VERSION");
    std::fs::write(&pg_version, &real_version).expect("restoring PG_VERSION");
    assert_eq!(refused.code, 2, "{}", refused.all());
    let text = refused.all();
    assert!(
        text.contains("PostgreSQL 14")
            && text.contains(&format!("serves PostgreSQL {}", gbo_components::render::postgres::PG_MAJOR))
            && text.contains("Procedure")
            && text.contains("gbo migrate"),
        "{text}"
    );
    assert_eq!(pg_version_after, "14\n", "the data directory was touched");
    assert_eq!(lxc_ok(&["config", "get", &tables, "volatile.base_image"]), old_fp, "the container was replaced");
    let state: serde_json::Value =
        serde_json::from_str(&lxc_ok(&["query", &format!("/1.0/instances/{tables}/state")])).expect("state");
    assert_eq!(state["status"], "Running", "{state}");
    assert_eq!(lxc_ok(&["query", &format!("/1.0/instances/{tables}/snapshots")]), "[]", "a snapshot was taken");
    assert_eq!(containers_of(&t.name), vec![tables.clone()], "temporary containers left");
    assert_eq!(rows(&tables), (0, "a\nb".to_string()));

    // A broken image: rolled back, exit 2 naming the role, the check and the snapshot; same data served.
    let failed = gbo(&["upgrade", "--tenant", &t.name, "--image", &broken, "--health-timeout", "15", "tables"]);
    assert_eq!(failed.code, 2, "{}", failed.all());
    let text = failed.all();
    assert!(text.contains("tables:") && text.contains("health check failed"), "{text}");
    let snapshot = text
        .split("snapshot `")
        .nth(1)
        .and_then(|s| s.split('`').next())
        .unwrap_or_else(|| panic!("no snapshot named: {text}"))
        .to_string();
    assert!(snapshot.starts_with("upgrade-"), "{text}");
    assert!(text.contains("healthy again"), "{text}");
    assert_eq!(lxc_ok(&["config", "get", &tables, "volatile.base_image"]), old_fp, "not the old container");
    assert_eq!(rows(&tables), (0, "a\nb".to_string()));
    assert!(lxc_ok(&["info", &tables]).contains(&snapshot), "snapshot {snapshot} not kept");
    assert_eq!(containers_of(&t.name), vec![tables.clone()], "temporary containers left");

    // An upgrade killed once the old container is parked; the next run converges.
    let mut child = Command::new(gbo_bin())
        .args(["upgrade", "--tenant", &t.name, "--image", &good, "tables"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("gbo upgrade");
    let parked = format!("{tables}-gbo-old");
    let start = Instant::now();
    while !containers_of(&t.name).contains(&parked) {
        assert!(start.elapsed() < Duration::from_secs(300), "the old container was never parked");
        assert!(child.try_wait().expect("wait").is_none(), "the upgrade ended before it parked the old container");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let plan = gbo(&["upgrade", "--tenant", &t.name, "--image", &good, "--dry-run"]);
    assert!(plan.stdout.contains("interrupted upgrade"), "{}", plan.all());
    let again = gbo(&["upgrade", "--tenant", &t.name, "--image", &good, "tables"]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert_eq!(lxc_ok(&["config", "get", &tables, "volatile.base_image"]), good_fp, "not rebuilt");
    assert_eq!(lxc_ok(&["exec", &tables, "--", "cat", "/etc/gbo-test-generation"]), "2", "not the new root filesystem");
    assert_eq!(rows(&tables), (0, "a\nb".to_string()), "data lost");
    assert_eq!(containers_of(&t.name), vec![tables.clone()], "temporary containers left");
    let plan = gbo(&["plan", "--tenant", &t.name, "--image", &good, "tables"]);
    assert!(plan.stdout.contains("Nothing to do") && !plan.stdout.contains("older than"), "{}", plan.all());
    let dry = gbo(&["upgrade", "--tenant", &t.name, "--image", &good, "--dry-run"]);
    assert!(dry.stdout.contains("Nothing to do"), "{}", dry.all());
    let status = gbo(&["status", "--tenant", &t.name, "--image", &good, "--output", "json"]);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    assert!(report["components"][0].get("upgrade").is_none(), "{}", status.stdout);
    assert_eq!(status.code, 0, "{}", status.all());
    drop(t);
    drop(images);
}
