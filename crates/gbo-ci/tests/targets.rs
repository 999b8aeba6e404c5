//! Explicit targets never fall back: a host, ssh config alias, config file, port or identity named by the operator
//! that cannot be used is exit 2 naming it; gbo-ci never silently uses another host, alias or key. Each case runs
//! `gbo-ci verify` (read-only) against the real sshd on 127.0.0.1; none of them may send a DNS query.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Output};

use common::*;

/// An sshd with a binary to verify against.
struct Target {
    sshd: Sshd,
    binary: PathBuf,
}

impl Target {
    fn new() -> Target {
        let sshd = Sshd::start();
        let binary = sshd.mkdir("opt/gbo/bin").join("botserver");
        make_botserver(&binary, 200, "v1", 0);
        Target { sshd, binary }
    }

    /// `gbo-ci verify` of the binary against itself, with `connect` as the connection flags.
    fn verify(&self, connect: &[&str], agent: Option<&Path>) -> Output {
        let mut command = self.sshd.gbo_ci();
        if let Some(socket) = agent {
            command.env("SSH_AUTH_SOCK", socket);
        }
        command.arg("verify").args(connect).arg("--binary").arg(&self.binary).arg("--dest").arg(&self.binary);
        command.output().unwrap()
    }

    /// A config file with `text` plus this server's known_hosts, for aliases other than `testhost`.
    fn config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.sshd.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A real ssh-agent holding the client key: what a fallback would authenticate with.
    fn agent(&self) -> (Child, PathBuf) {
        self.sshd.agent()
    }
}

fn refused(output: &Output, names: &[&str], context: &str) {
    assert_eq!(output.status.code(), Some(2), "{context}: {}", describe(output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in names {
        assert!(stderr.contains(name), "{context}: the error names `{name}`:\n{stderr}");
    }
    assert!(output.stdout.is_empty(), "{context}: nothing on stdout");
}

#[test]
fn the_test_alias_itself_works() {
    let target = Target::new();
    let config = target.sshd.ssh_config.display().to_string();
    let output = target.verify(&["--host", "testhost", "--ssh-config", &config], None);
    assert!(output.status.success(), "{}", describe(&output));
}

#[test]
fn an_unknown_alias_is_refused_without_a_lookup() {
    let target = Target::new();
    let config = target.sshd.ssh_config.display().to_string();
    let output = target.verify(&["--host", "gbot-no-such-alias", "--ssh-config", &config], None);
    refused(&output, &["gbot-no-such-alias", &config, "not a Host alias"], "unknown alias");
}

#[test]
fn an_alias_without_a_hostname_is_refused_without_a_lookup() {
    let target = Target::new();
    let config = target.config(
        "ssh_config_nohostname",
        &format!(
            "Host gbot-nohostname\n  Port {}\n  User root\n  IdentityFile {}\n  UserKnownHostsFile {}\n",
            target.sshd.port,
            target.sshd.client_key.display(),
            target.sshd.known_hosts.display()
        ),
    );
    let config = config.display().to_string();
    let output = target.verify(&["--host", "gbot-nohostname", "--ssh-config", &config], None);
    refused(&output, &["gbot-nohostname", &config, "HostName"], "alias without HostName");
}

#[test]
fn a_missing_ssh_config_is_refused() {
    let target = Target::new();
    let missing = target.sshd.path("no-such-config").display().to_string();
    let output = target.verify(&["--host", "testhost", "--ssh-config", &missing], None);
    refused(&output, &[&missing], "missing --ssh-config");
}

#[test]
fn an_unreachable_port_is_refused_naming_it() {
    let target = Target::new();
    let config = target.sshd.ssh_config.display().to_string();
    let closed = free_port().to_string();
    let output = target.verify(&["--host", "testhost", "--ssh-config", &config, "--port", &closed], None);
    refused(&output, &[&format!("127.0.0.1:{closed}")], "unreachable port");
}

#[test]
fn a_missing_identity_never_falls_back_to_another_key() {
    let target = Target::new();
    let (mut agent, socket) = target.agent();
    let config = target.sshd.ssh_config.display().to_string();
    // The agent alone would be let in.
    let bare = target.config(
        "ssh_config_bare",
        &format!(
            "Host testhost\n  HostName 127.0.0.1\n  Port {}\n  User root\n  UserKnownHostsFile {}\n",
            target.sshd.port,
            target.sshd.known_hosts.display()
        ),
    );
    let bare = bare.display().to_string();
    let with_agent = target.verify(&["--host", "testhost", "--ssh-config", &bare], Some(&socket));

    // --identity names a key that does not exist.
    let missing = target.sshd.path("no-such-key").display().to_string();
    let flag = target.verify(&["--host", "testhost", "--ssh-config", &config, "--identity", &missing], Some(&socket));
    // The config's IdentityFile names a key that does not exist.
    let config_missing = target.config(
        "ssh_config_missing_key",
        &format!(
            "Host testhost\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {missing}\n  \
             UserKnownHostsFile {}\n",
            target.sshd.port,
            target.sshd.known_hosts.display()
        ),
    );
    let config_missing = config_missing.display().to_string();
    let from_config = target.verify(&["--host", "testhost", "--ssh-config", &config_missing], Some(&socket));
    let _ = agent.kill();
    let _ = agent.wait();

    assert!(with_agent.status.success(), "the agent's key is accepted: {}", describe(&with_agent));
    refused(&flag, &[&missing], "missing --identity with an agent running");
    refused(&from_config, &[&missing], "missing IdentityFile with an agent running");
}

#[test]
fn config_keywords_that_change_the_target_are_refused() {
    let target = Target::new();
    for (keyword, value) in [("ProxyJump", "gbot-bastion"), ("ProxyCommand", "nc %h %p"), ("HostKeyAlias", "other")] {
        let config = target.config(
            "ssh_config_proxy",
            &format!(
                "Host testhost\n  HostName 127.0.0.1\n  Port {}\n  User root\n  IdentityFile {}\n  \
                 UserKnownHostsFile {}\n  {keyword} {value}\n",
                target.sshd.port,
                target.sshd.client_key.display(),
                target.sshd.known_hosts.display()
            ),
        );
        let config = config.display().to_string();
        let output = target.verify(&["--host", "testhost", "--ssh-config", &config], None);
        refused(&output, &[keyword, &format!("{config}:7")], keyword);
    }
}
