//! The numbered releases beside the target (`<dest>.prev.<N>`): putting one back over the target, pruning those
//! beyond `--keep`, and what remains. Only names are renamed or unlinked; nothing a name points to is touched.

use super::access::{run_root, Access};
use crate::error::Result;
use crate::names::RemotePath;
use crate::remote_dir;
use crate::ssh::Remote;

/// Rename `release` (a path beside the target) back over the target.
pub(super) fn restore(remote: &Remote, access: &Access, dest: &RemotePath, release: &str) -> Result<()> {
    run_root(remote, access, "restore the previous release", &remote_dir::restore(dest, file_name_of(release)))
        .map(|_| ())
}

/// The releases once the current binary is kept as release `number` at `kept` (nothing kept: as they are).
pub(super) fn with_kept(releases: &[(u64, String)], number: u64, kept: Option<&String>) -> Vec<(u64, String)> {
    let mut all = releases.to_vec();
    if let Some(path) = kept {
        all.push((number, path.clone()));
    }
    all
}

/// The releases beyond the newest `keep`, oldest first: what a deploy removes after it succeeds.
pub(super) fn excess(releases: &mut Vec<(u64, String)>, keep: usize) -> Vec<String> {
    releases.sort();
    if releases.len() <= keep {
        return Vec::new();
    }
    releases.drain(..releases.len() - keep).map(|(_, path)| path).collect()
}

/// Unlink the releases beyond `keep`. The deploy has succeeded by then, so a failure is reported beside the
/// result, not as an error.
pub(super) fn prune(
    remote: &Remote,
    access: &Access,
    dest: &RemotePath,
    releases: &mut Vec<(u64, String)>,
    keep: usize,
) -> (Vec<String>, Option<String>) {
    let excess = excess(releases, keep);
    if excess.is_empty() {
        return (Vec::new(), None);
    }
    let names: Vec<String> = excess.iter().map(|path| file_name_of(path).to_string()).collect();
    match run_root(remote, access, "prune old releases", &remote_dir::prune(dest, &names)) {
        Ok(_) => (excess, None),
        Err(error) => (Vec::new(), Some(error.to_string())),
    }
}

/// The releases other than `release`, oldest first.
pub(super) fn remaining(releases: &[(u64, String)], release: &str) -> Vec<String> {
    releases.iter().filter(|(_, path)| path != release).map(|(_, path)| path.clone()).collect()
}

/// The file name of a release path (`/opt/gbo/bin/botserver.prev.3` → `botserver.prev.3`).
pub(super) fn file_name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
