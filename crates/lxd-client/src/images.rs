//! Images: streaming import of a unified tarball, aliases, pulls from simplestreams servers, delete.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Method;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, ReadBuf};

use crate::client::{encode, Client, Request};
use crate::error::{Error, Result};

/// An image as LXD reports it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Image {
    /// SHA-256 fingerprint.
    pub fingerprint: String,
    /// Aliases pointing at it.
    #[serde(deserialize_with = "crate::client::null_as_default")]
    pub aliases: Vec<ImageAlias>,
    /// Architecture.
    pub architecture: String,
    /// Properties from `metadata.yaml` (`os`, `release`, `description`, and ours: `gbo.roles`, ...).
    pub properties: BTreeMap<String, String>,
    /// Size in bytes.
    pub size: i64,
    /// Public.
    pub public: bool,
    /// Upload time.
    pub uploaded_at: String,
    /// `container` or `virtual-machine`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// An alias.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ImageAlias {
    /// Alias name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Target fingerprint (only in alias listings).
    pub target: String,
}

/// A progress callback: bytes sent so far.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// How to import an image ([`Client::import_image`]).
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ImageImportOptions {
    /// Serve it to untrusted clients (other daemons pulling it).
    pub public: bool,
    /// Told the bytes sent so far as the tarball streams.
    pub progress: Option<Progress>,
}

impl ImageImportOptions {
    /// Private, no progress reports.
    pub fn new() -> Self {
        Self::default()
    }

    /// Make it public (`true`) or private.
    pub fn public(mut self, public: bool) -> Self {
        self.public = public;
        self
    }

    /// Report the bytes sent so far to `progress`.
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }
}

impl std::fmt::Debug for ImageImportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageImportOptions")
            .field("public", &self.public)
            .field("progress", &self.progress.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

struct CountingReader<R> {
    inner: R,
    sent: u64,
    progress: Option<Progress>,
    /// SHA-256 of what went through: the fingerprint of a unified tarball.
    hasher: Arc<std::sync::Mutex<openssl::sha::Sha256>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        if read > 0 {
            if let Ok(mut hasher) = self.hasher.lock() {
                hasher.update(&buf.filled()[before..]);
            }
            self.sent += read;
            if let Some(progress) = &self.progress {
                progress(self.sent);
            }
        }
        result
    }
}

impl Client {
    /// All images.
    pub async fn images(&self) -> Result<Vec<Image>> {
        self.sync(Request::new(Method::GET, "/1.0/images").query("recursion", "1")).await
    }

    /// One image by fingerprint.
    pub async fn image(&self, fingerprint: &str) -> Result<Image> {
        self.get(&format!("/1.0/images/{}", encode(fingerprint))).await
    }

