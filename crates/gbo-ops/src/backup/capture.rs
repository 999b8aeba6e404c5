//! Consistency per role, and the freeze that always thaws.
//!
//! - **tables** (PostgreSQL): `CHECKPOINT` (run inside the container as the `postgres` user), then the container is
//!   frozen while its directories are read. The copy is what a power cut at that instant would leave: PostgreSQL's
//!   own crash recovery replays the WAL (in the data directory, read in the same frozen instant) on the restored
//!   cluster, and the checkpoint keeps the WAL to replay short.
//! - **cache** (Redis/Valkey): `BGSAVE` (on the port inside the container, through an exec relay, never the
//!   published port on this host; authenticated with the tenant's secret read from `.secrets`), waited for until
//!   `INFO persistence` shows it finished (a save that did not end `ok` fails the backup), then frozen: the dump
//!   file is a complete snapshot of the data set, and the append-only file (when any) is read in the same frozen
//!   instant.
//! - **every other role**: frozen while read (a crash-consistent copy of its files).
//!
//! A container that is not running is read as it is (nothing changes it). A freeze is undone by [`thaw`] after
//! the read whether it succeeded or failed; a gbo killed while a container is frozen leaves it frozen, and the
//! next `gbo backup create` thaws it first (it says so).

use std::path::Path;
use std::time::Duration;

use lxd_client::{Client, ExecRequest, InstanceName, InstanceStatus, StateAction, StateChange};

use super::BackupError;
use crate::install::health::{redis_exchange, Inside, Via};
use crate::inventory::ManagedInstance;

/// How a role is made consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `CHECKPOINT`, then frozen.
    PostgresCheckpoint,
    /// `BGSAVE` waited for, then frozen.
    RedisBgsave,
    /// Frozen.
    Freeze,
    /// Not running: read as it is.
    Stopped,
}

impl Method {
    /// For messages and the tenant description.
    pub fn describe(self) -> &'static str {
        match self {
            Method::PostgresCheckpoint => {
                "PostgreSQL CHECKPOINT, then the container frozen while read (crash-consistent, WAL included)"
            }
            Method::RedisBgsave => "BGSAVE completed, then the container frozen while read",
            Method::Freeze => "the container frozen while read",
            Method::Stopped => "the container was stopped: read as it was",
        }
    }
}

/// The method for a container.
pub fn method_for(instance: &ManagedInstance) -> Method {
    if instance.instance.status != InstanceStatus::Running && instance.instance.status != InstanceStatus::Frozen {
        return Method::Stopped;
    }
    match instance.role_label().as_str() {
        "tables" => Method::PostgresCheckpoint,
        "cache" => Method::RedisBgsave,
        _ => Method::Freeze,
    }
}

fn name_of(instance: &ManagedInstance) -> Result<InstanceName, BackupError> {
    InstanceName::new(instance.name.as_str()).map_err(|e| BackupError::BadInput(e.to_string()))
}

/// Thaw a container left frozen (a killed run). Returns whether it was frozen.
pub async fn thaw_if_frozen(lxd: &Client, instance: &ManagedInstance) -> Result<bool, BackupError> {
    let name = name_of(instance)?;
    if lxd.instance(&name).await?.status == InstanceStatus::Frozen {
        lxd.set_state(&name, &StateChange::new(StateAction::Unfreeze)).await?;
        return Ok(true);
    }
    Ok(false)
}

/// Do what `method` needs before the freeze (checkpoint, bgsave).
pub async fn prepare(
    lxd: &Client,
    instance: &ManagedInstance,
    method: Method,
    stack_dir: Option<&Path>,
) -> Result<(), BackupError> {
    let fail = |detail: String| BackupError::Quiesce { container: instance.name.to_string(), detail };
    match method {
        Method::PostgresCheckpoint => {
            let request = ExecRequest::new(["runuser", "-u", "postgres", "--", "psql", "-XqAt", "-c", "CHECKPOINT"])
                .timeout(Duration::from_secs(300));
            let out = lxd.exec_output(&name_of(instance)?, &request).await?;
            if !out.success() {
                // Only the exit code is used: the container's output is never trusted beyond a message.
                return Err(fail(format!("CHECKPOINT failed (exit {})", out.exit_code)));
            }
            Ok(())
        }
        Method::RedisBgsave => {
            let cache_password = gbo_components::secrets::CACHE_PASSWORD;
            let secrets = match stack_dir {
                Some(dir) => crate::install::secrets::read_existing(dir, &[cache_password])?,
                None => gbo_components::Secrets::new(),
            };
            let password = secrets
                .get(cache_password.name)
                .ok_or_else(|| fail("no cache-password in the stack dir's .secrets".into()))?;
            // Inside the container, never through the published port: whatever holds that port on this host is
            // not trusted with the password, and through a remote the container is on another machine.
            let port = gbo_components::catalogue::ports(gbo_components::Role::Cache)
                .into_iter()
                .find(|p| p.name == "redis")
                .map_or(6379, |p| p.container_port);
            let via = Via::Inside(Inside { lxd: lxd.clone(), instance: name_of(instance)?, port });
            redis_bgsave(&via, password, BGSAVE_TIMEOUT).await.map_err(fail)
        }
        Method::Freeze | Method::Stopped => Ok(()),
    }
}

