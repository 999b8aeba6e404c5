//! Remotes of the `lxc` CLI: read its `config.yml`, `client.crt`, `client.key` and `servercerts/<remote>.crt` so
//! users reuse the remotes they already set up.
//!
//! A remote named explicitly is the only daemon used: an unknown remote, a unix remote whose socket is not there and
//! an HTTPS remote that cannot be reached are errors naming it, never the local socket. An HTTPS remote is trusted
//! through its pinned certificate (`servercerts/<remote>.crt`, as `lxc remote add` saves it) or a CA chosen with
//! [`Remote::trust_ca`]; without either it is refused with its fingerprint ([`crate::Error::UntrustedServer`]), and
//! [`crate::first_contact`] then [`Remote::accept_server_certificate`] pin it once the operator has checked it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::transport::{discover_socket, Endpoint, Flavor, ServerCa, ServerCertificate, TlsIdentity};

/// One remote as the `lxc` CLI knows it.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The remote's name in `config.yml`.
    pub name: String,
    /// Where it is.
    pub endpoint: Endpoint,
}

#[derive(Deserialize)]
pub(crate) struct LxcConfig {
    #[serde(default)]
    pub(crate) remotes: BTreeMap<String, LxcRemote>,
}

#[derive(Deserialize)]
pub(crate) struct LxcRemote {
    pub(crate) addr: String,
    #[serde(default)]
    pub(crate) protocol: String,
}

/// Where a remote's `addr` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RemoteAddress {
    /// `unix://` alone: the local daemon, found by discovery.
    LocalDaemon,
    /// `unix:///path/to/unix.socket`.
    Unix(PathBuf),
    /// `https://host[:port]`, as `host:port` (port 8443 when not given).
    Https(String),
}

/// Parse the text of a `config.yml` (`source` names it in errors).
pub(crate) fn parse_lxc_config(text: &str, source: &Path) -> Result<LxcConfig> {
    serde_yaml::from_str(text).map_err(|e| Error::Config { message: format!("{}: {e}", source.display()) })
}

