//! Vault initialisation, seal status and unsealing from `init.json`.
//!
//! `init` runs `sys/init` once and writes the keys straight into `<stack-dir>/.secrets/vault-init.json` (mode 0600,
//! created before the request so the keys always have a place to go; the seed's `vault operator init
//! -format=json` shape), never printing them; it refuses a Vault that is initialised already, and an existing
//! file. gbo's own Vault listens on plain http on loopback (the container's 127.0.0.1, published on the host's
//! 127.0.0.1 by an LXD proxy device): see `docs/operations.md` (Vault) for why not TLS.
//!
//! Keys come from a file that only its owner may read (mode 0600 or 0400), in either `init.json` shape (the API's
//! `{keys, keys_base64, root_token}` or `vault operator init -format=json`'s `{unseal_keys_b64, unseal_keys_hex,
//! unseal_shares, unseal_threshold, root_token}`), or from stdin. A key is never printed, logged, put in an argv or
//! an environment, and never appears in an error: keys are named by their position. Vault silently ignores a
//! duplicate share, so distinct shares are counted here, and submission stops as soon as Vault reports unsealed;
//! `sys/health` confirms. An uninitialised Vault is an error: unseal never initialises.
//!
//! Vault is reached where the `vault` CLI would look (`VAULT_ADDR`, `VAULT_CACERT`) or through the tenant's proxy
//! port. TLS is verified against the given CA (only that CA); plain `http://` is accepted only for loopback
//! addresses; skipping verification needs an explicit flag.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where gbo's vault role keeps `init.json`, relative to the stack dir.
pub const INIT_FILE: &str = ".secrets/vault-init.json";
/// Where the tenant's CA certificate lives, relative to the stack dir.
pub const CA_FILE: &str = ".secrets/ca.pem";

/// A Vault operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The key file may be read by others.
    #[error("{} is readable by group or others (mode {mode:o}); run `chmod 600 {}` first", path.display(), path.display())]
    LoosePermissions {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// The key file is not one of the two shapes.
    #[error("{source_name} is not an init.json Vault wrote: {reason}. Expected {{\"keys\": [...], \"keys_base64\": [...]}} or {{\"unseal_keys_b64\": [...], \"unseal_keys_hex\": [...]}}")]
    BadKeys {
        /// File name or `stdin`.
        source_name: String,
        /// What is wrong (never a key).
        reason: String,
    },
    /// The key file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A Vault address that is not allowed.
    #[error("invalid Vault address `{addr}`: {reason}")]
    Address {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The CA file is unusable.
    #[error("cannot use the CA certificate {}: {reason}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Vault is initialised already: init refuses.
    #[error(
        "Vault at {addr} is initialised already: nothing was changed (its keys are wherever its first init put them)"
    )]
    AlreadyInitialized {
        /// Address.
        addr: String,
    },
    /// The init file exists: init never overwrites keys.
    #[error("{} exists already: nothing was changed (gbo never overwrites unseal keys; move it away only if it holds no live keys)", path.display())]
    InitFileExists {
        /// The file.
        path: PathBuf,
    },
    /// Bad shares or threshold.
    #[error("{0}")]
    BadInput(String),
    /// Writing the init file failed.
    #[error("{context}")]
    Write {
        /// What failed.
        context: String,
        /// Cause.
        #[source]
        source: crate::hostfs::HostFsError,
    },
    /// Vault is not initialised.
    #[error(
        "Vault at {addr} is not initialised: run `gbo vault init` first (it writes the keys to the tenant's init.json)"
    )]
    NotInitialized {
        /// Address.
        addr: String,
    },
    /// Vault could not be reached or answered badly.
    #[error("Vault at {addr}: {message}")]
    Http {
        /// Address.
        addr: String,
        /// What happened.
        message: String,
    },
    /// Not enough valid keys.
    #[error("Vault is still sealed after {submitted} distinct key(s) (threshold {threshold}, progress {progress}){}", if rejected.is_empty() { String::new() } else { format!("; Vault rejected key(s) number {}", rejected.iter().map(|i| (i + 1).to_string()).collect::<Vec<_>>().join(", ")) })]
    StillSealed {
        /// Distinct keys sent.
        submitted: usize,
        /// Threshold.
        threshold: u64,
        /// Progress.
        progress: u64,
        /// Positions (0-based) of keys Vault rejected.
        rejected: Vec<usize>,
    },
}

