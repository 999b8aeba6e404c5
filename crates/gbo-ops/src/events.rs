//! One event model for every long operation: the operation sends typed events to an [`Observer`], and the CLI
//! renders them (a line or a bar per subject on a terminal, plain lines otherwise, JSON lines with `--output
//! json`). No progress is ever encoded in a string to be parsed back.
//!
//! Each long operation has its own event type: [`InstallEvent`] for install, `image::BuildStage` for image
//! builds, `migrate::MigrateEvent` for migrations, `snapshot::SnapshotEvent` for snapshots. Every event names its
//! subject (a container, a table, an image) so a renderer can keep one line per subject, and says whether it ends
//! that subject ([`Subject::finished`]).

use std::fmt;

/// Where a long operation reports what it does. Any `Fn(&E) + Sync` closure is one. (gbo-ci, which depends on no
/// other gbo crate, has the same shape for its sequential operations: `gbo_ci::event::Observer`.)
pub trait Observer<E>: Sync {
    /// One event.
    fn event(&self, event: &E);
}

impl<E, F: Fn(&E) + Sync> Observer<E> for F {
    fn event(&self, event: &E) {
        self(event)
    }
}

/// An observer that drops every event (library callers that want none).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ignore;

impl<E> Observer<E> for Ignore {
    fn event(&self, _event: &E) {}
}

/// How a subject of a long operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done and well.
    Succeeded,
    /// Done, with a problem that did not stop it (an unhealthy component).
    Degraded,
    /// Failed.
    Failed,
}

/// What a renderer needs of any event: whose line it belongs to, the line's text, and whether it ends the line.
pub trait Subject: fmt::Display + serde::Serialize {
    /// The subject (a container name, a table, an image alias).
    fn subject(&self) -> &str;
    /// How the subject ended, when this event ends it.
    fn finished(&self) -> Option<Outcome>;
    /// Bytes done and, when known, the total, when this event reports them (a terminal draws a bar).
    fn progress(&self) -> Option<(u64, Option<u64>)> {
        None
    }
}

/// A byte count as events show it: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// What happens to one component during `gbo install`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstallEvent {
    /// The container.
    pub instance: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: InstallEventKind,
}

/// The kinds of [`InstallEvent`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum InstallEventKind {
    /// The component's plan: how many steps it has (0: up to date).
    Planned {
        /// Steps.
        steps: usize,
    },
    /// Waiting for the components it depends on.
    Waiting {
        /// The roles waited for.
        on: Vec<String>,
    },
    /// A step is starting.
    Step {
        /// The step, as the plan describes it.
        description: String,
    },
    /// Installed and healthy (ends the component).
    Healthy {
        /// The health check's answer.
        detail: String,
    },
    /// Installed, but its health check failed (ends the component).
    Unhealthy {
        /// The health check's answer.
        detail: String,
    },
    /// Its install failed, or a dependency's did (ends the component).
    Failed {
        /// The error.
        error: String,
    },
}

impl InstallEvent {
    /// An event of `instance`.
    pub fn new(instance: impl Into<String>, kind: InstallEventKind) -> Self {
        Self { instance: instance.into(), kind }
    }
}

impl fmt::Display for InstallEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            InstallEventKind::Planned { steps: 0 } => write!(f, "up to date"),
            InstallEventKind::Planned { steps } => write!(f, "{steps} step(s) planned"),
            InstallEventKind::Waiting { on } => write!(f, "waiting for {}", on.join(", ")),
            InstallEventKind::Step { description } => write!(f, "{description}"),
            InstallEventKind::Healthy { detail } => write!(f, "healthy ({detail})"),
            InstallEventKind::Unhealthy { detail } => write!(f, "UNHEALTHY ({detail})"),
            InstallEventKind::Failed { error } => write!(f, "failed: {error}"),
        }
    }
}

impl Subject for InstallEvent {
    fn subject(&self) -> &str {
        &self.instance
    }

    fn finished(&self) -> Option<Outcome> {
        match &self.kind {
            InstallEventKind::Healthy { .. } => Some(Outcome::Succeeded),
            InstallEventKind::Unhealthy { .. } => Some(Outcome::Degraded),
            InstallEventKind::Failed { .. } => Some(Outcome::Failed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_events_read_as_before_and_serialise_with_their_kind() {
        let healthy = InstallEvent::new("a-cache", InstallEventKind::Healthy { detail: "PING -> PONG".into() });
        assert_eq!(healthy.to_string(), "healthy (PING -> PONG)");
        assert_eq!(healthy.finished(), Some(Outcome::Succeeded));
        let json = serde_json::to_value(&healthy).expect("json");
        assert_eq!(json["instance"], "a-cache");
        assert_eq!(json["event"], "healthy");
        assert_eq!(InstallEvent::new("x", InstallEventKind::Planned { steps: 0 }).to_string(), "up to date");
        assert_eq!(InstallEvent::new("x", InstallEventKind::Planned { steps: 3 }).to_string(), "3 step(s) planned");
        assert_eq!(InstallEvent::new("x", InstallEventKind::Planned { steps: 3 }).finished(), None);
        let seen = std::sync::Mutex::new(Vec::new());
        let observer = |e: &InstallEvent| seen.lock().expect("lock").push(e.clone());
        Observer::event(&observer, &healthy);
        Ignore.event(&healthy);
        assert_eq!(seen.lock().expect("lock").len(), 1);
    }

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }
}
