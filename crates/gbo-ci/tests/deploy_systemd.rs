//! `gbo-ci deploy` where a systemd unit owns the botserver, as `gbo install` sets it up (`system.service`).
//!
//! This machine has no systemd as PID 1, so the remote is an LXD container from the test image (systemd inside, no
//! NIC). It is reached through the real OpenSSH server of the other tests, whose `ForceCommand` runs every remote
//! command inside the container with `lxc exec` (stdin, stdout, stderr and exit status pass through). The health URL
//! is the container's port 5858 forwarded to 127.0.0.1 on the host by an LXD proxy device, which is where the SSH
//! server's `direct-tcpip` probe connects. Everything gbo-ci decides on (the processes running the target, their
//! cgroup, the unit's MainPID, `systemctl restart`) happens inside the container, for real. A missing daemon or
//! image fails the test.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const IMAGE: &str = "gbo-test/debian-12";
const DEST: &str = "/opt/gbo/bin/botserver";
const UNIT: &str = "[Unit]
Description=botserver (gbo-ci systemd test)

[Service]
Type=notify
NotifyAccess=main
TimeoutStartSec=300
User=nobody
Group=nogroup
WorkingDirectory=/opt/gbo/bin
ExecStart=/opt/gbo/bin/botserver /opt/gbo/app/server.py 5858
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
";

/// A container deleted on drop.
struct Container(String);

impl Container {
    fn exec(&self, script: &str) -> String {
        gbo_tests::lxc_ok(&["exec", &self.0, "--mode=non-interactive", "--", "sh", "-c", script])
    }

    fn push(&self, local: &Path, remote: &str, mode: &str) {
        gbo_tests::lxc_ok(&[
            "file",
            "push",
            "-p",
            "--mode",
            mode,
            &local.display().to_string(),
            &format!("{}{remote}", self.0),
        ]);
    }

    fn main_pid(&self) -> u32 {
        self.exec("systemctl show -p MainPID --value system.service").trim().parse().expect("MainPID")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        gbo_tests::delete_instance(&self.0);
    }
}

