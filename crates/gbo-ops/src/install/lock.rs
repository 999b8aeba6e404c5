//! One lock per tenant: an advisory `flock` on `<stack-dir>/.gbo.lock`, holding the holder's pid and command.
//! The kernel drops it when the process dies (even by SIGKILL), so a killed run never leaves a stale lock.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::InstallError;

/// A held tenant lock; released on drop.
#[derive(Debug)]
pub struct TenantLock {
    file: File,
    path: PathBuf,
}

impl TenantLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TenantLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// The lock file of a stack dir.
pub fn lock_path(stack_dir: &Path) -> PathBuf {
    stack_dir.join(".gbo.lock")
}

/// Take the tenant's lock, waiting up to `wait` (polling every 100 ms). Fails naming the holder.
pub async fn acquire(stack_dir: &Path, tenant: &str, wait: Duration) -> Result<TenantLock, InstallError> {
    let path = lock_path(stack_dir);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(InstallError::io(format!("opening lock file {}", path.display())))?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if start.elapsed() >= wait {
                    let mut holder = String::new();
                    let _ = file.rewind();
                    let _ = file.read_to_string(&mut holder);
                    let holder = if holder.trim().is_empty() {
                        "another gbo process".to_string()
                    } else {
                        holder.trim().to_string()
                    };
                    return Err(InstallError::Locked {
                        tenant: tenant.to_string(),
                        holder,
                        path,
                        waited_secs: start.elapsed().as_secs(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(InstallError::io(format!("locking {}", path.display()))(e))
            }
        }
    }
    let argv: Vec<String> = std::env::args().collect();
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "pid {} ({})", std::process::id(), argv.join(" "));
    let _ = file.flush();
    Ok(TenantLock { file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_lock_fails_naming_the_holder_and_drop_releases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = acquire(dir.path(), "acme", Duration::ZERO).await.expect("first");
        let err = acquire(dir.path(), "acme", Duration::from_millis(250)).await.expect_err("second must fail");
        let text = err.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains("tenant acme is locked"), "{text}");
        drop(first);
        acquire(dir.path(), "acme", Duration::ZERO).await.expect("free again");
    }
}
