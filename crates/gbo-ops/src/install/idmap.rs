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
//! link during the walk. No symlink is followed (the walk and the chowns go through `hostfs`: a link's own owner
//! changes, never its target's) and no other filesystem is
//! entered. A file with more links than the trees hold is refused before anything changes: shifting it would
//! change the owner of a file outside the container's data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::InstallError;
use crate::hostfs::{Entry, HostDir, Kind, Owner};

/// How many container ids above a base move with it: Debian's users, the fixed service ids and `nobody` (65534).
pub const SHIFTED_IDS: u32 = 65536;

/// The host id of `id` under `to` when it is a container id under `from`; `None` when it is not in that range.
pub fn shifted(id: u32, from: u32, to: u32) -> Option<u32> {
    let offset = id.checked_sub(from)?;
    (offset < SHIFTED_IDS).then(|| to.saturating_add(offset))
}

/// Shift the owners of everything under `roots` (each root included, last) from idmap base `from` to `to`, through
/// `hostfs` (no link followed, no other filesystem entered). Returns how many entries changed owner.
pub fn shift_trees(roots: &[PathBuf], from: u32, to: u32) -> Result<usize, InstallError> {
    if from == to {
        return Ok(0);
    }
    let mut opened = Vec::new();
    for root in roots {
        let Some(parent) = root.parent() else { continue };
        let Some(name) = root.file_name() else { continue };
        let Some(parent) = HostDir::open_root_if_exists(parent)? else { continue };
        match parent.stat(Path::new(name))? {
            None => continue,
            Some(entry) if entry.kind != Kind::Dir => {
                return Err(InstallError::BadInput(format!(
                    "{} is not a directory (a symlink?): refusing to shift owners through it",
                    root.display()
                )));
            }
            Some(_) => {}
        }
        let dir = parent.open_dir(Path::new(name))?.ok_or_else(|| {
            InstallError::BadInput(format!("{} disappeared while its owners were shifted", root.display()))
        })?;
        opened.push(dir);
    }
    // Pass 1: every link of a multiply-linked file must be among the entries.
    let mut links: BTreeMap<(u64, u64), (u64, u64, PathBuf)> = BTreeMap::new();
    for dir in &opened {
        dir.walk(&mut |parent, name, entry| {
            if entry.kind != Kind::Dir && entry.nlink > 1 {
                let seen = links.entry((entry.dev, entry.ino)).or_insert((0, entry.nlink, parent.path().join(name)));
                seen.0 += 1;
            }
            Ok(())
        })?;
    }
    if let Some((_, (seen, total, path))) = links.iter().find(|(_, (seen, total, _))| seen < total) {
        return Err(InstallError::BadInput(format!(
            "{} has {total} hard links and only {seen} of them are in the container's data: refusing to change the owner of a file outside it (remove the extra links, then install again)",
            path.display()
        )));
    }
    // Pass 2: deepest entries first (the walk visits a directory after what it holds), each tree's root last.
    let new_owner = |entry: &Entry| {
        let uid = shifted(entry.uid, from, to).unwrap_or(entry.uid);
        let gid = shifted(entry.gid, from, to).unwrap_or(entry.gid);
        ((uid, gid) != (entry.uid, entry.gid)).then(|| Owner::new(uid, gid))
    };
    let mut changed = 0;
    for dir in &opened {
        dir.walk(&mut |parent, name, entry| {
            if let Some(owner) = new_owner(entry) {
                parent.chown_child(name, owner)?;
                changed += 1;
            }
            Ok(())
        })?;
        if let Some(owner) = new_owner(&dir.entry()?) {
            dir.chown(owner)?;
            changed += 1;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{chown, lchown, symlink, MetadataExt, PermissionsExt};

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
