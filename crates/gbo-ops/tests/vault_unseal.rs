//! Vault unseal and status against the stand-in Vault of `vault_standin` (Vault cannot be installed here; the
//! stand-in is written from Vault's API documentation and shares no types with gbo), over verified TLS.

mod vault_standin;

use std::os::unix::fs::PermissionsExt;

use gbo_ops::vault::{self, Endpoint, UnsealOutcome};
use vault_standin::{init_json_api, init_json_cli, make_shares, StandInVault};

fn endpoint(v: &StandInVault) -> Endpoint {
    Endpoint { addr: v.addr.clone(), ca_cert: v.ca.clone(), insecure_skip_verify: false }
}

fn key_file(dir: &tempfile::TempDir, text: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.path().join("init.json");
    std::fs::write(&path, text).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

#[tokio::test]
async fn unseals_over_tls_with_distinct_keys_up_to_the_threshold() {
    let shares = make_shares(5);
    let v = StandInVault::start(StandInVault::sealed(3, &shares), true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The CLI shape, with a duplicate (the first share again, in hex) in second place: it is skipped, not counted.
    let mut listed = shares.clone();
    listed.insert(1, shares[0].clone());
    let path = key_file(&dir, &init_json_cli(&listed, 3), 0o600);
    let keys = vault::read_keys_file(&path).expect("keys");
    let before = vault::status(&endpoint(&v)).await.expect("status");
    assert!(before.seal.sealed && before.seal.initialized);
    assert_eq!((before.seal.t, before.seal.n, before.health_code), (3, 5, 503));
    match vault::unseal(&endpoint(&v), &keys).await.expect("unseal") {
        UnsealOutcome::Unsealed { keys_submitted, duplicates_skipped, health_code, rejected, .. } => {
            assert_eq!((keys_submitted, duplicates_skipped, health_code), (3, 1, 200));
            assert!(rejected.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let state = v.snapshot();
    assert!(!state.sealed);
    let unseals = state.requests.iter().filter(|r| r.1 == "/v1/sys/unseal").count();
    assert_eq!(unseals, 3, "stops at the threshold: {:?}", state.requests.iter().map(|r| &r.1).collect::<Vec<_>>());
    // Already unsealed: exit-0 outcome, nothing sent.
    assert!(matches!(vault::unseal(&endpoint(&v), &keys).await.expect("again"), UnsealOutcome::AlreadyUnsealed));
    assert_eq!(v.snapshot().requests.iter().filter(|r| r.1 == "/v1/sys/unseal").count(), 3);
    assert_eq!(vault::status(&endpoint(&v)).await.expect("status").health_code, 200);
}

#[tokio::test]
async fn a_wrong_key_is_named_by_position_and_stale_progress_is_reset() {
    let shares = make_shares(3);
    let mut state = StandInVault::sealed(2, &shares);
    // Someone else's half-finished attempt.
    state.progress.insert(shares[2].clone());
    let v = StandInVault::start(state, true).await;
    let wrong = "ff".repeat(32);
    let keys = vault::parse_keys(&format!("{wrong}\n{}\n{}\n", shares[0], shares[1]), "stdin").expect("keys");
    match vault::unseal(&endpoint(&v), &keys).await.expect("unseal") {
        UnsealOutcome::Unsealed { rejected, reset_stale_progress, keys_submitted, .. } => {
            assert_eq!(rejected, [1]);
            assert!(reset_stale_progress);
            assert_eq!(keys_submitted, 3);
        }
        other => panic!("{other:?}"),
    }
    let requests = v.snapshot().requests;
    assert!(requests.iter().any(|r| r.2.contains("\"reset\":true")));
    // Too few valid keys: still sealed, an error that names no key.
    let v2 = StandInVault::start(StandInVault::sealed(3, &shares), true).await;
    let keys = vault::parse_keys(&init_json_api(&shares[..2]), "init.json").expect("keys");
    let err = vault::unseal(&endpoint(&v2), &keys).await.expect_err("too few");
    let text = err.to_string();
    assert!(text.contains("still sealed after 2 distinct key(s) (threshold 3, progress 2)"), "{text}");
    for share in &shares {
        assert!(!text.contains(share.as_str()), "an error printed a key");
    }
}

#[tokio::test]
async fn refuses_loose_files_uninitialised_vaults_and_unverified_tls() {
    let shares = make_shares(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let loose = key_file(&dir, &init_json_api(&shares), 0o640);
    let err = vault::read_keys_file(&loose).expect_err("loose");
    assert!(err.to_string().contains("readable by group or others (mode 640)"), "{err}");

    let mut state = StandInVault::sealed(1, &shares);
    state.initialized = false;
    let v = StandInVault::start(state, true).await;
    let keys = vault::parse_keys(&init_json_api(&shares), "f").expect("keys");
    let err = vault::unseal(&endpoint(&v), &keys).await.expect_err("not initialised");
    assert!(err.to_string().contains("not initialised"), "{err}");
    assert_eq!(vault::status(&endpoint(&v)).await.expect("status").health_code, 501);
    assert!(!v.snapshot().requests.iter().any(|r| r.1 == "/v1/sys/unseal"), "never initialises or unseals");

    // Without the CA, the stand-in's certificate is not trusted (the system roots do not know the test CA).
    let v = StandInVault::start(StandInVault::sealed(1, &shares), true).await;
    let mut no_ca = endpoint(&v);
    no_ca.ca_cert = None;
    let err = vault::status(&no_ca).await.expect_err("unverified");
    assert!(err.to_string().to_ascii_lowercase().contains("certificate"), "{err}");
    // ... unless verification is skipped explicitly.
    no_ca.insecure_skip_verify = true;
    assert!(vault::status(&no_ca).await.is_ok());
    // Plain http on loopback is fine; a standby answers 429 and counts as unsealed.
    let mut standby = StandInVault::sealed(1, &shares);
    standby.sealed = false;
    standby.standby = true;
    let v = StandInVault::start(standby, false).await;
    let s = vault::status(&Endpoint { addr: v.addr.clone(), ca_cert: None, insecure_skip_verify: false })
        .await
        .expect("status");
    assert_eq!((s.health_code, s.health.as_str()), (429, "unsealed, standby"));
}

/// Issue 14 item 3: from first start to unsealed, over plain http on loopback as gbo's Vault listens: `gbo vault
/// init` writes the seed's init.json shape 0600 and prints no key; `gbo vault unseal` and `status` take it from
/// there; a second init refuses (exit 2) and leaves the file as it was.
#[tokio::test]
async fn init_writes_the_keys_0600_never_printed_and_the_whole_path_unseals() {
    let v = StandInVault::start(StandInVault::uninitialised(), false).await;
    assert!(v.addr.starts_with("http://127.0.0.1:"));
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join(".secrets");
    let gbo = |args: &[&str]| {
        let mut all = vec!["vault".to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(["--addr".to_string(), v.addr.clone()]);
        gbo_tests::gbo_async(all)
    };
    // Uninitialised: status says so (exit 1), unseal refuses.
    let status = gbo(&["status"]).await;
    assert_eq!(status.code, 1, "{}", status.all());

    let init = gbo(&["init", "--secrets-dir", secrets.to_str().expect("utf8")]).await;
    assert_eq!(init.code, 0, "{}", init.all());
    let path = secrets.join("vault-init.json");
    let mode = std::fs::metadata(&path).expect("init.json").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).expect("read");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    let state = v.snapshot();
    assert_eq!(doc["unseal_keys_hex"], serde_json::json!(state.shares), "the keys Vault returned");
    assert_eq!((doc["unseal_shares"].as_u64(), doc["unseal_threshold"].as_u64()), (Some(5), Some(3)));
    assert_eq!(doc["unseal_keys_b64"].as_array().map(Vec::len), Some(5));
    assert_eq!(doc["root_token"], "hvs.standin-root");
    for key in state.shares.iter().chain(
        doc["unseal_keys_b64"]
            .as_array()
            .expect("b64")
            .iter()
            .filter_map(|k| k.as_str())
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .iter(),
    ) {
        assert!(!init.all().contains(key.as_str()), "a key was printed");
    }
    assert!(!init.all().contains("hvs.standin-root"), "the root token was printed");

    // The whole path: unseal from the file init wrote, then status is healthy.
    let unseal = gbo(&["unseal", "--keys-file", path.to_str().expect("utf8")]).await;
    assert_eq!(unseal.code, 0, "{}", unseal.all());
    assert!(!v.snapshot().sealed);
    let status = gbo(&["status"]).await;
    assert_eq!(status.code, 0, "{}", status.all());

    // Initialised: a second init refuses and the keys stay.
    let again = gbo(&["init", "--secrets-dir", secrets.to_str().expect("utf8")]).await;
    assert_eq!(again.code, 2, "{}", again.all());
    assert!(again.all().contains("initialised already"), "{}", again.all());
    assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
    // A file already there is never overwritten, even for a fresh Vault.
    let fresh = StandInVault::start(StandInVault::uninitialised(), false).await;
    let endpoint = Endpoint { addr: fresh.addr.clone(), ca_cert: None, insecure_skip_verify: false };
    let err = vault::init(&endpoint, 5, 3, &secrets).await.expect_err("file exists");
    assert!(err.to_string().contains("exists already"), "{err}");
    assert!(!fresh.snapshot().initialized, "nothing was sent");
    // Bad input changes nothing.
    let err = vault::init(&endpoint, 3, 5, dir.path()).await.expect_err("threshold above shares");
    assert!(err.to_string().contains("--threshold 5"), "{err}");
    assert!(!fresh.snapshot().requests.iter().any(|r| r.1 == "/v1/sys/init"));
}
