//! Files in instances: streaming push and pull with owner and mode, directories, recursive push, delete.

use std::path::Path;

use futures_util::{StreamExt, TryStreamExt};
use http::Method;
use tokio::io::AsyncRead;

use crate::client::{Client, Request};
use crate::error::{Error, Result};
use crate::instances::instance_path;
use crate::names::InstanceName;

/// How many files of one directory [`Client::push_dir`] sends at once.
pub const PUSH_DIR_CONCURRENCY: usize = 8;

/// Owner, mode and write mode of a pushed file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileOptions {
    /// Owner uid inside the instance.
    pub uid: u32,
    /// Owner gid inside the instance.
    pub gid: u32,
    /// Permission bits (e.g. `0o600`).
    pub mode: u32,
    /// Append instead of overwrite.
    pub append: bool,
}

impl FileOptions {
    /// Owned by root with `mode`.
    pub fn root(mode: u32) -> Self {
        Self { uid: 0, gid: 0, mode, append: false }
    }

    /// Owned by `uid:gid` with `mode`.
    pub fn owned(uid: u32, gid: u32, mode: u32) -> Self {
        Self { uid, gid, mode, append: false }
    }
}

/// What a pulled path is.
pub enum FileContent {
    /// A regular file, streamed.
    File(std::pin::Pin<Box<dyn AsyncRead + Send>>),
    /// A directory and its entry names.
    Directory(Vec<String>),
    /// A symlink and its target.
    Symlink(String),
}

/// Metadata of a pulled path.
pub struct PulledFile {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// The content.
    pub content: FileContent,
}

impl std::fmt::Debug for PulledFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.content {
            FileContent::File(_) => "file".to_string(),
            FileContent::Directory(entries) => format!("directory({} entries)", entries.len()),
            FileContent::Symlink(target) => format!("symlink -> {target}"),
        };
        f.debug_struct("PulledFile")
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("mode", &format!("{:o}", self.mode))
            .field("content", &kind)
            .finish()
    }
}

/// Owner, group, mode and kind of a pulled path, from the daemon's `X-LXD-*` (or `X-Incus-*`) headers; a header
/// that is missing or unreadable gives 0 (`file` for the kind).
pub(crate) fn file_metadata(headers: &http::HeaderMap, prefix: &str) -> (u32, u32, u32, String) {
    let header = |key: &str| headers.get(format!("{prefix}{key}")).and_then(|v| v.to_str().ok()).map(str::to_string);
    let uid = header("uid").and_then(|v| v.parse().ok()).unwrap_or(0);
    let gid = header("gid").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mode = header("mode").and_then(|v| u32::from_str_radix(&v, 8).ok()).unwrap_or(0);
    let kind = header("type").unwrap_or_else(|| "file".into());
    (uid, gid, mode, kind)
}

fn not_a_file(name: &InstanceName, path: &str, content: &FileContent) -> Error {
    let found = match content {
        FileContent::Directory(_) => "directory",
        FileContent::Symlink(_) => "symlink",
        FileContent::File(_) => "file",
    };
    Error::NotAFile { instance: name.to_string(), path: path.to_string(), found }
}

fn files_request(method: Method, name: &InstanceName, path: &str) -> Result<Request> {
    if !path.starts_with('/') {
        return Err(Error::InvalidName {
            kind: "file path",
            value: path.to_string(),
            rule: "paths inside an instance must be absolute",
        });
    }
    Ok(Request::new(method, format!("{}/files", instance_path(name))).query("path", path))
}

impl Client {
    fn file_headers(&self, mut req: Request, kind: &str, options: FileOptions) -> Result<Request> {
        let p = self.flavor().header_prefix();
        req = req.header(&format!("{p}uid"), &options.uid.to_string())?;
        req = req.header(&format!("{p}gid"), &options.gid.to_string())?;
        req = req.header(&format!("{p}mode"), &format!("{:04o}", options.mode))?;
        req = req.header(&format!("{p}type"), kind)?;
        req = req.header(&format!("{p}write"), if options.append { "append" } else { "overwrite" })?;
        Ok(req)
    }

