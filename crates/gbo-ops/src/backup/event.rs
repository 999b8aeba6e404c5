//! The events of `gbo backup create|restore|verify|prune` ([`crate::events`]): one subject per role (a container)
//! plus `repository` for what concerns the repository itself.

use std::fmt;

use crate::events::{human_bytes, Outcome, Subject};

/// One event of a backup operation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupEvent {
    /// A container, or `repository`.
    pub subject: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: BackupEventKind,
}

/// The kinds of [`BackupEvent`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BackupEventKind {
    /// A step is starting.
    Step {
        /// What it is.
        description: String,
    },
    /// Bytes read so far for this subject.
    Progress {
        /// Bytes read.
        bytes: u64,
        /// Bytes to read, when known.
        total: Option<u64>,
    },
    /// Stored as a snapshot (ends the subject).
    Stored {
        /// The restic snapshot id.
        snapshot: String,
        /// Files read.
        files: u64,
        /// Bytes read.
        bytes: u64,
        /// Bytes added to the repository (after deduplication and compression).
        added: u64,
    },
    /// Done (ends the subject).
    Done {
        /// What was done.
        detail: String,
    },
    /// Done with a problem (ends the subject).
    Problem {
        /// The problem.
        detail: String,
    },
    /// Failed (ends the subject).
    Failed {
        /// The error.
        error: String,
    },
}

impl BackupEvent {
    /// An event of `subject`.
    pub fn new(subject: impl Into<String>, kind: BackupEventKind) -> Self {
        Self { subject: subject.into(), kind }
    }

    /// A step of `subject`.
    pub fn step(subject: impl Into<String>, description: impl Into<String>) -> Self {
        Self::new(subject, BackupEventKind::Step { description: description.into() })
    }
}

impl fmt::Display for BackupEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BackupEventKind::Step { description } => write!(f, "{description}"),
            BackupEventKind::Progress { bytes, total: Some(total) } => {
                write!(f, "read {} of {}", human_bytes(*bytes), human_bytes(*total))
            }
            BackupEventKind::Progress { bytes, total: None } => write!(f, "read {}", human_bytes(*bytes)),
            BackupEventKind::Stored { snapshot, files, bytes, added } => write!(
                f,
                "stored as {} ({files} files, {} read, {} added)",
                &snapshot[..snapshot.len().min(8)],
                human_bytes(*bytes),
                human_bytes(*added)
            ),
            BackupEventKind::Done { detail } => write!(f, "{detail}"),
            BackupEventKind::Problem { detail } => write!(f, "PROBLEM: {detail}"),
            BackupEventKind::Failed { error } => write!(f, "failed: {error}"),
        }
    }
}

impl Subject for BackupEvent {
    fn subject(&self) -> &str {
        &self.subject
    }

    fn finished(&self) -> Option<Outcome> {
        match &self.kind {
            BackupEventKind::Stored { .. } | BackupEventKind::Done { .. } => Some(Outcome::Succeeded),
            BackupEventKind::Problem { .. } => Some(Outcome::Degraded),
            BackupEventKind::Failed { .. } => Some(Outcome::Failed),
            _ => None,
        }
    }

    fn progress(&self) -> Option<(u64, Option<u64>)> {
        match &self.kind {
            BackupEventKind::Progress { bytes, total } => Some((*bytes, *total)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_and_serialise_with_their_kind() {
        let stored = BackupEvent::new(
            "a-tables",
            BackupEventKind::Stored { snapshot: "0123456789abcdef".into(), files: 3, bytes: 2048, added: 10 },
        );
        assert_eq!(stored.to_string(), "stored as 01234567 (3 files, 2.0 KiB read, 10 B added)");
        assert_eq!(stored.finished(), Some(Outcome::Succeeded));
        let json = serde_json::to_value(&stored).expect("json");
        assert_eq!((json["subject"].as_str(), json["event"].as_str()), (Some("a-tables"), Some("stored")));
        assert_eq!(BackupEvent::step("repository", "locking").finished(), None);
        let read = BackupEvent::new("a-tables", BackupEventKind::Progress { bytes: 1024, total: Some(4096) });
        assert_eq!(read.to_string(), "read 1.0 KiB of 4.0 KiB");
        assert_eq!((read.finished(), read.progress()), (None, Some((1024, Some(4096)))));
    }
}
