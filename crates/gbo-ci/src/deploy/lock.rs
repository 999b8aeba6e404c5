//! One deploy or rollback of a target at a time: a `flock` on `/run/lock/gbo-ci/<hash>.lock` held by a remote root
//! process for as long as the returned handle lives. The kernel releases it when that process ends, which it does
//! when this deploy ends, fails or loses its connection, so a dead deploy never leaves a stale lock. The holder
//! writes who it is into the file, for the next one's message. The lock directory is root's alone, so no name in it
//! is the service user's.

use std::time::{Duration, Instant};

use super::access::Access;
use super::event::DeployEvent;
use crate::error::{Error, Result};
use crate::event::Observer;
use crate::names::RemotePath;
use crate::remote_dir::{self, lock_path};
use crate::ssh::{HeldCommand, Remote};

/// What the lock script says, a line at a time.
enum LockLine<'a> {
    /// The lock is taken.
    Locked,
    /// `flock` is not installed.
    NoFlock,
    /// Another run holds it (its line); this one waits.
    Waiting(&'a str),
    /// Another run still held it when the wait ended (its line).
    Held(&'a str),
    /// Anything else.
    Other,
}

impl<'a> LockLine<'a> {
    fn parse(line: &'a str) -> Self {
        match line {
            "locked" => LockLine::Locked,
            "noflock" => LockLine::NoFlock,
            _ => match (line.strip_prefix("waiting="), line.strip_prefix("held=")) {
                (Some(holder), _) => LockLine::Waiting(holder),
                (_, Some(holder)) => LockLine::Held(holder),
                _ => LockLine::Other,
            },
        }
    }
}

/// Take the target's lock, waiting up to `wait` for another run to end.
pub(super) fn take(
    remote: &Remote,
    access: &Access,
    dest: &RemotePath,
    wait: Duration,
    observer: &mut dyn Observer<DeployEvent>,
) -> Result<HeldCommand> {
    let lock = lock_path(dest);
    let started = Instant::now();
    let mut held = remote.start_held(&access.root(&remote_dir::lock(dest, wait.as_secs())))?;
    loop {
        let Some(line) = held.read_line(wait + Duration::from_secs(30))? else {
            let stderr = held.stderr();
            return Err(remote.refused(format!(
                "cannot take the deploy lock {lock}: {stderr} (root takes it; a non-root SSH user needs `sudo -n`; \
                 nothing was changed)"
            )));
        };
        match LockLine::parse(&line) {
            LockLine::Locked => {
                observer.on_event(&DeployEvent::Locked { lock: lock.clone() });
                return Ok(held);
            }
            LockLine::NoFlock => {
                return Err(remote.refused(format!(
                    "flock (util-linux) is not installed; it keeps two deploys of {dest} apart (nothing was changed)"
                )))
            }
            LockLine::Waiting(holder) => {
                observer.on_event(&DeployEvent::WaitingForLock { lock: lock.clone(), holder: holder.to_string() })
            }
            LockLine::Held(holder) => {
                return Err(Error::Locked {
                    host: remote.label().to_string(),
                    lock,
                    holder: if holder.is_empty() { "another gbo-ci".to_string() } else { holder.to_string() },
                    waited_secs: started.elapsed().as_secs(),
                })
            }
            LockLine::Other => {}
        }
    }
}
