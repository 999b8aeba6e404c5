//! Host data captured with a container snapshot: which filesystem each mounted host directory lives on, and how to
//! capture and bring it back (btrfs subvolume snapshot, ZFS snapshot, or a copy taken with the container frozen).

use std::path::{Path, PathBuf};

use crate::hostfs::{HostDir, PrivateDir};
use crate::runner::{HostCommand, RunError};

use super::SnapshotError;

/// How one mounted host directory was captured.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "method")]
pub enum CaptureMethod {
    /// A read-only btrfs snapshot of the subvolume at `location`.
    BtrfsSnapshot {
        /// Where the snapshot subvolume is.
        location: PathBuf,
    },
    /// `dataset@snapshot`; the mounted directory is `subdir` under the dataset's mountpoint.
    ZfsSnapshot {
        /// The dataset.
        dataset: String,
        /// The snapshot name (after `@`).
        snapshot: String,
        /// The dataset's mountpoint.
        mountpoint: PathBuf,
    },
    /// A copy (`cp -a --reflink=auto`) taken while the container was frozen.
    FrozenCopy {
        /// Where the copy is.
        location: PathBuf,
    },
}

impl CaptureMethod {
    /// Short name for tables.
    pub fn label(&self) -> &'static str {
        match self {
            CaptureMethod::BtrfsSnapshot { .. } => "btrfs",
            CaptureMethod::ZfsSnapshot { .. } => "zfs",
            CaptureMethod::FrozenCopy { .. } => "copy",
        }
    }
}

/// One captured host directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataCapture {
    /// The disk device.
    pub device: String,
    /// The host directory.
    pub host_path: PathBuf,
    /// Where it is mounted in the container.
    pub container_path: String,
    /// How it was captured.
    #[serde(flatten)]
    pub method: CaptureMethod,
}

/// The filesystem a path lives on, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount point.
    pub mount_point: PathBuf,
    /// Filesystem type (`btrfs`, `ext4`, `zfs`, `fuse`, ...).
    pub fs_type: String,
    /// Mount source (a device, or the dataset for ZFS).
    pub source: String,
}

/// The mount holding `path` (the longest mount point that is a prefix of it), from mountinfo text.
pub fn mount_of(mountinfo: &str, path: &Path) -> Option<MountEntry> {
    let mut best: Option<MountEntry> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = left.split(' ').collect();
        let rfields: Vec<&str> = right.split(' ').collect();
        let (Some(mount_point), Some(fs_type), Some(source)) = (fields.get(4), rfields.first(), rfields.get(1)) else {
            continue;
        };
        let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
        if path.starts_with(&mount_point)
            && best.as_ref().is_none_or(|b| mount_point.components().count() >= b.mount_point.components().count())
        {
            best = Some(MountEntry { mount_point, fs_type: fs_type.to_string(), source: unescape_mountinfo(source) });
        }
    }
    best
}

/// Undo the kernel's octal escapes (`\\040` for a space, ...). The text is decoded as bytes, so non-ASCII names stay
/// what they are, and `\\` followed by three octal digits above `\\377` is not an escape.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|digits| u8::try_from(digits.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'))).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a directory can be captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// It is the root of a btrfs subvolume.
    Btrfs,
    /// It lives in a ZFS dataset mounted at `mountpoint`.
    Zfs {
        /// Dataset name.
        dataset: String,
        /// Its mountpoint.
        mountpoint: PathBuf,
    },
    /// Anything else (or btrfs directories that are not subvolumes): a frozen copy.
    Copy,
}

/// Decide how to capture `path`.
pub fn strategy_for(path: &Path) -> Result<Strategy, SnapshotError> {
    let canonical = path.canonicalize().map_err(|source| SnapshotError::Io { path: path.to_path_buf(), source })?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|source| SnapshotError::Io { path: "/proc/self/mountinfo".into(), source })?;
    let Some(entry) = mount_of(&mountinfo, &canonical) else { return Ok(Strategy::Copy) };
    if entry.fs_type == "btrfs" {
        // The root directory of every btrfs subvolume has inode 256.
        use std::os::unix::fs::MetadataExt;
        let meta =
            std::fs::metadata(&canonical).map_err(|source| SnapshotError::Io { path: canonical.clone(), source })?;
        return Ok(if meta.ino() == 256 { Strategy::Btrfs } else { Strategy::Copy });
    }
    let zfs_like = entry.fs_type == "zfs" || entry.fs_type.starts_with("fuse");
    if zfs_like && !entry.source.starts_with('/') {
        let zfs = HostCommand::new(crate::zfs::zfs_program()).args(["list", "-H", "-o", "name"]).arg(&entry.source);
        if zfs.run().map(|out| out.trim() == entry.source).unwrap_or(false) {
            return Ok(Strategy::Zfs { dataset: entry.source, mountpoint: entry.mount_point });
        }
    }
    Ok(Strategy::Copy)
}

