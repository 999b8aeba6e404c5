//! Root's steps in the destination directory, which belongs to the service user.
//!
//! On the seed's hosts `/opt/gbo`, `/opt/gbo/bin` and `/opt/gbo/logs` belong to `gbuser`, who can rename anything
//! in them and plant symbolic links, FIFOs and (where `fs.protected_hardlinks` is off) hard links to files it does
//! not own. The deploy's steps run as root there. The scripts built here keep those steps from being turned against
//! root, whatever the service user puts at whatever name, and whenever:
//!
//! - **One working directory, entered once.** Each script enters the destination directory with `cd -P` and checks
//!   that it is the path given (`pwd -P`): a directory reached through a symbolic link is refused. From then on
//!   every name is relative to that working directory, which is the directory itself (the inode), not its path: a
//!   rename of it or of a parent afterwards cannot redirect a later step.
//! - **Nothing by a name the service user controls is opened, created, chowned or chmodded.** The upload goes into
//!   a staging directory root makes for each deploy (`.<name>.gbo-ci-stage.<random>`, `mkdir -m 0700`, which never
//!   follows a link), checked again once entered (root's, mode 0700, its parent the destination directory), and is
//!   given its owner, mode and time there, where the service user cannot reach it. The staging directory is inside
//!   the destination directory because that is the one place certain to be on the same filesystem (so the final
//!   rename is atomic and nothing is copied): `<dir>/..` belongs to the service user too on the seed's layout, a
//!   mount point above it may (an LXD disk device keeps the container's owners), and `/tmp` or `/run` may be
//!   another filesystem.
//! - **Only operations on names, never through them.** The upload is renamed over the target (`mv -T`, rename(2):
//!   it replaces whatever is at the name and never follows a link there); the current binary is kept as a release
//!   by a hard link (`ln -P`, which fails when the release name exists, whatever it is); releases are put back by
//!   rename and pruned by unlink. A target that is not a regular file, or a release name that already exists, is
//!   refused naming it.
//! - **Reads do not follow links** (`dd iflag=nofollow,nonblock`); the log is opened by the service user itself
//!   (see the start script in `deploy`), never by root.
//! - **The lock is not there at all**: it lives in `/run/lock/gbo-ci/` (a root-only directory), named by a hash of
//!   the destination path.
//!
//! A refusal exits with status 3 and one line on stderr naming the path and saying what to do.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::names::RemotePath;
use crate::ssh::sh_quote;

/// The exit status of a script that refuses; its stderr names the path and says why.
pub(crate) const REFUSED: i32 = 3;

/// The root-only directory on the remote that holds the deploy locks.
pub const LOCK_DIR: &str = "/run/lock/gbo-ci";

/// The lock file of a target: `/run/lock/gbo-ci/<hash of the destination path>.lock`.
pub fn lock_path(dest: &RemotePath) -> String {
    format!("{LOCK_DIR}/{}", lock_file_name(dest))
}

fn lock_file_name(dest: &RemotePath) -> String {
    format!("{}.lock", &hex::encode(Sha256::digest(dest.as_str().as_bytes()))[..32])
}

/// A fresh staging directory name for one deploy of `dest` (relative to its directory).
pub(crate) fn stage_name(dest: &RemotePath) -> String {
    format!(".{}.gbo-ci-stage.{:016x}", dest.file_name(), rand::rngs::OsRng.next_u64())
}

/// The file name of release `number` of `dest` (relative to its directory).
pub(crate) fn release_name(dest: &RemotePath, number: u64) -> String {
    format!("{}.prev.{number}", dest.file_name())
}

/// Enter the destination directory and check it; define `refuse` and `enter_stage`.
fn prologue(dest: &RemotePath) -> String {
    format!(
        r#"refuse() {{ printf '%s\n' "$*" >&2; exit {REFUSED}; }}
dir={dir}; name={name}
cd -P -- "$dir" 2>/dev/null || refuse "cannot enter the destination directory $dir"
real=$(pwd -P)
[ "$real" = "$dir" ] || refuse "the destination directory $dir is reached through a symbolic link (it resolves to $real); gbo-ci acts only in a directory's real path: pass that, or remove the link"
dirid=$(stat -c %d:%i -- .)
enter_stage() {{
  [ "$(stat -c %u:%a:%F -- "$1" 2>/dev/null)" = 0:700:directory ] || refuse "$dir/$1 is not the root-only staging directory gbo-ci made (root's, mode 0700): it was replaced"
  cd -P -- "$1" 2>/dev/null || refuse "cannot enter the staging directory $dir/$1"
  {{ [ "$(stat -c %u:%a -- .)" = 0:700 ] && [ "$(stat -c %d:%i -- ..)" = "$dirid" ]; }} || refuse "$dir/$1 was replaced while gbo-ci entered it"
}}
"#,
        dir = sh_quote(dest.parent()),
        name = sh_quote(dest.file_name()),
    )
}

