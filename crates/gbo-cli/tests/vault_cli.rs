//! `gbo vault` end to end: the real binary against the stand-in Vault (Vault cannot be installed here; the stand-in
//! is written from Vault's API documentation and shares no types with gbo), reached the `vault` CLI's way through
//! VAULT_ADDR and VAULT_CACERT. Keys never show in the output; exit codes follow the contract.

#[path = "../../gbo-ops/tests/vault_standin/mod.rs"]
mod vault_standin;

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use vault_standin::{init_json_api, init_json_cli, make_shares, StandInVault};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn gbo(v: &StandInVault, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gbo"));
    cmd.args(args)
        .env("VAULT_ADDR", &v.addr)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match &v.ca {
        Some(ca) => cmd.env("VAULT_CACERT", ca),
        None => cmd.env_remove("VAULT_CACERT"),
    };
    let mut child = cmd.spawn().expect("gbo");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn assert_no_keys(run: &Run, shares: &[String]) {
    for share in shares {
        let b64 = vault_standin::to_base64(&hex::decode(share).expect("hex"));
        for text in [&run.stdout, &run.stderr] {
            assert!(!text.contains(share.as_str()) && !text.contains(&b64), "a key was printed:\n{text}");
        }
    }
}

fn file(dir: &tempfile::TempDir, name: &str, text: &str, mode: u32) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_then_unseal_then_already_unsealed() {
    let shares = make_shares(5);
    let v = StandInVault::start(StandInVault::sealed(3, &shares), true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = file(&dir, "init.json", &init_json_cli(&shares, 3), 0o600);
    let v2 = &v;
    let status = tokio::task::block_in_place(|| gbo(v2, &["vault", "status", "--output", "json"], None));
    assert_eq!(status.code, 1, "sealed is a finding: {}", status.stderr);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    assert_eq!((json["seal"]["sealed"].as_bool(), json["health_code"].as_u64()), (Some(true), Some(503)));
    let unseal = tokio::task::block_in_place(|| gbo(v2, &["vault", "unseal", "--keys-file", &keys], None));
    assert_eq!(unseal.code, 0, "{}", unseal.stderr);
    assert!(unseal.stdout.contains("is unsealed (3 distinct key(s) submitted; sys/health 200"), "{}", unseal.stdout);
    assert_no_keys(&unseal, &shares);
    let again = tokio::task::block_in_place(|| gbo(v2, &["vault", "unseal", "--keys-file", &keys], None));
    assert_eq!(again.code, 0);
    assert!(again.stdout.contains("already unsealed"), "{}", again.stdout);
    assert_eq!(tokio::task::block_in_place(|| gbo(v2, &["vault", "status"], None)).code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_from_stdin_in_the_api_shape() {
    let shares = make_shares(3);
    let v = StandInVault::start(StandInVault::sealed(2, &shares), true).await;
    let run = tokio::task::block_in_place(|| {
        gbo(&v, &["vault", "unseal", "--keys-file", "-"], Some(&init_json_api(&shares)))
    });
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_no_keys(&run, &shares);
    assert!(!v.snapshot().sealed);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_exits_2_and_changes_nothing() {
    let shares = make_shares(3);
    let v = StandInVault::start(StandInVault::sealed(2, &shares), true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let loose = file(&dir, "loose.json", &init_json_api(&shares), 0o644);
    let run = tokio::task::block_in_place(|| gbo(&v, &["vault", "unseal", "--keys-file", &loose], None));
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("readable by group or others (mode 644)"), "{}", run.stderr);
    let malformed = file(&dir, "bad.json", "{\"keys\": [", 0o600);
    let run = tokio::task::block_in_place(|| gbo(&v, &["vault", "unseal", "--keys-file", &malformed], None));
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("malformed JSON"), "{}", run.stderr);
    let run = tokio::task::block_in_place(|| {
        gbo(
            &v,
            &["vault", "unseal", "--keys-file", "-", "--addr", "http://192.0.2.7:8200"],
            Some(&init_json_api(&shares)),
        )
    });
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("only for loopback"), "{}", run.stderr);
    assert!(v.snapshot().requests.is_empty(), "nothing reached Vault");
    // Not initialised: exit 2, and unseal never initialises.
    let mut state = StandInVault::sealed(2, &shares);
    state.initialized = false;
    let uninit = StandInVault::start(state, true).await;
    let good = file(&dir, "good.json", &init_json_api(&shares), 0o400);
    let run = tokio::task::block_in_place(|| gbo(&uninit, &["vault", "unseal", "--keys-file", &good], None));
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("not initialised"), "{}", run.stderr);
    assert!(!uninit.snapshot().requests.iter().any(|r| r.1.contains("unseal") || r.1.contains("init")));
}