/// Capture `host_path` as `strategy` says; `store` is this snapshot's directory for copies, `tag` a name unique to
/// this container snapshot.
pub fn capture(
    host_path: &Path,
    strategy: &Strategy,
    store: &Path,
    device: &str,
    tag: &str,
) -> Result<CaptureMethod, SnapshotError> {
    match strategy {
        Strategy::Btrfs => {
            // Next to the subvolume, so it is always on the same filesystem.
            let parent = host_path.parent().unwrap_or(Path::new("/"));
            let dir = HostDir::open_root(parent)?.ensure_dir(Path::new(".gbo-snapshots"), 0o700, None)?;
            let location = dir.path().join(format!("{tag}@{device}"));
            HostCommand::new("btrfs")
                .args(["subvolume", "snapshot", "-r"])
                .arg(host_path)
                .arg(&location)
                .install_hint("install it with `apt-get install btrfs-progs`")
                .run()?;
            Ok(CaptureMethod::BtrfsSnapshot { location })
        }
        Strategy::Zfs { dataset, mountpoint } => {
            let snapshot = format!("gbo-{tag}");
            HostCommand::new(crate::zfs::zfs_program()).arg("snapshot").arg(format!("{dataset}@{snapshot}")).run()?;
            Ok(CaptureMethod::ZfsSnapshot { dataset: dataset.clone(), snapshot, mountpoint: mountpoint.clone() })
        }
        Strategy::Copy => {
            let target = HostDir::open_root(store)?.ensure_dir(Path::new(device), 0o700, None)?;
            let location = target.path().to_path_buf();
            if !target.names()?.is_empty() {
                return Err(SnapshotError::Io {
                    path: location,
                    source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a capture is already there"),
                });
            }
            target.copy_from(&HostDir::open_root(host_path)?)?;
            Ok(CaptureMethod::FrozenCopy { location })
        }
    }
}

/// Put the captured data back into `host_path` (the container must be stopped).
pub fn restore(capture: &DataCapture) -> Result<(), SnapshotError> {
    let host_path = &capture.host_path;
    // What is restored from must be there before what is restored over is touched.
    if let CaptureMethod::BtrfsSnapshot { location } | CaptureMethod::FrozenCopy { location } = &capture.method {
        if !location.is_dir() {
            return Err(SnapshotError::CaptureMissing { location: location.clone(), host_path: host_path.clone() });
        }
    }
    match &capture.method {
        CaptureMethod::BtrfsSnapshot { location } => {
            HostCommand::new("btrfs").args(["subvolume", "delete"]).arg(host_path).run()?;
            HostCommand::new("btrfs").args(["subvolume", "snapshot"]).arg(location).arg(host_path).run()?;
            Ok(())
        }
        CaptureMethod::ZfsSnapshot { dataset, snapshot, mountpoint } => {
            // The mountpoint comes from mountinfo (a canonical path); the device's source may reach the dataset
            // through a symlink. Outside the dataset there is nothing in the snapshot to bring back.
            let canonical =
                host_path.canonicalize().map_err(|source| SnapshotError::Io { path: host_path.clone(), source })?;
            let relative = canonical
                .strip_prefix(mountpoint)
                .map_err(|_| SnapshotError::OutsideDataset {
                    path: host_path.clone(),
                    dataset: dataset.clone(),
                    mountpoint: mountpoint.clone(),
                })?
                .to_path_buf();
            // A clone, not `zfs rollback -r`: rollback would destroy every newer snapshot (the safety one included)
            // and roll back every other directory of the dataset too. The clone is a child of the pool's root
            // (a sibling name such as `tank-x` would be another pool when the data lives in the root dataset)
            // and is mounted outside the dataset, never inside the directory about to be emptied.
            let zfs = crate::zfs::zfs_program();
            static CLONES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = CLONES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let leaf = format!("gbo-restore-{}-{n}", std::process::id());
            let pool = dataset.split('/').next().unwrap_or(dataset);
            let clone = format!("{pool}/{leaf}");
            // A fresh private mount point (random name, 0700, created here): never a predictable path that
            // another user could have prepared.
            let mount_dir = PrivateDir::new(&std::env::temp_dir(), "gbo-restore-")?;
            let wanted_mount = mount_dir.path().to_path_buf();
            let mut mountpoint_option = std::ffi::OsString::from("mountpoint=");
            mountpoint_option.push(&wanted_mount);
            HostCommand::new(&zfs)
                .args(["clone", "-o"])
                .arg(mountpoint_option)
                .arg(format!("{dataset}@{snapshot}"))
                .arg(&clone)
                .run()?;
            let mut clone_mount = None;
            let result = (|| {
                // Where it really is (an `altroot` prefixes the mountpoint).
                let mounted = PathBuf::from(
                    HostCommand::new(&zfs).args(["get", "-H", "-o", "value", "mountpoint"]).arg(&clone).run()?.trim(),
                );
                clone_mount = Some(mounted.clone());
                let source = HostDir::open_root(&mounted)?.open_dir(&relative)?.ok_or_else(|| SnapshotError::Io {
                    path: mounted.join(&relative),
                    source: std::io::ErrorKind::NotFound.into(),
                })?;
                replace_contents(host_path, &source)
            })();
            let destroyed = destroy_clone(&zfs, &clone);
            if destroyed.is_ok() {
                // zfs leaves a mountpoint directory it was told to use; it is empty once the clone is gone (and
                // the private directory removes itself when it is ours).
                if let Some(other) = clone_mount.as_deref().filter(|m| *m != wanted_mount.as_path()) {
                    let _ = std::fs::remove_dir(other);
                }
            }
            drop(mount_dir);
            result?;
            destroyed?;
            Ok(())
        }
        CaptureMethod::FrozenCopy { location } => replace_contents(host_path, &HostDir::open_root(location)?),
    }
}

