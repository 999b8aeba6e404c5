//! Moving a container's host data from one idmap base to another, for [`Action::Remap`](super::Action::Remap)
//! (privileged to unprivileged and back) and [`Action::ShiftHostDir`](super::Action::ShiftHostDir).
//!
//! LXD shifts a container's root filesystem itself when its idmap changes, but not the host directories mounted
//! into it: without this, `gbuser`'s files written by a privileged `-system` (host uid 1000) would belong to
//! `nobody` once the container runs unprivileged (base 100000), and botserver could no longer write its data.
//!
//! Only ids in the old base's range of container ids ([`SHIFTED_IDS`]) move; every other owner stays. That makes a
//! shift idempotent (a second run finds nothing in the old range) and lets an interrupted one be completed:
//! each tree's root directory is shifted last, so the next plan still sees it under the old base.
//!
//! The container is stopped while its data moves (the caller's job), so nothing inside can swap a directory for a
//! link during the walk. No symlink is followed (owners of links change with `lchown`) and no other filesystem is
//! entered. A file with more links than the trees hold is refused before anything changes: shifting it would
//! change the owner of a file outside the container's data.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use super::error::InstallError;

/// How many container ids above a base move with it: Debian's users, the fixed service ids and `nobody` (65534).
pub const SHIFTED_IDS: u32 = 65536;

