//! What one snapshot reads, as a `rustic_core` [`ReadSource`]: a role's host directories walked through
//! [`crate::hostfs`] (directory descriptors, `O_NOFOLLOW` at every component below the operator's stack dir), plus
//! files held in memory (the tenant's description).
//!
//! Symlinks inside role directories are **stored as symlinks** (their target text), never followed; FIFOs, sockets
//! and device nodes are stored as such without content; another filesystem mounted inside a role directory is
//! stored as an empty directory (never entered). Regular files are opened with `O_NOFOLLOW|O_NONBLOCK` from their
//! directory's descriptor and checked to be the file just listed. Owners are stored as numbers (host ids, shifted
//! by the container's idmap; the tenant description records the base so a restore can shift them).
//!
//! The walk happens while the role is quiesced (the container frozen), so what is listed is what is read.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{ErrorKind, ReadSource, ReadSourceEntry, ReadSourceOpen, RusticError, RusticResult};

use crate::hostfs::{HostDir, HostFsError};

/// How to read one entry's content.
#[derive(Debug, Clone)]
pub enum Content {
    /// A regular file in a host directory (opened when rustic reads it).
    File {
        /// Its directory.
        dir: Arc<HostDir>,
        /// Its name.
        name: OsString,
        /// The inode listed (the file opened must be this one).
        ino: u64,
    },
    /// Bytes held in memory.
    Bytes(Arc<Vec<u8>>),
    /// A file gbo wrote itself in a private (0700) directory of its own (a volume's exported tarball).
    Private(PathBuf),
}

impl ReadSourceOpen for Content {
    type Reader = Box<dyn Read + Send>;

    fn open(self) -> RusticResult<Self::Reader> {
        match self {
            Content::Bytes(bytes) => Ok(Box::new(std::io::Cursor::new(bytes.as_ref().clone()))),
            Content::Private(path) => {
                let file = std::fs::File::open(&path).map_err(|e| {
                    RusticError::with_source(ErrorKind::InputOutput, "Failed to open `{path}` for reading.", e)
                        .attach_context("path", path.display().to_string())
                })?;
                Ok(Box::new(file))
            }
            Content::File { dir, name, ino } => {
                let path = dir.path().join(&name);
                let fail = |e: HostFsError| {
                    RusticError::with_source(ErrorKind::InputOutput, "Failed to open `{path}` for reading.", e)
                        .attach_context("path", path.display().to_string())
                };
                let file = dir.open_file(Path::new(&name)).map_err(fail)?;
                let same = file.metadata().is_ok_and(|m| m.ino() == ino);
                if !same {
                    return Err(fail(HostFsError::Planted {
                        path: path.clone(),
                        found: "another file",
                        expected: "the regular file just listed",
                    }));
                }
                Ok(Box::new(file))
            }
        }
    }
}

/// Everything one snapshot holds, listed in the order rustic wants (paths sorted, a directory before what it
/// holds).
#[derive(Debug, Clone, Default)]
pub struct TreeSource {
    entries: Vec<ReadSourceEntry<Content>>,
    size: u64,
    read: Arc<AtomicU64>,
}

/// A [`Content`] whose reader counts the bytes rustic reads from it into its source's counter
/// ([`TreeSource::read_counter`]): the bytes-done side of the progress events.
#[derive(Debug, Clone)]
pub struct Counted {
    content: Content,
    counter: Arc<AtomicU64>,
}

struct CountingReader {
    inner: Box<dyn Read + Send>,
    counter: Arc<AtomicU64>,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl ReadSourceOpen for Counted {
    type Reader = Box<dyn Read + Send>;

    fn open(self) -> RusticResult<Self::Reader> {
        let inner = self.content.open()?;
        Ok(Box::new(CountingReader { inner, counter: self.counter }))
    }
}

impl ReadSource for TreeSource {
    type Open = Counted;
    type Iter = std::vec::IntoIter<RusticResult<ReadSourceEntry<Counted>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(Some(self.size))
    }

