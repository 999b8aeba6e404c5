//! `gbo vault auto-unseal --install` writes a host unit that runs `gbo vault unseal` after LXD starts, naming the
//! 0600 keys file (never a key); `systemd-analyze verify` accepts it; a keys file others can read is refused (exit 2,
//! no unit written).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use gbo_tests::programs::require_program;
use gbo_tests::{gbo, gbo_bin};

#[test]
fn the_auto_unseal_unit_names_the_keys_file_and_runs_after_lxd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("vault-init.json");
    let key = "6b0f9c2d1e4a5b3c6b0f9c2d1e4a5b3c6b0f9c2d1e4a5b3c6b0f9c2d1e4a5b3c01";
    std::fs::write(&keys, format!("{{\"unseal_keys_hex\":[\"{key}\"],\"unseal_threshold\":1}}")).expect("keys");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let units = dir.path().join("units");
    std::fs::create_dir(&units).expect("mkdir");
    let unit_dir = units.display().to_string();
    let keys_s = keys.display().to_string();
    let args = [
        "vault",
        "auto-unseal",
        "--install",
        "--tenant",
        "gbot-unseal",
        "--keys-file",
        &keys_s,
        "--unit-dir",
        &unit_dir,
    ];

    let loose = gbo(&args);
    assert_eq!(loose.code, 2, "{}", loose.all());
    assert!(loose.stderr.contains("chmod 600"), "{}", loose.all());
    assert_eq!(std::fs::read_dir(&units).expect("read").count(), 0, "a unit was written");

    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let done = gbo(&args);
    assert_eq!(done.code, 0, "{}", done.all());
    let path = units.join("gbo-vault-unseal-gbot-unseal.service");
    let unit = std::fs::read_to_string(&path).expect("the unit");
    assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o644);
    let exec = format!(
        "ExecStart=\"{}\" vault unseal --tenant gbot-unseal --keys-file \"{keys_s}\"",
        gbo_bin().canonicalize().expect("gbo path").display()
    );
    assert!(unit.lines().any(|l| l == exec), "{unit}");
    assert!(
        unit.lines()
            .any(|l| l.starts_with("After=") && l.contains("lxd.service") && l.contains("snap.lxd.daemon.service")),
        "{unit}"
    );
    assert!(unit.contains("WantedBy=multi-user.target") && unit.contains("Restart=on-failure"), "{unit}");
    assert!(!unit.contains(key), "a key is in the unit");
    let verify = Command::new(require_program("systemd-analyze"))
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    // Only the unit's own lines matter here (units it orders after may not exist on this host).
    let own: Vec<&str> = complaints.lines().filter(|l| l.contains("gbo-vault-unseal")).collect();
    assert!(verify.status.success() && own.is_empty(), "systemd-analyze verify: {complaints}");
}