/// Parse a remote's `addr`: `unix://[path]` or `https://host[:port][/]`, nothing else (no user, path or query).
pub(crate) fn parse_remote_address(remote_name: &str, addr: &str) -> Result<RemoteAddress> {
    let bad = |why: &str| {
        Error::Config {
        message: format!(
            "remote `{remote_name}` has an unsupported address {addr:?}: {why} (expected unix://[PATH] or https://HOST[:PORT])"
        ),
    }
    };
    if let Some(rest) = addr.strip_prefix("unix://") {
        return match rest {
            "" => Ok(RemoteAddress::LocalDaemon),
            path if path.starts_with('/') => Ok(RemoteAddress::Unix(PathBuf::from(path))),
            _ => Err(bad("a unix socket path must be absolute")),
        };
    }
    if !addr.starts_with("https://") {
        return Err(bad("not unix:// or https://"));
    }
    let uri: http::Uri = addr.parse().map_err(|_| bad("not a URL"))?;
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("a user name has no place in it"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a path or query has no place in it"));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match authority.port() {
        Some(port) => port.as_u16(),
        None if authority.as_str().ends_with(':') => return Err(bad("an empty port")),
        None => 8443,
    };
    Ok(RemoteAddress::Https(format!("{host}:{port}")))
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
    ///
    /// An unknown remote is an error naming it. The default `unix://` remote follows [`crate::discover_socket`] (an
    /// explicit `LXD_SOCKET`/`LXD_DIR` is the only socket tried). Nothing is connected yet: a socket that is not
    /// there or an address that does not answer is an error naming the remote at the first request. An HTTPS remote
    /// without a pinned certificate is refused at its first connection with its fingerprint, unless a CA is chosen
    /// with [`Remote::trust_ca`].
    pub fn from_lxc_config(config_dir: &Path, remote_name: &str) -> Result<Self> {
        let config_path = config_dir.join("config.yml");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| Error::Config { message: format!("cannot read {}: {e}", config_path.display()) })?;
        let config = parse_lxc_config(&text, &config_path)?;
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
        let unusable = |reason: String| Error::Remote { remote: remote_name.to_string(), reason };
        let endpoint = match parse_remote_address(remote_name, &remote.addr)? {
            RemoteAddress::LocalDaemon => {
                Endpoint::Unix(discover_socket(Flavor::Lxd).map_err(|e| unusable(e.to_string()))?)
            }
            RemoteAddress::Unix(path) => Endpoint::Unix(path),
            RemoteAddress::Https(address) => {
                let read = |file: &Path| {
                    std::fs::read(file)
                        .map_err(|e| Error::Config { message: format!("cannot read {}: {e}", file.display()) })
                };
                let server_cert = server_cert_path(config_dir, remote_name)?;
                let server_cert_pem = if server_cert.exists() { Some(read(&server_cert)?) } else { None };
                Endpoint::Https {
                    address,
                    tls: TlsIdentity {
                        server_cert_pem,
                        ..TlsIdentity::new(read(&config_dir.join("client.crt"))?, read(&config_dir.join("client.key"))?)
                    },
                }
            }
        };
        Ok(Self { name: remote_name.to_string(), endpoint })
    }

    /// Trust a CA chain for this HTTPS remote (as well as its pinned certificate, when it has one), with hostname
    /// verification. No effect on a unix remote.
    pub fn trust_ca(mut self, ca: ServerCa) -> Self {
        if let Endpoint::Https { tls, .. } = &mut self.endpoint {
            tls.server_ca = Some(ca);
        }
        self
    }

    /// Pin `certificate` for remote `remote_name`: write it to `servercerts/<remote>.crt` in `config_dir`, as
    /// `lxc remote add` does once its fingerprint is accepted. Call it only after the operator has checked
    /// [`ServerCertificate::fingerprint`] (from [`crate::first_contact`]). Writing the same certificate again is
    /// fine; replacing another pinned certificate is refused (remove the file first, knowingly).
    pub fn accept_server_certificate(
        config_dir: &Path,
        remote_name: &str,
        certificate: &ServerCertificate,
    ) -> Result<()> {
        let fingerprint = crate::transport::certificate_fingerprint(&certificate.pem)?;
        if fingerprint != certificate.fingerprint {
            return Err(Error::Config {
                message: format!(
                    "the certificate for remote `{remote_name}` has fingerprint {fingerprint}, not the accepted {}",
                    certificate.fingerprint
                ),
            });
        }
        let path = server_cert_path(config_dir, remote_name)?;
        match std::fs::read(&path) {
            Ok(existing)
                if crate::transport::certificate_fingerprint(&existing).ok().as_deref() == Some(&fingerprint) =>
            {
                return Ok(())
            }
            Ok(_) => {
                return Err(Error::Config {
                    message: format!(
                        "remote `{remote_name}` already has another pinned certificate in {}; remove it first if the \
                         server's certificate really changed",
                        path.display()
                    ),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        }
        let dir = config_dir.join("servercerts");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        // A new file only: a pin written meanwhile by someone else is not replaced.
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        file.write_all(&certificate.pem).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(())
    }

    /// A client for this remote; its connection errors name the remote.
    pub fn client(&self) -> Result<Client> {
        Client::labelled(self.endpoint.clone(), Flavor::Lxd, Some(self.name.clone()))
    }
}

/// `servercerts/<remote>.crt`, for a remote name that is one plain file name.
fn server_cert_path(config_dir: &Path, remote_name: &str) -> Result<PathBuf> {
    if remote_name.is_empty() || remote_name.contains('/') || remote_name == "." || remote_name == ".." {
        return Err(Error::Config { message: format!("{remote_name:?} is not a remote name") });
    }
    Ok(config_dir.join("servercerts").join(format!("{remote_name}.crt")))
}

impl Client {
    /// A client for an HTTPS daemon at `address` (`host:port`) with a client certificate. Its server is trusted
    /// through a pin (`server_cert_pem` or `server_fingerprint` in `tls`) or a chosen CA (`server_ca`); with none,
    /// every request fails with [`Error::UntrustedServer`] carrying the fingerprint to check (see
    /// [`crate::first_contact`]).
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
