//! `gbo proxy` bad input: a Caddyfile that does not parse, invalid domain names, a tenant without a proxy
//! container, a missing file: a message naming the value, exit code 2.

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_exits_2_naming_the_value() {
    let _lxd = gbo_tests::lxd().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.caddy");
    std::fs::write(&broken, "{\n\tstorage file_system {\n\t\troot /x\n\t}\n}\na.example.test {\n\trespond ok\n")
        .expect("write");
    let ghost = gbo_tests::unique_name("ghost");

    let (code, stderr) =
        gbo_tests::gbo(&["proxy", "apply", broken.to_str().expect("utf-8"), "--tenant", &ghost]).code_stderr();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&ghost) && stderr.contains("no proxy container"), "{stderr}");

    let (code, stderr) =
        gbo_tests::gbo(&["proxy", "apply", "/nonexistent/gbo.caddy", "--tenant", &ghost]).code_stderr();
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/gbo.caddy"), "{stderr}");

    let (code, stderr) = gbo_tests::gbo(&["proxy", "reload", "--tenant", &ghost]).code_stderr();
    assert_eq!(code, 2);
    assert!(stderr.contains("no proxy container"), "{stderr}");

    let (code, stderr) =
        gbo_tests::gbo(&["dns", "apply", "--tenant", &ghost, "--zone", "bad_zone..test"]).code_stderr();
    assert_eq!(code, 2);
    assert!(stderr.contains("bad_zone..test"), "{stderr}");

    let (code, stderr) =
        gbo_tests::gbo(&["brother", "enable", "--tenant", &ghost, "--profile", "default"]).code_stderr();
    assert_eq!(code, 2);
    assert!(stderr.contains("--allow-default-profile"), "{stderr}");
}