/// One unseal key share. Its value never leaves this module except in the request body.
#[derive(Clone, PartialEq, Eq)]
pub struct UnsealKey(String);

impl std::fmt::Debug for UnsealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsealKey(<redacted>)")
    }
}

impl UnsealKey {
    /// The share's bytes (hex or base64 decoded), for counting distinct shares.
    fn bytes(&self) -> Option<Vec<u8>> {
        decode_hex(&self.0).or_else(|| decode_base64(&self.0))
    }
}

/// Keys read from an init.json or stdin.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The shares, in file order.
    pub keys: Vec<UnsealKey>,
    /// The threshold the file states, if it states one.
    pub threshold: Option<u64>,
}

/// Parse keys: either `init.json` shape, or one key per line.
pub fn parse_keys(text: &str, source_name: &str) -> Result<Keys, VaultError> {
    let bad = |reason: &str| VaultError::BadKeys { source_name: source_name.to_string(), reason: reason.to_string() };
    let trimmed = text.trim();
    if trimmed.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(trimmed)
            .map_err(|e| bad(&format!("malformed JSON at line {} column {}", e.line(), e.column())))?;
        let list = |name: &str| -> Option<Vec<UnsealKey>> {
            let items = value.get(name)?.as_array()?;
            items.iter().map(|v| v.as_str().map(|s| UnsealKey(s.to_string()))).collect()
        };
        let keys = list("keys_base64")
            .or_else(|| list("unseal_keys_b64"))
            .or_else(|| list("keys"))
            .or_else(|| list("unseal_keys_hex"))
            .ok_or_else(|| bad("no key list"))?;
        if keys.is_empty() {
            return Err(bad("the key list is empty"));
        }
        if keys.iter().any(|k| k.bytes().is_none()) {
            return Err(bad("a key is neither hex nor base64"));
        }
        let threshold = value.get("unseal_threshold").and_then(|v| v.as_u64());
        return Ok(Keys { keys, threshold });
    }
    let keys: Vec<UnsealKey> =
        trimmed.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| UnsealKey(l.to_string())).collect();
    if keys.is_empty() {
        return Err(bad("no keys"));
    }
    if keys.iter().any(|k| k.bytes().is_none()) {
        return Err(bad("a line is neither a hex nor a base64 key"));
    }
    Ok(Keys { keys, threshold: None })
}

/// Read keys from a file only its owner can read.
pub fn read_keys_file(path: &Path) -> Result<Keys, VaultError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| VaultError::Read { path: path.to_path_buf(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(VaultError::LoosePermissions { path: path.to_path_buf(), mode });
    }
    let text = std::fs::read_to_string(path).map_err(|source| VaultError::Read { path: path.to_path_buf(), source })?;
    parse_keys(&text, &path.display().to_string())
}

/// How to reach Vault.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `https://127.0.0.1:8200` and the like.
    pub addr: String,
    /// CA to verify against (only this CA).
    pub ca_cert: Option<PathBuf>,
    /// Skip TLS verification (explicit flag only).
    pub insecure_skip_verify: bool,
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

impl Endpoint {
    /// Check the address and build a client.
    fn client(&self) -> Result<reqwest::Client, VaultError> {
        let addr_err = |reason: &str| VaultError::Address { addr: self.addr.clone(), reason: reason.to_string() };
        let url = reqwest::Url::parse(&self.addr)
            .map_err(|e| addr_err(&format!("{e}; write it like https://127.0.0.1:8200")))?;
        let host = url.host_str().ok_or_else(|| addr_err("it has no host"))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(host) => {}
            "http" => {
                return Err(addr_err(
                    "plain http is accepted only for loopback addresses (127.0.0.0/8, ::1, localhost); use https",
                ))
            }
            _ => return Err(addr_err("use https:// (or http:// on loopback)")),
        }
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(15)).no_proxy();
        if self.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        } else if let Some(ca) = &self.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| VaultError::Ca { path: ca.clone(), reason: e.to_string() })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| VaultError::Ca { path: ca.clone(), reason: e.to_string() })?;
            builder = builder.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        builder.build().map_err(|e| VaultError::Http { addr: self.addr.clone(), message: e.to_string() })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.addr.trim_end_matches('/'))
    }
}

