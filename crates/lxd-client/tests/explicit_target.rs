//! An explicitly named daemon is the only one used: `LXD_SOCKET`, `LXD_DIR`, `INCUS_SOCKET` or `INCUS_DIR` naming a
//! socket that is not there is an error naming the variable and the path, never a fallback to the usual paths (the
//! real daemon at /var/lib/lxd/unix.socket is up while this runs, so a fallback would answer). A set-but-empty
//! variable counts as unset, as it does for the `lxc` CLI. A remote of the `lxc` configuration that is unknown or
//! cannot be reached is an error naming it, never the local socket.
//!
//! This binary holds this one test on purpose: it changes the process environment, which other tests in the same
//! process would see.

mod common;

use std::path::Path;

use lxd_client::{discover_socket, Client, Error, Flavor, InstanceSource, Remote};

const VARIABLES: [&str; 4] = ["LXD_SOCKET", "LXD_DIR", "INCUS_SOCKET", "INCUS_DIR"];

fn clear() {
    for variable in VARIABLES {
        std::env::remove_var(variable);
    }
}

/// `discover_socket` and the matching `Client::local*` both refuse, naming `variable` and `path`.
fn assert_refused(flavor: Flavor, variable: &str, path: &str) {
    let err = discover_socket(flavor).map(|p| p.display().to_string()).expect_err("discovery must not fall back");
    let message = err.to_string();
    assert!(message.contains(variable) && message.contains(path), "{variable}: {message}");
    assert!(err.is_unreachable(), "{variable}: {err:?}");
    let client = match flavor {
        Flavor::Lxd => Client::local(),
        Flavor::Incus => Client::local_incus(),
    };
    let err = client.map(|c| c.endpoint().describe()).expect_err("Client::local must not fall back");
    let message = err.to_string();
    assert!(message.contains(variable) && message.contains(path), "{variable}: {message}");
}

#[tokio::test]
async fn an_explicit_socket_or_dir_is_the_only_one_used() {
    clear();
    let real = common::client().await;
    assert!(Path::new("/var/lib/lxd/unix.socket").exists(), "the real daemon's socket is where fallback would go");

    // Missing socket, missing directory, for LXD and Incus.
    let cases = [
        (Flavor::Lxd, "LXD_SOCKET", "/nonexistent/gbot/unix.socket", "/nonexistent/gbot/unix.socket"),
        (Flavor::Lxd, "LXD_DIR", "/nonexistent-gbot-dir", "/nonexistent-gbot-dir/unix.socket"),
        (Flavor::Incus, "INCUS_SOCKET", "/nonexistent/gbot/incus.socket", "/nonexistent/gbot/incus.socket"),
        (Flavor::Incus, "INCUS_DIR", "/nonexistent-gbot-incus", "/nonexistent-gbot-incus/unix.socket"),
    ];
    for (flavor, variable, value, path) in cases {
        clear();
        std::env::set_var(variable, value);
        assert_refused(flavor, variable, path);
    }

    // LXD_SOCKET wins over LXD_DIR (as in LXD's own client): a missing LXD_SOCKET is not replaced by a good LXD_DIR.
    clear();
    std::env::set_var("LXD_SOCKET", "/nonexistent/gbot/unix.socket");
    std::env::set_var("LXD_DIR", "/var/lib/lxd");
    assert_refused(Flavor::Lxd, "LXD_SOCKET", "/nonexistent/gbot/unix.socket");

    // A path that exists but is not a socket.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "x").expect("write");
    clear();
    std::env::set_var("LXD_SOCKET", &file);
    assert_refused(Flavor::Lxd, "LXD_SOCKET", &file.display().to_string());

    // A socket nobody listens on (a daemon that died): the client is for that socket and its error names it.
    let stale = dir.path().join("unix.socket");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    clear();
    std::env::set_var("LXD_DIR", dir.path());
    let client = Client::local().expect("the socket exists");
    assert_eq!(client.endpoint().describe(), stale.display().to_string());
    let err = client.server().await.expect_err("nobody listens");
    assert!(err.is_unreachable() && err.to_string().contains(&stale.display().to_string()), "{err}");

    // Set but empty counts as unset: discovery finds the real daemon.
    clear();
    std::env::set_var("LXD_SOCKET", "");
    std::env::set_var("LXD_DIR", "");
    let discovered = Client::local().expect("empty variables are unset");
    assert_eq!(
        discovered.server().await.expect("the real daemon answers").api_version,
        real.server().await.expect("api").api_version
    );

    // Explicitly the real socket: used.
    clear();
    std::env::set_var("LXD_SOCKET", "/var/lib/lxd/unix.socket");
    Client::local().expect("explicit real socket").server().await.expect("answers");

    // lxc remotes: the default `unix://` remote follows the same rule; an unknown remote, a unix remote whose
    // socket is missing and an HTTPS remote nobody answers are errors naming the remote.
    let conf = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        conf.path().join("config.yml"),
        "default-remote: local\nremotes:\n  local:\n    addr: unix://\n  here:\n    addr: unix:///var/lib/lxd/unix.socket\n  gone:\n    addr: unix:///nonexistent/gbot/remote.socket\n  closed:\n    addr: https://127.0.0.1:1\n    protocol: lxd\n",
    )
    .expect("config.yml");
    clear();
    std::env::set_var("LXD_SOCKET", "/nonexistent/gbot/unix.socket");
    let err = Remote::from_lxc_config(conf.path(), "local").map(|r| r.endpoint.describe()).expect_err("no fallback");
    assert!(err.to_string().contains("LXD_SOCKET") && err.to_string().contains("local"), "{err}");
    clear();
    let local = Remote::from_lxc_config(conf.path(), "local").expect("discovered");
    local.client().expect("client").server().await.expect("the local remote answers");

    let err = Remote::from_lxc_config(conf.path(), "nope").map(|r| r.endpoint.describe()).expect_err("unknown");
    assert!(err.to_string().contains("`nope`"), "{err}");
    let gone = Remote::from_lxc_config(conf.path(), "gone").expect("read");
    let err = gone.client().expect("client").server().await.expect_err("missing socket");
    assert!(err.is_unreachable(), "{err:?}");
    assert!(err.to_string().contains("`gone`") && err.to_string().contains("/nonexistent/gbot/remote.socket"), "{err}");

    // As an image source, a unix remote is the local daemon only when it is the socket in use: `gone:ALIAS` is not
    // read as an image of this daemon.
    assert_eq!(
        InstanceSource::from_lxc_remote(conf.path(), "local", "a").expect("local"),
        Some(InstanceSource::alias("a"))
    );
    assert_eq!(
        InstanceSource::from_lxc_remote(conf.path(), "here", "a").expect("here"),
        Some(InstanceSource::alias("a"))
    );
    let err = InstanceSource::from_lxc_remote(conf.path(), "gone", "a").expect_err("another daemon's image");
    assert!(err.to_string().contains("`gone`") && err.to_string().contains("/nonexistent/gbot/remote.socket"), "{err}");

    let (cert_pem, key_pem) = common::self_signed_identity("gbot-explicit");
    std::fs::write(conf.path().join("client.crt"), cert_pem).expect("client.crt");
    std::fs::write(conf.path().join("client.key"), key_pem).expect("client.key");
    let closed = Remote::from_lxc_config(conf.path(), "closed").expect("read");
    let err = closed.client().expect("client").server().await.expect_err("nothing listens on port 1");
    assert!(err.is_unreachable(), "{err:?}");
    assert!(err.to_string().contains("`closed`") && err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(!matches!(err, Error::SocketNotFound { .. }), "{err:?}");
    clear();
}
