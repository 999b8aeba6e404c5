//! The only way gbo creates, replaces, chowns, chmods, reads, copies into or removes anything under a stack dir or
//! any other directory a container can write to.
//!
//! gbo runs as root on the host, and a container's root can write everything mounted into it: it can plant a
//! symlink, a hard link, a FIFO or a directory at any name gbo is about to use. Path-based calls
//! (`std::fs::write`, `chown(path)`, `create_dir_all`) follow such links, so a planted `conf/pg_hba.conf ->
//! /etc/shadow` would make gbo overwrite and chown a host file. Everything here works from directory descriptors
//! instead:
//!
//! - A [`HostDir`] is an open directory. Its root is a directory the operator named (the stack dir, a snapshot
//!   store): that path is trusted as given. Every component below it is opened with `O_NOFOLLOW`, one at a time,
//!   so no link anywhere below the root is ever followed; a link found there is an error naming it
//!   ([`HostFsError::Planted`]).
//! - Files are written into a temporary of a random name created with `O_EXCL|O_NOFOLLOW`, owned and moded with
//!   `fchown`/`fchmod` on the open file, synced, then `renameat` over the target: a link or hard link at the target
//!   is replaced, never written through.
//! - Reads open with `O_NOFOLLOW|O_NONBLOCK`, check that the open file is a regular file (a FIFO cannot stall
//!   gbo), and stop at a size limit.
//! - Removal and copies walk directory descriptors (`unlinkat`, `openat`); links are removed or copied as links.
//!
//! The root of a [`HostDir`] is opened as given because it is the operator's (a stack dir may live behind a
//! symlink they made). Nothing a container controls may ever be passed as a root.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostFsError {
    /// Something other than what gbo expected sits at a name it uses: a symlink, or a file where a directory
    /// belongs (or the reverse). Nothing was followed or changed there.
    #[error(
        "{path} is {found}, where gbo expected {expected}; it was not followed or changed (a container may have \
         planted it: remove it and run again)"
    )]
    Planted {
        /// The path.
        path: PathBuf,
        /// What is there (`a symlink`, `a FIFO`, `a directory`, ...).
        found: &'static str,
        /// What gbo expected there.
        expected: &'static str,
    },
    /// A file is larger than the limit of a read.
    #[error("{path} is larger than {limit} bytes, the most gbo reads from a file of this kind")]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// A path that is not a plain relative path below a root (`..`, an absolute path) was asked for: a bug.
    #[error("{path} is not a plain relative path below {root}")]
    NotBeneath {
        /// The path asked for.
        path: PathBuf,
        /// The root.
        root: PathBuf,
    },
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl HostFsError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            HostFsError::Planted { path, .. }
            | HostFsError::TooLarge { path, .. }
            | HostFsError::NotBeneath { path, .. }
            | HostFsError::Io { path, .. } => path,
        }
    }

    /// Whether something was planted at a name gbo uses (a refusal, not a failure of the system).
    pub fn is_planted(&self) -> bool {
        matches!(self, HostFsError::Planted { .. })
    }
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, HostFsError>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> HostFsError + 'a {
    move |e| HostFsError::Io { op, path: path.to_path_buf(), source: e.into() }
}

fn std_io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> HostFsError + 'a {
    move |source| HostFsError::Io { op, path: path.to_path_buf(), source }
}

/// The owner of a created file or directory, as host ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Host uid.
    pub uid: u32,
    /// Host gid.
    pub gid: u32,
}

impl Owner {
    /// `uid:gid`.
    pub fn new(uid: u32, gid: u32) -> Self {
        Self { uid, gid }
    }

    fn ids(self) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
        (Some(rustix::fs::Uid::from_raw(self.uid)), Some(rustix::fs::Gid::from_raw(self.gid)))
    }
}

/// The kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A FIFO.
    Fifo,
    /// A socket.
    Socket,
    /// A character or block device.
    Device,
}

impl Kind {
    fn of(meta: &std::fs::Metadata) -> Kind {
        let t = meta.file_type();
        if t.is_symlink() {
            Kind::Symlink
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::File
        } else if t.is_fifo() {
            Kind::Fifo
        } else if t.is_socket() {
            Kind::Socket
        } else {
            Kind::Device
        }
    }

    /// `a symlink`, `a directory`, ... for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symlink",
            Kind::Fifo => "a FIFO",
            Kind::Socket => "a socket",
            Kind::Device => "a device node",
        }
    }
}