/// `sys/seal-status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SealStatus {
    /// Initialised.
    pub initialized: bool,
    /// Sealed.
    pub sealed: bool,
    /// Threshold.
    pub t: u64,
    /// Shares.
    pub n: u64,
    /// Shares submitted so far.
    pub progress: u64,
    /// Vault version.
    pub version: String,
}

/// `gbo vault status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// Address.
    pub addr: String,
    /// Seal status.
    pub seal: SealStatus,
    /// `sys/health` HTTP code.
    pub health_code: u16,
    /// What the health code means.
    pub health: String,
}

/// What `sys/health` codes mean.
pub fn health_meaning(code: u16) -> &'static str {
    match code {
        200 => "initialised, unsealed, active",
        429 => "unsealed, standby",
        472 => "disaster-recovery replication secondary",
        473 => "performance standby",
        501 => "not initialised",
        503 => "sealed",
        _ => "unexpected",
    }
}

async fn seal_status(endpoint: &Endpoint, client: &reqwest::Client) -> Result<SealStatus, VaultError> {
    let http = |e: reqwest::Error| VaultError::Http { addr: endpoint.addr.clone(), message: error_chain(&e) };
    let response = client.get(endpoint.url("sys/seal-status")).send().await.map_err(http)?;
    let code = response.status();
    if !code.is_success() {
        return Err(VaultError::Http {
            addr: endpoint.addr.clone(),
            message: format!("sys/seal-status answered {code}"),
        });
    }
    response.json().await.map_err(http)
}

