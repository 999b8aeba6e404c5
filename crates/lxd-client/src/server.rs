//! The server itself: `GET /1.0`, its configuration, trusted certificates.

use std::collections::BTreeMap;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::{Client, Request};
use crate::error::Result;

/// `GET /1.0`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Server {
    /// API extensions the daemon supports.
    pub api_extensions: Vec<String>,
    /// `stable` or `development`.
    pub api_status: String,
    /// API version (`1.0`).
    pub api_version: String,
    /// `trusted` or `untrusted`.
    pub auth: String,
    /// Server configuration keys.
    pub config: BTreeMap<String, serde_json::Value>,
    /// Environment details.
    pub environment: ServerEnvironment,
}

/// `GET /1.0` `environment`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ServerEnvironment {
    /// Listening addresses.
    pub addresses: Vec<String>,
    /// Architectures supported.
    pub architectures: Vec<String>,
    /// The server certificate (PEM).
    pub certificate: String,
    /// Its SHA-256 fingerprint.
    pub certificate_fingerprint: String,
    /// Kernel version.
    pub kernel_version: String,
    /// `lxd` or `incus`.
    pub server: String,
    /// Daemon version.
    pub server_version: String,
    /// Storage driver(s).
    pub storage: String,
    /// Daemon pid.
    pub server_pid: i64,
    /// Whether the daemon is a member of a cluster.
    pub server_clustered: bool,
}

/// A trusted certificate entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Certificate {
    /// Name.
    pub name: String,
    /// `client` or `metrics`.
    #[serde(rename = "type")]
    pub kind: String,
    /// PEM (without the header lines on some daemons).
    pub certificate: String,
    /// SHA-256 fingerprint.
    pub fingerprint: String,
    /// Restricted to projects.
    pub restricted: bool,
}

impl Client {
    /// Merge keys into the server configuration (`PATCH /1.0`), e.g. `core.https_address`.
    pub async fn patch_server_config(&self, config: &BTreeMap<String, String>) -> Result<()> {
        let body = serde_json::json!({ "config": config });
        let _: serde_json::Value = self.sync(Request::new(Method::PATCH, "/1.0").unscoped().json(&body)?).await?;
        Ok(())
    }

    /// Trusted certificates.
    pub async fn certificates(&self) -> Result<Vec<Certificate>> {
        self.sync(Request::new(Method::GET, "/1.0/certificates").unscoped().query("recursion", "1")).await
    }

    /// Trust a client certificate (PEM) under `name`. Idempotent: an already trusted certificate is not an error.
    pub async fn trust_certificate(&self, name: &str, pem: &str) -> Result<()> {
        let fingerprint = crate::transport::certificate_fingerprint(pem.as_bytes())?;
        if self.certificates().await?.iter().any(|c| c.fingerprint == fingerprint) {
            return Ok(());
        }
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let req = serde_json::json!({ "type": "client", "name": name, "certificate": body });
        let _: serde_json::Value =
            self.sync(Request::new(Method::POST, "/1.0/certificates").unscoped().json(&req)?).await?;
        Ok(())
    }

    /// Remove a trusted certificate by fingerprint.
    pub async fn remove_certificate(&self, fingerprint: &str) -> Result<()> {
        let path = format!("/1.0/certificates/{}", crate::client::encode(fingerprint));
        let _: serde_json::Value = self.sync(Request::new(Method::DELETE, path).unscoped()).await?;
        Ok(())
    }
}