/// What is at a name (never following a link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its kind.
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Host uid.
    pub uid: u32,
    /// Host gid.
    pub gid: u32,
    /// Link count.
    pub nlink: u64,
    /// Size in bytes.
    pub size: u64,
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
}

impl Entry {
    fn of(meta: &std::fs::Metadata) -> Entry {
        Entry {
            kind: Kind::of(meta),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            nlink: meta.nlink(),
            size: meta.size(),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The plain components of a relative path; `..`, `.` and absolute paths are refused.
fn components<'a>(root: &Path, rel: &'a Path) -> Result<Vec<&'a OsStr>> {
    let mut out = Vec::new();
    for part in rel.components() {
        match part {
            Component::Normal(name) => out.push(name),
            _ => return Err(HostFsError::NotBeneath { path: rel.to_path_buf(), root: root.to_path_buf() }),
        }
    }
    Ok(out)
}

/// An open directory on the host (see the module documentation).
#[derive(Debug)]
pub struct HostDir {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

impl HostDir {
    /// Open a root the operator named (a stack dir): its own path is trusted as given; nothing below it will be
    /// followed.
    pub fn open_root(path: &Path) -> Result<HostDir> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(io("opening", path))?;
        Ok(HostDir { fd, path: path.to_path_buf() })
    }

    /// Open a root, or `None` when it does not exist.
    pub fn open_root_if_exists(path: &Path) -> Result<Option<HostDir>> {
        match HostDir::open_root(path) {
            Ok(dir) => Ok(Some(dir)),
            Err(HostFsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create a root the operator named (like `mkdir -p`, through their path as given: its parents are theirs)
    /// with `mode` for what is created, and open it.
    pub fn create_root(path: &Path, mode: u32) -> Result<HostDir> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(mode).create(path).map_err(std_io("creating", path))?;
        HostDir::open_root(path)
    }

    /// The path of this directory (for messages and for handing to LXD or host tools that only read it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` relative to this directory, if `path` is below it.
    pub fn relative<'a>(&self, path: &'a Path) -> Result<&'a Path> {
        path.strip_prefix(&self.path)
            .map_err(|_| HostFsError::NotBeneath { path: path.to_path_buf(), root: self.path.clone() })
    }

    fn child_path(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// What is at `name` in this directory, without following it; `None` when nothing is.
    fn entry_of(&self, name: &OsStr) -> Result<Option<Entry>> {
        let path = self.child_path(name);
        match rustix::fs::openat(&self.fd, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => {
                let meta = File::from(fd).metadata().map_err(std_io("reading", &path))?;
                Ok(Some(Entry::of(&meta)))
            }
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// Open the directory `name` of this one, never following a link.
    fn open_child_dir(&self, name: &OsStr) -> Result<Option<HostDir>> {
        let path = self.child_path(name);
        match rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Some(HostDir { fd, path })),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let found = self.entry_of(name)?.map(|e| e.kind.describe()).unwrap_or("something else");
                Err(HostFsError::Planted { path, found, expected: "a directory" })
            }
            Err(e) => Err(io("opening", &path)(e)),
        }
    }

    /// Open the directory at `rel` below this one; `None` when a component is missing.
    pub fn open_dir(&self, rel: &Path) -> Result<Option<HostDir>> {
        let mut current: Option<HostDir> = None;
        for name in components(&self.path, rel)? {
            let parent = current.as_ref().unwrap_or(self);
            match parent.open_child_dir(name)? {
                Some(dir) => current = Some(dir),
                None => return Ok(None),
            }
        }
        Ok(Some(match current {
            Some(dir) => dir,
            None => self.try_clone()?,
        }))
    }

    /// Another descriptor of this directory.
    pub fn try_clone(&self) -> Result<HostDir> {
        let fd = self.fd.try_clone().map_err(std_io("duplicating", &self.path))?;
        Ok(HostDir { fd, path: self.path.clone() })
    }

    /// Open (creating what is missing) the directory at `rel` below this one. Created directories get `mode`
    /// and, when given, `owner`; existing ones are left as they are.
    pub fn ensure_dir(&self, rel: &Path, mode: u32, owner: Option<Owner>) -> Result<HostDir> {
        let mut current = self.try_clone()?;
        for name in components(&self.path, rel)? {
            let next = match current.open_child_dir(name)? {
                Some(dir) => dir,
                None => {
                    let path = current.child_path(name);
                    match rustix::fs::mkdirat(&current.fd, name, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io("creating", &path)(e)),
                    }
                    let dir = current.open_child_dir(name)?.ok_or_else(|| HostFsError::Io {
                        op: "opening",
                        path: path.clone(),
                        source: std::io::ErrorKind::NotFound.into(),
                    })?;
                    if let Some(owner) = owner {
                        dir.chown(owner)?;
                    }
                    dir.chmod(mode)?;
                    dir
                }
            };
            current = next;
        }
        Ok(current)
    }