async fn health(endpoint: &Endpoint, client: &reqwest::Client) -> Result<u16, VaultError> {
    let response = client
        .get(endpoint.url("sys/health"))
        .send()
        .await
        .map_err(|e| VaultError::Http { addr: endpoint.addr.clone(), message: error_chain(&e) })?;
    Ok(response.status().as_u16())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Seal status and health.
pub async fn status(endpoint: &Endpoint) -> Result<Status, VaultError> {
    let client = endpoint.client()?;
    let seal = seal_status(endpoint, &client).await?;
    let code = health(endpoint, &client).await?;
    Ok(Status { addr: endpoint.addr.clone(), seal, health_code: code, health: health_meaning(code).to_string() })
}

/// What unseal did.
#[derive(Debug, Clone, serde::Serialize)]
pub enum UnsealOutcome {
    /// It was unsealed already; nothing was sent.
    AlreadyUnsealed,
    /// Unsealed now, after this many distinct keys; health confirmed with this code.
    Unsealed {
        /// Distinct keys sent.
        keys_submitted: usize,
        /// Duplicates in the file, skipped.
        duplicates_skipped: usize,
        /// Keys Vault rejected (positions, 1-based).
        rejected: Vec<usize>,
        /// `sys/health` code after.
        health_code: u16,
        /// Whether a stale partial unseal was reset first.
        reset_stale_progress: bool,
    },
}

/// Submit distinct keys until Vault reports unsealed, then confirm through `sys/health`.
pub async fn unseal(endpoint: &Endpoint, keys: &Keys) -> Result<UnsealOutcome, VaultError> {
    let client = endpoint.client()?;
    let status = seal_status(endpoint, &client).await?;
    if !status.initialized {
        return Err(VaultError::NotInitialized { addr: endpoint.addr.clone() });
    }
    if !status.sealed {
        return Ok(UnsealOutcome::AlreadyUnsealed);
    }
    let mut reset_stale_progress = false;
    if status.progress > 0 {
        // Someone's earlier partial attempt: start from zero so our count is the whole story.
        if submit(endpoint, &client, &serde_json::json!({ "reset": true })).await?.is_err() {
            return Err(VaultError::Http {
                addr: endpoint.addr.clone(),
                message: "Vault refused to reset the earlier partial unseal".into(),
            });
        }
        reset_stale_progress = true;
    }
    let mut seen = BTreeSet::new();
    let mut duplicates = 0;
    let mut submitted = 0;
    let mut rejected: Vec<usize> = Vec::new();
    let mut last = status;
    for (index, key) in keys.keys.iter().enumerate() {
        let Some(bytes) = key.bytes() else { continue };
        if !seen.insert(bytes) {
            duplicates += 1;
            continue;
        }
        submitted += 1;
        tracing::debug!(key_number = index + 1, "submitting unseal key");
        match submit(endpoint, &client, &serde_json::json!({ "key": key.0 })).await? {
            Ok(s) => {
                last = s;
                if !last.sealed {
                    let code = health(endpoint, &client).await?;
                    if !matches!(code, 200 | 429 | 472 | 473) {
                        return Err(VaultError::Http {
                            addr: endpoint.addr.clone(),
                            message: format!(
                                "unseal reported success but sys/health answers {code} ({})",
                                health_meaning(code)
                            ),
                        });
                    }
                    return Ok(UnsealOutcome::Unsealed {
                        keys_submitted: submitted,
                        duplicates_skipped: duplicates,
                        rejected: rejected.iter().map(|i| i + 1).collect(),
                        health_code: code,
                        reset_stale_progress,
                    });
                }
            }
            Err(()) => rejected.push(index),
        }
    }
    Err(VaultError::StillSealed { submitted, threshold: last.t, progress: last.progress, rejected })
}

/// What `init` did (never the keys).
#[derive(Debug, Clone, serde::Serialize)]
pub struct InitOutcome {
    /// Where the keys and root token were written (0600).
    pub path: PathBuf,
    /// Key shares.
    pub shares: u64,
    /// Keys needed to unseal.
    pub threshold: u64,
}

/// Initialise Vault with `shares` key shares of which `threshold` unseal it, writing the keys into
/// `secrets_dir/vault-init.json` (0600) in the shape of `vault operator init -format=json`. Refuses an initialised
/// Vault and an existing file; the file is created (empty) before Vault is asked, and removed if Vault refuses.
pub async fn init(
    endpoint: &Endpoint,
    shares: u64,
    threshold: u64,
    secrets_dir: &Path,
) -> Result<InitOutcome, VaultError> {
    if !(1..=255).contains(&shares) || !(1..=shares).contains(&threshold) || (shares > 1 && threshold < 2) {
        return Err(VaultError::BadInput(format!(
            "--shares {shares} --threshold {threshold}: shares must be 1 to 255 and threshold 1 to shares (at least 2 when there are several shares)"
        )));
    }
    let client = endpoint.client()?;
    let status = seal_status(endpoint, &client).await?;
    if status.initialized {
        return Err(VaultError::AlreadyInitialized { addr: endpoint.addr.clone() });
    }
    let name = std::path::Path::new(INIT_FILE).file_name().unwrap_or_default().to_os_string();
    let path = secrets_dir.join(&name);
    let write_err = |context: String| move |source| VaultError::Write { context, source };
    let dir = crate::hostfs::HostDir::create_root(secrets_dir, 0o700)
        .map_err(write_err(format!("opening {}", secrets_dir.display())))?;
    if dir.stat(std::path::Path::new(&name)).map_err(write_err(format!("checking {}", path.display())))?.is_some() {
        return Err(VaultError::InitFileExists { path });
    }
    let mut file = dir.create_new(&name, 0o600).map_err(write_err(format!("creating {}", path.display())))?;
    let http = |e: reqwest::Error| VaultError::Http { addr: endpoint.addr.clone(), message: error_chain(&e) };
    let answer = async {
        let response = client
            .put(endpoint.url("sys/init"))
            .json(&serde_json::json!({ "secret_shares": shares, "secret_threshold": threshold }))
            .send()
            .await
            .map_err(http)?;
        let code = response.status();
        if code == reqwest::StatusCode::BAD_REQUEST && seal_status(endpoint, &client).await?.initialized {
            return Err(VaultError::AlreadyInitialized { addr: endpoint.addr.clone() });
        }
        if !code.is_success() {
            return Err(VaultError::Http { addr: endpoint.addr.clone(), message: format!("sys/init answered {code}") });
        }
        response.json::<serde_json::Value>().await.map_err(http)
    }
    .await;
    let body = match answer {
        Ok(body) => body,
        Err(e) => {
            drop(file);
            let _ = dir.remove(std::path::Path::new(&name));
            return Err(e);
        }
    };
    let list = |key: &str| body.get(key).and_then(|v| v.as_array()).cloned().unwrap_or_default();
    let (hex_keys, b64_keys) = (list("keys"), list("keys_base64"));
    let document = serde_json::json!({
        "unseal_keys_b64": b64_keys,
        "unseal_keys_hex": hex_keys,
        "unseal_shares": shares,
        "unseal_threshold": threshold,
        "recovery_keys_b64": [],
        "recovery_keys_hex": [],
        "recovery_keys_shares": 0,
        "recovery_keys_threshold": 0,
        "root_token": body.get("root_token").cloned().unwrap_or_default(),
    });
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    {
        use std::io::Write;
        let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
        if let Err(e) = written {
            return Err(VaultError::Http {
                addr: endpoint.addr.clone(),
                message: format!(
                    "Vault is initialised but writing its keys to {} failed ({e}); the keys are lost: re-create the vault container's data and init again",
                    path.display()
                ),
            });
        }
    }
    if hex_keys.len() as u64 != shares || b64_keys.len() as u64 != shares {
        return Err(VaultError::Http {
            addr: endpoint.addr.clone(),
            message: format!(
                "sys/init returned {} key(s) for {shares} share(s); what it returned is in {}",
                b64_keys.len(),
                path.display()
            ),
        });
    }
    Ok(InitOutcome { path, shares, threshold })
}

/// PUT sys/unseal. Ok(status), or Err(()) when Vault rejected the key (400).
async fn submit(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    body: &serde_json::Value,
) -> Result<Result<SealStatus, ()>, VaultError> {
    let http = |e: reqwest::Error| VaultError::Http { addr: endpoint.addr.clone(), message: error_chain(&e) };
    let response = client.put(endpoint.url("sys/unseal")).json(body).send().await.map_err(http)?;
    let code = response.status().as_u16();
    match code {
        200 => Ok(Ok(response.json().await.map_err(http)?)),
        400 => Ok(Err(())),
        other => Err(VaultError::Http { addr: endpoint.addr.clone(), message: format!("sys/unseal answered {other}") }),
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    hex::decode(s).ok()
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = s.trim_end_matches('=');
    if s.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_init_json_shapes_parse_and_keys_never_print() {
        let api = r#"{"keys": ["0a0b"], "keys_base64": ["Cgs=", "DA0="], "root_token": "s.x"}"#;
        let cli = r#"{"unseal_keys_b64": ["Cgs="], "unseal_keys_hex": ["0a0b"], "unseal_shares": 1, "unseal_threshold": 1, "root_token": "s.x"}"#;
        let a = parse_keys(api, "a").expect("api shape");
        assert_eq!(a.keys.len(), 2);
        let c = parse_keys(cli, "c").expect("cli shape");
        assert_eq!(c.threshold, Some(1));
        assert_eq!(c.keys[0].bytes(), Some(vec![0x0a, 0x0b]));
        assert_eq!(UnsealKey("0a0b".into()).bytes(), UnsealKey("Cgs=".into()).bytes());
        assert_eq!(format!("{a:?}").matches("redacted").count(), 2);
        assert!(!format!("{a:?}").contains("Cgs"));
        for bad in ["{", "{\"keys\": 3}", "{\"keys\": []}", "{\"keys\": [\"!!\"]}", ""] {
            let err = parse_keys(bad, "f").expect_err(bad);
            assert!(err.to_string().starts_with("f is not an init.json"), "{err}");
        }
        assert_eq!(parse_keys("Cgs=\n\n0a0c\n", "stdin").expect("lines").keys.len(), 2);
    }

    #[test]
    fn only_loopback_may_use_plain_http() {
        assert!(
            is_loopback_host("127.0.0.1")
                && is_loopback_host("[::1]")
                && is_loopback_host("localhost")
                && is_loopback_host("127.5.0.1")
        );
        assert!(!is_loopback_host("10.0.0.1") && !is_loopback_host("vault.example.com"));
        let e = Endpoint { addr: "http://192.0.2.1:8200".into(), ca_cert: None, insecure_skip_verify: false };
        assert!(e.client().expect_err("remote http").to_string().contains("only for loopback"));
    }
}