/// How long a `BGSAVE` may take.
const BGSAVE_TIMEOUT: Duration = Duration::from_secs(600);

/// `BGSAVE` on the Redis server at `via` (authenticated with `password`), waited for until it has finished,
/// at most `within`. The error is a message for [`BackupError::Quiesce`].
///
/// Finished is read from `INFO persistence`: `rdb_bgsave_in_progress` is 1 from the moment `BGSAVE` answers until
/// the server has collected the child, and then `rdb_last_bgsave_status` says how it ended. (`LASTSAVE` counts
/// whole seconds: a save within the same second as the one before it does not move it.) A save or append-only
/// rewrite already running (one of the server's own rules) is waited for, then ours is started.
pub async fn redis_bgsave(via: &Via, password: &str, within: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    let late = || format!("BGSAVE did not finish within {} s", within.as_secs());
    let ask = |command: &'static [&'static str]| async move {
        let auth: [&str; 2] = ["AUTH", password];
        let commands: [&[&str]; 2] = [&auth, command];
        let replies = match tokio::time::timeout_at(deadline, redis_exchange(via, &commands)).await {
            Err(_) => return Err(late()),
            Ok(Err(e)) => return Err(format!("talking to the cache at {via}: {e}")),
            Ok(Ok(replies)) => replies,
        };
        if !replies.first().is_some_and(|l| l.starts_with("+OK")) {
            return Err("AUTH refused with the tenant's cache-password".to_string());
        }
        Ok(replies.get(1).cloned().unwrap_or_default())
    };
    // A field's value, cut to a short word: the server's answer is never trusted beyond a message.
    let info = |reply: &str, field: &str| -> Option<String> {
        reply.lines().find_map(|l| {
            let value = l.strip_prefix(field)?.strip_prefix(':')?;
            Some(value.chars().filter(char::is_ascii_alphanumeric).take(40).collect())
        })
    };
    let mut ours = false;
    loop {
        if !ours {
            let answer = ask(&["BGSAVE"]).await?;
            if answer.starts_with('+') {
                ours = true;
            } else if !answer.contains("in progress") {
                return Err(format!("BGSAVE refused: {}", answer.trim_end().chars().take(120).collect::<String>()));
            }
        }
        let persistence = ask(&["INFO", "persistence"]).await?;
        match info(&persistence, "rdb_bgsave_in_progress").as_deref() {
            Some("0") if ours => {
                return match info(&persistence, "rdb_last_bgsave_status").as_deref() {
                    Some("ok") => Ok(()),
                    status => Err(format!(
                        "BGSAVE failed (rdb_last_bgsave_status: {}); the cache's log says why",
                        status.unwrap_or("missing")
                    )),
                };
            }
            Some(_) => {}
            None => return Err("the cache's INFO has no rdb_bgsave_in_progress".to_string()),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(late());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Freeze the container when `method` calls for it. Returns whether it did.
pub async fn freeze(lxd: &Client, instance: &ManagedInstance, method: Method) -> Result<bool, BackupError> {
    if method == Method::Stopped {
        return Ok(false);
    }
    let name = name_of(instance)?;
    if lxd.instance(&name).await?.status == InstanceStatus::Frozen {
        return Ok(false);
    }
    lxd.set_state(&name, &StateChange::new(StateAction::Freeze)).await?;
    Ok(true)
}

/// Undo [`freeze`] (always called after the read, whatever happened).
pub async fn thaw(lxd: &Client, instance: &ManagedInstance) -> Result<(), BackupError> {
    let name = name_of(instance)?;
    lxd.set_state(&name, &StateChange::new(StateAction::Unfreeze)).await?;
    Ok(())
}
