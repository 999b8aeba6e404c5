//! Pinning against the real daemon on 127.0.0.1:8443: an unpinned server is refused with its fingerprint in the
//! error (to check and accept, as `lxc remote add` prints it), a wrong pin is refused, the right pin is accepted,
//! a CA the server's certificate does not chain to is refused, and first contact fetches the certificate for the
//! caller to accept, after which the `lxc` remote is pinned and used.

mod common;

use common::client;
use lxd_client::{certificate_fingerprint, first_contact, Client, Error, Remote, ServerCa, TlsIdentity};

const ADDRESS: &str = "127.0.0.1:8443";

fn identity(server_cert_pem: Option<Vec<u8>>, server_fingerprint: Option<String>) -> TlsIdentity {
    let (client_cert_pem, client_key_pem) = common::self_signed_identity("gbot-pinning");
    TlsIdentity { server_cert_pem, server_fingerprint, ..TlsIdentity::new(client_cert_pem, client_key_pem) }
}

/// The daemon's certificate and fingerprint, read over the unix socket (an independent path).
async fn daemon_certificate() -> (Vec<u8>, String) {
    let pem = client().await.server().await.expect("server").environment.certificate.clone().into_bytes();
    let fingerprint = certificate_fingerprint(&pem).expect("fingerprint");
    (pem, fingerprint)
}

/// `GET /1.0` over HTTPS: the `auth` the daemon answers with, or the error.
async fn auth(tls: TlsIdentity) -> Result<String, Error> {
    let https = Client::https(ADDRESS, tls).expect("client");
    https.server().await.map(|s| s.auth.clone())
}

#[tokio::test]
async fn an_unpinned_server_is_refused_with_its_fingerprint() {
    let (_, fingerprint) = daemon_certificate().await;
    let err = auth(identity(None, None)).await.expect_err("unpinned");
    assert!(err.to_string().contains(&fingerprint), "{err}");
    match &err {
        Error::UntrustedServer { endpoint, fingerprint: seen } => {
            assert_eq!(seen, &fingerprint);
            assert!(endpoint.contains(ADDRESS), "{endpoint}");
        }
        other => panic!("expected UntrustedServer, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_pin_is_refused_and_the_right_one_accepted() {
    let (pem, fingerprint) = daemon_certificate().await;
    let err = auth(identity(None, Some("ab".repeat(32)))).await.expect_err("wrong pin");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains(&fingerprint) && err.to_string().contains(&"ab".repeat(32)), "{err}");
    // Another certificate pinned by PEM: refused the same way.
    let (other, _) = common::self_signed_identity("gbot-other-server");
    assert!(matches!(auth(identity(Some(other), None)).await, Err(Error::Tls { .. })));

    assert_eq!(auth(identity(Some(pem.clone()), None)).await.expect("pinned by certificate"), "untrusted");
    let upper = fingerprint.to_uppercase();
    assert_eq!(auth(identity(None, Some(upper))).await.expect("pinned by fingerprint"), "untrusted");
    assert_eq!(auth(identity(Some(pem), Some(fingerprint))).await.expect("both, agreeing"), "untrusted");

    // A fingerprint that is not one is refused before any connection.
    let err = Client::https(ADDRESS, identity(None, Some("not-hex".into()))).expect_err("bad fingerprint");
    assert!(err.to_string().contains("not-hex"), "{err}");
}

#[tokio::test]
async fn a_chosen_ca_must_verify_the_chain() {
    // The system's public CAs did not sign the daemon's self-signed certificate.
    let system = TlsIdentity { server_ca: Some(ServerCa::System), ..identity(None, None) };
    let err = auth(system).await.expect_err("self-signed is not a public CA chain");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    // Nor did another CA.
    let (other_ca, _) = common::self_signed_identity("gbot-other-ca");
    let other = TlsIdentity { server_ca: Some(ServerCa::Roots(other_ca)), ..identity(None, None) };
    let err = auth(other).await.expect_err("another CA");
    assert!(err.to_string().contains("CA"), "{err}");
    // The daemon's own certificate as the CA: its chain verifies and it names 127.0.0.1.
    let (pem, _) = daemon_certificate().await;
    let own = TlsIdentity { server_ca: Some(ServerCa::Roots(pem)), ..identity(None, None) };
    assert_eq!(auth(own.clone()).await.expect("own CA, IP address named"), "untrusted");
    // The same CA for a host name the certificate does not carry: hostname verification refuses it.
    let https = Client::https("localhost:8443", own).expect("client");
    let err = https.server().await.map(|s| s.auth.clone()).expect_err("localhost is not named in the certificate");
    assert!(err.to_string().contains("hostname mismatch"), "{err}");
}

#[tokio::test]
async fn first_contact_then_accept_pins_the_lxc_remote() {
    let (_, fingerprint) = daemon_certificate().await;
    let (client_cert, client_key) = common::self_signed_identity("gbot-first-contact");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("config.yml"),
        format!("remotes:\n  gbot:\n    addr: https://{ADDRESS}\n    protocol: lxd\n"),
    )
    .expect("config.yml");
    std::fs::write(dir.path().join("client.crt"), &client_cert).expect("client.crt");
    std::fs::write(dir.path().join("client.key"), &client_key).expect("client.key");

    // Before acceptance: refused, naming the remote and the fingerprint.
    let remote = Remote::from_lxc_config(dir.path(), "gbot").expect("remote");
    let err = remote.client().expect("client").server().await.map(|s| s.auth.clone()).expect_err("not pinned");
    assert!(err.to_string().contains("`gbot`") && err.to_string().contains(&fingerprint), "{err}");

    // First contact shows the same fingerprint the daemon has; the operator accepts it; it is pinned.
    let seen = first_contact(ADDRESS).await.expect("first contact");
    assert_eq!(seen.fingerprint, fingerprint);
    assert_eq!(certificate_fingerprint(&seen.pem).expect("pem"), fingerprint);
    Remote::accept_server_certificate(dir.path(), "gbot", &seen).expect("accept");
    Remote::accept_server_certificate(dir.path(), "gbot", &seen).expect("accepting again is fine");
    assert_eq!(std::fs::read(dir.path().join("servercerts/gbot.crt")).expect("saved"), seen.pem);
    let remote = Remote::from_lxc_config(dir.path(), "gbot").expect("remote");
    let https = remote.client().expect("client");
    assert_eq!(https.server().await.expect("pinned remote answers").auth, "untrusted");

    // Another certificate is never accepted over a pinned one, nor one whose fingerprint is not the accepted one.
    let (other, _) = common::self_signed_identity("gbot-impostor");
    let impostor =
        lxd_client::ServerCertificate { fingerprint: certificate_fingerprint(&other).expect("fp"), pem: other };
    let err = Remote::accept_server_certificate(dir.path(), "gbot", &impostor).expect_err("already pinned");
    assert!(err.to_string().contains("already has another pinned certificate"), "{err}");
    let lying = lxd_client::ServerCertificate { fingerprint: fingerprint.clone(), ..impostor };
    let err = Remote::accept_server_certificate(dir.path(), "other", &lying).expect_err("fingerprint mismatch");
    assert!(err.to_string().contains(&fingerprint), "{err}");

    // Nothing listens: first contact names the address.
    let err = first_contact("127.0.0.1:1").await.expect_err("closed port");
    assert!(err.is_unreachable() && err.to_string().contains("127.0.0.1:1"), "{err}");
}