    /// Change this directory's owner (on the open descriptor).
    pub fn chown(&self, owner: Owner) -> Result<()> {
        let (uid, gid) = owner.ids();
        rustix::fs::fchown(&self.fd, uid, gid).map_err(io("chown", &self.path))
    }

    /// Change this directory's mode (on the open descriptor).
    pub fn chmod(&self, mode: u32) -> Result<()> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode)).map_err(io("chmod", &self.path))
    }

    /// This directory's own metadata.
    pub fn entry(&self) -> Result<Entry> {
        let file = File::from(self.fd.try_clone().map_err(std_io("duplicating", &self.path))?);
        Ok(Entry::of(&file.metadata().map_err(std_io("reading", &self.path))?))
    }

    /// The parent directory of `rel` (opened, never following a link) and its last component.
    fn parent_of<'a>(&self, rel: &'a Path) -> Result<Option<(HostDir, &'a OsStr)>> {
        let parts = components(&self.path, rel)?;
        let Some((last, parents)) = parts.split_last() else {
            return Err(HostFsError::NotBeneath { path: rel.to_path_buf(), root: self.path.clone() });
        };
        let parent_rel: PathBuf = parents.iter().collect();
        Ok(self.open_dir(&parent_rel)?.map(|dir| (dir, *last)))
    }

    /// What is at `rel` (never following a link); `None` when it or a parent is missing.
    pub fn stat(&self, rel: &Path) -> Result<Option<Entry>> {
        if rel.as_os_str().is_empty() {
            return self.entry().map(Some);
        }
        match self.parent_of(rel)? {
            Some((parent, name)) => parent.entry_of(name),
            None => Ok(None),
        }
    }

    /// Read the regular file at `rel`, at most `limit` bytes; `None` when it is missing. Anything other than a
    /// regular file there is [`HostFsError::Planted`].
    pub fn read_file(&self, rel: &Path, limit: u64) -> Result<Option<Vec<u8>>> {
        let mut file = match self.open_regular(rel) {
            Ok(file) => file,
            Err(HostFsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let path = self.path.join(rel);
        let mut out = Vec::new();
        (&mut file).take(limit.saturating_add(1)).read_to_end(&mut out).map_err(std_io("reading", &path))?;
        if out.len() as u64 > limit {
            return Err(HostFsError::TooLarge { path, limit });
        }
        Ok(Some(out))
    }

    /// Change the mode of the regular file at `rel` on its open descriptor (never following a link).
    pub fn chmod_file(&self, rel: &Path, mode: u32) -> Result<()> {
        let file = self.open_regular(rel)?;
        let path = self.path.join(rel);
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(io("chmod", &path))
    }

    /// Open the regular file at `rel` for streaming reads (backups): never following a link, never blocking on a
    /// FIFO; anything but a regular file is [`HostFsError::Planted`].
    pub fn open_file(&self, rel: &Path) -> Result<File> {
        self.open_regular(rel)
    }

    /// The full metadata of the entry `name` of this directory (times included), never following a link; `None`
    /// when nothing is there.
    pub fn metadata_of(&self, name: &OsStr) -> Result<Option<std::fs::Metadata>> {
        let path = self.child_path(name);
        match rustix::fs::openat(&self.fd, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => Ok(Some(File::from(fd).metadata().map_err(std_io("reading", &path))?)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// The full metadata of this directory itself (times included).
    pub fn metadata(&self) -> Result<std::fs::Metadata> {
        let fd = self.fd.try_clone().map_err(std_io("duplicating", &self.path))?;
        File::from(fd).metadata().map_err(std_io("reading", &self.path))
    }

    /// The target of the symlink `name` of this directory (read as text, never followed).
    pub fn read_link(&self, name: &OsStr) -> Result<OsString> {
        let path = self.child_path(name);
        let target = rustix::fs::readlinkat(&self.fd, name, Vec::new()).map_err(io("reading", &path))?;
        Ok(OsStr::from_bytes(target.as_bytes()).to_os_string())
    }

    /// Open the regular file at `rel` for reading: never following a link, never blocking on a FIFO; anything
    /// but a regular file is [`HostFsError::Planted`].
    fn open_regular(&self, rel: &Path) -> Result<File> {
        let (parent, name) = self.parent_of(rel)?.ok_or_else(|| HostFsError::Io {
            op: "opening",
            path: self.path.join(rel),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        parent.open_regular_at(name, flags, 0)
    }

    /// `openat(name)` in this directory with `flags` (which hold `O_NOFOLLOW`), then a check that what was opened is
    /// a regular file: a symlink or anything else there is [`HostFsError::Planted`].
    fn open_regular_at(&self, name: &OsStr, flags: OFlags, mode: u32) -> Result<File> {
        let path = self.child_path(name);
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode)).map_err(|e| match e {
            Errno::LOOP => HostFsError::Planted { path: path.clone(), found: "a symlink", expected: "a regular file" },
            e => io("opening", &path)(e),
        })?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(std_io("reading", &path))?;
        if !meta.is_file() {
            return Err(HostFsError::Planted { path, found: Kind::of(&meta).describe(), expected: "a regular file" });
        }
        Ok(file)
    }

    /// Write `content` to `rel` atomically: a new file of a random name (`O_EXCL|O_NOFOLLOW`), owned and moded on
    /// its descriptor, synced, renamed over `rel`. Missing parents are created with `parent_mode` and `owner`.
    /// Whatever was at `rel` (a link, a hard link) is replaced, never written through; a directory there is
    /// [`HostFsError::Planted`].
    pub fn write_file(
        &self,
        rel: &Path,
        content: &[u8],
        mode: u32,
        owner: Option<Owner>,
        parent_mode: u32,
    ) -> Result<()> {
        let parts = components(&self.path, rel)?;
        let Some((last, parents)) = parts.split_last() else {
            return Err(HostFsError::NotBeneath { path: rel.to_path_buf(), root: self.path.clone() });
        };
        let parent_rel: PathBuf = parents.iter().collect();
        let parent = self.ensure_dir(&parent_rel, parent_mode, owner)?;
        parent.replace_file(last, |file| file.write_all(content), mode, owner)
    }

    /// Create `name` in this directory atomically: `fill` writes a new file of a random name, which then gets
    /// `owner` and `mode` and replaces whatever is at `name`.
    pub fn replace_file(
        &self,
        name: &OsStr,
        fill: impl FnOnce(&mut File) -> std::io::Result<()>,
        mode: u32,
        owner: Option<Owner>,
    ) -> Result<()> {
        let target = self.child_path(name);
        if let Some(entry) = self.entry_of(name)? {
            if entry.kind == Kind::Dir {
                return Err(HostFsError::Planted { path: target, found: "a directory", expected: "a regular file" });
            }
        }
        let (tmp_name, mut file) = self.create_temporary(name)?;
        let tmp_path = self.child_path(&tmp_name);
        let result = (|| {
            fill(&mut file).map_err(std_io("writing", &tmp_path))?;
            if let Some(owner) = owner {
                let (uid, gid) = owner.ids();
                rustix::fs::fchown(&file, uid, gid).map_err(io("chown", &tmp_path))?;
            }
            // After the chown, which clears set-id bits.
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(io("chmod", &tmp_path))?;
            file.sync_all().map_err(std_io("syncing", &tmp_path))?;
            rustix::fs::renameat(&self.fd, &tmp_name, &self.fd, name).map_err(|e| match e {
                Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => {
                    HostFsError::Planted { path: target.clone(), found: "a directory", expected: "a regular file" }
                }
                e => io("renaming to", &target)(e),
            })
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp_name, AtFlags::empty());
        }
        result
    }

    /// A new, empty 0600 file of a random name next to `name` (`O_CREAT|O_EXCL|O_NOFOLLOW`).
    fn create_temporary(&self, name: &OsStr) -> Result<(OsString, File)> {
        let stem: String = name.to_string_lossy().chars().take(64).collect();
        for _ in 0..16 {
            let tmp = OsString::from(format!(".{stem}.gbo-{:016x}", rand::random::<u64>()));
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::openat(&self.fd, &tmp, flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => return Ok((tmp, File::from(fd))),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(io("creating a temporary in", &self.path)(e)),
            }
        }
        Err(HostFsError::Io {
            op: "creating a temporary in",
            path: self.path.clone(),
            source: std::io::ErrorKind::AlreadyExists.into(),
        })
    }

    /// Create a new regular file `name` in this directory (`O_CREAT|O_EXCL|O_NOFOLLOW`) with `mode`: fails when
    /// anything is there.
    pub fn create_new(&self, name: &OsStr, mode: u32) -> Result<File> {
        let path = self.child_path(name);
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode)).map_err(io("creating", &path))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(io("chmod", &path))?;
        Ok(File::from(fd))
    }

    /// Open the regular file `name` of this directory for reading and writing, creating it empty with `mode` when
    /// missing (never following a link; anything but a regular file there is [`HostFsError::Planted`]).
    pub fn open_or_create(&self, name: &OsStr, mode: u32) -> Result<File> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        self.open_regular_at(name, flags, mode)
    }

    /// Make sure the regular file at `rel` exists (created empty with `mode` and `owner` when missing; an
    /// existing one is left as it is). A link or anything else there is [`HostFsError::Planted`].
    pub fn ensure_file(&self, rel: &Path, mode: u32, owner: Option<Owner>, parent_mode: u32) -> Result<()> {
        let parts = components(&self.path, rel)?;
        let Some((last, parents)) = parts.split_last() else {
            return Err(HostFsError::NotBeneath { path: rel.to_path_buf(), root: self.path.clone() });
        };
        let parent_rel: PathBuf = parents.iter().collect();
        let parent = self.ensure_dir(&parent_rel, parent_mode, owner)?;
        match parent.entry_of(last)? {
            Some(entry) if entry.kind == Kind::File => Ok(()),
            Some(entry) => Err(HostFsError::Planted {
                path: parent.child_path(last),
                found: entry.kind.describe(),
                expected: "a regular file",
            }),
            None => parent.replace_file(last, |_| Ok(()), mode, owner),
        }
    }

    /// The names in this directory.
    pub fn names(&self) -> Result<Vec<OsString>> {
        let dir = rustix::fs::Dir::read_from(&self.fd).map_err(io("listing", &self.path))?;
        let mut out = Vec::new();
        for entry in dir {
            let entry = entry.map_err(io("listing", &self.path))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(out)
    }

    /// Visit every entry below this directory, depth first, a directory's entries before the directory itself,
    /// without following a link and without entering another filesystem (a mount inside is visited as an entry,
    /// never walked). `visit` gets the directory holding the entry, its name and what it is.
    pub fn walk(&self, visit: &mut dyn FnMut(&HostDir, &OsStr, &Entry) -> Result<()>) -> Result<()> {
        let device = self.entry()?.dev;
        self.walk_on(device, visit)
    }

    fn walk_on(&self, device: u64, visit: &mut dyn FnMut(&HostDir, &OsStr, &Entry) -> Result<()>) -> Result<()> {
        for name in self.names()? {
            let Some(entry) = self.entry_of(&name)? else { continue };
            if entry.kind == Kind::Dir && entry.dev == device {
                if let Some(child) = self.open_child_dir(&name)? {
                    child.walk_on(device, visit)?;
                }
            }
            visit(self, &name, &entry)?;
        }
        Ok(())
    }

    /// Change the owner of the entry `name` of this directory itself (a link's own owner, never its target's),
    /// keeping the set-id bits of a regular file that the change would clear.
    pub fn chown_child(&self, name: &OsStr, owner: Owner) -> Result<()> {
        let path = self.child_path(name);
        let Some(entry) = self.entry_of(name)? else { return Ok(()) };
        let (uid, gid) = owner.ids();
        rustix::fs::chownat(&self.fd, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW).map_err(io("chown", &path))?;
        if entry.kind == Kind::File && entry.mode & 0o6000 != 0 {
            let file = self.open_regular(Path::new(name))?;
            rustix::fs::fchmod(&file, Mode::from_raw_mode(entry.mode)).map_err(io("chmod", &path))?;
        }
        Ok(())
    }

    /// Remove whatever is at `rel` (a whole tree for a directory; a link itself, never its target). Returns
    /// whether something was there.
    pub fn remove(&self, rel: &Path) -> Result<bool> {
        let Some((parent, name)) = self.parent_of(rel)? else { return Ok(false) };
        parent.remove_child(name)
    }

    fn remove_child(&self, name: &OsStr) -> Result<bool> {
        let path = self.child_path(name);
        let Some(entry) = self.entry_of(name)? else { return Ok(false) };
        if entry.kind == Kind::Dir {
            if let Some(dir) = self.open_child_dir(name)? {
                dir.empty()?;
            }
            match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(io("removing", &path)(e)),
            }
        } else {
            match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(io("removing", &path)(e)),
            }
        }
        Ok(true)
    }

    /// Remove everything in this directory (links as links).
    pub fn empty(&self) -> Result<()> {
        for name in self.names()? {
            self.remove_child(&name)?;
        }
        Ok(())
    }

    /// Copy everything in `source` into this directory, keeping kinds, modes, owners, modification times and
    /// hard links among the copied files. Links are copied as links (never followed), FIFOs recreated, sockets
    /// and device nodes left out (counted in the result). Names that exist here already are an error: copy into
    /// an empty directory.
    pub fn copy_from(&self, source: &HostDir) -> Result<CopyStats> {
        let mut stats = CopyStats::default();
        let mut links: HashMap<(u64, u64), (HostDir, OsString)> = HashMap::new();
        copy_tree(source, self, &mut stats, &mut links)?;
        Ok(stats)
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files copied.
    pub files: u64,
    /// Bytes of regular files copied.
    pub bytes: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks recreated.
    pub symlinks: u64,
    /// Hard links recreated.
    pub hard_links: u64,
    /// Sockets and device nodes left out.
    pub skipped: u64,
}

fn copy_tree(
    source: &HostDir,
    target: &HostDir,
    stats: &mut CopyStats,
    links: &mut HashMap<(u64, u64), (HostDir, OsString)>,
) -> Result<()> {
    for name in source.names()? {
        let from = source.child_path(&name);
        let to = target.child_path(&name);
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&source.fd, &name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(io("reading", &from)(e)),
        };
        let meta = File::from(fd).metadata().map_err(std_io("reading", &from))?;
        let entry = Entry::of(&meta);
        let owner = Owner::new(entry.uid, entry.gid);
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec { tv_sec: meta.atime(), tv_nsec: meta.atime_nsec() as _ },
            last_modification: rustix::fs::Timespec { tv_sec: meta.mtime(), tv_nsec: meta.mtime_nsec() as _ },
        };
        match entry.kind {
            Kind::Dir => {
                rustix::fs::mkdirat(&target.fd, &name, Mode::from_raw_mode(0o700)).map_err(io("creating", &to))?;
                let Some(from_dir) = source.open_child_dir(&name)? else { continue };
                let to_dir = target.open_child_dir(&name)?.ok_or_else(|| HostFsError::Io {
                    op: "opening",
                    path: to.clone(),
                    source: std::io::ErrorKind::NotFound.into(),
                })?;
                copy_tree(&from_dir, &to_dir, stats, links)?;
                to_dir.chown(owner)?;
                to_dir.chmod(entry.mode)?;
                rustix::fs::futimens(&to_dir.fd, &times).map_err(io("setting times of", &to))?;
                stats.dirs += 1;
            }
            Kind::File => {
                if entry.nlink > 1 {
                    if let Some((first_dir, first_name)) = links.get(&(meta.dev(), meta.ino())) {
                        rustix::fs::linkat(&first_dir.fd, first_name, &target.fd, &name, AtFlags::empty())
                            .map_err(io("linking", &to))?;
                        stats.hard_links += 1;
                        continue;
                    }
                }
                let read_flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
                let input =
                    rustix::fs::openat(&source.fd, &name, read_flags, Mode::empty()).map_err(io("opening", &from))?;
                let mut input = File::from(input);
                let opened = input.metadata().map_err(std_io("reading", &from))?;
                if !opened.is_file() || opened.ino() != meta.ino() {
                    return Err(HostFsError::Planted {
                        path: from,
                        found: Kind::of(&opened).describe(),
                        expected: "the regular file just listed",
                    });
                }
                let write_flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let output = rustix::fs::openat(&target.fd, &name, write_flags, Mode::from_raw_mode(0o600))
                    .map_err(io("creating", &to))?;
                let mut output = File::from(output);
                // A reflink where the filesystem can (btrfs, XFS), else a kernel-side copy.
                let bytes = match rustix::fs::ioctl_ficlone(&output, &input) {
                    Ok(()) => opened.len(),
                    Err(_) => std::io::copy(&mut input, &mut output).map_err(std_io("copying", &from))?,
                };
                let (uid, gid) = owner.ids();
                rustix::fs::fchown(&output, uid, gid).map_err(io("chown", &to))?;
                rustix::fs::fchmod(&output, Mode::from_raw_mode(entry.mode)).map_err(io("chmod", &to))?;
                rustix::fs::futimens(&output, &times).map_err(io("setting times of", &to))?;
                if entry.nlink > 1 {
                    links.insert((meta.dev(), meta.ino()), (target.try_clone()?, name.clone()));
                }
                stats.files += 1;
                stats.bytes += bytes;
            }
            Kind::Symlink => {
                let link = rustix::fs::readlinkat(&source.fd, &name, Vec::new()).map_err(io("reading", &from))?;
                rustix::fs::symlinkat(link.as_c_str(), &target.fd, &name).map_err(io("creating", &to))?;
                let (uid, gid) = owner.ids();
                rustix::fs::chownat(&target.fd, &name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io("chown", &to))?;
                stats.symlinks += 1;
            }
            Kind::Fifo => {
                rustix::fs::mknodat(&target.fd, &name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                    .map_err(io("creating", &to))?;
                let (uid, gid) = owner.ids();
                rustix::fs::chownat(&target.fd, &name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io("chown", &to))?;
                rustix::fs::chmodat(&target.fd, &name, Mode::from_raw_mode(entry.mode), AtFlags::empty())
                    .map_err(io("chmod", &to))?;
            }
            Kind::Socket | Kind::Device => stats.skipped += 1,
        }
    }
    Ok(())
}