/// Make this deploy's staging directory (removing stale ones of killed deploys of the same target first).
pub(crate) fn prepare_stage(dest: &RemotePath, stage: &str) -> String {
    format!(
        r#"{prologue}stage={stage}
umask 077
for old in ."$name".gbo-ci-stage.*; do
  [ "$old" = "$stage" ] && continue
  [ "$(stat -c %u:%a:%F -- "$old" 2>/dev/null)" = 0:700:directory ] || continue
  (enter_stage "$old" && rm -f -- upload) 2>/dev/null && rmdir -- "$old" 2>/dev/null
done
mkdir -m 0700 -- "$stage" 2>/dev/null || refuse "cannot create the staging directory $dir/$stage"
enter_stage "$stage"
echo staged
"#,
        prologue = prologue(dest),
        stage = sh_quote(stage),
    )
}

/// Stream stdin into the staging directory's `upload` and sync it.
pub(crate) fn upload(dest: &RemotePath, stage: &str) -> String {
    format!(
        "{prologue}enter_stage {stage}\nset -C\numask 077\ncat > upload && sync -- upload\n",
        prologue = prologue(dest),
        stage = sh_quote(stage),
    )
}

/// The path the upload has on the remote (for messages and the observer).
pub(crate) fn upload_path(dest: &RemotePath, stage: &str) -> String {
    let parent = dest.parent().trim_end_matches('/');
    format!("{parent}/{stage}/upload")
}

/// Verify the upload's SHA-256, give it its owner, mode and time (in the staging directory), keep the current
/// binary as `release` (a hard link), rename the upload over the target. Prints `mismatch=<sha>` (nothing changed,
/// upload removed), or `kept=<release>` when the current binary was kept, then `swapped`.
pub(crate) fn swap(
    dest: &RemotePath,
    stage: &str,
    sha256: &str,
    owner: &str,
    mtime: u64,
    release: Option<&str>,
) -> String {
    let keep = match release {
        None => String::new(),
        Some(release) => format!(
            r#"if [ -e "../$name" ] || [ -L "../$name" ]; then
  {{ [ -f "../$name" ] && [ ! -L "../$name" ]; }} || refuse "$dir/$name is not a regular file (a symbolic link or something else was put there); gbo-ci replaces only a regular file: remove it (nothing was changed)"
  release={release}
  {{ [ -e "../$release" ] || [ -L "../$release" ]; }} && refuse "$dir/$release already exists (it appeared during the deploy); gbo-ci never writes over or through it: remove it (nothing was changed)"
  err=$(ln -P -- "../$name" "../$release" 2>&1) || refuse "cannot keep the current binary as $dir/$release: $err (nothing was changed)"
  echo "kept=$release"
fi
"#,
            release = sh_quote(release),
        ),
    };
    format!(
        r#"{prologue}stage={stage}
enter_stage "$stage"
refuse() {{ rm -f -- upload; cd .. && rmdir -- "$stage" 2>/dev/null; printf '%s\n' "$*" >&2; exit {REFUSED}; }}
actual=$(sha256sum < upload | cut -d ' ' -f 1)
if [ "$actual" != {sha256} ]; then rm -f -- upload; cd .. && rmdir -- "$stage"; echo "mismatch=$actual"; exit 0; fi
{{ chown -- {owner}: upload && chmod 0755 upload && touch -m -d @{mtime} upload; }} || refuse "cannot give the upload its owner {owner}, mode 0755 and time (nothing was changed)"
{keep}mv -fT -- upload "../$name" || refuse "cannot rename the upload over $dir/$name (nothing was changed)"
cd .. && rmdir -- "$stage"
sync -f . 2>/dev/null || sync
echo swapped
"#,
        prologue = prologue(dest),
        stage = sh_quote(stage),
        sha256 = sh_quote(sha256),
        owner = sh_quote(owner),
    )
}