/// Remove what a capture holds.
pub fn discard(capture: &DataCapture) -> Result<(), SnapshotError> {
    match &capture.method {
        CaptureMethod::BtrfsSnapshot { location } => {
            if location.exists() {
                HostCommand::new("btrfs").args(["subvolume", "delete"]).arg(location).run()?;
            }
            Ok(())
        }
        CaptureMethod::ZfsSnapshot { dataset, snapshot, .. } => {
            let zfs = crate::zfs::zfs_program();
            let name = format!("{dataset}@{snapshot}");
            match HostCommand::new(&zfs).arg("destroy").arg(&name).run() {
                Ok(_) => Ok(()),
                // Already gone (destroyed by hand): nothing left to remove, as for a missing btrfs snapshot.
                Err(e) if zfs_gone(&zfs, &name) => {
                    tracing::debug!(snapshot = %name, error = %e, "the ZFS snapshot was already gone");
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        CaptureMethod::FrozenCopy { location } => remove_tree(location),
    }
}

/// Destroy a restore clone. zfs-fuse refuses to destroy a mounted dataset ("dataset is busy", the unmount it does
/// first has not settled), so it is unmounted first, and a failed destroy is tried again for a few seconds.
fn destroy_clone(zfs: &str, clone: &str) -> Result<(), SnapshotError> {
    if let Err(e) = HostCommand::new(zfs).arg("unmount").arg(clone).run() {
        tracing::debug!(clone, error = %e, "unmounting the restore clone failed; destroying it anyway");
    }
    let mut attempt = 0;
    loop {
        match HostCommand::new(zfs).arg("destroy").arg(clone).run() {
            Ok(_) => return Ok(()),
            Err(_) if zfs_gone(zfs, clone) => return Ok(()),
            Err(e) if attempt >= 20 => return Err(e.into()),
            Err(e) => {
                tracing::debug!(clone, attempt, error = %e, "destroying the restore clone failed; retrying");
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
    }
}

/// Whether `zfs` says a dataset or snapshot does not exist. Any other failure (no daemon, no program) is not an
/// answer, so it counts as "may exist" and the caller reports its own error.
fn zfs_gone(zfs: &str, name: &str) -> bool {
    match HostCommand::new(zfs).args(["list", "-H", "-o", "name", "-t", "all"]).arg(name).run() {
        Ok(_) => false,
        Err(RunError::Failed { stderr, .. }) => stderr.contains("does not exist"),
        Err(_) => false,
    }
}

/// Remove a directory tree (a capture) without following a link in it.
pub(super) fn remove_tree(path: &Path) -> Result<(), SnapshotError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else { return Ok(()) };
    if let Some(dir) = HostDir::open_root_if_exists(parent)? {
        dir.remove(Path::new(name))?;
    }
    Ok(())
}

/// Empty the mounted directory `host_path` (the container is stopped) and copy `source` into it, never following
/// a link on either side: whatever the container planted is removed as itself, and links in the capture are
/// restored as links.
fn replace_contents(host_path: &Path, source: &HostDir) -> Result<(), SnapshotError> {
    let target = HostDir::open_root(host_path)?;
    target.empty()?;
    target.copy_from(source)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 7:1 / /srv/stack rw,relatime shared:20 - btrfs /dev/loop1 rw,space_cache=v2
41 22 0:50 / /tank/ci rw,relatime shared:21 - fuse tank/ci rw,user_id=0
42 22 0:51 / /mnt/with\\040space rw - zfs pool/sp rw
";

    #[test]
    fn finds_the_longest_mount_prefix() {
        let m = mount_of(MOUNTINFO, Path::new("/srv/stack/tables/data")).expect("mount");
        assert_eq!((m.fs_type.as_str(), m.mount_point.as_path()), ("btrfs", Path::new("/srv/stack")));
        let root = mount_of(MOUNTINFO, Path::new("/srv/stackx")).expect("mount");
        assert_eq!(root.fs_type, "ext4");
        let zfs = mount_of(MOUNTINFO, Path::new("/tank/ci/x")).expect("mount");
        assert_eq!((zfs.fs_type.as_str(), zfs.source.as_str()), ("fuse", "tank/ci"));
        let spaced = mount_of(MOUNTINFO, Path::new("/mnt/with space/a")).expect("mount");
        assert_eq!(spaced.source, "pool/sp");
    }
}