/// A fresh, private (0700) directory of a random name under `parent` (a root-owned place such as `/run`), removed
/// when dropped: for mount points and scratch space that no other user can guess or pre-create.
#[derive(Debug)]
pub struct PrivateDir {
    inner: tempfile::TempDir,
}

impl PrivateDir {
    /// Create one (`mkdir` with a random name fails rather than reuse anything that exists).
    pub fn new(parent: &Path, prefix: &str) -> Result<PrivateDir> {
        use std::os::unix::fs::PermissionsExt;
        let inner = tempfile::Builder::new()
            .prefix(prefix)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(std_io("creating a directory in", parent))?;
        let entry = HostDir::open_root(inner.path())?.entry()?;
        if entry.mode & 0o077 != 0 {
            return Err(HostFsError::Io {
                op: "checking the mode of",
                path: inner.path().to_path_buf(),
                source: std::io::ErrorKind::PermissionDenied.into(),
            });
        }
        Ok(PrivateDir { inner })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }
}

/// Write `content` to the absolute `path` below `root` (see [`HostDir::write_file`]).
pub fn write_below(
    root: &Path,
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<Owner>,
    parent_mode: u32,
) -> Result<()> {
    let dir = HostDir::open_root(root)?;
    let rel = dir.relative(path)?.to_path_buf();
    dir.write_file(&rel, content, mode, owner, parent_mode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch() -> (tempfile::TempDir, HostDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = HostDir::open_root(dir.path()).expect("open");
        (dir, host)
    }

    fn sentinel(dir: &Path) -> PathBuf {
        let path = dir.join("sentinel");
        std::fs::write(&path, "keep me").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    fn unchanged(path: &Path) {
        assert_eq!(std::fs::read_to_string(path).expect("read"), "keep me");
        let meta = std::fs::metadata(path).expect("meta");
        assert_eq!(meta.mode() & 0o7777, 0o600);
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_never_written_through() {
        let (outside, _) = scratch();
        let target = sentinel(outside.path());
        let (root, dir) = scratch();
        std::os::unix::fs::symlink(&target, root.path().join("pg_hba.conf")).expect("symlink");
        dir.write_file(Path::new("pg_hba.conf"), b"new", 0o640, None, 0o755).expect("write");
        unchanged(&target);
        let meta = std::fs::symlink_metadata(root.path().join("pg_hba.conf")).expect("meta");
        assert!(meta.is_file() && meta.mode() & 0o7777 == 0o640);
        assert_eq!(std::fs::read(root.path().join("pg_hba.conf")).expect("read"), b"new");
    }

    #[test]
    fn a_hard_link_at_the_target_is_replaced_never_written_through() {
        let (root, dir) = scratch();
        let other = sentinel(root.path());
        std::fs::hard_link(&other, root.path().join("conf")).expect("link");
        dir.write_file(Path::new("conf"), b"new", 0o644, None, 0o755).expect("write");
        unchanged(&other);
    }

    #[test]
    fn a_symlinked_parent_directory_is_refused_by_name() {
        let (outside, _) = scratch();
        let target = sentinel(outside.path());
        let (root, dir) = scratch();
        std::os::unix::fs::symlink(outside.path(), root.path().join("sub")).expect("symlink");
        let err = dir.write_file(Path::new("sub/sentinel"), b"x", 0o644, None, 0o755).expect_err("refused");
        assert!(err.is_planted(), "{err}");
        assert_eq!(err.path(), root.path().join("sub"));
        assert!(err.to_string().contains("a symlink"), "{err}");
        unchanged(&target);
        let err = dir.ensure_dir(Path::new("sub/deeper"), 0o755, None).expect_err("refused");
        assert!(err.is_planted(), "{err}");
        assert!(!outside.path().join("deeper").exists());
    }

    #[test]
    fn predictable_temporary_names_cannot_be_preplanted() {
        let (outside, _) = scratch();
        let target = sentinel(outside.path());
        let (root, dir) = scratch();
        // The old scheme's fixed temporary name, planted.
        std::os::unix::fs::symlink(&target, root.path().join(".conf.gbo-tmp")).expect("symlink");
        dir.write_file(Path::new("conf"), b"new", 0o644, None, 0o755).expect("write");
        unchanged(&target);
        let leftovers: Vec<_> = dir.names().expect("names").into_iter().filter(|n| n != ".conf.gbo-tmp").collect();
        assert_eq!(leftovers, vec![OsString::from("conf")]);
    }

    #[test]
    fn reads_refuse_links_and_fifos_and_stop_at_the_limit() {
        let (outside, _) = scratch();
        let target = sentinel(outside.path());
        let (root, dir) = scratch();
        std::os::unix::fs::symlink(&target, root.path().join("link")).expect("symlink");
        assert!(dir.read_file(Path::new("link"), 100).expect_err("link").is_planted());
        rustix::fs::mknodat(&dir.fd, "fifo", FileType::Fifo, Mode::from_raw_mode(0o600), 0).expect("mkfifo");
        assert!(dir.read_file(Path::new("fifo"), 100).expect_err("fifo").is_planted());
        std::fs::write(root.path().join("big"), vec![b'x'; 101]).expect("write");
        assert!(matches!(dir.read_file(Path::new("big"), 100), Err(HostFsError::TooLarge { limit: 100, .. })));
        assert_eq!(dir.read_file(Path::new("missing"), 100).expect("missing"), None);
        assert_eq!(dir.read_file(Path::new("big"), 101).expect("read").map(|v| v.len()), Some(101));
    }

    #[test]
    fn removal_removes_links_not_their_targets() {
        let (outside, _) = scratch();
        let target = sentinel(outside.path());
        let (root, dir) = scratch();
        std::fs::create_dir_all(root.path().join("tree/a")).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), root.path().join("tree/a/dir-link")).expect("symlink");
        std::os::unix::fs::symlink(&target, root.path().join("tree/file-link")).expect("symlink");
        assert!(dir.remove(Path::new("tree")).expect("remove"));
        assert!(!root.path().join("tree").exists());
        unchanged(&target);
        assert!(!dir.remove(Path::new("tree")).expect("again"));
    }

    #[test]
    fn copies_keep_links_as_links_and_hard_links_together() {
        let (outside, _) = scratch();
        let target = sentinel(outside.path());
        let (source_root, source) = scratch();
        std::fs::create_dir_all(source_root.path().join("d/e")).expect("mkdir");
        std::fs::write(source_root.path().join("d/e/f"), "data").expect("write");
        std::fs::set_permissions(source_root.path().join("d/e/f"), std::fs::Permissions::from_mode(0o640))
            .expect("chmod");
        std::fs::hard_link(source_root.path().join("d/e/f"), source_root.path().join("d/g")).expect("link");
        std::os::unix::fs::symlink(&target, source_root.path().join("d/link")).expect("symlink");
        let (target_root, copy) = scratch();
        let stats = copy.copy_from(&source).expect("copy");
        assert_eq!((stats.files, stats.hard_links, stats.symlinks, stats.dirs), (1, 1, 1, 2));
        assert_eq!(std::fs::read_to_string(target_root.path().join("d/e/f")).expect("read"), "data");
        let f = std::fs::metadata(target_root.path().join("d/e/f")).expect("meta");
        let g = std::fs::metadata(target_root.path().join("d/g")).expect("meta");
        assert_eq!((f.ino(), f.mode() & 0o7777), (g.ino(), 0o640));
        assert_eq!(std::fs::read_link(target_root.path().join("d/link")).expect("readlink"), target);
        unchanged(&target);
    }

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        let (_root, dir) = scratch();
        assert!(matches!(
            dir.write_file(Path::new("../x"), b"", 0o600, None, 0o700),
            Err(HostFsError::NotBeneath { .. })
        ));
        assert!(matches!(dir.stat(Path::new("/etc/passwd")), Err(HostFsError::NotBeneath { .. })));
    }

    #[test]
    fn private_dirs_are_0700_and_fresh() {
        let (root, _) = scratch();
        let private = PrivateDir::new(root.path(), "gbo-test-").expect("private");
        let mode = std::fs::metadata(private.path()).expect("meta").mode() & 0o7777;
        assert_eq!(mode, 0o700);
        let other = PrivateDir::new(root.path(), "gbo-test-").expect("private");
        assert_ne!(private.path(), other.path());
    }
}