    /// Write a file from a reader (streamed: any size, bounded memory). The parent directory must exist
    /// (see [`Client::mkdir_all`]).
    ///
    /// ```no_run
    /// # async fn demo(lxd: &lxd_client::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use lxd_client::{FileOptions, InstanceName};
    /// let name = InstanceName::new("default-proxy")?;
    /// lxd.mkdir_all(&name, "/etc/caddy", FileOptions::root(0o755)).await?;
    /// let file = tokio::fs::File::open("Caddyfile").await?;
    /// lxd.push_file(&name, "/etc/caddy/Caddyfile", file, FileOptions::owned(0, 0, 0o644)).await?;
    /// assert!(!lxd.read_file(&name, "/etc/caddy/Caddyfile").await?.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn push_file<R>(&self, name: &InstanceName, path: &str, content: R, options: FileOptions) -> Result<()>
    where
        R: AsyncRead + Send + 'static,
    {
        let req = files_request(Method::POST, name, path)?
            .stream(content, "application/octet-stream")
            .timeout(std::time::Duration::from_secs(3600));
        let req = self.file_headers(req, "file", options)?;
        let _: serde_json::Value = self.sync(req).await?;
        Ok(())
    }

    /// Write a file from bytes.
    pub async fn push_bytes(
        &self,
        name: &InstanceName,
        path: &str,
        content: impl Into<bytes::Bytes>,
        options: FileOptions,
    ) -> Result<()> {
        let mut req = files_request(Method::POST, name, path)?;
        req.headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/octet-stream"));
        req.body = Some(crate::client::full(content.into()));
        let req = self.file_headers(req, "file", options)?;
        let _: serde_json::Value = self.sync(req).await?;
        Ok(())
    }

    /// Create one directory (its parent must exist). Succeeds when it already exists.
    pub async fn mkdir(&self, name: &InstanceName, path: &str, options: FileOptions) -> Result<()> {
        let req = self.file_headers(files_request(Method::POST, name, path)?, "directory", options)?;
        match self.sync::<serde_json::Value>(req).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() || matches!(&e, Error::Api { message, .. } if message.contains("exists")) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Create a directory and its missing parents, one level at a time (LXD does not create parents).
    pub async fn mkdir_all(&self, name: &InstanceName, path: &str, options: FileOptions) -> Result<()> {
        let mut current = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            current.push('/');
            current.push_str(part);
            if self.stat(name, &current).await?.is_none() {
                self.mkdir(name, &current, options).await?;
            }
        }
        Ok(())
    }

    /// Create a symlink at `path` pointing to `target`.
    pub async fn symlink(&self, name: &InstanceName, path: &str, target: &str) -> Result<()> {
        let mut req =
            self.file_headers(files_request(Method::POST, name, path)?, "symlink", FileOptions::root(0o777))?;
        req.body = Some(crate::client::full(target.to_string()));
        let _: serde_json::Value = self.sync(req).await?;
        Ok(())
    }

