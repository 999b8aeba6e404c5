//! The HTTPS transport against the real daemon on 127.0.0.1:8443: a client certificate made here, trusted through
//! the unix socket, the server certificate pinned; 60 concurrent execs over it each return their whole output; a
//! wrong pin is refused; an untrusted client is `untrusted`;
//! and the same remote read from an `lxc`-style config directory.

mod common;

use common::{client, unique, Cleanup, Container};
use lxd_client::{certificate_fingerprint, Client, Error, ExecRequest, Remote, TlsIdentity};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::{X509NameBuilder, X509};

const ADDRESS: &str = "127.0.0.1:8443";

fn self_signed(common_name: &str) -> (Vec<u8>, Vec<u8>) {
    let group = EcGroup::from_curve_name(Nid::SECP384R1).expect("curve");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_nid(Nid::COMMONNAME, common_name).expect("cn");
    let name = name.build();
    let mut cert = X509::builder().expect("builder");
    cert.set_version(2).expect("version");
    cert.set_serial_number(&BigNum::from_u32(std::process::id()).expect("bn").to_asn1_integer().expect("serial"))
        .expect("serial");
    cert.set_subject_name(&name).expect("subject");
    cert.set_issuer_name(&name).expect("issuer");
    cert.set_pubkey(&key).expect("pubkey");
    cert.set_not_before(&Asn1Time::days_from_now(0).expect("now")).expect("not before");
    cert.set_not_after(&Asn1Time::days_from_now(1).expect("later")).expect("not after");
    cert.sign(&key, MessageDigest::sha384()).expect("sign");
    (cert.build().to_pem().expect("pem"), key.private_key_to_pem_pkcs8().expect("key pem"))
}

#[tokio::test]
async fn https_with_client_certificate_and_pinned_server() {
    let local = client().await;
    let server = local.server().await.expect("server").clone();
    assert!(
        server.config.contains_key("core.https_address"),
        "HTTPS is not enabled on the daemon; run `cargo xtask lxd-up`"
    );
    let server_pem = server.environment.certificate.clone().into_bytes();
    let name = unique("cert");
    let (cert_pem, key_pem) = self_signed(&name);
    let fingerprint = certificate_fingerprint(&cert_pem).expect("fingerprint");
    let identity = TlsIdentity {
        client_cert_pem: cert_pem.clone(),
        client_key_pem: key_pem.clone(),
        server_cert_pem: Some(server_pem.clone()),
        server_fingerprint: None,
        server_ca: None,
    };

    // Not trusted yet: the daemon answers, but as to a stranger.
    let stranger = Client::https(ADDRESS, identity.clone()).expect("client");
    assert_eq!(stranger.server().await.expect("GET /1.0 untrusted").auth, "untrusted");
    let err = stranger.instances().await.expect_err("untrusted may not list");
    assert!(matches!(err, Error::Api { status: 403, .. }), "{err:?}");

    // Trust it through the unix socket; removed again when the test ends.
    let _untrust = Cleanup::lxc(["config", "trust", "remove", fingerprint.as_str()]);
    local
        .trust_certificate(&name, std::str::from_utf8(&cert_pem).expect("utf8"))
        .await
        .expect("trust certificate (idempotent)");
    local
        .trust_certificate(&name, std::str::from_utf8(&cert_pem).expect("utf8"))
        .await
        .expect("trust certificate (idempotent)");
    assert!(local.certificates().await.expect("certificates").iter().any(|c| c.fingerprint == fingerprint));

    let trusted = Client::https(ADDRESS, identity.clone()).expect("client");
    assert_eq!(trusted.server().await.expect("GET /1.0").auth, "trusted");
    let over_https: Vec<String> =
        trusted.instances().await.expect("list over HTTPS").into_iter().map(|i| i.name).collect();
    let over_unix: Vec<String> = local.instances().await.expect("list over unix").into_iter().map(|i| i.name).collect();
    // Other tests create instances concurrently: compare what both saw that was not ours to race on.
    let stable = |names: &[String]| names.iter().filter(|n| !n.starts_with("gbot-")).cloned().collect::<Vec<_>>();
    assert_eq!(stable(&over_https), stable(&over_unix));

    // Exec over HTTPS, many at once: every output arrives whole (writes that meet the daemon's closed end are
    // dropped beneath TLS, so OpenSSL still decrypts every queued frame).
    {
        use futures_util::StreamExt;
        let c = Container::create(&local, "https-exec", true).await;
        let wrong: Vec<String> = futures_util::stream::iter(0..60u32)
            .map(|i| {
                let trusted = trusted.clone();
                let name = c.name.clone();
                async move {
                    let script = format!("echo 'line {i}'; echo 'err {i}' >&2; exit {}", i % 5);
                    match trusted.exec_output(&name, &ExecRequest::new(["sh", "-c", script.as_str()])).await {
                        Ok(out)
                            if (out.exit_code, out.stdout_text(), out.stderr_text())
                                == ((i % 5) as i32, format!("line {i}\n"), format!("err {i}\n")) =>
                        {
                            None
                        }
                        Ok(out) => {
                            Some(format!("exec {i}: {:?}", (out.exit_code, out.stdout_text(), out.stderr_text())))
                        }
                        Err(e) => Some(format!("exec {i}: {e}")),
                    }
                }
            })
            .buffer_unordered(8)
            .filter_map(|o| async move { o })
            .collect()
            .await;
        assert!(wrong.is_empty(), "{} of 60 execs over HTTPS went wrong: {wrong:#?}", wrong.len());
    }

    // A wrong pin is refused at the handshake.
    let wrong = TlsIdentity { server_cert_pem: None, server_fingerprint: Some("00".repeat(32)), ..identity.clone() };
    let err = Client::https(ADDRESS, wrong).expect("client").server().await.expect_err("wrong pin");
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    // A pin given by fingerprint (with colons, as `lxc` prints it) works too.
    let server_fp = certificate_fingerprint(&server_pem).expect("fp");
    let colons =
        server_fp.as_bytes().chunks(2).map(|c| String::from_utf8_lossy(c).to_uppercase()).collect::<Vec<_>>().join(":");
    let by_fp = TlsIdentity { server_cert_pem: None, server_fingerprint: Some(colons), ..identity.clone() };
    assert_eq!(
        Client::https(ADDRESS, by_fp).expect("client").server().await.expect("pinned by fingerprint").auth,
        "trusted"
    );

    // The same remote, read from an lxc-style configuration directory.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("config.yml"),
        format!("default-remote: gbot\nremotes:\n  gbot:\n    addr: https://{ADDRESS}\n    protocol: lxd\n    public: false\n"),
    )
    .expect("config.yml");
    std::fs::write(dir.path().join("client.crt"), &cert_pem).expect("client.crt");
    std::fs::write(dir.path().join("client.key"), &key_pem).expect("client.key");
    std::fs::create_dir(dir.path().join("servercerts")).expect("servercerts");
    std::fs::write(dir.path().join("servercerts/gbot.crt"), &server_pem).expect("server cert");
    let remote = Remote::from_lxc_config(dir.path(), "gbot").expect("remote");
    let via_remote = remote.client().expect("client");
    assert_eq!(via_remote.server().await.expect("GET /1.0 via remote").auth, "trusted");
    via_remote.instances().await.expect("list via remote");

    // Remove the trust entry explicitly and see it take effect.
    local.remove_certificate(&fingerprint).await.expect("untrust");
    let again = Client::https(ADDRESS, identity).expect("client");
    assert_eq!(again.server().await.expect("GET /1.0").auth, "untrusted");
}