/// Remove this deploy's staging directory and its upload (after a failure); never fails.
pub(crate) fn discard_stage(dest: &RemotePath, stage: &str) -> String {
    format!(
        "{prologue}stage={stage}\n(enter_stage \"$stage\" && rm -f -- upload) 2>/dev/null && rmdir -- \"$stage\" 2>/dev/null\ntrue\n",
        prologue = prologue(dest),
        stage = sh_quote(stage),
    )
}

/// Rename release `release` (a file name in the destination directory) back over the target.
pub(crate) fn restore(dest: &RemotePath, release: &str) -> String {
    format!(
        r#"{prologue}release={release}
{{ [ -f "$release" ] && [ ! -L "$release" ]; }} || refuse "$dir/$release is not a regular file (a symbolic link or something else was put there); gbo-ci restores only a regular file: remove it"
mv -fT -- "$release" "$name" || exit 4
sync -f . 2>/dev/null || sync
echo restored
"#,
        prologue = prologue(dest),
        release = sh_quote(release),
    )
}

/// Unlink releases (file names in the destination directory): the names go, nothing they point to is touched.
pub(crate) fn prune(dest: &RemotePath, releases: &[String]) -> String {
    let names: Vec<String> = releases.iter().map(|name| sh_quote(name)).collect();
    format!(
        "{prologue}for release in {names}; do rm -f -- \"$release\" || exit 4; done\necho pruned\n",
        prologue = prologue(dest),
        names = names.join(" "),
    )
}

/// SHA-256 and modification time of `file` (a file name in the destination directory), read without following a
/// link: prints `sha=` and `mtime=` lines, nothing when it is not a regular file.
pub(crate) fn digest(dest: &RemotePath, file: &str) -> String {
    format!(
        r#"{prologue}f={file}
if [ -f "$f" ] && [ ! -L "$f" ]; then
  printf 'sha=%s\n' "$(dd if="$f" iflag=nofollow,nonblock bs=256k status=none | sha256sum | cut -d ' ' -f 1)"
  printf 'mtime=%s\n' "$(stat -c %Y -- "$f")"
fi
true
"#,
        prologue = prologue(dest),
        file = sh_quote(file),
    )
}

/// Take `dest`'s lock in the root-only lock directory and hold it until stdin ends: prints `locked`, or `waiting=`
/// and then `held=` with the holder's line, or `noflock`.
pub(crate) fn lock(dest: &RemotePath, wait_secs: u64) -> String {
    format!(
        r#"refuse() {{ printf '%s\n' "$*" >&2; exit {REFUSED}; }}
locks={locks}
mkdir -m 0700 -- "$locks" 2>/dev/null
cd -P -- "$locks" 2>/dev/null || refuse "cannot enter $locks, where gbo-ci keeps its deploy locks (/run/lock must exist)"
{{ [ "$(pwd -P)" = "$locks" ] && [ "$(stat -c %u:%a -- .)" = 0:700 ]; }} || refuse "$locks is not a root-only directory (it is $(stat -c %U:%a -- .)); gbo-ci keeps its deploy locks there: remove it"
lock={lock}; target={dest}
command -v flock >/dev/null 2>&1 || {{ echo noflock; exit 0; }}
exec 9>>"$lock" || exit {REFUSED}
holder() {{ head -c 300 -- "$lock" | tr -d '\n'; }}
if ! flock -n 9; then
  echo "waiting=$(holder)"
  if [ {wait_secs} -eq 0 ] || ! flock -w {wait_secs} 9; then echo "held=$(holder)"; exit 0; fi
fi
: > "$lock"
echo "pid $$, $(id -un) from ${{SSH_CLIENT%% *}}, since $(date -u +%Y-%m-%dT%H:%M:%SZ), for $target" >&9
echo locked
exec cat >/dev/null
"#,
        locks = sh_quote(LOCK_DIR),
        lock = sh_quote(&lock_file_name(dest)),
        dest = sh_quote(dest.as_str()),
    )
}