    /// Read a path: a file is streamed (any size), a directory lists its entries and a symlink gives its target
    /// (both read whole, at most [`crate::ReadLimits::body`]).
    pub async fn pull(&self, name: &InstanceName, path: &str) -> Result<PulledFile> {
        let req = files_request(Method::GET, name, path)?.timeout(std::time::Duration::from_secs(3600));
        let response = self.send_raw(req).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.failure(response, "GET", path).await);
        }
        let (uid, gid, mode, kind) = file_metadata(response.headers(), self.flavor().header_prefix());
        let content = match kind.as_str() {
            "directory" => {
                let body = self
                    .read_body(response.into_body(), "GET", path, || format!("the listing of {path} in {name}"))
                    .await?;
                let envelope = crate::client::decode_envelope(status, path, &body)?;
                FileContent::Directory(crate::client::decode_metadata(path, envelope.metadata)?)
            }
            "symlink" => {
                let body = self
                    .read_body(response.into_body(), "GET", path, || format!("the target of {path} in {name}"))
                    .await?;
                FileContent::Symlink(String::from_utf8_lossy(&body).into_owned())
            }
            _ => {
                let stream = http_body_util::BodyStream::new(response.into_body())
                    .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) })
                    .map_err(std::io::Error::other);
                FileContent::File(Box::pin(tokio_util::io::StreamReader::new(stream)))
            }
        };
        Ok(PulledFile { uid, gid, mode, content })
    }

    /// Read a whole (small) file into memory: at most [`crate::ReadLimits::collected`], else [`Error::TooLarge`]
    /// (stream bigger files with [`Client::pull_to`]).
    pub async fn read_file(&self, name: &InstanceName, path: &str) -> Result<Vec<u8>> {
        match self.pull(name, path).await?.content {
            FileContent::File(reader) => {
                let limit = self.collected_limit();
                let mut out = Vec::new();
                // One byte past the limit tells a file of exactly the limit from a larger one.
                let mut bounded = tokio::io::AsyncReadExt::take(reader, limit.saturating_add(1));
                tokio::io::AsyncReadExt::read_to_end(&mut bounded, &mut out)
                    .await
                    .map_err(|e| Error::io(format!("reading {path}"), e))?;
                if out.len() as u64 > limit {
                    return Err(Error::TooLarge {
                        what: format!("file {path} in {name}"),
                        limit_name: "collected",
                        limit,
                    });
                }
                Ok(out)
            }
            other => Err(not_a_file(name, path, &other)),
        }
    }

    /// Copy a file out of an instance into a local writer (streamed).
    pub async fn pull_to<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        name: &InstanceName,
        path: &str,
        out: &mut W,
    ) -> Result<u64> {
        match self.pull(name, path).await?.content {
            FileContent::File(mut reader) => {
                tokio::io::copy(&mut reader, out).await.map_err(|e| Error::io(format!("copying {path}"), e))
            }
            other => Err(not_a_file(name, path, &other)),
        }
    }

    /// Owner, mode and kind of a path, or `None` when it does not exist. (Reads the path: for a large file prefer
    /// knowing it exists another way.)
    pub async fn stat(&self, name: &InstanceName, path: &str) -> Result<Option<PulledFile>> {
        match self.pull(name, path).await {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Delete a file or empty directory (no error when absent).
    pub async fn delete_file(&self, name: &InstanceName, path: &str) -> Result<()> {
        match self.sync::<serde_json::Value>(files_request(Method::DELETE, name, path)?).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Push a host directory tree into `target`, creating parents; files keep the given owner, directories get
    /// `options` with mode 0755 and files the host file's permission bits.
    pub async fn push_dir(
        &self,
        name: &InstanceName,
        host_dir: &Path,
        target: &str,
        options: FileOptions,
    ) -> Result<u64> {
        let dir_options = FileOptions { mode: 0o755, ..options };
        self.mkdir_all(name, target, dir_options).await?;
        let mut count = 0u64;
        let mut stack = vec![(host_dir.to_path_buf(), target.trim_end_matches('/').to_string())];
        while let Some((local, remote)) = stack.pop() {
            let mut entries =
                tokio::fs::read_dir(&local).await.map_err(|e| Error::io(format!("reading {}", local.display()), e))?;
            let mut files = Vec::new();
            while let Some(entry) =
                entries.next_entry().await.map_err(|e| Error::io(format!("reading {}", local.display()), e))?
            {
                let file_type =
                    entry.file_type().await.map_err(|e| Error::io(format!("stat {}", entry.path().display()), e))?;
                let remote_path = format!("{}/{}", remote, entry.file_name().to_string_lossy());
                if file_type.is_dir() {
                    self.mkdir(name, &remote_path, dir_options).await?;
                    stack.push((entry.path(), remote_path));
                } else if file_type.is_file() {
                    use std::os::unix::fs::PermissionsExt;
                    let meta =
                        entry.metadata().await.map_err(|e| Error::io(format!("stat {}", entry.path().display()), e))?;
                    files.push((
                        entry.path(),
                        remote_path,
                        FileOptions { mode: meta.permissions().mode() & 0o7777, ..options },
                    ));
                }
            }
            // The files of one directory go up a few at a time: each is its own request, and the daemon writes
            // them in parallel. Bounded, so a huge tree does not open hundreds of files at once.
            let pushed: Vec<()> = futures_util::stream::iter(files.into_iter().map(
                |(local_path, remote_path, file_options)| async move {
                    let file = tokio::fs::File::open(&local_path)
                        .await
                        .map_err(|e| Error::io(format!("opening {}", local_path.display()), e))?;
                    self.push_file(name, &remote_path, file, file_options).await
                },
            ))
            .buffer_unordered(PUSH_DIR_CONCURRENCY)
            .try_collect()
            .await?;
            count += pushed.len() as u64;
        }
        Ok(count)
    }
}
