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

/// The name of the lock file in a stack dir.
const LOCK_FILE: &str = ".gbo.lock";

/// The lock of the tenant whose containers record a stack dir (the first recorded), for commands that change a
/// tenant after install (uninstall, snapshots, ...). `None` when no container of the tenant records one: then
/// there is no host data of the tenant to protect.
pub async fn acquire_recorded(
    lxd: &lxd_client::Client,
    tenant: &gbo_components::TenantName,
    wait: Duration,
) -> Result<Option<TenantLock>, InstallError> {
    let dir = crate::inventory::tenant_stack_dir(lxd, tenant)
        .await
        .map_err(InstallError::lxd(format!("finding the stack dir of tenant {tenant}")))?;
    match dir {
        Some(dir) if dir.is_dir() => Ok(Some(acquire(&dir, tenant.as_str(), wait).await?)),
        _ => Ok(None),
    }
}

/// The lock file of a stack dir.
pub fn lock_path(stack_dir: &Path) -> PathBuf {
    stack_dir.join(LOCK_FILE)
}

/// Take the tenant's lock, waiting up to `wait` (polling every 100 ms). Fails naming the holder.
pub async fn acquire(stack_dir: &Path, tenant: &str, wait: Duration) -> Result<TenantLock, InstallError> {
    let path = lock_path(stack_dir);
    let mut file =
        crate::hostfs::HostDir::open_root(stack_dir)?.open_or_create(std::ffi::OsStr::new(LOCK_FILE), 0o600)?;
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