/// As the owner (through `as_owner`, a command prefix): can the start by hand enter `cwd` and append to `log`?
/// Prints `ok`, or what is wrong: `cwd`, `notfile`, `notwritable`, `dirnotwritable`.
pub(crate) fn owner_check(as_owner: &str, cwd: &str, log: &str) -> String {
    let inner = r#"cd -- "$1" 2>/dev/null || { echo cwd; exit 0; }
if [ -e "$2" ] || [ -L "$2" ]; then
  [ -f "$2" ] || { echo notfile; exit 0; }
  [ -w "$2" ] || { echo notwritable; exit 0; }
else
  d=${2%/*}
  [ -w "${d:-/}" ] || { echo dirnotwritable; exit 0; }
fi
echo ok"#;
    format!("{as_owner}sh -c {} sh {} {}\n", sh_quote(inner), sh_quote(cwd), sh_quote(log))
}

/// The size past which the deploy log is cut when a deploy starts the new binary.
pub const LOG_CAP_BYTES: u64 = 16 * 1024 * 1024;
/// What a cut keeps: the log's last bytes.
pub const LOG_KEEP_BYTES: u64 = 4 * 1024 * 1024;

/// Start `command` (already quoted words) detached as the owner: the owner's own shell enters `cwd`, caps `log`
/// (a regular file past [`LOG_CAP_BYTES`] keeps its last [`LOG_KEEP_BYTES`], moved to its start in place, so the
/// log never needs a second file or a writable directory), opens it for appending (so root never opens the log),
/// reports `started` on a private pipe and execs the binary. Exits 4 with the owner's error when that fails.
pub(crate) fn start(as_owner: &str, cwd: &str, log: &str, command: &str) -> String {
    let inner = format!(
        r#"cd -- "$1" || exit 1
if [ -f "$2" ] && [ ! -L "$2" ]; then
  size=$(wc -c 2>/dev/null <"$2") || size=0
  if [ "${{size:-0}}" -gt {cap} ]; then
    dd if="$2" of="$2" bs=65536 iflag=skip_bytes skip=$((size - {keep})) conv=notrunc status=none 2>/dev/null &&
      truncate -s {keep} -- "$2" 2>/dev/null
  fi
fi
exec >>"$2" || exit 1
shift 2
printf 'started\n' >&3
exec 2>&1 3>&- "$@""#,
        cap = LOG_CAP_BYTES,
        keep = LOG_KEEP_BYTES
    );
    format!(
        r#"first=$( {{ setsid -f {as_owner}sh -c {inner} sh {cwd} {log} {command} 3>&1 2>&1 >/dev/null </dev/null; }} | head -n 1 )
[ "$first" = started ] || {{ printf 'the start as the owner failed: %s\n' "${{first:-no output}}" >&2; exit 4; }}
"#,
        inner = sh_quote(&inner),
        cwd = sh_quote(cwd),
        log = sh_quote(log),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_are_named_by_a_hash_of_the_destination() {
        let a: RemotePath = "/opt/gbo/bin/botserver".parse().expect("parse");
        let b: RemotePath = "/opt/gbo/bin/botui".parse().expect("parse");
        assert!(lock_path(&a).starts_with("/run/lock/gbo-ci/") && lock_path(&a).ends_with(".lock"));
        assert_eq!(lock_path(&a), lock_path(&a));
        assert_ne!(lock_path(&a), lock_path(&b));
        assert_eq!(lock_file_name(&a).len(), 32 + ".lock".len());
    }

    #[test]
    fn stage_and_release_names_are_relative_and_fresh() {
        let dest: RemotePath = "/opt/gbo/bin/botserver".parse().expect("parse");
        let one = stage_name(&dest);
        assert!(one.starts_with(".botserver.gbo-ci-stage.") && !one.contains('/'), "{one}");
        assert_ne!(one, stage_name(&dest));
        assert_eq!(release_name(&dest, 7), "botserver.prev.7");
        assert_eq!(upload_path(&dest, &one), format!("/opt/gbo/bin/{one}/upload"));
        let top: RemotePath = "/botserver".parse().expect("parse");
        assert_eq!(upload_path(&top, "s"), "/s/upload");
    }

    #[test]
    fn paths_are_quoted_in_every_script() {
        let dest: RemotePath = "/srv/it's $(here)/bot server".parse().expect("parse");
        for script in [
            prepare_stage(&dest, "stage"),
            swap(&dest, "stage", "abc", "gbuser", 1, Some("bot server.prev.1")),
            restore(&dest, "bot server.prev.1"),
            prune(&dest, &["bot server.prev.1".to_string()]),
            digest(&dest, "bot server"),
        ] {
            assert!(script.contains(r#"dir='/srv/it'\''s $(here)'"#), "{script}");
            assert!(script.contains(r#"name='bot server'"#), "{script}");
        }
    }
}
