//! Remotes of the `lxc` CLI: read its `config.yml`, `client.crt`, `client.key` and `servercerts/<remote>.crt` so
//! users reuse the remotes they already set up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::transport::{discover_socket, Endpoint, Flavor, TlsIdentity};

/// One remote as the `lxc` CLI knows it.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The remote's name in `config.yml`.
    pub name: String,
    /// Where it is.
    pub endpoint: Endpoint,
}

#[derive(Deserialize)]
struct LxcConfig {
    #[serde(default)]
    remotes: BTreeMap<String, LxcRemote>,
}

#[derive(Deserialize)]
struct LxcRemote {
    addr: String,
    #[serde(default)]
    protocol: String,
}

impl Remote {
    /// The `lxc` CLI's configuration directory: `$LXD_CONF`, else `~/snap/lxd/common/config` when it exists
    /// (snap installs), else `~/.config/lxc`.
    pub fn default_config_dir() -> Option<PathBuf> {
        if let Some(conf) = std::env::var_os("LXD_CONF").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(conf));
        }
        let home = PathBuf::from(std::env::var_os("HOME")?);
        let snap = home.join("snap/lxd/common/config");
        if snap.join("config.yml").exists() {
            return Some(snap);
        }
        Some(home.join(".config/lxc"))
    }

    /// Read remote `remote_name` from the `lxc` configuration in `config_dir` (`config.yml`; for HTTPS remotes
    /// also `client.crt`, `client.key` and, when present, `servercerts/<remote>.crt`, which is then pinned).
    pub fn from_lxc_config(config_dir: &Path, remote_name: &str) -> Result<Self> {
        let config_path = config_dir.join("config.yml");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| Error::Config { message: format!("cannot read {}: {e}", config_path.display()) })?;
        let config: LxcConfig = serde_yaml::from_str(&text)
            .map_err(|e| Error::Config { message: format!("{}: {e}", config_path.display()) })?;
        let remote = config.remotes.get(remote_name).ok_or_else(|| Error::Config {
            message: format!(
                "no remote `{remote_name}` in {} (known: {})",
                config_path.display(),
                config.remotes.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })?;
        if !remote.protocol.is_empty() && remote.protocol != "lxd" {
            return Err(Error::Config {
                message: format!(
                    "remote `{remote_name}` speaks `{}`, not the LXD API (image servers are not daemons)",
                    remote.protocol
                ),
            });
        }
        let endpoint = if let Some(rest) = remote.addr.strip_prefix("unix://") {
            if rest.is_empty() {
                Endpoint::Unix(discover_socket(Flavor::Lxd)?)
            } else {
                Endpoint::Unix(PathBuf::from(rest))
            }
        } else if let Some(rest) = remote.addr.strip_prefix("https://") {
            let host = rest.trim_end_matches('/');
            let has_port = match host.rsplit_once(':') {
                Some((h, p)) => {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']'))
                }
                None => false,
            };
            let address = if has_port { host.to_string() } else { format!("{host}:8443") };
            let read = |file: &Path| {
                std::fs::read(file)
                    .map_err(|e| Error::Config { message: format!("cannot read {}: {e}", file.display()) })
            };
            let server_cert = config_dir.join("servercerts").join(format!("{remote_name}.crt"));
            let server_cert_pem = if server_cert.exists() { Some(read(&server_cert)?) } else { None };
            Endpoint::Https {
                address,
                tls: TlsIdentity {
                    client_cert_pem: read(&config_dir.join("client.crt"))?,
                    client_key_pem: read(&config_dir.join("client.key"))?,
                    server_cert_pem,
                    server_fingerprint: None,
                },
            }
        } else {
            return Err(Error::Config {
                message: format!("remote `{remote_name}` has an unsupported address {:?}", remote.addr),
            });
        };
        Ok(Self { name: remote_name.to_string(), endpoint })
    }

    /// A client for this remote.
    pub fn client(&self) -> Result<Client> {
        Client::new(self.endpoint.clone(), Flavor::Lxd)
    }
}

impl Client {
    /// A client for an HTTPS daemon at `address` (`host:port`) with a client certificate; set
    /// `server_cert_pem` or `server_fingerprint` in `tls` to pin the server's certificate.
    pub fn https(address: impl Into<String>, tls: TlsIdentity) -> Result<Self> {
        Client::new(Endpoint::Https { address: address.into(), tls }, Flavor::Lxd)
    }

    /// The client of remote `remote_name` of the `lxc` CLI's own configuration ([`Remote::default_config_dir`]).
    pub fn from_lxc_remote(remote_name: &str) -> Result<Self> {
        let dir = Remote::default_config_dir()
            .ok_or_else(|| Error::Config { message: "HOME is not set and LXD_CONF is empty".into() })?;
        Remote::from_lxc_config(&dir, remote_name)?.client()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unix_and_https_remotes() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("config.yml"),
            "default-remote: local\nremotes:\n  images:\n    addr: https://images.linuxcontainers.org\n    protocol: simplestreams\n    public: true\n  local:\n    addr: unix:///run/x.socket\n    public: false\n  far:\n    addr: https://10.0.0.5\n    protocol: lxd\n",
        )
        .expect("write");
        let local = Remote::from_lxc_config(dir.path(), "local").expect("local");
        assert!(matches!(&local.endpoint, Endpoint::Unix(p) if p == Path::new("/run/x.socket")));
        let err = Remote::from_lxc_config(dir.path(), "images").expect_err("simplestreams");
        assert!(err.to_string().contains("simplestreams"), "{err}");
        let err = Remote::from_lxc_config(dir.path(), "far").expect_err("no client cert");
        assert!(err.to_string().contains("client.crt"), "{err}");
        std::fs::write(dir.path().join("client.crt"), "c").expect("write");
        std::fs::write(dir.path().join("client.key"), "k").expect("write");
        match Remote::from_lxc_config(dir.path(), "far").expect("far").endpoint {
            Endpoint::Https { address, tls } => {
                assert_eq!(address, "10.0.0.5:8443");
                assert!(tls.server_cert_pem.is_none());
            }
            other => panic!("{other:?}"),
        }
        let err = Remote::from_lxc_config(dir.path(), "nope").expect_err("unknown");
        assert!(err.to_string().contains("known: far, images, local"), "{err}");
    }
}
