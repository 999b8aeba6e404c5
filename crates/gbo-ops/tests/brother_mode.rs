//! Brother mode for real: the host's LXD API answers from inside the system container through the `lxd-sock`
//! proxy device (on a dedicated profile), also after a restart of the container.

mod doctor_common;

use doctor_common::*;
use gbo_ops::brother::{self, BrotherError, BrotherOptions};

/// Deletes a test profile on drop (declare before the tenant, so the containers go first).
struct ProfileGuard(String);

impl Drop for ProfileGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("lxc")
            .args(["profile", "delete", &self.0])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

const ASK_LXD: &str = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(10)\ns.connect(sys.argv[1])\ns.sendall(b'GET /1.0 HTTP/1.0\\r\\nHost: lxd\\r\\n\\r\\n')\ndata=b''\nwhile True:\n    chunk=s.recv(65536)\n    if not chunk: break\n    data+=chunk\nprint(data.decode())\n";

async fn ask_lxd(lxd: &lxd_client::Client, name: &lxd_client::InstanceName, socket: &str) -> String {
    write(lxd, name, "/root/ask_lxd.py", ASK_LXD, 0o644).await;
    sh_ok(lxd, name, &format!("python3 /root/ask_lxd.py {socket}")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_api_answers_inside_the_system_container_also_after_a_restart() {
    let profile = ProfileGuard(gbo_tests::unique_name("brother"));
    let mut tenant = Tenant::new("brother").await;
    let system = tenant.container("system", |r| r).await;
    let other = tenant.container("tables", |r| r).await;
    let lxd = tenant.lxd.clone();
    let options = BrotherOptions { profile: profile.0.clone(), ..BrotherOptions::default() };

    let report = brother::enable(&lxd, &tenant.name, &options).await.expect("enable");
    assert!(report.changed, "{report:?}");
    assert_eq!(report.warnings, [brother::host_root_warning(system.as_str())], "said plainly, every time");
    assert!(report.warnings[0].contains("host-root equivalent"));
    assert_eq!(report.lxd_socket_env, "LXD_SOCKET=/var/lib/gbo/lxd.sock");
    let answer = ask_lxd(&lxd, &system, "/var/lib/gbo/lxd.sock").await;
    assert!(
        answer.starts_with("HTTP/1.0 200")
            && answer.contains("\"api_version\":\"1.0\"")
            && answer.contains("\"auth\":\"trusted\""),
        "{answer}"
    );
    let mode = sh_ok(&lxd, &system, "stat -c '%u %g %a' /var/lib/gbo/lxd.sock").await;
    assert_eq!(mode.trim(), "0 0 660");

    // Only the system container has it.
    assert!(sh(&lxd, &other, "test -S /var/lib/gbo/lxd.sock").await.exit_code != 0);
    let other_instance = lxd.instance(&other).await.expect("instance");
    assert!(brother::brother_device(&other_instance).is_none());
    assert!(!brother::enable(&lxd, &tenant.name, &options).await.expect("again").changed, "idempotent");

    // After a restart (systemd mounts a fresh /tmp; /var/lib survives).
    lxd.set_state(&system, &lxd_client::StateChange::new(lxd_client::StateAction::Restart)).await.expect("restart");
    wait_for_systemd(&lxd, &system).await;
    assert!(brother::socket_present(&lxd, &system, "/var/lib/gbo/lxd.sock", std::time::Duration::from_secs(10))
        .await
        .expect("stat"));
    let answer = ask_lxd(&lxd, &system, "/var/lib/gbo/lxd.sock").await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");

    // The default profile is refused without the explicit flag, and left untouched.
    let before =
        lxd.profile(&lxd_client::ObjectName::new("default").expect("profile name")).await.expect("default profile");
    let refused =
        brother::enable(&lxd, &tenant.name, &BrotherOptions { profile: "default".into(), ..BrotherOptions::default() })
            .await;
    assert!(
        matches!(refused, Err(BrotherError::BadInput(ref m)) if m.contains("--allow-default-profile")),
        "{refused:?}"
    );
    assert_eq!(
        lxd.profile(&lxd_client::ObjectName::new("default").expect("profile name"))
            .await
            .expect("default profile")
            .devices,
        before.devices
    );

    assert!(brother::disable(&lxd, &tenant.name, &profile.0).await.expect("disable"));
    assert!(
        !brother::socket_present(&lxd, &system, "/var/lib/gbo/lxd.sock", std::time::Duration::from_secs(1))
            .await
            .expect("stat")
            || sh(&lxd, &system, "python3 /root/ask_lxd.py /var/lib/gbo/lxd.sock").await.exit_code != 0
    );
}
