//! `gbo` pointed at one daemon never acts on another: with `LXD_SOCKET` or `LXD_DIR` naming a socket that is not
//! there, the real binary exits 2 naming the variable and the path, although the real daemon at
//! /var/lib/lxd/unix.socket is up and would answer. Set but empty counts as unset.

use std::process::Command;

/// A tenant name no other test uses, so `status` reads nothing but an empty tenant.
const TENANT: &str = "gbotexplicit";

fn gbo_status(env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gbo"));
    command.args(["status", "--tenant", TENANT]);
    for variable in ["LXD_SOCKET", "LXD_DIR", "INCUS_SOCKET", "INCUS_DIR"] {
        command.env_remove(variable);
    }
    command.envs(env.iter().copied());
    let out = command.output().expect("gbo");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn status_with_a_missing_explicit_socket_exits_2_naming_it() {
    let (code, stdout, stderr) = gbo_status(&[("LXD_SOCKET", "/nonexistent/gbot/unix.socket")]);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("LXD_SOCKET") && stderr.contains("/nonexistent/gbot/unix.socket"), "{stderr}");
    assert!(!stdout.contains("no containers"), "nothing was read from another daemon: {stdout}");
}

#[test]
fn status_with_a_missing_explicit_dir_exits_2_naming_it() {
    let (code, stdout, stderr) = gbo_status(&[("LXD_DIR", "/nonexistent-gbot-dir")]);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("LXD_DIR") && stderr.contains("/nonexistent-gbot-dir/unix.socket"), "{stderr}");
    assert!(!stdout.contains("no containers"), "nothing was read from another daemon: {stdout}");
}

#[test]
fn status_with_nothing_set_or_empty_discovers_the_daemon() {
    for env in [&[][..], &[("LXD_SOCKET", ""), ("LXD_DIR", "")][..]] {
        let (code, stdout, stderr) = gbo_status(env);
        assert_eq!(code, 0, "{env:?}: stdout: {stdout}\nstderr: {stderr}");
        assert!(stdout.contains(&format!("tenant {TENANT}: no containers")), "{env:?}: {stdout}");
    }
}

/// `fail2ban apply --host` runs its host part without LXD when no daemon is set up, but a daemon named explicitly
/// that cannot be used is an error all the same (exit 2, nothing rendered).
#[test]
fn fail2ban_host_with_a_missing_explicit_socket_exits_2() {
    let root = tempfile::tempdir().expect("tempdir");
    let root_arg = root.path().display().to_string();
    let args = ["fail2ban", "apply", "--tenant", TENANT, "--host", "--root", root_arg.as_str(), "--dry-run"];
    let out = Command::new(env!("CARGO_BIN_EXE_gbo"))
        .args(args)
        .env("LXD_SOCKET", "/nonexistent/gbot/unix.socket")
        .env_remove("LXD_DIR")
        .output()
        .expect("gbo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("LXD_SOCKET") && stderr.contains("/nonexistent/gbot/unix.socket"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_gbo"))
        .args(args)
        .env_remove("LXD_SOCKET")
        .env_remove("LXD_DIR")
        .output()
        .expect("gbo");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("gbo-sshd.conf"));
}
