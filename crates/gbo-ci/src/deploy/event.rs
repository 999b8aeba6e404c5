//! The progress of a deploy or rollback, as typed events (see [`crate::event`] for the shape all of gbo-ci's long
//! operations share).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::report::Restart;
use crate::event::Observer;
use crate::names::HealthUrl;

/// Progress a deploy reports while it runs; the CLI renders it on stderr.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeployEvent {
    /// Connected and authenticated.
    Connected {
        /// `user@host:port`.
        target: String,
        /// The known_hosts file the key was recorded in, on first contact.
        recorded_host_key: Option<PathBuf>,
    },
    /// Another deploy or rollback of the same target holds its lock; this one waits for it.
    WaitingForLock {
        /// The lock file on the remote.
        lock: String,
        /// Who holds it, as the holder recorded it (pid, user, client address, since when).
        holder: String,
    },
    /// The lock is taken; no other deploy or rollback of this target runs until this one ends.
    Locked {
        /// The lock file on the remote.
        lock: String,
    },
    /// The upload is starting.
    UploadStarted {
        /// Temporary path on the remote.
        temp_path: String,
        /// Bytes to send.
        total: u64,
    },
    /// Bytes sent so far.
    UploadProgress {
        /// Bytes sent.
        sent: u64,
        /// Bytes to send.
        total: u64,
    },
    /// The upload is complete and synced; the checksum check comes next.
    Uploaded {
        /// Temporary path on the remote.
        temp_path: String,
    },
    /// The remote checksum matched.
    ChecksumVerified {
        /// SHA-256 (hex).
        sha256: String,
    },
    /// The new binary is in place.
    Swapped {
        /// Where the previous binary was kept, if there was one.
        previous_release: Option<String>,
    },
    /// The service is being restarted: through its unit, or by stopping these processes (none: nothing runs) and
    /// starting the binary.
    Restarting {
        /// How.
        #[serde(flatten)]
        restart: Restart,
    },
    /// Waiting for the health URL.
    WaitingForHealth {
        /// The URL.
        url: HealthUrl,
    },
    /// Health answered 2xx.
    Healthy {
        /// From stopping the old process to the first healthy answer.
        #[serde(rename = "downtime_ms", serialize_with = "downtime_ms")]
        downtime: Option<Duration>,
    },
    /// The restart failed or health never came; the previous release is being restored.
    RollingBack {
        /// Why.
        reason: RollbackReason,
    },
}

fn downtime_ms<S: serde::Serializer>(downtime: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_some(&downtime.map(crate::event::millis))
}

/// Why a deploy rolls back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "cause", content = "detail", rename_all = "snake_case")]
pub enum RollbackReason {
    /// The restart failed or was cut off; its error.
    RestartFailed(String),
    /// Health never answered 2xx; the last probe's result.
    Unhealthy(String),
}

impl fmt::Display for RollbackReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackReason::RestartFailed(error) => write!(formatter, "the restart failed: {error}"),
            RollbackReason::Unhealthy(last) => write!(formatter, "not healthy: {last}"),
        }
    }
}

/// Receives [`DeployEvent`]s, called synchronously between steps: the deploy's name for an
/// [`Observer<DeployEvent>`], which every implementor of this trait is.
pub trait DeployObserver {
    /// One event.
    fn on_event(&mut self, event: &DeployEvent);
}

impl<T: DeployObserver + ?Sized> Observer<DeployEvent> for T {
    fn on_event(&mut self, event: &DeployEvent) {
        DeployObserver::on_event(self, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(event: &DeployEvent) -> String {
        serde_json::to_string(event).expect("serialise")
    }

    #[test]
    fn events_serialise_with_their_tag_and_typed_fields() {
        let restart = DeployEvent::Restarting { restart: Restart::Systemd { unit: "system.service".into() } };
        assert_eq!(json(&restart), r#"{"event":"restarting","method":"systemd","unit":"system.service"}"#);
        let restart = DeployEvent::Restarting { restart: Restart::Process { pids: vec![4, 2] } };
        assert_eq!(json(&restart), r#"{"event":"restarting","method":"process","pids":[4,2]}"#);
        let healthy = DeployEvent::Healthy { downtime: Some(Duration::from_micros(180_500)) };
        assert_eq!(json(&healthy), r#"{"event":"healthy","downtime_ms":180}"#);
        assert_eq!(json(&DeployEvent::Healthy { downtime: None }), r#"{"event":"healthy","downtime_ms":null}"#);
        let url: HealthUrl = "http://localhost:5858/api/health".parse().expect("parse");
        assert_eq!(
            json(&DeployEvent::WaitingForHealth { url }),
            r#"{"event":"waiting_for_health","url":"http://localhost:5858/api/health"}"#
        );
        let rolling = DeployEvent::RollingBack { reason: RollbackReason::Unhealthy("HTTP 500".into()) };
        assert_eq!(json(&rolling), r#"{"event":"rolling_back","reason":{"cause":"unhealthy","detail":"HTTP 500"}}"#);
        assert_eq!(RollbackReason::RestartFailed("x".into()).to_string(), "the restart failed: x");
        assert_eq!(RollbackReason::Unhealthy("HTTP 500".into()).to_string(), "not healthy: HTTP 500");
    }

    #[test]
    fn restart_methods_serialise_as_before() {
        use super::super::report::RestartMethod;
        assert_eq!(serde_json::to_string(&RestartMethod::Systemd).expect("serialise"), r#""systemd""#);
        assert_eq!(serde_json::to_string(&RestartMethod::Process).expect("serialise"), r#""process""#);
        let dest: crate::names::RemotePath = "/opt/gbo/bin/botserver".parse().expect("parse");
        assert_eq!(serde_json::to_string(&dest).expect("serialise"), r#""/opt/gbo/bin/botserver""#);
    }
}