#[test]
fn a_unit_owned_botserver_is_restarted_through_its_unit_and_rolled_back_through_it() {
    let container = Container(format!("gbot-ci-systemd-{}", std::process::id()));
    gbo_tests::lxc_ok(&["launch", IMAGE, &container.0]);
    // systemd inside comes up in a second or two; "degraded" is fine (no network units can start without a NIC).
    // Right after the launch systemd may not answer yet at all ("Failed to connect to bus": `--wait` returns at once
    // then), so ask again until it reports a state, for at most 120 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let state = Command::new("lxc")
            .args(["exec", &container.0, "--", "timeout", "60", "systemctl", "is-system-running", "--wait"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if state.contains("running") || state.contains("degraded") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "systemd in {} did not come up: {state}", container.0);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    container.exec("test -d /run/systemd/system && test -x /usr/bin/python3 && mkdir -p /opt/gbo/bin /opt/gbo/app");

    let sshd = Sshd::start_with(&format!(
        "ForceCommand lxc exec {} --mode=non-interactive -- sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
        container.0
    ));
    let build = sshd.mkdir("build");
    let script = write_server_script(&sshd);
    let v1 = build.join("v1");
    make_botserver(&v1, 200, "v1", 0);
    container.push(&script, "/opt/gbo/app/server.py", "0644");
    container.push(&v1, DEST, "0755");
    let unit = build.join("system.service");
    std::fs::write(&unit, UNIT).unwrap();
    container.push(&unit, "/etc/systemd/system/system.service", "0644");
    container.exec("systemctl daemon-reload && systemctl enable --now system.service");
    let port = free_port();
    gbo_tests::lxc_ok(&[
        "config",
        "device",
        "add",
        &container.0,
        "gbot-health",
        "proxy",
        &format!("listen=tcp:127.0.0.1:{port}"),
        "connect=tcp:127.0.0.1:5858",
    ]);
    wait_http(port, std::time::Duration::from_secs(20));
    assert_eq!(http_get(port, "/api/health"), Some((200, "v1".into())));
    let first_pid = container.main_pid();

    let deploy_with = |binary: &Path, extra: &[&str]| {
        sshd.gbo_ci()
            .arg("deploy")
            .args(sshd.connect_args())
            .arg("--binary")
            .arg(binary)
            .args(["--dest", DEST, "--owner", "nobody", "--health", &format!("http://127.0.0.1:{port}/api/health")])
            .args(["--health-timeout", "8", "--output", "json"])
            .args(extra)
            .output()
            .unwrap()
    };
    let deploy = |binary: &Path| deploy_with(binary, &[]);

    // The new build: the unit is detected from the process's cgroup and restarted through systemd.
    let v2 = build.join("v2");
    make_botserver(&v2, 200, "v2", 0);
    let output = deploy(&v2);
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["restart_method"], "systemd", "{report}");
    assert_eq!(report["unit"], "system.service", "{report}");
    assert_eq!(report["previous_release"], format!("{DEST}.prev.1").as_str());
    assert!(report["downtime_ms"].as_u64().is_some(), "{report}");
    assert_eq!(http_get(port, "/api/health"), Some((200, "v2".into())));
    let second_pid = container.main_pid();
    assert!(second_pid != 0 && second_pid != first_pid, "systemd runs a new process ({first_pid} -> {second_pid})");
    let facts = container.exec(&format!(
        "stat -c '%U %a' {DEST}; systemctl is-active system.service; sha256sum {DEST} | cut -d' ' -f1; \
         readlink /proc/{second_pid}/exe; stat -c %U /proc/{second_pid}"
    ));
    let facts: Vec<&str> = facts.lines().collect();
    assert_eq!(facts[0], "nobody 755", "owner and mode corrected");
    assert_eq!(facts[1], "active");
    assert_eq!(facts[2], sha256(&v2));
    assert_eq!(facts[3], DEST, "the unit's process runs the new file, not a deleted one");
    assert_eq!(facts[4], "nobody", "the unit's User= still applies");

    // A build that never gets healthy: the previous release goes back and the unit is restarted again.
    let broken = build.join("broken");
    make_botserver(&broken, 500, "v3-broken", 0);
    let output = deploy(&broken);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("healthy again") && stderr.contains("restarting (systemd unit system.service)"),
        "{stderr}"
    );
    assert_eq!(http_get(port, "/api/health"), Some((200, "v2".into())));
    assert_eq!(container.exec(&format!("sha256sum {DEST} | cut -d' ' -f1")).trim(), sha256(&v2));
    let third_pid = container.main_pid();
    assert!(third_pid != 0 && third_pid != second_pid, "the restored release runs in a new process of the unit");

    // A build that exits at once: `systemctl restart` itself fails (the unit is Type=notify), and the previous
    // release is put back and restarted exactly as for a failed health check.
    let crashing = build.join("crashing");
    make_botserver_with(&crashing, 200, "v4-crashing", "exit=3", 0);
    let output = deploy(&crashing);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the restart of the new release failed") && stderr.contains("healthy again"), "{stderr}");
    assert_eq!(http_get(port, "/api/health"), Some((200, "v2".into())));
    assert_eq!(container.exec(&format!("sha256sum {DEST} | cut -d' ' -f1")).trim(), sha256(&v2));
    assert_eq!(container.exec("systemctl is-active system.service").trim(), "active");

    // A build that never tells systemd it is ready: `systemctl restart` would wait for TimeoutStartSec (300 s); the
    // restart is cut off after --restart-timeout and rolled back (the rollback's restart replaces the hung job).
    let silent = build.join("silent");
    make_botserver_with(&silent, 200, "v5-silent", "notify=never", 0);
    let started = std::time::Instant::now();
    let output = deploy_with(&silent, &["--stop-timeout", "2", "--restart-timeout", "8"]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("did not finish within 8 s") && stderr.contains("healthy again"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "cut off, not waited out: {:?}", started.elapsed());
    assert_eq!(http_get(port, "/api/health"), Some((200, "v2".into())));
    assert_eq!(container.exec(&format!("sha256sum {DEST} | cut -d' ' -f1")).trim(), sha256(&v2));
}
