//! `gbo proxy` bad input: a Caddyfile that does not parse, invalid domain names, a tenant without a proxy
//! container, a missing file: a message naming the value, exit code 2.

use std::process::Command;

fn gbo(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gbo")).args(args).output().expect("gbo runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_exits_2_naming_the_value() {
    let _lxd = gbo_tests::lxd().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.caddy");
    std::fs::write(&broken, "{\n\tstorage file_system {\n\t\troot /x\n\t}\n}\na.example.test {\n\trespond ok\n")
        .expect("write");
    let ghost = gbo_tests::unique_name("ghost");

    let (code, stderr) = gbo(&["proxy", "apply", broken.to_str().expect("utf-8"), "--tenant", &ghost]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&ghost) && stderr.contains("no proxy container"), "{stderr}");

    let (code, stderr) = gbo(&["proxy", "apply", "/nonexistent/gbo.caddy", "--tenant", &ghost]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/gbo.caddy"), "{stderr}");

    let (code, stderr) = gbo(&["proxy", "reload", "--tenant", &ghost]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no proxy container"), "{stderr}");

    let (code, stderr) = gbo(&["dns", "apply", "--tenant", &ghost, "--zone", "bad_zone..test"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("bad_zone..test"), "{stderr}");

    let (code, stderr) = gbo(&["brother", "enable", "--tenant", &ghost, "--profile", "default"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--allow-default-profile"), "{stderr}");
}