    /// Resolve an alias, `None` when absent.
    pub async fn image_alias(&self, alias: &str) -> Result<Option<ImageAlias>> {
        match self.get::<ImageAlias>(&format!("/1.0/images/aliases/{}", encode(alias))).await {
            Ok(a) => Ok(Some(a)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The image behind an alias, `None` when the alias does not exist.
    pub async fn image_by_alias(&self, alias: &str) -> Result<Option<Image>> {
        match self.image_alias(alias).await? {
            Some(a) => self.image(&a.target).await.map(Some),
            None => Ok(None),
        }
    }

    /// Import a unified image tarball (`metadata.yaml` + `rootfs/`) from a reader, streamed, reporting bytes sent.
    /// Returns the fingerprint. An identical image already present is not an error: its fingerprint is returned.
    ///
    /// ```no_run
    /// # async fn demo(lxd: &lxd_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use lxd_client::ImageImportOptions;
    /// let tarball = tokio::fs::File::open("image.tar.gz").await?;
    /// let fingerprint = lxd.import_image(tarball, &ImageImportOptions::new()).await?;
    /// lxd.set_image_alias("gbo/debian-12", &fingerprint, "built by gbo").await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_image<R>(&self, tarball: R, options: &ImageImportOptions) -> Result<String>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let public = options.public;
        let hasher = Arc::new(std::sync::Mutex::new(openssl::sha::Sha256::new()));
        let reader =
            CountingReader { inner: tarball, sent: 0, progress: options.progress.clone(), hasher: hasher.clone() };
        let mut req = Request::new(Method::POST, "/1.0/images")
            .stream(reader, "application/octet-stream")
            .timeout(Duration::from_secs(3600));
        if public {
            req = req.header(&format!("{}public", self.flavor().header_prefix()), "1")?;
        }
        let op = self.start_operation(req).await?;
        match self.wait_operation(&op.id, Duration::from_secs(3600)).await {
            Ok(done) => done
                .metadata
                .as_ref()
                .and_then(|m| m.get("fingerprint"))
                .and_then(|f| f.as_str())
                .map(str::to_string)
                .ok_or_else(|| Error::Decode {
                    path: "/1.0/images".into(),
                    message: "no fingerprint in import result".into(),
                }),
            Err(Error::OperationFailed { message, .. }) if message.contains("already exists") => {
                // "Image with same fingerprint already exists": the fingerprint of a unified tarball is the
                // SHA-256 of its bytes, which we computed while streaming it.
                let digest = hasher.lock().map(|h| h.clone().finish()).map_err(|_| Error::OperationFailed {
                    id: op.id.clone(),
                    status_code: 400,
                    message: message.clone(),
                })?;
                Ok(hex::encode(digest))
            }
            Err(e) => Err(e),
        }
    }

    /// Point `alias` at `fingerprint`, creating or moving it. Idempotent.
    pub async fn set_image_alias(&self, alias: &str, fingerprint: &str, description: &str) -> Result<()> {
        match self.image_alias(alias).await? {
            Some(existing) if existing.target == fingerprint => Ok(()),
            Some(_) => {
                let body = serde_json::json!({ "target": fingerprint, "description": description });
                let req = Request::new(Method::PUT, format!("/1.0/images/aliases/{}", encode(alias))).json(&body)?;
                let _: serde_json::Value = self.sync(req).await?;
                Ok(())
            }
            None => {
                let body = serde_json::json!({ "name": alias, "target": fingerprint, "description": description });
                let _: serde_json::Value =
                    self.sync(Request::new(Method::POST, "/1.0/images/aliases").json(&body)?).await?;
                Ok(())
            }
        }
    }

    /// Delete an alias (no error when absent).
    pub async fn delete_image_alias(&self, alias: &str) -> Result<()> {
        match self
            .sync::<serde_json::Value>(Request::new(Method::DELETE, format!("/1.0/images/aliases/{}", encode(alias))))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Delete an image.
    pub async fn delete_image(&self, fingerprint: &str) -> Result<()> {
        let req = Request::new(Method::DELETE, format!("/1.0/images/{}", encode(fingerprint)));
        self.run_operation(req, Duration::from_secs(300)).await?;
        Ok(())
    }

    /// Copy an image from a simplestreams server (e.g. `https://images.linuxcontainers.org`, alias `debian/12`)
    /// and give it `local_alias`. Returns the fingerprint.
    pub async fn pull_image(&self, server: &str, remote_alias: &str, local_alias: Option<&str>) -> Result<String> {
        let mut body = serde_json::json!({
            "source": { "type": "image", "mode": "pull", "server": server, "protocol": "simplestreams", "alias": remote_alias },
        });
        if let Some(alias) = local_alias {
            body["aliases"] = serde_json::json!([{ "name": alias }]);
        }
        let req = Request::new(Method::POST, "/1.0/images").json(&body)?;
        let done = self.run_operation(req, Duration::from_secs(3600)).await?;
        done.metadata
            .as_ref()
            .and_then(|m| m.get("fingerprint"))
            .and_then(|f| f.as_str())
            .map(str::to_string)
            .ok_or_else(|| Error::Decode {
                path: "/1.0/images".into(),
                message: "no fingerprint in pull result".into(),
            })
    }
}
