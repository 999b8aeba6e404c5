//! Writers never overlap. `rustic_core` 0.13 neither writes nor honours restic's repository locks (`locks/`), so
//! gbo takes two of its own for every run that changes a repository (`create`, `restore --replace`'s backup,
//! `prune`) and a shared one for runs that only read (`verify`, `restore`):
//!
//! 1. an advisory `flock` on `<repo>/gbo.lock` ([`FLOCK_FILE`]): two gbo runs on one repository take turns (the
//!    kernel drops it when a run dies, even by SIGKILL, so a killed run never leaves it stale);
//! 2. a **restic lock file** in `<repo>/locks/`, encrypted with the repository key exactly as restic writes its own
//!    (JSON `{time, exclusive, hostname, username, pid, uid, gid}`): a backup's lock is non-exclusive (restic's
//!    `backup` also takes a non-exclusive lock), a prune's exclusive. So a real `restic prune` (which wants an
//!    exclusive lock) refuses while gbo writes, and `restic backup` refuses while gbo prunes. The file is
//!    refreshed every [`REFRESH`] (restic counts a lock older than 30 minutes as stale) and removed at the end; a
//!    lock left by a killed gbo names a pid that no longer runs on this host, which restic treats as stale.
//!
//! Before writing its own, gbo reads the locks already in `locks/`: an exclusive lock (a `restic prune` running)
//! refuses any gbo run; for a prune any lock refuses. A lock that is stale by restic's rules (older than 30
//! minutes, or from this host with a pid that is gone) is removed, as `restic unlock` does: restic 0.14 itself
//! refuses an exclusive command while any lock is there, stale or not, so the lock of a gbo killed by SIGKILL is
//! cleared by the next gbo writer.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aes256ctr_poly1305aes::aead::AeadInPlace;
use aes256ctr_poly1305aes::{Aes256CtrPoly1305Aes, Key, Nonce, Tag};
use rustic_core::repofile::MasterKey;
use sha2::Digest;

use super::BackupError;

/// The flock file in a repository's directory.
pub const FLOCK_FILE: &str = "gbo.lock";
/// How often the restic lock file is rewritten.
pub const REFRESH: Duration = Duration::from_secs(5 * 60);
/// restic's age after which a lock is stale.
const STALE: Duration = Duration::from_secs(30 * 60);

/// restic's lock file, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResticLock {
    /// When it was written (RFC 3339).
    pub time: String,
    /// Exclusive (prune) or not (backup).
    pub exclusive: bool,
    /// Host name.
    pub hostname: String,
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Process id.
    pub pid: i64,
    /// uid.
    #[serde(default)]
    pub uid: u32,
    /// gid.
    #[serde(default)]
    pub gid: u32,
}

/// The shared flock a reader takes, or the flock plus the restic lock a writer holds. Released on drop.
#[derive(Debug)]
pub struct RepoLock {
    file: File,
    restic: Option<Refresher>,
}

#[derive(Debug)]
struct Refresher {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        if let Some(mut refresher) = self.restic.take() {
            let _ = refresher.stop.send(());
            if let Some(thread) = refresher.thread.take() {
                let _ = thread.join();
            }
        }
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// How a run uses the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reads only (verify, list, restore): a shared flock, no restic lock.
    Read,
    /// Adds snapshots (create): exclusive flock, non-exclusive restic lock.
    Append,
    /// Removes data (prune): exclusive flock, exclusive restic lock.
    Exclusive,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// The effective uid and gid of this process (the owner of `/proc/self`).
pub(crate) fn ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| (m.uid(), m.gid())).unwrap_or((0, 0))
}

/// Take the flock of the repository at `repo` (its directory must exist), waiting up to `wait`.
pub async fn flock(repo: &Path, mode: Mode, wait: Duration) -> Result<RepoLock, BackupError> {
    let path = repo.join(FLOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&path)
        .map_err(BackupError::io(&path))?;
    let start = Instant::now();
    loop {
        let attempt = if mode == Mode::Read { file.try_lock_shared() } else { file.try_lock() };
        match attempt {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if start.elapsed() >= wait {
                    let mut holder = String::new();
                    let _ = file.rewind();
                    let _ = file.read_to_string(&mut holder);
                    let holder = if holder.trim().is_empty() { "another gbo run".into() } else { holder.trim().into() };
                    return Err(BackupError::Locked {
                        repo: repo.to_path_buf(),
                        holder,
                        waited_secs: start.elapsed().as_secs(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(BackupError::io(&path)(e)),
        }
    }
    if mode != Mode::Read {
        let argv: Vec<String> = std::env::args().take(4).collect();
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "gbo pid {} ({})", std::process::id(), argv.join(" "));
        let _ = file.flush();
    }
    Ok(RepoLock { file, restic: None })
}

impl RepoLock {
    /// With the repository open (its key known), check restic's locks and write ours (writers only).
    /// Returns the stale locks it removed (as `restic unlock` does: older than 30 minutes, or from this host with a
    /// pid that is gone, such as a gbo or restic killed by SIGKILL).
    pub fn add_restic_lock(&mut self, repo: &Path, key: &MasterKey, mode: Mode) -> Result<Vec<PathBuf>, BackupError> {
        if mode == Mode::Read {
            return Ok(Vec::new());
        }
        let cipher = cipher(key);
        let locks = repo.join("locks");
        std::fs::create_dir_all(&locks).map_err(BackupError::io(&locks))?;
        let mut removed = Vec::new();
        for (file, lock) in read_locks(&locks, &cipher)? {
            if lock.as_ref().is_some_and(is_stale) {
                std::fs::remove_file(&file).map_err(BackupError::io(&file))?;
                removed.push(file);
                continue;
            }
            let conflicting = mode == Mode::Exclusive || lock.as_ref().is_none_or(|l| l.exclusive);
            let live = lock.as_ref().is_none_or(|l| !is_stale(l));
            if conflicting && live {
                let detail = match &lock {
                    Some(l) => format!(
                        "{} pid {} on {} since {}",
                        if l.exclusive { "an exclusive lock of" } else { "a lock of" },
                        l.pid,
                        l.hostname,
                        l.time
                    ),
                    None => "a lock gbo cannot read".into(),
                };
                return Err(BackupError::ForeignLock { repo: repo.to_path_buf(), file, detail });
            }
        }
        let exclusive = mode == Mode::Exclusive;
        let first = write_lock(&locks, &cipher, exclusive)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut current = first;
            loop {
                match stopped.recv_timeout(REFRESH) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Ok(next) = write_lock(&locks, &cipher, exclusive) {
                            let _ = std::fs::remove_file(&current);
                            current = next;
                        }
                    }
                    _ => {
                        let _ = std::fs::remove_file(&current);
                        return;
                    }
                }
            }
        });
        self.restic = Some(Refresher { stop, thread: Some(thread) });
        Ok(removed)
    }
}