/// The host id of `id` under `to` when it is a container id under `from`; `None` when it is not in that range.
pub fn shifted(id: u32, from: u32, to: u32) -> Option<u32> {
    let offset = id.checked_sub(from)?;
    (offset < SHIFTED_IDS).then(|| to.saturating_add(offset))
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> InstallError {
    InstallError::io(context)
}

/// Shift the owners of everything under `roots` (each root included, last) from idmap base `from` to `to`.
/// Returns how many entries changed owner.
pub fn shift_trees(roots: &[PathBuf], from: u32, to: u32) -> Result<usize, InstallError> {
    if from == to {
        return Ok(0);
    }
    // Pass 1: every entry, in discovery order (a directory before what it holds).
    let mut entries: Vec<(PathBuf, std::fs::Metadata)> = Vec::new();
    let mut tops: Vec<(PathBuf, std::fs::Metadata)> = Vec::new();
    for root in roots {
        let meta = match std::fs::symlink_metadata(root) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(format!("reading {}", root.display()))(e)),
        };
        if !meta.file_type().is_dir() {
            return Err(InstallError::BadInput(format!(
                "{} is not a directory (a symlink?): refusing to shift owners through it",
                root.display()
            )));
        }
        let device = meta.dev();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let listing = std::fs::read_dir(&dir).map_err(io(format!("listing {}", dir.display())))?;
            for entry in listing {
                let path = entry.map_err(io(format!("listing {}", dir.display())))?.path();
                let meta = std::fs::symlink_metadata(&path).map_err(io(format!("reading {}", path.display())))?;
                if meta.dev() != device {
                    // Another filesystem mounted inside: not the container's data.
                    continue;
                }
                if meta.file_type().is_dir() {
                    stack.push(path.clone());
                }
                entries.push((path, meta));
            }
        }
        tops.push((root.clone(), meta));
    }
    // Every link of a multiply-linked file must be among the entries.
    let mut links: BTreeMap<(u64, u64), (u64, u64, PathBuf)> = BTreeMap::new();
    for (path, meta) in &entries {
        if !meta.file_type().is_dir() && meta.nlink() > 1 {
            let seen = links.entry((meta.dev(), meta.ino())).or_insert((0, meta.nlink(), path.clone()));
            seen.0 += 1;
        }
    }
    if let Some((_, (seen, total, path))) = links.iter().find(|(_, (seen, total, _))| seen < total) {
        return Err(InstallError::BadInput(format!(
            "{} has {total} hard links and only {seen} of them are in the container's data: refusing to change the owner of a file outside it (remove the extra links, then install again)",
            path.display()
        )));
    }
    // Pass 2: deepest entries first, each tree's root last.
    let mut changed = 0;
    for (path, meta) in entries.iter().rev().chain(tops.iter()) {
        let (uid, gid) = (meta.uid(), meta.gid());
        let new_uid = shifted(uid, from, to).unwrap_or(uid);
        let new_gid = shifted(gid, from, to).unwrap_or(gid);
        if (new_uid, new_gid) == (uid, gid) {
            continue;
        }
        std::os::unix::fs::lchown(path, Some(new_uid), Some(new_gid))
            .map_err(io(format!("changing the owner of {}", path.display())))?;
        // chown clears set-user-ID and set-group-ID on regular files: the container set them, so they stay.
        let mode = meta.mode() & 0o7777;
        if meta.file_type().is_file() && mode & 0o6000 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(io(format!("restoring the mode of {}", path.display())))?;
        }
        changed += 1;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{chown, lchown, symlink};
    use std::path::Path;

    fn owner(path: &Path) -> (u32, u32) {
        let m = std::fs::symlink_metadata(path).expect("metadata");
        (m.uid(), m.gid())
    }

    #[test]
    fn ids_move_only_within_the_old_range() {
        assert_eq!(shifted(1000, 0, 100_000), Some(101_000));
        assert_eq!(shifted(101_000, 100_000, 0), Some(1000));
        assert_eq!(shifted(101_000, 0, 100_000), None, "already under the new base");
        assert_eq!(shifted(99, 100_000, 0), None);
    }

    /// Needs root (chown to other users), which the test machine is.
    #[test]
    fn a_tree_moves_to_the_new_base_links_untouched_and_twice_is_a_no_op() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(data.join("sub")).expect("mkdir");
        std::fs::write(data.join("sub/file"), b"x").expect("write");
        std::fs::write(&outside, b"host").expect("write");
        symlink(&outside, data.join("link")).expect("symlink");
        for p in [&data, &data.join("sub"), &data.join("sub/file")] {
            chown(p, Some(1000), Some(1000)).expect("chown");
        }
        lchown(data.join("link"), Some(1000), Some(1000)).expect("lchown");
        std::fs::set_permissions(data.join("sub/file"), std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        let before_outside = owner(&outside);

        let changed = shift_trees(std::slice::from_ref(&data), 0, 100_000).expect("shift");
        assert_eq!(changed, 4);
        for p in [&data, &data.join("sub"), &data.join("sub/file"), &data.join("link")] {
            assert_eq!(owner(p), (101_000, 101_000), "{}", p.display());
        }
        assert_eq!(owner(&outside), before_outside, "the link's target is not followed");
        let mode = std::fs::metadata(data.join("sub/file")).expect("meta").mode() & 0o7777;
        assert_eq!(mode, 0o4755, "set-user-ID kept");
        assert_eq!(shift_trees(std::slice::from_ref(&data), 0, 100_000).expect("again"), 0);
        // And back.
        assert_eq!(shift_trees(std::slice::from_ref(&data), 100_000, 0).expect("back"), 4);
        assert_eq!(owner(&data.join("sub/file")), (1000, 1000));
    }

    #[test]
    fn a_hard_link_to_a_file_outside_is_refused_before_anything_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("mkdir");
        let outside = dir.path().join("shadow");
        std::fs::write(&outside, b"secret").expect("write");
        chown(&outside, Some(0), Some(0)).expect("chown");
        std::fs::hard_link(&outside, data.join("planted")).expect("link");
        chown(&data, Some(1000), Some(1000)).expect("chown");
        let err = shift_trees(std::slice::from_ref(&data), 0, 100_000).expect_err("refused");
        assert!(err.to_string().contains("planted") && err.to_string().contains("hard links"), "{err}");
        assert_eq!(owner(&outside), (0, 0));
        assert_eq!(owner(&data), (1000, 1000), "nothing changed");
        // Both links inside the trees: shifted.
        std::fs::remove_file(data.join("planted")).expect("rm");
        std::fs::write(data.join("a"), b"a").expect("write");
        std::fs::hard_link(data.join("a"), data.join("b")).expect("link");
        chown(data.join("a"), Some(1000), Some(1000)).expect("chown");
        shift_trees(std::slice::from_ref(&data), 0, 100_000).expect("shift");
        assert_eq!(owner(&data.join("b")), (101_000, 101_000));
    }

    #[test]
    fn a_symlinked_root_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        symlink(&real, dir.path().join("data")).expect("symlink");
        let err = shift_trees(&[dir.path().join("data")], 0, 100_000).expect_err("refused");
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
