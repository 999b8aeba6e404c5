//! An HTTPS server is trusted only through a pin or a CA chain the caller chose, and a CA chain comes with hostname
//! verification. The real daemon on 127.0.0.1:8443 stands for a server with a CA-signed certificate: its own
//! self-signed certificate is made the system's CA store (`SSL_CERT_FILE`, read by OpenSSL), and its certificate
//! names `127.0.0.1` but not `localhost`.
//!
//! This binary holds this one test on purpose: it sets `SSL_CERT_FILE` for the whole process.

mod common;

use common::client;
use lxd_client::{certificate_fingerprint, Client, Error, ServerCa, TlsIdentity};

#[tokio::test]
async fn a_ca_chain_is_used_only_when_chosen_and_then_checks_the_hostname() {
    let local = client().await;
    let server_pem = local.server().await.expect("server").environment.certificate.clone().into_bytes();
    let fingerprint = certificate_fingerprint(&server_pem).expect("fingerprint");
    let text = String::from_utf8_lossy(&server_pem).into_owned();
    let cert = openssl::x509::X509::from_pem(&server_pem).expect("pem");
    let names: Vec<String> = cert
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .map(|n| {
                    n.dnsname()
                        .map(str::to_string)
                        .or_else(|| n.ipaddress().map(|ip| format!("{ip:?}")))
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(!names.iter().any(|n| n == "localhost"), "the daemon's certificate must not name localhost: {names:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("ca.pem");
    std::fs::write(&store, text).expect("ca.pem");
    std::env::set_var("SSL_CERT_FILE", &store);

    let (cert_pem, key_pem) = common::self_signed_identity("gbot-public-ca");
    let unpinned = TlsIdentity::new(cert_pem, key_pem);

    // Neither pinned nor a CA chosen: refused although the system store would accept the chain, and the error
    // gives the fingerprint to check and pin.
    let https = Client::https("localhost:8443", unpinned.clone()).expect("client");
    let result = https.server().await;
    let err = result.map(|s| format!("accepted, auth {}", s.auth)).expect_err("unpinned server accepted");
    assert!(err.to_string().contains(&fingerprint), "{err}");
    assert!(matches!(err, Error::UntrustedServer { .. }), "{err:?}");

    // The system CA chosen: the chain verifies, and the host name is checked. 127.0.0.1 is in the certificate.
    let public = TlsIdentity { server_ca: Some(ServerCa::System), ..unpinned };
    let https = Client::https("127.0.0.1:8443", public.clone()).expect("client");
    assert_eq!(https.server().await.expect("named, CA-signed: accepted").auth, "untrusted");
    // `localhost` is not: refused, though the chain is the same.
    let https = Client::https("localhost:8443", public.clone()).expect("client");
    let err = https.server().await.map(|s| s.auth.clone()).expect_err("hostname mismatch accepted");
    assert!(matches!(err, Error::Tls { .. }) && err.to_string().contains("hostname mismatch"), "{err}");
    // A pin and a CA together: both must hold.
    let pinned_wrong = TlsIdentity { server_fingerprint: Some("cd".repeat(32)), ..public.clone() };
    let https = Client::https("127.0.0.1:8443", pinned_wrong).expect("client");
    assert!(matches!(https.server().await.map(|s| s.auth.clone()), Err(Error::Tls { .. })));
    let pinned_right = TlsIdentity { server_fingerprint: Some(fingerprint), ..public };
    let https = Client::https("127.0.0.1:8443", pinned_right).expect("client");
    assert_eq!(https.server().await.expect("pin and CA both hold").auth, "untrusted");
}
