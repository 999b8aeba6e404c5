//! A **stand-in for HashiCorp Vault** (Vault cannot be installed here), written from Vault's API documentation
//! (`sys/init`, `sys/seal-status`, `sys/unseal`, `sys/health`) and sharing no types with gbo: a tiny HTTP/1.1 server on
//! 127.0.0.1, plain or TLS (a test CA made with the `openssl` command), with Shamir-like seal semantics: a threshold
//! of distinct shares, progress, duplicate shares silently ignored, `reset`, a 400 for a key that is not a share,
//! health codes 200/429/501/503. It records every request body so tests can check what was sent.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Seal state.
#[derive(Debug, Clone)]
pub struct State {
    pub initialized: bool,
    pub sealed: bool,
    pub threshold: usize,
    /// Hex of each share.
    pub shares: Vec<String>,
    pub progress: BTreeSet<String>,
    pub standby: bool,
    /// Every request: (method, path, body).
    pub requests: Vec<(String, String, String)>,
}

pub struct StandInVault {
    pub addr: String,
    pub state: Arc<Mutex<State>>,
    pub ca: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

/// Shares as hex strings (32 random-looking bytes each, derived from the index).
pub fn make_shares(n: usize) -> Vec<String> {
    (0..n).map(|i| (0..32).map(|j| format!("{:02x}", (i * 37 + j * 11 + 5) % 256)).collect()).collect()
}

pub fn to_base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn from_base64(s: &str) -> Option<Vec<u8>> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.trim_end_matches('=').bytes() {
        acc = (acc << 6) | A.iter().position(|a| *a == c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The share a submitted key denotes (hex or base64), as hex.
fn normalise(key: &str) -> Option<String> {
    if key.len().is_multiple_of(2) && !key.is_empty() && key.chars().all(|c| c.is_ascii_hexdigit()) {
        return Some(key.to_ascii_lowercase());
    }
    from_base64(key).map(|b| hex_of(&b))
}

/// The API's init.json shape.
pub fn init_json_api(shares: &[String]) -> String {
    let b64: Vec<String> = shares.iter().map(|h| to_base64(&hex::decode(h).expect("hex"))).collect();
    json!({ "keys": shares, "keys_base64": b64, "root_token": "hvs.standin-root" }).to_string()
}

/// `vault operator init -format=json`'s shape.
pub fn init_json_cli(shares: &[String], threshold: usize) -> String {
    let b64: Vec<String> = shares.iter().map(|h| to_base64(&hex::decode(h).expect("hex"))).collect();
    json!({ "unseal_keys_b64": b64, "unseal_keys_hex": shares, "unseal_shares": shares.len(), "unseal_threshold": threshold, "recovery_keys_b64": [], "root_token": "hvs.standin-root" }).to_string()
}

fn status_body(s: &State) -> Value {
    json!({
        "type": "shamir", "initialized": s.initialized, "sealed": s.sealed, "t": s.threshold, "n": s.shares.len(),
        "progress": s.progress.len(), "nonce": if s.progress.is_empty() { "" } else { "d4b6a8e1-standin" },
        "version": "1.15.6-standin", "migration": false, "recovery_seal": false, "storage_type": "inmem"
    })
}

fn handle(state: &Mutex<State>, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = state.lock().expect("state");
    s.requests.push((method.to_string(), path.to_string(), body.to_string()));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/v1/sys/seal-status") => (200, status_body(&s)),
        ("GET" | "HEAD", "/v1/sys/health") => {
            let code = if !s.initialized {
                501
            } else if s.sealed {
                503
            } else if s.standby {
                429
            } else {
                200
            };
            (
                code,
                json!({ "initialized": s.initialized, "sealed": s.sealed, "standby": s.standby, "version": "1.15.6-standin" }),
            )
        }
        ("PUT" | "POST", "/v1/sys/init") => {
            if s.initialized {
                return (400, json!({ "errors": ["Vault is already initialized"] }));
            }
            let Ok(req) = serde_json::from_str::<Value>(body) else {
                return (400, json!({ "errors": ["failed to parse JSON input"] }));
            };
            let shares = req.get("secret_shares").and_then(Value::as_u64).unwrap_or(0) as usize;
            let threshold = req.get("secret_threshold").and_then(Value::as_u64).unwrap_or(0) as usize;
            if shares == 0 || threshold == 0 || threshold > shares {
                return (400, json!({ "errors": ["invalid seal configuration"] }));
            }
            // Fresh shares, different from make_shares' (so a test cannot pass on keys it already knew).
            let fresh: Vec<String> = (0..shares)
                .map(|i| (0..32).map(|j| format!("{:02x}", (i * 53 + j * 7 + 91) % 256)).collect())
                .collect();
            s.initialized = true;
            s.sealed = true;
            s.threshold = threshold;
            s.shares = fresh.clone();
            s.progress.clear();
            let b64: Vec<String> = fresh.iter().map(|h| to_base64(&hex::decode(h).expect("hex"))).collect();
            (200, json!({ "keys": fresh, "keys_base64": b64, "root_token": "hvs.standin-root" }))
        }
        ("PUT" | "POST", "/v1/sys/unseal") => {
            let Ok(req) = serde_json::from_str::<Value>(body) else {
                return (400, json!({ "errors": ["failed to parse JSON input"] }));
            };
            if req.get("reset").and_then(Value::as_bool) == Some(true) {
                s.progress.clear();
                return (200, status_body(&s));
            }
            if !s.initialized {
                return (400, json!({ "errors": ["Vault is not initialized"] }));
            }
            let Some(key) = req.get("key").and_then(Value::as_str) else {
                return (
                    400,
                    json!({ "errors": ["'key' must be specified in request body as JSON, or 'reset' set to true"] }),
                );
            };
            if !s.sealed {
                return (200, status_body(&s));
            }
            let Some(share) = normalise(key).filter(|h| s.shares.contains(h)) else {
                return (400, json!({ "errors": ["'key' must be a valid hex or base64 string"] }));
            };
            // A duplicate share is silently ignored (Vault's documented behaviour).
            s.progress.insert(share);
            if s.progress.len() >= s.threshold {
                s.sealed = false;
                s.progress.clear();
            }
            (200, status_body(&s))
        }
        _ => (404, json!({ "errors": [] })),
    }
}

async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[header_end..(header_end + length).min(buf.len())]).into_owned();
    let (code, value) = handle(&state, &method, &path, &body);
    let text = value.to_string();
    let response = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is required");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl StandInVault {
    /// Start on a free loopback port; `tls` makes a CA and a server certificate for 127.0.0.1.
    pub async fn start(state: State, tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(state));
        let acceptor = if tls {
            let d = dir.path();
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=gbo test CA",
                ],
            );
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            );
            std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").expect("ext");
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "server.pem",
                    "-days",
                    "2",
                    "-extfile",
                    "ext.cnf",
                ],
            );
            let mut b =
                openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls()).expect("acceptor");
            b.set_private_key_file(d.join("server.key"), openssl::ssl::SslFiletype::PEM).expect("key");
            b.set_certificate_chain_file(d.join("server.pem")).expect("cert");
            Some(Arc::new(b.build()))
        } else {
            None
        };
        let st = state.clone();
        let acc = acceptor.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let st = st.clone();
                let acc = acc.clone();
                tokio::spawn(async move {
                    match acc {
                        Some(acceptor) => {
                            let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else { return };
                            let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, tcp) else { return };
                            if Pin::new(&mut tls).accept().await.is_err() {
                                return;
                            }
                            serve_one(tls, st).await;
                        }
                        None => serve_one(tcp, st).await,
                    }
                });
            }
        });
        let scheme = if tls { "https" } else { "http" };
        let ca = tls.then(|| dir.path().join("ca.pem"));
        Self { addr: format!("{scheme}://127.0.0.1:{port}"), state, ca, _dir: dir }
    }

    pub fn sealed(threshold: usize, shares: &[String]) -> State {
        State {
            initialized: true,
            sealed: true,
            threshold,
            shares: shares.to_vec(),
            progress: BTreeSet::new(),
            standby: false,
            requests: Vec::new(),
        }
    }

    /// A Vault that was never initialised (as gbo installs it).
    pub fn uninitialised() -> State {
        State {
            initialized: false,
            sealed: true,
            threshold: 0,
            shares: Vec::new(),
            progress: BTreeSet::new(),
            standby: false,
            requests: Vec::new(),
        }
    }

    pub fn snapshot(&self) -> State {
        self.state.lock().expect("state").clone()
    }
}
