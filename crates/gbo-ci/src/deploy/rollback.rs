//! The last room of a deploy whose restart failed or whose health never came: the previous release is renamed back
//! over the target, restarted the same way and checked; on a first deploy the new process is stopped instead.

use std::time::Duration;

use super::event::{DeployEvent, RollbackReason};
use super::releases;
use super::report::Restart;
use super::restart::Service;
use super::verify::wait_healthy;
use crate::event::Observer;
use crate::names::HealthUrl;

/// Put the previous release back after a failed restart or health check, restart it and check it; returns what
/// happened, for the error message (this never fails: every failure is said in the text).
pub(super) fn after_failed_deploy(
    service: &Service<'_>,
    restart: &Restart,
    previous_release: Option<&str>,
    (health, health_timeout): (&HealthUrl, Duration),
    reason: RollbackReason,
    observer: &mut dyn Observer<DeployEvent>,
) -> String {
    let Some(release) = previous_release else {
        return match service.stop(restart) {
            Ok(()) => "there is no previous release to roll back to; the new process was stopped".to_string(),
            Err(error) => {
                format!("there is no previous release to roll back to, and stopping the new release failed: {error}")
            }
        };
    };
    observer.on_event(&DeployEvent::RollingBack { reason });
    if let Err(error) = releases::restore(service.remote, service.access, service.dest, release) {
        return format!(
            "the previous release ({release}) could not be put back: {error}; the new release is still in place"
        );
    }
    if let Err(error) = service.restart_current(restart, observer) {
        return format!("the previous release ({release}) was put back, but its restart failed too: {error}");
    }
    match wait_healthy(service.remote, health, health_timeout) {
        Ok(_) => format!("rolled back to the previous release ({release}), which is healthy again"),
        Err(again) => {
            format!("rolled back to the previous release ({release}), but it is not healthy either (last: {again})")
        }
    }
}