    fn entries(&self) -> Self::Iter {
        self.entries
            .iter()
            .map(|e| {
                Ok(ReadSourceEntry {
                    path: e.path.clone(),
                    node: e.node.clone(),
                    open: e.open.clone().map(|content| Counted { content, counter: self.read.clone() }),
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// Go's `os.FileMode` bits for a Unix mode, as restic stores them.
pub fn go_mode(mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHARDEV: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let mut out = mode & 0o777;
    out |= match mode & 0o170000 {
        0o040000 => DIR,
        0o120000 => SYMLINK,
        0o060000 => DEVICE,
        0o020000 => DEVICE | CHARDEV,
        0o010000 => PIPE,
        0o140000 => SOCKET,
        _ => 0,
    };
    if mode & 0o4000 != 0 {
        out |= SETUID;
    }
    if mode & 0o2000 != 0 {
        out |= SETGID;
    }
    if mode & 0o1000 != 0 {
        out |= STICKY;
    }
    out
}

fn timestamp(secs: i64, nanos: i64) -> Option<rustic_core::jiff::Timestamp> {
    rustic_core::jiff::Timestamp::new(secs, i32::try_from(nanos).unwrap_or(0)).ok()
}

fn metadata(m: &std::fs::Metadata) -> Metadata {
    let mtime = timestamp(m.mtime(), m.mtime_nsec());
    Metadata {
        mode: Some(go_mode(m.mode())),
        mtime,
        atime: mtime,
        ctime: timestamp(m.ctime(), m.ctime_nsec()),
        uid: Some(m.uid()),
        gid: Some(m.gid()),
        user: None,
        group: None,
        inode: m.ino(),
        device_id: if m.nlink() > 1 && !m.is_dir() { m.dev() } else { 0 },
        size: if m.is_dir() { 0 } else { m.len() },
        links: if m.is_dir() { 0 } else { m.nlink() },
        extended_attributes: Vec::new(),
    }
}

fn dir_metadata(mode: u32) -> Metadata {
    let now = rustic_core::jiff::Timestamp::now();
    let (uid, gid) = super::lock::ids();
    Metadata {
        mode: Some(go_mode(0o040000 | mode)),
        mtime: Some(now),
        atime: Some(now),
        ctime: Some(now),
        uid: Some(uid),
        gid: Some(gid),
        ..Metadata::default()
    }
}

impl TreeSource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// A virtual directory (owned by us, `mode`) at `path`.
    pub fn add_dir(&mut self, path: &Path, mode: u32) {
        let name = path.file_name().unwrap_or_default().to_os_string();
        let node = Node::new_node(&name, NodeType::Dir, dir_metadata(mode));
        self.entries.push(ReadSourceEntry { path: path.to_path_buf(), node, open: None });
    }

    /// A file held in memory (owned by us, `mode`) at `path`.
    pub fn add_bytes(&mut self, path: &Path, bytes: Vec<u8>, mode: u32) {
        let name = path.file_name().unwrap_or_default().to_os_string();
        let mut meta = dir_metadata(0);
        meta.mode = Some(go_mode(0o100000 | mode));
        meta.size = bytes.len() as u64;
        self.size += bytes.len() as u64;
        let node = Node::new_node(&name, NodeType::File, meta);
        self.entries.push(ReadSourceEntry {
            path: path.to_path_buf(),
            node,
            open: Some(Content::Bytes(Arc::new(bytes))),
        });
    }

    /// The file `file` that gbo wrote in a private directory of its own, stored at `path` (mode 0600, owned by us).
    pub fn add_private_file(&mut self, path: &Path, file: &Path) -> std::io::Result<()> {
        let name = path.file_name().unwrap_or_default().to_os_string();
        let m = std::fs::symlink_metadata(file)?;
        if !m.is_file() {
            return Err(std::io::Error::other(format!("{} is not a regular file", file.display())));
        }
        let mut meta = metadata(&m);
        meta.mode = Some(go_mode(0o100600));
        self.size += m.len();
        let node = Node::new_node(&name, NodeType::File, meta);
        self.entries.push(ReadSourceEntry {
            path: path.to_path_buf(),
            node,
            open: Some(Content::Private(file.to_path_buf())),
        });
        Ok(())
    }

    /// The host directory `dir` stored at `path` (the directory itself with its owner, mode and times, then
    /// everything below it), walked through hostfs.
    pub fn add_tree(&mut self, path: &Path, dir: HostDir) -> Result<(), HostFsError> {
        let meta = &dir.metadata()?;
        let name = path.file_name().unwrap_or_default().to_os_string();
        self.entries.push(ReadSourceEntry {
            path: path.to_path_buf(),
            node: Node::new_node(&name, NodeType::Dir, metadata(meta)),
            open: None,
        });
        let device = meta.dev();
        self.walk(path, Arc::new(dir), device)
    }

    fn walk(&mut self, path: &Path, dir: Arc<HostDir>, device: u64) -> Result<(), HostFsError> {
        let mut names = dir.names()?;
        names.sort_by(|a, b| Path::new(a).cmp(Path::new(b)));
        for name in names {
            let Some(m) = dir.metadata_of(&name)? else { continue };
            let child = path.join(&name);
            let t = m.file_type();
            let meta = metadata(&m);
            let (node_type, open) = if t.is_dir() {
                (NodeType::Dir, None)
            } else if t.is_file() {
                self.size += m.len();
                (NodeType::File, Some(Content::File { dir: dir.clone(), name: name.clone(), ino: m.ino() }))
            } else if t.is_symlink() {
                (NodeType::from_link(Path::new(&dir.read_link(&name)?)), None)
            } else if t.is_fifo() {
                (NodeType::Fifo, None)
            } else if t.is_socket() {
                (NodeType::Socket, None)
            } else if t.is_char_device() {
                (NodeType::Chardev { device: m.rdev() }, None)
            } else {
                (NodeType::Dev { device: m.rdev() }, None)
            };
            self.entries.push(ReadSourceEntry {
                path: child.clone(),
                node: Node::new_node(&name, node_type, meta),
                open,
            });
            if t.is_dir() && m.dev() == device {
                if let Some(sub) = dir.open_dir(Path::new(&name))? {
                    self.walk(&child, Arc::new(sub), device)?;
                }
            }
        }
        Ok(())
    }

    /// The bytes rustic has read so far from this source's files (shared: read it while the archive runs).
    pub fn read_counter(&self) -> Arc<AtomicU64> {
        self.read.clone()
    }

    /// Bytes of regular files listed.
    pub fn bytes(&self) -> u64 {
        self.size
    }

    /// Entries listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sort the entries the way rustic's archiver expects (by path; a directory before its contents).
    pub fn finish(&mut self) {
        self.entries.sort_by(|a, b| a.path.cmp(&b.path));
    }
}

/// The virtual path of a mount of a role: `/gbo/<tenant>/<role>/<data|conf|logs|device>`.
pub fn mount_path(root: &Path, device: &str) -> PathBuf {
    root.join(device.strip_prefix(crate::inventory::DEVICE_PREFIX).unwrap_or(device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_modes_match_restic() {
        assert_eq!(go_mode(0o100644), 0o644);
        assert_eq!(go_mode(0o040700), (1 << 31) | 0o700);
        assert_eq!(go_mode(0o120777), (1 << 27) | 0o777);
        assert_eq!(go_mode(0o104755), (1 << 23) | 0o755);
    }

    #[test]
    fn a_planted_symlink_is_listed_as_a_link_and_never_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("data")).expect("mkdir");
        std::fs::write(dir.path().join("data/a"), b"hello").expect("write");
        std::os::unix::fs::symlink("/etc", dir.path().join("data/etc")).expect("link");
        let root = HostDir::open_root(&dir.path().join("data")).expect("open");
        let mut source = TreeSource::new();
        source.add_tree(Path::new("/gbo/t/tables/data"), root).expect("walk");
        source.finish();
        let entries: Vec<_> = source.entries().map(|e| e.expect("entry")).collect();
        let paths: Vec<_> = entries.iter().map(|e| e.path.display().to_string()).collect();
        assert_eq!(paths, ["/gbo/t/tables/data", "/gbo/t/tables/data/a", "/gbo/t/tables/data/etc"]);
        assert!(matches!(&entries[2].node.node_type, NodeType::Symlink { linktarget, .. } if linktarget == "/etc"));
        assert!(entries[2].open.is_none(), "a link is never opened");
        assert_eq!(source.bytes(), 5);
    }
}