fn cipher(key: &MasterKey) -> Aes256CtrPoly1305Aes {
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(&key.encrypt);
    bytes.extend_from_slice(&key.mac.k);
    bytes.extend_from_slice(&key.mac.r);
    Aes256CtrPoly1305Aes::new(Key::from_slice(&bytes))
}

/// restic's file encryption: nonce (16 bytes) || AES-256-CTR ciphertext || Poly1305-AES tag (16 bytes).
fn encrypt(cipher: &Aes256CtrPoly1305Aes, plain: &[u8]) -> Vec<u8> {
    use rand::RngCore;
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(plain.len() + 32);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), &[], &mut out[16..])
        .expect("AES-CTR with Poly1305 encrypts any length");
    out.extend_from_slice(&tag);
    out
}

fn decrypt(cipher: &Aes256CtrPoly1305Aes, data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 32 {
        return None;
    }
    let (nonce, rest) = data.split_at(16);
    let (body, tag) = rest.split_at(rest.len() - 16);
    let mut plain = body.to_vec();
    cipher.decrypt_in_place_detached(Nonce::from_slice(nonce), &[], &mut plain, Tag::from_slice(tag)).ok()?;
    // Repository format 2 may compress: a leading 2 is zstd data; JSON starts with `{`.
    match plain.first() {
        Some(2) => zstd::decode_all(&plain[1..]).ok(),
        _ => Some(plain),
    }
}

fn write_lock(dir: &Path, cipher: &Aes256CtrPoly1305Aes, exclusive: bool) -> Result<PathBuf, BackupError> {
    let now = time::OffsetDateTime::now_utc();
    let lock = ResticLock {
        time: now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        exclusive,
        hostname: hostname(),
        username: "root".into(),
        pid: i64::from(std::process::id()),
        uid: ids().0,
        gid: ids().1,
    };
    let json = serde_json::to_vec(&lock).map_err(|e| BackupError::io(dir)(std::io::Error::other(e)))?;
    let data = encrypt(cipher, &json);
    // restic names every file by the SHA-256 of its stored bytes.
    let name = hex::encode(sha2::Sha256::digest(&data));
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(&path)
        .map_err(BackupError::io(&path))?;
    file.write_all(&data).and_then(|()| file.sync_all()).map_err(BackupError::io(&path))?;
    Ok(path)
}

/// The lock files in `dir` with what each says (`None`: not readable with this key).
fn read_locks(dir: &Path, cipher: &Aes256CtrPoly1305Aes) -> Result<Vec<(PathBuf, Option<ResticLock>)>, BackupError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(BackupError::io(dir))? {
        let entry = entry.map_err(BackupError::io(dir))?;
        let path = entry.path();
        let Ok(data) = std::fs::read(&path) else { continue };
        let lock = decrypt(cipher, &data).and_then(|plain| serde_json::from_slice::<ResticLock>(&plain).ok());
        out.push((path, lock));
    }
    Ok(out)
}

/// restic's rule: older than 30 minutes, or written on this host by a process that is gone.
fn is_stale(lock: &ResticLock) -> bool {
    let Ok(time) = time::OffsetDateTime::parse(&lock.time, &time::format_description::well_known::Rfc3339) else {
        return false;
    };
    let age = time::OffsetDateTime::now_utc() - time;
    if age > time::Duration::try_from(STALE).unwrap_or(time::Duration::MAX) {
        return true;
    }
    lock.hostname == hostname() && lock.pid > 0 && !Path::new("/proc").join(lock.pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_files_round_trip_through_restic_encryption() {
        let key = MasterKey::new();
        let c = cipher(&key);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_lock(dir.path(), &c, true).expect("write");
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let data = std::fs::read(&path).expect("read");
        assert_eq!(name, hex::encode(sha2::Sha256::digest(&data)), "named by the hash of its bytes");
        let locks = read_locks(dir.path(), &c).expect("read locks");
        let lock = locks[0].1.clone().expect("decrypts");
        assert!(lock.exclusive && lock.pid == i64::from(std::process::id()));
        assert!(!is_stale(&lock), "our own live lock is not stale");
        let other = cipher(&MasterKey::new());
        assert!(read_locks(dir.path(), &other).expect("read")[0].1.is_none(), "another key cannot read it");
        let old = ResticLock { time: "2001-01-01T00:00:00Z".into(), ..lock };
        assert!(is_stale(&old));
    }
}
